//! The settings of the group-advantage op ([`AdvantageOps`]) and its checked group boundaries.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // for the doc links
use super::ops::AdvantageOps;
use super::ops::MemoryOps;

/// What the centred reward `r − mean_g` is divided by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScaling {
    /// `(r − mean_g) / (std_g + eps)`: each group's own standard deviation (GRPO).
    #[default]
    Group,
    /// `(r − mean_g) / (std_batch + eps)`: the standard deviation of all rewards in the batch,
    /// which keeps groups of nearly equal rewards from being blown up to unit scale.
    Batch,
    /// `r − mean_g`: no division at all (Dr. GRPO), so easy and hard prompts are not reweighted.
    None,
}

/// The constants of one [`AdvantageOps::group_advantage`] call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdvantageParams {
    /// Which standard deviation (if any) divides the centred reward.
    pub scaling: AdvantageScaling,
    /// Added to the standard deviation before dividing.
    pub eps: f32,
    /// Advantages are clipped to `[−c, c]` after scaling; `None` (or c ≤ 0): no clipping.
    pub clip: Option<f32>,
}

/// Group boundaries, checked on the host and uploaded once: G+1 increasing offsets from 0 to
/// N (group g is `offsets[g]..offsets[g+1]`), no group empty.
pub struct GroupOffsets<B: MemoryOps> {
    ids: B::Ids,
    groups: usize,
    n: usize,
}

impl<B: MemoryOps> GroupOffsets<B> {
    /// Checks `offsets` and uploads them to `backend`.
    pub fn new(backend: &B, offsets: &[u32]) -> Result<Self, String> {
        let valid = offsets.len() >= 2 && offsets[0] == 0 && offsets.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return Err(format!(
                "group offsets must rise strictly from 0 (at least one group, none empty): {:?}",
                &offsets[..offsets.len().min(8)]
            ));
        }
        if i32::try_from(offsets[offsets.len() - 1]).is_err() {
            return Err(format!("{} rewards do not fit the kernel's int offsets", offsets[offsets.len() - 1]));
        }
        let n = offsets[offsets.len() - 1] as usize;
        Ok(GroupOffsets { ids: backend.upload_ids(offsets), groups: offsets.len() - 1, n })
    }
    /// Number of groups, G.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// Number of rewards, N.
    pub fn len(&self) -> usize {
        self.n
    }
    /// True when there are no rewards (never: a group is never empty).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The G+1 offsets on the backend.
    pub fn ids(&self) -> &B::Ids {
        &self.ids
    }
}
