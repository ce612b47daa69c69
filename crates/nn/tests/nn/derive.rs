//! `#[derive(Module)]`: a minGRU and a JANET cell in at most 25 lines each (parameters,
//! constructor and step), their parameters listed by field name, their sizes read from the
//! parameters' shapes; gradchecked through the full layer in f64 and trained in f32.

use eddy_nn::optim::{Adam, AdamConfig, Optimizer};
use eddy_nn::{init, Cell, Linear, Module, RecurrentConfig};
use eddy_ops::linear_add;
use eddy_ops::prelude::*;
use ndarray::ArrayD;

// ---- the cells, as a user writes them (the line counts are checked below) ----
// minGRU: z = σ(W_z x + b_z), h̃ = W_h x + b_h, h' = h + z ⊙ (h̃ − h).
#[derive(Clone, Module)]
struct MinGru<F: Float> {
    #[cell(input = 1, state = 0 / 2)]
    weight: Param<F>, // [2H, I]: W_z, then W_h
    bias: Param<F>, // [2H]
}
impl<F: Float> MinGru<F> {
    fn new(i: usize, h: usize, rng: &mut Rng) -> Self {
        let mut p = |name: &str, shape: &[usize]| Param::new(name, init::pytorch_default(shape, i, rng));
        let (weight, bias) = (p("weight", &[2 * h, i]), p("bias", &[2 * h]));
        MinGru { weight, bias }
    }
}
impl<F: Float> Cell<F> for MinGru<F> {
    type State = Var<F>;
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        x.linear(&x.tape().param(&self.weight), Some(&x.tape().param(&self.bias)))
    }
    fn step(&self, zh: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let [z, candidate]: [Var<F>; 2] = zh.chunk(2, 1)?.try_into().expect("two chunks");
        h + (z.sigmoid()? * (candidate - h)?)?
    }
}
// minGRU: end

// JANET: s = W_f x + U_f h + b_f, h' = σ(s) ⊙ h + σ(1 − s) ⊙ tanh(W_c x + U_c h + b_c).
#[derive(Clone, Module)]
struct Janet<F: Float> {
    #[cell(input = 1, state = 0 / 2)]
    w: Param<F>, // [2H, I]: W_f, then W_c
    u: Param<F>, // [2H, H]
    b: Param<F>, // [2H]
}
fn janet<F: Float>(i: usize, h: usize, rng: &mut Rng) -> Janet<F> {
    let mut p = |name: &str, shape: &[usize]| Param::new(name, init::pytorch_default(shape, h, rng));
    let (w, u, b) = (p("w", &[2 * h, i]), p("u", &[2 * h, h]), p("b", &[2 * h]));
    Janet { w, u, b }
}
impl<F: Float> Cell<F> for Janet<F> {
    type State = Var<F>;
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        x.linear(&x.tape().param(&self.w), Some(&x.tape().param(&self.b)))
    }
    fn step(&self, xw: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let gates = linear_add(h, &h.tape().param(&self.u), None, Some(xw))?;
        let [s, candidate]: [Var<F>; 2] = gates.chunk(2, 1)?.try_into().expect("two chunks");
        (s.sigmoid()? * h)? + (s.neg()?.shift(F::one())?.sigmoid()? * candidate.tanh()?)?
        // 1 − σ(s − 1) = σ(1 − s)
    }
}
// JANET: end

/// A model of nested modules: a recurrent layer and a head, derived too.
#[derive(Module)]
struct Tagger<F: Float> {
    #[module]
    rnn: eddy_nn::Recurrent<F, Janet<F>>,
    #[module]
    head: Linear<F>,
    scale: Option<Param<F>>,
    steps: usize,
}

#[test]
fn each_cell_is_at_most_25_lines_including_its_parameters() {
    let source = include_str!("derive.rs");
    for cell in ["minGRU", "JANET"] {
        let start = source.find(&format!("// {cell}: ")).unwrap();
        let end = source.find(&format!("// {cell}: end")).unwrap();
        let lines = source[start..end].lines().count() - 1; // without the comment on top
        assert!(lines <= 25, "{cell}: {lines} lines");
    }
}

#[test]
fn the_derive_lists_params_by_field_name_and_reads_sizes_from_shapes() {
    let mut rng = Rng::seed(0);
    let gru = MinGru::<f64>::new(3, 5, &mut rng);
    let names: Vec<String> = gru.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    assert_eq!((gru.input_size(), gru.state_sizes()), (3, vec![5]));
    let cell = janet::<f32>(4, 6, &mut rng);
    assert_eq!(cell.params().len(), 3);
    assert_eq!((cell.input_size(), cell.state_sizes()), (4, vec![6]));
    assert_eq!(cell.num_params(), 12 * 4 + 12 * 6 + 12);

    let rnn = RecurrentConfig::new(4, 6).num_layers(2).build(janet, &mut rng);
    let mut tagger = Tagger {
        rnn,
        head: Linear::new(6, 2, &mut rng),
        scale: Some(Param::new("scale", ArrayD::<f32>::ones(vec![1]))),
        steps: 3,
    };
    let names: Vec<String> = tagger.params().into_iter().map(|(n, _)| n).collect();
    let rnn: Vec<String> = ["w", "u", "b"]
        .iter()
        .flat_map(|n| (0..2).map(move |l| (l, n)))
        .map(|(l, n)| format!("rnn.{n}_l{l}"))
        .collect();
    let mut want = rnn.clone();
    want.sort_by_key(|n| n.ends_with("l1"));
    want.extend([
        "head.weight".to_string(),
        "head.bias".to_string(),
        "scale".to_string(),
    ]);
    assert_eq!(names, want);
    tagger.scale = None;
    assert_eq!(
        tagger.params().len(),
        8,
        "an absent optional parameter is not listed"
    );
    assert_eq!(tagger.steps, 3);
    tagger.set_training(false);
}

#[test]
fn derived_cells_pass_gradcheck_through_the_full_layer() {
    fn check<C: Cell<f64> + Clone + 'static>(make: impl FnMut(usize, usize, &mut Rng) -> C) {
        let mut rng = Rng::seed(1);
        let layer = RecurrentConfig::new(3, 4)
            .num_layers(2)
            .bidirectional(true)
            .build(make, &mut rng);
        let x = ArrayD::from_shape_fn(vec![5, 2, 3], |ix| {
            ((ix[0] * 7 + ix[1] * 3 + ix[2]) as f64 * 0.3).sin()
        });
        let f = |_: &Tape<f64>, xs: &[Var<f64>]| layer.forward(&xs[0])?.output.tanh()?.sum_all();
        let opts = GradcheckOptions::default().params(layer.param_list());
        gradcheck(f, &[x], &opts).unwrap();
    }
    check(MinGru::new);
    check(janet);
}

#[test]
fn a_derived_cell_trains_in_f32() {
    // Learn to output the running mean of the input's first feature: the loss falls.
    let mut rng = Rng::seed(2);
    let layer = RecurrentConfig::new(2, 16).build(janet::<f32>, &mut rng);
    let head = Linear::<f32>::new(16, 1, &mut rng);
    let mut params = layer.param_list();
    params.extend(head.param_list());
    let config = AdamConfig {
        lr: 0.02,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(params, config).unwrap();
    let (t, b) = (8, 16);
    let x = ArrayD::from_shape_fn(vec![t, b, 2], |ix| {
        ((ix[0] * 5 + ix[1] * 11 + ix[2] * 3) as f32 * 0.7).sin()
    });
    let y = ArrayD::from_shape_fn(vec![t, b, 1], |ix| {
        (0..=ix[0]).map(|s| x[[s, ix[1], 0]]).sum::<f32>() / (ix[0] + 1) as f32
    });
    let mut losses = Vec::new();
    for _ in 0..60 {
        let tape = Tape::new();
        let out = layer.forward(&tape.constant(x.clone())).unwrap().output;
        let pred = head.forward(&out).unwrap();
        let loss = (&pred - &tape.constant(y.clone()))
            .unwrap()
            .powi(2)
            .unwrap()
            .mean_all()
            .unwrap();
        losses.push(loss.item().unwrap());
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
    }
    assert!(
        losses[59] < 0.3 * losses[0],
        "loss {} → {}",
        losses[0],
        losses[59]
    );
}
