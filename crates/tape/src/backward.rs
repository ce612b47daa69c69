//! The reverse pass: [`Var::backward`], [`Tape::grad`], [`Tape::jvp`] and [`Grads`].

use crate::deferred::Pending;
use crate::keyed::KeyedMap;
use crate::tape::{Kept, NodeKind, Saved};
use crate::{Error, Float, Param, ParamId, Result, Tape, Var};
use ndarray::ArrayD;
use std::ops::AddAssign;
use std::sync::Arc;

/// How [`Tape::grad`] runs the reverse pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GradOptions {
    /// Record the reverse pass itself, so the gradients can be differentiated again.
    pub create_graph: bool,
    /// Keep the saved values, so another reverse pass can run over the same graph.
    pub retain_graph: bool,
}

impl GradOptions {
    /// Record the reverse pass (implies `retain_graph`), for gradients of gradients.
    pub fn create_graph() -> GradOptions {
        GradOptions {
            create_graph: true,
            retain_graph: true,
        }
    }

    /// Keep the graph for another pass.
    pub fn retain_graph() -> GradOptions {
        GradOptions {
            create_graph: false,
            retain_graph: true,
        }
    }
}

/// Gradients from one reverse pass, readable by [`Param`] and by leaf [`Var`].
///
/// Gradients are values: nothing is stored on parameters, so there is no `zero_grad`.
/// `Grads` is `Send`, and the parameter gradients of shards can be summed with `+=`.
#[derive(Debug, Clone)]
pub struct Grads<F: Float = f32> {
    tape: usize,
    /// Shared with the pass's gradient values (a parameter's is also its leaf's in `vars`):
    /// nothing is copied until a gradient is changed in place.
    params: KeyedMap<ParamId, Arc<ArrayD<F>>>,
    vars: KeyedMap<usize, Arc<ArrayD<F>>>,
}

impl<F: Float> Default for Grads<F> {
    fn default() -> Self {
        Grads {
            tape: 0,
            params: KeyedMap::default(),
            vars: KeyedMap::default(),
        }
    }
}

impl<F: Float> Grads<F> {
    /// The gradient of a parameter, or `None` if none reached it.
    pub fn param(&self, p: &Param<F>) -> Option<&ArrayD<F>> {
        self.params.get(&p.id()).map(|g| &**g)
    }

    /// Mutable access to a parameter's gradient (for clipping in place).
    pub fn param_mut(&mut self, p: &Param<F>) -> Option<&mut ArrayD<F>> {
        self.params.get_mut(&p.id()).map(Arc::make_mut)
    }

    /// Sets a parameter's gradient.
    pub fn set_param(&mut self, p: &Param<F>, g: ArrayD<F>) {
        self.params.insert(p.id(), Arc::new(g));
    }

    /// The gradient of a leaf `Var` of the tape this came from (an input or a bound parameter).
    pub fn var(&self, v: &Var<F>) -> Option<&ArrayD<F>> {
        if v.tape().addr() != self.tape {
            return None;
        }
        self.vars.get(&v.slot()?).map(|g| &**g)
    }

    /// All parameter gradients, by id.
    pub fn params(&self) -> impl Iterator<Item = (&ParamId, &ArrayD<F>)> {
        self.params.iter().map(|(id, g)| (id, &**g))
    }

    /// All parameter gradients, mutable.
    pub fn params_mut(&mut self) -> impl Iterator<Item = (&ParamId, &mut ArrayD<F>)> {
        self.params.iter_mut().map(|(id, g)| (id, Arc::make_mut(g)))
    }

    /// Multiplies every gradient by `s` (to average accumulated micro-batches, say).
    pub fn scale(&mut self, s: F) {
        for g in self.params.values_mut().chain(self.vars.values_mut()) {
            Arc::make_mut(g).mapv_inplace(|x| x * s);
        }
    }
}

impl<F: Float> AddAssign<&Grads<F>> for Grads<F> {
    /// Sums the parameter gradients of another pass (shards, micro-batches) into these.
    /// Gradients of `Var`s belong to one tape and are not summed.
    fn add_assign(&mut self, other: &Grads<F>) {
        for (id, g) in &other.params {
            match self.params.get_mut(id) {
                Some(mine) => *Arc::make_mut(mine) += &**g,
                None => {
                    self.params.insert(*id, g.clone());
                }
            }
        }
    }
}

impl<F: Float> Var<F> {
    /// Runs the reverse pass from this scalar and returns the gradients of every leaf.
    ///
    /// The saved values are freed as the pass goes; use [`Tape::grad`] with
    /// [`GradOptions::retain_graph`] to run it twice.
    ///
    /// # Errors
    /// [`Error::NotScalar`] if this value has more than one element; any error of a backward rule.
    pub fn backward(&self) -> Result<Grads<F>> {
        self.backward_with(GradOptions::default())
    }

    /// [`Var::backward`] with options.
    pub fn backward_with(&self, options: GradOptions) -> Result<Grads<F>> {
        self.backward_reporting(options, &mut |_, _| {})
    }

    /// [`Var::backward`] that also hands each parameter's gradient to `ready` as soon as it is
    /// final, while the rest of the reverse pass still runs.
    ///
    /// The pass walks the tape backwards, so a parameter's gradient is final once the pass
    /// reaches the node that bound it (`tape.param`): every use came later on the tape. The
    /// parameters are therefore reported in the reverse of the order they were first used, each
    /// once; one the loss does not depend on is not reported. A data-parallel trainer starts
    /// reducing a bucket of gradients across processes while the earlier layers' gradients are
    /// still being computed (PyTorch DDP's overlap). A recurrent layer's weights are bound
    /// before its first step, so they are reported after its whole reverse sweep.
    ///
    /// # Errors
    /// As [`Var::backward`].
    ///
    /// # Example
    /// ```
    /// use eddy_tape::{Param, Tape};
    /// use ndarray::arr1;
    ///
    /// let a = Param::new("a", arr1(&[2.0f64]).into_dyn());
    /// let b = Param::new("b", arr1(&[3.0f64]).into_dyn());
    /// let tape = Tape::new();
    /// let (va, vb) = (tape.param(&a), tape.param(&b));
    /// let loss = va.mul(&vb)?.mul(&vb)?.sum_all()?; // a·b²
    /// let mut order = Vec::new();
    /// let grads = loss.backward_with_ready(|id, g| order.push((id, g[[0]])))?;
    /// assert_eq!(order, vec![(b.id(), 12.0), (a.id(), 9.0)]); // b was bound last
    /// assert_eq!(grads.param(&a).unwrap()[[0]], 9.0);
    /// # Ok::<(), eddy_tape::Error>(())
    /// ```
    pub fn backward_with_ready(&self, mut ready: impl FnMut(ParamId, &ArrayD<F>)) -> Result<Grads<F>> {
        self.backward_reporting(GradOptions::default(), &mut ready)
    }

    fn backward_reporting(
        &self,
        options: GradOptions,
        ready: &mut dyn FnMut(ParamId, &ArrayD<F>),
    ) -> Result<Grads<F>> {
        if self.value().len() != 1 {
            return Err(Error::NotScalar {
                op: "backward".into(),
                shape: self.shape().to_vec(),
            });
        }
        let tape = self.tape();
        let mut grads = Grads {
            tape: tape.addr(),
            ..Grads::default()
        };
        let Some(slot) = self.slot() else {
            return Ok(grads);
        };
        let seed = tape.constant(ArrayD::from_elem(self.shape(), F::one()));
        tape.reverse(vec![(slot, seed)], &[], options, |i, kind, g| {
            let g = g.value_arc().clone();
            if let Some(id) = kind {
                ready(id, &g);
                grads.params.insert(id, g.clone());
            }
            grads.vars.insert(i, g);
        })?;
        Ok(grads)
    }
}

impl<F: Float> Tape<F> {
    /// The gradients of `outputs` with respect to `inputs`, like `torch.autograd.grad`.
    ///
    /// `grad_outputs` weights each output (ones when `None`, which needs scalar outputs). With
    /// `create_graph` the pass is recorded, so the returned gradients can be differentiated again.
    /// An input that no output depends on gets `None`.
    ///
    /// # Errors
    /// [`Error::NotScalar`] for a non-scalar output without a weight; a weight of another shape
    /// than its output; [`Error::TapeMismatch`] if a `Var` belongs to another tape; any error of
    /// a backward rule.
    pub fn grad(
        &self,
        outputs: &[&Var<F>],
        grad_outputs: Option<&[&Var<F>]>,
        inputs: &[&Var<F>],
        options: GradOptions,
    ) -> Result<Vec<Option<Var<F>>>> {
        // Slot indices mean nothing on another tape: a foreign Var would silently read the
        // gradient of whichever slot of this tape has its index.
        let foreign = outputs
            .iter()
            .chain(inputs)
            .chain(grad_outputs.unwrap_or_default())
            .any(|v| !v.tape().same(self));
        if foreign {
            return Err(Error::TapeMismatch { op: "grad".into() });
        }
        let mut seeds = Vec::new();
        for (k, y) in outputs.iter().enumerate() {
            let seed = match grad_outputs {
                Some(gs) => {
                    let g = gs.get(k).ok_or_else(|| {
                        Error::invalid(
                            "grad",
                            format!("{} outputs but {} grad_outputs", outputs.len(), gs.len()),
                        )
                    })?;
                    if g.shape() != y.shape() {
                        return Err(Error::shape(
                            "grad",
                            &[y.shape(), g.shape()],
                            "a grad_output must have its output's shape",
                        ));
                    }
                    (*g).clone()
                }
                None if y.value().len() == 1 => self.constant(ArrayD::from_elem(y.shape(), F::one())),
                None => {
                    return Err(Error::NotScalar {
                        op: "grad".into(),
                        shape: y.shape().to_vec(),
                    })
                }
            };
            if let Some(slot) = y.slot() {
                seeds.push((slot, seed));
            }
        }
        let wanted: Vec<usize> = inputs.iter().filter_map(|v| v.slot()).collect();
        let mut found: KeyedMap<usize, Var<F>> = KeyedMap::default();
        self.reverse(seeds, &wanted, options, |i, _, g| {
            found.insert(i, g.clone());
        })?;
        Ok(inputs
            .iter()
            .map(|v| v.slot().and_then(|n| found.get(&n).cloned()))
            .collect())
    }

    /// The forward-mode product `J·u` of `output` with respect to `inputs` along `tangents`,
    /// by the double-VJP construction: `vᵀJ` is linear in `v`, and its gradient in `v` along
    /// `u` is `J·u`. With `create_graph` the result can be differentiated again.
    pub fn jvp(
        &self,
        output: &Var<F>,
        inputs: &[&Var<F>],
        tangents: &[&Var<F>],
        create_graph: bool,
    ) -> Result<Var<F>> {
        if inputs.len() != tangents.len() {
            return Err(Error::invalid(
                "jvp",
                format!("{} inputs but {} tangents", inputs.len(), tangents.len()),
            ));
        }
        let v = self.input(ArrayD::zeros(output.shape()));
        let vjps = self.grad(&[output], Some(&[&v]), inputs, GradOptions::create_graph())?;
        let mut outs = Vec::new();
        let mut ts = Vec::new();
        for ((g, t), x) in vjps.iter().zip(tangents).zip(inputs) {
            if t.shape() != x.shape() {
                return Err(Error::shape(
                    "jvp",
                    &[x.shape(), t.shape()],
                    "a tangent must have its input's shape",
                ));
            }
            if let Some(g) = g {
                outs.push(g);
                ts.push(*t);
            }
        }
        let options = GradOptions {
            create_graph,
            retain_graph: true,
        };
        let jv = self.grad(&outs, Some(&ts), &[&v], options)?.pop().flatten();
        Ok(jv.unwrap_or_else(|| self.constant(ArrayD::zeros(output.shape()))))
    }

    /// The reverse loop. `seeds` are (slot, gradient); `visit` is called with each leaf's
    /// gradient, and with the gradient of each slot in `wanted` once it is complete.
    fn reverse(
        &self,
        seeds: Vec<(usize, Var<F>)>,
        wanted: &[usize],
        options: GradOptions,
        mut visit: impl FnMut(usize, Option<ParamId>, &Var<F>),
    ) -> Result<()> {
        let Some(top) = seeds.iter().map(|(n, _)| *n).max() else {
            return Ok(());
        };
        let mut grads: Vec<Option<Var<F>>> = vec![None; top + 1];
        for (slot, g) in seeds {
            accumulate(&mut grads[slot], g, options.create_graph)?;
        }
        let was_recording = self.inner.recording.get();
        self.inner.recording.set(was_recording && options.create_graph);
        // A recorded pass needs every gradient as a recorded value: it takes no deferred terms.
        let outer_pass = self
            .inner
            .deferred
            .replace((!options.create_graph).then(Vec::new));
        let mut pending = Pending::new();
        let mut placeholders = Placeholders::default();
        let result = (|| {
            let count = self.inner.nodes.borrow().len();
            for i in (0..count).rev() {
                // The deferred terms of this node's slots are all in: every use came later.
                let (first, n) = {
                    let nodes = self.inner.nodes.borrow();
                    (nodes[i].first_slot, nodes[i].kind.slots())
                };
                let end = (first + n).min(top + 1);
                for (s, slot) in grads.iter_mut().enumerate().take(end).skip(first) {
                    if let Some(g) = pending.take(s) {
                        accumulate(slot, Var::new(self.clone(), None, Arc::new(g)), false)?;
                    }
                }
                let (first, op, inputs, outputs) = {
                    let mut nodes = self.inner.nodes.borrow_mut();
                    let node = &mut nodes[i];
                    let first = node.first_slot;
                    if first > top {
                        continue;
                    }
                    match &node.kind {
                        NodeKind::Input | NodeKind::Param(_) => {
                            if let Some(g) = grads[first].take() {
                                let id = match node.kind {
                                    NodeKind::Param(id) => Some(id),
                                    _ => None,
                                };
                                visit(first, id, &g);
                            }
                            continue;
                        }
                        NodeKind::Freed { name, outputs } => {
                            if (first..first + outputs).any(|s| s <= top && grads[s].is_some()) {
                                return Err(Error::GraphFreed { op: name.clone() });
                            }
                            continue;
                        }
                        NodeKind::Op { outputs, .. } => {
                            let n = outputs.len();
                            if (first..(first + n).min(top + 1)).all(|s| grads[s].is_none()) {
                                continue;
                            }
                        }
                    }
                    if options.retain_graph {
                        let NodeKind::Op { op, inputs, outputs } = &node.kind else {
                            unreachable!()
                        };
                        (
                            first,
                            op.clone(),
                            inputs.iter().map(Saved::clone_ref).collect::<Vec<_>>(),
                            outputs.iter().map(Kept::clone_ref).collect::<Vec<_>>(),
                        )
                    } else {
                        let (name, n) = match &node.kind {
                            NodeKind::Op { op, outputs, .. } => (op.name().to_string(), outputs.len()),
                            _ => unreachable!(),
                        };
                        match std::mem::replace(&mut node.kind, NodeKind::Freed { name, outputs: n }) {
                            NodeKind::Op { op, inputs, outputs } => (first, op, inputs, outputs),
                            _ => unreachable!(),
                        }
                    }
                };
                let gs: Vec<Option<Var<F>>> = (first..first + outputs.len())
                    .map(|s| if s <= top { grads[s].take() } else { None })
                    .collect();
                for (s, g) in (first..).zip(&gs) {
                    if let (Some(g), true) = (g, wanted.contains(&s)) {
                        visit(s, None, g);
                    }
                }
                if outputs.iter().all(|o| o.shape().contains(&0)) {
                    // Outputs without elements: the gradient, linear in an empty `g`, is zero;
                    // the rule is not run (it could loop over a huge empty axis).
                    for saved in &inputs {
                        if let Some(slot) = saved.slot {
                            let zero = self.constant(ArrayD::zeros(saved.value.shape()));
                            accumulate(&mut grads[slot], zero, options.create_graph)?;
                        }
                    }
                    continue;
                }
                let in_vars: Vec<Var<F>> = inputs
                    .iter()
                    .map(|s| Var::new(self.clone(), s.slot, placeholders.value(&s.value)))
                    .collect();
                let out_vars: Vec<Var<F>> = outputs
                    .iter()
                    .enumerate()
                    .map(|(k, v)| Var::new(self.clone(), Some(first + k), placeholders.value(v)))
                    .collect();
                // Under anomaly detection an op applied inside the rule may find the non-finite
                // value first; the error names the op whose backward rule it is.
                let gi = op.backward(&in_vars, &out_vars, &gs).map_err(|e| match e {
                    Error::NonFinite { shape, .. } => Error::NonFinite {
                        op: op.name().to_string(),
                        phase: "backward",
                        shape,
                    },
                    e => e,
                })?;
                pending.collect(self);
                if gi.len() != inputs.len() {
                    return Err(Error::BadGradient {
                        op: op.name().to_string(),
                        reason: format!("{} gradients for {} inputs", gi.len(), inputs.len()),
                    });
                }
                for (k, (g, saved)) in gi.into_iter().zip(&inputs).enumerate() {
                    let (Some(g), Some(slot)) = (g, saved.slot) else {
                        continue;
                    };
                    if g.shape() != saved.value.shape() {
                        return Err(Error::BadGradient {
                            op: op.name().to_string(),
                            reason: format!(
                                "a gradient of shape {:?} for input {k} of shape {:?}",
                                g.shape(),
                                saved.value.shape()
                            ),
                        });
                    }
                    if self.inner.options.detect_anomaly && !g.value().iter().all(|x| x.is_finite()) {
                        return Err(Error::NonFinite {
                            op: op.name().to_string(),
                            phase: "backward",
                            shape: g.shape().to_vec(),
                        });
                    }
                    accumulate(&mut grads[slot], g, options.create_graph)?;
                }
            }
            Ok(())
        })();
        self.inner.recording.set(was_recording);
        self.inner.deferred.replace(outer_pass);
        result
    }
}

impl<F: Float> Saved<F> {
    fn clone_ref(&self) -> Saved<F> {
        Saved {
            slot: self.slot,
            value: self.value.clone_ref(),
        }
    }
}

/// The values a reverse pass hands to backward rules for what their nodes kept: the array
/// itself, or where only the shape was kept ([`Op::saves`](crate::Op::saves)) an array of
/// that shape filled with NaN, one per shape for the whole pass, so that a rule which reads a
/// value it did not declare gives NaN instead of a plausible number.
struct Placeholders<F: Float>(std::collections::HashMap<Vec<usize>, Arc<ArrayD<F>>>);

impl<F: Float> Default for Placeholders<F> {
    fn default() -> Self {
        Placeholders(std::collections::HashMap::new())
    }
}

impl<F: Float> Placeholders<F> {
    fn value(&mut self, kept: &Kept<F>) -> Arc<ArrayD<F>> {
        match kept {
            Kept::Value(v) => Arc::clone(v),
            Kept::Shape(shape) => Arc::clone(
                self.0
                    .entry(ndarray::Dimension::slice(shape).to_vec())
                    .or_insert_with(|| Arc::new(ArrayD::from_elem(shape.clone(), F::nan()))),
            ),
        }
    }
}

/// Adds `g` into a gradient slot: a recorded add under `create_graph`, otherwise in place.
fn accumulate<F: Float>(slot: &mut Option<Var<F>>, g: Var<F>, create_graph: bool) -> Result<()> {
    *slot = Some(match slot.take() {
        None => g,
        Some(acc) if create_graph => (&acc + &g)?,
        Some(acc) => {
            let tape = acc.tape().clone();
            let mut value = acc.into_value();
            let sum = Arc::make_mut(&mut value);
            let same_shape = sum.shape() == g.shape();
            match (same_shape, sum.as_slice_mut(), g.value().as_slice()) {
                (true, Some(s), Some(x)) => crate::split::update(s, x, crate::split::SPLIT_MIN, |a, b| a + b),
                _ => *sum += g.value(),
            }
            Var::new(tape, None, value)
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parameter's gradient is its leaf's, shared rather than copied, and changing one in
    /// place (clipping, scaling) leaves the other as it was.
    #[test]
    fn a_parameter_gradient_is_shared_with_its_leaf_until_changed() -> Result<()> {
        let p = Param::new("w", ndarray::arr1(&[1.0f64, 2.0]).into_dyn());
        let tape = Tape::new();
        let w = tape.param(&p);
        let mut grads = (&w * &w)?.sum_all()?.backward()?;
        let (by_param, by_var) = (grads.param(&p).unwrap(), grads.var(&w).unwrap());
        assert_eq!(by_param.as_ptr(), by_var.as_ptr(), "one array, not two copies");
        grads.param_mut(&p).unwrap().mapv_inplace(|g| g * 10.0);
        assert_eq!(grads.param(&p).unwrap().as_slice().unwrap(), &[20.0, 40.0]);
        assert_eq!(grads.var(&w).unwrap().as_slice().unwrap(), &[2.0, 4.0]);
        grads.scale(0.5);
        assert_eq!(grads.param(&p).unwrap().as_slice().unwrap(), &[10.0, 20.0]);
        assert_eq!(grads.var(&w).unwrap().as_slice().unwrap(), &[1.0, 2.0]);
        Ok(())
    }
}
