//! [`Param`]: a named, persistent, thread-safe parameter that outlives any tape.

use crate::Float;
use ndarray::ArrayD;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The stable identity of a [`Param`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

/// The one accepted global in eddy: the counter that issues parameter ids.
static NEXT_PARAM_ID: AtomicU64 = AtomicU64::new(0);

impl ParamId {
    /// A fresh id: for a new parameter, or a weight a tape derives from parameters.
    pub(crate) fn fresh() -> ParamId {
        ParamId(NEXT_PARAM_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// A trainable array that lives across steps: a stable id, a name and a shared value.
///
/// Cloning a `Param` clones the handle, not the data. Binding it to a tape
/// ([`Tape::param`](crate::Tape::param)) shares the array (no copy); an optimizer updates it
/// between steps, when no tape holds it, so the update is in place.
pub struct Param<F: Float = f32> {
    inner: Arc<Inner<F>>,
}

struct Inner<F: Float> {
    id: ParamId,
    name: String,
    value: RwLock<Arc<ArrayD<F>>>,
}

impl<F: Float> Clone for Param<F> {
    fn clone(&self) -> Self {
        Param {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<F: Float> fmt::Debug for Param<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Param({:?}, {:?})", self.name(), self.shape())
    }
}

impl<F: Float> Param<F> {
    /// A new parameter with a fresh id.
    pub fn new(name: impl Into<String>, value: ArrayD<F>) -> Param<F> {
        Param {
            inner: Arc::new(Inner {
                id: ParamId::fresh(),
                name: name.into(),
                value: RwLock::new(Arc::new(value)),
            }),
        }
    }

    /// The stable id (unique in this process).
    pub fn id(&self) -> ParamId {
        self.inner.id
    }

    /// The name it was created with (modules report dotted paths separately).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A shared snapshot of the current value (no copy).
    pub fn value(&self) -> Arc<ArrayD<F>> {
        Arc::clone(&self.read())
    }

    /// The shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.read().shape().to_vec()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the value has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the value. The caller keeps the shape consistent with the module that owns it.
    pub fn set(&self, value: ArrayD<F>) {
        *self.inner.value.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }

    /// Updates the value in place. It copies only if a tape still holds the old value.
    pub fn update<R>(&self, f: impl FnOnce(&mut ArrayD<F>) -> R) -> R {
        let mut guard = self.inner.value.write().unwrap_or_else(|e| e.into_inner());
        f(Arc::make_mut(&mut guard))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<ArrayD<F>>> {
        // A poisoned lock only means a panic elsewhere mid-update; the array is still valid.
        self.inner.value.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_send_sync_and_ids_are_unique() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Param<f32>>();
        let a = Param::new("a", ArrayD::<f32>::zeros(vec![2]));
        let b = Param::new("b", ArrayD::<f32>::zeros(vec![2]));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.clone().id(), a.id());
    }

    #[test]
    fn update_is_in_place_when_no_one_else_holds_the_value() {
        let p = Param::new("p", ArrayD::<f64>::zeros(vec![3]));
        let before = Arc::as_ptr(&p.value());
        p.update(|v| v.fill(1.0));
        assert_eq!(Arc::as_ptr(&p.value()), before);
        let held = p.value();
        p.update(|v| v.fill(2.0));
        assert_eq!(held[[0]], 1.0);
        assert_eq!(p.value()[[0]], 2.0);
    }
}
