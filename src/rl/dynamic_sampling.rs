//! DAPO dynamic sampling: a group whose mixed rewards are all equal has zero advantage for
//! every completion, so it adds tokens to the loss's denominator but no gradient. Such groups
//! are dropped, and more prompts are sampled until the batch holds enough informative groups
//! or a cap on generation rounds is hit (so a policy that solves everything cannot loop forever).

use crate::error::{Error, Result};

/// Rewards whose max − min is at most this are "all equal". Absolute, because mixed rewards
/// that are equal in intent can differ by float rounding when computed in different orders.
pub const EQUAL_REWARD_TOL: f64 = 1e-12;

/// Which groups survived the filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// Indices (into the group list) of the groups kept, ascending.
    pub kept: Vec<usize>,
    /// How many groups were dropped.
    pub dropped: usize,
}

/// Splits `rewards` into consecutive groups of `group_sizes` and keeps the groups whose rewards
/// are not all equal (within [`EQUAL_REWARD_TOL`]). A group of one is always dropped: it has no
/// spread, hence no advantage.
///
/// Errors: a group of size 0, sizes that do not sum to `rewards.len()`, a non-finite reward
/// (named by index; a NaN must not be silently treated as "different").
pub fn filter_groups(rewards: &[f64], group_sizes: &[usize]) -> Result<GroupFilter> {
    if let Some(g) = group_sizes.iter().position(|&s| s == 0) {
        return Err(Error::Invalid(format!("group {g} is empty")));
    }
    let total: usize = group_sizes.iter().sum();
    if total != rewards.len() {
        return Err(Error::Invalid(format!("group sizes sum to {total} but there are {} rewards", rewards.len())));
    }
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(Error::Invalid(format!("reward {i} is not finite ({})", rewards[i])));
    }
    let mut out = GroupFilter::default();
    let mut start = 0;
    for (g, &size) in group_sizes.iter().enumerate() {
        let group = &rewards[start..start + size];
        let (lo, hi) = group.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        if hi - lo > EQUAL_REWARD_TOL {
            out.kept.push(g);
        } else {
            out.dropped += 1;
        }
        start += size;
    }
    Ok(out)
}

/// Where filling a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillStatus {
    /// Enough groups are kept; train on the first `target` of them.
    Full,
    /// Sample this many more groups (prompts).
    NeedMore(usize),
    /// Not full, but the round cap is reached: train on what there is (or skip, if nothing).
    RoundCapReached,
}

/// Tracks the groups kept over the generation rounds of one training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFiller {
    /// Groups wanted per training step.
    pub target: usize,
    /// Generation rounds allowed per training step (≥ 1).
    pub max_rounds: usize,
    /// Rounds recorded so far.
    pub rounds: usize,
    /// Groups kept so far.
    pub kept: usize,
    /// Groups dropped so far.
    pub dropped: usize,
}

impl BatchFiller {
    /// A filler for `target` groups in at most `max_rounds` rounds. Errors if either is 0.
    pub fn new(target: usize, max_rounds: usize) -> Result<Self> {
        if target == 0 || max_rounds == 0 {
            return Err(Error::Invalid(format!(
                "dynamic sampling wants target >= 1 and max_rounds >= 1, got {target} and {max_rounds}"
            )));
        }
        Ok(BatchFiller { target, max_rounds, rounds: 0, kept: 0, dropped: 0 })
    }

    /// Records one generation round's filter result and returns the new status.
    pub fn record(&mut self, filter: &GroupFilter) -> FillStatus {
        self.rounds += 1;
        self.kept += filter.kept.len();
        self.dropped += filter.dropped;
        self.status()
    }

    /// Whether to stop, or how many more groups to sample.
    pub fn status(&self) -> FillStatus {
        if self.kept >= self.target {
            FillStatus::Full
        } else if self.rounds >= self.max_rounds {
            FillStatus::RoundCapReached
        } else {
            FillStatus::NeedMore(self.target - self.kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_equal_and_singleton_groups() {
        let f = filter_groups(&[1.0, 1.0, 0.0, 1.0, 0.5, 0.3, 0.3 + 1e-13], &[2, 2, 1, 2]).unwrap();
        assert_eq!(f, GroupFilter { kept: vec![1], dropped: 3 });
    }

    #[test]
    fn a_difference_just_above_tolerance_is_kept() {
        let f = filter_groups(&[0.0, 2e-12], &[2]).unwrap();
        assert_eq!(f.kept, vec![0]);
    }

    #[test]
    fn bad_input() {
        assert!(filter_groups(&[1.0], &[0, 1]).unwrap_err().to_string().contains("group 0 is empty"));
        assert!(filter_groups(&[1.0], &[2]).is_err());
        assert!(filter_groups(&[1.0, f64::NAN], &[2]).unwrap_err().to_string().contains("reward 1"));
        assert!(BatchFiller::new(0, 1).is_err());
        assert!(BatchFiller::new(1, 0).is_err());
    }

    #[test]
    fn filler_states() {
        let mut b = BatchFiller::new(4, 2).unwrap();
        assert_eq!(b.status(), FillStatus::NeedMore(4));
        assert_eq!(b.record(&GroupFilter { kept: vec![0, 2], dropped: 2 }), FillStatus::NeedMore(2));
        assert_eq!(b.record(&GroupFilter { kept: vec![1], dropped: 1 }), FillStatus::RoundCapReached);
        assert_eq!((b.kept, b.dropped, b.rounds), (3, 3, 2));
        let mut b = BatchFiller::new(2, 1).unwrap();
        assert_eq!(b.record(&GroupFilter { kept: vec![0, 1, 2], dropped: 0 }), FillStatus::Full);
    }
}
