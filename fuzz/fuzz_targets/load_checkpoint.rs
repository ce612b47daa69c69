//! A safetensors file's bytes as a model's weights and as a training checkpoint (then one training epoch).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eddy_fuzz::load_checkpoint(data));
