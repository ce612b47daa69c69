//! Elementwise loops split across the threads of the current rayon pool.
//!
//! An elementwise op on a large array (a user cell's gates at W4's sizes: 65 536 values a gate
//! and step) is tens of microseconds of work that one thread would do while the others wait
//! for the next product. Cut into one part per thread, it runs on all of them; below
//! [`SPLIT_MIN`] values a part, or in a one-thread pool, the loop runs on the calling thread.
//! Every value is computed by the same code wherever it falls, so the result is the same, bit
//! for bit, at every thread count. The engine's `+ − × ÷`, scale and shift, and the gradient
//! sums of the reverse pass use these loops, as do `eddy-ops`' elementwise functions.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Values per part below which an elementwise loop is not split, so that an op on fewer than
/// 32 768 values runs on the calling thread (PyTorch's `GRAIN_SIZE` is the same). Measured on
/// a Zen 4 (docs/performance.md, stop 40): five elementwise ops in a chain on `[64, 512]` took
/// 38 µs on one thread and 26 on two, on `[64, 1024]` 87 and 46; on `[64, 256]`, cut at 8 192
/// values a part, 19 µs either way (reading the other core's half of an output cost the next
/// op what the split saved).
pub const SPLIT_MIN: usize = 1 << 14;

/// The length of each part when `n` values are split across the current rayon pool with at
/// least `min` values a part (a multiple of 64, so vector loops see whole blocks), or `None`
/// when the loop should run on the calling thread.
fn part_len(n: usize, min: usize) -> Option<usize> {
    let most = n / min.max(1);
    if most < 2 {
        return None;
    }
    let parts = rayon::current_num_threads().min(most);
    (parts >= 2).then(|| n.div_ceil(parts).next_multiple_of(64))
}

/// `n` values written part by part on the current rayon pool: `write(start, part)` gets each
/// `len`-long part (`start` its first index) and must initialise all of it.
fn collect_parts<T: Send>(
    n: usize,
    len: usize,
    write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(len)
        .enumerate()
        .for_each(|(p, part)| write(p * len, part));
    // SAFETY: the parts cover `0..n`, and `write` (private to this module, called with the
    // closures below) initialises every element of its part.
    unsafe { out.set_len(n) };
    out
}

/// `f(x[i])` for every `i`, split as [`map2`].
pub fn map<T: Copy + Send + Sync>(x: &[T], min: usize, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let Some(len) = part_len(x.len(), min) else {
        return x.iter().map(|&a| f(a)).collect();
    };
    collect_parts(x.len(), len, |start, part| {
        let end = start + part.len();
        for (o, &a) in part.iter_mut().zip(&x[start..end]) {
            o.write(f(a));
        }
    })
}

/// `out[i] = f(out[i], x[i])` for every `i`, in place, split as [`map2`].
///
/// # Panics
/// If `out` and `x` differ in length.
pub fn update<T: Copy + Send + Sync>(out: &mut [T], x: &[T], min: usize, f: impl Fn(T, T) -> T + Sync) {
    assert_eq!(out.len(), x.len(), "update's arrays differ in length");
    let one = |out: &mut [T], x: &[T]| {
        for (o, &a) in out.iter_mut().zip(x) {
            *o = f(*o, a);
        }
    };
    match part_len(x.len(), min) {
        None => one(out, x),
        Some(len) => out
            .par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .for_each(|(out, x)| one(out, x)),
    }
}

/// `f(x[i], y[i])` for every `i`, split across the current rayon pool when there are at least
/// twice `min` values (see the module doc).
///
/// # Panics
/// If `x` and `y` differ in length.
///
/// ```
/// let (x, y) = (vec![1.0_f32; 100_000], vec![2.0_f32; 100_000]);
/// let sum = eddy_tape::split::map2(&x, &y, eddy_tape::split::SPLIT_MIN, |a, b| a + b);
/// assert!(sum.iter().all(|&s| s == 3.0));
/// ```
pub fn map2<T: Copy + Send + Sync>(x: &[T], y: &[T], min: usize, f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    assert_eq!(x.len(), y.len(), "map2's inputs differ in length");
    let Some(len) = part_len(x.len(), min) else {
        return x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect();
    };
    collect_parts(x.len(), len, |start, part| {
        let end = start + part.len();
        for ((o, &a), &b) in part.iter_mut().zip(&x[start..end]).zip(&y[start..end]) {
            o.write(f(a, b));
        }
    })
}

/// `f(x[i], y[i], z[i])` for every `i`, split as [`map2`].
///
/// # Panics
/// If the three differ in length.
pub fn map3<T: Copy + Send + Sync>(
    x: &[T],
    y: &[T],
    z: &[T],
    min: usize,
    f: impl Fn(T, T, T) -> T + Sync,
) -> Vec<T> {
    assert!(
        x.len() == y.len() && y.len() == z.len(),
        "map3's inputs differ in length"
    );
    let Some(len) = part_len(x.len(), min) else {
        return x.iter().zip(y).zip(z).map(|((&a, &b), &c)| f(a, b, c)).collect();
    };
    collect_parts(x.len(), len, |start, part| {
        let end = start + part.len();
        let ins = x[start..end].iter().zip(&y[start..end]).zip(&z[start..end]);
        for (o, ((&a, &b), &c)) in part.iter_mut().zip(ins) {
            o.write(f(a, b, c));
        }
    })
}

/// `n` values, each part of them set to `zero` and then handed to `fill(start, part)` (`start`
/// its first index), the parts split as [`map2`]. For a kernel that writes a slice in place,
/// such as an elementwise function's dispatched loop.
///
/// ```
/// let squares = eddy_tape::split::fill(100_000, 1024, 0.0_f64, |start, part| {
///     for (i, v) in part.iter_mut().enumerate() {
///         *v = ((start + i) as f64).powi(2);
///     }
/// });
/// assert_eq!(squares[300], 90_000.0);
/// ```
pub fn fill<T: Copy + Send + Sync>(
    n: usize,
    min: usize,
    zero: T,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let Some(len) = part_len(n, min) else {
        let mut out = vec![zero; n];
        fill(0, &mut out);
        return out;
    };
    collect_parts(n, len, |start, part| {
        for v in part.iter_mut() {
            v.write(zero);
        }
        // SAFETY: every element of `part` was just initialised, and `MaybeUninit<T>` has
        // `T`'s layout.
        let part = unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) };
        fill(start, part);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool")
            .install(f)
    }

    /// Every value is computed once, in its place, at every thread count and size, including
    /// sizes that are not a multiple of the part length.
    #[test]
    fn the_parts_cover_every_value_at_every_thread_count() {
        for threads in [1, 2, 3] {
            for n in [0, 1, 63, 8191, 16_384, 16_385, 50_001] {
                let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
                let y: Vec<f64> = (0..n).map(|i| 0.5 * i as f64).collect();
                let (one, updated) = in_pool(threads, || {
                    let mut updated = x.clone();
                    update(&mut updated, &y, 1000, |a, b| a - 2.0 * b);
                    (map(&x, 1000, |a| a * 3.0), updated)
                });
                let (two, three, filled) = in_pool(threads, || {
                    (
                        map2(&x, &y, 1000, |a, b| a + b),
                        map3(&x, &y, &x, 1000, |a, b, c| a * b - c),
                        fill(n, 1000, -1.0, |start, part| {
                            for (i, v) in part.iter_mut().enumerate() {
                                assert_eq!(*v, -1.0, "a part comes zeroed");
                                *v = (start + i) as f64;
                            }
                        }),
                    )
                });
                for i in 0..n {
                    assert_eq!(one[i], 3.0 * i as f64, "map, {threads} threads, n {n}");
                    assert_eq!(updated[i], 0.0, "update, {threads} threads, n {n}");
                    assert_eq!(two[i], 1.5 * i as f64, "map2, {threads} threads, n {n}");
                    assert_eq!(
                        three[i],
                        0.5 * (i * i) as f64 - i as f64,
                        "map3, {threads} threads, n {n}"
                    );
                    assert_eq!(filled[i], i as f64, "fill, {threads} threads, n {n}");
                }
                assert_eq!(
                    [one.len(), updated.len(), two.len(), three.len(), filled.len()],
                    [n; 5]
                );
            }
        }
    }

    /// A split loop really runs on more than one thread when the pool has them: each part
    /// waits (up to 10 s, so a busy machine cannot make it flaky) until two threads have taken
    /// a part, which only happens if the other worker runs the second part.
    #[test]
    fn a_large_loop_runs_on_more_than_one_thread() {
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        in_pool(2, || {
            fill(1 << 20, 1 << 10, 0u8, |_, _| {
                seen.lock().unwrap().insert(rayon::current_thread_index());
                let start = std::time::Instant::now();
                while seen.lock().unwrap().len() < 2 && start.elapsed().as_secs() < 10 {
                    std::thread::yield_now();
                }
            })
        });
        assert_eq!(seen.into_inner().unwrap().len(), 2);
    }
}
