//! Data parallelism: one tape per shard of a batch, on rayon's threads, with the gradients
//! summed in shard order, so a run is bit-reproducible for a given number of shards.

use eddy_tape::{Error, Float, Grads, Result};
use rayon::prelude::*;
use std::ops::Range;

/// Splits `0..batch` into `shards` contiguous ranges of near-equal size (the first ones larger).
pub fn shard_ranges(batch: usize, shards: usize) -> Vec<Range<usize>> {
    let shards = shards.clamp(1, batch.max(1));
    let (base, extra) = (batch / shards, batch % shards);
    let mut start = 0;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Runs `step` on each shard of a batch in parallel and sums what the shards return.
///
/// `step(rows, weight)` gets the shard's rows of the batch and its weight `rows.len() / batch`:
/// scale a mean loss by it, so the shard losses and gradients add up to the full batch's. It
/// builds its own [`Tape`](eddy_tape::Tape) (tapes are per thread) and returns its loss and
/// gradients. Runs on the current rayon pool: inside `pool.install(..)` to choose the threads.
///
/// # Errors
/// [`Error::Invalid`] for an empty batch; the first error of a shard.
///
/// # Example
/// ```
/// use eddy_nn::parallel::data_parallel;
/// use eddy_ops::prelude::*;
/// use ndarray::Array1;
///
/// let w = Param::new("w", Array1::from_elem(1, 2.0f64).into_dyn());
/// let xs: Vec<f64> = (0..10).map(|i| i as f64).collect();
/// // loss = mean over the batch of (w·x)²
/// let (loss, grads) = data_parallel(xs.len(), 2, |rows, weight| {
///     let tape = Tape::new();
///     let x = tape.constant(Array1::from(xs[rows].to_vec()).into_dyn());
///     let loss = (x * &tape.param(&w))?.powi(2)?.mean_all()?.scale(weight)?;
///     Ok((loss.item()?, loss.backward()?))
/// })?;
/// let full: f64 = xs.iter().map(|x| (2.0 * x).powi(2)).sum::<f64>() / 10.0;
/// assert!((loss - full).abs() < 1e-12);
/// assert!(grads.param(&w).is_some());
/// # Ok::<(), Error>(())
/// ```
pub fn data_parallel<F, S>(batch: usize, shards: usize, step: S) -> Result<(f64, Grads<F>)>
where
    F: Float,
    S: Fn(Range<usize>, F) -> Result<(f64, Grads<F>)> + Sync,
{
    if batch == 0 {
        return Err(Error::invalid("data_parallel", "the batch is empty"));
    }
    let ranges = shard_ranges(batch, shards);
    let results: Vec<Result<(f64, Grads<F>)>> = ranges
        .into_par_iter()
        .map(|r| {
            let weight = F::of(r.len() as f64 / batch as f64);
            step(r, weight)
        })
        .collect();
    let mut total = 0.0;
    let mut grads = Grads::default();
    for r in results {
        let (loss, g) = r?;
        total += loss;
        grads += &g;
    }
    Ok((total, grads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(5, 1), vec![0..5]);
    }
}
