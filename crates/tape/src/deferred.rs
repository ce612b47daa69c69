//! Weight gradients summed before they are computed: a product by a weight, used at every step
//! of a recurrence, has the weight gradient `Σ_t lhs_tᵀ · rhs_t`. Computed per use, that is one
//! thin product per step (`rows` deep) and a full-size add into the running sum; handed to the
//! reverse pass as terms ([`Tape::defer_outer`]), it is one product over all the terms' rows,
//! computed when the pass reaches the node that made the weight (every use came later on the
//! tape, so every term is in by then). A fused sequence op does the same by hand; this gives it
//! to any cell that writes its step from primitive ops.

use crate::keyed::KeyedMap;
use crate::{Float, Tape, Var};
use ndarray::{ArrayD, ArrayView2, Ix2};
use std::sync::Arc;

/// `Σᵢ lhsᵢᵀ · rhsᵢ` over the terms of one input (2-D views, `[rᵢ, m]ᵀ · [rᵢ, n]` → `[m, n]`):
/// how deferred terms are computed, as one product over their rows. The op that defers
/// supplies it, so the math stays in the op catalogue; it may stack the terms' rows
/// ([`crate::join_rows`]) or read them where they are.
pub type OuterProduct<F> = fn(&[ArrayView2<'_, F>], &[ArrayView2<'_, F>]) -> ArrayD<F>;

/// One deferred gradient term `lhsᵀ · rhs`.
pub(crate) struct Term<F: Float> {
    lhs: Arc<ArrayD<F>>,
    rhs: Arc<ArrayD<F>>,
    product: OuterProduct<F>,
}

impl<F: Float> Tape<F> {
    /// Hands the running reverse pass the gradient of `input` (2-D, `[m, n]`) as the term
    /// `lhsᵀ · rhs` (`lhs` `[r, m]`, `rhs` `[r, n]`, `product` computing it), to be summed with
    /// the other terms of the same input before it is computed: `product` runs once, on all of
    /// the terms (stacking their rows, or reading them where they are). Returns whether the
    /// pass took the term; when it did, the backward rule returns `None` for `input`, otherwise
    /// it returns the gradient itself.
    ///
    /// Terms are taken only during a reverse pass that does not record itself (a
    /// `create_graph` pass needs the gradient as a recorded value) and without anomaly
    /// detection (which checks each gradient as the rule returns it). The sum's order differs
    /// from adding the products one by one, so the result agrees with that to rounding.
    pub fn defer_outer(&self, input: &Var<F>, lhs: &Var<F>, rhs: &Var<F>, product: OuterProduct<F>) -> bool {
        let (Some(slot), &[m, n], &[r, m2], &[r2, n2]) =
            (input.slot(), input.shape(), lhs.shape(), rhs.shape())
        else {
            return false;
        };
        if (m, n, r) != (m2, n2, r2) || !input.tape().same(self) || self.inner.options.detect_anomaly {
            return false;
        }
        match self.inner.deferred.borrow_mut().as_mut() {
            Some(terms) => {
                terms.push((
                    slot,
                    Term {
                        lhs: Arc::clone(lhs.value_arc()),
                        rhs: Arc::clone(rhs.value_arc()),
                        product,
                    },
                ));
                true
            }
            None => false,
        }
    }
}

/// A term's side as the 2-D view it is.
fn view<F: Float>(a: &ArrayD<F>) -> ArrayView2<'_, F> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("defer_outer checked 2-D")
}

/// The deferred terms of one reverse pass, by the slot whose gradient they sum into.
pub(crate) struct Pending<F: Float> {
    by_slot: KeyedMap<usize, Vec<Term<F>>>,
}

impl<F: Float> Pending<F> {
    pub(crate) fn new() -> Pending<F> {
        Pending {
            by_slot: KeyedMap::default(),
        }
    }

    /// Files the terms the last backward rule handed to `tape`.
    pub(crate) fn collect(&mut self, tape: &Tape<F>) {
        if let Some(terms) = tape.inner.deferred.borrow_mut().as_mut() {
            for (slot, term) in terms.drain(..) {
                self.by_slot.entry(slot).or_default().push(term);
            }
        }
    }

    /// The sum of the terms of `slot`, in one product over their rows (`None` if it has none).
    /// Called once the pass reaches the node that made `slot`.
    pub(crate) fn take(&mut self, slot: usize) -> Option<ArrayD<F>> {
        let terms = self.by_slot.remove(&slot)?;
        let product = terms[0].product;
        // `defer_outer` checked that every term's side has the same columns.
        let lhs: Vec<_> = terms.iter().map(|t| view(&t.lhs)).collect();
        let rhs: Vec<_> = terms.iter().map(|t| view(&t.rhs)).collect();
        Some(product(&lhs, &rhs))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, GradOptions, Op, Param, Result, Tape, Var};
    use ndarray::{Array2, ArrayD, ArrayView2, Ix2};
    use std::cell::Cell;

    thread_local! {
        static PRODUCTS: Cell<usize> = const { Cell::new(0) };
    }

    fn outer(lhs: &[ArrayView2<'_, f64>], rhs: &[ArrayView2<'_, f64>]) -> ArrayD<f64> {
        PRODUCTS.with(|c| c.set(c.get() + 1));
        let stack = |views: &[ArrayView2<'_, f64>]| {
            let rows = views.iter().map(|v| v.nrows()).sum();
            let joined = crate::join_rows(views, &[rows, views[0].ncols()]);
            joined.into_dimensionality::<Ix2>().unwrap()
        };
        stack(lhs).t().dot(&stack(rhs)).into_dyn()
    }

    fn two(a: &ArrayD<f64>) -> ArrayView2<'_, f64> {
        a.view().into_dimensionality::<Ix2>().unwrap()
    }

    /// `h · wᵀ` whose weight gradient `gᵀ · h` is deferred (first order only: enough here).
    struct TimesT;

    impl Op<f64> for TimesT {
        fn name(&self) -> &str {
            "times_t"
        }
        fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
            Ok(vec![inputs[0][0], inputs[1][0]])
        }
        fn forward(&self, inputs: &[&ArrayD<f64>]) -> Result<ArrayD<f64>> {
            Ok(two(inputs[0]).dot(&two(inputs[1]).t()).into_dyn())
        }
        fn backward(&self, inputs: &[Var<f64>], _: &Var<f64>, g: &Var<f64>) -> Result<Vec<Option<Var<f64>>>> {
            let (h, w) = (&inputs[0], &inputs[1]);
            let tape = g.tape();
            let dh = tape.constant(two(g.value()).dot(&two(w.value())).into_dyn());
            let dw = match tape.defer_outer(w, g, h, outer) {
                true => None,
                false => Some(tape.constant(outer(&[two(g.value())], &[two(h.value())]))),
            };
            Ok(vec![Some(dh), dw])
        }
    }

    fn m(r: usize, c: usize, seed: f64) -> ArrayD<f64> {
        Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f64 * 0.37 + seed).sin()).into_dyn()
    }

    /// `Σ_t (h_t · wᵀ)²` over three steps with the same weight, and `w`'s gradient from a
    /// plain pass and from a `create_graph` pass, with the products counted in each.
    fn run(options: GradOptions) -> Result<(ArrayD<f64>, usize)> {
        let w = Param::new("w", m(5, 3, 0.2));
        let tape = Tape::new();
        let wv = tape.param(&w);
        let mut loss = tape.constant(ArrayD::zeros(vec![]));
        for t in 0..3 {
            let y = tape.apply(TimesT, &[&tape.input(m(4, 3, t as f64)), &wv])?;
            loss = (&loss + &(&y * &y)?.sum_all()?)?;
        }
        PRODUCTS.with(|c| c.set(0));
        let g = tape.grad(&[&loss], None, &[&wv], options)?.pop().flatten();
        let g = g.ok_or_else(|| Error::invalid("test", "no gradient"))?;
        Ok((g.value().clone(), PRODUCTS.with(Cell::get)))
    }

    #[test]
    fn a_weights_terms_across_uses_sum_in_one_product_equal_to_one_per_use() {
        let (deferred, products) = run(GradOptions::default()).unwrap();
        assert_eq!(products, 1, "one product over the stacked rows");
        let (eager, products) = run(GradOptions::create_graph()).unwrap();
        assert_eq!(products, 3, "a recorded pass computes each use's term");
        // By hand: Σ_t 2 y_tᵀ h_t.
        let mut want = Array2::<f64>::zeros((5, 3));
        for t in 0..3 {
            let h = m(4, 3, t as f64);
            let y = two(&h).dot(&two(&m(5, 3, 0.2)).t());
            want = want + (&y * 2.0).t().dot(&two(&h));
        }
        for got in [&deferred, &eager] {
            assert!(got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs())));
        }
    }

    #[test]
    fn a_term_of_the_wrong_shape_or_outside_a_pass_is_refused() {
        let tape = Tape::<f64>::new();
        let w = tape.param(&Param::new("w", m(5, 3, 0.2)));
        let (g, h) = (tape.input(m(4, 5, 0.0)), tape.input(m(4, 3, 0.0)));
        assert!(!tape.defer_outer(&w, &g, &h, outer), "no reverse pass is running");
        let wrong = tape.input(m(4, 2, 0.0));
        let taken = tape.inner.deferred.replace(Some(Vec::new()));
        assert!(
            !tape.defer_outer(&w, &g, &wrong, outer),
            "[4, 5]ᵀ·[4, 2] is not w's shape"
        );
        assert!(tape.defer_outer(&w, &g, &h, outer));
        tape.inner.deferred.replace(taken);
    }
}
