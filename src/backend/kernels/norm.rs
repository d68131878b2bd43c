//! Launch wrappers of the GPT-2 layer kernels: layer norm (`kernels/layernorm.cu`) and the
//! fused weighted cross-entropy (`kernels/cross_entropy.cu`), the device forms of
//! [`crate::backend::Backend::layernorm_forward`] / `layernorm_backward` / `cross_entropy`.
//!
//! Shapes: N rows of C channels (layer norm), N rows of V logits (cross-entropy).

use super::{dim, run, threads_for, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};

/// Threads per layer-norm row: enough to stride C, at most 256 (C = 768/1024 gives each thread
/// 3–4 channels; a larger block would make the per-row reductions cost more than the work).
fn ln_block(c: usize) -> u32 {
    threads_for(c, 256)
}

/// Fewest rows one backward block takes: a block's partial sums (2C values) are written once
/// and read back once by the second kernel, so each block should cover several rows.
const LN_BWD_MIN_ROWS: usize = 8;

/// Most backward blocks: 512 blocks of 256 threads keep every SM of a current GPU (132 on an
/// H100) busy with several blocks, while the (G, 2C) workspace stays small (3 MiB at C = 768)
/// and the second kernel's G-term sums short.
const LN_BWD_MAX_BLOCKS: usize = 512;

/// Largest C the backward takes: its block keeps 2·C f32 of dynamic shared memory, and
/// 48 KiB is the most a launch gets without opting in.
pub const LAYERNORM_BACKWARD_MAX_C: usize = 48 * 1024 / 8;

/// The number of blocks G of a layer-norm backward over `n` rows; its workspace holds
/// G·2·C f32 ([`layernorm_backward_workspace`]).
pub fn layernorm_backward_blocks(n: usize) -> usize {
    n.div_ceil(LN_BWD_MIN_ROWS).clamp(1, LN_BWD_MAX_BLOCKS)
}

/// f32 values of the workspace [`layernorm_backward`] needs for (N, C).
pub fn layernorm_backward_workspace(n: usize, c: usize) -> usize {
    layernorm_backward_blocks(n) * 2 * c
}

/// Threads per cross-entropy row: enough to stride V, at most 256 (V = 50257 gives each
/// thread ~200 columns; N ≈ B·T rows give thousands of blocks, which fill the GPU).
fn ce_block(v: usize) -> u32 {
    threads_for(v, 256)
}

/// `layernorm_forward_f32`: `out (N,C) = (inp − mean)·rstd·w + bias`, and each row's `mean`,
/// `rstd` (N). One block per row. Nothing is launched when N·C = 0.
///
/// # Safety
/// `out` and `inp` must address N·C f32, `w` and `bias` C f32, `mean` and `rstd` N f32; the
/// written buffers (out, mean, rstd) must not overlap each other or the inputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn layernorm_forward<L: Launcher>(
    dev: &L,
    out: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    bias: DevPtr,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<(), L::Error> {
    if n * c == 0 {
        return Ok(());
    }
    let (ni, ci) = (dim("N", n), dim("C", c));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&mean).arg(&rstd).arg(&inp).arg(&w).arg(&bias).arg(&ni).arg(&ci).arg(&eps);
    // SAFETY: block r reads row r of inp, w and bias, writes row r of out and mean/rstd[r];
    // the caller guarantees those extents and that the outputs do not alias.
    unsafe { run(dev, "layernorm_forward_f32", Launch::linear(ni as u32, ln_block(c)), &mut args) }
}

/// `layernorm_backward_f32` then `layernorm_param_grad_f32`: **accumulates** into `dinp (N,C)`,
/// `dw (C)` and `dbias (C)` given `dout (N,C)`, the forward's `inp (N,C)`, `w (C)` and its
/// `mean`, `rstd (N)`. G = [`layernorm_backward_blocks`] blocks take every G-th row and write
/// their per-channel sums to `workspace (G, 2C)`, which the second kernel adds to dw, dbias in
/// order (deterministic; see `kernels/layernorm.cu` for why not atomics). Nothing is launched
/// when N·C = 0.
///
/// # Panics
/// If C > [`LAYERNORM_BACKWARD_MAX_C`] (the block's 2·C shared floats would exceed 48 KiB).
///
/// # Safety
/// `dinp`, `dout`, `inp` must address N·C f32, `dw`, `dbias`, `w` C f32, `mean`, `rstd` N f32,
/// `workspace` [`layernorm_backward_workspace`]`(N, C)` f32; the written buffers (dinp, dw,
/// dbias, workspace) must not overlap each other or the inputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn layernorm_backward<L: Launcher>(
    dev: &L,
    dinp: DevPtr,
    dw: DevPtr,
    dbias: DevPtr,
    workspace: DevPtr,
    dout: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    n: usize,
    c: usize,
) -> Result<(), L::Error> {
    if n * c == 0 {
        return Ok(());
    }
    assert!(c <= LAYERNORM_BACKWARD_MAX_C, "layernorm_backward: C = {c} exceeds {LAYERNORM_BACKWARD_MAX_C}");
    let g = layernorm_backward_blocks(n);
    let (ni, ci, gi) = (dim("N", n), dim("C", c), dim("G", g));
    let shared = (2 * c * std::mem::size_of::<f32>()) as u32;
    let cfg = Launch::linear(gi as u32, ln_block(c)).with_shared(shared);
    let mut args = KernelArgs::new();
    args.arg(&dinp).arg(&workspace).arg(&dout).arg(&inp).arg(&w).arg(&mean).arg(&rstd).arg(&ni).arg(&ci);
    // SAFETY: block b updates dinp rows b, b+G, ... (each row belongs to one block), reads the
    // same rows of dout/inp and mean/rstd, and writes workspace row b (2C values, within
    // G·2C); the caller guarantees the extents and that nothing aliases.
    unsafe { run(dev, "layernorm_backward_f32", cfg, &mut args) }?;
    let mut args = KernelArgs::new();
    args.arg(&dw).arg(&dbias).arg(&workspace).arg(&gi).arg(&ci);
    // SAFETY: thread j reads workspace[:, j] and [:, C + j] (written by the launch above, which
    // completes first on the same stream) and updates dw[j], dbias[j], j < C.
    unsafe { run(dev, "layernorm_param_grad_f32", Launch::cover(c, 128), &mut args) }
}

/// `cross_entropy_f32`: `losses[i] = weights[i]·(−log softmax(logits[i])[targets[i]])` for the
/// N rows of `logits (N,V)`; with `backward`, each row is overwritten by
/// `weights[i]·(softmax − onehot(targets[i]))`, else the logits are left as they are. A target
/// ≥ V gives a NaN loss (and a NaN row with `backward`). One block per row; nothing is
/// launched when N = 0 (or V = 0, where no row has a valid target).
///
/// # Safety
/// `logits` must address N·V f32 (written with `backward`); `targets` (u32), `weights` and
/// `losses` (f32) N values; `losses` and `logits` must not overlap each other or the inputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn cross_entropy<L: Launcher>(
    dev: &L,
    logits: DevPtr,
    losses: DevPtr,
    targets: DevPtr,
    weights: DevPtr,
    n: usize,
    v: usize,
    backward: bool,
) -> Result<(), L::Error> {
    if n == 0 || v == 0 {
        return Ok(());
    }
    let (ni, vi, bwd) = (dim("N", n), dim("V", v), i32::from(backward));
    let mut args = KernelArgs::new();
    args.arg(&logits).arg(&losses).arg(&targets).arg(&weights).arg(&ni).arg(&vi).arg(&bwd);
    // SAFETY: block r reads (and with backward overwrites) logits row r, reads targets[r] and
    // weights[r], writes losses[r]; the caller guarantees the extents and no aliasing.
    unsafe { run(dev, "cross_entropy_f32", Launch::linear(ni as u32, ce_block(v)), &mut args) }
}
