//! Sampling one token per row of logits (`kernels/sampling.cu`), the device form of
//! [`crate::backend::Backend::sample`].

use super::{dim, run, threads_for, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};

/// u32 words the kernel writes per row: token (or the bad token's id), log-prob bits (or the
/// bad value's bits), status ([`status`]), and the row's uniform as f64 bits (low, high word).
pub const OUT_WORDS: usize = 5;

/// The kernel's status word.
pub mod status {
    /// A token was drawn.
    pub const OK: u32 = 0;
    /// A NaN or +∞ logit: words 0 and 1 hold its id and its bits.
    pub const NON_FINITE: u32 = 1;
    /// Every logit is −∞.
    pub const ALL_MASKED: u32 = 2;
    /// logits · (1/T) overflows.
    pub const TEMPERATURE_OVERFLOW: u32 = 3;
}

/// What one launch samples with, already in the kernel's terms.
#[derive(Clone, Copy, Debug)]
pub struct SampleLaunch {
    /// Rows to sample (one block each).
    pub rows: usize,
    /// Vocabulary size, the row length.
    pub v: usize,
    /// 1/T, or 1 when greedy.
    pub inv_t: f32,
    /// Temperature 0: argmax.
    pub greedy: bool,
    /// Top-k, 0 when off; a value ≥ V is off too.
    pub top_k: usize,
    /// Top-p; applied when < 1.
    pub top_p: f32,
    /// Philox key.
    pub seed: u64,
    /// The counter's high half.
    pub step: u64,
}

/// Threads per row: every pass strides over V, so as many as keep ≥ 8 tokens each, up to 256
/// (V ≈ 50k gives each thread ~200 tokens per pass); no more, since each pass ends in a serial
/// walk of the 256 buckets and a block-wide barrier costs more with more warps.
fn block(v: usize) -> u32 {
    threads_for(v.div_ceil(8), 256)
}

/// `sample_f32`: for each row r < rows, writes `out[OUT_WORDS·r ..]`. One block per row.
///
/// # Safety
/// `logits` must address rows·V f32, `counters` 2·rows u32 (sequence, position), `out`
/// OUT_WORDS·rows u32 not overlapping the inputs.
pub unsafe fn sample<L: Launcher>(
    dev: &L,
    out: DevPtr,
    logits: DevPtr,
    counters: DevPtr,
    s: &SampleLaunch,
) -> Result<(), L::Error> {
    if s.rows == 0 || s.v == 0 {
        return Ok(());
    }
    let (rows, v) = (dim("rows", s.rows), dim("V", s.v));
    let top_k = if s.top_k >= s.v { 0 } else { dim("top_k", s.top_k) };
    let greedy = i32::from(s.greedy);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&logits).arg(&counters).arg(&rows).arg(&v).arg(&s.inv_t).arg(&greedy);
    args.arg(&top_k).arg(&s.top_p).arg(&s.seed).arg(&s.step);
    // SAFETY: block r reads logits row r and counters[2r..2r+2] and writes out row r only,
    // within the extents the caller guarantees.
    unsafe { run(dev, "sample_f32", Launch::linear(rows as u32, block(s.v)), &mut args) }
}
