//! Timing and memory helpers: median / min / max of timed samples, peak RSS from `/proc`.

use std::time::Instant;

/// Timed samples in milliseconds and their summary.
#[derive(Debug, Clone)]
pub struct Stats {
    pub times_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    /// Summarises samples (at least one).
    pub fn from_samples(times_ms: Vec<f64>) -> Stats {
        let mut sorted = times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median_ms = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        Stats {
            median_ms,
            min_ms: sorted.first().copied().unwrap_or(f64::NAN),
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
            times_ms,
        }
    }
}

/// Runs `f` `warmup` times untimed, then `steps` times timed, each call one sample.
pub fn measure<E>(warmup: usize, steps: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Stats, E> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stats::from_samples(times))
}

/// A field of `/proc/self/status` in MiB (`VmHWM`: peak resident set; `VmRSS`: current).
pub fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Stats::from_samples(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median_ms, s.min_ms, s.max_ms), (2.0, 1.0, 3.0));
        let s = Stats::from_samples(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median_ms, 2.5);
    }

    #[test]
    fn measure_counts_only_timed_steps() {
        let mut calls = 0;
        let s = measure::<()>(2, 5, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 7);
        assert_eq!(s.times_ms.len(), 5);
    }
}
