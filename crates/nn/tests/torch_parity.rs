//! Every committed PyTorch fixture matches in f64 (1e-8 absolute) and f32 (1e-4 relative).

use eddy_nn::parity::run_case;
use std::path::PathBuf;

#[test]
fn every_fixture_matches_pytorch() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch/rnn");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/torch/rnn exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "expected the committed fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        match (run_case::<f64>(f), run_case::<f32>(f)) {
            (Ok(e64), Ok(e32)) => {
                if e64.max_abs() > 1e-8 || e32.relative > 1e-4 {
                    failures.push(format!(
                        "{name}: f64 {:.2e} (worst {}), f32 rel {:.2e}",
                        e64.max_abs(),
                        e64.worst,
                        e32.relative
                    ));
                }
            }
            (a, b) => failures.push(format!("{name}: {:?} {:?}", a.err(), b.err())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
