//! The MPI tests: each launches the `dist-check` scenarios under `mpirun` (loopback only,
//! oversubscribed, one rayon thread per rank) and checks the job's exit status and output.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One `mpirun` at a time: the ranks of two jobs would fight over the same cores.
static ONE_JOB: Mutex<()> = Mutex::new(());

struct Job {
    ok: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `dist-check args` on `ranks` ranks, killing it after `limit`.
fn mpirun(ranks: usize, args: &[&str], limit: Duration) -> Job {
    let _one = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new("mpirun");
    cmd.args(["-n", &ranks.to_string()])
        .args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none"])
        .args(["--mca", "btl", "self,vader"])
        .args(["-x", "RAYON_NUM_THREADS=1"])
        .arg(env!("CARGO_BIN_EXE_dist-check"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("mpirun runs (install openmpi-bin)");
    loop {
        if child.try_wait().expect("wait for mpirun").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("mpirun's output");
    Job {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn assert_ok(job: &Job, expect: &str) {
    assert!(
        job.ok && job.stdout.contains(expect),
        "expected success and {expect:?}\nstdout:\n{}\nstderr:\n{}",
        job.stdout,
        job.stderr
    );
}

#[test]
fn two_ranks_train_as_one_process_on_the_global_batch() {
    let job = mpirun(2, &["equal"], Duration::from_secs(120));
    assert_ok(&job, "ok: 2 ranks equal one process");
}

#[test]
fn four_ranks_train_as_one_process_on_the_global_batch() {
    let job = mpirun(4, &["equal"], Duration::from_secs(180));
    assert_ok(&job, "ok: 4 ranks equal one process");
}

/// The other ranks wait in a collective; the failing rank's abort must end them too.
fn assert_aborts(job: &Job, rank: usize, ranks: usize, what: &str) {
    assert!(!job.ok, "the job should fail\nstdout:\n{}", job.stdout);
    let line = format!("eddy-dist: rank {rank} of {ranks} failed: {what}");
    assert!(
        job.stderr.contains(&line),
        "no {line:?} in stderr:\n{}",
        job.stderr
    );
    assert!(
        job.elapsed < Duration::from_secs(20),
        "the job took {:?} to end",
        job.elapsed
    );
}

#[test]
fn a_rank_that_errors_ends_the_job_with_its_message() {
    let job = mpirun(2, &["fail", "1"], Duration::from_secs(60));
    assert_aborts(&job, 1, 2, "fit: y does not fit the model's output");
}

#[test]
fn a_rank_that_panics_ends_the_job_with_its_message() {
    let job = mpirun(3, &["panic", "2"], Duration::from_secs(60));
    assert_aborts(&job, 2, 3, "panicked");
    assert!(
        job.stderr.contains("a deliberate panic on rank 2"),
        "{}",
        job.stderr
    );
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_on_one_and_on_four() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resume");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let d = dir.to_str().expect("a UTF-8 path");
    // The uninterrupted run: 4 epochs on 2 ranks, a checkpoint after each.
    assert_ok(
        &mpirun(2, &["train", d, "4"], Duration::from_secs(120)),
        "ok: trained 4 epochs",
    );
    let fin = dir.join("final-2.safetensors");
    let fin = fin.to_str().expect("a UTF-8 path");
    assert_ok(
        &mpirun(1, &["resume", d, "2", "4", fin], Duration::from_secs(120)),
        "ok: resumed epoch 2 on 1 ranks",
    );
    assert_ok(
        &mpirun(4, &["resume", d, "1", "4", fin], Duration::from_secs(180)),
        "ok: resumed epoch 1 on 4 ranks",
    );
}

/// The communication thread moves a reduction along while the backward pass computes: the top
/// layer's bucket finishes during the bottom layer's reverse sweep, before the pass reports
/// its last gradient (no gradient report, hence no test from the trainer's thread, in between).
#[test]
fn a_reduction_finishes_behind_the_reverse_sweep_below_it() {
    let job = mpirun(2, &["overlap"], Duration::from_secs(120));
    assert_ok(&job, "steps finished the top layer's reduction behind");
}
