//! `eddy-bench memory`: the peak RSS and the time of one train step of an LSTM over long
//! sequences, with and without time-segment checkpointing (`RecurrentConfig::checkpoint_sqrt`).
//!
//! LSTM(input 128, hidden 256), batch 8, Adam; T = 10³, 10⁴, 10⁵. Two tasks: many-to-many (modes
//! `full`, `sqrt`), a per-step `Linear(256→1)` head and MSE against a random `[T, B, 1]`
//! target; many-to-one (modes `last`, `sqrt-last`: the layer built with
//! `return_sequences(false)`), the head on the last step only and MSE against a random
//! `[B, 1]` target, where a checkpointed layer never makes its `[T, B, H]` output sequence.
//! Each configuration runs in a fresh process
//! (`eddy-bench --in-process mem-<T>-<mode>`), so its peak RSS (`VmHWM`) is its own. A
//! configuration whose peak, estimated from the same mode at the next smaller T (linear in T),
//! would exceed `--max-gib` (default 16) is skipped and reported as such.

use crate::stats::proc_status_mib;
use eddy_nn::loss::{mse, Reduction};
use eddy_nn::optim::{Adam, AdamConfig, Optimizer};
use eddy_nn::{init, Checkpoint, Linear, Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::ArrayD;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;

/// The sequence lengths measured.
pub const STEPS: [usize; 3] = [1_000, 10_000, 100_000];
/// The modes: the plain tape and checkpointing with segments of `⌈√T⌉` steps, each for the
/// many-to-many task and (`…last`) the many-to-one task.
pub const MODES: [&str; 4] = ["full", "sqrt", "last", "sqrt-last"];
const INPUT: usize = 128;
const HIDDEN: usize = 256;
const BATCH: usize = 8;

/// The target names of every configuration, `mem-<T>-<mode>`, smallest T first.
pub fn targets() -> Vec<String> {
    STEPS
        .iter()
        .flat_map(|t| MODES.iter().map(move |m| format!("mem-{t}-{m}")))
        .collect()
}

/// Parses `mem-<T>-<mode>` into T, whether to checkpoint and whether the task is many-to-one.
pub fn parse(target: &str) -> Option<(usize, bool, bool)> {
    let rest = target.strip_prefix("mem-")?;
    let (steps, mode) = rest.split_once('-')?;
    let steps: usize = steps.parse().ok().filter(|&t| t > 0)?;
    match mode {
        "full" => Some((steps, false, false)),
        "sqrt" => Some((steps, true, false)),
        "last" => Some((steps, false, true)),
        "sqrt-last" => Some((steps, true, true)),
        _ => None,
    }
}

/// Runs one configuration in this process: two train steps (the second is timed: the first
/// also pays the allocator's first page faults), then the peak RSS.
pub fn run(target: &str) -> Result<Value> {
    let (steps, checkpoint, last) =
        parse(target).ok_or_else(|| Error::invalid("eddy-bench memory", format!("bad target {target}")))?;
    let mut rng = Rng::seed(0);
    let config = RecurrentConfig::new(INPUT, HIDDEN)
        .checkpoint(match checkpoint {
            true => Checkpoint::Sqrt,
            false => Checkpoint::Off,
        })
        .return_sequences(!last);
    let lstm = config.lstm::<f32>(&mut rng);
    let head = Linear::<f32>::new(HIDDEN, 1, &mut rng);
    let target_shape = if last {
        vec![BATCH, 1]
    } else {
        vec![steps, BATCH, 1]
    };
    let target_y: ArrayD<f32> = init::uniform(&target_shape, 1.0, &mut rng);
    let params = lstm.param_list().into_iter().chain(head.param_list());
    let mut opt = Adam::new(params, AdamConfig::default())?;
    let base = proc_status_mib("VmRSS:");
    let mut step_ms = 0.0;
    for _ in 0..2 {
        // The same input each step, made before the clock starts and moved onto the tape: the
        // process holds one copy of it, as a training loop that reads its batch would.
        let x: ArrayD<f32> = init::uniform(&[steps, BATCH, INPUT], 1.0, &mut Rng::seed(1));
        let start = Instant::now();
        let tape = Tape::new();
        let out = lstm.forward(&tape.constant(x))?.output;
        let pred = head.forward(&out)?;
        let loss = mse(&pred, &tape.constant(target_y.clone()), Reduction::Mean, None)?;
        let grads = loss.backward()?;
        drop((out, pred, loss, tape));
        opt.step(&grads)?;
        step_ms = start.elapsed().as_secs_f64() * 1e3;
    }
    let peak = proc_status_mib("VmHWM:");
    let mode = target.splitn(3, '-').nth(2).unwrap_or_default();
    eprintln!(
        "eddy memory T = {steps:>6} {mode:<9}: peak RSS {:>8.1} MiB, step {step_ms:.0} ms",
        peak.unwrap_or(f64::NAN)
    );
    Ok(json!({
        "impl": "eddy",
        "kind": "memory",
        "id": target,
        "steps": steps,
        "checkpoint": if checkpoint { "sqrt" } else { "full" },
        "segment": if checkpoint { Checkpoint::Sqrt.segment_len(steps) } else { None },
        "lstm": format!("LSTM({INPUT}→{HIDDEN}), batch {BATCH}, Linear({HIDDEN}→1) head, MSE, Adam"),
        "head": if last { "last step" } else { "every step" },
        "base_rss_mib": base,
        "peak_rss_mib": peak,
        "step_ms": step_ms,
    }))
}

/// Runs every configuration in a child process each (this binary, `--in-process`), skipping
/// one whose estimated peak exceeds `max_gib`; prints each child's JSON line.
pub fn run_all(exe: &std::path::Path, threads: usize, max_gib: f64) -> bool {
    let mut ok = true;
    for mode in MODES {
        let mut last: Option<(usize, f64)> = None;
        for steps in STEPS {
            let target = format!("mem-{steps}-{mode}");
            if let Some((t, peak)) = last {
                let estimate = peak * steps as f64 / t as f64 / 1024.0;
                if estimate > max_gib {
                    eprintln!(
                        "eddy memory T = {steps:>6} {mode:<9}: skipped, about {estimate:.1} GiB by the peak at T = {t} (over --max-gib {max_gib})"
                    );
                    println!(
                        "{}",
                        json!({"impl": "eddy", "kind": "memory", "id": target, "skipped": true, "estimate_gib": estimate})
                    );
                    continue;
                }
            }
            let out = Command::new(exe)
                .args(["--threads", &threads.to_string(), "--in-process", &target])
                .stderr(std::process::Stdio::inherit())
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    print!("{text}");
                    let peak = text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find_map(|v| v["peak_rss_mib"].as_f64());
                    last = peak.map(|p| (steps, p));
                }
                Ok(o) => {
                    eprintln!("eddy-bench: {target} failed ({})", o.status);
                    ok = false;
                }
                Err(e) => {
                    eprintln!("eddy-bench: cannot run {target}: {e}");
                    ok = false;
                }
            }
        }
    }
    ok
}
