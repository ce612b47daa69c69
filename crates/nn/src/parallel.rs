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
    let mut states = vec![(); shards.max(1)];
    let results = map_shards(batch, &mut states, |r, _| {
        let weight = F::of(r.len() as f64 / batch as f64);
        step(r, weight)
    })?;
    let mut total = 0.0;
    let mut grads = Grads::default();
    for (loss, g) in results {
        total += loss;
        grads += &g;
    }
    Ok((total, grads))
}

/// Runs `step` on the shards of `0..batch` ([`shard_ranges`], one per element of `states`, fewer
/// if the batch has fewer rows) in parallel on the current rayon pool, each with its own
/// element of `states` (e.g. a dropout RNG stream), and returns the results in shard order.
/// One shard runs on the calling thread. [`data_parallel`] is this with the gradients summed.
///
/// # Errors
/// [`Error::Invalid`] if `states` is empty; the first error of a shard, in shard order.
pub fn map_shards<T, St, S>(batch: usize, states: &mut [St], step: S) -> Result<Vec<T>>
where
    T: Send,
    St: Send,
    S: Fn(Range<usize>, &mut St) -> Result<T> + Sync,
{
    if states.is_empty() {
        return Err(Error::invalid("map_shards", "no shards (states is empty)"));
    }
    let ranges = shard_ranges(batch, states.len());
    if let ([r], [state, ..]) = (ranges.as_slice(), &mut *states) {
        return Ok(vec![step(r.clone(), state)?]);
    }
    ranges
        .into_par_iter()
        .zip(states.par_iter_mut())
        .map(|(r, state)| step(r, state))
        .collect::<Vec<Result<T>>>()
        .into_iter()
        .collect()
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

    #[test]
    fn map_shards_gives_each_shard_its_state_in_order() {
        let mut states = vec![10, 20, 30, 40];
        let out = map_shards(5, &mut states, |r, s| {
            *s += 1;
            Ok((r, *s))
        })
        .unwrap();
        assert_eq!(out, vec![(0..2, 11), (2..3, 21), (3..4, 31), (4..5, 41)]);
        // Fewer rows than states: the extra states are not touched.
        let out = map_shards(2, &mut states, |r, s| Ok((r, *s))).unwrap();
        assert_eq!(out, vec![(0..1, 11), (1..2, 21)]);
        assert_eq!(states, vec![11, 21, 31, 41]);
        let none: &mut [u8] = &mut [];
        assert!(map_shards(3, none, |_, _| Ok(())).is_err());
    }
}
