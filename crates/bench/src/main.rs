//! eddy-bench: eddy's benchmark suite, the Rust half of `bench/run.py` (which runs this and
//! `bench/torch_bench.py` and prints them side by side). See `docs/performance.md`.
//!
//! ```sh
//! cargo run --release -p eddy-bench -- [--steps 10] [--warmup 3] [--threads 1] [W1 … W10PAR gemm fma | all]
//! cargo run --release -p eddy-bench -- [--max-gib 16] memory
//! ```
//!
//! `memory` (not part of `all`) measures one LSTM train step's peak RSS at T = 10³, 10⁴, 10⁵
//! with and without time-segment checkpointing, each configuration in its own process; see
//! [`memory`].
//!
//! Prints one JSON object per line on stdout (a workload, a GEMM shape, or a peak FMA rate) and a
//! human summary on stderr. Each workload runs in its own child process (this binary re-run with
//! `--in-process`) so that its peak RSS (`VmHWM`) is its own.
//!
//! Threads: the steps run inside a rayon pool of `--threads` workers (`pool.install`). A train
//! step shards the batch across them (`eddy_nn::parallel::data_parallel`), and products large
//! enough to pay for it (and batch-1 products with a large weight) are split across them inside
//! `eddy_ops::kernels::gemm`. matrixmultiply's own threading stays off, so no two pools fight.

/// A caching allocator for the whole benchmark, as an application would choose one (build with
/// `--no-default-features` for the system allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator settings of this application (docs/performance.md, "Allocation"): mimalloc
/// keeps the memory freed between steps committed for the next step's buffers instead of
/// returning it to the OS (`purge_delay = -1`, arenas committed eagerly), so that a step's
/// large outputs (W8's 134 MB projection and its gradient) do not come back as page faults
/// the kernel zeroes. As `MIMALLOC_PURGE_DELAY=-1 MIMALLOC_ARENA_EAGER_COMMIT=1`; an option
/// set in the environment is left as it is.
#[cfg(feature = "mimalloc")]
mod allocator {
    use std::ffi::{c_int, c_long};

    // Option numbers of `mi_option_t` in mimalloc's `mimalloc.h` (the same in the v2 and v3
    // sources of libmimalloc-sys 0.1.49): the crate binds `mi_option_set` only behind its
    // `extended` feature, and names neither option.
    const ARENA_EAGER_COMMIT: c_int = 4;
    const PURGE_DELAY: c_int = 15;

    extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
    }

    pub fn keep_freed_memory() {
        for (option, name, value) in [
            (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", -1),
            (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 1),
        ] {
            if std::env::var_os(name).is_none() {
                // SAFETY: a plain setter of mimalloc's (linked by the `mimalloc` crate) with a
                // valid option number; options may be set at any time.
                unsafe { mi_option_set(option, value) };
            }
        }
    }

    #[cfg(test)]
    #[test]
    fn the_option_numbers_name_the_options_and_are_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY (both): a plain getter with a valid option number.
        // Option 15 has purge_delay's default (1000 ms in mimalloc's `options.c`), not a
        // neighbour's (0 or 1).
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, -1);
    }
}

mod custom_cell;
mod fma;
mod gemm;
mod memory;
mod op_costs;
mod stats;
mod workloads;

use serde_json::{json, Value};
use stats::proc_status_mib;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: eddy-bench [--steps N] [--warmup N] [--threads N] [--in-process] [--list] \
[--max-gib G] [W1 .. W10PAR | gemm | fma | ops | all | memory | mem-<T>-<full|sqrt|last|sqrt-last>]...";

#[derive(Debug, Clone)]
struct Args {
    steps: usize,
    warmup: usize,
    threads: usize,
    in_process: bool,
    list: bool,
    /// `memory`: skip a configuration whose estimated peak RSS exceeds this many GiB.
    max_gib: f64,
    targets: Vec<String>,
}

fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut args = Args {
        steps: 10,
        warmup: 3,
        threads: 1,
        in_process: false,
        list: false,
        max_gib: 16.0,
        targets: Vec::new(),
    };
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--steps" => args.steps = number("--steps")?.max(1),
            "--warmup" => args.warmup = number("--warmup")?,
            "--threads" => args.threads = number("--threads")?.max(1),
            "--in-process" => args.in_process = true,
            "--list" => args.list = true,
            "--max-gib" => args.max_gib = number("--max-gib")? as f64,
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
            t => {
                let t = t.to_ascii_lowercase();
                let known = t == "all"
                    || t == "memory"
                    || memory::parse(&t).is_some()
                    || t == "gemm"
                    || t == "fma"
                    || t == "ops"
                    || workloads::WORKLOADS.iter().any(|w| w.id.eq_ignore_ascii_case(&t));
                if !known {
                    return Err(format!("unknown workload {t}\n{USAGE}"));
                }
                args.targets.push(t);
            }
        }
    }
    if args.targets.is_empty() || args.targets.iter().any(|t| t == "all") {
        args.targets = workloads::WORKLOADS
            .iter()
            .map(|w| w.id.to_ascii_lowercase())
            .chain(["gemm".into(), "fma".into()])
            .collect();
    }
    Ok(args)
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    allocator::keep_freed_memory();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&raw) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    if args.list {
        for w in workloads::WORKLOADS {
            println!("{}  {}", w.id, w.desc);
        }
        for c in gemm::GEMM_CASES {
            println!("gemm {:<22} {}", c.id(), c.note);
        }
        println!("fma   peak f32 FMA GFLOP/s");
        for t in memory::targets() {
            println!("{t}  one LSTM(128→256, B 8) train step's peak RSS (part of `memory`)");
        }
        return ExitCode::SUCCESS;
    }
    if args.in_process || (args.targets.len() == 1 && args.targets[0] != "memory") {
        return run_here(&args);
    }
    // One child process per target, so each one's peak RSS is its own.
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("eddy-bench: cannot find its own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for t in &args.targets {
        if t == "memory" {
            ok &= memory::run_all(&exe, args.threads, args.max_gib);
            continue;
        }
        let status = Command::new(&exe)
            .args(["--steps", &args.steps.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .args(["--in-process", t])
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("eddy-bench: {t} failed ({s})");
                ok = false;
            }
            Err(e) => {
                eprintln!("eddy-bench: cannot run {t}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the targets in this process, inside a rayon pool of `args.threads` workers.
fn run_here(args: &Args) -> ExitCode {
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(args.threads).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("eddy-bench: cannot build a pool of {} threads: {e}", args.threads);
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for t in &args.targets {
        let base = proc_status_mib("VmRSS:");
        let lines = pool.install(|| run_target(t, args));
        match lines {
            Ok(lines) => {
                let peak = proc_status_mib("VmHWM:");
                for mut line in lines {
                    if line["kind"] == "workload" {
                        line["base_rss_mib"] = json!(base);
                        line["peak_rss_mib"] = json!(peak);
                    }
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("eddy-bench: {t}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn common(kind: &str, id: &str, args: &Args) -> Value {
    json!({
        "impl": "eddy",
        "kind": kind,
        "id": id,
        "threads": args.threads,
        "level": eddy_ops::kernels::level().name(),
        "l1d_kib": eddy_ops::kernels::cache::caches().l1d >> 10,
        "l2_kib": eddy_ops::kernels::cache::caches().l2 >> 10,
        "warmup": args.warmup,
        "steps": args.steps,
    })
}

/// The JSON lines of one target.
fn run_target(target: &str, args: &Args) -> Result<Vec<Value>, String> {
    match target {
        t if memory::parse(t).is_some() => Ok(vec![memory::run(t).map_err(|e| e.to_string())?]),
        "gemm" => {
            let mut lines = Vec::new();
            for c in gemm::GEMM_CASES {
                let base = c.id();
                let plain = gemm::run(c, args.warmup, args.steps).map_err(|e| format!("gemm {base}: {e}"))?;
                let packed =
                    gemm::run_packed(c, args.warmup, args.steps).map_err(|e| format!("gemm {base}: {e}"))?;
                // The packed form is reported as "<id> packed"; the runner sets it against
                // PyTorch's "<id>".
                for (id, s) in [(base.clone(), Some(plain)), (format!("{base} packed"), packed)] {
                    let Some(s) = s else { continue };
                    let gflops = c.flops() / (s.median_ms * 1e-3) / 1e9;
                    eprintln!(
                        "eddy gemm {id:<29} {:>9.4} ms  {gflops:>7.1} GFLOP/s  ({})",
                        s.median_ms, c.note
                    );
                    let mut line = common("gemm", &id, args);
                    line["note"] = json!(c.note);
                    line["median_ms"] = json!(s.median_ms);
                    line["min_ms"] = json!(s.min_ms);
                    line["max_ms"] = json!(s.max_ms);
                    line["gflops"] = json!(gflops);
                    lines.push(line);
                }
            }
            Ok(lines)
        }
        "ops" => Ok(op_costs::costs(args.steps.max(3), 100_000)
            .map_err(|e| format!("ops: {e}"))?
            .into_iter()
            .map(|c| {
                eprintln!(
                    "eddy op {} ({} threads): median {:.0} ns [min {:.0}]",
                    c.id, args.threads, c.median_ns, c.min_ns
                );
                let mut line = common("op", c.id, args);
                line["median_ns"] = json!(c.median_ns);
                line["min_ns"] = json!(c.min_ns);
                line
            })
            .collect()),
        "fma" => Ok(fma::peaks(args.threads, args.steps.min(5))
            .into_iter()
            .map(|p| {
                eprintln!(
                    "eddy fma {} ({} threads): {:.1} GFLOP/s",
                    p.isa, args.threads, p.gflops
                );
                let mut line = common("fma", &format!("fma {}", p.isa), args);
                line["lanes"] = json!(p.lanes);
                line["gflops"] = json!(p.gflops);
                line
            })
            .collect()),
        w => {
            let spec = workloads::WORKLOADS
                .iter()
                .find(|s| s.id.eq_ignore_ascii_case(w))
                .ok_or_else(|| format!("unknown workload {w}"))?;
            let s = workloads::run(spec.id, args.warmup, args.steps).map_err(|e| e.to_string())?;
            eprintln!(
                "eddy {} ({} threads): median {:.2} ms [{:.2}–{:.2}] over {} steps",
                spec.id, args.threads, s.median_ms, s.min_ms, s.max_ms, args.steps
            );
            let mut line = common("workload", spec.id, args);
            line["desc"] = json!(spec.desc);
            line["flops"] = json!(spec.flops);
            line["gflops"] = json!(spec.flops / (s.median_ms * 1e-3) / 1e9);
            line["median_ms"] = json!(s.median_ms);
            line["min_ms"] = json!(s.min_ms);
            line["max_ms"] = json!(s.max_ms);
            line["times_ms"] = json!(s.times_ms);
            Ok(vec![line])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_and_all() {
        let a = parse_args(&[]).unwrap();
        assert_eq!((a.steps, a.warmup, a.threads), (10, 3, 1));
        assert_eq!(a.targets.len(), workloads::WORKLOADS.len() + 2);
        let a = parse_args(&strings(&["--steps", "3", "--threads", "2", "W2", "gemm"])).unwrap();
        assert_eq!((a.steps, a.threads), (3, 2));
        assert_eq!(a.targets, strings(&["w2", "gemm"]));
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse_args(&strings(&["W99"])).is_err());
        assert!(parse_args(&strings(&["--steps"])).is_err());
        assert!(parse_args(&strings(&["--bogus"])).is_err());
    }
}
