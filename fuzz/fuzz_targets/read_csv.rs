//! A dataset CSV's bytes: parsed, every column read as numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eddy_fuzz::read_csv(data));
