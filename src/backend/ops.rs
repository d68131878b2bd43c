//! The op set, one trait per op family. [`Backend`] is all of them together: model and loss
//! code is written against `B: Backend`, and each backend implements one family per file
//! (`backend/cpu/<family>.rs`, `backend/kernel/<family>.rs`), next to that family's
//! `kernels/<family>.cu` and its parity cases in `selftest/<family>.rs`.
//!
//! Ops take buffers plus one shape ([`super::shapes`]), never host slices, so a device backend
//! keeps the hot path on the device; host data crosses only at [`MemoryOps::upload`] /
//! [`MemoryOps::download`]. Shapes use llm.c's names: B batch, T time, C channels, NH heads,
//! V vocabulary, N = B·T rows.
//!
//! Conventions that every implementation follows:
//! - Parameter gradients are **accumulated** (`+=`), so several micro-batches can add into
//!   them before one optimizer step; the model zeroes them explicitly.
//! - Activation gradients are **overwritten** unless the op says otherwise (layernorm's
//!   `dinp` accumulates because it is the residual stream's gradient).
//! - The ops are infallible: sizes are checked before anything runs (a mismatch is a bug in
//!   the caller and panics naming the op and its shapes), and a device failure mid-op panics
//!   with the device's error.
//!
//! Calling an op on a concrete backend needs its family trait in scope:
//! `use gepa_dapo_grn::backend::prelude::*;` brings them all.

use super::advantage::{AdvantageParams, GroupOffsets};
use super::policy_loss::{PolicyLossInputs, PolicyLossParams};
use super::precision::{Dtype, Precision};
use super::sampling::{SampleError, SampleParams, Sampled};
use super::shapes::AdamWStep;
use super::shapes::{
    Affine, AttentionShape, Btc, CachedShape, CrossEntropyShape, Gemm, GrnCausalStats, GrnParams, GrnSeqStats,
    GrnShape, GrnStepShape, KvBufs, LayerNormShape, LnStats, LogprobChunk, Masked, RowsC,
};

/// What [`MemoryOps::memory`] reports: bytes held, and how many allocations were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes held by live buffers now (their capacity: see [`MemoryOps::resize`]).
    pub now: usize,
    /// The most bytes held at once since the last reset.
    pub peak: usize,
    /// Device allocations made since the backend was created (uploads, [`MemoryOps::alloc`],
    /// a [`MemoryOps::resize`] past a buffer's capacity, the ops' own workspaces the first time
    /// they are needed). Never reset: the difference across a step is that step's count, 0
    /// once every buffer has reached its largest shape.
    pub allocations: u64,
}

/// Buffers: where they live, how host data gets in and out. `Buf` holds f32 values (or, on a
/// backend computing in bf16, bf16 values where [`MemoryOps::alloc_as`] made it so), `Ids`
/// token ids; both live wherever the backend computes. Host data crosses as f32 whatever the
/// storage: a bf16 buffer rounds on the way in (to nearest, ties to even) and widens exactly
/// on the way out.
pub trait MemoryOps {
    /// A buffer of values owned by the backend (f32 unless made otherwise).
    type Buf: Send + Sync;
    /// A buffer of u32 token ids.
    type Ids: Send + Sync;

    /// A short human-readable name ("cpu (2 threads)").
    fn name(&self) -> String;
    /// A zero-filled f32 buffer of `len` values.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A zero-filled buffer of `len` values stored as `dtype`. Only a backend whose
    /// [`MemoryOps::precision`] stores bf16 makes bf16 buffers (panics otherwise: the CPU
    /// backend, the oracle, computes in f32).
    fn alloc_as(&self, len: usize, dtype: Dtype) -> Self::Buf;
    /// How `buf` stores its values.
    fn dtype(&self, _buf: &Self::Buf) -> Dtype {
        Dtype::F32
    }
    /// How this backend stores activations and multiplies ([`Precision::F32`] on the CPU).
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// A buffer holding a copy of `host`.
    fn upload(&self, host: &[f32]) -> Self::Buf;
    /// Copies `host` into an existing buffer of the same length.
    fn write(&self, buf: &mut Self::Buf, host: &[f32]);
    /// A host copy of the buffer.
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Number of values in the buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// A buffer holding a copy of `ids`.
    fn upload_ids(&self, ids: &[u32]) -> Self::Ids;
    /// Copies `ids` into an existing id buffer of the same length.
    fn write_ids(&self, buf: &mut Self::Ids, ids: &[u32]);
    /// Number of ids in an id buffer.
    fn ids_len(&self, ids: &Self::Ids) -> usize;
    /// Sets the buffer's length to `len` values, keeping its first `min(len, old length)`
    /// values and zero-filling any past the old length. Allocates only when `len` exceeds the
    /// buffer's capacity (the most it ever held, on a device; a `Vec`'s capacity on the CPU):
    /// buffers sized once for the largest shape serve every smaller one, and every op's size
    /// check sees the new length. Shrinking frees nothing.
    fn resize(&self, buf: &mut Self::Buf, len: usize);
    /// [`MemoryOps::resize`] for an id buffer.
    fn resize_ids(&self, ids: &mut Self::Ids, len: usize);
    /// [`MemoryOps::copy_range`] for id buffers: moves a micro-batch's ids out of a
    /// whole-batch buffer without a round trip through the host.
    fn copy_ids_range(&self, dst: &mut Self::Ids, dst_offset: usize, src: &Self::Ids, src_offset: usize, len: usize);
    /// Sets every value to zero.
    fn zero(&self, buf: &mut Self::Buf);
    /// `dst = src` (same length), converting when their dtypes differ (f32 to bf16 rounds to
    /// nearest, ties to even): how a bf16 compute copy of an f32 master weight is made.
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `dst[dst_offset .. dst_offset+len] = src[src_offset .. src_offset+len]` (a
    /// device-to-device copy on a GPU): moves row chunks in and out of whole-batch buffers.
    fn copy_range(&self, dst: &mut Self::Buf, dst_offset: usize, src: &Self::Buf, src_offset: usize, len: usize);

    /// Waits until every op queued so far has finished, so a host clock measures them (a
    /// device queues work asynchronously; the CPU computes in the call).
    fn synchronize(&self) {}

    /// Bytes this backend's live buffers hold, and the most since
    /// [`MemoryOps::reset_peak_memory`] (`None` where nothing is tracked: the CPU backend's
    /// buffers are plain `Vec`s).
    fn memory(&self) -> Option<MemoryUse> {
        None
    }

    /// Starts a new peak-memory window at the current use.
    fn reset_peak_memory(&self) {}

    /// Bytes this backend can still allocate, when it can tell: free GPU memory on a device,
    /// the host's available memory on the CPU and the emulator. Runs compare their estimated
    /// need with it before they start ([`crate::util::mem`]).
    fn available_memory(&self) -> Option<u64> {
        crate::util::mem::host_available()
    }
}

/// Matrix products and the bias gradient of a linear layer.
pub trait MatmulOps: MemoryOps {
    /// `out = op(a) · op(b) (+ bias broadcast over rows) (+ out if accumulating)`; see
    /// [`Gemm`]. `bias` has `n` values.
    fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: Option<&Self::Buf>, g: Gemm);
    /// `dbias (cols) += Σ_rows dout (rows, cols)`.
    fn bias_backward(&self, dbias: &mut Self::Buf, dout: &Self::Buf, rows: usize, cols: usize);
}

/// Token + position embeddings.
pub trait EncoderOps: MemoryOps {
    /// `out (B,T,C) = wte[ids (B,T)] + wpe[t]`.
    fn encoder_forward(&self, out: &mut Self::Buf, ids: &Self::Ids, wte: &Self::Buf, wpe: &Self::Buf, s: Btc);
    /// `dwte[ids] += dout`, `dwpe[t] += Σ_b dout`.
    fn encoder_backward(&self, dwte: &mut Self::Buf, dwpe: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, s: Btc);
    /// Token + position embedding of R independent rows, each at its own position:
    /// `out (R,C) = wte[ids[r]] + wpe[pos[r]]` with `ids`, `pos` (R). Generation feeds every
    /// sequence at its own position (prompts differ in length), so positions cannot be
    /// implied by a (B,T) layout as in [`EncoderOps::encoder_forward`].
    fn encoder_forward_at(
        &self,
        out: &mut Self::Buf,
        ids: &Self::Ids,
        pos: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        s: RowsC,
    );
}

/// Layer norm.
pub trait LayerNormOps: MemoryOps {
    /// Row-wise layer norm of `inp (N,C)` with weight and bias `p` (C each); also stores each
    /// row's mean and 1/std (N) in `stats` for the backward pass.
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        stats: LnStats<&mut Self::Buf>,
        inp: &Self::Buf,
        p: Affine<&Self::Buf>,
        s: LayerNormShape,
    );
    /// Accumulates into `dinp (N,C)` and the parameter gradients `dp` (C each), from the
    /// forward's input, weight `w` and `stats`.
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dp: Affine<&mut Self::Buf>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        stats: LnStats<&Self::Buf>,
        s: LayerNormShape,
    );
}

/// Causal multi-head self-attention, over whole sequences and against a KV cache.
pub trait AttentionOps: MemoryOps {
    /// Causal multi-head self-attention. `qkv (B,T,3C)` holds q, k, v side by side (HF's
    /// `c_attn` layout); `out (B,T,C)`; `lse (B,NH,T)` keeps each softmax row's log-sum-exp
    /// so the backward pass recomputes probabilities instead of storing the (T,T) matrix.
    fn attention_forward(&self, out: &mut Self::Buf, lse: &mut Self::Buf, qkv: &Self::Buf, s: AttentionShape);
    /// Overwrites `dqkv (B,T,3C)` from `dout (B,T,C)`.
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        s: AttentionShape,
    );
    /// Causal multi-head self-attention of R new rows against a KV cache, for generation.
    /// Row r is position `pos[r]` of cache sequence `seq[r]` (`seq`, `pos`: R); `qkv (R,3C)`
    /// holds its q, k, v in [`AttentionOps::attention_forward`]'s layout; the caches are
    /// (B, T_max, C), head h owning channels h·HS..(h+1)·HS.
    ///
    /// Two phases: first every row's k and v are **stored** at slot (`seq[r]`, `pos[r]`) of the
    /// caches; then row r's q attends over slots `0..=pos[r]` of its sequence and writes
    /// `out (R,C)`. So one call can prefill many positions of a sequence (they see each
    /// other's keys causally) or decode one token per sequence; slots past `pos[r]`, which may
    /// hold stale values from padding or an earlier use, are never read. The (seq, pos) pairs
    /// of one call must be distinct, with seq < B and pos < T_max.
    fn attention_cached(
        &self,
        out: &mut Self::Buf,
        cache: KvBufs<&mut Self::Buf>,
        qkv: &Self::Buf,
        seq: &Self::Ids,
        pos: &Self::Ids,
        s: CachedShape,
    );
}

/// GPT-2's tanh-approximated GELU.
pub trait GeluOps: MemoryOps {
    /// Elementwise.
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf);
    /// In place: `d = d · gelu'(inp)`.
    fn gelu_backward(&self, d: &mut Self::Buf, inp: &Self::Buf);
}

/// Global response normalisation ([`crate::backend::cpu::grn`] has the equations): the causal
/// form in front of the policy head, the sequence-wide form for heads that read a whole
/// sequence.
pub trait GrnOps: MemoryOps {
    /// Causal GRN forward: `out (B,T,C)` from `x (B,T,C)` and `p` (C each), storing the prefix
    /// norms and their channel means in `stats` for the backward pass.
    fn grn_causal_forward(
        &self,
        out: &mut Self::Buf,
        stats: GrnCausalStats<&mut Self::Buf>,
        x: &Self::Buf,
        p: GrnParams<&Self::Buf>,
        s: GrnShape,
    );
    /// Causal GRN backward: **overwrites** `dx (B,T,C)`, **accumulates** `dp` (C each) from
    /// `dy (B,T,C)`, the forward's `x`, `gamma` and `stats`.
    fn grn_causal_backward(
        &self,
        dx: &mut Self::Buf,
        dp: GrnParams<&mut Self::Buf>,
        dy: &Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        stats: GrnCausalStats<&Self::Buf>,
        s: GrnShape,
    );
    /// Causal GRN of R rows of a KV-cached pass (the decode step of
    /// [`GrnOps::grn_causal_forward`]): row r continues cache sequence `seq[r]`, whose running
    /// sums of squares `sumsq (B,C)` it updates; rows are taken in order, so one call may hold
    /// consecutive positions of a sequence (a prefill). Writes `out (R,C)` from `x (R,C)`.
    fn grn_causal_step(
        &self,
        out: &mut Self::Buf,
        sumsq: &mut Self::Buf,
        x: &Self::Buf,
        seq: &Self::Ids,
        p: GrnParams<&Self::Buf>,
        s: GrnStepShape,
    );
    /// Sequence-wide GRN forward under the (B,T) mask of `input` (non-zero = real position):
    /// `out (B,T,C)`, storing the norms in `stats`.
    fn grn_sequence_forward(
        &self,
        out: &mut Self::Buf,
        stats: GrnSeqStats<&mut Self::Buf>,
        input: Masked<&Self::Buf>,
        p: GrnParams<&Self::Buf>,
        s: GrnShape,
    );
    /// Sequence-wide GRN backward: **overwrites** `dx`, **accumulates** `dp`.
    fn grn_sequence_backward(
        &self,
        dx: &mut Self::Buf,
        dp: GrnParams<&mut Self::Buf>,
        dy: &Self::Buf,
        input: Masked<&Self::Buf>,
        gamma: &Self::Buf,
        stats: GrnSeqStats<&Self::Buf>,
        s: GrnShape,
    );
}

/// The supervised loss.
pub trait CrossEntropyOps: MemoryOps {
    /// Weighted softmax cross-entropy over `logits (N,V)`: `losses[i] = w[i] · (−log
    /// softmax(logits[i])[targets[i]])`. With `backward`, `logits` is overwritten by its
    /// gradient `w[i] · (softmax − onehot)` (the (N,V) probabilities are never stored
    /// separately); without, it is left as is.
    fn cross_entropy(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        s: CrossEntropyShape,
        backward: bool,
    );
}

/// The optimizer's ops.
pub trait OptimOps: MemoryOps {
    /// One AdamW update of `param` from `grad`, moments `m` and `v` (all the same length).
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: AdamWStep);
    /// `sqrt(Σ_buffers Σ x²)`, the global gradient norm.
    fn global_norm(&self, bufs: &[&Self::Buf]) -> f32;
    /// `buf *= alpha`.
    fn scale(&self, buf: &mut Self::Buf, alpha: f32);
}

/// The fused log-softmax gather with entropy, chunk by chunk of vocabulary-sized logits.
pub trait LogprobOps: MemoryOps {
    /// Fused log-softmax gather + entropy over one chunk of logits (rows, V), with
    /// z = logits · inv_temperature:
    /// `logp[row0+r] = z[r][targets[row0+r]] − logsumexp(z[r])` and
    /// `entropy[row0+r] = −Σ_j p_j log p_j`, p = softmax(`z[r]`). A target id ≥ V yields NaN
    /// in `logp` (reported, not a panic, so a device kernel behaves the same).
    fn logprob_entropy_forward(
        &self,
        logits: &Self::Buf,
        targets: &Self::Ids,
        logp: &mut Self::Buf,
        entropy: &mut Self::Buf,
        chunk: LogprobChunk,
    );
    /// The backward of [`LogprobOps::logprob_entropy_forward`]: given `dlogp` and `dentropy`
    /// (indexed like `logp`), **overwrites** the chunk's logits with d/dlogits =
    /// τ⁻¹·(dlogp·(onehot − p) − dentropy·p·(log p + H)); the normalised (rows, V) matrix is
    /// recomputed row by row, never stored.
    fn logprob_entropy_backward(
        &self,
        logits: &mut Self::Buf,
        targets: &Self::Ids,
        dlogp: &Self::Buf,
        dentropy: &Self::Buf,
        chunk: LogprobChunk,
    );
}

/// The clipped-ratio policy loss with KL and entropy bonus.
pub trait PolicyLossOps: MemoryOps {
    /// The policy loss (TRL's GRPO family, see [`PolicyLossParams`]) with KL and entropy bonus
    /// over S sequences × L tokens, forward and gradient in one pass: **overwrites** `dlogp`
    /// and `dentropy` (S, L) with d loss / d logp and d loss / d entropy, and `metrics`
    /// ([`super::policy_loss::policy_metric::LEN`] values) with the loss, the monitoring
    /// metrics and counts of non-finite inputs (the caller turns those into errors; with any
    /// of them non-zero the loss and gradients are meaningless). Semantics:
    /// [`PolicyLossParams`] (TRL 1.16's `_compute_loss`).
    fn policy_loss(
        &self,
        dlogp: &mut Self::Buf,
        dentropy: &mut Self::Buf,
        metrics: &mut Self::Buf,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    );
}

/// Group-relative advantages.
pub trait AdvantageOps: MemoryOps + Sized {
    /// Advantages of `rewards` (N) in the ragged groups of `offsets`, written to `out` (N):
    /// each reward minus its group's mean, divided as [`AdvantageParams::scaling`] says by an
    /// unbiased standard deviation plus eps (a group of one has spread 0), then clipped. The
    /// CPU computes in f64 ([`crate::backend::cpu::advantage`]), a device in f32.
    fn group_advantage(
        &self,
        out: &mut Self::Buf,
        rewards: &Self::Buf,
        offsets: &GroupOffsets<Self>,
        p: AdvantageParams,
    );
}

/// Token sampling for generation.
pub trait SamplingOps: MemoryOps {
    /// Draws one token from each of the first `counters.len()` rows of `logits` (rows, V):
    /// row r with the uniform `counter_rng::uniform(p.seed, p.step, counters[r][0],
    /// counters[r][1])` (sequence, position), by [`crate::backend::cpu::sampling`]'s rules.
    /// Only the (token, log-prob) pairs leave the backend. A row that cannot be sampled
    /// (NaN/+∞ logits, all −∞, overflow after the temperature) gives its error, not a panic.
    fn sample(
        &self,
        logits: &Self::Buf,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>>;
}

/// The whole op set: every family. Implemented automatically for any type that implements all
/// of them.
pub trait Backend:
    MemoryOps
    + MatmulOps
    + EncoderOps
    + LayerNormOps
    + AttentionOps
    + GeluOps
    + GrnOps
    + CrossEntropyOps
    + OptimOps
    + LogprobOps
    + PolicyLossOps
    + AdvantageOps
    + SamplingOps
    + Clone
    + Send
    + Sync
{
}

impl<T> Backend for T where
    T: MemoryOps
        + MatmulOps
        + EncoderOps
        + LayerNormOps
        + AttentionOps
        + GeluOps
        + GrnOps
        + CrossEntropyOps
        + OptimOps
        + LogprobOps
        + PolicyLossOps
        + AdvantageOps
        + SamplingOps
        + Clone
        + Send
        + Sync
{
}

/// Panics unless `rows` rows of V logits fit a logits buffer of `len` values: every backend's
/// [`SamplingOps::sample`] checks this before touching memory, with the same message.
pub(crate) fn check_sample_rows(len: usize, rows: usize, v: usize) {
    assert!(v > 0 && len >= rows * v, "sample: {rows} rows of V={v} do not fit the logits");
}

/// Panics unless a log-prob chunk fits its buffers: every backend checks this before
/// touching memory, with the same message.
pub(crate) fn check_logprob_chunk(op: &str, chunk: LogprobChunk, logits: usize, targets: usize, rows: [usize; 2]) {
    let end = chunk.row0 + chunk.rows;
    assert!(
        chunk.v > 0 && logits >= chunk.rows * chunk.v && targets >= end && rows.iter().all(|&r| r >= end),
        "{op}: buffer sizes do not match rows {}..{end}, V={}",
        chunk.row0,
        chunk.v
    );
}
