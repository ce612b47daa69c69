//! Elementwise ops: a value/derivative pair ([`Elementwise`]) over one shared [`Op`] impl.
//!
//! | op | forward | derivative |
//! |---|---|---|
//! | `exp` | `eˣ` | `y` |
//! | `log` | `ln x` | `1/x` |
//! | `sqrt` | `√x` | `1/(2y)` |
//! | `powi(n)` | `xⁿ` | `n·xⁿ⁻¹` |
//! | `tanh` | `tanh x` | `1 − y²` |
//! | `sigmoid` | `1/(1+e⁻ˣ)`, stable | `y(1 − y)` |
//! | `relu` | `max(x, 0)` | `[x > 0]` |
//! | `softplus` | `max(x,0) + ln(1 + e^−|x|)`, stable | `sigmoid(x)` |
//! | `abs` | `|x|` | `sign(x)` |
//! | `log_sigmoid` | `ln σ(x) = min(x,0) − ln(1 + e^−|x|)`, stable | `σ(−x)` |
//! | `expm1` | `eˣ − 1`, exact near 0 | `y + 1` |

use crate::VarExt;
use eddy_tape::{split, Float, Op, Result, Saves, Var};
use ndarray::ArrayD;

/// An elementwise function: its value at a point and its derivative as a differentiable
/// expression of the input `x` and output `y`. Implement this for a new elementwise op and
/// apply it with [`VarExt::map`]; the [`Op`] impl (shape rule, kernel, `g · f'(x)`) is shared.
///
/// `Send + Sync` because a large array's values are computed on all the threads of the current
/// rayon pool at once ([`eddy_tape::split`]), each thread calling [`Elementwise::values`] on its
/// part.
pub trait Elementwise<F: Float>: Send + Sync + 'static {
    /// The op's name, for errors.
    fn name(&self) -> &str;
    /// `f(x)` at one point.
    fn value(&self, x: F) -> F;
    /// `f'(x)` for every element, written with differentiable ops (so it can be differentiated again).
    fn derivative(&self, x: &Var<F>, y: &Var<F>) -> Result<Var<F>>;
    /// `f'(x)` at one point from `x` and `y = f(x)`, for the fast first-order backward (one
    /// pass, no intermediate arrays). `None` (the default) uses [`Elementwise::derivative`].
    /// It must agree with `derivative`.
    fn derivative_at(&self, _x: F, _y: F) -> Option<F> {
        None
    }
    /// `f` over a slice, `out[i] = f(x[i])`. The default loops over [`Elementwise::value`];
    /// an op with a dispatched kernel (tanh, sigmoid) overrides it.
    fn values(&self, x: &[F], out: &mut [F]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = self.value(x);
        }
    }
    /// Which of `x` and `y` the derivative reads: [`Saves::INPUTS`] (`x`), [`Saves::OUTPUTS`]
    /// (`y`, as for `exp`, `tanh` and `sigmoid`) or both (the default). The tape keeps only
    /// that for the reverse pass ([`Op::saves`]); the other comes as NaN.
    fn saves(&self) -> Saves {
        Saves::ALL
    }
}

/// The [`Op`] of an [`Elementwise`] function: same shape out, `dx = g · f'(x)`.
pub struct Unary<E>(pub E);

impl<F: Float, E: Elementwise<F>> Op<F> for Unary<E> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity(self.0.name(), inputs, 1)?;
        Ok(inputs[0].to_vec())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = inputs[0];
        Ok(match x.as_slice() {
            // A plain loop over row-major elements, which the compiler vectorises, split
            // across the rayon pool for a large array.
            Some(xs) => {
                let v = split::fill(xs.len(), split::SPLIT_MIN, F::zero(), |start, out| {
                    self.0.values(&xs[start..start + out.len()], out)
                });
                ArrayD::from_shape_vec(x.raw_dim(), v).expect("the length is the shape's product")
            }
            None => x.mapv(|x| self.0.value(x)),
        })
    }
    fn saves(&self) -> Saves {
        self.0.saves()
    }
    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        // The value the derivative does not read stands in for the one not kept (NaN there).
        let (x, y) = match self.0.saves() {
            Saves { inputs: false, .. } => (output.value(), output.value()),
            Saves { outputs: false, .. } => (inputs[0].value(), inputs[0].value()),
            _ => (inputs[0].value(), output.value()),
        };
        let fast =
            !g.tape().is_recording() && x.first().is_none_or(|&v| self.0.derivative_at(v, v).is_some());
        if fast {
            // First order: g · f'(x) in one pass, a plain loop when all three are row-major.
            let one = |x: F, y: F| self.0.derivative_at(x, y).unwrap_or(F::zero());
            if let (Some(gs), Some(xs), Some(ys)) = (g.value().as_slice(), x.as_slice(), y.as_slice()) {
                let d = split::map3(gs, xs, ys, split::SPLIT_MIN, |g, x, y| g * one(x, y));
                let d = ArrayD::from_shape_vec(x.raw_dim(), d).expect("the length is the shape's product");
                return Ok(vec![Some(g.tape().constant(d))]);
            }
            let d = ndarray::Zip::from(g.value())
                .and(x)
                .and(y)
                .map_collect(|&g, &x, &y| {
                    g * self
                        .0
                        .derivative_at(x, y)
                        .expect("derivative_at is Some for this op")
                });
            return Ok(vec![Some(g.tape().constant(d))]);
        }
        Ok(vec![Some((g * self.0.derivative(&inputs[0], output)?)?)])
    }
}

/// `eˣ`.
pub struct Exp;
impl<F: Float> Elementwise<F> for Exp {
    fn name(&self) -> &str {
        "exp"
    }
    fn value(&self, x: F) -> F {
        x.exp()
    }
    fn derivative(&self, _: &Var<F>, y: &Var<F>) -> Result<Var<F>> {
        Ok(y.clone())
    }
    fn derivative_at(&self, _x: F, y: F) -> Option<F> {
        Some(y)
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUTS
    }
}

/// `ln x`.
pub struct Log;
impl<F: Float> Elementwise<F> for Log {
    fn name(&self) -> &str {
        "log"
    }
    fn value(&self, x: F) -> F {
        x.ln()
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        x.powi(-1)
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(F::one() / x)
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `√x`.
pub struct Sqrt;
impl<F: Float> Elementwise<F> for Sqrt {
    fn name(&self) -> &str {
        "sqrt"
    }
    fn value(&self, x: F) -> F {
        x.sqrt()
    }
    fn derivative(&self, _: &Var<F>, y: &Var<F>) -> Result<Var<F>> {
        y.powi(-1)?.scale(F::of(0.5))
    }
    fn derivative_at(&self, _x: F, y: F) -> Option<F> {
        Some(F::of(0.5) / y)
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUTS
    }
}

/// `xⁿ` for an integer `n`.
pub struct Powi(pub i32);
impl<F: Float> Elementwise<F> for Powi {
    fn name(&self) -> &str {
        "powi"
    }
    fn value(&self, x: F) -> F {
        x.powi(self.0)
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        match self.0 {
            0 => x.scale(F::zero()),
            1 => x.scale(F::zero())?.shift(F::one()),
            n => x.powi(n - 1)?.scale(F::of(n as f64)),
        }
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(match self.0 {
            0 => F::zero(),
            n => F::of(n as f64) * x.powi(n - 1),
        })
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `tanh x`.
pub struct Tanh;
impl<F: Float> Elementwise<F> for Tanh {
    fn name(&self) -> &str {
        "tanh"
    }
    fn value(&self, x: F) -> F {
        crate::kernels::activations::tanh(x)
    }
    fn values(&self, x: &[F], out: &mut [F]) {
        crate::kernels::activations::tanh_slice(x, out)
    }
    fn derivative(&self, _: &Var<F>, y: &Var<F>) -> Result<Var<F>> {
        (y * y)?.affine(-F::one(), F::one(), "one_minus")
    }
    fn derivative_at(&self, _x: F, y: F) -> Option<F> {
        Some(F::one() - y * y)
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUTS
    }
}

/// The logistic sigmoid, stable for large `|x|`.
pub struct Sigmoid;

/// The logistic sigmoid of one value, without overflow at ±1000.
pub fn sigmoid<F: Float>(x: F) -> F {
    crate::kernels::activations::sigmoid(x)
}

impl<F: Float> Elementwise<F> for Sigmoid {
    fn name(&self) -> &str {
        "sigmoid"
    }
    fn value(&self, x: F) -> F {
        sigmoid(x)
    }
    fn values(&self, x: &[F], out: &mut [F]) {
        crate::kernels::activations::sigmoid_slice(x, out)
    }
    fn derivative(&self, _: &Var<F>, y: &Var<F>) -> Result<Var<F>> {
        y * y.affine(-F::one(), F::one(), "one_minus")?
    }
    fn derivative_at(&self, _x: F, y: F) -> Option<F> {
        Some(y * (F::one() - y))
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUTS
    }
}

/// `max(x, 0)`; its derivative `[x > 0]` is a constant mask.
pub struct Relu;
impl<F: Float> Elementwise<F> for Relu {
    fn name(&self) -> &str {
        "relu"
    }
    fn value(&self, x: F) -> F {
        // A compare, not `max`: NaN stays NaN (as PyTorch's relu), so anomaly detection sees it.
        if x < F::zero() {
            F::zero()
        } else {
            x
        }
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        let mask = x
            .value()
            .mapv(|v| if v > F::zero() { F::one() } else { F::zero() });
        Ok(x.tape().constant(mask))
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(if x > F::zero() { F::one() } else { F::zero() })
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `ln(1 + eˣ)`, stable for large `|x|`.
pub struct Softplus;
impl<F: Float> Elementwise<F> for Softplus {
    fn name(&self) -> &str {
        "softplus"
    }
    fn value(&self, x: F) -> F {
        x.max(F::zero()) + (-x.abs()).exp().ln_1p()
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        x.sigmoid()
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(sigmoid(x))
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `|x|`; its derivative `sign(x)` is a constant.
pub struct Abs;
impl<F: Float> Elementwise<F> for Abs {
    fn name(&self) -> &str {
        "abs"
    }
    fn value(&self, x: F) -> F {
        x.abs()
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        let sign = x.value().mapv(|v| {
            if v > F::zero() {
                F::one()
            } else if v < F::zero() {
                -F::one()
            } else {
                F::zero()
            }
        });
        Ok(x.tape().constant(sign))
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(if x > F::zero() {
            F::one()
        } else if x < F::zero() {
            -F::one()
        } else {
            F::zero()
        })
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `ln σ(x) = −softplus(−x)`, stable for large `|x|` (the log of a gate, as xLSTM's forget
/// gate `log f = logsigmoid(f̃)`).
pub struct LogSigmoid;
impl<F: Float> Elementwise<F> for LogSigmoid {
    fn name(&self) -> &str {
        "log_sigmoid"
    }
    fn value(&self, x: F) -> F {
        x.min(F::zero()) - (-x.abs()).exp().ln_1p()
    }
    fn derivative(&self, x: &Var<F>, _: &Var<F>) -> Result<Var<F>> {
        x.neg()?.sigmoid()
    }
    fn derivative_at(&self, x: F, _y: F) -> Option<F> {
        Some(sigmoid(-x))
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `eˣ − 1`, without the cancellation of `exp(x) − 1` near 0 (`1 − a² = −expm1(2 ln a)` for
/// `a` close to 1, as in RG-LRU).
pub struct Expm1;
impl<F: Float> Elementwise<F> for Expm1 {
    fn name(&self) -> &str {
        "expm1"
    }
    fn value(&self, x: F) -> F {
        x.exp_m1()
    }
    fn derivative(&self, _: &Var<F>, y: &Var<F>) -> Result<Var<F>> {
        y.shift(F::one())
    }
    fn derivative_at(&self, _x: F, y: F) -> Option<F> {
        Some(y + F::one())
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_tape::Tape;
    use ndarray::arr1;

    #[test]
    fn relu_propagates_nan_as_pytorch_does() {
        let tape = Tape::<f64>::new();
        let x = tape.input(arr1(&[f64::NAN, -1.0, 0.0, 2.0]).into_dyn());
        let y = x.relu().unwrap();
        let v = y.value();
        assert!(v[0].is_nan(), "relu(NaN) must be NaN, got {}", v[0]);
        assert_eq!((v[1], v[2], v[3]), (0.0, 0.0, 2.0));
    }

    #[test]
    fn kernels_match_the_textbook_formulas() {
        let t = Tape::<f64>::new();
        let xs = [-3.0, -0.5, 0.25, 2.0];
        let x = t.constant(arr1(&xs).into_dyn());
        let check = |v: Var<f64>, f: fn(f64) -> f64| {
            for (a, &b) in v.value().iter().zip(&xs) {
                assert!((a - f(b)).abs() < 1e-12, "{a} vs {}", f(b));
            }
        };
        check(x.exp().unwrap(), f64::exp);
        check(x.tanh().unwrap(), f64::tanh);
        check(x.sigmoid().unwrap(), |v| 1.0 / (1.0 + (-v).exp()));
        check(x.softplus().unwrap(), |v| (1.0 + v.exp()).ln());
        check(x.relu().unwrap(), |v| if v > 0.0 { v } else { 0.0 });
        check(x.powi(3).unwrap(), |v| v * v * v);
        check(x.abs().unwrap(), f64::abs);
        check(x.log_sigmoid().unwrap(), |v| (1.0 / (1.0 + (-v).exp())).ln());
        check(x.expm1().unwrap(), |v| v.exp() - 1.0);
        let p = t.constant(arr1(&[0.5, 2.0]).into_dyn());
        assert!((p.log().unwrap().value()[1] - 2f64.ln()).abs() < 1e-15);
        assert!((p.sqrt().unwrap().value()[1] - 2f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn the_fast_first_order_backward_agrees_with_the_recorded_rule() {
        use eddy_tape::GradOptions;
        let xs = arr1(&[0.3, 1.7, 0.9, 2.5]).into_dyn();
        type UnaryFn = fn(&Var<f64>) -> Result<Var<f64>>;
        let ops: Vec<(&str, UnaryFn)> = vec![
            ("exp", |x| x.exp()),
            ("log", |x| x.log()),
            ("sqrt", |x| x.sqrt()),
            ("powi", |x| x.powi(3)),
            ("tanh", |x| x.tanh()),
            ("sigmoid", |x| x.sigmoid()),
            ("relu", |x| x.shift(-1.0)?.relu()),
            ("softplus", |x| x.softplus()),
            ("abs", |x| x.shift(-1.0)?.abs()),
            ("log_sigmoid", |x| x.shift(-1.0)?.log_sigmoid()),
            ("expm1", |x| x.expm1()),
        ];
        for (name, f) in ops {
            let grad = |create_graph: bool| {
                let t = Tape::<f64>::new();
                let x = t.input(xs.clone());
                let y = f(&x).unwrap().sum_all().unwrap();
                let opts = GradOptions {
                    create_graph,
                    retain_graph: true,
                };
                t.grad(&[&y], None, &[&x], opts).unwrap()[0]
                    .as_ref()
                    .unwrap()
                    .value()
                    .clone()
            };
            let (fast, recorded) = (grad(false), grad(true));
            let err = (&fast - &recorded).iter().fold(0.0f64, |e, v| e.max(v.abs()));
            assert!(err < 1e-12, "{name}: {err}");
        }
    }

    #[test]
    fn sigmoid_and_softplus_are_stable_at_a_thousand() {
        let t = Tape::<f32>::new();
        let x = t.input(arr1(&[-1000.0f32, 1000.0]).into_dyn());
        let s = x.sigmoid().unwrap();
        assert_eq!(s.value().as_slice().unwrap(), &[0.0, 1.0]);
        let sp = x.softplus().unwrap();
        assert_eq!(sp.value().as_slice().unwrap(), &[0.0, 1000.0]);
        let ls = x.log_sigmoid().unwrap();
        assert_eq!(ls.value().as_slice().unwrap(), &[-1000.0, 0.0]);
        let g = ls.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.var(&x).unwrap().as_slice().unwrap(), &[1.0, 0.0]);
        let g = sp.sum_all().unwrap().backward().unwrap();
        assert!(g.var(&x).unwrap().iter().all(|v| v.is_finite()));
    }
}
