//! Random shapes through every public op: each returns `Ok` or a clean `Err`, never a panic.
//!
//! The shapes mix small sizes (0 to 3) with huge ones (2⁴⁰, 2⁶², `usize::MAX`: sizes no allocator grants; an input
//! with a huge axis has a 0 elsewhere, so it holds few elements) and are related to each other
//! only sometimes, so that shape rules see matching, mismatched and overflowing inputs. An op
//! that succeeds also runs its backward pass. [`CATALOGUE`] names every op; the test
//! `catalogue_is_complete` reads the crate's sources and fails when a public op is missing
//! from it, so a new op is tested from the day it lands.

use eddy_ops::activation::{logaddexp, logsumexp, LogSoftmax, Softmax};
use eddy_ops::elementwise::*;
use eddy_ops::fused::Linear;
use eddy_ops::pointwise::PointwiseOp;
use eddy_ops::prelude::Rng;
use eddy_ops::prelude::*;
use eddy_ops::reduce::{Max, Maximum, Sum};
use eddy_ops::shape::*;
use eddy_ops::*;
use eddy_ops::{rank_one_update, RankOneUpdate};
use ndarray::{ArrayD, Dimension, IxDyn};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

const HUGE: [usize; 3] = [1 << 40, 1 << 62, usize::MAX];

/// A size: mostly small (0 to 3), sometimes huge.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..4, 1 => proptest::sample::select(HUGE.to_vec())]
}

/// What one case feeds the ops.
#[derive(Debug, Clone)]
struct Case {
    /// Four unrelated shapes of rank 0 to 3.
    shapes: Vec<Vec<usize>>,
    /// Sizes `[T, B, I, H]` for ops whose inputs must relate (products, cells, scans).
    dims: [usize; 4],
    /// Use `shapes` in place of the related shapes (mismatched inputs).
    mismatch: [bool; 4],
    /// Axis arguments.
    axes: [isize; 3],
    /// Size arguments (start, length, count).
    sizes: [usize; 3],
    /// Index lists.
    indices: Vec<usize>,
    /// A probability (dropout), possibly out of range.
    p: f64,
    /// A power.
    n: i32,
    /// Flags (keepdim, transposes, bias, reverse).
    flags: [bool; 4],
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(proptest::collection::vec(dim(), 0..4), 4),
        [dim(), dim(), dim(), dim()],
        any::<[bool; 4]>(),
        [-4isize..4, -4isize..4, -4isize..4],
        [dim(), dim(), dim()],
        proptest::collection::vec(dim(), 0..4),
        prop_oneof![
            Just(0.0),
            Just(0.5),
            Just(1.0),
            Just(-0.1),
            Just(1.5),
            Just(f64::NAN)
        ],
        -3i32..4,
        any::<[bool; 4]>(),
    )
        .prop_map(
            |(shapes, dims, mismatch, axes, sizes, indices, p, n, flags)| Case {
                shapes,
                dims,
                mismatch,
                axes,
                sizes,
                indices,
                p,
                n,
                flags,
            },
        )
}

/// `shape`, changed until ndarray can make it and it holds few elements: a huge axis stays
/// only beside a 0 (the interesting case: a valid empty array of a huge shape) and while the
/// product of the non-zero axes fits in `isize` (ndarray's rule).
fn allocatable(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if !s.contains(&0) {
        if let Some(i) = s.iter().position(|&d| d > 3) {
            s[i] = 0;
        }
    }
    let small: usize = s.iter().filter(|&&d| (1..=3).contains(&d)).product();
    let mut huge_seen = 1usize;
    for d in s.iter_mut().filter(|d| **d > 3) {
        match d.checked_mul(huge_seen).and_then(|n| n.checked_mul(small)) {
            Some(n) if n <= isize::MAX as usize => huge_seen = n / small,
            _ => *d = 0,
        }
    }
    s
}

/// A graph input of (about) `shape`, holding small distinct finite values.
fn var(t: &Tape<f64>, shape: &[usize]) -> Var<f64> {
    let s = allocatable(shape);
    let mut k = 0.0;
    t.input(ArrayD::from_shape_fn(IxDyn(&s), |_| {
        k += 1.0;
        (k * 0.7f64).sin()
    }))
}

impl Case {
    /// The `k`-th random shape as an input.
    fn x(&self, t: &Tape<f64>, k: usize) -> Var<f64> {
        var(t, &self.shapes[k % 4])
    }
    /// `related` as an input, or (when this case mismatches input `k`) the `k`-th random shape.
    fn rel(&self, t: &Tape<f64>, k: usize, related: &[usize]) -> Var<f64> {
        if self.mismatch[k % 4] {
            self.x(t, k)
        } else {
            var(t, related)
        }
    }
    fn dims(&self) -> (usize, usize, usize, usize) {
        let [t, b, i, h] = self.dims;
        (t, b, i, h)
    }
    /// `a · k`, saturating (related shapes may be huge; the op must reject them cleanly).
    fn times(a: usize, k: usize) -> usize {
        a.saturating_mul(k)
    }
}

type Run = fn(&Tape<f64>, &Case) -> Result<Vec<Var<f64>>>;

fn one(v: Result<Var<f64>>) -> Result<Vec<Var<f64>>> {
    v.map(|v| vec![v])
}

fn mask(c: &Case) -> ArrayD<bool> {
    let s = allocatable(&c.shapes[3]);
    ArrayD::from_shape_fn(IxDyn(&s), |d| d.as_array_view().sum() % 2 == 0)
}

fn packed(t: &Tape<f64>, c: &Case, tb: bool) -> Result<Vec<Var<f64>>> {
    let (_, b, i, h) = c.dims();
    let w = var(t, &[i, h]);
    let w2 = w
        .value()
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .expect("2-D");
    let pm = std::rc::Rc::new(kernels::packed::PackedMatrix::new(&w2.view()));
    let a = c.rel(t, 0, &[b, if tb { h } else { i }]);
    let wv = c.rel(t, 1, &[i, h]);
    one(t.apply(PackedMatMul { packed: pm, tb }, &[&a, &wv]))
}

use eddy_ops::packed::{PackedLinear, PackedMatMul};

/// Every public op, by the name it has in the crate (method, free function or op struct).
/// Three numbers to two, through every kind of step `pointwise` takes.
struct Blend;
impl eddy_ops::pointwise::Pointwise<3, 2> for Blend {
    fn eval<R: eddy_ops::pointwise::Real>(&self, [a, b, w]: [R; 3]) -> [R; 2] {
        [
            a.sigmoid() * w + b.tanh(),
            (a - b).exp() / (w * w + R::of(1.0)).sqrt(),
        ]
    }
}

const CATALOGUE: &[(&str, Run)] = &[
    // Elementwise methods (VarExt) and their op structs (applied through `map`).
    ("map", |t, c| one(c.x(t, 0).map(Tanh))),
    ("exp", |t, c| one(c.x(t, 0).exp())),
    ("log", |t, c| one(c.x(t, 0).log())),
    ("sqrt", |t, c| one(c.x(t, 0).sqrt())),
    ("powi", |t, c| one(c.x(t, 0).powi(c.n))),
    ("tanh", |t, c| one(c.x(t, 0).tanh())),
    ("sigmoid", |t, c| one(c.x(t, 0).sigmoid())),
    ("relu", |t, c| one(c.x(t, 0).relu())),
    ("softplus", |t, c| one(c.x(t, 0).softplus())),
    ("abs", |t, c| one(c.x(t, 0).abs())),
    ("log_sigmoid", |t, c| one(c.x(t, 0).log_sigmoid())),
    ("expm1", |t, c| one(c.x(t, 0).expm1())),
    ("Unary", |t, c| one(t.apply(Unary(Exp), &[&c.x(t, 0)]))),
    ("Exp", |t, c| one(c.x(t, 0).map(Exp))),
    ("Log", |t, c| one(c.x(t, 0).map(Log))),
    ("Sqrt", |t, c| one(c.x(t, 0).map(Sqrt))),
    ("Powi", |t, c| one(c.x(t, 0).map(Powi(c.n)))),
    ("Tanh", |t, c| one(c.x(t, 0).map(Tanh))),
    ("Sigmoid", |t, c| one(c.x(t, 0).map(Sigmoid))),
    ("Relu", |t, c| one(c.x(t, 0).map(Relu))),
    ("Softplus", |t, c| one(c.x(t, 0).map(Softplus))),
    ("Abs", |t, c| one(c.x(t, 0).map(Abs))),
    ("LogSigmoid", |t, c| one(c.x(t, 0).map(LogSigmoid))),
    ("Expm1", |t, c| one(c.x(t, 0).map(Expm1))),
    // Binary, broadcasting.
    ("add", |t, c| one(c.x(t, 0).add(&c.x(t, 1)))),
    ("sub", |t, c| one(c.x(t, 0).sub(&c.x(t, 1)))),
    ("mul", |t, c| one(c.x(t, 0).mul(&c.x(t, 1)))),
    ("div", |t, c| one(c.x(t, 0).div(&c.x(t, 1)))),
    ("maximum", |t, c| one(c.x(t, 0).maximum(&c.x(t, 1)))),
    ("Maximum", |t, c| one(t.apply(Maximum, &[&c.x(t, 0), &c.x(t, 1)]))),
    ("logaddexp", |t, c| one(c.x(t, 0).logaddexp(&c.x(t, 1)))),
    ("where_", |t, c| one(where_(&mask(c), &c.x(t, 0), &c.x(t, 1)))),
    ("Where", |t, c| {
        one(t.apply(Where(mask(c)), &[&c.x(t, 0), &c.x(t, 1)]))
    }),
    // Unary affine and reductions of the engine.
    ("neg", |t, c| one(c.x(t, 0).neg())),
    ("scale", |t, c| one(c.x(t, 0).scale(2.0))),
    ("shift", |t, c| one(c.x(t, 0).shift(-1.0))),
    ("affine", |t, c| one(c.x(t, 0).affine(2.0, 1.0, "affine"))),
    ("sum_to", |t, c| one(c.x(t, 0).sum_to(&c.shapes[1]))),
    ("broadcast_to", |t, c| one(c.x(t, 0).broadcast_to(&c.shapes[1]))),
    ("sum_all", |t, c| one(c.x(t, 0).sum_all())),
    // Products.
    ("matmul", |t, c| {
        let (_, b, i, h) = c.dims();
        one(c.rel(t, 0, &[b, i]).matmul(&c.rel(t, 1, &[i, h])))
    }),
    ("matmul_t", |t, c| {
        let (_, b, i, h) = c.dims();
        let (ta, tb) = (c.flags[0], c.flags[1]);
        let a = c.rel(t, 0, &if ta { [i, b] } else { [b, i] });
        let w = c.rel(t, 1, &if tb { [h, i] } else { [i, h] });
        one(matmul_t(&a, &w, ta, tb))
    }),
    ("MatMul", |t, c| {
        let (tt, b, i, h) = c.dims();
        let a = c.rel(t, 0, &[tt, b, i]);
        let w = c.rel(t, 1, &[i, h]);
        one(t.apply(
            MatMul {
                ta: c.flags[0],
                tb: c.flags[1],
            },
            &[&a, &w],
        ))
    }),
    ("linear", |t, c| {
        let (_, b, i, h) = c.dims();
        let bias = c.rel(t, 2, &[h]);
        let bias = c.flags[2].then_some(&bias);
        one(c.rel(t, 0, &[b, i]).linear(&c.rel(t, 1, &[h, i]), bias))
    }),
    ("linear_add", |t, c| {
        let (_, b, i, h) = c.dims();
        let bias = c.rel(t, 2, &[h]);
        let add = c.rel(t, 3, &[b, h]);
        one(linear_add(
            &c.rel(t, 0, &[b, i]),
            &c.rel(t, 1, &[h, i]),
            c.flags[2].then_some(&bias),
            c.flags[3].then_some(&add),
        ))
    }),
    ("Linear", |t, c| {
        let (_, b, i, h) = c.dims();
        let op = Linear {
            bias: c.flags[2],
            add: c.flags[3],
        };
        let xs = [c.rel(t, 0, &[b, i]), c.rel(t, 1, &[h, i]), c.x(t, 2), c.x(t, 3)];
        let n = c.sizes[0] % 5;
        one(t.apply(op, &xs.iter().take(n).collect::<Vec<_>>()))
    }),
    ("PackedMatMul", |t, c| packed(t, c, c.flags[1])),
    ("rank_one_update", |t, c| {
        let (n, p, q, _) = c.dims();
        one(rank_one_update(
            &c.rel(t, 0, &[n, p, q]),
            &c.rel(t, 1, &[n]),
            &c.rel(t, 2, &[n]),
            &c.rel(t, 3, &[n, p]),
            &c.rel(t, 4, &[n, q]),
        ))
    }),
    ("RankOneUpdate", |t, c| {
        let xs: Vec<Var<f64>> = (0..5).map(|k| c.x(t, k)).collect();
        one(t.apply(RankOneUpdate, &xs.iter().collect::<Vec<_>>()))
    }),
    ("PackedLinear", |t, c| {
        let (_, b, i, h) = c.dims();
        let w = var(t, &[h, i]);
        let w2 = w
            .value()
            .clone()
            .into_dimensionality::<ndarray::Ix2>()
            .expect("2-D");
        let pm = std::rc::Rc::new(kernels::packed::PackedMatrix::new(&w2.t()));
        let op = PackedLinear {
            linear: Linear {
                bias: c.flags[2],
                add: false,
            },
            packed: pm,
        };
        let xs = [c.rel(t, 0, &[b, i]), c.rel(t, 1, &[h, i]), c.rel(t, 2, &[h])];
        one(t.apply(op, &xs.iter().take(2 + c.flags[2] as usize).collect::<Vec<_>>()))
    }),
    ("takes_packed", |_, c| {
        let [r, k, n] = c.sizes;
        let _ = packed::takes_packed::<f32>(r, k, n) | packed::takes_packed::<f64>(r, k, n);
        Ok(vec![])
    }),
    // Shape ops.
    ("reshape", |t, c| one(c.x(t, 0).reshape(&c.shapes[1]))),
    ("Reshape", |t, c| {
        one(t.apply(Reshape(c.shapes[1].clone()), &[&c.x(t, 0)]))
    }),
    ("permute", |t, c| {
        let axes: Vec<usize> = c.indices.iter().map(|&i| i % 4).collect();
        one(c.x(t, 0).permute(&axes))
    }),
    ("Permute", |t, c| {
        one(t.apply(Permute(c.indices.clone()), &[&c.x(t, 0)]))
    }),
    ("transpose", |t, c| one(c.x(t, 0).transpose(c.axes[0], c.axes[1]))),
    ("unsqueeze", |t, c| one(c.x(t, 0).unsqueeze(c.axes[0]))),
    ("narrow", |t, c| {
        one(c.x(t, 0).narrow(c.axes[0], c.sizes[0], c.sizes[1]))
    }),
    ("Narrow", |t, c| {
        let op = Narrow {
            axis: c.sizes[2],
            start: c.sizes[0],
            len: c.sizes[1],
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("Pad", |t, c| {
        let op = Pad {
            axis: c.sizes[2] % 4,
            start: c.sizes[0],
            total: c.sizes[1],
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("select", |t, c| one(c.x(t, 0).select(c.axes[0], c.sizes[0]))),
    ("split", |t, c| c.x(t, 0).split(&c.indices, c.axes[0])),
    ("Split", |t, c| {
        let op = Split {
            axis: c.sizes[2],
            sizes: c.indices.clone(),
            squeeze: c.flags[0],
        };
        t.apply_multi(op, &[&c.x(t, 0)])
    }),
    ("unstack", |t, c| c.x(t, 0).unstack(c.axes[0])),
    ("chunk", |t, c| c.x(t, 0).chunk(c.sizes[0], c.axes[0])),
    ("index_select", |t, c| {
        one(c.x(t, 0).index_select(c.axes[0], &c.indices))
    }),
    ("IndexSelect", |t, c| {
        let op = IndexSelect {
            axis: c.sizes[2],
            indices: c.indices.clone(),
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("IndexAdd", |t, c| {
        let op = IndexAdd {
            axis: c.sizes[2] % 4,
            indices: c.indices.clone(),
            size: c.sizes[0],
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("concat", |t, c| {
        let xs: Vec<Var<f64>> = (0..c.sizes[0] % 4).map(|k| c.x(t, k)).collect();
        one(concat(&xs.iter().collect::<Vec<_>>(), c.axes[0]))
    }),
    ("Concat", |t, c| {
        let xs: Vec<Var<f64>> = (0..c.sizes[0] % 4).map(|k| c.x(t, k)).collect();
        one(t.apply(Concat(c.sizes[1]), &xs.iter().collect::<Vec<_>>()))
    }),
    ("stack", |t, c| {
        let same = c.x(t, 0);
        let xs: Vec<Var<f64>> = (0..c.sizes[0] % 4)
            .map(|k| if c.flags[k] { same.clone() } else { c.x(t, k) })
            .collect();
        one(stack(&xs.iter().collect::<Vec<_>>(), c.axes[0]))
    }),
    ("Stack", |t, c| {
        let x = c.x(t, 0);
        let xs = vec![&x; c.sizes[0] % 4];
        one(t.apply(Stack(c.sizes[1]), &xs))
    }),
    // Reductions and activations.
    ("sum", |t, c| one(c.x(t, 0).sum(c.axes[0], c.flags[0]))),
    ("Sum", |t, c| {
        let op = Sum {
            axis: c.sizes[0],
            keepdim: c.flags[0],
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("mean", |t, c| one(c.x(t, 0).mean(c.axes[0], c.flags[0]))),
    ("mean_all", |t, c| one(c.x(t, 0).mean_all())),
    ("max", |t, c| one(c.x(t, 0).max(c.axes[0], c.flags[0]))),
    ("Max", |t, c| {
        let op = Max {
            axis: c.sizes[0],
            keepdim: c.flags[0],
        };
        one(t.apply(op, &[&c.x(t, 0)]))
    }),
    ("logsumexp", |t, c| {
        one(c.x(t, 0).logsumexp(c.axes[0], c.flags[0]))
    }),
    ("softmax", |t, c| one(c.x(t, 0).softmax(c.axes[0]))),
    ("Softmax", |t, c| one(t.apply(Softmax(c.sizes[0]), &[&c.x(t, 0)]))),
    ("log_softmax", |t, c| one(c.x(t, 0).log_softmax(c.axes[0]))),
    ("LogSoftmax", |t, c| {
        one(t.apply(LogSoftmax(c.sizes[0]), &[&c.x(t, 0)]))
    }),
    ("resolve", |_, c| {
        let _ = axis::resolve("resolve", c.axes[0], &c.shapes[0]);
        Ok(vec![])
    }),
    // `activation::logsumexp` and `logaddexp` as free functions.
    ("logsumexp_fn", |t, c| {
        one(logsumexp(&c.x(t, 0), c.sizes[0], c.flags[0]))
    }),
    ("logaddexp_fn", |t, c| one(logaddexp(&c.x(t, 0), &c.x(t, 1)))),
    // Randomness.
    ("dropout", |t, c| {
        one(c.x(t, 0).dropout(c.p, c.flags[0], &mut Rng::seed(1)))
    }),
    ("dropout_fn", |t, c| {
        one(dropout(&c.x(t, 0), c.p, c.flags[0], &mut Rng::seed(1)))
    }),
    ("dropout_mask", |_, c| {
        let _ = dropout_mask::<f64>(&c.shapes[0], c.p, &mut Rng::seed(1));
        Ok(vec![])
    }),
    // Fused recurrent steps and sequences.
    ("LstmPointwise", |t, c| {
        let (_, b, _, h) = c.dims();
        let g = c.rel(t, 0, &[b, Case::times(h, 4)]);
        t.apply_multi(LstmPointwise, &[&g, &c.rel(t, 1, &[b, h])])
    }),
    ("pointwise", |t, c| {
        let (_, b, _, h) = c.dims();
        let g = c.rel(t, 0, &[b, Case::times(h, 2)]);
        pointwise(Blend, &[(&g, 2), (&c.rel(t, 1, &[h]), 1)]).map(|y| y.to_vec())
    }),
    ("PointwiseOp", |t, c| {
        let op = PointwiseOp::<_, 3, 2> {
            p: Blend,
            parts: vec![c.sizes[0], c.sizes[1]],
            save: c.flags[0],
        };
        t.apply_multi(op, &[&c.x(t, 0), &c.x(t, 1)])
    }),
    ("GruPointwise", |t, c| {
        let (_, b, _, h) = c.dims();
        let g = [b, Case::times(h, 3)];
        one(t.apply(
            GruPointwise,
            &[&c.rel(t, 0, &g), &c.rel(t, 1, &g), &c.rel(t, 2, &[b, h])],
        ))
    }),
    ("RnnSequence", |t, c| seq(t, c, 1, 1)),
    ("GruSequence", |t, c| seq(t, c, 3, 1)),
    ("LstmSequence", |t, c| seq(t, c, 4, 2)),
    ("SlstmSequence", |t, c| {
        // weight_hh [heads, 4·dh, dh]: I plays heads, H plays dh.
        let (tt, b, heads, dh) = c.dims();
        let h = Case::times(heads, dh);
        let mut xs = vec![
            c.rel(t, 0, &[tt, b, Case::times(h, 4)]),
            c.rel(t, 1, &[heads, Case::times(dh, 4), dh]),
        ];
        xs.extend((0..4).map(|k| c.rel(t, 2 + k, &[b, h])));
        let op = SlstmSequence {
            reverse: c.flags[1],
            keep_activations: c.flags[2],
        };
        t.apply_multi(op, &xs.iter().collect::<Vec<_>>())
    }),
    ("MlstmSequence", |t, c| {
        let (tt, b, _, h) = c.dims();
        // One head of size H, or H heads of size 1.
        let heads = if c.flags[3] { h } else { 1 };
        let d = h.checked_div(heads).unwrap_or(0);
        let xs = [
            c.rel(
                t,
                0,
                &[tt, b, Case::times(h, 4).saturating_add(Case::times(heads, 2))],
            ),
            c.rel(t, 1, &[b, Case::times(Case::times(d, d), heads)]),
            c.rel(t, 2, &[b, h]),
            c.rel(t, 3, &[b, heads]),
        ];
        let op = MlstmSequence {
            reverse: c.flags[1],
            keep_checkpoints: c.flags[2],
        };
        t.apply_multi(op, &xs.iter().collect::<Vec<_>>())
    }),
    ("Scan", |t, c| {
        let (tt, b, _, h) = c.dims();
        let op = Scan {
            form: if c.flags[0] {
                ScanForm::Log
            } else {
                ScanForm::Linear
            },
            reverse: c.flags[1],
        };
        let xs = [
            c.rel(t, 0, &[tt, b, h]),
            c.rel(t, 1, &[tt, b, h]),
            c.rel(t, 2, &[b, h]),
        ];
        one(t.apply(op, &xs.iter().collect::<Vec<_>>()))
    }),
    ("linear_scan", |t, c| scan_fn(t, c, false)),
    ("log_scan", |t, c| scan_fn(t, c, true)),
    ("GatedScan", |t, c| gated_fn(t, c, true)),
    ("gated_scan", |t, c| gated_fn(t, c, false)),
    ("gated_coefficients", |t, c| {
        let (a, b) = gated_coefficients(&c.x(t, 0))?;
        Ok(vec![a, b])
    }),
    ("length_mask", |_, c| {
        let (tt, b, _, _) = c.dims();
        let _ = length_mask("length_mask", &c.indices, tt, b);
        Ok(vec![])
    }),
];

/// A recurrent sequence op with `gates` gates and `states` states, on related (or not) shapes.
fn seq(t: &Tape<f64>, c: &Case, gates: usize, states: usize) -> Result<Vec<Var<f64>>> {
    let (tt, b, _, h) = c.dims();
    let gh = Case::times(h, gates);
    let bias = c.flags[0];
    let mut xs = vec![c.rel(t, 0, &[tt, b, gh]), c.rel(t, 1, &[gh, h])];
    for k in 0..states {
        xs.push(c.rel(t, 2 + k, &[b, h]));
    }
    if bias {
        xs.push(c.rel(t, 3, &[gh]));
    }
    let refs: Vec<&Var<f64>> = xs.iter().collect();
    let (reverse, keep) = (c.flags[1], c.flags[2]);
    match gates {
        1 => t.apply_multi(
            RnnSequence {
                activation: if c.flags[3] {
                    RnnActivation::Relu
                } else {
                    RnnActivation::Tanh
                },
                reverse,
                bias,
            },
            &refs,
        ),
        3 => t.apply_multi(
            GruSequence {
                reverse,
                bias,
                keep_activations: keep,
            },
            &refs,
        ),
        _ => t.apply_multi(
            LstmSequence {
                reverse,
                bias,
                keep_activations: keep,
            },
            &refs,
        ),
    }
}

fn scan_fn(t: &Tape<f64>, c: &Case, log: bool) -> Result<Vec<Var<f64>>> {
    let (tt, b, _, h) = c.dims();
    let (a, x, h0) = (
        c.rel(t, 0, &[tt, b, h]),
        c.rel(t, 1, &[tt, b, h]),
        c.rel(t, 2, &[b, h]),
    );
    let lengths = c.flags[2].then_some(&c.indices[..]);
    let f = if log { log_scan } else { linear_scan };
    one(f(&a, &x, &h0, c.flags[1], lengths))
}

/// The gated scan on a projection `[T, B, 2H]` and a first state `[B, H]` (or unrelated shapes),
/// through the op or the function.
fn gated_fn(t: &Tape<f64>, c: &Case, op: bool) -> Result<Vec<Var<f64>>> {
    let (tt, b, _, h) = c.dims();
    let (kc, h0) = (c.rel(t, 0, &[tt, b, Case::times(h, 2)]), c.rel(t, 1, &[b, h]));
    match op {
        true => one(t.apply(GatedScan { reverse: c.flags[1] }, &[&kc, &h0])),
        false => one(gated_scan(&kc, &h0, c.flags[1])),
    }
}

/// Runs `f`; a panic becomes its message.
fn no_panic(f: impl FnOnce()) -> std::result::Result<(), String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Runs `op` on `c`, then the backward pass of what it returned, and again on a no-grad tape
/// (the other path of the ops that have two).
fn run_op(run: Run, c: &Case) {
    let t = Tape::<f64>::new();
    if let Ok(outs) = run(&t, c) {
        for o in outs {
            if let Ok(s) = o.sum_all() {
                let _ = s.backward();
            }
        }
    }
    let _ = run(&Tape::no_grad(), c);
}

/// Random cases per run (each runs every op of the catalogue, forward and backward): about
/// 5 s in release on 2 cores, a bound CI can afford on every run. The seed is random (proptest's
/// default), so runs add up; a failure prints its case. 80 000 cases passed before this bound
/// was set.
const CASES: usize = 10_000;

/// Every op on [`CASES`] random cases. A failure lists every op that panicked, each with the
/// first case it panicked on (rather than stopping at the first), so that one run shows them
/// all.
#[test]
fn no_op_panics_on_any_shape() {
    let mut runner = TestRunner::default();
    let strategy = case();
    let mut failures: BTreeMap<&str, String> = BTreeMap::new();
    for _ in 0..CASES {
        let c = strategy.new_tree(&mut runner).expect("a case").current();
        for &(name, run) in CATALOGUE {
            if failures.contains_key(name) {
                continue;
            }
            if let Err(msg) = no_panic(|| run_op(run, &c)) {
                failures.insert(name, format!("{name} panicked: {msg}\n  on {c:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} ops panicked:\n{}",
        failures.len(),
        failures.into_values().collect::<Vec<_>>().join("\n")
    );
}

/// What the random run found, kept as fixed cases: an axis past `isize::MAX` (its `as isize`
/// was −1, the last axis, in the shape rule but `usize::MAX` in the kernel).
#[test]
fn softmax_axis_beyond_isize_is_an_axis_error() {
    let t = Tape::<f64>::new();
    let x = var(&t, &[3, 0]);
    for r in [
        t.apply(Softmax(usize::MAX), &[&x]),
        t.apply(LogSoftmax(usize::MAX), &[&x]),
    ] {
        assert!(
            matches!(r.as_ref().err(), Some(Error::Axis { .. })),
            "{:?}",
            r.err()
        );
    }
}

/// What the random run found: `logaddexp` of `[0, 2⁶², 1]` and `[3]` broadcasts to a shape
/// ndarray cannot make (2⁶² · 3 elements overflow `isize`), which its maximum (run outside the
/// tape's result check) took on trust.
#[test]
fn logaddexp_to_an_impossible_shape_is_a_shape_error() {
    let t = Tape::<f64>::new();
    let a = t.input(ArrayD::zeros(vec![0, 1 << 62, 1]));
    let b = var(&t, &[3]);
    for r in [a.logaddexp(&b), logaddexp(&a, &b)] {
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("logaddexp") && e.contains("too large"), "{e}");
    }
}

/// The names of the public ops the sources declare: the `VarExt` methods, the engine's `Var`
/// arithmetic, and the public structs and functions of the op modules (not the kernels).
fn declared_ops() -> Vec<String> {
    let src = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{src}/{p}")).expect(p);
    let mut names = Vec::new();
    let mut grab = |text: &str, prefix: &str| {
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix(prefix) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        }
    };
    // VarExt's methods (one `fn name(&self` per method in the trait and its impl).
    grab(&read("src/ext.rs"), "fn ");
    grab(&read("src/ext.rs"), "pub fn ");
    // The engine's arithmetic on Var (`pub fn add(&self, …)` and the like).
    let arith = read("../tape/src/arith.rs");
    let methods: String = arith
        .lines()
        .filter(|l| l.contains("pub fn") && l.contains("&self"))
        .collect::<Vec<_>>()
        .join("\n");
    grab(&methods, "pub fn ");
    for file in std::fs::read_dir(format!("{src}/src")).expect("src") {
        let path = file.expect("entry").path();
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            if path.ends_with("kernels") {
                continue;
            }
            std::fs::read_dir(&path)
                .expect("dir")
                .map(|e| e.expect("entry").path())
                .collect()
        } else {
            vec![path]
        };
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source");
            // Top-level items only (unindented): public op structs and functions.
            let top: String = text
                .lines()
                .filter(|l| !l.starts_with(' '))
                .collect::<Vec<_>>()
                .join("\n");
            grab(&top, "pub struct ");
            grab(&top, "pub fn ");
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Declared items that are not ops on shapes, with the reason.
const NOT_OPS: &[(&str, &str)] = &[
    ("sigmoid", "the scalar σ(x) (the op is VarExt::sigmoid)"),
    ("AutodiffDocs", "doc-test holder"),
    ("OpsDocs", "doc-test holder"),
    ("DesignDocs", "doc-test holder"),
    ("flat", "crate-private helper"),
    ("shaped", "crate-private helper"),
    (
        "pieces_fit",
        "crate-private helper (unstack's and chunk's memory probe)",
    ),
];

#[test]
fn catalogue_is_complete() {
    let listed: Vec<&str> = CATALOGUE.iter().map(|(n, _)| n.trim_end_matches("_fn")).collect();
    let missing: Vec<String> = declared_ops()
        .into_iter()
        .filter(|n| !listed.contains(&n.as_str()) && !NOT_OPS.iter().any(|(x, _)| x == n))
        .collect();
    assert!(
        missing.is_empty(),
        "public ops missing from CATALOGUE in tests/ops/no_panic_shapes.rs: {missing:?}"
    );
}
