//! Model files and training checkpoints in safetensors.
//!
//! - **Weights**: every parameter under its dotted name ([`Module::params`]), in the model's
//!   float type; PyTorch reads them with `safetensors.torch.load_file` and, for the built-in
//!   layers, `load_state_dict` (same names, shapes and gate order).
//! - **Training checkpoint**: the weights plus, under the reserved prefix `train.`, everything
//!   needed to continue bit for bit: the optimizer's buffers (`train.optim.<key>`, `f64`) and
//!   scalars (`train.optim_scalar.<key>`, 0-d `f64`), the RNG state (`train.rng`, 4 `u64`s
//!   bit-cast to `I64`), the schedule's state (`train.schedule`, `f64`), early stopping's
//!   counters while a run with early stopping is under way (`train.early`: best value, epochs
//!   without improvement, best epoch or 0; `f64`) and its best weights
//!   (`train.early_best.<name>`, `f64`); the metadata holds `format`, `epoch` and `optimizer`.
//!
//! Writes are atomic ([`io::write_atomic`]): a crash mid-write leaves the previous file intact.
//! Loads check everything first (names, shapes, dtypes, the optimizer's state) and change
//! nothing on error.

use crate::fit::EarlyTrack;
use crate::io::{self, Entry, Tensor, TensorFile};
use crate::optim::{whole_count, OptimState, MAX_COUNT};
use crate::sequential::Model;
use crate::Module;
use eddy_tape::{Error, Float, Result, Rng};
use ndarray::ArrayD;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The metadata `format` of a training checkpoint.
pub const TRAINING_FORMAT: &str = "eddy-training-checkpoint";
/// The prefix of the tensors of a training checkpoint that are not parameters.
pub const TRAIN_PREFIX: &str = "train.";

/// The training position saved beside the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// The training RNG's state ([`Rng::state`]).
    pub rng: [u64; 4],
    /// The optimizer's state.
    pub optimizer: OptimState,
    /// The schedule's state, if there is a schedule.
    pub schedule: Option<Vec<f64>>,
    /// Early stopping's counters, while a run with early stopping is under way.
    pub early_stopping: Option<EarlyStoppingState>,
}

/// Early stopping's counters in a checkpoint (see [`EarlyStopping`](crate::fit::EarlyStopping)).
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStoppingState {
    /// The best monitored value so far.
    pub best: f64,
    /// Epochs since it last improved by more than `min_delta`.
    pub wait: usize,
    /// The epoch of the best value.
    pub best_epoch: Option<usize>,
    /// The best epoch's parameters by name (with `restore_best_weights`).
    pub best_weights: Option<BTreeMap<String, ArrayD<f64>>>,
}

/// The bytes of a training checkpoint of `module` at `state`.
///
/// # Errors
/// [`Error::Invalid`] if a parameter name starts with `train.` or serialisation fails.
pub fn training_bytes<F: Float>(module: &dyn Module<F>, state: &TrainingState) -> Result<Vec<u8>> {
    let params = module.params();
    if let Some((n, _)) = params.iter().find(|(n, _)| n.starts_with(TRAIN_PREFIX)) {
        return Err(Error::invalid(
            "save_checkpoint",
            format!("parameter name {n:?} uses the reserved prefix {TRAIN_PREFIX:?}"),
        ));
    }
    let f64s: Vec<(String, ArrayD<f64>)>;
    let f32s: Vec<(String, ArrayD<f32>)>;
    let mut entries: Vec<(String, Entry<'_>)> = if F::NAME == "f64" {
        f64s = params
            .iter()
            .map(|(n, p)| (n.clone(), p.value().mapv(|v| v.as_f64())))
            .collect();
        f64s.iter().map(|(n, v)| (n.clone(), Entry::F64(v))).collect()
    } else {
        f32s = params
            .iter()
            .map(|(n, p)| (n.clone(), p.value().mapv(|v| v.as_f64() as f32)))
            .collect();
        f32s.iter().map(|(n, v)| (n.clone(), Entry::F32(v))).collect()
    };
    let scalars: Vec<(String, ArrayD<f64>)> = state
        .optimizer
        .scalars
        .iter()
        .map(|(k, v)| {
            (
                format!("{TRAIN_PREFIX}optim_scalar.{k}"),
                ArrayD::from_elem(vec![], *v),
            )
        })
        .collect();
    let rng = ArrayD::from_shape_vec(vec![4], state.rng.iter().map(|&s| s as i64).collect())
        .expect("four elements");
    let schedule = state
        .schedule
        .as_ref()
        .map(|s| ArrayD::from_shape_vec(vec![s.len()], s.clone()).expect("1-d"));
    for (k, b) in &state.optimizer.buffers {
        entries.push((format!("{TRAIN_PREFIX}optim.{k}"), Entry::F64(b)));
    }
    entries.extend(scalars.iter().map(|(k, v)| (k.clone(), Entry::F64(v))));
    entries.push((format!("{TRAIN_PREFIX}rng"), Entry::I64(&rng)));
    if let Some(s) = &schedule {
        entries.push((format!("{TRAIN_PREFIX}schedule"), Entry::F64(s)));
    }
    let early = state.early_stopping.as_ref().map(|e| {
        let epoch = e.best_epoch.unwrap_or(0) as f64;
        ArrayD::from_shape_vec(vec![3], vec![e.best, e.wait as f64, epoch]).expect("three")
    });
    if let Some(e) = &early {
        entries.push((format!("{TRAIN_PREFIX}early"), Entry::F64(e)));
    }
    if let Some(w) = state
        .early_stopping
        .as_ref()
        .and_then(|e| e.best_weights.as_ref())
    {
        entries.extend(
            w.iter()
                .map(|(n, v)| (format!("{TRAIN_PREFIX}early_best.{n}"), Entry::F64(v))),
        );
    }
    let metadata = HashMap::from([
        ("format".to_string(), TRAINING_FORMAT.to_string()),
        ("epoch".to_string(), state.epoch.to_string()),
        ("optimizer".to_string(), state.optimizer.optimizer.clone()),
        ("dtype".to_string(), F::NAME.to_string()),
    ]);
    io::to_bytes(&entries, &metadata)
}

/// Reads the training state of a checkpoint file (not its parameters).
///
/// # Errors
/// [`Error::File`] if the file is not a training checkpoint or a part of the state is missing
/// or malformed.
pub fn read_training_state(file: &TensorFile) -> Result<TrainingState> {
    let bad = |r: String| Error::file(&file.path, r);
    match file.metadata.get("format") {
        Some(f) if f == TRAINING_FORMAT => {}
        other => {
            return Err(bad(format!(
                "not a training checkpoint (metadata format is {other:?}, expected {TRAINING_FORMAT:?})"
            )))
        }
    }
    let epoch_text = file.meta("epoch")?;
    let epoch = epoch_text
        .parse::<u64>()
        .ok()
        .filter(|&e| e <= MAX_COUNT)
        .ok_or_else(|| {
            bad(format!(
                "metadata \"epoch\" must be a whole number in [0, 2^53], got {epoch_text:?}"
            ))
        })? as usize;
    let rng = file.int(&format!("{TRAIN_PREFIX}rng"))?;
    let rng: [u64; 4] = match rng.as_slice() {
        Some(&[a, b, c, d]) if rng.ndim() == 1 => [a as u64, b as u64, c as u64, d as u64],
        _ => {
            return Err(bad(format!(
                "tensor \"train.rng\" must hold 4 values, has shape {:?}",
                rng.shape()
            )))
        }
    };
    if rng == [0; 4] {
        // xoshiro256**'s one fixed point: it would draw zeros for ever.
        return Err(bad(
            "tensor \"train.rng\" is all zeros, which is not a valid generator state".into(),
        ));
    }
    let mut optimizer = OptimState {
        optimizer: file.meta("optimizer")?.to_string(),
        ..OptimState::default()
    };
    let mut schedule = None;
    let mut early: Option<Vec<f64>> = None;
    let mut best_weights: BTreeMap<String, ArrayD<f64>> = BTreeMap::new();
    for (name, t) in &file.tensors {
        let Some(key) = name.strip_prefix(TRAIN_PREFIX) else {
            continue;
        };
        let float = || match t {
            Tensor::Float { value, .. } => Ok(value.clone()),
            Tensor::Int { dtype, .. } => Err(bad(format!(
                "tensor {name:?} has dtype {dtype}, expected a float dtype"
            ))),
        };
        if let Some(k) = key.strip_prefix("optim.") {
            optimizer.buffers.insert(k.to_string(), float()?);
        } else if let Some(k) = key.strip_prefix("optim_scalar.") {
            let v = float()?;
            if v.len() != 1 {
                return Err(bad(format!(
                    "tensor {name:?} must hold one value, has shape {:?}",
                    v.shape()
                )));
            }
            optimizer
                .scalars
                .insert(k.to_string(), *v.iter().next().expect("one"));
        } else if key == "schedule" {
            let v = float()?;
            schedule = Some(v.iter().copied().collect());
        } else if key == "early" {
            early = Some(float()?.iter().copied().collect());
        } else if let Some(p) = key.strip_prefix("early_best.") {
            best_weights.insert(p.to_string(), float()?);
        } else if key != "rng" {
            return Err(bad(format!("unknown training tensor {name:?}")));
        }
    }
    let early_stopping = match early {
        None if best_weights.is_empty() => None,
        None => {
            return Err(bad(
                "tensors \"train.early_best.*\" without \"train.early\" (early stopping's counters)".into(),
            ))
        }
        Some(v) => {
            let field = |what: &str, got: String| {
                bad(format!(
                    "tensor \"train.early\" (early stopping): {what}, got {got}"
                ))
            };
            let [best, wait, best_epoch]: [f64; 3] = v.clone().try_into().map_err(|_| {
                field(
                    "must hold 3 values (best, wait, best epoch)",
                    format!("{}", v.len()),
                )
            })?;
            if best.is_nan() {
                return Err(field("the best value must not be NaN", "NaN".into()));
            }
            let wait = whole_count(wait).ok_or_else(|| {
                field(
                    "the epochs without improvement must be a whole number in [0, 2^53]",
                    wait.to_string(),
                )
            })?;
            let best_epoch = whole_count(best_epoch)
                .filter(|&e| e as usize <= epoch)
                .ok_or_else(|| {
                    field(
                        &format!("the best epoch must be a whole number in [0, {epoch}] (the epoch)"),
                        best_epoch.to_string(),
                    )
                })?;
            Some(EarlyStoppingState {
                best,
                wait: wait as usize,
                best_epoch: (best_epoch > 0).then_some(best_epoch as usize),
                best_weights: (!best_weights.is_empty()).then_some(best_weights),
            })
        }
    };
    Ok(TrainingState {
        epoch,
        rng,
        optimizer,
        schedule,
        early_stopping,
    })
}

/// Early stopping's counters of a checkpoint as the model keeps them; the best weights must be
/// the module's parameters by name, each of its shape.
fn early_track<F: Float>(
    module: &dyn Module<F>,
    state: &EarlyStoppingState,
    path: &Path,
) -> Result<EarlyTrack<F>> {
    let best_weights = match &state.best_weights {
        None => None,
        Some(w) => {
            let params = module.params();
            let bad = |r: String| Error::file(path, format!("early stopping's best weights: {r}"));
            if w.len() != params.len() {
                return Err(bad(format!(
                    "{} tensors for a model of {} parameters",
                    w.len(),
                    params.len()
                )));
            }
            let mut out = Vec::with_capacity(params.len());
            for (n, p) in &params {
                let v = w
                    .get(n)
                    .ok_or_else(|| bad(format!("no tensor \"train.early_best.{n}\"")))?;
                if v.shape() != p.shape() {
                    return Err(bad(format!(
                        "\"train.early_best.{n}\" has shape {:?}, the parameter {:?}",
                        v.shape(),
                        p.shape()
                    )));
                }
                out.push(Arc::new(v.mapv(F::of)));
            }
            Some(out)
        }
    };
    Ok(EarlyTrack {
        best: state.best,
        wait: state.wait,
        best_epoch: state.best_epoch,
        best_weights,
    })
}

/// Checks that `file` holds no tensor the module lacks, besides the `train.` ones.
fn check_no_extra<F: Float>(module: &dyn Module<F>, file: &TensorFile) -> Result<()> {
    let known: HashSet<String> = module.params().into_iter().map(|(n, _)| n).collect();
    match file
        .tensors
        .keys()
        .find(|k| !k.starts_with(TRAIN_PREFIX) && !known.contains(*k))
    {
        Some(extra) => Err(Error::file(
            &file.path,
            format!("unexpected tensor {extra:?}: the model has no such parameter"),
        )),
        None => Ok(()),
    }
}

impl<F: Float> Model<F> {
    /// Saves the parameters under their dotted names (`layers.0.weight_ih_l0`, …), atomically.
    ///
    /// # Errors
    /// [`Error::File`] if the file cannot be written.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let meta = HashMap::from([("format".to_string(), "eddy-weights".to_string())]);
        io::save_params(self, path, &meta)
    }

    /// Loads parameters saved by [`Model::save_weights`] (or the parameters of a training
    /// checkpoint).
    ///
    /// # Errors
    /// [`Error::File`] for a missing, truncated or corrupt file, or one from another model: a
    /// missing or extra tensor, a wrong shape or dtype. Nothing is changed on error.
    pub fn load_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        self.load_weights_from(&TensorFile::read(path)?)
    }

    /// [`Model::load_weights`] from a file already read, or parsed from bytes in memory with
    /// [`TensorFile::from_bytes`].
    ///
    /// # Errors
    /// As [`Model::load_weights`]. Nothing is changed on error.
    pub fn load_weights_from(&self, file: &TensorFile) -> Result<()> {
        check_no_extra(self, file)?;
        io::load_params(self, file, false)
    }

    /// The training state to save: epoch, RNG, optimizer and schedule.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled.
    pub fn training_state(&self) -> Result<TrainingState> {
        let c = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid("save_checkpoint", "the model is not compiled"))?;
        Ok(TrainingState {
            epoch: self.epoch,
            rng: self.rng.state(),
            optimizer: c.optimizer.state(),
            schedule: c.schedule.as_ref().map(|s| s.state()),
            early_stopping: self.early.as_ref().map(|t| EarlyStoppingState {
                best: t.best,
                wait: t.wait,
                best_epoch: t.best_epoch,
                best_weights: t.best_weights.as_ref().map(|w| {
                    self.params()
                        .into_iter()
                        .zip(w)
                        .map(|(n, v)| (n.0, v.mapv(|x| x.as_f64())))
                        .collect()
                }),
            }),
        })
    }

    /// Saves a training checkpoint (parameters, optimizer, schedule, RNG, epoch), atomically.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled; [`Error::File`] if the file cannot be
    /// written (the previous file at `path`, if any, is then intact).
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_checkpoint_with_fault(path, None)
    }

    /// [`Model::save_checkpoint`] with an injected crash after `fail_after` bytes (tests).
    #[doc(hidden)]
    pub fn save_checkpoint_with_fault(
        &self,
        path: impl AsRef<Path>,
        fail_after: Option<usize>,
    ) -> Result<()> {
        let bytes = training_bytes(self, &self.training_state()?)?;
        io::write_atomic(path.as_ref(), &bytes, fail_after)
    }

    /// Restores a training checkpoint into this compiled model (built and compiled as the one
    /// that saved it): parameters, optimizer, schedule, RNG, epoch and early stopping's counters. Training on continues
    /// exactly as the saving run would have.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled; [`Error::File`] for a missing, truncated
    /// or corrupt file, one that is not a training checkpoint, or one from another model or
    /// optimizer; the optimizer's and schedule's errors for a state that does not fit. Nothing
    /// is changed on error.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        if self.compiled.is_none() {
            return Err(Error::invalid("load_checkpoint", "the model is not compiled"));
        }
        self.load_checkpoint_from(&TensorFile::read(path.as_ref())?)
    }

    /// [`Model::load_checkpoint`] from a file already read, or parsed from bytes in memory
    /// with [`TensorFile::from_bytes`].
    ///
    /// # Errors
    /// As [`Model::load_checkpoint`]. Nothing is changed on error.
    pub fn load_checkpoint_from(&mut self, file: &TensorFile) -> Result<()> {
        if self.compiled.is_none() {
            return Err(Error::invalid("load_checkpoint", "the model is not compiled"));
        }
        self.load_training_file(file)
    }

    /// [`Model::load_checkpoint`] from the bytes of a checkpoint (rank 0's state sent to the
    /// other ranks by [`Model::fit_distributed`]); `origin` names them in errors.
    pub(crate) fn load_checkpoint_bytes(&mut self, bytes: &[u8], origin: &str) -> Result<()> {
        if self.compiled.is_none() {
            return Err(Error::invalid("load_checkpoint", "the model is not compiled"));
        }
        self.load_training_file(&TensorFile::from_bytes(bytes, origin)?)
    }

    fn load_training_file(&mut self, file: &TensorFile) -> Result<()> {
        let state = read_training_state(file)?;
        check_no_extra(self, file)?;
        let early = match &state.early_stopping {
            Some(e) => Some(early_track(self, e, &file.path)?),
            None => None,
        };
        let c = self.compiled.as_ref().expect("checked");
        if state.schedule.is_some() != c.schedule.is_some() {
            return Err(Error::file(
                &file.path,
                if c.schedule.is_some() {
                    "the checkpoint has no schedule state but the model has a schedule"
                } else {
                    "the checkpoint has a schedule state but the model has no schedule"
                },
            ));
        }
        // Snapshots to roll back to if a later part does not fit.
        let params = self.param_list();
        let old_values: Vec<_> = params.iter().map(|p| p.value()).collect();
        let old_optim = c.optimizer.state();
        let old_schedule = c.schedule.as_ref().map(|s| s.state());

        io::load_params(self, file, false)?;
        let c = self.compiled.as_mut().expect("checked");
        let mut result = c
            .optimizer
            .load_state(state.optimizer.clone())
            .map_err(|e| Error::file(&file.path, format!("optimizer state: {e}")));
        if result.is_ok() {
            if let (Some(s), Some(v)) = (c.schedule.as_mut(), &state.schedule) {
                result = s
                    .load_state(v)
                    .map_err(|e| Error::file(&file.path, format!("schedule state: {e}")));
            }
        }
        if let Err(e) = result {
            for (p, v) in params.iter().zip(old_values) {
                p.set(ArrayD::clone(&v));
            }
            c.optimizer.load_state(old_optim).expect("its own state loads");
            if let (Some(s), Some(v)) = (c.schedule.as_mut(), old_schedule) {
                s.load_state(&v).expect("its own state loads");
            }
            return Err(e);
        }
        self.rng = Rng::from_state(state.rng);
        self.epoch = state.epoch;
        self.early = early;
        Ok(())
    }
}

/// The parameters of a file as a name → `f64` array map (for comparing checkpoints).
pub fn float_tensors(file: &TensorFile) -> BTreeMap<String, ArrayD<f64>> {
    file.tensors
        .iter()
        .filter_map(|(n, t)| match t {
            Tensor::Float { value, .. } => Some((n.clone(), value.clone())),
            Tensor::Int { .. } => None,
        })
        .collect()
}
