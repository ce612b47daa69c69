//! Preparing time series for a recurrent model: [`window`]ing a series into (input sequence,
//! target) pairs, a time-ordered [`split`], a [`Scaler`] fitted on the training part only, and
//! [`pad_sequences`] for batches of ragged length.
//!
//! ```
//! use eddy_nn::data::{split, window, Scaler, Targets, Window};
//! use ndarray::{Array1, ArrayD};
//!
//! let series: ArrayD<f64> = Array1::range(0.0, 20.0, 1.0).into_dyn(); // [20], one feature
//! let (train, _val, test) = split(&series, 0.6, 0.2)?;
//! let scaler = Scaler::min_max(&train)?;
//! let w = Window { input_len: 4, horizon: 1, targets: Targets::Next };
//! let (x, y) = window(&scaler.transform(&train)?, &w)?;
//! assert_eq!(x.shape(), &[8, 4, 1]); // 12 - 4 - 1 + 1 windows
//! assert_eq!(y.shape(), &[8, 1]);
//! assert!((scaler.inverse_transform(&y)?[[0, 0]] - 4.0).abs() < 1e-12); // the value after 0, 1, 2, 3
//! assert_eq!(test.shape(), &[4]);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

use eddy_tape::{Error, Float, Result};
use ndarray::{s, ArrayD, Axis, Ix2};

/// What [`window`] takes as the target of each input window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Targets {
    /// The row `horizon` steps after the window's last row: `y` is `[M, C]` (a model whose last
    /// recurrent layer returns only its last output).
    #[default]
    Next,
    /// For every input step `t`, the row `horizon` steps after it: `y` is `[M, input_len, C]`
    /// (a model that returns sequences, as the seed's).
    Sequence,
}

/// How [`window`] cuts a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Steps per input window.
    pub input_len: usize,
    /// How many steps ahead the target is (1: the next step).
    pub horizon: usize,
    /// What the target of a window is: the value after it, or one after every step.
    pub targets: Targets,
}

/// Views a series as `[N, F]`: a 1-D series is one feature.
fn as_2d<F: Float>(op: &str, series: &ArrayD<F>) -> Result<ndarray::Array2<F>> {
    match series.ndim() {
        1 => Ok(series
            .clone()
            .insert_axis(Axis(1))
            .into_dimensionality::<Ix2>()
            .expect("2-d")),
        2 => Ok(series.clone().into_dimensionality::<Ix2>().expect("2-d")),
        _ => Err(Error::shape(
            op,
            &[series.shape()],
            "the series must be [N] or [N, F]",
        )),
    }
}

/// Cuts `series` (`[N]` or `[N, F]`) into every window of `input_len` consecutive rows and its
/// target `horizon` steps ahead (all features; select columns before or after).
///
/// Returns `x` `[M, input_len, F]` and `y` `[M, F]` ([`Targets::Next`]) or
/// `[M, input_len, F]` ([`Targets::Sequence`]), with `M = N − input_len − horizon + 1`.
///
/// # Errors
/// [`Error::Invalid`] for `input_len` or `horizon` of 0 or a series too short for one window;
/// [`Error::Shape`] for a series of another rank.
pub fn window<F: Float>(series: &ArrayD<F>, w: &Window) -> Result<(ArrayD<F>, ArrayD<F>)> {
    let op = "window";
    let s2 = as_2d(op, series)?;
    if w.input_len == 0 || w.horizon == 0 {
        return Err(Error::invalid(op, "input_len and horizon must be at least 1"));
    }
    let (n, f) = s2.dim();
    let need = w.input_len.saturating_add(w.horizon);
    if n < need {
        return Err(Error::invalid(
            op,
            format!(
                "a series of {n} rows is too short for one window (input_len {} + horizon {})",
                w.input_len, w.horizon
            ),
        ));
    }
    let m = n - need + 1;
    if eddy_tape::checked_len(&[m, w.input_len, f], std::mem::size_of::<F>()).is_none() {
        return Err(Error::invalid(
            op,
            format!(
                "{m} windows of {} rows × {f} features are more than memory can hold",
                w.input_len
            ),
        ));
    }
    let mut x = ndarray::Array3::<F>::zeros((m, w.input_len, f));
    for i in 0..m {
        x.slice_mut(s![i, .., ..])
            .assign(&s2.slice(s![i..i + w.input_len, ..]));
    }
    let y = match w.targets {
        Targets::Next => {
            let start = w.input_len - 1 + w.horizon;
            s2.slice(s![start..start + m, ..]).to_owned().into_dyn()
        }
        Targets::Sequence => {
            let mut y = ndarray::Array3::<F>::zeros((m, w.input_len, f));
            for i in 0..m {
                let a = i + w.horizon;
                y.slice_mut(s![i, .., ..])
                    .assign(&s2.slice(s![a..a + w.input_len, ..]));
            }
            y.into_dyn()
        }
    };
    Ok((x.into_dyn(), y))
}

/// Splits rows in time order: the first `train` fraction, the next `val` fraction, the rest
/// (test). Works on any array with rows on axis 0 (a series, or windows).
///
/// # Errors
/// [`Error::Invalid`] for fractions outside `[0, 1]` or summing above 1, or an empty train part.
pub fn split<F: Float>(a: &ArrayD<F>, train: f64, val: f64) -> Result<(ArrayD<F>, ArrayD<F>, ArrayD<F>)> {
    let op = "split";
    let ok = |v: f64| (0.0..=1.0).contains(&v);
    if !ok(train) || !ok(val) || train + val > 1.0 + 1e-12 {
        return Err(Error::invalid(
            op,
            format!("fractions must be in [0, 1] and sum to at most 1, got train {train}, val {val}"),
        ));
    }
    if a.ndim() == 0 {
        return Err(Error::shape(op, &[a.shape()], "needs rows on axis 0"));
    }
    let n = a.shape()[0];
    let a_end = ((n as f64) * train).round() as usize;
    let b_end = (((n as f64) * (train + val)).round() as usize).min(n);
    if a_end == 0 {
        return Err(Error::invalid(op, format!("the train part of {n} rows is empty")));
    }
    let part = |r: std::ops::Range<usize>| a.slice_axis(Axis(0), r.into()).to_owned();
    Ok((part(0..a_end), part(a_end..b_end), part(b_end..n)))
}

/// Per-feature scaling fitted on training data only: `x' = (x − shift) / scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    /// Per feature: the minimum (min-max) or the mean (standard).
    pub shift: Vec<f64>,
    /// Per feature: `max − min` (min-max) or the standard deviation (standard); 1 for a
    /// constant feature, so it maps to 0 instead of dividing by zero.
    pub scale: Vec<f64>,
}

impl Scaler {
    fn fit<F: Float>(op: &str, data: &ArrayD<F>, stats: impl Fn(&[f64]) -> (f64, f64)) -> Result<Scaler> {
        if data.ndim() == 0 || data.is_empty() {
            return Err(Error::invalid(
                op,
                format!("cannot fit on empty data of shape {:?}", data.shape()),
            ));
        }
        let f = *data.shape().last().expect("ndim > 0");
        let f = if data.ndim() == 1 { 1 } else { f };
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); f];
        for (i, v) in data.iter().enumerate() {
            if !v.is_finite() {
                return Err(Error::invalid(op, "the data holds NaN or infinity"));
            }
            cols[i % f].push(v.as_f64());
        }
        let (shift, scale) = cols
            .iter()
            .map(|c| {
                let (s, k) = stats(c);
                (s, if k > 0.0 { k } else { 1.0 })
            })
            .unzip();
        Ok(Scaler { shift, scale })
    }

    /// Scales each feature (the last axis; a 1-D array is one feature) to `[0, 1]` on `train`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for empty data or data holding NaN or infinity.
    pub fn min_max<F: Float>(train: &ArrayD<F>) -> Result<Scaler> {
        Scaler::fit("Scaler::min_max", train, |c| {
            let lo = c.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi - lo)
        })
    }

    /// Scales each feature to mean 0 and (population) standard deviation 1 on `train`.
    ///
    /// # Errors
    /// As [`Scaler::min_max`].
    pub fn standard<F: Float>(train: &ArrayD<F>) -> Result<Scaler> {
        Scaler::fit("Scaler::standard", train, |c| {
            let n = c.len() as f64;
            let mean = c.iter().sum::<f64>() / n;
            let var = c.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (mean, var.sqrt())
        })
    }

    fn apply<F: Float>(
        &self,
        op: &str,
        a: &ArrayD<F>,
        f: impl Fn(f64, f64, f64) -> f64,
    ) -> Result<ArrayD<F>> {
        let n = self.shift.len();
        let last = if a.ndim() <= 1 {
            1
        } else {
            *a.shape().last().expect("ndim > 1")
        };
        if last != n {
            return Err(Error::shape(
                op,
                &[a.shape()],
                format!("the scaler was fitted on {n} features"),
            ));
        }
        let mut out = a.clone();
        for (i, v) in out.iter_mut().enumerate() {
            let k = i % n;
            *v = F::of(f(v.as_f64(), self.shift[k], self.scale[k]));
        }
        Ok(out)
    }

    /// Scales `a`, whose last axis holds the features (any rank: a series, windows `[M, T, F]`).
    ///
    /// # Errors
    /// [`Error::Shape`] if the last axis is not the fitted number of features.
    pub fn transform<F: Float>(&self, a: &ArrayD<F>) -> Result<ArrayD<F>> {
        self.apply("Scaler::transform", a, |v, s, k| (v - s) / k)
    }

    /// Undoes [`Scaler::transform`] (model outputs back to the data's units).
    ///
    /// # Errors
    /// As [`Scaler::transform`].
    pub fn inverse_transform<F: Float>(&self, a: &ArrayD<F>) -> Result<ArrayD<F>> {
        self.apply("Scaler::inverse_transform", a, |v, s, k| v * k + s)
    }

    /// The scaler of a subset of the features, in the given order (to invert predictions of
    /// target columns).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a column out of range.
    pub fn columns(&self, cols: &[usize]) -> Result<Scaler> {
        if let Some(&c) = cols.iter().find(|&&c| c >= self.shift.len()) {
            return Err(Error::invalid(
                "Scaler::columns",
                format!("column {c} is out of range for {} features", self.shift.len()),
            ));
        }
        Ok(Scaler {
            shift: cols.iter().map(|&c| self.shift[c]).collect(),
            scale: cols.iter().map(|&c| self.scale[c]).collect(),
        })
    }
}

/// A batch of ragged sequences padded to its longest.
#[derive(Debug, Clone, PartialEq)]
pub struct Padded<F: Float> {
    /// `[B, T_max, F]`, zero past each length.
    pub x: ArrayD<F>,
    /// Each sequence's length, for [`Recurrent::forward_with`](crate::Recurrent::forward_with)
    /// and [`Model::forward`](crate::sequential::Model::forward).
    pub lengths: Vec<usize>,
    /// `[B, T_max, 1]`, 1 inside each sequence and 0 past its end: the `mask` of the losses
    /// (it broadcasts over the feature axis).
    pub mask: ArrayD<F>,
}

/// Pads sequences `[T_i, F]` (batch-first) to `[B, max T_i, F]` with zeros.
///
/// # Errors
/// [`Error::Invalid`] for no sequences or an empty one; [`Error::Shape`] for a sequence that
/// is not 2-D or has another feature count than the first.
pub fn pad_sequences<F: Float>(seqs: &[ArrayD<F>]) -> Result<Padded<F>> {
    let op = "pad_sequences";
    let first = seqs.first().ok_or_else(|| Error::invalid(op, "no sequences"))?;
    if first.ndim() != 2 {
        return Err(Error::shape(op, &[first.shape()], "each sequence must be [T, F]"));
    }
    let f = first.shape()[1];
    for (i, s) in seqs.iter().enumerate() {
        if s.ndim() != 2 || s.shape()[1] != f {
            return Err(Error::shape(
                op,
                &[first.shape(), s.shape()],
                format!("sequence {i} must be [T, {f}] like the first"),
            ));
        }
        if s.shape()[0] == 0 {
            return Err(Error::invalid(op, format!("sequence {i} is empty")));
        }
    }
    let lengths: Vec<usize> = seqs.iter().map(|s| s.shape()[0]).collect();
    let t = *lengths.iter().max().expect("non-empty");
    let b = seqs.len();
    let mut x = ndarray::Array3::<F>::zeros((b, t, f));
    let mut mask = ndarray::Array3::<F>::zeros((b, t, 1));
    for (i, s) in seqs.iter().enumerate() {
        let l = lengths[i];
        x.slice_mut(s![i, ..l, ..])
            .assign(&s.view().into_dimensionality::<Ix2>().expect("2-d"));
        mask.slice_mut(s![i, ..l, ..]).fill(F::one());
    }
    Ok(Padded {
        x: x.into_dyn(),
        lengths,
        mask: mask.into_dyn(),
    })
}

/// Class labels as one-hot rows `[N, classes]`: the targets of
/// [`Loss::CrossEntropy`](crate::sequential::Loss::CrossEntropy) (Keras' `to_categorical`).
///
/// # Errors
/// [`Error::Invalid`] for a label `>= classes`.
///
/// ```
/// let y = eddy_nn::data::one_hot::<f32>(&[2, 0], 3)?;
/// assert_eq!(y, ndarray::arr2(&[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]).into_dyn());
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn one_hot<F: Float>(labels: &[usize], classes: usize) -> Result<ArrayD<F>> {
    if let Some((i, &c)) = labels.iter().enumerate().find(|(_, &c)| c >= classes) {
        return Err(Error::invalid(
            "one_hot",
            format!("label {c} at position {i} is out of range for {classes} classes"),
        ));
    }
    Ok(ndarray::Array2::from_shape_fn((labels.len(), classes), |(i, c)| {
        if labels[i] == c {
            F::one()
        } else {
            F::zero()
        }
    })
    .into_dyn())
}
