//! NaN is never hidden in `fit`: a NaN or infinity in the loss or a gradient stops training with
//! an error naming the epoch and batch (and, with anomaly detection, the first op that made
//! it), and a NaN state never overwrites the last good checkpoint.

use eddy_nn::fit::{CheckpointEvery, FitOptions, OnNonFinite};
use eddy_nn::sequential::{dense, lstm, module, Loss, Model, Optim, Pass, SequenceLayer, Sequential};
use eddy_nn::Module;
use eddy_ops::prelude::VarExt;
use eddy_tape::{Param, Result, Rng, Var};
use ndarray::ArrayD;

/// `[B, T, F] → [B, F]`: `mean over time of sqrt(x² · gain)`. With `gain = 0` its output and
/// the loss are finite but the gradient of `gain` is infinite (`sqrt′(0) = ∞`).
#[derive(Clone)]
struct SqrtGain {
    gain: Param<f64>,
}

impl Module<f64> for SqrtGain {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        vec![("gain".into(), self.gain.clone())]
    }
}

impl SequenceLayer<f64> for SqrtGain {
    fn forward(&self, x: &Var<f64>, _: &mut Pass<'_>) -> Result<Var<f64>> {
        let g = x.tape().param(&self.gain);
        ((x * x)? * &g)?.sqrt()?.mean(1, false)
    }
}

fn sqrt_model(gain: f64) -> Model<f64> {
    let mut m = Sequential::new()
        .add(module(move |features, _| SqrtGain {
            gain: Param::new("gain", ArrayD::from_elem(vec![features], gain)),
        }))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(4))
        .unwrap();
    m.compile(Optim::sgd(0.01), Loss::Mse).unwrap();
    m
}

fn lstm_model() -> Model<f64> {
    let mut m = Sequential::new()
        .add(lstm(3))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(5))
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    m
}

/// 8 sequences of 3 steps, 2 features, none 0.
fn data() -> (ArrayD<f64>, ArrayD<f64>) {
    let x = ArrayD::from_shape_fn(vec![8, 3, 2], |ix| {
        0.5 + ((ix[0] * 3 + ix[1] + ix[2]) as f64 * 0.7).sin().abs()
    });
    let y = ArrayD::from_shape_fn(vec![8, 1], |ix| (ix[0] as f64 * 0.3).cos());
    (x, y)
}

fn opts<'a>() -> FitOptions<'a, f64> {
    FitOptions {
        progress: false,
        shuffle: false,
        batch_size: 4,
        ..FitOptions::default()
    }
}

fn values(m: &Model<f64>) -> Vec<ArrayD<f64>> {
    m.param_list().iter().map(|p| (*p.value()).clone()).collect()
}

#[test]
fn a_nan_loss_names_the_epoch_and_batch() {
    let (x, mut y) = data();
    y[[6, 0]] = f64::NAN; // row 6: batch 2 of 4 rows without shuffling
    let mut m = lstm_model();
    let e = m.fit(&x, &y, opts()).unwrap_err().to_string();
    assert_eq!(
        e,
        "epoch 1 batch 2: fit: the loss is NaN (set on_non_finite: OnNonFinite::SkipStep to skip such steps)"
    );
    assert_eq!(m.epoch(), 0, "the epoch did not finish");
    y[[6, 0]] = f64::INFINITY;
    let e = lstm_model().fit(&x, &y, opts()).unwrap_err().to_string();
    assert!(e.starts_with("epoch 1 batch 2: fit: the loss is inf"), "{e}");
}

#[test]
fn anomaly_detection_names_the_first_op_that_made_the_nan() {
    let (mut x, y) = data();
    x[[5, 1, 0]] = f64::NAN; // row 5: batch 2
    let mut m = sqrt_model(1.0);
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                detect_anomaly: true,
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    // The first op on the data is `x * x`, in layer 0.
    assert_eq!(
        e,
        "epoch 1 batch 2: layers.0: mul: forward produced a non-finite value (NaN or infinity) in an output of shape [4, 3, 2]"
    );
    // Without it, the loss is what is seen.
    let e = sqrt_model(1.0).fit(&x, &y, opts()).unwrap_err().to_string();
    assert!(e.starts_with("epoch 1 batch 2: fit: the loss is NaN"), "{e}");
}

#[test]
fn a_non_finite_gradient_under_a_finite_loss_never_reaches_the_parameters() {
    let (x, y) = data();
    let mut m = sqrt_model(0.0);
    let before = values(&m);
    let e = m.fit(&x, &y, opts()).unwrap_err().to_string();
    assert_eq!(
        e,
        "epoch 1 batch 1: fit: the gradient of layers.0.gain holds NaN or infinity (set on_non_finite: OnNonFinite::SkipStep to skip such steps)"
    );
    assert_eq!(values(&m), before, "no step was taken");

    // With anomaly detection, the backward pass names the op: sqrt at 0.
    let e = sqrt_model(0.0)
        .fit(
            &x,
            &y,
            FitOptions {
                detect_anomaly: true,
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("epoch 1 batch 1: "), "{e}");
    assert!(e.contains("backward produced a non-finite value"), "{e}");

    // SkipStep skips both steps of each epoch and leaves the parameters finite.
    let mut m = sqrt_model(0.0);
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                on_non_finite: OnNonFinite::SkipStep,
                epochs: 2,
                ..opts()
            },
        )
        .unwrap();
    assert_eq!(h.skipped_steps, 4);
    assert_eq!(values(&m), before);
}

#[test]
fn a_nan_state_never_overwrites_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let every = |p: &std::path::Path| CheckpointEvery {
        path: p.to_path_buf(),
        every: 1,
    };
    let (x, y) = data();
    let mut m = lstm_model();
    m.fit(
        &x,
        &y,
        FitOptions {
            checkpoint: Some(every(&path)),
            ..opts()
        },
    )
    .unwrap();
    let good = std::fs::read(&path).unwrap();

    // A NaN loss in epoch 2: the epoch-1 checkpoint stays as it was.
    let mut bad_y = y.clone();
    bad_y[[1, 0]] = f64::NAN;
    let e = m
        .fit(
            &x,
            &bad_y,
            FitOptions {
                checkpoint: Some(every(&path)),
                ..opts()
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().starts_with("epoch 2 batch 1: fit: the loss is NaN"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // A step that overflows the parameters to infinity on the epoch's last batch (a learning
    // rate of f64::MAX, one batch per epoch): the loss was finite, the state is not, and the
    // checkpoint is not written.
    m.compile(Optim::sgd(f64::MAX), Loss::Mse).unwrap();
    let far = y.mapv(|v| v + 1e3);
    let e = m
        .fit(
            &x,
            &far,
            FitOptions {
                checkpoint: Some(every(&path)),
                batch_size: 8,
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("fit: epoch 2: parameter layers.")
            && e.contains("holds NaN or infinity after the epoch's last step"),
        "{e}"
    );
    assert!(e.ends_with("was not written (the last good one is kept)"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let mut restored = lstm_model();
    restored.load_checkpoint(&path).unwrap();
    assert_eq!(restored.epoch(), 1);
    assert!(values(&restored).iter().all(|v| v.iter().all(|x| x.is_finite())));
}

/// The xLSTM stabiliser `m' = max(log f + m, ĩ)` keeps a NaN of either side (it went through
/// `maximum`, which returned the other side when the first was NaN).
#[test]
fn the_xlstm_stabiliser_keeps_nan() {
    use eddy_nn::{MlstmCell, SlstmCell};
    use eddy_tape::Tape;
    use ndarray::Axis;
    let mut rng = Rng::seed(7);
    let (b, input) = (2, 3);
    let slstm = SlstmCell::<f64>::new(input, 4, 2, &mut rng).unwrap();
    let mlstm = MlstmCell::<f64>::new(input, 4, 2, &mut rng).unwrap();
    for (name, cell) in [("slstm", &slstm as &dyn Stepper), ("mlstm", &mlstm)] {
        let t = Tape::<f64>::new();
        let x = t.constant(ArrayD::from_elem(vec![1, b, input], 0.3));
        let xp = cell.project(&x).unwrap().select(0, 0).unwrap();
        let sizes = cell.sizes();
        let mut state: Vec<Var<f64>> = sizes
            .iter()
            .map(|&s| t.constant(ArrayD::zeros(vec![b, s])))
            .collect();
        // A NaN in the stabiliser of row 0 (the last state part).
        let mut m = ArrayD::zeros(vec![b, sizes[3]]);
        m[[0, 0]] = f64::NAN;
        state[3] = t.constant(m);
        let next = cell.step(&xp, &state).unwrap();
        assert!(
            next[3].value()[[0, 0]].is_nan(),
            "{name}: the stabiliser hid the NaN"
        );
        assert!(
            next[0].value().index_axis(Axis(0), 0).iter().any(|v| v.is_nan()),
            "{name}: h"
        );
        assert!(
            next[0]
                .value()
                .index_axis(Axis(0), 1)
                .iter()
                .all(|v| v.is_finite()),
            "{name}: row 1"
        );
    }
}

/// The two xLSTM cells behind one object-safe face, for the loop above.
trait Stepper {
    fn project(&self, x: &Var<f64>) -> Result<Var<f64>>;
    fn sizes(&self) -> Vec<usize>;
    fn step(&self, xp: &Var<f64>, state: &[Var<f64>]) -> Result<Vec<Var<f64>>>;
}

impl<C: eddy_nn::Cell<f64, State = Vec<Var<f64>>>> Stepper for C {
    fn project(&self, x: &Var<f64>) -> Result<Var<f64>> {
        eddy_nn::Cell::project(self, x)
    }
    fn sizes(&self) -> Vec<usize> {
        self.state_sizes()
    }
    fn step(&self, xp: &Var<f64>, state: &[Var<f64>]) -> Result<Vec<Var<f64>>> {
        eddy_nn::Cell::step(self, xp, &state.to_vec())
    }
}
