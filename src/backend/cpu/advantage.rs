//! Group-relative advantages in f64, the CPU oracle of [`AdvantageOps`] (the kernel computes
//! in f32): each reward minus its group's mean, divided by a standard deviation plus eps as
//! [`AdvantageScaling`] says, then clipped. Standard deviations are unbiased (divisor n − 1,
//! `torch.std`'s default, as TRL uses); a group of one has spread 0, so its advantage is 0
//! instead of torch's NaN. The checked entry points with errors are `crate::rl::advantage`'s.

use super::CpuBackend;
use crate::backend::advantage::{AdvantageParams, AdvantageScaling, GroupOffsets};
use crate::backend::ops::AdvantageOps;

/// Mean and unbiased standard deviation of `xs`. A single value has std 0; an empty slice gives
/// NaN for both.
///
/// The mean is taken as `x_0 + mean(x_i − x_0)`: when every value is equal the deviations are
/// exactly 0, so the mean equals the values bit for bit and their advantages are exactly 0
/// (a plain `sum / n` would leave rounding residue that `/ eps` then magnifies). Shifting by a
/// sample also keeps the sums small when rewards share a large offset.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let Some(&x0) = xs.first() else {
        return (f64::NAN, f64::NAN);
    };
    let n = xs.len() as f64;
    let mean = x0 + xs.iter().map(|x| x - x0).sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// Advantages of `rewards` in consecutive groups of `group_sizes` (non-empty, summing to
/// `rewards.len()`, every reward finite: the caller has checked), in the order of `rewards`.
pub fn group_advantages(
    rewards: &[f64],
    group_sizes: &[usize],
    scaling: AdvantageScaling,
    eps: f64,
    clip: Option<f64>,
) -> Vec<f64> {
    let batch_std = mean_std(rewards).1;
    let mut out = Vec::with_capacity(rewards.len());
    let mut start = 0;
    for &size in group_sizes {
        let group = &rewards[start..start + size];
        let (mean, std) = mean_std(group);
        let denom = match scaling {
            AdvantageScaling::Group => Some(std + eps),
            AdvantageScaling::Batch => Some(batch_std + eps),
            AdvantageScaling::None => None,
        };
        out.extend(group.iter().map(|&r| {
            let centred = r - mean;
            // With eps = 0 and zero spread the centred value is exactly 0 (see `mean_std`);
            // keep it 0 instead of producing 0/0.
            let a = match denom {
                Some(d) if centred != 0.0 => centred / d,
                _ => centred,
            };
            match clip {
                Some(c) => a.clamp(-c, c),
                None => a,
            }
        }));
        start += size;
    }
    out
}

impl AdvantageOps for CpuBackend {
    fn group_advantage(
        &self,
        out: &mut Vec<f32>,
        rewards: &Vec<f32>,
        offsets: &GroupOffsets<Self>,
        p: AdvantageParams,
    ) {
        let n = offsets.len();
        assert!(
            rewards.len() == n && out.len() == n,
            "group_advantage (N={n}, G={}): rewards ({}) and out ({}) must hold N values",
            offsets.groups(),
            rewards.len(),
            out.len()
        );
        let sizes: Vec<usize> = offsets.ids().windows(2).map(|w| (w[1] - w[0]) as usize).collect();
        let r64: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        // The kernel's "clip ≤ 0 is off" convention, so both backends read a params value alike.
        let clip = p.clip.filter(|&c| c > 0.0).map(f64::from);
        let adv = group_advantages(&r64, &sizes, p.scaling, p.eps as f64, clip);
        out.iter_mut().zip(adv).for_each(|(o, a)| *o = a as f32);
    }
}
