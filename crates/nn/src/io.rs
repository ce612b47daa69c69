//! safetensors files: reading tensors and metadata, loading a module's parameters by name, and
//! saving atomically (a temporary file unique to the save, fsync, rename), so a crash mid-save
//! leaves the previous file intact and two saves at once leave one of them whole.

use crate::Module;
use eddy_tape::{Error, Float, Result};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One tensor read from a file, converted to `f64` (float dtypes) or kept as integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// A floating-point tensor (stored as F16/BF16/F32/F64), widened to `f64`.
    Float {
        /// The dtype in the file (`"F32"`, `"BF16"`, ...).
        dtype: String,
        /// The values, widened to `f64`.
        value: ArrayD<f64>,
    },
    /// An integer tensor (I8–I64, U8–U64), widened to `i64`.
    Int {
        /// The dtype in the file (`"I64"`, `"U8"`, ...).
        dtype: String,
        /// The values, widened to `i64`.
        value: ArrayD<i64>,
    },
}

/// The tensors and metadata of a safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// The tensors, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's string metadata (`__metadata__`).
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads a safetensors file.
    ///
    /// # Errors
    /// [`Error::File`] if the file is missing, truncated or corrupt, or holds a dtype eddy
    /// cannot read.
    pub fn read(path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        TensorFile::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a safetensors file; `path` is only for messages.
    pub fn from_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref();
        let corrupt =
            |e: safetensors::SafeTensorError| Error::file(path, format!("not a valid safetensors file: {e}"));
        let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(
                name.clone(),
                convert(&view).map_err(|r| Error::file(path, format!("tensor {name:?}: {r}")))?,
            );
        }
        Ok(TensorFile {
            path: path.to_path_buf(),
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// A float tensor by name, in `F`.
    ///
    /// # Errors
    /// [`Error::File`] if it is missing or not a float tensor.
    pub fn float<F: Float>(&self, name: &str) -> Result<ArrayD<F>> {
        match self.tensors.get(name) {
            Some(Tensor::Float { value, .. }) => Ok(value.mapv(F::of)),
            Some(Tensor::Int { dtype, .. }) => Err(Error::file(
                &self.path,
                format!("tensor {name:?} has dtype {dtype}, expected a float dtype"),
            )),
            None => Err(Error::file(&self.path, format!("missing tensor {name:?}"))),
        }
    }

    /// An integer tensor by name.
    ///
    /// # Errors
    /// [`Error::File`] if it is missing or not an integer tensor.
    pub fn int(&self, name: &str) -> Result<ArrayD<i64>> {
        match self.tensors.get(name) {
            Some(Tensor::Int { value, .. }) => Ok(value.clone()),
            Some(Tensor::Float { dtype, .. }) => Err(Error::file(
                &self.path,
                format!("tensor {name:?} has dtype {dtype}, expected an integer dtype"),
            )),
            None => Err(Error::file(&self.path, format!("missing tensor {name:?}"))),
        }
    }

    /// A metadata value by key.
    ///
    /// # Errors
    /// [`Error::File`] if the key is missing.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::file(&self.path, format!("missing metadata key {key:?}")))
    }
}

fn convert(view: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let shape = IxDyn(view.shape());
    let data = view.data();
    macro_rules! floats {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk")) as f64)
                .collect::<Vec<f64>>()
        };
    }
    macro_rules! ints {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk")) as i64)
                .collect::<Vec<i64>>()
        };
    }
    let dtype = format!("{:?}", view.dtype());
    let float = |v: Vec<f64>| ArrayD::from_shape_vec(shape.clone(), v).map_err(|e| e.to_string());
    let int = |v: Vec<i64>| ArrayD::from_shape_vec(shape.clone(), v).map_err(|e| e.to_string());
    Ok(match view.dtype() {
        Dtype::F64 => Tensor::Float {
            dtype,
            value: float(floats!(f64, 8))?,
        },
        Dtype::F32 => Tensor::Float {
            dtype,
            value: float(floats!(f32, 4))?,
        },
        Dtype::F16 => Tensor::Float {
            dtype,
            value: float(
                data.chunks_exact(2)
                    .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            )?,
        },
        Dtype::BF16 => Tensor::Float {
            dtype,
            value: float(
                data.chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                    .collect(),
            )?,
        },
        Dtype::I64 => Tensor::Int {
            dtype,
            value: int(ints!(i64, 8))?,
        },
        Dtype::I32 => Tensor::Int {
            dtype,
            value: int(ints!(i32, 4))?,
        },
        Dtype::I16 => Tensor::Int {
            dtype,
            value: int(ints!(i16, 2))?,
        },
        Dtype::I8 => Tensor::Int {
            dtype,
            value: int(ints!(i8, 1))?,
        },
        Dtype::U8 => Tensor::Int {
            dtype,
            value: int(ints!(u8, 1))?,
        },
        Dtype::U16 => Tensor::Int {
            dtype,
            value: int(ints!(u16, 2))?,
        },
        Dtype::U32 => Tensor::Int {
            dtype,
            value: int(ints!(u32, 4))?,
        },
        other => return Err(format!("dtype {other:?} is not supported")),
    })
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Loads a module's parameters from `file` by their dotted names.
///
/// With `strict`, a tensor in the file that the module does not have is an error too.
///
/// # Errors
/// [`Error::File`] naming the parameter for a missing tensor, a wrong shape (expected and
/// actual), a wrong dtype, or (strict) an extra tensor. Nothing is changed on error.
pub fn load_params<F: Float>(module: &dyn Module<F>, file: &TensorFile, strict: bool) -> Result<()> {
    let params = module.params();
    let mut values = Vec::with_capacity(params.len());
    for (name, p) in &params {
        if !file.tensors.contains_key(name) {
            return Err(Error::file(
                &file.path,
                format!("missing tensor {name:?}: the model expects shape {:?}", p.shape()),
            ));
        }
        let v = file.float::<F>(name)?;
        if v.shape() != p.shape().as_slice() {
            return Err(Error::file(
                &file.path,
                format!(
                    "tensor {name:?} has shape {:?}, the model expects {:?}",
                    v.shape(),
                    p.shape()
                ),
            ));
        }
        values.push(v);
    }
    if strict {
        let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = file.tensors.keys().find(|k| !known.contains(k.as_str())) {
            return Err(Error::file(
                &file.path,
                format!("unexpected tensor {extra:?}: the model has no such parameter"),
            ));
        }
    }
    for ((_, p), v) in params.iter().zip(values) {
        p.set(v);
    }
    Ok(())
}

/// A tensor to write: its name and an `f32`/`f64` array, or `i64`s.
pub enum Entry<'a> {
    /// An `f32` tensor, written as F32.
    F32(&'a ArrayD<f32>),
    /// An `f64` tensor, written as F64.
    F64(&'a ArrayD<f64>),
    /// An integer tensor, written as I64.
    I64(&'a ArrayD<i64>),
}

/// Serialises named tensors and metadata to the bytes of a safetensors file.
pub fn to_bytes(entries: &[(String, Entry<'_>)], metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(entries.len());
    for (name, e) in entries {
        let (dtype, shape, bytes) = match e {
            Entry::F32(a) => (
                Dtype::F32,
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Entry::F64(a) => (
                Dtype::F64,
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Entry::I64(a) => (
                Dtype::I64,
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("save", e.to_string()))?;
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata.clone())
    };
    safetensors::serialize(views, meta).map_err(|e| Error::invalid("save", e.to_string()))
}

/// A module's parameters as entries named by their dotted names.
pub fn param_entries<F: Float>(module: &dyn Module<F>) -> Vec<(String, ArrayD<f64>)> {
    module
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.value().mapv(|v| v.as_f64())))
        .collect()
}

/// Saves a module's parameters (as `F`'s dtype) under their dotted names, atomically.
pub fn save_params<F: Float>(
    module: &dyn Module<F>,
    path: impl AsRef<Path>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let values: Vec<(String, std::sync::Arc<ArrayD<F>>)> =
        module.params().into_iter().map(|(n, p)| (n, p.value())).collect();
    let widened: Vec<(String, ArrayD<f64>)>;
    let narrowed: Vec<(String, ArrayD<f32>)>;
    let entries: Vec<(String, Entry<'_>)> = if F::NAME == "f64" {
        widened = values
            .iter()
            .map(|(n, v)| (n.clone(), v.mapv(|x| x.as_f64())))
            .collect();
        widened.iter().map(|(n, v)| (n.clone(), Entry::F64(v))).collect()
    } else {
        narrowed = values
            .iter()
            .map(|(n, v)| (n.clone(), v.mapv(|x| x.as_f64() as f32)))
            .collect();
        narrowed.iter().map(|(n, v)| (n.clone(), Entry::F32(v))).collect()
    };
    write_atomic(path.as_ref(), &to_bytes(&entries, metadata)?, None)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it with a name unique to this
/// save, fsync, rename over `path`, fsync of the directory.
///
/// Two saves to one path at once (threads or processes) each write their own temporary file, so
/// the file at `path` is always one whole save, never a mix. A failed save removes its temporary
/// file; only a killed process leaves one behind (`.<name>.<random>.tmp`), and `path` is then
/// untouched. `fail_after` injects a failure after that many bytes (for tests): the write stops
/// as on a full disk, the temporary file is removed, and `path` is untouched.
///
/// # Errors
/// [`Error::File`] naming `path` if the temporary file cannot be created, written or renamed.
#[doc(hidden)]
pub fn write_atomic(path: &Path, bytes: &[u8], fail_after: Option<usize>) -> Result<()> {
    let io = |e: std::io::Error| Error::file(path, format!("cannot write: {e}"));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?;
    let prefix = format!(".{}.", file_name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // The umask applies, as for `File::create`; tempfile's default would be 0o600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    // From here on, every early return drops `tmp`, which deletes the temporary file.
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    if let Some(n) = fail_after {
        tmp.write_all(&bytes[..n.min(bytes.len())]).map_err(io)?;
        return Err(Error::file(path, "injected fault: the write stopped half-way"));
    }
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all(); // Persist the rename where the platform allows it.
    }
    Ok(())
}
