//! The decayed rank-one update of a stack of matrices, `C' = f ⊙ C + i ⊙ (v ⊗ k)`: the matrix
//! memory of mLSTM (xLSTM, Beck et al. 2024) and of gated linear attention, as one op.
//!
//! Composed from `*` and `+`, the update keeps four `[N, P, Q]` tensors per step on the tape
//! (`v ⊗ k`, `i ⊙ (v ⊗ k)`, `f ⊙ C` and `C'`) and passes over memory four times; as one op it
//! keeps `C'` alone and passes once. Its backward is written with differentiable ops, so
//! gradients of gradients flow through it.

use crate::VarExt;
use eddy_tape::{Error, Float, Op, Result, Var};
use ndarray::{ArrayD, Axis, Ix2, Ix3};

/// `C' = f ⊙ C + i ⊙ (v ⊗ k)` for each of `N` matrices: inputs `[c, f, i, v, k]` with `c`
/// `[N, P, Q]`, the scalars `f`, `i` `[N]`, `v` `[N, P]` and `k` `[N, Q]`; output `[N, P, Q]`.
///
/// Gradient (per matrix, `G = dC'`): `dC = f G`, `df = Σ G ⊙ C`, `di = vᵀ G k`, `dv = i G k`,
/// `dk = i Gᵀ v`.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit together as above.
pub struct RankOneUpdate;

impl<F: Float> Op<F> for RankOneUpdate {
    fn name(&self) -> &str {
        "rank_one_update"
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let fits = match inputs {
            [c, f, i, v, k] => {
                c.len() == 3 && f == &[c[0]] && i == &[c[0]] && v == &[c[0], c[1]] && k == &[c[0], c[2]]
            }
            _ => false,
        };
        if !fits {
            return Err(Error::shape(
                "rank_one_update",
                inputs,
                "expected c [N, P, Q], f [N], i [N], v [N, P] and k [N, Q]",
            ));
        }
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let c = inputs[0]
            .view()
            .into_dimensionality::<Ix3>()
            .expect("checked: 3-D");
        let v = inputs[3]
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked: 2-D");
        let k = inputs[4]
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked: 2-D");
        let (f, i) = (inputs[1], inputs[2]);
        let mut out = c.to_owned();
        for (n, mut m) in out.axis_iter_mut(Axis(0)).enumerate() {
            let (fn_, in_) = (f[[n]], i[[n]]);
            let (vn, kn) = (v.row(n), k.row(n));
            for (mut row, &va) in m.axis_iter_mut(Axis(0)).zip(vn.iter()) {
                let scale = in_ * va;
                for (x, &kb) in row.iter_mut().zip(kn.iter()) {
                    *x = fn_ * *x + scale * kb;
                }
            }
        }
        Ok(out.into_dyn())
    }

    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let [c, f, i, v, k] = inputs else {
            unreachable!("the shape rule admits five inputs")
        };
        let (n, p, q) = (g.shape()[0], g.shape()[1], g.shape()[2]);
        let dc = c
            .requires_grad()
            .then(|| g * &f.reshape(&[n, 1, 1])?)
            .transpose()?;
        let df = f
            .requires_grad()
            .then(|| (g * c)?.sum(2, false)?.sum(1, false))
            .transpose()?;
        // G k: [N, P].
        let gk = (v.requires_grad() || i.requires_grad())
            .then(|| g.matmul(&k.reshape(&[n, q, 1])?)?.reshape(&[n, p]))
            .transpose()?;
        let di = match (&gk, i.requires_grad()) {
            (Some(gk), true) => Some((gk * v)?.sum(1, false)?),
            _ => None,
        };
        let dv = match (&gk, v.requires_grad()) {
            (Some(gk), true) => Some((gk * &i.reshape(&[n, 1])?)?),
            _ => None,
        };
        let dk = k
            .requires_grad()
            .then(|| {
                let gtv = v.reshape(&[n, 1, p])?.matmul(g)?.reshape(&[n, q])?;
                &gtv * &i.reshape(&[n, 1])?
            })
            .transpose()?;
        Ok(vec![dc, df, di, dv, dk])
    }
}

/// `C' = f ⊙ C + i ⊙ (v ⊗ k)` through [`RankOneUpdate`]: `c` `[N, P, Q]`, `f`, `i` `[N]`, `v`
/// `[N, P]`, `k` `[N, Q]`.
///
/// ```
/// use eddy_ops::prelude::*;
/// use eddy_ops::rank_one_update;
/// use ndarray::{arr1, arr2, Array3};
///
/// let tape = Tape::<f64>::new();
/// let c = tape.constant(Array3::from_elem((1, 2, 2), 1.0).into_dyn());
/// let f = tape.constant(arr1(&[0.5]).into_dyn());
/// let i = tape.constant(arr1(&[2.0]).into_dyn());
/// let v = tape.constant(arr2(&[[1.0, 3.0]]).into_dyn());
/// let k = tape.constant(arr2(&[[1.0, -1.0]]).into_dyn());
/// let next = rank_one_update(&c, &f, &i, &v, &k)?;
/// // 0.5 · 1 + 2 · v[a] · k[b]
/// assert_eq!(next.value().iter().copied().collect::<Vec<_>>(), vec![2.5, -1.5, 6.5, -5.5]);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn rank_one_update<F: Float>(
    c: &Var<F>,
    f: &Var<F>,
    i: &Var<F>,
    v: &Var<F>,
    k: &Var<F>,
) -> Result<Var<F>> {
    c.tape().apply(RankOneUpdate, &[c, f, i, v, k])
}
