//! eddy-ops's integration tests, built as one binary (`cargo test -p eddy-ops --test ops`): each
//! file is a module, so the generic ops are compiled once for all of them rather than once per
//! test file. Run one file's tests with its module name as the filter, e.g.
//! `cargo test --release -p eddy-ops --test ops gradcheck_scan::`.

mod common;
mod deferred_weight_grad;
mod engine;
mod errors;
mod gradcheck_binary;
mod gradcheck_elementwise;
mod gradcheck_fused;
mod gradcheck_gated_scan;
mod gradcheck_matmul;
mod gradcheck_pointwise;
mod gradcheck_reduce;
mod gradcheck_scan;
mod gradcheck_sequence;
mod gradcheck_shape;
mod gradcheck_slstm;
mod nan_propagation;
mod no_panic_shapes;
