//! Writes the seed corpus of the fuzz targets into `fuzz/corpus/<target>/` (small files):
//! weights and checkpoints of the checkpoint models, after one epoch; a state dict of every
//! layer kind (float32, as PyTorch saves it) and PyTorch's own GRU fixture; a few CSVs.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --bin make-corpus` (stable is fine).

use eddy_fuzz::{checkpoint_models, layers, train_data};
use eddy_nn::io::{to_bytes, Entry};
use eddy_nn::FitOptions;
use std::collections::HashMap;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = |target: &str| -> std::io::Result<std::path::PathBuf> {
        let d = root.join(target);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };

    let ckpt = dir("load_checkpoint")?;
    let (x, y) = train_data();
    for (name, mut model) in checkpoint_models()? {
        model.fit(
            &x,
            &y,
            FitOptions {
                epochs: 1,
                batch_size: 2,
                progress: false,
                ..FitOptions::default()
            },
        )?;
        model.save_weights(ckpt.join(format!("{name}.weights.safetensors")))?;
        model.save_checkpoint(ckpt.join(format!("{name}.checkpoint.safetensors")))?;
    }

    let sd = dir("load_state_dict")?;
    for layer in layers() {
        let values: Vec<(String, ndarray::ArrayD<f32>)> = layer
            .module
            .params()
            .into_iter()
            .map(|(n, p)| (n, p.value().mapv(|v| v as f32)))
            .collect();
        let entries: Vec<(String, Entry<'_>)> =
            values.iter().map(|(n, v)| (n.clone(), Entry::F32(v))).collect();
        std::fs::write(
            sd.join(format!("{}.safetensors", layer.name)),
            to_bytes(&entries, &HashMap::new())?,
        )?;
    }
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/torch/rnn/gru_1layer.safetensors");
    std::fs::copy(torch, sd.join("torch_gru_1layer.safetensors"))?;

    let csv = dir("read_csv")?;
    let files: [(&str, &str); 4] = [
        (
            "sunspots_head.csv",
            "date,sunspots\n1749-01,58.0\n1749-02,62.6\n1749-03,70.0\n1749-04,55.7\n",
        ),
        (
            "features.csv",
            "\u{feff}\"t\", x , y\r\n0,0.5,-1e-3\r\n\r\n1,NaN,inf\r\n2,1.5e300,-0\r\n",
        ),
        ("ragged.csv", "a,b,c\n1,2\n"),
        ("missing.csv", "a,b\n1,\n,2\n"),
    ];
    for (name, text) in files {
        std::fs::write(csv.join(name), text)?;
    }
    println!("wrote the seed corpus under {}", root.display());
    Ok(())
}
