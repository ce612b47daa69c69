//! A checkpointed many-to-one layer (`checkpoint_sqrt().return_sequences(false)`) never makes
//! its `[T, B, H]` output sequence: the peak of the bytes this process holds during a train
//! step (forward and backward) stays under that one sequence's size, while the same layer
//! returning its sequence holds the sequence and its gradient; so does a `Sequential` model's
//! checkpointed layer that returns its last step. Measured by a counting global
//! allocator, so this file holds this one test (tests of one binary share the allocator).

use eddy_nn::sequential::{dense, lstm, Sequential};
use eddy_nn::{Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::ArrayD;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// The system allocator, counting the bytes held now and the most held since the last reset.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), SeqCst) + layout.size();
            PEAK.fetch_max(now, SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        NOW.fetch_sub(layout.size(), SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const STEPS: usize = 16_384;
const BATCH: usize = 2;
const INPUT: usize = 2;
const HIDDEN: usize = 32;

/// The most bytes held above the start during one forward and backward pass whose loss reads
/// the last step only.
fn peak_of_a_step(config: RecurrentConfig) -> Result<usize> {
    let layer = config.lstm::<f64>(&mut Rng::seed(0));
    let x = ArrayD::from_shape_fn(vec![STEPS, BATCH, INPUT], |i| ((i[0] + i[2]) % 7) as f64 * 0.1);
    let base = NOW.load(SeqCst);
    PEAK.store(base, SeqCst);
    {
        let tape = Tape::new();
        let out = layer.forward(&tape.constant(x))?;
        let last = match config.return_sequences {
            true => out.output.select(0, STEPS - 1)?,
            false => out.output.clone(),
        };
        assert_eq!(last.shape(), &[BATCH, HIDDEN]);
        let grads = last.sum_all()?.backward()?;
        assert!(layer.params().iter().all(|(_, p)| grads.param(p).is_some()));
    }
    Ok(PEAK.load(SeqCst) - base)
}

/// The same for a `Sequential` model: a checkpointed LSTM returning its last step (the
/// default), a Dense head, on a batch-first input.
fn peak_of_a_model_step() -> Result<usize> {
    let model = Sequential::new()
        .add(lstm(HIDDEN).checkpoint_sqrt())
        .add(dense(1))
        .build::<f64>(INPUT, &mut Rng::seed(0))?;
    let x = ArrayD::from_shape_fn(vec![BATCH, STEPS, INPUT], |i| ((i[1] + i[2]) % 7) as f64 * 0.1);
    let base = NOW.load(SeqCst);
    PEAK.store(base, SeqCst);
    {
        let tape = Tape::new();
        let y = model.forward(&tape.constant(x), None, &mut Rng::seed(1))?;
        assert_eq!(y.shape(), &[BATCH, 1]);
        let grads = y.sum_all()?.backward()?;
        assert!(model.params().iter().all(|(_, p)| grads.param(p).is_some()));
    }
    Ok(PEAK.load(SeqCst) - base)
}

#[test]
fn a_checkpointed_many_to_one_layer_never_holds_its_output_sequence() -> Result<()> {
    let sequence = STEPS * BATCH * HIDDEN * std::mem::size_of::<f64>(); // 8 MiB
    let input = STEPS * BATCH * INPUT * std::mem::size_of::<f64>(); // 0.5 MiB, held by the tape
    let config = RecurrentConfig::new(INPUT, HIDDEN).checkpoint_sqrt();
    let many_to_one = peak_of_a_step(config.clone().return_sequences(false))?;
    let sequences = peak_of_a_step(config)?;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    eprintln!(
        "peak above the start: many-to-one {:.2} MiB, sequences {:.2} MiB (one sequence {:.2} MiB)",
        mib(many_to_one),
        mib(sequences),
        mib(sequence)
    );
    assert!(
        many_to_one < input + sequence / 2,
        "many-to-one held {:.2} MiB",
        mib(many_to_one)
    );
    // The batch-first input is transposed to time-major: a second copy of it.
    let model = peak_of_a_model_step()?;
    eprintln!(
        "peak above the start: Sequential many-to-one {:.2} MiB",
        mib(model)
    );
    assert!(
        model < 2 * input + sequence / 2,
        "the model held {:.2} MiB",
        mib(model)
    );
    assert!(
        sequences > 2 * sequence,
        "the sequence and its gradient: {:.2} MiB",
        mib(sequences)
    );
    Ok(())
}
