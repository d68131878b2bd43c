//! The DAPO / GRPO objective family as a fused linear loss: from the final hidden states
//! (N, C) and the lm_head weight (V, C) to the loss, d loss/d hidden and d loss/d weight,
//! computed in row chunks so that only (chunk, V) logits exist at any time.
//!
//! Semantics: TRL 1.16's `GRPOTrainer._compute_loss` for every `loss_type` (grpo, bnpo,
//! dr_grpo, dapo, luspo: the clipped surrogate with ε_low/ε_high and optional `delta`; cispo,
//! sapo, vespo), token or sequence (GSPO) ratio, the `top_entropy_quantile` mask, the KL to the
//! reference times β with TRL's bias correction, and TRL's entropy bonus; plus verl's dual clip
//! and KL estimators (see [`PolicyLossParams`]). The policy's distribution is
//! softmax(logits / temperature), the one the completions were sampled from. [`LossNorm`] lets
//! a trainer split a minibatch into micro-batches exactly as TRL's gradient accumulation does.
//!
//! The computation, with every step a [`Backend`] op (so it runs unchanged on a device):
//! 1. for each chunk of rows: `logits = hidden[chunk] · Wᵀ`; fused log-softmax gather +
//!    entropy → logp, H for those rows; with `top_entropy_quantile` < 1 the entropies go to
//!    the host once for the threshold (a quantile over the batch's tokens);
//! 2. the policy loss over all S·L tokens → loss, metrics, d loss/d logp, d loss/d H;
//! 3. for each chunk again: recompute the logits, overwrite them with d loss/d logits (fused
//!    backward), then `dW += dlogitsᵀ · hidden[chunk]` and `dhidden[chunk] = dlogits · W`.
//!
//! Memory: chunk·(V + 2C) + 4N + 16 values of workspace ([`workspace_bytes`]), independent of
//! N·V, kept between calls and resized within its capacity (no allocation once it has seen
//! the largest N). Time: three (chunk, V, C) matmuls per chunk (Liger's count) plus one to
//! recompute the logits of every chunk but the first: step 1 visits the chunks last to first,
//! so the first chunk's logits are still in the workspace when step 3 starts with it. With a
//! single chunk (N ≤ chunk_rows) that is three matmuls in all.

use crate::backend::{policy_metric as pm, Backend, Dtype, Gemm, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use crate::{Error, Result};

pub use crate::backend::{IsLevel, KlEstimator, LossType};

/// The objective's hyper-parameters (TRL's `GRPOConfig` names where TRL has them). Defaults:
/// DAPO (ε_low 0.2, ε_high 0.28, β = 0, token level, "dapo" aggregation), TRL 1.16's defaults
/// for the other knobs (k3 KL with bias correction, no delta, no entropy mask, sapo / vespo
/// constants), no dual clip, no entropy bonus, 1024-row chunks.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Policy term and aggregation of per-token losses.
    pub loss_type: LossType,
    /// Token ratio or sequence (GSPO) ratio.
    pub importance_sampling_level: IsLevel,
    /// ρ is clipped below at 1 − eps_low.
    pub eps_low: f32,
    /// ρ is clipped above at 1 + eps_high (cispo: the ratio is capped at eps_high itself).
    pub eps_high: f32,
    /// TRL's two-sided clipping (INTELLECT-2): the clip family's unclipped branch uses
    /// min(ρ, delta). Must be > 1 when set.
    pub delta: Option<f32>,
    /// verl's dual clip: for A < 0 the clip family's term is capped at −A·clip_ratio_c. Must
    /// be > 1 when set (verl asserts it).
    pub clip_ratio_c: Option<f32>,
    /// KL coefficient; 0 skips the KL (no reference log-probs needed).
    pub beta: f32,
    /// The per-token KL estimator.
    pub kl_estimator: KlEstimator,
    /// TRL's `use_bias_correction_kl`: weight the KL by the ratio ρ (TRL 1.16's default).
    pub use_bias_correction_kl: bool,
    /// TRL's `top_entropy_quantile`: only the top fraction q of tokens by entropy (a quantile
    /// over the batch's masked tokens) keep their policy term; 1 keeps every token.
    pub top_entropy_quantile: f32,
    /// sapo's temperature for A > 0.
    pub sapo_temperature_pos: f32,
    /// sapo's temperature for A ≤ 0.
    pub sapo_temperature_neg: f32,
    /// vespo's k for A ≥ 0.
    pub vespo_k_pos: f32,
    /// vespo's λ for A ≥ 0.
    pub vespo_lambda_pos: f32,
    /// vespo's k for A < 0.
    pub vespo_k_neg: f32,
    /// vespo's λ for A < 0.
    pub vespo_lambda_neg: f32,
    /// Entropy bonus coefficient: the loss gets −entropy_coef times the mean entropy of the
    /// (entropy-masked) tokens.
    pub entropy_coef: f32,
    /// Sampling temperature: logits are divided by it before the log-softmax. Not read from a
    /// settings file: the trainer sets it from its sampling settings.
    #[serde(skip)]
    pub temperature: f32,
    /// Rows of logits computed at a time.
    pub chunk_rows: usize,
    /// dr_grpo's denominator length; `None` uses the padded completion length L. Not read
    /// from a settings file: the trainer sets it from its sampling settings.
    #[serde(skip)]
    pub max_completion_length: Option<usize>,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            loss_type: LossType::Dapo,
            importance_sampling_level: IsLevel::Token,
            eps_low: 0.2,
            eps_high: 0.28,
            delta: None,
            clip_ratio_c: None,
            beta: 0.0,
            kl_estimator: KlEstimator::K3,
            use_bias_correction_kl: true,
            top_entropy_quantile: 1.0,
            sapo_temperature_pos: 1.0,
            sapo_temperature_neg: 1.05,
            vespo_k_pos: 2.0,
            vespo_lambda_pos: 3.0,
            vespo_k_neg: 3.0,
            vespo_lambda_neg: 2.0,
            entropy_coef: 0.0,
            temperature: 1.0,
            chunk_rows: 1024,
            max_completion_length: None,
        }
    }
}

impl ObjectiveConfig {
    /// Rejects values that make the objective meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("objective config: {msg}")));
        if self.chunk_rows == 0 {
            return bad("chunk_rows must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("temperature must be finite and > 0, got {}", self.temperature));
        }
        for (name, x) in [("eps_low", self.eps_low), ("eps_high", self.eps_high), ("beta", self.beta)] {
            if !(x.is_finite() && x >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {x}"));
            }
        }
        if self.eps_low >= 1.0 {
            return bad(format!(
                "eps_low must be < 1 (the lower clip 1 - eps_low must stay positive), got {}",
                self.eps_low
            ));
        }
        if !self.entropy_coef.is_finite() {
            return bad(format!("entropy_coef must be finite, got {}", self.entropy_coef));
        }
        if self.max_completion_length == Some(0) {
            return bad("max_completion_length must be at least 1".into());
        }
        for (name, x) in [("delta", self.delta), ("clip_ratio_c", self.clip_ratio_c)] {
            if let Some(x) = x.filter(|x| !(x.is_finite() && *x > 1.0)) {
                return bad(format!("{name} must be finite and > 1 when set, got {x}"));
            }
        }
        let q = self.top_entropy_quantile;
        if !(0.0..=1.0).contains(&q) {
            return bad(format!("top_entropy_quantile must be in [0, 1], got {q}"));
        }
        for (name, x) in
            [("sapo_temperature_pos", self.sapo_temperature_pos), ("sapo_temperature_neg", self.sapo_temperature_neg)]
        {
            if !(x.is_finite() && x > 0.0) {
                return bad(format!("{name} must be finite and > 0, got {x}"));
            }
        }
        for (name, x) in [
            ("vespo_k_pos", self.vespo_k_pos),
            ("vespo_lambda_pos", self.vespo_lambda_pos),
            ("vespo_k_neg", self.vespo_k_neg),
            ("vespo_lambda_neg", self.vespo_lambda_neg),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {x}"));
            }
        }
        if self.loss_type == LossType::Cispo && self.eps_high <= 0.0 {
            return bad(format!("eps_high must be > 0 for cispo (it caps the ratio), got {}", self.eps_high));
        }
        Ok(())
    }
}

/// How a micro-batch's loss is normalised relative to the minibatch it is part of, so that
/// the gradients of the micro-batches add up as TRL's gradient accumulation adds them (one
/// optimizer step over `accum` micro-batches). `None` in [`ObjectiveBatch::norm`] is this
/// batch alone: its S, its own tokens, accumulation 1.
///
/// Per loss type (TRL 1.16): grpo / sapo divide each sequence's token mean, luspo each
/// sequence's token sum, and dr_grpo the token sum by `sequences` (·max_completion_length);
/// dapo / cispo / vespo divide the token sum by `tokens`; bnpo divides the micro-batch's token
/// mean by `accum`, and the entropy bonus (a mean over the micro-batch's tokens) too. Only the
/// losses that do not use the micro-batch's own token count (all but bnpo and the entropy
/// bonus) add up to the whole batch's loss exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossNorm {
    /// Sequences in the minibatch (TRL: micro-batch size × accumulation steps).
    pub sequences: f32,
    /// Completion tokens (mask sum) in the minibatch (TRL's `num_items_in_batch` for one
    /// accumulation window).
    pub tokens: f32,
    /// Gradient-accumulation steps the minibatch is split into.
    pub accum: f32,
}

impl LossNorm {
    /// Rejects values that make the normalisation meaningless; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("loss norm: {msg}")));
        for (name, x) in [("sequences", self.sequences), ("tokens", self.tokens)] {
            if !(x.is_finite() && x > 0.0) {
                return bad(format!("{name} must be finite and > 0, got {x}"));
            }
        }
        if !(self.accum.is_finite() && self.accum >= 1.0) {
            return bad(format!("accum must be finite and >= 1, got {}", self.accum));
        }
        Ok(())
    }
}

/// One batch of completions, all as backend buffers: S sequences of L (padded) completion
/// tokens, N = S·L rows.
pub struct ObjectiveBatch<'a, B: Backend> {
    /// Final hidden states feeding the lm_head, (N, C).
    pub hidden: &'a B::Buf,
    /// lm_head weight, (V, C) (GPT-2: tied to wte).
    pub weight: &'a B::Buf,
    /// The sampled token at each row, (N).
    pub targets: &'a B::Ids,
    /// 1 for completion tokens that count, 0 for padding, (N).
    pub mask: &'a B::Buf,
    /// One advantage per sequence, (S).
    pub advantages: &'a B::Buf,
    /// Log-probs under the sampling policy, (N).
    pub logp_old: &'a B::Buf,
    /// Log-probs under the frozen reference, (N); required when β ≠ 0, ignored when β = 0.
    pub logp_ref: Option<&'a B::Buf>,
    /// Sequences.
    pub s: usize,
    /// Tokens per sequence.
    pub l: usize,
    /// Hidden size.
    pub c: usize,
    /// Vocabulary size.
    pub v: usize,
    /// Normalisers relative to the minibatch this batch is a micro-batch of; `None`: this
    /// batch alone.
    pub norm: Option<LossNorm>,
}

/// What one objective evaluation reports (masked means over completion tokens).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ObjectiveMetrics {
    /// The total loss (policy term + β·KL − entropy bonus), aggregated per the loss type.
    pub loss: f32,
    /// The aggregated policy term alone (after the entropy mask).
    pub policy_loss: f32,
    /// Mean KL term to the reference, after the bias correction (0 when β = 0).
    pub kl: f32,
    /// Mean entropy of the tempered policy.
    pub entropy: f32,
    /// TRL's `clip_ratio/low_mean`: fraction with min(ρ, δ) < 1 − ε_low and A < 0 (clip
    /// family; token level a token mean, sequence level a mean over sequences).
    pub clip_frac_low: f32,
    /// TRL's `clip_ratio/high_mean` (min(ρ, δ) > 1 + ε_high, A > 0), or for cispo its
    /// `cispo_clip_ratio` (ρ > ε_high, A > 0).
    pub clip_frac_high: f32,
    /// Fraction of tokens where verl's dual clip is active (0 without it).
    pub clip_frac_dual: f32,
    /// The entropy threshold of the `top_entropy_quantile` mask (`None` when q = 1).
    pub entropy_threshold: Option<f32>,
    /// Mean ratio.
    pub ratio_mean: f32,
    /// Smallest ratio.
    pub ratio_min: f32,
    /// Largest ratio.
    pub ratio_max: f32,
    /// Σ mask (the number of completion tokens).
    pub tokens: f32,
}

impl ObjectiveMetrics {
    fn from_buf(m: &[f32], entropy_threshold: Option<f32>) -> Self {
        ObjectiveMetrics {
            loss: m[pm::LOSS],
            policy_loss: m[pm::POLICY_LOSS],
            kl: m[pm::KL_MEAN],
            entropy: m[pm::ENTROPY_MEAN],
            clip_frac_low: m[pm::CLIP_FRAC_LOW],
            clip_frac_high: m[pm::CLIP_FRAC_HIGH],
            clip_frac_dual: m[pm::DUAL_CLIP_FRAC],
            entropy_threshold,
            ratio_mean: m[pm::RATIO_MEAN],
            ratio_min: m[pm::RATIO_MIN],
            ratio_max: m[pm::RATIO_MAX],
            tokens: m[pm::MASK_SUM],
        }
    }
}

/// Workspace values (f32) the objective holds for N rows: hidden and d hidden chunks
/// (2·chunk·C), one logits chunk (chunk·V), logp / entropy and their gradients (4N), and the
/// metrics. Multiply by 4 for bytes. The (N, V) logits would be N·V.
pub fn workspace_values(chunk_rows: usize, n: usize, c: usize, v: usize) -> usize {
    let rows = chunk_rows.min(n).max(1);
    rows * (v + 2 * c) + 4 * n + pm::LEN
}

/// [`workspace_values`] in bytes.
pub fn workspace_bytes(chunk_rows: usize, n: usize, c: usize, v: usize) -> usize {
    4 * workspace_values(chunk_rows, n, c, v)
}

/// The objective's buffers, sized for the largest (chunk, N) seen and resized within that.
struct Workspace<B: Backend> {
    hc: B::Buf,
    dhc: B::Buf,
    logits: B::Buf,
    logp: B::Buf,
    entropy: B::Buf,
    dlogp: B::Buf,
    dentropy: B::Buf,
    metrics: B::Buf,
}

/// The chunked DAPO objective; keeps its workspace between calls with the same shapes.
pub struct DapoObjective<B: Backend> {
    cfg: ObjectiveConfig,
    ws: Option<Workspace<B>>,
}

impl<B: Backend> DapoObjective<B> {
    /// An objective with `cfg` (validated).
    pub fn new(cfg: ObjectiveConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(DapoObjective { cfg, ws: None })
    }

    /// The configuration.
    pub fn config(&self) -> &ObjectiveConfig {
        &self.cfg
    }

    /// Changes β (e.g. from an adaptive KL controller).
    pub fn set_beta(&mut self, beta: f32) -> Result<()> {
        let cfg = ObjectiveConfig { beta, ..self.cfg.clone() };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// The workspace for N rows of C channels and V logits: chunk·C hidden and d hidden rows,
    /// chunk·V logits, N log-probs, entropies and their gradients. Made once, then resized
    /// (allocating only past the largest shape seen).
    fn workspace(&mut self, k: &B, n: usize, c: usize, v: usize, hidden: Dtype) -> &mut Workspace<B> {
        let rows = self.cfg.chunk_rows.min(n);
        // Made empty, then sized below: the sizes have one home.
        let ws = self.ws.get_or_insert_with(|| Workspace {
            hc: k.alloc_as(0, hidden),
            dhc: k.alloc(0),
            logits: k.alloc(0),
            logp: k.alloc(0),
            entropy: k.alloc(0),
            dlogp: k.alloc(0),
            dentropy: k.alloc(0),
            metrics: k.alloc(pm::LEN),
        });
        for (buf, len) in [
            (&mut ws.hc, rows * c),
            (&mut ws.dhc, rows * c),
            (&mut ws.logits, rows * v),
            (&mut ws.logp, n),
            (&mut ws.entropy, n),
            (&mut ws.dlogp, n),
            (&mut ws.dentropy, n),
        ] {
            k.resize(buf, len);
        }
        // The hidden chunk is copied out of the model's hidden state, so it is stored alike
        // (bf16 in bf16 mixed precision without a policy GRN).
        if k.dtype(&ws.hc) != hidden {
            ws.hc = k.alloc_as(rows * c, hidden);
        }
        ws
    }

    /// The loss and its gradients for one batch: **overwrites** `grad_hidden` (N, C) and
    /// **accumulates** into `grad_weight` (V, C) (parameter-gradient convention).
    pub fn forward_backward(
        &mut self,
        k: &B,
        batch: &ObjectiveBatch<'_, B>,
        grad_hidden: &mut B::Buf,
        grad_weight: &mut B::Buf,
    ) -> Result<ObjectiveMetrics> {
        let (n, c, v) = check_shapes(k, batch)?;
        let want = [("grad_hidden", k.len(grad_hidden), n * c), ("grad_weight", k.len(grad_weight), v * c)];
        for (name, got, want) in want {
            if got != want {
                return Err(Error::Invalid(format!("objective: {name} has {got} values, expected {want}")));
            }
        }
        if let Some(norm) = &batch.norm {
            norm.validate()?;
        }
        let params = self.params(batch.s, batch.l, batch.norm);
        let inv_t = 1.0 / self.cfg.temperature;
        let rows_per = self.cfg.chunk_rows.min(n);
        let top_q = self.cfg.top_entropy_quantile;
        let ObjectiveBatch { hidden, weight, targets, mask, advantages, logp_old, logp_ref, .. } = *batch;
        let ws = self.workspace(k, n, c, v, k.dtype(hidden));

        // 0. Cheap input checks through the loss op itself (logp := logp_old), before the
        //    expensive passes: all-zero mask, non-finite advantages / old / ref log-probs.
        let pre = PolicyLossInputs { logp: logp_old, logp_old, logp_ref, advantages, entropy: logp_old, mask };
        let pre_params = PolicyLossParams { entropy_threshold: None, ..params };
        k.policy_loss(&mut ws.dlogp, &mut ws.dentropy, &mut ws.metrics, pre, pre_params);
        check_metrics(&k.download(&ws.metrics), params, false)?;

        // 1. logp and entropy of every row, chunk by chunk, last chunk first: the rows are
        //    independent, and the first chunk's logits (and hidden rows) are then still in the
        //    workspace for step 3, which saves recomputing them.
        for row0 in (0..n).step_by(rows_per).rev() {
            let ch = load_chunk(k, ws, (hidden, weight), row0, rows_per, (n, c, v), inv_t);
            k.logprob_entropy_forward(&ws.logits, targets, &mut ws.logp, &mut ws.entropy, ch);
        }

        // The `top_entropy_quantile` mask's threshold, over this call's masked entropies.
        let entropy_threshold =
            (top_q < 1.0).then(|| entropy_quantile(&k.download(&ws.entropy), &k.download(mask), top_q));
        let params = PolicyLossParams { entropy_threshold, ..params };

        // 2. The loss, its metrics, and d loss / d logp, d loss / d entropy.
        let inputs = PolicyLossInputs { logp: &ws.logp, logp_old, logp_ref, advantages, entropy: &ws.entropy, mask };
        k.policy_loss(&mut ws.dlogp, &mut ws.dentropy, &mut ws.metrics, inputs, params);
        let metrics = k.download(&ws.metrics);
        check_metrics(&metrics, params, true)?;

        // 3. Back through the fused log-softmax and the lm_head product, chunk by chunk. Chunk 0
        //    was the last one step 1 computed, and nothing since has written ws.hc or
        //    ws.logits: its logits are reused (the same product, so the same values).
        for row0 in (0..n).step_by(rows_per) {
            let ch = if row0 == 0 {
                LogprobChunk { row0, rows: rows_per, v, inv_temperature: inv_t }
            } else {
                load_chunk(k, ws, (hidden, weight), row0, rows_per, (n, c, v), inv_t)
            };
            k.logprob_entropy_backward(&mut ws.logits, targets, &ws.dlogp, &ws.dentropy, ch);
            // Rows past ch.rows (a short last chunk) hold zero logits of zero hidden rows:
            // they add nothing to dW, and their dhidden rows are not copied out.
            k.matmul(grad_weight, &ws.logits, &ws.hc, None, Gemm::tn(v, c, rows_per).acc());
            k.matmul(&mut ws.dhc, &ws.logits, weight, None, Gemm::nn(rows_per, c, v));
            k.copy_range(grad_hidden, row0 * c, &ws.dhc, 0, ch.rows * c);
        }
        Ok(ObjectiveMetrics::from_buf(&metrics, entropy_threshold))
    }

    /// Per-token log-probs and entropies of `targets` under softmax(hidden·Wᵀ / temperature),
    /// chunked like the loss (e.g. for logp_old / logp_ref). Returns two (N) host vectors.
    pub fn token_logprobs(
        &mut self,
        k: &B,
        hidden: &B::Buf,
        weight: &B::Buf,
        targets: &B::Ids,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let ws = self.logprob_pass(k, (hidden, weight, targets), (n, c, v))?;
        Ok((k.download(&ws.logp), k.download(&ws.entropy)))
    }

    /// [`DapoObjective::token_logprobs`] kept on the backend: the N log-probs go to values
    /// `offset .. offset + N` of `out` (a whole batch's buffer filled micro-batch by
    /// micro-batch), and nothing is downloaded (the entropies, which the caller does not use,
    /// stay in the workspace).
    pub fn token_logprobs_into(
        &mut self,
        k: &B,
        inputs: (&B::Buf, &B::Buf, &B::Ids),
        (n, c, v): (usize, usize, usize),
        out: &mut B::Buf,
        offset: usize,
    ) -> Result<()> {
        if offset + n > k.len(out) {
            return Err(Error::Invalid(format!("token_logprobs: rows {offset}..{} of {}", offset + n, k.len(out))));
        }
        let ws = self.logprob_pass(k, inputs, (n, c, v))?;
        k.copy_range(out, offset, &ws.logp, 0, n);
        Ok(())
    }

    /// The shared pass of the two above: checks the shapes, then leaves the N log-probs and
    /// entropies in the workspace's `logp` and `entropy`, chunk by chunk.
    fn logprob_pass(
        &mut self,
        k: &B,
        (hidden, weight, targets): (&B::Buf, &B::Buf, &B::Ids),
        (n, c, v): (usize, usize, usize),
    ) -> Result<&mut Workspace<B>> {
        if n == 0 || c == 0 || v == 0 {
            return Err(Error::Invalid(format!("token_logprobs: empty shape N={n} C={c} V={v}")));
        }
        for (name, got, want) in
            [("hidden", k.len(hidden), n * c), ("weight", k.len(weight), v * c), ("targets", k.ids_len(targets), n)]
        {
            if got != want {
                return Err(Error::Invalid(format!("token_logprobs: {name} has {got} values, expected {want}")));
            }
        }
        let inv_t = 1.0 / self.cfg.temperature;
        let rows_per = self.cfg.chunk_rows.min(n);
        let ws = self.workspace(k, n, c, v, k.dtype(hidden));
        for row0 in (0..n).step_by(rows_per) {
            let ch = load_chunk(k, ws, (hidden, weight), row0, rows_per, (n, c, v), inv_t);
            k.logprob_entropy_forward(&ws.logits, targets, &mut ws.logp, &mut ws.entropy, ch);
        }
        Ok(ws)
    }

    /// Step 2 of [`DapoObjective::forward_backward`] on its own: the policy loss of log-probs
    /// and entropies the caller computed, for a policy that is not a language model (the
    /// model-agnostic [`crate::rl::group_trainer::GroupTrainer`]), so that it trains with this
    /// objective's surrogate, aggregation and entropy bonus instead of a restatement of them.
    /// The batch is this call alone (no [`LossNorm`]) and has no reference log-probs, so β
    /// must be 0. Shapes are checked, values are not: a non-finite input gives non-finite
    /// results.
    pub fn policy_loss(&mut self, k: &B, x: HostPolicyInputs<'_>) -> Result<HostPolicyLoss> {
        let (s, l) = (x.advantages.len(), x.l);
        if s == 0 || l == 0 {
            return Err(Error::Invalid(format!("policy_loss: empty shape S={s} L={l}")));
        }
        let lens = [("logp", x.logp.len()), ("logp_old", x.logp_old.len()), ("entropy", x.entropy.len())];
        for (name, got) in lens.into_iter().chain([("mask", x.mask.len())]) {
            if got != s * l {
                return Err(Error::Invalid(format!("policy_loss: {name} has {got} values, expected S·L = {}", s * l)));
            }
        }
        if self.cfg.beta != 0.0 {
            return Err(Error::Invalid(format!(
                "policy_loss: beta is {} but host inputs carry no reference log-probs",
                self.cfg.beta
            )));
        }
        let top_q = self.cfg.top_entropy_quantile;
        let entropy_threshold = (top_q < 1.0).then(|| entropy_quantile(x.entropy, x.mask, top_q));
        let params = PolicyLossParams { entropy_threshold, ..self.params(s, l, None) };
        let (logp, logp_old, entropy) = (k.upload(x.logp), k.upload(x.logp_old), k.upload(x.entropy));
        let (mask, advantages) = (k.upload(x.mask), k.upload(x.advantages));
        let (mut dlogp, mut dentropy, mut metrics) = (k.alloc(s * l), k.alloc(s * l), k.alloc(pm::LEN));
        let inputs = PolicyLossInputs {
            logp: &logp,
            logp_old: &logp_old,
            logp_ref: None,
            advantages: &advantages,
            entropy: &entropy,
            mask: &mask,
        };
        k.policy_loss(&mut dlogp, &mut dentropy, &mut metrics, inputs, params);
        Ok(HostPolicyLoss {
            dlogp: k.download(&dlogp),
            dentropy: k.download(&dentropy),
            metrics: ObjectiveMetrics::from_buf(&k.download(&metrics), entropy_threshold),
        })
    }

    /// The op's constants for S sequences of L tokens normalised by `norm` (without the
    /// entropy threshold, which needs the entropies).
    fn params(&self, s: usize, l: usize, norm: Option<LossNorm>) -> PolicyLossParams {
        let cfg = &self.cfg;
        // The op's "this call alone" values: S, its own tokens, no accumulation.
        let norm = norm.unwrap_or(LossNorm { sequences: 0.0, tokens: 0.0, accum: 1.0 });
        PolicyLossParams {
            s,
            l,
            loss_type: cfg.loss_type,
            level: cfg.importance_sampling_level,
            eps_low: cfg.eps_low,
            eps_high: cfg.eps_high,
            delta: cfg.delta,
            clip_ratio_c: cfg.clip_ratio_c,
            beta: cfg.beta,
            kl_estimator: cfg.kl_estimator,
            use_bias_correction_kl: cfg.use_bias_correction_kl,
            entropy_coef: cfg.entropy_coef,
            entropy_threshold: None,
            sapo_temperature_pos: cfg.sapo_temperature_pos,
            sapo_temperature_neg: cfg.sapo_temperature_neg,
            vespo_k_pos: cfg.vespo_k_pos,
            vespo_lambda_pos: cfg.vespo_lambda_pos,
            vespo_k_neg: cfg.vespo_k_neg,
            vespo_lambda_neg: cfg.vespo_lambda_neg,
            max_completion_length: cfg.max_completion_length.unwrap_or(l),
            seq_norm: norm.sequences,
            token_norm: norm.tokens,
            accum: norm.accum,
        }
    }
}

/// TRL's `get_high_entropy_mask(entropies, mask, 1 − q)` threshold: the (1 − q) quantile of
/// the masked entropies `h` (a non-finite entropy makes it NaN, and the policy loss reports
/// that entropy).
fn entropy_quantile(h: &[f32], m: &[f32], top_q: f32) -> f32 {
    let mut masked: Vec<f32> =
        h.iter().zip(m).filter(|(_, &m)| m != 0.0 && m.is_finite() && m >= 0.0).map(|(&h, _)| h).collect();
    // No masked token: no token passes (TRL returns an all-false mask).
    linear_quantile(&mut masked, 1.0 - f64::from(top_q)).unwrap_or(f32::INFINITY)
}

/// The inputs of [`DapoObjective::policy_loss`]: a caller's own log-probs and entropies as host
/// values, S sequences of L tokens, row-major.
#[derive(Clone, Copy, Debug)]
pub struct HostPolicyInputs<'a> {
    /// Tokens per sequence (L).
    pub l: usize,
    /// The current policy's log-probs of the sampled tokens (S·L).
    pub logp: &'a [f32],
    /// Log-probs under the policy that sampled them (S·L).
    pub logp_old: &'a [f32],
    /// The current policy's entropy at each position (S·L).
    pub entropy: &'a [f32],
    /// 1 for tokens that count, 0 for padding (S·L).
    pub mask: &'a [f32],
    /// One advantage per sequence (S).
    pub advantages: &'a [f32],
}

/// What [`DapoObjective::policy_loss`] computes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostPolicyLoss {
    /// d loss / d logp (S·L).
    pub dlogp: Vec<f32>,
    /// d loss / d entropy (S·L): the entropy bonus's gradient.
    pub dentropy: Vec<f32>,
    /// The loss and its metrics.
    pub metrics: ObjectiveMetrics,
}

/// The `p`-quantile (0 ≤ p ≤ 1) of `values` with linear interpolation between the two nearest
/// ranks, torch.quantile's default: rank p·(n−1) of the sorted values. Sorts `values` in
/// place; `None` when it is empty; NaN when any value is NaN (as torch). torch computes the
/// rank and the interpolation in the input's dtype (f32); this computes them in f64 and rounds
/// once, so the two can differ by an ulp of the result.
pub fn linear_quantile(values: &mut [f32], p: f64) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    if values.iter().any(|v| v.is_nan()) {
        return Some(f32::NAN);
    }
    values.sort_unstable_by(f32::total_cmp);
    let rank = p.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (below, above) = (rank.floor() as usize, rank.ceil() as usize);
    let (lo, hi) = (f64::from(values[below]), f64::from(values[above]));
    if below == above || lo == hi {
        return Some(values[below]);
    }
    Some((lo + (rank - below as f64) * (hi - lo)) as f32)
}

/// Copies hidden rows `row0..` into the chunk buffer (zero-padded when the chunk is short)
/// and computes the chunk's logits = hidden_chunk · Wᵀ.
/// Hidden is (N,C), the lm_head weight (V,C).
fn load_chunk<B: Backend>(
    k: &B,
    ws: &mut Workspace<B>,
    (hidden, weight): (&B::Buf, &B::Buf),
    row0: usize,
    rows_per: usize,
    (n, c, v): (usize, usize, usize),
    inv_t: f32,
) -> LogprobChunk {
    let rows = rows_per.min(n - row0);
    if rows < rows_per {
        k.zero(&mut ws.hc);
    }
    k.copy_range(&mut ws.hc, 0, hidden, row0 * c, rows * c);
    k.matmul(&mut ws.logits, &ws.hc, weight, None, Gemm::nt(rows_per, v, c));
    LogprobChunk { row0, rows, v, inv_temperature: inv_t }
}

fn check_shapes<B: Backend>(k: &B, b: &ObjectiveBatch<'_, B>) -> Result<(usize, usize, usize)> {
    let (s, l, c, v) = (b.s, b.l, b.c, b.v);
    if s == 0 || l == 0 || c == 0 || v == 0 {
        return Err(Error::Invalid(format!("objective: empty shape S={s} L={l} C={c} V={v}")));
    }
    let n = s * l;
    let mut checks = vec![
        ("hidden", k.len(b.hidden), n * c),
        ("weight", k.len(b.weight), v * c),
        ("targets", k.ids_len(b.targets), n),
        ("mask", k.len(b.mask), n),
        ("advantages", k.len(b.advantages), s),
        ("logp_old", k.len(b.logp_old), n),
    ];
    if let Some(r) = b.logp_ref {
        checks.push(("logp_ref", k.len(r), n));
    }
    for (name, got, want) in checks {
        if got != want {
            return Err(Error::Invalid(format!(
                "objective: {name} has {got} values, expected {want} (S={s} L={l} C={c} V={v})"
            )));
        }
    }
    Ok((n, c, v))
}

/// Turns the op's counts of bad inputs into errors. `after_forward`: the current log-probs
/// and entropies are real (not the pre-check's stand-ins).
fn check_metrics(m: &[f32], p: PolicyLossParams, after_forward: bool) -> Result<()> {
    let err = |msg: String| Err(Error::Invalid(format!("objective: {msg}")));
    let count = |i: usize| m[i] as usize;
    if count(pm::BAD_MASK) > 0 {
        return err(format!("mask has {} negative or non-finite values", count(pm::BAD_MASK)));
    }
    if m[pm::MASK_SUM] <= 0.0 {
        return err("the mask is all zero: no completion token to train on".into());
    }
    if count(pm::BAD_ADVANTAGE) > 0 {
        return err(format!("{} of {} advantages are not finite", count(pm::BAD_ADVANTAGE), p.s));
    }
    if count(pm::BAD_LOGP_OLD) > 0 {
        return err(format!("logp_old is not finite at {} masked positions", count(pm::BAD_LOGP_OLD)));
    }
    if count(pm::BAD_LOGP_REF) > 0 {
        return err(format!(
            "logp_ref is missing or not finite at {} masked positions (required when beta = {} != 0)",
            count(pm::BAD_LOGP_REF),
            p.beta
        ));
    }
    if after_forward {
        if count(pm::BAD_LOGP) > 0 {
            return err(format!(
                "the policy's log-prob is not finite at {} masked positions (non-finite hidden states or \
                 lm_head weights, or a target id >= V)",
                count(pm::BAD_LOGP)
            ));
        }
        if count(pm::BAD_ENTROPY) > 0 {
            return err(format!("the policy's entropy is not finite at {} masked positions", count(pm::BAD_ENTROPY)));
        }
        if !m[pm::LOSS].is_finite() {
            return err(format!("the loss is not finite ({})", m[pm::LOSS]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::util::rng::Rng;

    #[test]
    fn config_defaults_are_dapo_with_trl_knobs() {
        let c = ObjectiveConfig::default();
        assert_eq!((c.eps_low, c.eps_high, c.beta), (0.2, 0.28, 0.0));
        assert_eq!((c.loss_type, c.importance_sampling_level), (LossType::Dapo, IsLevel::Token));
        assert_eq!(c.temperature, 1.0);
        // TRL 1.16's defaults.
        assert_eq!((c.kl_estimator, c.use_bias_correction_kl, c.top_entropy_quantile), (KlEstimator::K3, true, 1.0));
        assert_eq!((c.delta, c.clip_ratio_c), (None, None));
        assert_eq!((c.sapo_temperature_pos, c.sapo_temperature_neg), (1.0, 1.05));
        assert_eq!((c.vespo_k_pos, c.vespo_lambda_pos, c.vespo_k_neg, c.vespo_lambda_neg), (2.0, 3.0, 3.0, 2.0));
        c.validate().unwrap();
        let c: ObjectiveConfig =
            serde_json::from_str(r#"{"loss_type":"dr_grpo","importance_sampling_level":"sequence"}"#).unwrap();
        assert_eq!((c.loss_type, c.importance_sampling_level), (LossType::DrGrpo, IsLevel::Sequence));
        let c: ObjectiveConfig = serde_json::from_str(
            r#"{"loss_type":"vespo","kl_estimator":"k2","use_bias_correction_kl":false,"delta":1.5,
                "clip_ratio_c":3.0,"top_entropy_quantile":0.2}"#,
        )
        .unwrap();
        assert_eq!((c.loss_type, c.kl_estimator, c.use_bias_correction_kl), (LossType::Vespo, KlEstimator::K2, false));
        assert_eq!((c.delta, c.clip_ratio_c, c.top_entropy_quantile), (Some(1.5), Some(3.0), 0.2));
        for (name, t) in [("cispo", LossType::Cispo), ("sapo", LossType::Sapo), ("luspo", LossType::Luspo)] {
            assert_eq!(name.parse::<LossType>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
        }
        assert_eq!("k1".parse::<KlEstimator>().unwrap(), KlEstimator::K1);
        assert!("k4".parse::<KlEstimator>().unwrap_err().contains("k1, k2 or k3"));
        // The trainer owns temperature and max_completion_length: a settings file cannot set them.
        for field in ["temperature", "max_completion_length"] {
            let e = serde_json::from_str::<ObjectiveConfig>(&format!(r#"{{"{field}":1}}"#)).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let json = serde_json::to_string(&ObjectiveConfig::default()).unwrap();
        assert!(!json.contains("\"temperature\"") && !json.contains("max_completion_length"), "{json}");
    }

    #[test]
    fn validation_names_the_field() {
        let d = ObjectiveConfig::default();
        let cases = [
            (ObjectiveConfig { chunk_rows: 0, ..d.clone() }, "chunk_rows"),
            (ObjectiveConfig { temperature: 0.0, ..d.clone() }, "temperature"),
            (ObjectiveConfig { beta: f32::NAN, ..d.clone() }, "beta"),
            (ObjectiveConfig { delta: Some(1.0), ..d.clone() }, "delta"),
            (ObjectiveConfig { delta: Some(f32::INFINITY), ..d.clone() }, "delta"),
            (ObjectiveConfig { clip_ratio_c: Some(0.5), ..d.clone() }, "clip_ratio_c"),
            (ObjectiveConfig { clip_ratio_c: Some(f32::NAN), ..d.clone() }, "clip_ratio_c"),
            (ObjectiveConfig { top_entropy_quantile: 1.5, ..d.clone() }, "top_entropy_quantile"),
            (ObjectiveConfig { top_entropy_quantile: f32::NAN, ..d.clone() }, "top_entropy_quantile"),
            (ObjectiveConfig { sapo_temperature_pos: 0.0, ..d.clone() }, "sapo_temperature_pos"),
            (ObjectiveConfig { sapo_temperature_neg: f32::INFINITY, ..d.clone() }, "sapo_temperature_neg"),
            (ObjectiveConfig { vespo_k_pos: -1.0, ..d.clone() }, "vespo_k_pos"),
            (ObjectiveConfig { vespo_lambda_neg: f32::NAN, ..d.clone() }, "vespo_lambda_neg"),
            (ObjectiveConfig { loss_type: LossType::Cispo, eps_high: 0.0, ..d.clone() }, "eps_high"),
        ];
        for (cfg, field) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "`{e}` should name {field}");
        }
        for ok in [
            ObjectiveConfig { delta: Some(1.01), clip_ratio_c: Some(3.0), top_entropy_quantile: 0.0, ..d.clone() },
            ObjectiveConfig { vespo_k_pos: 0.0, vespo_lambda_pos: 0.0, ..d.clone() },
        ] {
            ok.validate().unwrap();
        }
        let norm = |sequences, tokens, accum| LossNorm { sequences, tokens, accum }.validate();
        assert!(norm(4.0, 30.0, 1.0).is_ok());
        for (n, field) in
            [(norm(0.0, 30.0, 1.0), "sequences"), (norm(4.0, f32::NAN, 1.0), "tokens"), (norm(4.0, 30.0, 0.5), "accum")]
        {
            assert!(n.unwrap_err().to_string().contains(field));
        }
    }

    /// Hand values of torch.quantile's default ('linear'): rank p·(n−1), interpolated.
    #[test]
    fn linear_quantile_matches_torch() {
        let q = |v: &[f32], p: f64| linear_quantile(&mut v.to_vec(), p);
        let v = [3.0f32, 1.0, 4.0, 2.0];
        assert_eq!(q(&v, 0.0), Some(1.0));
        assert_eq!(q(&v, 1.0), Some(4.0));
        assert_eq!(q(&v, 0.5), Some(2.5)); // rank 1.5: halfway between 2 and 3
        assert_eq!(q(&v, 0.25), Some(1.75)); // rank 0.75
        assert_eq!(q(&v, 1.0 / 3.0), Some(2.0)); // rank 1 exactly
        assert_eq!(q(&[0.5, 0.1, 0.9, 0.3, 0.7], 0.8), Some(0.74)); // rank 3.2: 0.7 + 0.2·0.2
        assert_eq!(q(&[5.0], 0.3), Some(5.0));
        assert_eq!(q(&[2.0, 2.0, 7.0], 0.25), Some(2.0)); // ties
        assert_eq!(q(&[], 0.5), None);
        assert!(q(&[1.0, f32::NAN], 0.5).unwrap().is_nan());
    }

    /// A random batch on the CPU: (S, L) with ragged masks, C = 8, V = 11.
    struct Host {
        s: usize,
        l: usize,
        c: usize,
        v: usize,
        hidden: Vec<f32>,
        weight: Vec<f32>,
        targets: Vec<u32>,
        mask: Vec<f32>,
        adv: Vec<f32>,
        logp_old: Vec<f32>,
        logp_ref: Vec<f32>,
    }

    impl Host {
        fn new(seed: u64, s: usize, l: usize) -> Self {
            let (c, v) = (8, 11);
            let mut rng = Rng::new(seed);
            let n = s * l;
            let hidden: Vec<f32> = (0..n * c).map(|_| rng.normal()).collect();
            let weight: Vec<f32> = (0..v * c).map(|_| 0.4 * rng.normal()).collect();
            let targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
            let mut mask = vec![0.0f32; n];
            for i in 0..s {
                let len = 1 + rng.below(l);
                mask[i * l..i * l + len].fill(1.0);
            }
            let adv: Vec<f32> =
                (0..s).map(|i| if i % 2 == 0 { 0.5 + rng.uniform() } else { -0.5 - rng.uniform() }).collect();
            let mut obj = DapoObjective::<CpuBackend>::new(ObjectiveConfig::default()).unwrap();
            let k = CpuBackend::new(Some(1));
            let (lp, _) = obj.token_logprobs(&k, &hidden, &weight, &targets, n, c, v).unwrap();
            let logp_old = lp.iter().map(|x| x + 0.3 * rng.normal()).collect();
            let logp_ref = lp.iter().map(|x| x + 0.2 * rng.normal()).collect();
            Host { s, l, c, v, hidden, weight, targets, mask, adv, logp_old, logp_ref }
        }

        /// The objective on sequences `seqs` with `norm`: (metrics, grad_hidden of those rows);
        /// grad_weight accumulates into `gw`.
        fn run(
            &self,
            cfg: &ObjectiveConfig,
            seqs: std::ops::Range<usize>,
            norm: Option<LossNorm>,
            gw: &mut Vec<f32>,
        ) -> (ObjectiveMetrics, Vec<f32>) {
            let k = CpuBackend::new(Some(1));
            let (l, c) = (self.l, self.c);
            let rows = seqs.start * l..seqs.end * l;
            let s = seqs.len();
            let hidden = self.hidden[rows.start * c..rows.end * c].to_vec();
            let targets = self.targets[rows.clone()].to_vec();
            let (mask, old, rf) =
                (self.mask[rows.clone()].to_vec(), self.logp_old[rows.clone()].to_vec(), self.logp_ref[rows].to_vec());
            let adv = self.adv[seqs].to_vec();
            let batch = ObjectiveBatch::<CpuBackend> {
                hidden: &hidden,
                weight: &self.weight,
                targets: &targets,
                mask: &mask,
                advantages: &adv,
                logp_old: &old,
                logp_ref: Some(&rf),
                s,
                l,
                c,
                v: self.v,
                norm,
            };
            let mut obj = DapoObjective::<CpuBackend>::new(cfg.clone()).unwrap();
            let mut gh = vec![f32::NAN; s * l * c];
            let m = obj.forward_backward(&k, &batch, &mut gh, gw).unwrap();
            (m, gh)
        }
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// A batch run as two micro-batches, each with the minibatch's sequences and tokens as its
    /// LossNorm, gives the whole batch's loss and gradients: the parts' losses and dW add up,
    /// and their dhidden rows are the whole's. (Not bnpo nor the entropy bonus: TRL normalises
    /// those by the micro-batch's own tokens, so they add up only for equal token counts.)
    #[test]
    fn micro_batches_with_loss_norm_add_up_to_the_batch() {
        let h = Host::new(7, 5, 6);
        let tokens: f32 = h.mask.iter().sum();
        let norm = LossNorm { sequences: h.s as f32, tokens, accum: 2.0 };
        for loss_type in [
            LossType::Dapo,
            LossType::Grpo,
            LossType::DrGrpo,
            LossType::Luspo,
            LossType::Cispo,
            LossType::Sapo,
            LossType::Vespo,
        ] {
            for level in [IsLevel::Token, IsLevel::Sequence] {
                let cfg = ObjectiveConfig {
                    loss_type,
                    importance_sampling_level: level,
                    eps_high: if loss_type == LossType::Cispo { 1.1 } else { 0.28 },
                    beta: 0.05,
                    clip_ratio_c: Some(1.5),
                    chunk_rows: 4,
                    ..ObjectiveConfig::default()
                };
                let mut gw = vec![0.0f32; h.v * h.c];
                let (whole, gh) = h.run(&cfg, 0..h.s, None, &mut gw);
                let mut gw_parts = vec![0.0f32; h.v * h.c];
                let (a, gh_a) = h.run(&cfg, 0..2, Some(norm), &mut gw_parts);
                let (b, gh_b) = h.run(&cfg, 2..h.s, Some(norm), &mut gw_parts);
                let what = format!("{loss_type:?}/{level:?}");
                assert!(
                    (a.loss + b.loss - whole.loss).abs() <= 1e-6,
                    "{what}: {} + {} vs {}",
                    a.loss,
                    b.loss,
                    whole.loss
                );
                assert!(whole.loss.abs() > 1e-3, "{what}: a vanishing loss checks nothing");
                let parts = [gh_a, gh_b].concat();
                assert!(max_rel(&parts, &gh) < 1e-5, "{what}: grad_hidden differs by {}", max_rel(&parts, &gh));
                assert!(max_rel(&gw_parts, &gw) < 1e-5, "{what}: grad_weight differs by {}", max_rel(&gw_parts, &gw));
                // Without the norms each part is its own batch: the sum is not the whole.
                let mut scratch = vec![0.0f32; h.v * h.c];
                let alone =
                    h.run(&cfg, 0..2, None, &mut scratch).0.loss + h.run(&cfg, 2..h.s, None, &mut scratch).0.loss;
                assert!((alone - whole.loss).abs() > 1e-4, "{what}: the norms must matter");
            }
        }
    }

    /// The normalisers reach the op: twice the sequences and tokens halve every loss's
    /// gradient; accum divides bnpo and the entropy bonus.
    #[test]
    fn loss_norm_scales_the_loss() {
        let h = Host::new(8, 4, 5);
        let tokens: f32 = h.mask.iter().sum();
        for loss_type in [LossType::Grpo, LossType::Dapo, LossType::Bnpo, LossType::DrGrpo, LossType::Luspo] {
            let cfg = ObjectiveConfig { loss_type, beta: 0.05, ..ObjectiveConfig::default() };
            let mut gw = vec![0.0f32; h.v * h.c];
            let (one, _) = h.run(&cfg, 0..h.s, None, &mut gw);
            let double = LossNorm { sequences: 2.0 * h.s as f32, tokens: 2.0 * tokens, accum: 1.0 };
            let bnpo_half = LossNorm { sequences: h.s as f32, tokens, accum: 2.0 };
            let norm = if loss_type == LossType::Bnpo { bnpo_half } else { double };
            let (half, _) = h.run(&cfg, 0..h.s, Some(norm), &mut gw);
            assert!((half.loss - 0.5 * one.loss).abs() <= 1e-6, "{loss_type:?}: {} vs {}", half.loss, one.loss);
        }
        let cfg = ObjectiveConfig { entropy_coef: 0.1, eps_low: 0.99, eps_high: 100.0, ..ObjectiveConfig::default() };
        let mut gw = vec![0.0f32; h.v * h.c];
        let (one, _) = h.run(&cfg, 0..h.s, None, &mut gw);
        let (acc, _) = h.run(&cfg, 0..h.s, Some(LossNorm { sequences: h.s as f32, tokens, accum: 4.0 }), &mut gw);
        // Only the bonus changes: loss = policy − 0.1·H̄ becomes policy − 0.1·H̄/4.
        let bonus = one.policy_loss - one.loss;
        assert!((one.policy_loss - acc.policy_loss).abs() < 1e-7);
        assert!((acc.policy_loss - acc.loss - bonus / 4.0).abs() < 1e-6, "{} vs {}", acc.policy_loss - acc.loss, bonus);
    }

    /// top_entropy_quantile = q: the threshold is the (1 − q) linear quantile of the batch's
    /// masked entropies, and the policy term keeps only the tokens at or above it.
    #[test]
    fn entropy_threshold_is_the_quantile_of_the_masked_entropies() {
        let h = Host::new(9, 4, 7);
        let k = CpuBackend::new(Some(1));
        let n = h.s * h.l;
        let mut obj = DapoObjective::<CpuBackend>::new(ObjectiveConfig::default()).unwrap();
        let (_, ent) = obj.token_logprobs(&k, &h.hidden, &h.weight, &h.targets, n, h.c, h.v).unwrap();
        let mut masked: Vec<f32> = ent.iter().zip(&h.mask).filter(|(_, &m)| m != 0.0).map(|(&e, _)| e).collect();
        let mut gw = vec![0.0f32; h.v * h.c];
        let full = ObjectiveConfig { beta: 0.05, entropy_coef: 0.01, ..ObjectiveConfig::default() };
        let (m_all, _) = h.run(&full, 0..h.s, None, &mut gw);
        assert_eq!(m_all.entropy_threshold, None);
        for q in [0.8f32, 0.5, 0.2] {
            let cfg = ObjectiveConfig { top_entropy_quantile: q, ..full.clone() };
            let (m, _) = h.run(&cfg, 0..h.s, None, &mut gw);
            let want = linear_quantile(&mut masked, 1.0 - f64::from(q)).unwrap();
            assert_eq!(m.entropy_threshold, Some(want), "q = {q}");
            // The mask changes the policy term, not the KL nor the logged entropy.
            assert!((m.policy_loss - m_all.policy_loss).abs() > 1e-4, "q = {q}");
            assert_eq!((m.kl, m.entropy), (m_all.kl, m_all.entropy));
        }
        // q = 0: the threshold is the largest entropy, which only its own token reaches.
        let (m, _) = h.run(&ObjectiveConfig { top_entropy_quantile: 0.0, ..full }, 0..h.s, None, &mut gw);
        let max = masked.iter().copied().fold(f32::MIN, f32::max);
        assert_eq!(m.entropy_threshold, Some(max));
    }
}
