//! Inference over a sequence at batch ≤ 4 on two threads: the hidden units split between the
//! threads for the whole sequence, one synchronisation per step.
//!
//! At batch 1 a step is a ~10 µs product with the whole recurrent weight; a fork-join per step
//! costs as much as it saves. Here each thread owns a block of hidden units (their rows of every
//! gate in `W_hh`, which then stay in its core's cache) and runs that block's step after step,
//! a step starting once every block of the previous step is done (`Tasks`). A block whose thread
//! never started is run by the other, so nothing waits on a thread the pool did not start.

use super::gates::{add_row, lstm_row_forward};
use super::rows::gemv_rows;
use super::shared::Shared;
use super::steps::{prev_of, step_at};
use eddy_tape::Float;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Whether an LSTM forward at this size is worth splitting across `threads`.
pub(crate) fn worth_it(batch: usize, h: usize, threads: usize) -> bool {
    threads >= 2 && batch <= super::gemm::SMALL_ROWS && 4 * h * h >= 1 << 16 && h >= 16 * threads
}

/// The inputs of an LSTM forward, as flat row-major slices.
pub(crate) struct LstmInputs<'a, F> {
    pub xp: &'a [F],
    pub w: &'a [F],
    pub h0: &'a [F],
    pub c0: &'a [F],
    pub bias: Option<&'a [F]>,
    pub dims: (usize, usize, usize),
    pub reverse: bool,
}

/// Every `hₜ` and `cₜ` of an LSTM (no activations kept), the hidden units split across the
/// current rayon pool's threads. Equal, element for element, to the one-thread forward.
pub(crate) fn lstm_forward<F: Float>(x: &LstmInputs<'_, F>, hs: &mut [F], cs: &mut [F]) {
    let (steps, batch, h) = x.dims;
    // The tasks write disjoint ranges, and a range is read only after the counter that
    // publishes its writes (Release) has been read (Acquire): what `Shared` asks of its users.
    let (hs, cs) = (Shared::new(hs), Shared::new(cs));
    // Task `(s, part)`: units `part` of step `s` (see `Tasks`).
    let run = |s: usize, part: usize, gates: &mut [F], acts: &mut [F]| {
        let (u0, u1) = (h * part / PARTS, h * (part + 1) / PARTS);
        let n = u1 - u0;
        let t = step_at(s, steps, x.reverse);
        for r in 0..batch {
            let row = r * h;
            // SAFETY: the previous step's rows are complete (every task of step s − 1 is done,
            // published by `Tasks::done`) and no task writes them any more; this task alone
            // writes units u0..u1 of step t.
            let (h_prev, c_prev, h_t, c_t) = unsafe {
                match prev_of(t, steps, x.reverse) {
                    Some(p) => (
                        hs.slice(p * batch * h + row, h),
                        cs.slice(p * batch * h + row + u0, n),
                        hs.slice_mut(t * batch * h + row + u0, n),
                        cs.slice_mut(t * batch * h + row + u0, n),
                    ),
                    None => (
                        &x.h0[row..row + h],
                        &x.c0[row + u0..row + u1],
                        hs.slice_mut(t * batch * h + row + u0, n),
                        cs.slice_mut(t * batch * h + row + u0, n),
                    ),
                }
            };
            // Gate k of units u0..u1: xp + b + W_hh[k·H + u0 .. k·H + u1, :] · h_prev.
            for k in 0..4 {
                let g = &mut gates[k * h..k * h + n];
                let cols = (t * batch + r) * 4 * h + k * h;
                g.copy_from_slice(&x.xp[cols + u0..cols + u1]);
                if let Some(b) = x.bias {
                    add_row(g, &b[k * h + u0..k * h + u1]);
                }
                let w = &x.w[(k * h + u0) * h..(k * h + u1) * h];
                gemv_rows(h_prev, w, h, g, F::one(), F::one());
            }
            let (g0, rest) = gates.split_at(h);
            let (g1, rest) = rest.split_at(h);
            let (g2, g3) = rest.split_at(h);
            let (a0, rest) = acts.split_at_mut(h);
            let (a1, rest) = rest.split_at_mut(h);
            let (a2, rest) = rest.split_at_mut(h);
            let (a3, a4) = rest.split_at_mut(h);
            lstm_row_forward(
                [&g0[..n], &g1[..n], &g2[..n], &g3[..n]],
                c_prev,
                [
                    &mut a0[..n],
                    &mut a1[..n],
                    &mut a2[..n],
                    &mut a3[..n],
                    &mut a4[..n],
                ],
                c_t,
                h_t,
            );
        }
    };
    let tasks = Tasks::new(steps);
    let worker = |home: usize| {
        let (mut gates, mut acts) = (vec![F::zero(); 4 * h], vec![F::zero(); 5 * h]);
        tasks.work(home, |s, part| run(s, part, &mut gates, &mut acts));
    };
    rayon::join(|| worker(0), || worker(1));
}

/// Blocks of hidden units, one per worker.
const PARTS: usize = 2;

/// The `(step, part)` tasks of a split sequence and who runs them. Each worker runs its own
/// part's tasks, step after step, so its rows of `W_hh` stay in its core's cache; a task starts
/// once every task of the previous step is done. A part whose worker has not started (the pool
/// may run both halves of a `rayon::join` on one thread, one after the other) is run by the
/// other worker instead, so nothing waits on a thread that is not there.
struct Tasks {
    steps: usize,
    /// The next unclaimed step of each part.
    next: [Padded<AtomicUsize>; PARTS],
    /// Whether each part's worker has started.
    started: [Padded<AtomicBool>; PARTS],
    /// Tasks finished, all parts together.
    done: Padded<AtomicUsize>,
}

impl Tasks {
    fn new(steps: usize) -> Self {
        Tasks {
            steps,
            next: std::array::from_fn(|_| Padded(AtomicUsize::new(0))),
            started: std::array::from_fn(|_| Padded(AtomicBool::new(false))),
            done: Padded(AtomicUsize::new(0)),
        }
    }

    /// The worker of part `home`: its own tasks in order, then any part nobody started.
    fn work(&self, home: usize, mut run: impl FnMut(usize, usize)) {
        self.started[home].0.store(true, Ordering::Release);
        while let Some(s) = self.claim(home) {
            self.wait_for_step(s, &mut run);
            run(s, home);
            self.done.0.fetch_add(1, Ordering::Release);
        }
        for part in 0..PARTS {
            while !self.started[part].0.load(Ordering::Acquire) {
                let Some(s) = self.claim(part) else { break };
                self.wait_for_step(s, &mut run);
                run(s, part);
                self.done.0.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Claims the next step of `part`, if any is left.
    fn claim(&self, part: usize) -> Option<usize> {
        let next = &self.next[part].0;
        let mut s = next.load(Ordering::Relaxed);
        while s < self.steps {
            match next.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(s),
                Err(now) => s = now,
            }
        }
        None
    }

    /// Waits until every task of step `s − 1` is done, meanwhile running the tasks of that step
    /// whose worker has not started (their own previous step is done: this worker's previous
    /// task waited for it).
    fn wait_for_step(&self, s: usize, run: &mut impl FnMut(usize, usize)) {
        let target = s * PARTS;
        let mut spins = 0u32;
        while self.done.0.load(Ordering::Acquire) < target {
            for part in 0..PARTS {
                let stalled = !self.started[part].0.load(Ordering::Acquire);
                let next = &self.next[part].0;
                if stalled
                    && next
                        .compare_exchange(s - 1, s, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    run(s - 1, part);
                    self.done.0.fetch_add(1, Ordering::Release);
                }
            }
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A value alone on its cache line (two lines: adjacent-line prefetch pairs them).
#[repr(align(128))]
struct Padded<T>(T);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Runs `(step, part)` tasks through `workers` (each a home part, run one after the other
    /// or on threads of their own) and checks that every task ran once, after its step's
    /// predecessors.
    fn check(steps: usize, threads: bool) -> Vec<(usize, usize, usize)> {
        let tasks = Tasks::new(steps);
        let ran = Mutex::new(Vec::new());
        let worker = |home: usize| {
            tasks.work(home, |s, part| {
                assert!(
                    tasks.done.0.load(Ordering::Acquire) >= s * PARTS,
                    "step {s} started before step {} was done",
                    s.wrapping_sub(1)
                );
                ran.lock().unwrap().push((s, part, home));
            })
        };
        if threads {
            std::thread::scope(|scope| {
                scope.spawn(|| worker(1));
                worker(0);
            });
        } else {
            worker(0);
            worker(1);
        }
        let mut ran = ran.into_inner().unwrap();
        let mut once: Vec<(usize, usize)> = ran.iter().map(|&(s, p, _)| (s, p)).collect();
        once.sort();
        let all: Vec<(usize, usize)> = (0..steps).flat_map(|s| (0..PARTS).map(move |p| (s, p))).collect();
        assert_eq!(once, all, "every task exactly once");
        ran.sort();
        ran
    }

    #[test]
    fn a_worker_alone_runs_every_part_when_the_other_never_started() {
        let ran = check(7, false);
        assert!(
            ran.iter().all(|&(_, _, home)| home == 0),
            "the first worker ran all: {ran:?}"
        );
    }

    #[test]
    fn two_workers_run_every_task_once_in_step_order() {
        for _ in 0..20 {
            check(50, true);
        }
    }
}
