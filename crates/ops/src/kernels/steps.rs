//! The order in which a sequence's steps run, forwards or in reverse.

/// The time step processed `i`-th.
pub fn step_at(i: usize, steps: usize, reverse: bool) -> usize {
    if reverse {
        steps - 1 - i
    } else {
        i
    }
}

/// The step processed just before step `t`, or `None` for the first one (which reads the
/// initial state).
pub fn prev_of(t: usize, steps: usize, reverse: bool) -> Option<usize> {
    match reverse {
        false => t.checked_sub(1),
        true => (t + 1 < steps).then_some(t + 1),
    }
}
