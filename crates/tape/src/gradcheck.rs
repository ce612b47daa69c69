//! Gradient checking by central differences in `f64`: [`gradcheck`] and [`gradgradcheck`].
//!
//! The output is projected onto a random cotangent `v`, so the scalar `L = Σ v ⊙ f(x)` is
//! checked: its analytic gradient (one reverse pass) against central differences, element by
//! element (full mode) or along a random direction `u` (fast mode, `vᵀJu`). A random `v` keeps
//! errors in different output elements from cancelling.

use crate::{Error, GradOptions, Param, Result, Rng, Tape, Var};
use ndarray::{ArrayD, Dimension};

/// How [`gradcheck`] compares: step, tolerances, mode, seed, and parameters to check too.
#[derive(Debug, Clone)]
pub struct GradcheckOptions {
    /// Central-difference step. Default `1e-6`, as PyTorch.
    pub eps: f64,
    /// Absolute tolerance. Default `1e-5`, as PyTorch.
    pub atol: f64,
    /// Relative tolerance. Default `1e-3`, as PyTorch.
    pub rtol: f64,
    /// Check one random direction per input (`vᵀJu`) instead of every element.
    pub fast: bool,
    /// Seed of the random cotangent and directions.
    pub seed: u64,
    /// Parameters to check as well as the inputs (the closure binds them to its tape).
    pub params: Vec<Param<f64>>,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            fast: false,
            seed: 0,
            params: Vec::new(),
        }
    }
}

impl GradcheckOptions {
    /// Fast mode: one random directional derivative per input instead of every element.
    pub fn fast(mut self) -> Self {
        self.fast = true;
        self
    }

    /// Also checks these parameters' gradients.
    pub fn params(mut self, params: impl IntoIterator<Item = Param<f64>>) -> Self {
        self.params = params.into_iter().collect();
        self
    }

    /// Sets the tolerances.
    pub fn tolerances(mut self, atol: f64, rtol: f64) -> Self {
        self.atol = atol;
        self.rtol = rtol;
        self
    }
}

/// Checks the gradients of `f` at `inputs` (and of any `options.params`) against central
/// differences.
///
/// `f` receives a fresh tape and the inputs bound to it as `Var`s, and returns any output.
///
/// # Errors
/// [`Error::Gradcheck`] naming the input, the worst element, both values and the number of
/// failures; or any error `f` returns.
///
/// # Example
/// ```
/// use eddy_tape::{gradcheck, GradcheckOptions, Tape, Var};
/// use ndarray::arr1;
///
/// let x = arr1(&[0.3, -1.2, 2.0]).into_dyn();
/// gradcheck(|_t: &Tape<f64>, x: &[Var<f64>]| &x[0] * &x[0], &[x], &GradcheckOptions::default())?;
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn gradcheck<Fun>(f: Fun, inputs: &[ArrayD<f64>], options: &GradcheckOptions) -> Result<()>
where
    Fun: Fn(&Tape<f64>, &[Var<f64>]) -> Result<Var<f64>>,
{
    let mut rng = Rng::seed(options.seed);
    // The analytic side: L = Σ v ⊙ f(x), one reverse pass.
    let tape = Tape::new();
    let xs: Vec<Var<f64>> = inputs.iter().map(|x| tape.input(x.clone())).collect();
    let y = f(&tape, &xs)?;
    let v = random_like(y.value(), &mut rng);
    let vvar = tape.constant(v.clone());
    let bound: Vec<Var<f64>> = options.params.iter().map(|p| tape.param(p)).collect();
    let wrt: Vec<&Var<f64>> = xs.iter().chain(&bound).collect();
    let analytic = tape.grad(&[&y], Some(&[&vvar]), &wrt, GradOptions::default())?;

    let loss = |xs: &[ArrayD<f64>]| -> Result<f64> {
        // A recording tape: `f` may itself take gradients (as gradgradcheck's inner function does).
        let tape = Tape::new();
        let vars: Vec<Var<f64>> = xs.iter().map(|x| tape.input(x.clone())).collect();
        let y = f(&tape, &vars)?;
        Ok(y.value().iter().zip(v.iter()).map(|(a, b)| a * b).sum())
    };

    let mut report = Report::default();
    let mut current: Vec<ArrayD<f64>> = inputs
        .iter()
        .map(|x| x.as_standard_layout().into_owned())
        .collect();
    for (i, g) in analytic.iter().enumerate() {
        let (name, shape) = if i < inputs.len() {
            (format!("input {i}"), inputs[i].shape().to_vec())
        } else {
            let p = &options.params[i - inputs.len()];
            (format!("param {:?}", p.name()), p.shape())
        };
        let g = g
            .as_ref()
            .map(|g| g.value().clone())
            .unwrap_or_else(|| ArrayD::zeros(shape.clone()));
        // Perturbs element(s) of input i (or of param i) and evaluates L.
        let mut eval_at = |delta: &dyn Fn(&mut ArrayD<f64>)| -> Result<f64> {
            if i < inputs.len() {
                let orig = current[i].clone();
                delta(&mut current[i]);
                let l = loss(&current);
                current[i] = orig;
                l
            } else {
                let p = &options.params[i - inputs.len()];
                let orig = p.value();
                let mut moved = orig.as_standard_layout().into_owned();
                delta(&mut moved);
                p.set(moved);
                let l = loss(&current);
                p.set((*orig).clone());
                l
            }
        };
        let eps = options.eps;
        if options.fast {
            let u = random_like(&g, &mut rng);
            let plus = eval_at(&|x| x.zip_mut_with(&u, |a, b| *a += eps * b))?;
            let minus = eval_at(&|x| x.zip_mut_with(&u, |a, b| *a -= eps * b))?;
            let numeric = (plus - minus) / (2.0 * eps);
            let analytic: f64 = g.iter().zip(u.iter()).map(|(a, b)| a * b).sum();
            report.compare(&name, Vec::new(), analytic, numeric, options);
        } else {
            for (k, (idx, &a)) in g.indexed_iter().enumerate() {
                let plus = eval_at(&|x| x.as_slice_mut().expect("standard layout")[k] += eps)?;
                let minus = eval_at(&|x| x.as_slice_mut().expect("standard layout")[k] -= eps)?;
                let numeric = (plus - minus) / (2.0 * eps);
                report.compare(&name, idx.slice().to_vec(), a, numeric, options);
            }
        }
    }
    report.finish()
}

/// Checks second derivatives: [`gradcheck`] of `x ↦ Σ w ⊙ ∂(Σ v ⊙ f(x))/∂x` for random `v`, `w`,
/// whose gradient is computed by differentiating the recorded reverse pass (`create_graph`).
pub fn gradgradcheck<Fun>(f: Fun, inputs: &[ArrayD<f64>], options: &GradcheckOptions) -> Result<()>
where
    Fun: Fn(&Tape<f64>, &[Var<f64>]) -> Result<Var<f64>>,
{
    let mut rng = Rng::seed(options.seed ^ 0x5eed);
    // Fix the output cotangent v and the gradient weights w by one probe evaluation.
    let probe = Tape::no_grad();
    let vars: Vec<Var<f64>> = inputs.iter().map(|x| probe.constant(x.clone())).collect();
    let y = f(&probe, &vars)?;
    let v = random_like(y.value(), &mut rng);
    let mut ws: Vec<ArrayD<f64>> = inputs.iter().map(|x| random_like(x, &mut rng)).collect();
    ws.extend(options.params.iter().map(|p| random_like(&p.value(), &mut rng)));
    let inner = |tape: &Tape<f64>, xs: &[Var<f64>]| -> Result<Var<f64>> {
        let y = f(tape, xs)?;
        let vvar = tape.constant(v.clone());
        let bound: Vec<Var<f64>> = options.params.iter().map(|p| tape.param(p)).collect();
        let wrt: Vec<&Var<f64>> = xs.iter().chain(&bound).collect();
        let gs = tape.grad(&[&y], Some(&[&vvar]), &wrt, GradOptions::create_graph())?;
        let mut total = tape.scalar(0.0);
        for (g, w) in gs.iter().zip(&ws) {
            if let Some(g) = g {
                total = (&total + (g * &tape.constant(w.clone()))?.sum_all()?)?;
            }
        }
        Ok(total)
    };
    gradcheck(inner, inputs, options)
}

fn random_like(x: &ArrayD<f64>, rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(x.shape(), || rng.uniform_in(-1.0, 1.0))
}

/// The failures seen so far and the worst one.
#[derive(Default)]
struct Report {
    failures: usize,
    total: usize,
    worst: Option<(f64, String, Vec<usize>, f64, f64)>,
}

impl Report {
    fn compare(&mut self, name: &str, index: Vec<usize>, analytic: f64, numeric: f64, o: &GradcheckOptions) {
        self.total += 1;
        let excess = (analytic - numeric).abs() - (o.atol + o.rtol * numeric.abs());
        let bad = excess > 0.0 || !analytic.is_finite() || !numeric.is_finite();
        if bad {
            self.failures += 1;
            let excess = if excess.is_nan() { f64::INFINITY } else { excess };
            if self.worst.as_ref().is_none_or(|w| excess > w.0) {
                self.worst = Some((excess, name.to_string(), index, analytic, numeric));
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self.worst {
            None => Ok(()),
            Some((_, input, index, analytic, numeric)) => Err(Error::Gradcheck {
                input,
                index,
                analytic,
                numeric,
                failures: self.failures,
                total: self.total,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use ndarray::arr1;

    /// A deliberately wrong op: forward x², backward claims x.
    struct Wrong;
    impl Op<f64> for Wrong {
        fn name(&self) -> &str {
            "wrong"
        }
        fn shape(&self, s: &[&[usize]]) -> Result<Vec<usize>> {
            Ok(s[0].to_vec())
        }
        fn forward(&self, x: &[&ArrayD<f64>]) -> Result<ArrayD<f64>> {
            Ok(x[0].mapv(|a| a * a))
        }
        fn backward(&self, x: &[Var<f64>], _: &Var<f64>, g: &Var<f64>) -> Result<Vec<Option<Var<f64>>>> {
            Ok(vec![Some((g * &x[0])?)])
        }
    }

    #[test]
    fn a_wrong_gradient_is_caught_and_reported() {
        let x = arr1(&[1.0, 2.0, 3.0]).into_dyn();
        let f = |t: &Tape<f64>, x: &[Var<f64>]| t.apply(Wrong, &[&x[0]]);
        let e = gradcheck(f, std::slice::from_ref(&x), &GradcheckOptions::default()).unwrap_err();
        match &e {
            Error::Gradcheck {
                input,
                failures,
                total,
                ..
            } => {
                assert_eq!(input, "input 0");
                assert_eq!((*failures, *total), (3, 3));
            }
            e => panic!("{e}"),
        }
        assert!(e.to_string().contains("analytic"), "{e}");
        assert!(gradcheck(f, &[x], &GradcheckOptions::default().fast()).is_err());
    }

    #[test]
    fn right_gradients_pass_in_both_modes_and_second_order() {
        let x = arr1(&[0.5, -2.0, 3.0]).into_dyn();
        let y = arr1(&[1.5, 0.7, -0.2]).into_dyn();
        let f = |_: &Tape<f64>, v: &[Var<f64>]| (&v[0] * &v[1])? / &v[0].shift(10.0)?;
        for o in [GradcheckOptions::default(), GradcheckOptions::default().fast()] {
            gradcheck(f, &[x.clone(), y.clone()], &o).unwrap();
            gradgradcheck(f, &[x.clone(), y.clone()], &o).unwrap();
        }
    }

    #[test]
    fn params_are_checked_too() {
        let p = Param::new("w", arr1(&[0.5, 1.5]).into_dyn());
        let x = arr1(&[2.0, -1.0]).into_dyn();
        let q = p.clone();
        let f = move |t: &Tape<f64>, v: &[Var<f64>]| {
            let w = t.param(&q);
            (&w * &w)? * &v[0]
        };
        gradcheck(
            &f,
            std::slice::from_ref(&x),
            &GradcheckOptions::default().params([p.clone()]),
        )
        .unwrap();
        gradgradcheck(&f, &[x], &GradcheckOptions::default().params([p])).unwrap();
    }
}
