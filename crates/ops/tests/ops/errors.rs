//! Every error a user can reach: its variant, and for most its exact message, which names the
//! op and the shapes. None of these may panic.

use eddy_ops::matmul::MatMul;
use eddy_ops::prelude::*;
use eddy_ops::reduce::Sum;
use eddy_ops::shape::{Narrow, Pad, Reshape};
use eddy_tape::ResultExt;
use ndarray::{arr1, ArrayD};

fn zeros(tape: &Tape<f64>, shape: &[usize]) -> Var<f64> {
    tape.input(ArrayD::zeros(shape))
}

/// The message of an error that must occur.
fn msg(r: Result<Var<f64>>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn matmul_inner_dimensions_differ() {
    let t = Tape::new();
    let (a, b) = (zeros(&t, &[2, 3]), zeros(&t, &[4, 5]));
    assert_eq!(
        msg(a.matmul(&b)),
        "matmul: inner dimensions differ: [2, 3] · [4, 5]"
    );
    // With a transpose flag the shapes are still reported as given.
    assert_eq!(
        msg(a.matmul_t(&b)),
        "matmul: inner dimensions differ: [2, 3] · [4, 5]"
    );
    let c = zeros(&t, &[2, 3, 5]);
    assert_eq!(
        msg(c.matmul(&b)),
        "matmul: inner dimensions differ: [2, 3, 5] · [4, 5]"
    );
}

#[test]
fn matmul_ranks_and_batches() {
    let t = Tape::new();
    let (v, m) = (zeros(&t, &[3]), zeros(&t, &[3, 2]));
    assert_eq!(
        msg(v.matmul(&m)),
        "matmul: operands must be 2-D or 3-D (shapes [[3], [3, 2]])"
    );
    let (a, b) = (zeros(&t, &[2, 3, 4]), zeros(&t, &[5, 4, 2]));
    assert_eq!(
        msg(a.matmul(&b)),
        "matmul: batch sizes differ (shapes [[2, 3, 4], [5, 4, 2]])"
    );
    let x = zeros(&t, &[2, 3]);
    let w = zeros(&t, &[4, 5]);
    assert!(matches!(x.linear(&w, None), Err(Error::MatmulInner { .. })));
}

#[test]
fn shapes_that_cannot_broadcast() {
    let t = Tape::new();
    let (a, b) = (zeros(&t, &[2, 3]), zeros(&t, &[4]));
    assert_eq!(
        msg(&a * &b),
        "mul: shapes [2, 3] and [4] cannot be broadcast together"
    );
    assert_eq!(
        msg(&a - &b),
        "sub: shapes [2, 3] and [4] cannot be broadcast together"
    );
    assert_eq!(
        msg(a.div(&b)),
        "div: shapes [2, 3] and [4] cannot be broadcast together"
    );
    assert!(matches!(a.broadcast_to(&[3, 3]), Err(Error::Shape { .. })));
    assert!(matches!(a.sum_to(&[4]), Err(Error::Shape { .. })));
    let mask = ArrayD::from_elem(vec![5], true);
    assert_eq!(
        msg(where_(&mask, &a, &a)),
        "where: mask and values cannot be broadcast together (shapes [[5], [2, 3], [2, 3]])"
    );
}

#[test]
fn axis_out_of_range_positive_and_negative() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 3]);
    assert_eq!(
        msg(x.sum(2, false)),
        "sum: axis 2 is out of range for shape [2, 3]"
    );
    assert_eq!(
        msg(x.softmax(-3)),
        "softmax: axis -3 is out of range for shape [2, 3]"
    );
    for r in [
        x.mean(5, true),
        x.max(-4, false),
        x.log_softmax(2),
        x.logsumexp(-3, false),
        x.transpose(0, 2),
        x.unsqueeze(4),
        x.unsqueeze(-4),
        x.narrow(2, 0, 1),
        x.select(-3, 0),
        x.index_select(3, &[0]),
        concat(&[&x, &x], 2),
        stack(&[&x, &x], 3),
    ] {
        assert!(matches!(r.as_ref().unwrap_err(), Error::Axis { .. }), "{r:?}");
    }
    assert!(matches!(x.split(&[1, 1], -3), Err(Error::Axis { .. })));
    assert!(matches!(x.chunk(1, 2), Err(Error::Axis { .. })));
    assert_eq!(
        msg(stack(&[&x, &x], 3)),
        "stack: axis 3 is out of range for shape [2, 3]"
    );
    assert_eq!(
        msg(stack(&[&x, &x], -4)),
        "stack: axis -4 is out of range for shape [2, 3]"
    );
    assert_eq!(stack(&[&x, &x], -1).unwrap().shape(), &[2, 3, 2]);
    let s = t.scalar(1.0);
    assert_eq!(msg(s.sum(0, false)), "sum: axis 0 is out of range for shape []");
    // The same check in an op struct applied directly (axes there are already resolved).
    assert_eq!(
        msg(t.apply(
            Sum {
                axis: 7,
                keepdim: false
            },
            &[&x]
        )),
        "sum: axis 7 is out of range for shape [2, 3]"
    );
}

#[test]
fn backward_of_a_non_scalar() {
    let t = Tape::<f64>::new();
    let x = zeros(&t, &[2]);
    let y = x.exp().unwrap();
    let e = y.backward().unwrap_err();
    assert_eq!(
        e.to_string(),
        "backward: expected a scalar (one element), got shape [2]"
    );
    assert!(matches!(
        t.grad(&[&y], None, &[&x], GradOptions::default()),
        Err(Error::NotScalar { .. })
    ));
    assert_eq!(
        y.item().unwrap_err().to_string(),
        "item: expected a scalar (one element), got shape [2]"
    );
    // A one-element value of any rank is a scalar.
    assert!(zeros(&t, &[1, 1]).exp().unwrap().backward().is_ok());
}

#[test]
fn grad_outputs_must_match_the_outputs() {
    let t = Tape::<f64>::new();
    let x = zeros(&t, &[2]);
    let y = x.exp().unwrap();
    let w = zeros(&t, &[3]);
    let e = t
        .grad(&[&y], Some(&[&w]), &[&x], GradOptions::default())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "grad: a grad_output must have its output's shape (shapes [[2], [3]])"
    );
    let e = t
        .grad(&[&y, &y], Some(&[&x]), &[&x], GradOptions::default())
        .unwrap_err();
    assert_eq!(e.to_string(), "grad: 2 outputs but 1 grad_outputs");
    let e = t.jvp(&y, &[&x], &[], false).unwrap_err();
    assert_eq!(e.to_string(), "jvp: 1 inputs but 0 tangents");
    let e = t.jvp(&y, &[&x], &[&w], false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "jvp: a tangent must have its input's shape (shapes [[2], [3]])"
    );
}

#[test]
fn mixing_vars_of_two_tapes() {
    let (t1, t2) = (Tape::<f64>::new(), Tape::<f64>::new());
    let (a, b) = (zeros(&t1, &[2, 2]), zeros(&t2, &[2, 2]));
    assert_eq!(msg(&a + &b), "add: inputs belong to different tapes");
    assert_eq!(msg(a.matmul(&b)), "matmul: inputs belong to different tapes");
    assert_eq!(
        msg(concat(&[&a, &b], 0)),
        "concat: inputs belong to different tapes"
    );
    let mask = ArrayD::from_elem(vec![2, 2], false);
    assert_eq!(
        msg(where_(&mask, &a, &b)),
        "where: inputs belong to different tapes"
    );
    let y = a.sum_all().unwrap();
    let e = t1.grad(&[&y], None, &[&b], GradOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "grad: inputs belong to different tapes");
    assert!(matches!(
        t1.jvp(&y, &[&a], &[&b], false),
        Err(Error::TapeMismatch { .. })
    ));
}

#[test]
fn reshape_with_a_wrong_count() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 3]);
    assert_eq!(
        msg(x.reshape(&[4])),
        "reshape: element counts differ (shapes [[2, 3], [4]])"
    );
    // A target whose count overflows must not wrap around to 6.
    let huge = [usize::MAX / 2 + 1, 2, 3];
    assert!(matches!(x.reshape(&huge), Err(Error::Shape { .. })));
    assert!(matches!(
        t.apply(Reshape(vec![usize::MAX, usize::MAX]), &[&x]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn permute_with_a_bad_permutation() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 3]);
    assert_eq!(
        msg(x.permute(&[0, 0])),
        "permute: [0, 0] is not a permutation of the axes (shapes [[2, 3]])"
    );
    assert!(x.permute(&[0]).is_err());
    assert!(x.permute(&[0, 2]).is_err());
}

#[test]
fn narrow_select_split_and_chunk_out_of_range() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 3]);
    assert_eq!(
        msg(x.narrow(1, 2, 2)),
        "narrow: slice 2..4 is out of range for axis 1 of size 3 (shapes [[2, 3]])"
    );
    assert!(matches!(x.select(0, 2), Err(Error::Shape { .. })));
    // Near usize::MAX the end must not wrap around into range.
    assert!(matches!(x.narrow(1, usize::MAX, 1), Err(Error::Shape { .. })));
    assert!(matches!(x.select(1, usize::MAX), Err(Error::Shape { .. })));
    let narrow = Narrow {
        axis: 0,
        start: usize::MAX,
        len: 2,
    };
    assert!(t.apply(narrow, &[&x]).is_err());
    let pad = Pad {
        axis: 0,
        start: usize::MAX,
        total: 4,
    };
    assert!(t.apply(pad, &[&x]).is_err());
    assert_eq!(
        x.split(&[1, 1], 1).unwrap_err().to_string(),
        "split: sizes [1, 1] do not split axis 1 of size 3 (shapes [[2, 3]])"
    );
    assert_eq!(
        x.chunk(2, 1).unwrap_err().to_string(),
        "chunk: axis 1 of size 3 does not split into 2 equal pieces (shapes [[2, 3]])"
    );
    assert!(x.chunk(0, 1).is_err());
    assert_eq!(
        msg(x.unstack(2).map(|v| v[0].clone())),
        "unstack: axis 2 is out of range for shape [2, 3]"
    );
    assert_eq!(x.unstack(-1).unwrap().len(), 3);
    let e = x.split(&[usize::MAX, 4], 1).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn index_select_out_of_range() {
    let t = Tape::new();
    let x = zeros(&t, &[3, 2]);
    assert_eq!(
        msg(x.index_select(0, &[0, 5, 1])),
        "index_select: index 5 is out of range for axis 0 of shape [3, 2]"
    );
    assert!(matches!(x.index_select(-1, &[2]), Err(Error::Invalid { .. })));
    // No indices is a valid, empty selection.
    assert_eq!(x.index_select(0, &[]).unwrap().shape(), &[0, 2]);
}

#[test]
fn dropout_probability_out_of_range() {
    let t = Tape::<f64>::new();
    let x = zeros(&t, &[4]);
    let mut rng = Rng::seed(0);
    assert_eq!(
        msg(x.dropout(1.0, true, &mut rng)),
        "dropout: p must be in [0, 1), got 1"
    );
    assert_eq!(
        msg(x.dropout(-0.1, false, &mut rng)),
        "dropout: p must be in [0, 1), got -0.1"
    );
    assert!(x.dropout(f64::NAN, true, &mut rng).is_err());
    assert!(eddy_ops::dropout_mask::<f64>(&[2], 1.5, &mut rng).is_err());
}

#[test]
fn concat_and_stack_of_mismatched_shapes() {
    let t = Tape::new();
    let (a, b) = (zeros(&t, &[2, 3]), zeros(&t, &[2, 4]));
    assert_eq!(
        msg(concat(&[&a, &b], 0)),
        "concat: all dimensions but axis 0 must agree (shapes [[2, 3], [2, 4]])"
    );
    assert!(concat(&[&a, &b], 1).is_ok());
    let c = zeros(&t, &[2, 3, 1]);
    assert!(matches!(concat(&[&a, &c], 0), Err(Error::Shape { .. })));
    assert_eq!(msg(concat::<f64>(&[], 0)), "concat: needs at least one input");
    assert_eq!(
        msg(stack(&[&a, &b], 0)),
        "stack: all inputs must have one shape (shapes [[2, 3], [2, 4]])"
    );
    assert_eq!(msg(stack::<f64>(&[], 0)), "stack: needs at least one input");
}

#[test]
fn max_of_an_empty_axis() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 0]);
    assert_eq!(
        msg(x.max(1, false)),
        "max: cannot take the max of an empty axis (shapes [[2, 0]])"
    );
}

#[test]
fn public_op_structs_applied_to_the_wrong_number_of_inputs() {
    let t = Tape::new();
    let x = zeros(&t, &[2, 2]);
    let e = t.apply(MatMul { ta: false, tb: false }, &[&x]).unwrap_err();
    assert_eq!(e.to_string(), "matmul: expected 2 inputs, got 1");
    assert!(matches!(
        t.apply(
            Sum {
                axis: 0,
                keepdim: false
            },
            &[]
        ),
        Err(Error::Arity { .. })
    ));
    assert!(matches!(
        t.apply(Reshape(vec![4]), &[&x, &x]),
        Err(Error::Arity { .. })
    ));
    let split = eddy_ops::shape::Split {
        axis: 0,
        sizes: vec![1, 1],
        squeeze: false,
    };
    assert_eq!(
        t.apply_multi(split, &[&x, &x]).unwrap_err().to_string(),
        "split: expected 1 inputs, got 2"
    );
    assert!(matches!(
        t.apply_multi(eddy_ops::LstmPointwise, &[&x]),
        Err(Error::Arity { .. })
    ));
    assert!(matches!(
        t.apply(eddy_ops::GruPointwise, &[&x, &x]),
        Err(Error::Arity { .. })
    ));
    assert!(matches!(
        t.apply(
            eddy_ops::fused::Linear {
                bias: true,
                add: false
            },
            &[&x, &x]
        ),
        Err(Error::Arity { .. })
    ));
    let unary = eddy_ops::elementwise::Unary(eddy_ops::elementwise::Tanh);
    assert_eq!(
        t.apply(unary, &[]).unwrap_err().to_string(),
        "tanh: expected 1 inputs, got 0"
    );
}

#[test]
fn context_wraps_an_error_with_where_it_arose() {
    let t = Tape::<f32>::new();
    let (x, w) = (
        t.input(ArrayD::zeros(vec![32, 10])),
        t.input(ArrayD::zeros(vec![12, 64])),
    );
    let e = x.matmul(&w).context(|| "lstm step 17").unwrap_err();
    assert_eq!(
        e.to_string(),
        "lstm step 17: matmul: inner dimensions differ: [32, 10] · [12, 64]"
    );
    assert!(matches!(e.root(), Error::MatmulInner { .. }));
    let e = e.context("layer 2");
    assert_eq!(
        e.to_string(),
        "layer 2: lstm step 17: matmul: inner dimensions differ: [32, 10] · [12, 64]"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert!(matches!(e.root(), Error::MatmulInner { .. }));
}

/// A user op with bugs the tape catches at their source.
struct Buggy {
    forward_shape: Vec<usize>,
    grads: usize,
    grad_shape: Vec<usize>,
}

impl Op<f64> for Buggy {
    fn name(&self) -> &str {
        "buggy"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(inputs[0].to_vec())
    }
    fn forward(&self, _: &[&ArrayD<f64>]) -> Result<ArrayD<f64>> {
        Ok(ArrayD::zeros(self.forward_shape.clone()))
    }
    fn backward(&self, _: &[Var<f64>], o: &Var<f64>, _: &Var<f64>) -> Result<Vec<Option<Var<f64>>>> {
        let g = o.tape().constant(ArrayD::zeros(self.grad_shape.clone()));
        Ok(vec![Some(g); self.grads])
    }
}

#[test]
fn a_user_op_that_breaks_its_contract() {
    let t = Tape::new();
    let x = t.input(arr1(&[1.0, 2.0]).into_dyn());
    let op = |f: &[usize], n, g: &[usize]| Buggy {
        forward_shape: f.to_vec(),
        grads: n,
        grad_shape: g.to_vec(),
    };
    assert_eq!(
        msg(t.apply(op(&[3], 1, &[2]), &[&x])),
        "buggy: forward returned shape [3] but the shape rule gave [2]"
    );
    let y = t.apply(op(&[2], 2, &[2]), &[&x]).unwrap().sum_all().unwrap();
    assert_eq!(
        y.backward().unwrap_err().to_string(),
        "buggy: backward rule returned 2 gradients for 1 inputs"
    );
    let y = t.apply(op(&[2], 1, &[5]), &[&x]).unwrap().sum_all().unwrap();
    assert_eq!(
        y.backward().unwrap_err().to_string(),
        "buggy: backward rule returned a gradient of shape [5] for input 0 of shape [2]"
    );
}

#[test]
fn errors_are_values_that_compare_and_clone() {
    let t = Tape::<f64>::new();
    let e = zeros(&t, &[2]).sum(1, false).unwrap_err();
    assert_eq!(
        e.clone(),
        Error::Axis {
            op: "sum".into(),
            axis: 1,
            shape: vec![2]
        }
    );
}
