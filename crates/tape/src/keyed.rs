//! The hash maps of the engine's own bookkeeping (bound parameters, derived weights, memos,
//! gradients by slot), with a cheap hash instead of the standard library's SipHash.
//!
//! SipHash resists keys chosen by an attacker, and costs it: a tape looks up every input of
//! every op among its weights ([`crate::Tape::weight_of`]), and in a batch-1 inference step of
//! a user's LSTM cell (eddy-bench's W7c) SipHash was 1.5% of the time. These keys are slots,
//! parameter ids and value addresses that the engine makes itself, so nobody chooses them.
//! The hash is rustc's `FxHasher` (per 64-bit word: rotate, xor, multiply) with the multiplier
//! and the final rotation of rustc-hash 2. The rotation brings the product's well-mixed high
//! bits down to the low bits the table indexes by: an address's low bits are zero, and a
//! product's low bits depend only on the factors' low bits.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`KeyHasher`].
pub(crate) type KeyedMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// rustc's multiply-rotate hash over 64-bit words: see the module doc.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher {
    hash: u64,
}

impl KeyHasher {
    /// rustc-hash 2's multiplier (odd, so the product keeps every input bit).
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        // The length too: the zero padding of the last word must not make `"ab"` and
        // `"ab\0"` one key.
        self.add(bytes.len() as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(t: T) -> u64 {
        BuildHasherDefault::<KeyHasher>::default().hash_one(t)
    }

    /// Addresses 16 bytes apart (their low four bits zero) spread over the low bits the table
    /// indexes by, and strings of different lengths hash differently.
    #[test]
    fn aligned_addresses_spread_over_the_low_bits() {
        let buckets: std::collections::HashSet<u64> = (0..64usize)
            .map(|k| hash(0x7f00_0000_1000 + 16 * k) & 63)
            .collect();
        assert!(buckets.len() >= 32, "{} of 64 buckets used", buckets.len());
        assert_ne!(hash("ab"), hash("ab\0"));
        let mut map: KeyedMap<usize, usize> = KeyedMap::default();
        for k in 0..1000 {
            map.insert(16 * k, k);
        }
        assert!((0..1000).all(|k| map[&(16 * k)] == k));
    }
}
