//! Seeded random numbers: ChaCha8 (`rand_chacha`, whose output is documented to be stable
//! across platforms and releases), one stream per input so that explaining an input alone
//! gives what it gets inside a batch.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

pub struct Rng {
    inner: ChaCha8Rng,
}

impl Rng {
    /// The stream `stream` of `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Rng { inner }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Moves to the start of the stream's `draw`-th 64-bit draw (counting from 0), so a
    /// consumer whose items each take a fixed number of draws can generate any item on its own
    /// (in parallel, or in any order) and get what a sequential pass gives. `uniform` and
    /// `next_u64` take one draw each; `below` may take several.
    pub fn seek(&mut self, draw: u64) {
        self.inner.set_word_pos(2 * draw as u128);
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (Lemire's multiply-shift with rejection, so no modulo bias).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let (mut a, mut b, mut c) = (Rng::new(7, 0), Rng::new(7, 0), Rng::new(7, 1));
        let xa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn seeking_lands_where_sequential_draws_are() {
        let mut sequential = Rng::new(3, 2);
        let draws: Vec<u64> = (0..40).map(|_| sequential.next_u64()).collect();
        for start in [0u64, 1, 7, 8, 17, 31] {
            let mut r = Rng::new(3, 2);
            r.seek(start);
            let again: Vec<u64> = (0..9).map(|_| r.next_u64()).collect();
            assert_eq!(again, draws[start as usize..start as usize + 9]);
        }
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::new(1, 0);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 400.0, "{counts:?}");
        }
    }
}
