//! `SlstmSequence`, the sLSTM recurrence over a whole sequence: gradcheck (its fast backward)
//! and gradgradcheck (its recorded rule) in both directions, one head and several, one batch
//! row and several, from non-zero initial states; equality, values and gradients (first order
//! and under `create_graph`), with the loop of per-step ops it replaces; and its shape errors.

use crate::common::{assert_close, assert_same_as_reference, bend, values_and_grads};
use eddy_ops::prelude::*;
use eddy_ops::{matmul_t, SlstmSequence};
use eddy_tape::{gradcheck, gradgradcheck, GradcheckOptions};
use ndarray::ArrayD;

/// `(T, B, heads, dh, reverse)`: batches above 4 rows take the GEMM path of the recurrent
/// product, below it the row kernels.
const CASES: [(usize, usize, usize, usize, bool); 5] = [
    (3, 1, 1, 2, false),
    (3, 2, 2, 1, true),
    (2, 5, 2, 2, false),
    (4, 6, 1, 3, true),
    (1, 3, 3, 1, false),
];

/// `[xp, weight_hh, h0, c0, n0, m0]` at random, with a positive normaliser `n0`.
fn inputs((t, b, heads, dh): (usize, usize, usize, usize), seed: u64) -> Vec<ArrayD<f64>> {
    let mut rng = Rng::seed(seed);
    let h = heads * dh;
    let mut arr = |shape: &[usize], lo: f64, hi: f64| {
        ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.uniform_in(lo, hi))
    };
    vec![
        arr(&[t, b, 4 * h], -1.5, 1.5),
        arr(&[heads, 4 * dh, dh], -1.0, 1.0),
        arr(&[b, h], -1.0, 1.0),
        arr(&[b, h], -1.0, 1.0),
        arr(&[b, h], 0.5, 1.5),
        arr(&[b, h], -1.0, 1.0),
    ]
}

/// The op's four state sequences `h, c, n, m`.
fn slstm(v: &[Var<f64>], reverse: bool) -> Result<Vec<Var<f64>>> {
    let op = SlstmSequence {
        reverse,
        keep_activations: v[0].tape().is_recording(),
    };
    let out = v[0].tape().apply_multi(op, &v.iter().collect::<Vec<_>>())?;
    Ok(out[..4].to_vec())
}

/// The same recurrence as a loop of per-step ops (the equations of `SlstmCell::step`, with the
/// block-diagonal product as a batched matmul per head).
fn looped(v: &[Var<f64>], reverse: bool) -> Result<Vec<Var<f64>>> {
    let (xp, w) = (&v[0], &v[1]);
    let (steps, batch) = (xp.shape()[0], xp.shape()[1]);
    let (heads, dh) = (w.shape()[0], w.shape()[2]);
    let h_size = heads * dh;
    let xs = xp.unstack(0)?;
    let mut state: Vec<Var<f64>> = v[2..6].to_vec();
    let mut all: Vec<Vec<Option<Var<f64>>>> = vec![vec![None; steps]; 4];
    let order: Vec<usize> = match reverse {
        false => (0..steps).collect(),
        true => (0..steps).rev().collect(),
    };
    for t in order {
        let [h, c, n, m]: [&Var<f64>; 4] = [&state[0], &state[1], &state[2], &state[3]];
        let per_head = h.reshape(&[batch, heads, dh])?.transpose(0, 1)?;
        let r = matmul_t(&per_head, w, false, true)?
            .reshape(&[heads, batch, 4, dh])?
            .permute(&[1, 2, 0, 3])?
            .reshape(&[batch, 4 * h_size])?;
        let pre = (&xs[t] + &r)?;
        let [i, f, z, o]: [Var<f64>; 4] = pre.chunk(4, 1)?.try_into().expect("four chunks");
        let a = (f.log_sigmoid()? + m)?;
        let m_new = a.maximum(&i)?;
        let ig = (i - &m_new)?.exp()?;
        let fg = (a - &m_new)?.exp()?;
        let c_new = ((&fg * c)? + (&ig * z.tanh()?)?)?;
        let n_new = ((fg * n)? + ig)?;
        let h_new = (o.sigmoid()? * (&c_new / &n_new)?)?;
        state = vec![h_new, c_new, n_new, m_new];
        for k in 0..4 {
            all[k][t] = Some(state[k].clone());
        }
    }
    all.into_iter()
        .map(|s| {
            let s: Vec<Var<f64>> = s.into_iter().map(Option::unwrap).collect();
            stack(&s.iter().collect::<Vec<_>>(), 0)
        })
        .collect()
}

/// Every state sequence, bent, side by side.
fn joined(parts: Vec<Var<f64>>) -> Result<Var<f64>> {
    let bent = parts.iter().map(bend).collect::<Result<Vec<_>>>()?;
    concat(&bent.iter().collect::<Vec<_>>(), 2)
}

#[test]
fn slstm_sequence_gradcheck_and_gradgradcheck() -> Result<()> {
    for (k, (t, b, heads, dh, reverse)) in CASES.into_iter().enumerate() {
        let x = inputs((t, b, heads, dh), 30 + k as u64);
        let f = |_: &Tape<f64>, v: &[Var<f64>]| joined(slstm(v, reverse)?);
        let o = GradcheckOptions::default();
        gradcheck(f, &x, &o).map_err(|e| e.context(format!("first order, case {k}")))?;
        gradgradcheck(f, &x, &o).map_err(|e| e.context(format!("second order, case {k}")))?;
    }
    Ok(())
}

#[test]
fn slstm_sequence_equals_the_loop_of_steps() -> Result<()> {
    for (k, (t, b, heads, dh, reverse)) in CASES.into_iter().enumerate() {
        let x = inputs((t, b, heads, dh), 40 + k as u64);
        let op = |v: &[Var<f64>]| joined(slstm(v, reverse)?);
        let reference = |v: &[Var<f64>]| joined(looped(v, reverse)?);
        assert_same_as_reference(&x, op, reference, Var::sum_all, &format!("case {k}"))?;
    }
    Ok(())
}

#[test]
fn slstm_sequence_names_itself_and_the_shapes_on_a_mismatch() {
    let tape = Tape::<f32>::new();
    let z = |s: &[usize]| tape.input(ArrayD::zeros(s.to_vec()));
    let op = || SlstmSequence {
        reverse: false,
        keep_activations: true,
    };
    let (xp, h) = (z(&[3, 2, 8]), z(&[2, 2]));
    // weight_hh [heads, 4·dh, dh] = [2, 4, 1]: H = 2, 4H = 8 fits; [2, 8, 1] does not.
    assert!(tape
        .apply_multi(op(), &[&xp, &z(&[2, 4, 1]), &h, &h, &h, &h])
        .is_ok());
    for bad in [
        vec![
            z(&[3, 2, 8]),
            z(&[2, 8, 1]),
            h.clone(),
            h.clone(),
            h.clone(),
            h.clone(),
        ],
        vec![
            z(&[3, 2, 8]),
            z(&[8, 2]),
            h.clone(),
            h.clone(),
            h.clone(),
            h.clone(),
        ],
        vec![
            z(&[3, 2, 8]),
            z(&[2, 4, 1]),
            h.clone(),
            h.clone(),
            h.clone(),
            z(&[2, 3]),
        ],
        vec![
            z(&[0, 2, 8]),
            z(&[2, 4, 1]),
            h.clone(),
            h.clone(),
            h.clone(),
            h.clone(),
        ],
        vec![
            z(&[3, 2, 0]),
            z(&[0, 4, 0]),
            z(&[2, 0]),
            z(&[2, 0]),
            z(&[2, 0]),
            z(&[2, 0]),
        ],
    ] {
        let err = tape
            .apply_multi(op(), &bad.iter().collect::<Vec<_>>())
            .unwrap_err();
        let msg = err.to_string();
        let xp_shape = format!("{:?}", bad[0].shape());
        assert!(matches!(err, Error::Shape { .. }), "{msg}");
        assert!(msg.contains("slstm_sequence") && msg.contains(&xp_shape), "{msg}");
    }
    let err = tape.apply_multi(op(), &[&xp, &z(&[2, 4, 1]), &h]).unwrap_err();
    assert!(err.to_string().contains("slstm_sequence"), "{err}");
}

#[test]
fn inference_without_a_tape_keeps_no_activations() -> Result<()> {
    let tape = Tape::<f32>::no_grad();
    let c = |s: &[usize]| tape.constant(ArrayD::from_elem(s.to_vec(), 0.1f32));
    let (xp, w, h) = (c(&[5, 6, 16]), c(&[2, 8, 2]), c(&[6, 4]));
    let op = SlstmSequence {
        reverse: true,
        keep_activations: false,
    };
    let out = tape.apply_multi(op, &[&xp, &w, &h, &h, &h, &h])?;
    assert_eq!(out[0].shape(), &[5, 6, 4]);
    assert_eq!(out[4].shape(), &[0]);
    assert!(out[0].value().iter().all(|v| v.is_finite()));
    Ok(())
}

/// In f32 at batch > 4 the per-head products go through the packed kernel (where the CPU has
/// it) and the row kernel through the fast `exp` and `logsigmoid`: values and gradients agree
/// with the loop of per-step ops to f32 rounding.
#[test]
fn f32_slstm_sequence_agrees_with_the_loop_of_steps() -> Result<()> {
    let x64 = inputs((5, 9, 2, 8), 50);
    let x: Vec<ArrayD<f32>> = x64.iter().map(|a| a.mapv(|v| v as f32)).collect();
    let all = |v: &[Var<f32>], fused: bool| -> Result<Var<f32>> {
        let tape = v[0].tape();
        let parts = if fused {
            let op = SlstmSequence {
                reverse: false,
                keep_activations: true,
            };
            tape.apply_multi(op, &v.iter().collect::<Vec<_>>())?[..4].to_vec()
        } else {
            looped32(v)?
        };
        concat(&parts.iter().collect::<Vec<_>>(), 2)
    };
    let run = |fused: bool| {
        let loss = |all: &Var<f32>| bend(all)?.sum_all();
        values_and_grads(&x, |v| all(v, fused), loss, GradOptions::default())
    };
    assert_close(&run(true)?, &run(false)?, 1e-4, "f32 sLSTM sequence");
    Ok(())
}

/// [`looped`] in f32, forwards.
fn looped32(v: &[Var<f32>]) -> Result<Vec<Var<f32>>> {
    let (xp, w) = (&v[0], &v[1]);
    let batch = xp.shape()[1];
    let (heads, dh) = (w.shape()[0], w.shape()[2]);
    let mut state: Vec<Var<f32>> = v[2..6].to_vec();
    let mut all: Vec<Vec<Var<f32>>> = vec![Vec::new(); 4];
    for x in xp.unstack(0)? {
        let per_head = state[0].reshape(&[batch, heads, dh])?.transpose(0, 1)?;
        let r = matmul_t(&per_head, w, false, true)?
            .reshape(&[heads, batch, 4, dh])?
            .permute(&[1, 2, 0, 3])?
            .reshape(&[batch, 4 * heads * dh])?;
        let [i, f, z, o]: [Var<f32>; 4] = (&x + &r)?.chunk(4, 1)?.try_into().expect("four chunks");
        let a = (f.log_sigmoid()? + &state[3])?;
        let m = a.maximum(&i)?;
        let (ig, fg) = ((i - &m)?.exp()?, (a - &m)?.exp()?);
        let c = ((&fg * &state[1])? + (&ig * z.tanh()?)?)?;
        let n = ((fg * &state[2])? + ig)?;
        let h = (o.sigmoid()? * (&c / &n)?)?;
        state = vec![h, c, n, m];
        for k in 0..4 {
            all[k].push(state[k].clone());
        }
    }
    all.iter()
        .map(|s| stack(&s.iter().collect::<Vec<_>>(), 0))
        .collect()
}
