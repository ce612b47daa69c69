//! A buffer that tasks of one parallel loop write in disjoint pieces: the output of a kernel
//! split across rayon's threads (by lanes, by columns, by hidden units).

use std::marker::PhantomData;

/// A mutable buffer shared by the tasks of a parallel loop, each of which writes only its own
/// ranges of it. Slices of it are taken only through the `unsafe` [`slice_mut`](Self::slice_mut)
/// and [`slice`](Self::slice), whose callers promise that the ranges they hold do not overlap
/// another task's writes. It borrows the buffer for `'a`, so the buffer outlives the tasks.
pub(crate) struct Shared<'a, F> {
    ptr: *mut F,
    len: usize,
    buf: PhantomData<&'a mut [F]>,
}

// SAFETY: every task writes only its own ranges of the buffer, and reads a range only once the
// writes to it are done and visible to it (written by the same task at an earlier step, or
// published by a synchronising counter); each caller says why at its `unsafe` blocks.
unsafe impl<F: Send> Send for Shared<'_, F> {}
unsafe impl<F: Send> Sync for Shared<'_, F> {}

impl<'a, F> Shared<'a, F> {
    /// Shares `buf` for the length of its borrow.
    pub(crate) fn new(buf: &'a mut [F]) -> Self {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            buf: PhantomData,
        }
    }

    /// Elements `start .. start + len`, to write.
    ///
    /// # Safety
    /// No other live reference may overlap them while the slice lives.
    ///
    /// # Panics
    /// If the range does not lie inside the buffer.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [F] {
        assert!(start + len <= self.len, "the range lies inside the buffer");
        // SAFETY: inside the buffer (checked above); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// Elements `start .. start + len`, to read.
    ///
    /// # Safety
    /// No live mutable reference may overlap them while the slice lives.
    ///
    /// # Panics
    /// If the range does not lie inside the buffer.
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &[F] {
        assert!(start + len <= self.len, "the range lies inside the buffer");
        // SAFETY: inside the buffer (checked above); not written while read, by the caller's
        // promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) }
    }
}
