//! Launch wrappers of the GPT-2 layer kernels: embeddings (`kernels/encoder.cu`), GELU
//! (`kernels/gelu.cu`), bias gradients, AdamW, the global norm and scaling
//! (`kernels/optim.cu`). Shapes: N rows (B·T) or values, T positions, C channels, V vocabulary
//! rows of wte, P position rows of wpe.
//!
//! Most of these kernels are elementwise with a grid-stride loop: blocks of [`THREADS`] threads,
//! enough blocks to cover the work up to [`MAX_BLOCKS`], beyond which threads loop. 1024 blocks
//! of 256 threads is about one full wave on an H100 (132 SMs × 2048 resident threads), so
//! larger grids only add scheduling work, and the cap keeps the global norm's partial sums
//! (one per block) few.

use super::{dim, run, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};
use crate::backend::AdamWStep;

/// Threads per block of the elementwise kernels (a multiple of 32, as the block reductions
/// need).
pub const THREADS: u32 = 256;
/// Most blocks an elementwise launch uses; past that the grid-stride loops take over.
pub const MAX_BLOCKS: u32 = 1024;
/// Threads per block of the global norm's final reduction (one block).
const FINAL_THREADS: u32 = 1024;
/// Rows per column strip of `bias_backward_f32` (its `BIAS_ROW_GROUPS`): blocks of 32 × 8.
const BIAS_ROW_GROUPS: u32 = 8;

/// The elementwise launch for `n` items: ⌈n / 256⌉ blocks of 256 threads, at most 1024.
pub fn elementwise(n: usize) -> Launch {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS as usize);
    Launch::linear(blocks as u32, THREADS)
}

/// `n` as the kernels' 64-bit element count.
fn count(n: usize) -> i64 {
    i64::try_from(n).expect("element count fits in i64")
}

/// `encoder_forward_f32`: `out (N,C) = wte[ids[r]] + wpe[r % T]` for N = B·T rows; a row whose
/// id is ≥ V is NaN. Nothing is launched when N·C = 0.
///
/// # Safety
/// `out` holds N·C f32 and must not overlap the inputs; `ids` holds N u32, `wte` V·C f32,
/// `wpe` T·C f32.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encoder_forward<L: Launcher>(
    dev: &L,
    out: DevPtr,
    ids: DevPtr,
    wte: DevPtr,
    wpe: DevPtr,
    n: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<(), L::Error> {
    if n * c == 0 {
        return Ok(());
    }
    let (nn, ti, ci, vi) = (count(n), dim("T", t), dim("C", c), dim("V", v));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&ids).arg(&wte).arg(&wpe).arg(&nn).arg(&ti).arg(&ci).arg(&vi);
    // SAFETY: element i = r·C + c < N·C reads ids[r], wte[id, c] only for id < V, wpe[r % T, c]
    // and writes out[i]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_forward_f32", elementwise(n * c), &mut args) }
}

/// `encoder_forward_at_f32`: `out (R,C) = wte[ids[r]] + wpe[pos[r]]`; a row whose id is ≥ V or
/// whose position is ≥ P is NaN. Nothing is launched when R·C = 0.
///
/// # Safety
/// `out` holds R·C f32 and must not overlap the inputs; `ids` and `pos` hold R u32, `wte` V·C
/// f32, `wpe` P·C f32.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encoder_forward_at<L: Launcher>(
    dev: &L,
    out: DevPtr,
    ids: DevPtr,
    pos: DevPtr,
    wte: DevPtr,
    wpe: DevPtr,
    (r, c): (usize, usize),
    (v, p): (usize, usize),
) -> Result<(), L::Error> {
    if r * c == 0 {
        return Ok(());
    }
    let (rr, ci, vi, pi) = (count(r), dim("C", c), dim("V", v), dim("P", p));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&ids).arg(&pos).arg(&wte).arg(&wpe).arg(&rr).arg(&ci).arg(&vi).arg(&pi);
    // SAFETY: element i = r·C + c reads ids[r], pos[r], and wte/wpe only at in-range rows, and
    // writes out[i]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_forward_at_f32", elementwise(r * c), &mut args) }
}

/// `encoder_backward_f32`: `dwte[ids[r]] += dout[r]`, `dwpe[r % T] += dout[r]` with atomics
/// (the summation order of repeated tokens and of a position's B rows is not fixed on a GPU).
///
/// # Safety
/// `dwte` holds V·C f32, `dwpe` T·C f32 (distinct allocations, not overlapping the inputs),
/// `dout` N·C f32, `ids` N u32.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encoder_backward<L: Launcher>(
    dev: &L,
    dwte: DevPtr,
    dwpe: DevPtr,
    dout: DevPtr,
    ids: DevPtr,
    n: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<(), L::Error> {
    if n * c == 0 {
        return Ok(());
    }
    let (nn, ti, ci, vi) = (count(n), dim("T", t), dim("C", c), dim("V", v));
    let mut args = KernelArgs::new();
    args.arg(&dwte).arg(&dwpe).arg(&dout).arg(&ids).arg(&nn).arg(&ti).arg(&ci).arg(&vi);
    // SAFETY: element i reads dout[i], ids[r] and adds atomically into dwte[id, c] (id < V
    // only) and dwpe[r % T, c]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_backward_f32", elementwise(n * c), &mut args) }
}

/// `gelu_forward_f32` over `n` values.
///
/// # Safety
/// `out` and `inp` hold `n` f32 each (they may be the same buffer, not partly overlapping).
pub unsafe fn gelu_forward<L: Launcher>(dev: &L, out: DevPtr, inp: DevPtr, n: usize) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&inp).arg(&nn);
    // SAFETY: element i reads inp[i] and writes out[i], i < n.
    unsafe { run(dev, "gelu_forward_f32", elementwise(n), &mut args) }
}

/// `gelu_backward_f32`: `d *= gelu'(inp)` in place over `n` values.
///
/// # Safety
/// `d` and `inp` hold `n` f32 each and do not overlap.
pub unsafe fn gelu_backward<L: Launcher>(dev: &L, d: DevPtr, inp: DevPtr, n: usize) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&d).arg(&inp).arg(&nn);
    // SAFETY: element i reads inp[i] and updates d[i], i < n.
    unsafe { run(dev, "gelu_backward_f32", elementwise(n), &mut args) }
}

/// `bias_backward_f32`: `dbias (cols) += Σ_rows dout (rows, cols)`. One block per 32 columns
/// (⌈cols/32⌉ blocks of 32 × 8 threads; a warp reads 32 consecutive values of a row), each
/// column summed deterministically without atomics.
///
/// # Safety
/// `dbias` holds `cols` f32 (not overlapping `dout`), `dout` rows·cols f32.
pub unsafe fn bias_backward<L: Launcher>(
    dev: &L,
    dbias: DevPtr,
    dout: DevPtr,
    rows: usize,
    cols: usize,
) -> Result<(), L::Error> {
    if rows * cols == 0 {
        return Ok(());
    }
    let (ri, ci) = (dim("rows", rows), dim("cols", cols));
    let blocks = u32::try_from(cols.div_ceil(32)).expect("cols fit in an int");
    let mut args = KernelArgs::new();
    args.arg(&dbias).arg(&dout).arg(&ri).arg(&ci);
    // SAFETY: block b reads dout[:, 32b .. 32b + 32) (columns < cols) and updates the same
    // range of dbias; the caller guarantees the extents.
    unsafe { run(dev, "bias_backward_f32", Launch::linear(blocks, 32 * BIAS_ROW_GROUPS), &mut args) }
}

/// `adamw_f32`: one AdamW step in place over `n` values, with the oracle's bias corrections
/// (`1 − β^step` computed here in f32 exactly as `cpu::optim::adamw` does).
///
/// # Safety
/// `param`, `grad`, `m`, `v` hold `n` f32 each, in four non-overlapping buffers.
pub unsafe fn adamw<L: Launcher>(
    dev: &L,
    [param, grad, m, v]: [DevPtr; 4],
    n: usize,
    h: &AdamWStep,
) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&param).arg(&grad).arg(&m).arg(&v).arg(&nn);
    args.arg(&h.lr).arg(&h.beta1).arg(&h.beta2).arg(&h.eps).arg(&h.weight_decay).arg(&bc1).arg(&bc2);
    args.arg(&h.grad_scale);
    // SAFETY: element i reads grad[i] and updates param[i], m[i], v[i], i < n.
    unsafe { run(dev, "adamw_f32", elementwise(n), &mut args) }
}

/// Partial sums the global norm needs for a buffer of `n` values: one per block of its launch.
pub fn global_norm_partials(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        elementwise(n).grid.0 as usize
    }
}

/// The global norm of several buffers, `(pointer, length)`: one `global_norm_partial_f32`
/// launch per non-empty buffer writes its block sums of squares into consecutive slots of
/// `partial`, then `global_norm_final_f32` (one block of 1024 threads) sums all partials and
/// writes `sqrt` into `out[0]`. When every buffer is empty, writes nothing (the norm is 0).
///
/// # Safety
/// Each buffer holds its stated length of f32; `partial` holds at least
/// Σ [`global_norm_partials`]`(len)` f32 and `out` one f32, neither overlapping the buffers or
/// each other.
pub unsafe fn global_norm<L: Launcher>(
    dev: &L,
    out: DevPtr,
    partial: DevPtr,
    bufs: &[(DevPtr, usize)],
) -> Result<(), L::Error> {
    let mut slots = 0usize;
    for &(x, n) in bufs {
        if n == 0 {
            continue;
        }
        let slot = partial.offset(slots);
        let nn = count(n);
        let mut args = KernelArgs::new();
        args.arg(&slot).arg(&x).arg(&nn);
        // SAFETY: block b reads its grid-stride share of x[0..n) and writes slot[b]; the grid
        // has global_norm_partials(n) blocks, inside the workspace the caller provides.
        unsafe { run(dev, "global_norm_partial_f32", elementwise(n), &mut args) }?;
        slots += global_norm_partials(n);
    }
    if slots == 0 {
        return Ok(());
    }
    let pi = dim("partials", slots);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&partial).arg(&pi);
    // SAFETY: one block reads partial[0..slots) (written by the launches above, earlier on the
    // same stream) and writes out[0].
    unsafe { run(dev, "global_norm_final_f32", Launch::linear(1, FINAL_THREADS), &mut args) }
}

/// `scale_f32`: `x *= alpha` over `n` values.
///
/// # Safety
/// `x` holds `n` f32.
pub unsafe fn scale<L: Launcher>(dev: &L, x: DevPtr, n: usize, alpha: f32) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&x).arg(&nn).arg(&alpha);
    // SAFETY: element i updates x[i], i < n.
    unsafe { run(dev, "scale_f32", elementwise(n), &mut args) }
}
