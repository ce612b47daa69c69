//! Inference over a sequence at batch ≤ 4 on two threads: the hidden units split between the
//! threads for the whole sequence, one synchronisation per step.
//!
//! At batch 1 a step is a ~10 µs product with the whole recurrent weight; a fork-join per step
//! costs as much as it saves. Here each thread owns a block of hidden units (their rows of every
//! gate in `W_hh`, which then stay in its core's cache) and the threads take the `(step, block)`
//! tasks in order from a shared counter, a task starting once every task of the previous step
//! is done. A thread that never gets to run leaves its share to the others, so nothing waits on
//! a thread the pool did not start.

use super::{prev_of, step_at};
use crate::fused::{add_row, lstm_row_forward};
use crate::gemm::gemv_rows;
use eddy_tape::Float;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An output buffer that the tasks write in disjoint pieces.
struct Shared<F> {
    ptr: *mut F,
    len: usize,
}

// SAFETY: the tasks write disjoint ranges, and a range is read only after the counter that
// publishes its writes (Release) has been read (Acquire); see `lstm_forward`.
unsafe impl<F: Send> Send for Shared<F> {}
unsafe impl<F: Send> Sync for Shared<F> {}

impl<F> Shared<F> {
    fn new(v: &mut [F]) -> Self {
        Shared {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// # Safety
    /// No other live reference may overlap `start .. start + n`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, start: usize, n: usize) -> &mut [F] {
        assert!(start + n <= self.len, "a range inside the buffer");
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }

    /// # Safety
    /// No live mutable reference may overlap `start .. start + n`.
    unsafe fn slice(&self, start: usize, n: usize) -> &[F] {
        assert!(start + n <= self.len, "a range inside the buffer");
        // SAFETY: in bounds (checked above); not written while read, by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), n) }
    }
}

/// Whether an LSTM forward at this size is worth splitting across `threads`.
pub(super) fn worth_it(batch: usize, h: usize, threads: usize) -> bool {
    threads >= 2 && batch <= crate::gemm::SMALL_ROWS && 4 * h * h >= 1 << 16 && h >= 16 * threads
}

/// The inputs of an LSTM forward, as flat row-major slices.
pub(super) struct LstmInputs<'a, F> {
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
pub(super) fn lstm_forward<F: Float>(x: &LstmInputs<'_, F>, hs: &mut [F], cs: &mut [F]) {
    let (steps, batch, h) = x.dims;
    // Two workers (one `rayon::join`), each taking any block of any step in order.
    let parts = 2;
    // On separate cache lines: the counters are written once per task and `done` is spun on.
    let (next, done) = (Padded(AtomicUsize::new(0)), Padded(AtomicUsize::new(0)));
    let (next, done) = (&next.0, &done.0);
    let (hs, cs) = (Shared::new(hs), Shared::new(cs));
    let work = || {
        let mut gates = vec![F::zero(); 4 * h];
        let mut acts = vec![F::zero(); 5 * h];
        loop {
            let task = next.fetch_add(1, Ordering::Relaxed);
            if task >= steps * parts {
                return;
            }
            let (s, part) = (task / parts, task % parts);
            wait_for(done, s * parts);
            let (u0, u1) = (h * part / parts, h * (part + 1) / parts);
            let n = u1 - u0;
            let t = step_at(s, steps, x.reverse);
            for r in 0..batch {
                let row = r * h;
                // SAFETY: the previous step's rows are complete (every task of step s − 1 is
                // done, published by `done`) and no task writes them any more; this task alone
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
            done.fetch_add(1, Ordering::Release);
        }
    };
    rayon::join(work, work);
}

/// A value alone on its cache line (two lines: adjacent-line prefetch pairs them).
#[repr(align(128))]
struct Padded<T>(T);

/// Spins (then yields) until `done` reaches `target`.
fn wait_for(done: &AtomicUsize, target: usize) {
    let mut spins = 0u32;
    while done.load(Ordering::Acquire) < target {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}
