//! Sampling one token per row of logits on the device (`kernels/sampling.cu`): only the
//! counters go up and five words per row come back, never the (rows, V) logits.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::{check_sample_rows, SamplingOps};
use crate::backend::sampling::{SampleError, SampleParams, Sampled};

/// u32 words the kernel writes per row: token (or the bad token's id), log-prob bits (or the
/// bad value's bits), status ([`status`]), and the row's uniform as f64 bits (low, high word).
const OUT_WORDS: usize = 5;

/// The kernel's status word.
mod status {
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
struct SampleLaunch {
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
unsafe fn sample<L: Launcher>(
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

impl<D: Device> KernelBackend<D> {
    /// [`SamplingOps::sample`], also returning the uniform each
    /// row was drawn with as the device computed it, so a test can hold the device's Philox to
    /// `counter_rng::uniform` bit for bit.
    pub fn sample_with_uniforms(
        &self,
        logits: &DeviceBuf<D>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<(Result<Sampled, SampleError>, f64)> {
        let rows = counters.len();
        let shapes = format!("rows={rows}, V={v}");
        check_sample_rows(logits.len(), rows, v);
        if rows == 0 {
            return Vec::new();
        }
        // 1/T exactly as the oracle forms it (`cpu::sampling`).
        let greedy = p.temperature == 0.0;
        let inv_t = if greedy { 1.0 } else { 1.0 / p.temperature };
        let flat: Vec<u32> = counters.iter().flatten().copied().collect();
        let d_counters = self.scratch_words("sample", &flat);
        let mut out = self.scratch("sample", rows * OUT_WORDS);
        let launch =
            SampleLaunch { rows, v, inv_t, greedy, top_k: p.top_k, top_p: p.top_p, seed: p.seed, step: p.step };
        let (o, x, c) = (self.ptr32_mut(&mut out), self.ptr32(logits), self.ptr32(&d_counters));
        // SAFETY: logits holds at least rows·V f32 (checked above), d_counters 2·rows u32 and
        // out OUT_WORDS·rows u32, both workspaces lent to this call alone, distinct from the logits.
        let r = unsafe { sample(&*self.dev, o, x, c, &launch) };
        self.ok("sample", &shapes, r);
        self.download_words(&out)
            .chunks_exact(OUT_WORDS)
            .map(|w| {
                let u = f64::from_bits(u64::from(w[3]) | u64::from(w[4]) << 32);
                let r = match w[2] {
                    status::OK => Ok(Sampled { token: w[0], logprob: f32::from_bits(w[1]) }),
                    status::NON_FINITE => Err(SampleError::NonFinite { token: w[0], value: f32::from_bits(w[1]) }),
                    status::ALL_MASKED => Err(SampleError::AllMasked),
                    status::TEMPERATURE_OVERFLOW => Err(SampleError::TemperatureOverflow { temperature: 1.0 / inv_t }),
                    s => panic!("sample ({shapes}) on {}: unknown status {s}", self.dev.describe()),
                };
                (r, u)
            })
            .collect()
    }
}

impl<D: Device> SamplingOps for KernelBackend<D> {
    fn sample(
        &self,
        logits: &DeviceBuf<D>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>> {
        self.sample_with_uniforms(logits, v, counters, p).into_iter().map(|(r, _)| r).collect()
    }
}
