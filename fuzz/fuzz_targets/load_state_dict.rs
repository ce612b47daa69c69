//! A safetensors file's bytes as a PyTorch state dict, loaded into every layer kind (then a forward pass).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eddy_fuzz::load_state_dict(data));
