//! Time-segment checkpointing (gradient checkpointing over time, Chen et al. 2016; JAX's `remat`
//! of a scan): one direction of one layer as one op, [`Segmented`], that keeps only the state at
//! the start of each segment of `k` steps and runs each segment again, on a tape of its own,
//! when the reverse pass reaches it. The layer's tape then holds the input, the output and
//! `T / k` states instead of every step's activations; the reverse pass holds one segment's.
//! A layer that returns only its last step
//! ([`RecurrentConfig::return_sequences`](crate::RecurrentConfig::return_sequences)`(false)`)
//! does not make its output sequence at all: then the tape holds the input and `T / k` states.

use crate::recurrent::{run_direction, Direction};
use crate::{Cell, RecurrentState};
use eddy_tape::{Error, Float, GradOptions, MultiOp, Param, Result, Tape, Var};
use ndarray::{ArrayD, Axis};
use std::sync::Arc;

/// Which time steps a recurrent layer keeps for its reverse pass
/// ([`RecurrentConfig::checkpoint`](crate::RecurrentConfig::checkpoint)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpoint {
    /// Every step's activations (the plain tape; the default).
    #[default]
    Off,
    /// Only the state every `k` steps; each segment of `k` steps is run again in the reverse pass.
    Every(usize),
    /// [`Every`](Checkpoint::Every) with `k = ⌈√T⌉` for a sequence of `T` steps: memory grows
    /// as `√T` for the activations.
    Sqrt,
}

impl Checkpoint {
    /// The segment length for a sequence of `steps` steps (`None`: no checkpointing). A length
    /// of at least `steps` is one segment. `Every(0)` gives `Some(0)`, which the layer refuses.
    pub fn segment_len(&self, steps: usize) -> Option<usize> {
        match *self {
            Checkpoint::Off => None,
            Checkpoint::Every(k) => Some(k),
            Checkpoint::Sqrt => Some((1..=steps).find(|k| k * k >= steps).unwrap_or(1)),
        }
    }
}

/// The error of a second-order pass (`create_graph`) through a checkpointed layer: its backward
/// runs each segment again on a tape of its own, which the outer graph does not record.
pub(crate) fn no_higher_order(label: &str) -> Error {
    Error::invalid(
        &format!("{label} (checkpoint_every)"),
        "create_graph is not supported through a layer with time-segment checkpointing \
         (RecurrentConfig::checkpoint_every / checkpoint_sqrt): its backward re-runs each segment \
         outside the recorded graph; build the layer without checkpointing for gradients of gradients",
    )
}

/// Runs one direction of one layer over `x` (`[T, B, I]`) in segments of `len` steps as one
/// [`Segmented`] op. Returns what [`run_direction`] returns, the outputs and the final state,
/// but the outputs only if `keep_output` (else the op neither makes nor keeps the `[T, B, H]`
/// sequence: the last layer of a layer that returns its last step).
pub(crate) fn unroll<F: Float, C: Cell<F> + Clone + 'static>(
    cell: &C,
    x: &Var<F>,
    state: C::State,
    run: &Direction<'_, F>,
    label: &str,
    (len, keep_output): (usize, bool),
) -> Result<(Option<Var<F>>, C::State)> {
    let steps = x.shape()[0];
    let starts: Vec<usize> = (0..steps).step_by(len).collect();
    let mut segments: Vec<(usize, usize)> = starts.iter().map(|&s| (s, (s + len).min(steps))).collect();
    if run.reverse {
        segments.reverse();
    }
    let tape = x.tape();
    let params: Vec<Param<F>> = cell.param_list();
    let bound: Vec<Var<F>> = params.iter().map(|p| tape.param(p)).collect();
    let parts = state.parts();
    let op = Segmented {
        cell: cell.clone(),
        label: label.to_string(),
        segments,
        reverse: run.reverse,
        masks: run.masks.map(<[_]>::to_vec),
        valid: run.valid.cloned(),
        rec_mask: run.rec_mask.map(|m| m.value().clone()),
        fused: run.fused,
        parts: parts.len(),
        keep_output,
        params,
    };
    let inputs: Vec<&Var<F>> = std::iter::once(x).chain(&parts).chain(&bound).collect();
    let mut outs = tape.apply_multi(op, &inputs)?;
    let first = usize::from(keep_output);
    outs.truncate(first + parts.len());
    let last = outs.split_off(first);
    Ok((outs.pop(), C::State::from_parts(last)?))
}

/// One direction of one layer, checkpointed: inputs `[x, state parts…, parameters…]`, outputs
/// `[outputs, final state parts…, the state entering each segment (one `[S, B, size]` per
/// part)…]`, without the first (the `[T, B, H]` outputs) when not `keep_output`. Its forward
/// runs the segments one after the other, each on a fresh tape through the layer's own path
/// ([`run_direction`]: the scan, the cell's whole-sequence op or the loop of steps, so a step
/// costs what it costs without checkpointing), keeping only the outputs and the states between
/// segments. Its backward runs them from the last: each again from its saved
/// state on a recording tape, then that tape's reverse pass from the incoming gradients.
pub(crate) struct Segmented<F: Float, C> {
    cell: C,
    label: String,
    /// `(start, end)` of each segment, in the order the direction runs them.
    segments: Vec<(usize, usize)>,
    reverse: bool,
    masks: Option<Vec<ArrayD<bool>>>,
    valid: Option<ArrayD<bool>>,
    rec_mask: Option<ArrayD<F>>,
    fused: bool,
    parts: usize,
    /// Whether the op makes and returns the output sequence (its first output).
    keep_output: bool,
    params: Vec<Param<F>>,
}

/// One segment run on its own tape: the outputs, the final state, and the leaves the reverse
/// pass wants gradients of (the segment's input and its first state).
struct Run<F: Float, S> {
    out: Var<F>,
    last: S,
    x: Var<F>,
    first: Vec<Var<F>>,
}

impl<F: Float, C: Cell<F>> Segmented<F, C> {
    fn run(
        &self,
        tape: &Tape<F>,
        x: &ArrayD<F>,
        state: Vec<ArrayD<F>>,
        (s, e): (usize, usize),
    ) -> Result<Run<F, C::State>> {
        let x = tape.input(x.slice_axis(Axis(0), (s..e).into()).to_owned());
        let first: Vec<Var<F>> = state.into_iter().map(|a| tape.input(a)).collect();
        let valid = self
            .valid
            .as_ref()
            .map(|v| v.slice_axis(Axis(0), (s..e).into()).to_owned());
        let rec_mask = self.rec_mask.as_ref().map(|m| tape.constant(m.clone()));
        let run = Direction {
            reverse: self.reverse,
            masks: self.masks.as_ref().map(|m| &m[s..e]),
            valid: valid.as_ref(),
            rec_mask: rec_mask.as_ref(),
            fused: self.fused,
        };
        let state = C::State::from_parts(first.clone())?;
        let (out, last) = run_direction(&self.cell, &x, state, &run, &self.label, s)?;
        Ok(Run { out, last, x, first })
    }

    fn sizes(&self) -> Vec<usize> {
        self.cell.state_sizes()
    }
}

impl<F: Float, C: Cell<F> + 'static> MultiOp<F> for Segmented<F, C> {
    fn name(&self) -> &str {
        "checkpointed recurrence"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (x, sizes) = (inputs[0], self.sizes());
        let batch = x[1];
        let mut shapes = Vec::new();
        if self.keep_output {
            shapes.push(vec![x[0], batch, sizes[0]]);
        }
        shapes.extend(sizes.iter().map(|&n| vec![batch, n]));
        shapes.extend(sizes.iter().map(|&n| vec![self.segments.len(), batch, n]));
        Ok(shapes)
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let x = inputs[0];
        let (steps, batch) = (x.shape()[0], x.shape()[1]);
        let sizes = self.sizes();
        let mut state: Vec<ArrayD<F>> = inputs[1..=self.parts].iter().map(|a| (*a).clone()).collect();
        let mut out = self
            .keep_output
            .then(|| ArrayD::zeros(vec![steps, batch, sizes[0]]));
        let mut starts: Vec<ArrayD<F>> = sizes
            .iter()
            .map(|&n| ArrayD::zeros(vec![self.segments.len(), batch, n]))
            .collect();
        for (j, &segment) in self.segments.iter().enumerate() {
            for (saved, part) in starts.iter_mut().zip(&state) {
                saved.index_axis_mut(Axis(0), j).assign(part);
            }
            // A recording tape, as without checkpointing: the same kernels, the same values.
            let tape = Tape::new();
            let run = self.run(&tape, x, state, segment)?;
            let (s, e) = segment;
            if let Some(out) = out.as_mut() {
                out.slice_axis_mut(Axis(0), (s..e).into()).assign(run.out.value());
            }
            state = run.last.parts().iter().map(|p| p.value().clone()).collect();
        }
        Ok(out.into_iter().chain(state).chain(starts).collect())
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let outer = inputs[0].tape();
        if outer.is_recording() {
            return Err(no_higher_order(&self.label));
        }
        let n = self.parts;
        let bound = &inputs[1 + n..];
        for (p, v) in self.params.iter().zip(bound) {
            if !Arc::ptr_eq(&p.value(), v.value_arc()) {
                return Err(Error::invalid(
                    &format!("{} (checkpoint_every)", self.label),
                    format!(
                        "parameter {} changed between the forward and the backward pass; \
                         a checkpointed layer runs its segments again with the parameters' values",
                        p.name()
                    ),
                ));
            }
        }
        let x = inputs[0].value();
        let mut dx = inputs[0].requires_grad().then(|| ArrayD::zeros(x.shape()));
        let mut dparams: Vec<Option<ArrayD<F>>> = vec![None; self.params.len()];
        // Without the output sequence, the outputs start at the final state.
        let (dseq, grads, outputs) = match self.keep_output {
            true => (grads[0].as_ref(), &grads[1..], &outputs[1..]),
            false => (None, grads, outputs),
        };
        let mut dstate: Vec<Option<ArrayD<F>>> = grads[..n]
            .iter()
            .map(|g| g.as_ref().map(|g| g.value().clone()))
            .collect();
        let starts = &outputs[n..];
        for (j, &(s, e)) in self.segments.iter().enumerate().rev() {
            let dout = dseq.map(|g| g.value().slice_axis(Axis(0), (s..e).into()).to_owned());
            if dout.is_none() && dstate.iter().all(Option::is_none) {
                continue;
            }
            let tape = Tape::new();
            let state: Vec<ArrayD<F>> = starts
                .iter()
                .map(|a| a.value().index_axis(Axis(0), j).to_owned())
                .collect();
            let run = self.run(&tape, x, state, (s, e))?;
            let mut ys = vec![run.out.clone()];
            let mut gs = vec![dout];
            for (part, g) in run.last.parts().into_iter().zip(dstate.iter_mut()) {
                ys.push(part);
                gs.push(g.take());
            }
            let (ys, gs): (Vec<Var<F>>, Vec<Var<F>>) = ys
                .into_iter()
                .zip(gs)
                .filter_map(|(y, g)| g.map(|g| (y, tape.constant(g))))
                .unzip();
            let params: Vec<Var<F>> = self.params.iter().map(|p| tape.param(p)).collect();
            let wanted: Vec<&Var<F>> = std::iter::once(&run.x).chain(&run.first).chain(&params).collect();
            let found = tape.grad(
                &ys.iter().collect::<Vec<_>>(),
                Some(&gs.iter().collect::<Vec<_>>()),
                &wanted,
                GradOptions::default(),
            )?;
            let mut found = found.into_iter();
            if let (Some(dx), Some(g)) = (dx.as_mut(), found.next().flatten()) {
                dx.slice_axis_mut(Axis(0), (s..e).into()).assign(g.value());
            }
            for slot in dstate.iter_mut() {
                *slot = found.next().flatten().map(|g| g.value().clone());
            }
            for (acc, g) in dparams.iter_mut().zip(found) {
                if let Some(g) = g {
                    match acc {
                        Some(acc) => *acc += g.value(),
                        None => *acc = Some(g.value().clone()),
                    }
                }
            }
        }
        let wrap =
            |v: &Var<F>, g: Option<ArrayD<F>>| g.filter(|_| v.requires_grad()).map(|g| outer.constant(g));
        let mut result = vec![wrap(&inputs[0], dx)];
        result.extend(inputs[1..=n].iter().zip(dstate).map(|(v, g)| wrap(v, g)));
        result.extend(bound.iter().zip(dparams).map(|(v, g)| wrap(v, g)));
        Ok(result)
    }
}
