//! The order prompts are visited in, as TRL's sampler visits a dataset: shuffled epochs
//! without replacement. Every prompt is drawn once per epoch; each epoch has its own seeded
//! permutation, so the order is a function of (seed, epoch) alone and a resumed run, which
//! restores the cursor, continues it exactly.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::rng::{mix64, Rng};

/// A position in the epoch stream over `n` items. Plain data, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochSampler {
    /// Items per epoch.
    pub n: usize,
    /// The run's seed.
    pub seed: u64,
    /// Shuffle each epoch; `false` keeps the items' order.
    pub shuffle: bool,
    /// The current epoch (0-based).
    pub epoch: u64,
    /// Items of the current epoch already drawn.
    pub cursor: usize,
}

impl EpochSampler {
    /// A sampler at the start of epoch 0. Errors when there is nothing to draw.
    pub fn new(n: usize, seed: u64, shuffle: bool) -> Result<Self> {
        if n == 0 {
            return Err(Error::Invalid("no prompts to sample from".into()));
        }
        Ok(EpochSampler { n, seed, shuffle, epoch: 0, cursor: 0 })
    }

    /// The item order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.n).collect();
        if self.shuffle {
            Rng::new(mix64(self.seed ^ 0x0E90_C4E5_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .shuffle(&mut idx);
        }
        idx
    }

    /// The next `k` items, crossing into the next epoch (and its permutation) when this one
    /// runs out.
    pub fn take(&mut self, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        let mut order = self.order(self.epoch);
        while out.len() < k {
            if self.cursor == self.n {
                self.epoch += 1;
                self.cursor = 0;
                order = self.order(self.epoch);
            }
            let take = (k - out.len()).min(self.n - self.cursor);
            out.extend_from_slice(&order[self.cursor..self.cursor + take]);
            self.cursor += take;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once_per_epoch_and_resumable() {
        let mut s = EpochSampler::new(10, 7, true).unwrap();
        let first: Vec<usize> = s.take(4).into_iter().chain(s.take(4)).chain(s.take(2)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "one epoch draws each item once");
        assert_ne!(first, (0..10).collect::<Vec<_>>(), "shuffled");
        let copy = s.clone();
        let a = s.take(13);
        let mut resumed = copy;
        assert_eq!(resumed.take(13), a, "a saved cursor continues the same stream");
        assert_eq!(s.epoch, 2);
        assert_ne!(s.order(1), s.order(2), "each epoch has its own permutation");
        let mut plain = EpochSampler::new(3, 0, false).unwrap();
        assert_eq!(plain.take(5), vec![0, 1, 2, 0, 1]);
        assert!(EpochSampler::new(0, 0, true).is_err());
    }
}
