//! Saving as a user does it: several threads saving to one path at once, a save that fails
//! half-way, and a process killed with SIGKILL in the middle of a save.

use crate::support::tmp_dir;
use eddy_nn::sequential::{dense, lstm, Loss, Model, Optim, Sequential};
use eddy_nn::Module;
use eddy_tape::Rng;
use ndarray::ArrayD;
use std::path::Path;

fn model(seed: u64, hidden: usize) -> Model<f32> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(lstm(hidden))
        .add(dense(1))
        .build::<f32>(2, &mut rng)
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    m
}

fn values(m: &Model<f32>) -> Vec<(String, ArrayD<f32>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, (*p.value()).clone()))
        .collect()
}

/// The names in `dir` other than `keep`: leftover temporary files.
fn leftovers(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

#[test]
fn concurrent_saves_to_one_path_all_succeed_and_leave_one_whole_file() {
    let dir = tmp_dir("save", "concurrent");
    let path = dir.join("model.safetensors");
    let threads = 4;
    for round in 0..10 {
        let saved: Vec<Vec<(String, ArrayD<f32>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let path = &path;
                    s.spawn(move || {
                        let m = model(100 * round + t, 24);
                        for i in 0..5 {
                            let r = if i % 2 == 0 {
                                m.save_checkpoint(path)
                            } else {
                                m.save_weights(path)
                            };
                            r.unwrap_or_else(|e| panic!("thread {t} save {i}: {e}"));
                        }
                        values(&m)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let loaded = model(7, 24);
        loaded.load_weights(&path).unwrap();
        let got = values(&loaded);
        assert!(
            saved.contains(&got),
            "round {round}: the file holds none of the saved models"
        );
        assert_eq!(leftovers(&dir, "model.safetensors"), Vec::<String>::new());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_save_removes_its_temporary_file() {
    let dir = tmp_dir("save", "failed");
    let path = dir.join("ckpt.safetensors");
    let m = model(1, 8);
    m.save_checkpoint(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let other = model(2, 8);
    for cut in [0, 1, good.len() / 2, good.len() - 1] {
        let e = other.save_checkpoint_with_fault(&path, Some(cut)).unwrap_err();
        assert!(e.to_string().contains("injected fault"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!(leftovers(&dir, "ckpt.safetensors"), Vec::<String>::new());
    }
    // A save into a directory that does not exist leaves nothing either.
    assert!(m.save_weights(dir.join("missing/m.safetensors")).is_err());
    assert_eq!(leftovers(&dir, "ckpt.safetensors"), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child's side of the SIGKILL test: save two alternating models to the path given in the
/// environment, forever, until killed.
const CHILD_ENV: &str = "EDDY_TEST_SAVE_FOREVER";

fn save_forever(path: &Path) -> ! {
    let models = [model(10, 256), model(11, 256)];
    std::fs::write(path.with_extension("ready"), b"").unwrap();
    loop {
        for m in &models {
            m.save_checkpoint(path).unwrap();
        }
    }
}

#[test]
fn sigkill_mid_save_leaves_the_previous_file_loadable() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        save_forever(Path::new(&path));
    }
    let dir = tmp_dir("save", "sigkill");
    let path = dir.join("ckpt.safetensors");
    // The child saves one of these two (each about 12 MB with Adam's buffers) in turn.
    let expected = [values(&model(10, 256)), values(&model(11, 256))];
    model(10, 256).save_checkpoint(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::seed(3);
    // Kill in a loop until a few kills have landed inside a write (a temporary file is left):
    // at most 60 rounds, of which about a quarter land inside a write on this test's timing.
    let (mut killed_mid_write, mut rounds) = (0, 0);
    while killed_mid_write < 3 && rounds < 60 {
        let round = rounds;
        rounds += 1;
        let ready = path.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "saving::sigkill_mid_save_leaves_the_previous_file_loadable",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while !ready.exists() {
            assert!(child.try_wait().unwrap().is_none(), "the child exited early");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Kill at a different point of a save each round.
        let wait = 20 + (rng.next_u64() % 200);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let mut fresh = model(12, 256);
        fresh
            .load_checkpoint(&path)
            .unwrap_or_else(|e| panic!("round {round} (killed after {wait} ms): {e}"));
        let got = values(&fresh);
        assert!(expected.contains(&got), "round {round}");
        // Temporary files of killed saves stay behind (nothing can remove them) but are
        // named apart from the model and never read.
        for name in leftovers(&dir, "ckpt.safetensors") {
            if name.starts_with(".ckpt.safetensors.") && name.ends_with(".tmp") {
                killed_mid_write += 1;
                std::fs::remove_file(dir.join(&name)).unwrap();
            } else {
                assert_eq!(name, "ckpt.ready");
            }
        }
    }
    // The kills did land inside writes (a temporary file was left), not only between saves.
    assert!(killed_mid_write > 0, "no kill landed during a write");
    eprintln!("{killed_mid_write} of {rounds} kills landed during a write");
    std::fs::remove_dir_all(&dir).unwrap();
}
