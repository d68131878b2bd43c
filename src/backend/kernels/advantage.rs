//! Group-relative advantage normalisation (`kernels/advantage.cu`), the f32 device form of
//! [`crate::rl::advantage::group_advantages`].

use super::{dim, run, threads_for, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};
use crate::rl::advantage::AdvantageScaling;

/// `group_advantage_f32` over N rewards in G ragged groups: `offsets` (G+1 `i32`: 0, end of
/// group 0, ..., N) delimits the groups. `clip` of `None` (or ≤ 0) disables clipping.
/// One block of up to 256 threads; nothing is launched for N = 0.
///
/// # Safety
/// `out` and `rewards` must address N f32 each (not overlapping), `offsets` G+1 increasing
/// `i32` from 0 to N with no empty group.
#[allow(clippy::too_many_arguments)]
pub unsafe fn group_advantage<L: Launcher>(
    dev: &L,
    out: DevPtr,
    rewards: DevPtr,
    offsets: DevPtr,
    g: usize,
    n: usize,
    scaling: AdvantageScaling,
    eps: f32,
    clip: Option<f32>,
) -> Result<(), L::Error> {
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
