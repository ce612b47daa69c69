//! Which parameter's gradient goes where: the gradient buckets of a model, as PyTorch DDP lays
//! them out.
//!
//! Parameters are taken in the reverse of the model's order (the last layer's first: the
//! reverse pass finishes them first) and packed into contiguous buckets up to a byte cap. The
//! first bucket has a small cap, so the first reduction starts early in the backward pass; the
//! others are large, so each reduction moves enough bytes to pay for its latency. A parameter
//! larger than the cap gets a bucket of its own.

use std::ops::Range;

/// The caps of the gradient buckets, in bytes (PyTorch DDP's defaults: 1 MiB, 25 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketOptions {
    /// The cap of the first bucket (the last layers' gradients).
    pub first_bucket_bytes: usize,
    /// The cap of every other bucket.
    pub bucket_bytes: usize,
}

impl Default for BucketOptions {
    fn default() -> Self {
        BucketOptions {
            first_bucket_bytes: 1 << 20,
            bucket_bytes: 25 << 20,
        }
    }
}

/// Where a parameter's gradient lives: its bucket and its elements there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub bucket: usize,
    pub range: Range<usize>,
}

/// The bucket layout of a list of parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// By parameter (in the model's order): where its gradient goes.
    pub slots: Vec<Slot>,
    /// By bucket: its number of elements.
    pub lens: Vec<usize>,
    /// By bucket: its parameters (indices into the model's order), in bucket order.
    pub members: Vec<Vec<usize>>,
}

impl Layout {
    /// The layout of parameters of `sizes` elements of `elem_bytes` bytes each (in the model's
    /// order).
    pub fn new(sizes: &[usize], elem_bytes: usize, options: BucketOptions) -> Layout {
        let mut slots = vec![
            Slot {
                bucket: 0,
                range: 0..0
            };
            sizes.len()
        ];
        let mut lens: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, &n) in sizes.iter().enumerate().rev() {
            let cap = if lens.len() <= 1 {
                options.first_bucket_bytes
            } else {
                options.bucket_bytes
            };
            let fits = lens.last().is_some_and(|&len| (len + n) * elem_bytes <= cap);
            // Start a new bucket unless this one has room (or is still empty).
            if !fits && lens.last().is_none_or(|&len| len > 0) {
                lens.push(0);
                members.push(Vec::new());
            }
            let b = lens.len() - 1;
            slots[i] = Slot {
                bucket: b,
                range: lens[b]..lens[b] + n,
            };
            lens[b] += n;
            members[b].push(i);
        }
        Layout { slots, lens, members }
    }

    /// The number of buckets.
    pub fn buckets(&self) -> usize {
        self.lens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_in_reverse_order_with_a_small_first_one() {
        // 8-byte elements: the first bucket holds 2, the others 5.
        let options = BucketOptions {
            first_bucket_bytes: 16,
            bucket_bytes: 40,
        };
        let l = Layout::new(&[3, 1, 2, 2, 1], 8, options);
        // Reverse order: p4 (1), p3 (2) -> 3 > 2, new bucket: p3 (2), p2 (2) -> 4 ≤ 5, p1 (1) -> 5,
        // p0 (3) -> 8 > 5, new bucket.
        assert_eq!(l.members, vec![vec![4], vec![3, 2, 1], vec![0]]);
        assert_eq!(l.lens, vec![1, 5, 3]);
        assert_eq!(
            l.slots[2],
            Slot {
                bucket: 1,
                range: 2..4
            }
        );
        assert_eq!(
            l.slots[0],
            Slot {
                bucket: 2,
                range: 0..3
            }
        );
    }

    #[test]
    fn a_parameter_larger_than_the_cap_gets_its_own_bucket() {
        let options = BucketOptions {
            first_bucket_bytes: 8,
            bucket_bytes: 8,
        };
        let l = Layout::new(&[1, 10, 1], 4, options);
        assert_eq!(l.members, vec![vec![2], vec![1], vec![0]]);
        assert_eq!(l.buckets(), 3);
    }

    #[test]
    fn a_small_model_is_one_bucket() {
        let l = Layout::new(&[100, 200, 50], 8, BucketOptions::default());
        assert_eq!(l.buckets(), 1);
        assert_eq!(l.lens, vec![350]);
        assert_eq!(l.slots[2].range, 0..50);
    }
}
