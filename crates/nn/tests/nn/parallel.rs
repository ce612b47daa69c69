//! Data parallelism: the sum of the shards' gradients is the full batch's gradient, and a run
//! with a given number of shards is bit-reproducible whatever the threads.

use eddy_nn::loss::{mse, Reduction};
use eddy_nn::parallel::data_parallel;
use eddy_nn::{Linear, Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::{s, Array3, ArrayD};

fn setup() -> (eddy_nn::Lstm<f64>, Linear<f64>, Array3<f64>, Array3<f64>) {
    let mut rng = Rng::seed(3);
    let lstm = RecurrentConfig::new(2, 5).num_layers(2).lstm::<f64>(&mut rng);
    let head = Linear::new(5, 1, &mut rng);
    let x = Array3::from_shape_fn((6, 7, 2), |(t, b, f)| ((t * 7 + b * 3 + f) as f64 * 0.3).sin());
    let y = Array3::from_shape_fn((6, 7, 1), |(t, b, _)| ((t + b) as f64 * 0.2).cos());
    (lstm, head, x, y)
}

fn loss_and_grads(
    lstm: &eddy_nn::Lstm<f64>,
    head: &Linear<f64>,
    x: ArrayD<f64>,
    y: ArrayD<f64>,
    weight: f64,
) -> Result<(f64, Grads<f64>)> {
    let tape = Tape::new();
    let out = lstm.forward(&tape.constant(x))?;
    let pred = head.forward(&out.output)?;
    let loss = mse(&pred, &tape.constant(y), Reduction::Mean, None)?.scale(weight)?;
    Ok((loss.item()?, loss.backward()?))
}

#[test]
fn shard_gradients_sum_to_the_full_batch_gradient() -> Result<()> {
    let (lstm, head, x, y) = setup();
    let (full_loss, full) = loss_and_grads(&lstm, &head, x.clone().into_dyn(), y.clone().into_dyn(), 1.0)?;
    for shards in [2, 3, 7] {
        let (loss, grads) = data_parallel(7, shards, |rows, w| {
            let xs = x.slice(s![.., rows.clone(), ..]).to_owned().into_dyn();
            let ys = y.slice(s![.., rows, ..]).to_owned().into_dyn();
            loss_and_grads(&lstm, &head, xs, ys, w)
        })?;
        assert!(
            (loss - full_loss).abs() < 1e-12,
            "{shards} shards: {loss} vs {full_loss}"
        );
        for (name, p) in lstm.params().into_iter().chain(head.params()) {
            let (a, b) = (grads.param(&p).unwrap(), full.param(&p).unwrap());
            let err = (a - b).iter().fold(0.0f64, |e, v| e.max(v.abs()));
            assert!(err < 1e-12, "{shards} shards, {name}: {err}");
        }
    }
    Ok(())
}

#[test]
fn a_sharded_run_is_bit_reproducible_across_thread_counts() -> Result<()> {
    let (lstm, head, x, y) = setup();
    let run = |threads: usize| -> Result<Grads<f64>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            data_parallel(7, 3, |rows, w| {
                let xs = x.slice(s![.., rows.clone(), ..]).to_owned().into_dyn();
                let ys = y.slice(s![.., rows, ..]).to_owned().into_dyn();
                loss_and_grads(&lstm, &head, xs, ys, w)
            })
        })
        .map(|(_, g)| g)
    };
    let (one, two) = (run(1)?, run(2)?);
    for (_, p) in lstm.params() {
        assert_eq!(one.param(&p), two.param(&p));
    }
    Ok(())
}

#[test]
fn an_empty_batch_is_an_error() {
    let r = data_parallel::<f64, _>(0, 2, |_, _| unreachable!());
    assert!(r.unwrap_err().to_string().contains("empty"));
}
