//! Layer norm (`kernels/layernorm.cu`): one block per row forward; the backward in blocks of
//! rows writing per-block parameter partials, summed by a second kernel. Shapes: N rows of C
//! channels.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::LayerNormOps;
use crate::backend::precision::Dtype;
use crate::backend::shapes::{Affine, LayerNormShape, LnStats};

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
fn layernorm_backward_blocks(n: usize) -> usize {
    n.div_ceil(LN_BWD_MIN_ROWS).clamp(1, LN_BWD_MAX_BLOCKS)
}

/// f32 values of the workspace [`layernorm_backward`] needs for (N, C).
pub(crate) fn layernorm_backward_workspace(n: usize, c: usize) -> usize {
    layernorm_backward_blocks(n) * 2 * c
}

/// `layernorm_forward_{dtype}`: `out (N,C, dtype) = (inp − mean)·rstd·w + bias`, and each
/// row's `mean`, `rstd` (N). One block per row. Nothing is launched when N·C = 0.
///
/// # Safety
/// `out` must address N·C values of `dtype`, `inp` N·C f32, `w` and `bias` C f32, `mean` and `rstd` N f32; the
/// written buffers (out, mean, rstd) must not overlap each other or the inputs.
unsafe fn layernorm_forward<L: Launcher>(
    dev: &L,
    out: DevPtr,
    dtype: Dtype,
    stats: LnStats<DevPtr>,
    inp: DevPtr,
    p: Affine<DevPtr>,
    s: LayerNormShape,
) -> Result<(), L::Error> {
    let (LnStats { mean, rstd }, Affine { w, b: bias }, LayerNormShape { n, c, eps }) = (stats, p, s);
    if n * c == 0 {
        return Ok(());
    }
    let (ni, ci) = (dim("N", n), dim("C", c));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&mean).arg(&rstd).arg(&inp).arg(&w).arg(&bias).arg(&ni).arg(&ci).arg(&eps);
    // SAFETY: block r reads row r of inp, w and bias, writes row r of out and mean/rstd[r];
    // the caller guarantees those extents and that the outputs do not alias.
    let name = format!("layernorm_forward_{dtype}");
    unsafe { run(dev, &name, Launch::linear(ni as u32, ln_block(c)), &mut args) }
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
unsafe fn layernorm_backward<L: Launcher>(
    dev: &L,
    [dinp, workspace]: [DevPtr; 2],
    dp: Affine<DevPtr>,
    [dout, inp, w]: [DevPtr; 3],
    stats: LnStats<DevPtr>,
    (n, c): (usize, usize),
) -> Result<(), L::Error> {
    let (Affine { w: dw, b: dbias }, LnStats { mean, rstd }) = (dp, stats);
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

impl<D: Device> LayerNormOps for KernelBackend<D> {
    fn layernorm_forward(
        &self,
        out: &mut DeviceBuf<D>,
        stats: LnStats<&mut DeviceBuf<D>>,
        inp: &DeviceBuf<D>,
        p: Affine<&DeviceBuf<D>>,
        s: LayerNormShape,
    ) {
        let (n, c) = (s.n, s.c);
        let shapes = format!("N={n}, C={c}");
        let sizes = [out.len, stats.mean.len, stats.rstd.len, inp.len, p.w.len, p.b.len];
        assert_eq!(sizes, [n * c, n, n, n * c, c, c], "layernorm_forward ({shapes}): buffer sizes");
        // Only the output may be bf16: input, parameters and statistics are f32.
        let dtype = out.dtype;
        let o = self.ptr_mut(out);
        let st = stats.map(|b| self.ptr32_mut(b));
        let (x, pp) = (self.ptr32(inp), p.map(|b| self.ptr32(b)));
        // SAFETY: every buffer holds the extent the launcher asks for (checked above); the
        // outputs are distinct allocations (three &mut), not the inputs.
        let res = unsafe { layernorm_forward(&*self.dev, o, dtype, st, x, pp, s) };
        self.ok("layernorm_forward", &shapes, res);
    }

    fn layernorm_backward(
        &self,
        dinp: &mut DeviceBuf<D>,
        dp: Affine<&mut DeviceBuf<D>>,
        dout: &DeviceBuf<D>,
        inp: &DeviceBuf<D>,
        w: &DeviceBuf<D>,
        stats: LnStats<&DeviceBuf<D>>,
        s: LayerNormShape,
    ) {
        let (n, c) = (s.n, s.c);
        let shapes = format!("N={n}, C={c}");
        let sizes = [dinp.len, dp.w.len, dp.b.len, dout.len, inp.len, w.len, stats.mean.len, stats.rstd.len];
        assert_eq!(sizes, [n * c, c, c, n * c, n * c, c, n, n], "layernorm_backward ({shapes}): buffer sizes");
        assert!(
            c <= LAYERNORM_BACKWARD_MAX_C,
            "layernorm_backward ({shapes}): C above the kernel's {LAYERNORM_BACKWARD_MAX_C} channels"
        );
        if n * c == 0 {
            return;
        }
        let mut workspace = self.scratch("layernorm_backward", layernorm_backward_workspace(n, c));
        let outs = [self.ptr32_mut(dinp), self.ptr32_mut(&mut workspace)];
        let dpp = dp.map(|b| self.ptr32_mut(b));
        let ins = [self.ptr32(dout), self.ptr32(inp), self.ptr32(w)];
        let st = stats.map(|b| self.ptr32(b));
        // SAFETY: sizes checked above, the workspace holds layernorm_backward_workspace(N, C)
        // f32; the four written buffers are distinct allocations, not the inputs.
        let res = unsafe { layernorm_backward(&*self.dev, outs, dpp, ins, st, (n, c)) };
        self.ok("layernorm_backward", &shapes, res);
    }
}
