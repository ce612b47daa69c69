//! Streaming inference: `Model::predict_chunked` and `Model::stream` give one-shot `predict`'s
//! outputs chunk by chunk (any chunk sizes, built-in, scan-routed and stacked layers, sequence
//! and last-step models); layers that cannot stream are clean errors.

use eddy_nn::sequential::{
    dense, dropout, gru, lstm, module, recurrent, simple_rnn, Model, Pass, SequenceLayer, Sequential,
};
use eddy_nn::{MinGruCell, Module};
use eddy_ops::prelude::*;
use ndarray::{ArrayD, Axis, Slice};

fn data(n: usize, t: usize, f: usize, seed: u64) -> ArrayD<f64> {
    let mut rng = Rng::seed(seed);
    ArrayD::from_shape_fn(vec![n, t, f], |_| rng.uniform_in(-1.0, 1.0))
}

fn models() -> Vec<(&'static str, Model<f64>)> {
    let mut rng = Rng::seed(3);
    let mut out = Vec::new();
    let mut add = |name, s: Sequential<f64>| out.push((name, s.build::<f64>(3, &mut rng).unwrap()));
    add(
        "lstm sequences",
        Sequential::new()
            .add(lstm(7).return_sequences(true))
            .add(dense(2)),
    );
    add(
        "stacked gru, dropout, lstm last step",
        Sequential::new()
            .add(gru(5).num_layers(2).return_sequences(true))
            .add(dropout(0.3))
            .add(lstm(4))
            .add(dense(1)),
    );
    add(
        "min_gru scan and elman",
        Sequential::new()
            .add(recurrent(|i, rng| MinGruCell::new(i, 6, true, rng)).return_sequences(true))
            .add(simple_rnn(4).return_sequences(true))
            .add(dense(3)),
    );
    out
}

/// The largest |a − b|.
fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn predict_chunked_equals_predict() {
    let x = data(5, 23, 3, 1);
    for (name, m) in models() {
        let whole = m.predict(&x).unwrap();
        for chunk in [1, 2, 5, 22, 23, 40] {
            let got = m.predict_chunked(&x, chunk).unwrap();
            let d = max_diff(&got, &whole);
            assert!(d <= 1e-12, "{name}, chunk {chunk}: {d}");
        }
        // One chunk is the same computation: bit for bit.
        assert_eq!(m.predict_chunked(&x, 23).unwrap(), whole, "{name}");
    }
}

#[test]
fn a_stream_of_ragged_pieces_equals_predict() {
    let x = data(4, 20, 3, 2);
    for (name, m) in models() {
        let whole = m.predict(&x).unwrap();
        let mut stream = m.stream();
        let mut outs = Vec::new();
        let mut start = 0;
        for len in [3, 1, 7, 2, 7] {
            let piece = x.slice_axis(Axis(1), Slice::from(start..start + len)).to_owned();
            outs.push(stream.push(&piece).unwrap());
            start += len;
        }
        assert_eq!(stream.steps(), 20);
        assert_eq!(stream.batch_size(), Some(4));
        let got = if m.returns_sequences() {
            let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
            ndarray::concatenate(Axis(1), &views).unwrap()
        } else {
            // Each push returns the output after the sequence so far.
            let prefix = m
                .predict(&x.slice_axis(Axis(1), Slice::from(0..11)).to_owned())
                .unwrap();
            assert!(max_diff(&outs[2], &prefix) <= 1e-12, "{name}");
            outs.pop().unwrap()
        };
        assert!(max_diff(&got, &whole) <= 1e-12, "{name}");

        // reset starts new sequences, of another batch size.
        stream.reset();
        assert_eq!(stream.steps(), 0);
        let two = x.slice_axis(Axis(0), Slice::from(1..3)).to_owned();
        let a = stream
            .push(&two.slice_axis(Axis(1), Slice::from(0..9)).to_owned())
            .unwrap();
        let b = stream
            .push(&two.slice_axis(Axis(1), Slice::from(9..20)).to_owned())
            .unwrap();
        let want = m.predict(&two).unwrap();
        let got = if m.returns_sequences() {
            ndarray::concatenate(Axis(1), &[a.view(), b.view()]).unwrap()
        } else {
            b
        };
        assert!(max_diff(&got, &want) <= 1e-12, "{name}");
    }
}

/// A module that mixes time steps (a mean over time): it cannot stream.
#[derive(Clone)]
struct MeanOverTime;

impl Module<f64> for MeanOverTime {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        Vec::new()
    }
}

impl SequenceLayer<f64> for MeanOverTime {
    fn forward(&self, x: &Var<f64>, _: &mut Pass<'_>) -> Result<Var<f64>> {
        x.mean(1, false)
    }
}

#[test]
fn layers_that_cannot_stream_and_bad_chunks_are_clean_errors() {
    let mut rng = Rng::seed(4);
    let x = data(2, 6, 3, 5);
    let bi = Sequential::new()
        .add(lstm(3).return_sequences(true).bidirectional(true))
        .add(dense(1))
        .build::<f64>(3, &mut rng)
        .unwrap();
    let e = bi.predict_chunked(&x, 2).unwrap_err().to_string();
    assert!(e.contains("layers.0") && e.contains("bidirectional"), "{e}");
    let e = bi.stream().push(&x).unwrap_err().to_string();
    assert!(e.contains("bidirectional"), "{e}");

    let mean = Sequential::new()
        .add(lstm(3).return_sequences(true))
        .add(module(|_, _| MeanOverTime))
        .build::<f64>(3, &mut rng)
        .unwrap();
    let e = mean.predict_chunked(&x, 2).unwrap_err().to_string();
    assert!(e.contains("layers.1") && e.contains("forward_carry"), "{e}");

    let m = &models()[0].1;
    let e = m.predict_chunked(&x, 0).unwrap_err().to_string();
    assert!(e.contains("chunk must be at least 1"), "{e}");
    let mut s = m.stream();
    let e = s.push(&data(2, 4, 2, 6)).unwrap_err().to_string();
    assert!(e.contains("F = 3"), "{e}");
    let e = s.push(&data(2, 0, 3, 6)).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    s.push(&data(2, 4, 3, 6)).unwrap();
    let e = s.push(&data(3, 4, 3, 6)).unwrap_err().to_string();
    assert!(e.contains("B = 2"), "{e}");
    // A failed push leaves the stream as it was.
    assert_eq!(s.steps(), 4);
}
