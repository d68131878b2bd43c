//! The op set every model and loss is written against, and its implementations.
//!
//! Ops take buffers plus shapes, never host slices, so a device backend keeps the hot path on
//! the device; host data crosses only at [`Backend::upload`] / [`Backend::download`]. Shapes use
//! llm.c's names: B batch, T time, C channels, NH heads, V vocabulary, N = B·T rows.
//!
//! Conventions that every implementation follows:
//! - Parameter gradients are **accumulated** (`+=`), so several micro-batches can add into
//!   them before one optimizer step; the model zeroes them explicitly.
//! - Activation gradients are **overwritten** unless the op says otherwise (layernorm's
//!   `dinp` accumulates because it is the residual stream's gradient).

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod emu;
pub mod kernel_backend;
pub mod kernels;
pub mod parity;
pub mod sampling;

pub use sampling::{SampleError, SampleParams, Sampled};

/// One matrix product `out (m,n) = op(a) · op(b)` in row-major storage, where `op(a)` is
/// (m,k) and `op(b)` is (k,n). With `trans_a` the buffer `a` holds (k,m); with `trans_b`
/// `b` holds (n,k). With `accumulate` the product is added to `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `out`.
    pub m: usize,
    /// Columns of `out`.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// `a` is stored transposed, (k,m).
    pub trans_a: bool,
    /// `b` is stored transposed, (n,k).
    pub trans_b: bool,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// `out (m,n) = a (m,k) · b (k,n)`, overwriting `out`.
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        Gemm { m, n, k, trans_a: false, trans_b: false, accumulate: false }
    }
    /// Same product with `b` stored as (n,k).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        Gemm { trans_b: true, ..Gemm::nn(m, n, k) }
    }
    /// Same product with `a` stored as (k,m).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        Gemm { trans_a: true, ..Gemm::nn(m, n, k) }
    }
    /// The same product, added into `out`.
    pub fn acc(self) -> Self {
        Gemm { accumulate: true, ..self }
    }
}

/// The per-call constants of one AdamW update (decoupled weight decay, bias correction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate for this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator's square root.
    pub eps: f32,
    /// Decoupled weight decay (0 for biases and norms).
    pub weight_decay: f32,
    /// 1-based step number, for bias correction.
    pub step: u64,
    /// Multiplies the gradient before use: global-norm clipping folded into the update.
    pub grad_scale: f32,
}

// ---- RL objective types (used by the fused log-prob and policy-loss ops) -------------------

/// The per-token policy term and how per-token losses are aggregated into one scalar (TRL's
/// `loss_type` names; TRL 1.16 `GRPOTrainer._compute_loss`). The clip family (grpo, bnpo,
/// dr_grpo, dapo, luspo) shares the clipped surrogate −min(ρA, clip(ρ)A) and differs only in
/// the aggregation; cispo, sapo and vespo change the policy term itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Clipped surrogate; mean over sequences of each sequence's masked token mean.
    Grpo,
    /// Clipped surrogate; masked token sum / (accumulation steps · this call's mask sum).
    Bnpo,
    /// Clipped surrogate; masked token sum / (num_seqs · max_completion_length).
    DrGrpo,
    /// Clipped surrogate; masked token sum / the minibatch's token count (a token mean over
    /// the whole batch when it is one call).
    #[default]
    Dapo,
    /// MiniMax-M1's CISPO: −sg(min(ρ, ε_high))·A·logp, aggregated like dapo.
    Cispo,
    /// Soft adaptive policy optimisation: −sigmoid(τ(ρ−1))·(4/τ)·A, aggregated like grpo.
    Sapo,
    /// Clipped surrogate; mean over sequences of each sequence's masked token **sum**.
    Luspo,
    /// VESPO: −sg(φ(w))·A·logp with φ the gamma weight of the sequence ratio w, aggregated
    /// like dapo.
    Vespo,
}

impl LossType {
    /// True for the losses built on the clipped surrogate (where `delta`, the dual clip and the
    /// low/high clip fractions apply).
    pub fn is_clipped(self) -> bool {
        matches!(self, LossType::Grpo | LossType::Bnpo | LossType::DrGrpo | LossType::Dapo | LossType::Luspo)
    }
}

impl std::str::FromStr for LossType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpo" => Ok(LossType::Grpo),
            "bnpo" => Ok(LossType::Bnpo),
            "dr_grpo" => Ok(LossType::DrGrpo),
            "dapo" => Ok(LossType::Dapo),
            "cispo" => Ok(LossType::Cispo),
            "sapo" => Ok(LossType::Sapo),
            "luspo" => Ok(LossType::Luspo),
            "vespo" => Ok(LossType::Vespo),
            _ => Err(format!(
                "unknown loss_type `{s}` (expected grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo or vespo)"
            )),
        }
    }
}

/// Estimator of the per-token KL to the reference, d = logp_ref − logp (the names of verl's
/// `kl_penalty`, `verl/trainer/ppo/core_algos.py`: "kl" = k1, "mse" = k2, "low_var_kl" = k3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// k1 = −d = logp − logp_ref (unbiased, can be negative).
    K1,
    /// k2 = ½d² (verl's "mse").
    K2,
    /// k3 = e^d − d − 1 ≥ 0 (Schulman's low-variance estimator; TRL's only KL). Unlike verl's
    /// "low_var_kl" it is not clamped, as in TRL.
    #[default]
    K3,
}

impl std::str::FromStr for KlEstimator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "k1" => Ok(KlEstimator::K1),
            "k2" => Ok(KlEstimator::K2),
            "k3" => Ok(KlEstimator::K3),
            _ => Err(format!("unknown kl_estimator `{s}` (expected k1, k2 or k3)")),
        }
    }
}

/// Importance-sampling level of the ratio: one per token, or one per sequence (GSPO:
/// `exp` of the masked mean of the token log-ratios, broadcast over the sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsLevel {
    /// ρ_t = exp(logp_t − logp_old_t).
    #[default]
    Token,
    /// ρ_i = exp(Σ_t m_t (logp_t − logp_old_t) / max(Σ_t m_t, 1)) for every token of sequence i.
    Sequence,
}

impl std::str::FromStr for IsLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(IsLevel::Token),
            "sequence" => Ok(IsLevel::Sequence),
            _ => Err(format!("unknown importance_sampling_level `{s}` (expected token or sequence)")),
        }
    }
}

/// Which rows of the vocabulary-sized logits a [`Backend::logprob_entropy_forward`] /
/// [`Backend::logprob_entropy_backward`] call covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogprobChunk {
    /// Row `r` of the logits buffer is row `row0 + r` of the per-token buffers (targets,
    /// log-probs, entropies and their gradients).
    pub row0: usize,
    /// Rows processed: the first `rows · v` values of the logits buffer (it may be longer,
    /// e.g. a fixed-size chunk workspace holding a shorter last chunk).
    pub rows: usize,
    /// Vocabulary size (row length).
    pub v: usize,
    /// 1 / sampling temperature: the distribution is softmax(logits · inv_temperature).
    pub inv_temperature: f32,
}

/// The constants of one [`Backend::policy_loss`] call. The semantics, per token t of
/// sequence i (mask weight m_t, advantage A = A_i), are TRL 1.16's `GRPOTrainer._compute_loss`
/// plus verl's dual clip and KL estimators:
/// - ratio ρ = exp(w), w = logp_t − logp_old_t (token level) or the masked mean of those over
///   the sequence (sequence level, shared by its tokens);
/// - policy term p_t by [`LossType`] (with `delta`, `clip_ratio_c` for the clip family), times
///   the entropy mask e_t = [H_t ≥ `entropy_threshold`] when a threshold is given;
/// - ℓ_t = p_t + β·K_t, K_t = ρ·k_t with bias correction, else k_t ([`KlEstimator`]);
/// - loss = Σ c·m_t·ℓ_t − entropy_coef·Σ m e H / (accum·max(Σ m e, 1)), with c from the
///   aggregation ([`LossType`]) and the normalisers `seq_norm`, `token_norm`, `accum`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyLossParams {
    /// Sequences.
    pub s: usize,
    /// Tokens per sequence (padded completion length); buffers are (S, L) row-major.
    pub l: usize,
    /// Policy term and aggregation.
    pub loss_type: LossType,
    /// Token or sequence (GSPO) ratio.
    pub level: IsLevel,
    /// Lower clip: ρ is clipped at 1 − eps_low.
    pub eps_low: f32,
    /// Upper clip: ρ is clipped at 1 + eps_high (cispo: the ratio is capped at eps_high itself).
    pub eps_high: f32,
    /// TRL's two-sided clipping (INTELLECT-2): the unclipped branch uses min(ρ, delta). `None`:
    /// off.
    pub delta: Option<f32>,
    /// verl's dual clip: for A < 0 the clip family's term is capped at −A·clip_ratio_c.
    /// `None`: off.
    pub clip_ratio_c: Option<f32>,
    /// KL coefficient; 0 skips the KL term (and the reference log-probs may be absent).
    pub beta: f32,
    /// The KL estimator.
    pub kl_estimator: KlEstimator,
    /// TRL's `use_bias_correction_kl`: the KL is weighted by the (unclamped) ratio ρ, gradient
    /// through ρ included.
    pub use_bias_correction_kl: bool,
    /// Entropy bonus coefficient: the loss gets −entropy_coef times the mean entropy of the
    /// (entropy-masked) tokens.
    pub entropy_coef: f32,
    /// TRL's `top_entropy_quantile` mask as a threshold: only tokens with H_t ≥ threshold keep
    /// their policy term (and count in the entropy bonus). `None`: every token.
    pub entropy_threshold: Option<f32>,
    /// sapo's temperature τ for A > 0.
    pub sapo_temperature_pos: f32,
    /// sapo's temperature τ for A ≤ 0.
    pub sapo_temperature_neg: f32,
    /// vespo's k for A ≥ 0.
    pub vespo_k_pos: f32,
    /// vespo's λ for A ≥ 0.
    pub vespo_lambda_pos: f32,
    /// vespo's k for A < 0.
    pub vespo_k_neg: f32,
    /// vespo's λ for A < 0.
    pub vespo_lambda_neg: f32,
    /// Denominator length for `DrGrpo` (TRL's `max_completion_length`); usually `l`.
    pub max_completion_length: usize,
    /// Sequences of the whole minibatch this call is a part of (grpo, sapo, luspo, dr_grpo
    /// divide by it); ≤ 0 (or NaN) means this call's S.
    pub seq_norm: f32,
    /// Tokens (mask sum) of the whole minibatch (dapo, cispo, vespo divide by it); ≤ 0 (or
    /// NaN) means this call's own mask sum.
    pub token_norm: f32,
    /// Gradient-accumulation steps the minibatch is split into (bnpo and the entropy bonus
    /// divide by it, as TRL does); values below 1 (or NaN) count as 1.
    pub accum: f32,
}

impl PolicyLossParams {
    /// DAPO's defaults for S sequences of L tokens: token-level ratio, ε_low = 0.2,
    /// ε_high = 0.28, the "dapo" token mean, no KL (β = 0; k3 without bias correction once β is
    /// set), no entropy bonus, and every other knob neutral: no delta, no dual clip, no entropy
    /// mask, this call alone (S, its own tokens, accumulation 1). The sapo / vespo constants are
    /// TRL's defaults.
    pub fn dapo(s: usize, l: usize) -> Self {
        PolicyLossParams {
            s,
            l,
            loss_type: LossType::Dapo,
            level: IsLevel::Token,
            eps_low: 0.2,
            eps_high: 0.28,
            delta: None,
            clip_ratio_c: None,
            beta: 0.0,
            kl_estimator: KlEstimator::K3,
            use_bias_correction_kl: false,
            entropy_coef: 0.0,
            entropy_threshold: None,
            sapo_temperature_pos: 1.0,
            sapo_temperature_neg: 1.05,
            vespo_k_pos: 2.0,
            vespo_lambda_pos: 3.0,
            vespo_k_neg: 3.0,
            vespo_lambda_neg: 2.0,
            max_completion_length: l,
            seq_norm: 0.0,
            token_norm: 0.0,
            accum: 1.0,
        }
    }
}

/// The per-token inputs of one [`Backend::policy_loss`] call, each (S, L) except
/// `advantages` (S). `mask` holds 1 for completion tokens and 0 for padding (other
/// non-negative weights are allowed); values at mask-0 positions are never read into the
/// loss, so padding may hold anything, NaN included.
pub struct PolicyLossInputs<'a, B: Backend> {
    /// Current policy's log-probs of the sampled tokens.
    pub logp: &'a B::Buf,
    /// Log-probs under the policy that sampled them.
    pub logp_old: &'a B::Buf,
    /// Log-probs under the frozen reference (required when beta ≠ 0).
    pub logp_ref: Option<&'a B::Buf>,
    /// One advantage per sequence.
    pub advantages: &'a B::Buf,
    /// Entropy of the (tempered) policy at each position.
    pub entropy: &'a B::Buf,
    /// Loss mask.
    pub mask: &'a B::Buf,
}

/// Slots of the small metrics buffer ([`policy_metric::LEN`] values) that
/// [`Backend::policy_loss`] writes. Means are over masked tokens (mask-weighted) unless said
/// otherwise.
pub mod policy_metric {
    /// The aggregated loss (policy term + β·KL − entropy bonus).
    pub const LOSS: usize = 0;
    /// The aggregated policy term alone (after the entropy mask; no KL, no entropy bonus).
    pub const POLICY_LOSS: usize = 1;
    /// Masked mean of the KL term K_t (after the bias correction, as TRL logs it; 0 when β = 0).
    pub const KL_MEAN: usize = 2;
    /// Masked mean of the entropy (every masked token, whatever the entropy mask).
    pub const ENTROPY_MEAN: usize = 3;
    /// TRL's `clip_ratio/low_mean`: fraction with ρ̃ < 1 − eps_low and A < 0 (ρ̃ = min(ρ, delta)),
    /// clip family only. Token level: a masked token mean; sequence level: a mean over all S
    /// sequences of the call.
    pub const CLIP_FRAC_LOW: usize = 4;
    /// TRL's `clip_ratio/high_mean`: fraction with ρ̃ > 1 + eps_high and A > 0 (clip family),
    /// or cispo's `cispo_clip_ratio`, ρ > eps_high and A > 0; averaged like
    /// [`CLIP_FRAC_LOW`].
    pub const CLIP_FRAC_HIGH: usize = 5;
    /// Masked mean of ρ (unclamped).
    pub const RATIO_MEAN: usize = 6;
    /// Minimum of ρ over masked tokens.
    pub const RATIO_MIN: usize = 7;
    /// Maximum of ρ over masked tokens.
    pub const RATIO_MAX: usize = 8;
    /// Σ mask.
    pub const MASK_SUM: usize = 9;
    /// Masked positions whose current log-prob is not finite (bad hidden/weights, or a
    /// target id ≥ V, which the log-prob op reports as NaN).
    pub const BAD_LOGP: usize = 10;
    /// Masked positions whose old log-prob is not finite.
    pub const BAD_LOGP_OLD: usize = 11;
    /// Masked positions whose reference log-prob is not finite (only read when β ≠ 0).
    pub const BAD_LOGP_REF: usize = 12;
    /// Sequences whose advantage is not finite.
    pub const BAD_ADVANTAGE: usize = 13;
    /// Mask values that are negative or not finite.
    pub const BAD_MASK: usize = 14;
    /// Masked positions whose entropy is not finite.
    pub const BAD_ENTROPY: usize = 15;
    /// Masked token mean of verl's dual clip being active (A < 0 and the clipped term above
    /// −A·clip_ratio_c, verl's `pg_clipfrac_lower`); 0 without a dual clip.
    pub const DUAL_CLIP_FRAC: usize = 16;
    /// Length of the metrics buffer.
    pub const LEN: usize = 17;
}

/// The shape of a GRN call: B sequences of T positions and C channels, and the `eps` added
/// to the mean norm (see [`crate::model::grn`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrnShape {
    /// B: sequences.
    pub b: usize,
    /// T: positions per sequence.
    pub t: usize,
    /// C: channels.
    pub c: usize,
    /// Added to the mean norm before dividing.
    pub eps: f32,
}

/// What [`Backend::memory`] reports, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUse {
    /// Held by live buffers now.
    pub now: usize,
    /// The most held at once since the last reset.
    pub peak: usize,
}

/// The op set. `Buf` holds f32 values, `Ids` token ids; both live wherever the backend
/// computes.
pub trait Backend: Clone + Send + Sync {
    /// An f32 buffer owned by the backend.
    type Buf: Send + Sync;
    /// A buffer of u32 token ids.
    type Ids: Send + Sync;

    /// A short human-readable name ("cpu (2 threads)").
    fn name(&self) -> String;

    // ---- memory ----------------------------------------------------------------------

    /// A zero-filled buffer of `len` values.
    fn alloc(&self, len: usize) -> Self::Buf;
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
    /// Sets every value to zero.
    fn zero(&self, buf: &mut Self::Buf);
    /// `dst = src` (same length).
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);

    // ---- linear algebra --------------------------------------------------------------

    /// `out = op(a) · op(b) (+ bias broadcast over rows) (+ out if accumulating)`; see
    /// [`Gemm`]. `bias` has `n` values.
    fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: Option<&Self::Buf>, g: Gemm);
    /// `dbias (cols) += Σ_rows dout (rows, cols)`.
    fn bias_backward(&self, dbias: &mut Self::Buf, dout: &Self::Buf, rows: usize, cols: usize);

    // ---- GPT-2 layers ----------------------------------------------------------------

    /// `out (B,T,C) = wte[ids (B,T)] + wpe[t]`.
    fn encoder_forward(
        &self,
        out: &mut Self::Buf,
        ids: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
    );
    /// `dwte[ids] += dout`, `dwpe[t] += Σ_b dout`.
    fn encoder_backward(
        &self,
        dwte: &mut Self::Buf,
        dwpe: &mut Self::Buf,
        dout: &Self::Buf,
        ids: &Self::Ids,
        b: usize,
        t: usize,
        c: usize,
    );
    /// Row-wise layer norm of `inp (N,C)`; also stores each row's mean and 1/std (N) for
    /// the backward pass.
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        n: usize,
        c: usize,
        eps: f32,
    );
    /// Accumulates into `dinp (N,C)`, `dw (C)` and `dbias (C)`.
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        dbias: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    );
    /// Causal multi-head self-attention. `qkv (B,T,3C)` holds q, k, v side by side (HF's
    /// `c_attn` layout); `out (B,T,C)`; `lse (B,NH,T)` keeps each softmax row's log-sum-exp
    /// so the backward pass recomputes probabilities instead of storing the (T,T) matrix.
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        qkv: &Self::Buf,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    );
    /// Overwrites `dqkv (B,T,3C)` from `dout (B,T,C)`.
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    );
    /// Token + position embedding of R independent rows, each at its own position:
    /// `out (R,C) = wte[ids[r]] + wpe[pos[r]]` with `ids`, `pos` (R). Generation feeds every
    /// sequence at its own position (prompts differ in length), so positions cannot be
    /// implied by a (B,T) layout as in [`Backend::encoder_forward`].
    fn encoder_forward_at(
        &self,
        out: &mut Self::Buf,
        ids: &Self::Ids,
        pos: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        rows: usize,
        c: usize,
    );
    /// Causal multi-head self-attention of R new rows against a KV cache, for generation.
    /// Row r is position `pos[r]` of cache sequence `seq[r]` (`seq`, `pos`: R); `qkv (R,3C)`
    /// holds its q, k, v in [`Backend::attention_forward`]'s layout; the caches are
    /// `k_cache`, `v_cache` (B, T_max, C), head h owning channels h·HS..(h+1)·HS.
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
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        qkv: &Self::Buf,
        seq: &Self::Ids,
        pos: &Self::Ids,
        rows: usize,
        t_max: usize,
        nh: usize,
        c: usize,
    );
    /// GPT-2's tanh-approximated GELU, elementwise.
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf);
    /// In place: `d = d · gelu'(inp)`.
    fn gelu_backward(&self, d: &mut Self::Buf, inp: &Self::Buf);

    // ---- GRN ---------------------------------------------------------------------------

    /// Causal GRN forward ([`crate::model::grn::causal`], the form in front of the policy head):
    /// `out (B,T,C)` from `x (B,T,C)`, `gamma`, `beta (C)`, storing the prefix norms
    /// `g (B,T,C)` and their channel means `mean (B,T)` for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn grn_causal_forward(
        &self,
        out: &mut Self::Buf,
        g: &mut Self::Buf,
        mean: &mut Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: GrnShape,
    );
    /// Causal GRN backward: **overwrites** `dx (B,T,C)`, **accumulates** `dgamma`, `dbeta (C)`
    /// from `dy (B,T,C)`, the forward's `x` and its `g`, `mean`.
    #[allow(clippy::too_many_arguments)]
    fn grn_causal_backward(
        &self,
        dx: &mut Self::Buf,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        g: &Self::Buf,
        mean: &Self::Buf,
        s: GrnShape,
    );
    /// Causal GRN of R rows of a KV-cached pass (the decode step of
    /// [`Backend::grn_causal_forward`]): row r continues cache sequence `seq[r]`, whose running
    /// sums of squares `sumsq (B,C)` it updates; rows are taken in order, so one call may hold
    /// consecutive positions of a sequence (a prefill). Writes `out (R,C)` from `x (R,C)`.
    #[allow(clippy::too_many_arguments)]
    fn grn_causal_step(
        &self,
        out: &mut Self::Buf,
        sumsq: &mut Self::Buf,
        x: &Self::Buf,
        seq: &Self::Ids,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        rows: usize,
        c: usize,
        eps: f32,
    );
    /// Sequence-wide GRN forward ([`crate::model::grn`], for heads that read a whole
    /// sequence: the value / judge head) under `mask (B,T)` (non-zero = real position):
    /// `out (B,T,C)`, storing `g (B,C)`, `mean (B)` and `n (B,C)`.
    #[allow(clippy::too_many_arguments)]
    fn grn_sequence_forward(
        &self,
        out: &mut Self::Buf,
        g: &mut Self::Buf,
        mean: &mut Self::Buf,
        n: &mut Self::Buf,
        x: &Self::Buf,
        mask: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: GrnShape,
    );
    /// Sequence-wide GRN backward: **overwrites** `dx`, **accumulates** `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn grn_sequence_backward(
        &self,
        dx: &mut Self::Buf,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        mask: &Self::Buf,
        gamma: &Self::Buf,
        g: &Self::Buf,
        mean: &Self::Buf,
        n: &Self::Buf,
        s: GrnShape,
    );

    // ---- losses ------------------------------------------------------------------------

    /// Weighted softmax cross-entropy over `logits (N,V)`: `losses[i] = w[i] · (−log softmax(logits[i])[targets[i]])`.
    /// With `backward`, `logits` is overwritten by its gradient `w[i] · (softmax − onehot)`
    /// (the (N,V) probabilities are never stored separately); without, it is left as is.
    fn cross_entropy(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        n: usize,
        v: usize,
        backward: bool,
    );

    // ---- optimisation ------------------------------------------------------------------

    /// One AdamW update of `param` from `grad`, moments `m` and `v` (all the same length).
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: AdamWStep);
    /// `sqrt(Σ_buffers Σ x²)`, the global gradient norm.
    fn global_norm(&self, bufs: &[&Self::Buf]) -> f32;
    /// `buf *= alpha`.
    fn scale(&self, buf: &mut Self::Buf, alpha: f32);
    // ---- RL objective (additions) --------------------------------------------------------

    /// Number of ids in an id buffer.
    fn ids_len(&self, ids: &Self::Ids) -> usize;

    /// `dst[dst_offset .. dst_offset+len] = src[src_offset .. src_offset+len]` (a
    /// device-to-device copy on a GPU): moves row chunks in and out of whole-batch buffers.
    fn copy_range(&self, dst: &mut Self::Buf, dst_offset: usize, src: &Self::Buf, src_offset: usize, len: usize);

    /// Fused log-softmax gather + entropy over one chunk of logits (rows, V), with
    /// z = logits · inv_temperature:
    /// `logp[row0+r] = z[r][targets[row0+r]] − logsumexp(z[r])` and
    /// `entropy[row0+r] = −Σ_j p_j log p_j`, p = softmax(z[r]). A target id ≥ V yields NaN
    /// in `logp` (reported, not a panic, so a device kernel behaves the same).
    fn logprob_entropy_forward(
        &self,
        logits: &Self::Buf,
        targets: &Self::Ids,
        logp: &mut Self::Buf,
        entropy: &mut Self::Buf,
        chunk: LogprobChunk,
    );

    /// The backward of [`Backend::logprob_entropy_forward`]: given `dlogp` and `dentropy`
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

    /// The policy loss (TRL's GRPO family, see [`PolicyLossParams`]) with KL and entropy bonus
    /// over S sequences × L tokens, forward and gradient in one pass: **overwrites** `dlogp`
    /// and `dentropy` (S, L) with d loss / d logp and d loss / d entropy, and `metrics`
    /// ([`policy_metric::LEN`] values) with the loss, the monitoring metrics and counts of
    /// non-finite inputs (the caller turns those into errors; with any of them non-zero the
    /// loss and gradients are meaningless). Semantics: [`PolicyLossParams`] (TRL 1.16's
    /// `_compute_loss`).
    fn policy_loss(
        &self,
        dlogp: &mut Self::Buf,
        dentropy: &mut Self::Buf,
        metrics: &mut Self::Buf,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    );

    // ---- bookkeeping -----------------------------------------------------------------

    /// Waits until every op queued so far has finished, so a host clock measures them (a
    /// device queues work asynchronously; the CPU computes in the call).
    fn synchronize(&self) {}

    /// Bytes this backend's live buffers hold, and the most since [`Backend::reset_peak_memory`]
    /// (`None` where nothing is tracked: the CPU backend's buffers are plain `Vec`s).
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

    // ---- generation ------------------------------------------------------------------

    /// Draws one token from each of the first `counters.len()` rows of `logits` (rows, V):
    /// row r with the uniform `counter_rng::uniform(p.seed, p.step, counters[r][0],
    /// counters[r][1])` (sequence, position), by `rollout::sampler`'s rules. Only the
    /// (token, log-prob) pairs leave the backend. A row that cannot be sampled (NaN/+∞
    /// logits, all −∞, overflow after the temperature) gives its error, not a panic.
    fn sample(
        &self,
        logits: &Self::Buf,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>>;
}

/// Panics unless `rows` rows of V logits fit a logits buffer of `len` values: every backend's
/// [`Backend::sample`] checks this before touching memory, with the same message.
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
