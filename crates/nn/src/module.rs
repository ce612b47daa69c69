//! [`Module`]: what every layer is — its parameters under dotted names, and a train/eval mode.

use eddy_tape::{Float, Param};

/// A layer or model: it lists its [`Param`]s with dotted names in a fixed order (these names are
/// the checkpoint keys, PyTorch's state-dict names for the built-in layers) and knows whether it
/// is training. Plain structs owning their parts implement it by hand, in two methods, or with
/// `#[derive(Module)]` (the derive of the same name, from the crate `eddy-derive`), which lists
/// the `Param` fields by field name and `#[module]` fields as nested modules; see
/// [`macro@Module`](crate::Module) for what it writes.
pub trait Module<F: Float> {
    /// The parameters with their dotted names, in a fixed order.
    fn params(&self) -> Vec<(String, Param<F>)>;

    /// Switches between training (dropout active) and evaluation. Default: nothing to switch.
    fn set_training(&mut self, _training: bool) {}

    /// The number of trainable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|(_, p)| p.len()).sum()
    }

    /// The parameters alone, in order.
    fn param_list(&self) -> Vec<Param<F>> {
        self.params().into_iter().map(|(_, p)| p).collect()
    }

    /// For a cell: its input size and state sizes read from its parameters' shapes, which
    /// [`Cell::input_size`](crate::Cell::input_size) and
    /// [`Cell::state_sizes`](crate::Cell::state_sizes) default to. `#[derive(Module)]` writes
    /// it from `#[cell(input = axis)]` and `#[cell(state = axis)]` on parameter fields.
    /// Default: `None`.
    fn cell_sizes(&self) -> Option<CellSizes> {
        None
    }
}

/// A cell's sizes as read from its parameters' shapes ([`Module::cell_sizes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSizes {
    /// The input feature size.
    pub input: usize,
    /// The size of each state part, the output first.
    pub states: Vec<usize>,
}

/// Prefixes each name with `prefix.` (for a module's child).
pub fn prefixed<F: Float>(prefix: &str, params: Vec<(String, Param<F>)>) -> Vec<(String, Param<F>)> {
    params
        .into_iter()
        .map(|(n, p)| (format!("{prefix}.{n}"), p))
        .collect()
}
