//! A small check of the dispatched kernels, cheap enough to run under an emulator: products
//! through every GEMM path, the three built-in layers in f32 against f64, and a training step.
//!
//! CI runs this binary under `qemu-x86_64 -cpu max` (an x86-64 CPU with AVX2 and no AVX-512)
//! with `EDDY_EXPECT_LEVEL=avx2`: it must choose the AVX2 level and pass, which shows that no
//! AVX-512 instruction runs outside the dispatched kernels. Natively it checks whatever level
//! `EDDY_KERNELS` chose.

use eddy::ops::kernels::{self, gemm::gemm};
use eddy::prelude::*;
use ndarray::{Array2, ArrayD};

fn matrix(r: usize, c: usize, seed: f64) -> Array2<f64> {
    Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
}

#[test]
fn the_expected_level_is_chosen() {
    let level = kernels::level();
    println!("kernel level {level}, detected {}", kernels::detected());
    if let Ok(want) = std::env::var("EDDY_EXPECT_LEVEL") {
        assert_eq!(
            level.name(),
            want,
            "the CPU reports up to {}",
            kernels::detected()
        );
    }
}

#[test]
fn products_on_every_path_match_f64() {
    // Row kernels (1 row, 1 column), the packed kernel (≥ 128 rows), matrixmultiply (large b).
    for (m, k, n) in [
        (1, 40, 33),
        (3, 17, 64),
        (200, 33, 1),
        (160, 48, 40),
        (130, 600, 520),
    ] {
        let (a, w) = (matrix(m, k, 0.1), matrix(n, k, 0.2));
        let mut want = Array2::<f64>::zeros((m, n));
        gemm(1.0, &a.view(), &w.t(), 0.0, &mut want.view_mut()).unwrap();
        let (a32, w32) = (a.mapv(|v| v as f32), w.mapv(|v| v as f32));
        let mut got = Array2::<f32>::zeros((m, n));
        gemm(1.0, &a32.view(), &w32.t(), 0.0, &mut got.view_mut()).unwrap();
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |e, (g, w)| e.max((*g as f64 - w).abs()));
        assert!(err < 1e-3 * (k as f64).sqrt(), "{m}x{k}x{n}: {err}");
    }
}

/// Output and input gradient of `forward` on one input, for the loss `Σ y²`.
fn run<F: Float>(forward: &dyn Fn(&Var<F>) -> Result<Var<F>>) -> (ArrayD<f64>, ArrayD<f64>) {
    let x = ArrayD::from_shape_fn(vec![6, 5, 3], |i| {
        F::of(((i[0] * 15 + i[1] * 3 + i[2]) as f64 * 0.31).sin())
    });
    let tape = Tape::new();
    let xv = tape.input(x);
    let y = forward(&xv).unwrap();
    let grads = y.powi(2).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.var(&xv).unwrap().mapv(|v| v.as_f64());
    (y.value().mapv(|v| v.as_f64()), dx)
}

fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).fold(0f64, |e, (x, y)| e.max((x - y).abs()))
}

#[test]
fn the_built_in_layers_in_f32_match_f64() {
    let cfg = RecurrentConfig::new(3, 24).num_layers(2);
    let copy = |from: Vec<Param<f64>>, to: Vec<Param<f32>>| {
        for (f, t) in from.iter().zip(&to) {
            t.set(f.value().mapv(|v| v as f32));
        }
    };
    let (l64, l32) = (
        cfg.lstm::<f64>(&mut Rng::seed(1)),
        cfg.lstm::<f32>(&mut Rng::seed(9)),
    );
    copy(l64.param_list(), l32.param_list());
    let (g64, g32) = (
        cfg.gru::<f64>(&mut Rng::seed(2)),
        cfg.gru::<f32>(&mut Rng::seed(9)),
    );
    copy(g64.param_list(), g32.param_list());
    let (r64, r32) = (
        cfg.rnn::<f64>(Nonlinearity::Tanh, &mut Rng::seed(3)),
        cfg.rnn::<f32>(Nonlinearity::Tanh, &mut Rng::seed(9)),
    );
    copy(r64.param_list(), r32.param_list());
    let pairs = [
        (
            "lstm",
            run::<f64>(&|x| Ok(l64.forward(x)?.output)),
            run::<f32>(&|x| Ok(l32.forward(x)?.output)),
        ),
        (
            "gru",
            run::<f64>(&|x| Ok(g64.forward(x)?.output)),
            run::<f32>(&|x| Ok(g32.forward(x)?.output)),
        ),
        (
            "rnn",
            run::<f64>(&|x| Ok(r64.forward(x)?.output)),
            run::<f32>(&|x| Ok(r32.forward(x)?.output)),
        ),
    ];
    for (name, (y64, d64), (y32, d32)) in pairs {
        assert!(max_diff(&y32, &y64) < 1e-4, "{name} output");
        assert!(max_diff(&d32, &d64) < 1e-3, "{name} input gradient");
    }
}

#[test]
fn a_training_step_lowers_the_loss() {
    use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
    let mut rng = Rng::seed(4);
    let lstm = RecurrentConfig::new(2, 32).lstm::<f32>(&mut rng);
    let head = Linear::<f32>::new(32, 1, &mut rng);
    let mut params = lstm.param_list();
    params.extend(head.param_list());
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let x = ArrayD::from_shape_fn(vec![12, 8, 2], |i| ((i[0] + 2 * i[1] + i[2]) as f32 * 0.4).sin());
    let y = ArrayD::from_shape_fn(vec![12, 8, 1], |i| ((i[0] + 2 * i[1]) as f32 * 0.4).cos());
    let mut losses = Vec::new();
    for _ in 0..5 {
        let tape = Tape::new();
        let out = head
            .forward(&lstm.forward(&tape.constant(x.clone())).unwrap().output)
            .unwrap();
        let loss = (&out - &tape.constant(y.clone()))
            .unwrap()
            .powi(2)
            .unwrap()
            .mean_all()
            .unwrap();
        losses.push(loss.item().unwrap());
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    assert!(losses[4] < losses[0], "{losses:?}");
}

#[test]
fn results_are_deterministic_per_thread_count_and_agree_across_counts() {
    // A layer large enough that the kernels split products across the pool (W_hh 4·256×256
    // at batch 1: the split inference and the threaded row kernels; batch 160: the packed
    // kernel's split), run in pools of 1, 2 and 3 threads, each twice.
    let lstm = RecurrentConfig::new(8, 256).lstm::<f32>(&mut Rng::seed(5));
    let step = |batch: usize| {
        let x = ArrayD::from_shape_fn(vec![4, batch, 8], |i| {
            ((i[0] * 8 + i[1] + i[2]) as f32 * 0.13).sin()
        });
        let infer = Tape::no_grad();
        let y_infer = lstm
            .forward(&infer.constant(x.clone()))
            .unwrap()
            .output
            .value()
            .clone();
        let tape = Tape::new();
        let xv = tape.input(x);
        let y = lstm.forward(&xv).unwrap().output;
        let grads = y.powi(2).unwrap().sum_all().unwrap().backward().unwrap();
        let mut all: Vec<f32> = y_infer.iter().copied().collect();
        all.extend(y.value().iter());
        all.extend(grads.var(&xv).unwrap().iter());
        for p in lstm.param_list() {
            all.extend(grads.param(&p).unwrap().iter());
        }
        all
    };
    for batch in [1, 160] {
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (a, b) = pool.install(|| (step(batch), step(batch)));
            assert!(a == b, "batch {batch}: two runs on {threads} threads differ");
            match &first {
                None => first = Some(a),
                Some(one) => {
                    let err = one
                        .iter()
                        .zip(&a)
                        .fold(0f32, |e, (x, y)| e.max((x - y).abs() / (1.0 + x.abs())));
                    assert!(err < 1e-4, "batch {batch}: {threads} threads against 1: {err}");
                }
            }
        }
    }
}
