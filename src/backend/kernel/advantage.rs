//! Group-relative advantage normalisation (`kernels/advantage.cu`), the f32 device form of
//! [`crate::backend::cpu::advantage`].

use super::{DeviceBuf, KernelBackend};
use crate::backend::advantage::{AdvantageParams, AdvantageScaling, GroupOffsets};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::AdvantageOps;

/// `group_advantage_f32` over N rewards in G ragged groups: `offsets` (G+1 `i32`: 0, end of
/// group 0, ..., N) delimits the groups. `clip` of `None` (or ≤ 0) disables clipping.
/// One block of up to 256 threads; nothing is launched for N = 0.
///
/// # Safety
/// `out` and `rewards` must address N f32 each (not overlapping), `offsets` G+1 increasing
/// `i32` from 0 to N with no empty group.
unsafe fn group_advantage<L: Launcher>(
    dev: &L,
    out: DevPtr,
    [rewards, offsets]: [DevPtr; 2],
    (g, n): (usize, usize),
    p: AdvantageParams,
) -> Result<(), L::Error> {
    let AdvantageParams { scaling, eps, clip } = p;
    if n == 0 {
        return Ok(());
    }
    let (gi, ni) = (dim("G", g), dim("N", n));
    let sc: i32 = match scaling {
        AdvantageScaling::Group => 0,
        AdvantageScaling::Batch => 1,
        AdvantageScaling::None => 2,
    };
    let clip = clip.unwrap_or(0.0);
    // One warp per group, up to 8 warps (the warps then loop over the remaining groups).
    let cfg = Launch::linear(1, threads_for(g.max(1) * 32, 256));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&rewards).arg(&offsets).arg(&gi).arg(&ni).arg(&sc).arg(&eps).arg(&clip);
    // SAFETY: the single block reads rewards[0..N], offsets[0..G+1] and writes out[0..N].
    unsafe { run(dev, "group_advantage_f32", cfg, &mut args) }
}

impl<D: Device> AdvantageOps for KernelBackend<D> {
    fn group_advantage(
        &self,
        out: &mut DeviceBuf<D>,
        rewards: &DeviceBuf<D>,
        offsets: &GroupOffsets<Self>,
        p: AdvantageParams,
    ) {
        let (n, g) = (offsets.len(), offsets.groups());
        let shapes = format!("N={n}, G={g}");
        assert!(
            rewards.len == n && out.len == n,
            "group_advantage ({shapes}): rewards ({}) and out ({}) must hold N values",
            rewards.len,
            out.len
        );
        let (o, r, off) = (self.ptr32_mut(out), self.ptr32(rewards), self.ptr32(offsets.ids()));
        // SAFETY: out and rewards hold N f32 in separate allocations; offsets holds G+1
        // increasing values from 0 to N < 2³¹ (checked when it was built).
        let res = unsafe { group_advantage(&*self.dev, o, [r, off], (g, n), p) };
        self.ok("group_advantage", &shapes, res);
    }
}
