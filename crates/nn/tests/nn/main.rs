//! eddy-nn's integration tests, built as one binary (`cargo test -p eddy-nn --test nn`): each
//! file is a module, so the crate's generic code is compiled once for all of them rather than
//! once per test file. Run one file's tests with its module name as the filter, e.g.
//! `cargo test --release -p eddy-nn --test nn tbptt::`.

mod cells_gradcheck;
mod checkpoint;
mod clip;
mod custom_cells;
mod data;
mod derive;
mod fit;
mod fit_shards;
mod interop;
mod linear_scan;
mod loss;
mod loss_parity;
mod many_to_one;
mod mlstm_sequence;
mod no_panic;
mod no_panic_props;
mod non_finite;
mod optim;
mod optim_parity;
mod parallel;
mod param_groups;
mod ragged;
mod recurrent;
mod saving;
mod schedule;
mod schedule_parity;
mod seed_model;
mod segment_checkpoint;
mod sequential_cells;
mod sequential_checkpoint;
mod slstm_unroll;
mod stream;
mod support;
mod tbptt;
mod torch_parity;
