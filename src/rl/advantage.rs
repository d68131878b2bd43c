//! Group-relative advantages: each completion's scalar reward minus the mean reward of the
//! completions sampled for the same prompt, optionally divided by a standard deviation.
//!
//! Groups may be ragged (dynamic sampling and failed generations leave groups of different
//! sizes), so groups are given either as consecutive sizes or as one group id per reward.
//!
//! Standard deviations are **unbiased** (Bessel-corrected, divisor n − 1), which is what
//! `torch.std` computes by default and therefore what TRL's GRPO trainer uses. A group (or a
//! batch) of one reward has no spread to estimate; its standard deviation is taken as 0 rather
//! than torch's NaN, so its advantage is exactly 0 and nothing downstream sees a NaN.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::backend::advantage::AdvantageScaling;

/// How advantages are computed from rewards.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvantageConfig {
    /// Which standard deviation (if any) divides the centred reward.
    pub scaling: AdvantageScaling,
    /// Added to the standard deviation before dividing; TRL's value 1e-4 by default.
    pub eps: f64,
    /// When set, advantages are clipped to `[−c, c]` after scaling.
    pub clip: Option<f64>,
}

impl Default for AdvantageConfig {
    /// Group scaling, eps 1e-4 (as TRL), no clipping.
    fn default() -> Self {
        AdvantageConfig { scaling: AdvantageScaling::Group, eps: 1e-4, clip: None }
    }
}

impl AdvantageConfig {
    /// Checks that `eps` is finite and non-negative and that a clip bound is finite and positive.
    pub fn validate(&self) -> Result<()> {
        if !self.eps.is_finite() || self.eps < 0.0 {
            return Err(Error::Invalid(format!("advantage eps must be finite and >= 0, got {}", self.eps)));
        }
        if let Some(c) = self.clip {
            if !c.is_finite() || c <= 0.0 {
                return Err(Error::Invalid(format!("advantage clip must be finite and > 0, got {c}")));
            }
        }
        Ok(())
    }
}

pub use crate::backend::cpu::advantage::mean_std;

fn check_finite(rewards: &[f64]) -> Result<()> {
    match rewards.iter().position(|r| !r.is_finite()) {
        Some(i) => Err(Error::Invalid(format!("reward {i} is not finite ({})", rewards[i]))),
        None => Ok(()),
    }
}

/// Advantages for `rewards` split into consecutive groups of `group_sizes` (which must sum to
/// `rewards.len()`); the output is in the order of `rewards`.
///
/// Errors: an empty batch, a group of size 0 (named by its index), sizes that do not sum to the
/// number of rewards, a non-finite reward (named by its index), or an invalid `config`.
pub fn group_advantages(rewards: &[f64], group_sizes: &[usize], config: &AdvantageConfig) -> Result<Vec<f64>> {
    config.validate()?;
    if rewards.is_empty() {
        return Err(Error::Invalid("advantages of an empty batch".into()));
    }
    if let Some(g) = group_sizes.iter().position(|&s| s == 0) {
        return Err(Error::Invalid(format!("group {g} is empty")));
    }
    let total: usize = group_sizes.iter().sum();
    if total != rewards.len() {
        return Err(Error::Invalid(format!("group sizes sum to {total} but there are {} rewards", rewards.len())));
    }
    check_finite(rewards)?;

    Ok(crate::backend::cpu::advantage::group_advantages(rewards, group_sizes, config.scaling, config.eps, config.clip))
}

/// Advantages for `rewards` grouped by `group_ids` (one id per reward, e.g. the prompt id);
/// members of a group need not be adjacent. The output is in the order of `rewards`.
///
/// Errors: mismatched lengths, an empty batch, a non-finite reward, or an invalid `config`.
pub fn group_advantages_by_id<K: Ord>(rewards: &[f64], group_ids: &[K], config: &AdvantageConfig) -> Result<Vec<f64>> {
    if rewards.len() != group_ids.len() {
        return Err(Error::Invalid(format!("{} rewards but {} group ids", rewards.len(), group_ids.len())));
    }
    // Checked here so the error names the index in the caller's slice, not in the gathered copy.
    check_finite(rewards)?;
    // Gather each group's members (groups in id order, members in input order), compute on the
    // gathered layout, then scatter back.
    let mut members: BTreeMap<&K, Vec<usize>> = BTreeMap::new();
    for (i, id) in group_ids.iter().enumerate() {
        members.entry(id).or_default().push(i);
    }
    let order: Vec<usize> = members.values().flatten().copied().collect();
    let sizes: Vec<usize> = members.values().map(Vec::len).collect();
    let gathered: Vec<f64> = order.iter().map(|&i| rewards[i]).collect();
    let adv = group_advantages(&gathered, &sizes, config)?;
    let mut out = vec![0.0; rewards.len()];
    for (&i, a) in order.iter().zip(adv) {
        out[i] = a;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn group_scaling_by_hand() {
        // Group [1, 2, 3]: mean 2, unbiased std 1. Group [0, 4]: mean 2, std sqrt(8).
        let cfg = AdvantageConfig { eps: 0.0, ..Default::default() };
        let a = group_advantages(&[1.0, 2.0, 3.0, 0.0, 4.0], &[3, 2], &cfg).unwrap();
        let s = 8f64.sqrt();
        close(&a, &[-1.0, 0.0, 1.0, -2.0 / s, 2.0 / s]);
        // The default eps 1e-4 enters the denominator.
        let a = group_advantages(&[1.0, 2.0, 3.0], &[3], &AdvantageConfig::default()).unwrap();
        close(&a, &[-1.0 / 1.0001, 0.0, 1.0 / 1.0001]);
    }

    #[test]
    fn batch_and_none_scaling_by_hand() {
        let r = [1.0, 3.0, 10.0, 14.0];
        // Batch: mean 7, deviations -6 -4 3 7, ss 36+16+9+49 = 110, unbiased var 110/3.
        let bstd = (110.0f64 / 3.0).sqrt();
        let cfg = AdvantageConfig { scaling: AdvantageScaling::Batch, eps: 0.0, clip: None };
        close(&group_advantages(&r, &[2, 2], &cfg).unwrap(), &[-1.0 / bstd, 1.0 / bstd, -2.0 / bstd, 2.0 / bstd]);
        let cfg = AdvantageConfig { scaling: AdvantageScaling::None, ..Default::default() };
        close(&group_advantages(&r, &[2, 2], &cfg).unwrap(), &[-1.0, 1.0, -2.0, 2.0]);
    }

    #[test]
    fn singleton_and_equal_groups_are_exactly_zero() {
        for scaling in [AdvantageScaling::Group, AdvantageScaling::Batch, AdvantageScaling::None] {
            for eps in [0.0, 1e-4] {
                let cfg = AdvantageConfig { scaling, eps, clip: None };
                let a = group_advantages(&[0.1, 0.1, 0.1, 5.0, 0.7, 0.7], &[3, 1, 2], &cfg).unwrap();
                assert_eq!(a, vec![0.0; 6], "{scaling:?} eps {eps}");
            }
        }
    }

    #[test]
    fn clipping() {
        let cfg = AdvantageConfig { scaling: AdvantageScaling::None, eps: 0.0, clip: Some(1.5) };
        close(&group_advantages(&[0.0, 4.0, 1.0, 2.0], &[2, 2], &cfg).unwrap(), &[-1.5, 1.5, -0.5, 0.5]);
    }

    #[test]
    fn ids_match_sizes_on_interleaved_groups() {
        let cfg = AdvantageConfig::default();
        let by_id = group_advantages_by_id(&[1.0, 0.0, 2.0, 4.0, 3.0], &["a", "b", "a", "b", "a"], &cfg).unwrap();
        let by_size = group_advantages(&[1.0, 2.0, 3.0, 0.0, 4.0], &[3, 2], &cfg).unwrap();
        close(&by_id, &[by_size[0], by_size[3], by_size[1], by_size[4], by_size[2]]);
    }

    #[test]
    fn bad_input_is_named() {
        let cfg = AdvantageConfig::default();
        let msg = |e: Error| e.to_string();
        assert!(msg(group_advantages(&[1.0, 2.0], &[2, 0], &cfg).unwrap_err()).contains("group 1 is empty"));
        assert!(msg(group_advantages(&[1.0, 2.0], &[3], &cfg).unwrap_err()).contains("sum to 3"));
        assert!(msg(group_advantages(&[], &[], &cfg).unwrap_err()).contains("empty batch"));
        assert!(msg(group_advantages(&[1.0, f64::NAN], &[2], &cfg).unwrap_err()).contains("reward 1"));
        assert!(
            msg(group_advantages_by_id(&[1.0, 2.0, f64::INFINITY], &[0, 1, 0], &cfg).unwrap_err()).contains("reward 2")
        );
        assert!(msg(group_advantages_by_id(&[1.0], &[0, 1], &cfg).unwrap_err()).contains("2 group ids"));
        let bad = AdvantageConfig { eps: -1.0, ..cfg };
        assert!(group_advantages(&[1.0], &[1], &bad).is_err());
        let bad = AdvantageConfig { clip: Some(0.0), ..cfg };
        assert!(group_advantages(&[1.0], &[1], &bad).is_err());
    }
}
