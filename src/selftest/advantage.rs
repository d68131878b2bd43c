//! Parity cases of the group-advantage op: ragged groups, every scaling, eps and clip.

use super::{case_seed, nans, Report, Tol};
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{AdvantageParams, AdvantageScaling, GroupOffsets};
use crate::rl::advantage::{group_advantages, AdvantageConfig};
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    // Ragged groups: singletons, a group wider than a warp, sizes that are not multiples of 32.
    let sizes = [1usize, 5, 3, 40, 8, 1, 16, 33, 2, 7, 12, 4];
    let n: usize = sizes.iter().sum();
    let shape = format!("N={n} G={} (12 configs)", sizes.len());
    rep.case("group_advantage", &shape, |rep| {
        let mut rng = Rng::new(case_seed(seed, 7));
        let mut rewards: Vec<f32> = Vec::new();
        for (gi, &s) in sizes.iter().enumerate() {
            for _ in 0..s {
                rewards.push(match gi % 4 {
                    0 => rng.normal(),
                    1 => (rng.below(2)) as f32, // binary rewards
                    2 => 0.75,                  // all equal: advantages exactly 0
                    _ => 3.0 + 0.1 * rng.normal(),
                });
            }
        }
        let mut offsets = vec![0u32];
        for &s in &sizes {
            offsets.push(offsets.last().copied().unwrap_or(0) + s as u32);
        }
        let r64: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        let d_r = k.upload(&rewards);
        let offsets = match GroupOffsets::new(k, &offsets) {
            Ok(o) => o,
            Err(e) => return rep.check("group_advantage", &shape, false, &e),
        };
        for scaling in [AdvantageScaling::Group, AdvantageScaling::Batch, AdvantageScaling::None] {
            for eps in [1e-4f32, 0.0] {
                for clip in [None, Some(1.5f32)] {
                    let cfg = AdvantageConfig { scaling, eps: eps as f64, clip: clip.map(|c| c as f64) };
                    let what = format!("{scaling:?}, eps {eps}, clip {clip:?}");
                    let want: Vec<f32> = match group_advantages(&r64, &sizes, &cfg) {
                        Ok(a) => a.iter().map(|&a| a as f32).collect(),
                        Err(e) => {
                            rep.check("group_advantage", &shape, false, &format!("{what}: oracle failed: {e}"));
                            continue;
                        }
                    };
                    let mut d_out = k.upload(&nans(n));
                    k.group_advantage(&mut d_out, &d_r, &offsets, AdvantageParams { scaling, eps, clip });
                    let got = k.download(&d_out);
                    // f32 means and sums of squares over 132 values (the oracle's are
                    // f64): relative error ~n·2⁻²⁴ ≈ 1e-5 on the std, carried into A = c/std,
                    // where |A| ≤ ~6 for these groups. 2e-5·max(|A|,1) + 1e-5 absolute.
                    let tol = Tol::Each { tol: 2e-5, floor: 1.0, abs: 1e-5 };
                    rep.cmp("group_advantage", &shape, &got, &want, tol, &format!("per value; worst {what}"));
                    // Equal-reward groups and singletons give exactly 0 on both sides.
                    let zeros: Vec<f32> = got.iter().zip(&want).filter(|(_, &w)| w == 0.0).map(|(&g, _)| g).collect();
                    let want_zeros = vec![0.0f32; zeros.len()];
                    rep.cmp("group_advantage/zeros", &shape, &zeros, &want_zeros, Tol::Exact, "equal rewards give 0");
                }
            }
        }
    });
}
