//! The DAPO / GRPO objective family as a fused linear loss: from the final hidden states
//! (N, C) and the lm_head weight (V, C) to the loss, d loss/d hidden and d loss/d weight,
//! computed in row chunks so that only (chunk, V) logits exist at any time.
//!
//! Semantics (DESIGN.md "RL semantics", TRL's GRPO loss): per-token ratio (or GSPO's
//! sequence ratio), clipped surrogate with ε_low/ε_high, k3 KL to the reference times β,
//! an entropy bonus, and the grpo / bnpo / dr_grpo / dapo aggregations; the policy's
//! distribution is softmax(logits / temperature), the one the completions were sampled from.
//!
//! The computation, with every step a [`Backend`] op (so it runs unchanged on a device):
//! 1. for each chunk of rows: logits = hidden[chunk] · Wᵀ; fused log-softmax gather +
//!    entropy → logp, H for those rows;
//! 2. the policy loss over all S·L tokens → loss, metrics, d loss/d logp, d loss/d H;
//! 3. for each chunk again: recompute the logits, overwrite them with d loss/d logits (fused
//!    backward), then dW += dlogitsᵀ · hidden[chunk] and dhidden[chunk] = dlogits · W.
//!
//! Memory: chunk·(V + 2C) + 4N + 16 values of workspace ([`workspace_bytes`]), independent of
//! N·V. Time: four (chunk, V, C) matmuls per chunk, the logits being computed twice.

use crate::backend::{policy_metric as pm, Backend, Gemm, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use crate::{Error, Result};

pub use crate::backend::{IsLevel, LossType};

/// The objective's hyper-parameters. Defaults: DAPO (ε_low 0.2, ε_high 0.28, β = 0, token
/// level, "dapo" aggregation), temperature 1, no entropy bonus, 1024-row chunks.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Aggregation of per-token losses.
    pub loss_type: LossType,
    /// Token ratio or sequence (GSPO) ratio.
    pub importance_sampling_level: IsLevel,
    /// ρ is clipped below at 1 − eps_low.
    pub eps_low: f32,
    /// ρ is clipped above at 1 + eps_high.
    pub eps_high: f32,
    /// k3 KL coefficient; 0 skips the KL (no reference log-probs needed).
    pub beta: f32,
    /// Entropy bonus coefficient (the loss gets −entropy_coef·H per token).
    pub entropy_coef: f32,
    /// Sampling temperature: logits are divided by it before the log-softmax.
    pub temperature: f32,
    /// Rows of logits computed at a time.
    pub chunk_rows: usize,
    /// dr_grpo's denominator length; `None` uses the padded completion length L.
    pub max_completion_length: Option<usize>,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            loss_type: LossType::Dapo,
            importance_sampling_level: IsLevel::Token,
            eps_low: 0.2,
            eps_high: 0.28,
            beta: 0.0,
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
}

/// What one objective evaluation reports (masked means over completion tokens).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ObjectiveMetrics {
    /// The total loss (surrogate + β·KL − entropy bonus), aggregated per the loss type.
    pub loss: f32,
    /// The clipped surrogate alone.
    pub policy_loss: f32,
    /// Mean k3 KL to the reference (0 when β = 0).
    pub kl: f32,
    /// Mean entropy of the tempered policy.
    pub entropy: f32,
    /// Fraction of tokens with ρ < 1 − ε_low and A < 0.
    pub clip_frac_low: f32,
    /// Fraction of tokens with ρ > 1 + ε_high and A > 0.
    pub clip_frac_high: f32,
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
    fn from_buf(m: &[f32]) -> Self {
        ObjectiveMetrics {
            loss: m[pm::LOSS],
            policy_loss: m[pm::POLICY_LOSS],
            kl: m[pm::KL_MEAN],
            entropy: m[pm::ENTROPY_MEAN],
            clip_frac_low: m[pm::CLIP_FRAC_LOW],
            clip_frac_high: m[pm::CLIP_FRAC_HIGH],
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

struct Workspace<B: Backend> {
    key: (usize, usize, usize, usize),
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

    fn workspace(&mut self, k: &B, n: usize, c: usize, v: usize) -> &mut Workspace<B> {
        let rows = self.cfg.chunk_rows.min(n);
        let key = (rows, n, c, v);
        if self.ws.as_ref().map(|w| w.key) != Some(key) {
            self.ws = None; // free the old workspace before allocating the new one
            self.ws = Some(Workspace {
                key,
                hc: k.alloc(rows * c),
                dhc: k.alloc(rows * c),
                logits: k.alloc(rows * v),
                logp: k.alloc(n),
                entropy: k.alloc(n),
                dlogp: k.alloc(n),
                dentropy: k.alloc(n),
                metrics: k.alloc(pm::LEN),
            });
        }
        self.ws.as_mut().expect("just set")
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
        let params = self.params(batch);
        let inv_t = 1.0 / self.cfg.temperature;
        let rows_per = self.cfg.chunk_rows.min(n);
        let ObjectiveBatch { hidden, weight, targets, mask, advantages, logp_old, logp_ref, .. } = *batch;
        let ws = self.workspace(k, n, c, v);

        // 0. Cheap input checks through the loss op itself (logp := logp_old), before the
        //    expensive passes: all-zero mask, non-finite advantages / old / ref log-probs.
        let pre = PolicyLossInputs { logp: logp_old, logp_old, logp_ref, advantages, entropy: logp_old, mask };
        k.policy_loss(&mut ws.dlogp, &mut ws.dentropy, &mut ws.metrics, pre, params);
        check_metrics(&k.download(&ws.metrics), params, false)?;

        // 1. logp and entropy of every row, chunk by chunk.
        for row0 in (0..n).step_by(rows_per) {
            let ch = load_chunk(k, ws, hidden, weight, row0, rows_per, n, c, v, inv_t);
            k.logprob_entropy_forward(&ws.logits, targets, &mut ws.logp, &mut ws.entropy, ch);
        }

        // 2. The loss, its metrics, and d loss / d logp, d loss / d entropy.
        let inputs = PolicyLossInputs { logp: &ws.logp, logp_old, logp_ref, advantages, entropy: &ws.entropy, mask };
        k.policy_loss(&mut ws.dlogp, &mut ws.dentropy, &mut ws.metrics, inputs, params);
        let metrics = k.download(&ws.metrics);
        check_metrics(&metrics, params, true)?;

        // 3. Back through the fused log-softmax and the lm_head product, chunk by chunk.
        for row0 in (0..n).step_by(rows_per) {
            let ch = load_chunk(k, ws, hidden, weight, row0, rows_per, n, c, v, inv_t);
            k.logprob_entropy_backward(&mut ws.logits, targets, &ws.dlogp, &ws.dentropy, ch);
            // Rows past ch.rows (a short last chunk) hold zero logits of zero hidden rows:
            // they add nothing to dW, and their dhidden rows are not copied out.
            k.matmul(grad_weight, &ws.logits, &ws.hc, None, Gemm::tn(v, c, rows_per).acc());
            k.matmul(&mut ws.dhc, &ws.logits, weight, None, Gemm::nn(rows_per, c, v));
            k.copy_range(grad_hidden, row0 * c, &ws.dhc, 0, ch.rows * c);
        }
        Ok(ObjectiveMetrics::from_buf(&metrics))
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
        let ws = self.workspace(k, n, c, v);
        for row0 in (0..n).step_by(rows_per) {
            let ch = load_chunk(k, ws, hidden, weight, row0, rows_per, n, c, v, inv_t);
            k.logprob_entropy_forward(&ws.logits, targets, &mut ws.logp, &mut ws.entropy, ch);
        }
        Ok((k.download(&ws.logp), k.download(&ws.entropy)))
    }

    fn params(&self, b: &ObjectiveBatch<'_, B>) -> PolicyLossParams {
        PolicyLossParams {
            s: b.s,
            l: b.l,
            loss_type: self.cfg.loss_type,
            level: self.cfg.importance_sampling_level,
            eps_low: self.cfg.eps_low,
            eps_high: self.cfg.eps_high,
            beta: self.cfg.beta,
            entropy_coef: self.cfg.entropy_coef,
            max_completion_length: self.cfg.max_completion_length.unwrap_or(b.l),
        }
    }
}

/// Copies hidden rows `row0..` into the chunk buffer (zero-padded when the chunk is short)
/// and computes the chunk's logits = hidden_chunk · Wᵀ.
#[allow(clippy::too_many_arguments)]
fn load_chunk<B: Backend>(
    k: &B,
    ws: &mut Workspace<B>,
    hidden: &B::Buf,
    weight: &B::Buf,
    row0: usize,
    rows_per: usize,
    n: usize,
    c: usize,
    v: usize,
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

    #[test]
    fn config_defaults_are_dapo() {
        let c = ObjectiveConfig::default();
        assert_eq!((c.eps_low, c.eps_high, c.beta), (0.2, 0.28, 0.0));
        assert_eq!((c.loss_type, c.importance_sampling_level), (LossType::Dapo, IsLevel::Token));
        assert_eq!(c.temperature, 1.0);
        c.validate().unwrap();
        let c: ObjectiveConfig =
            serde_json::from_str(r#"{"loss_type":"dr_grpo","importance_sampling_level":"sequence"}"#).unwrap();
        assert_eq!((c.loss_type, c.importance_sampling_level), (LossType::DrGrpo, IsLevel::Sequence));
        assert!(ObjectiveConfig { chunk_rows: 0, ..Default::default() }.validate().is_err());
        assert!(ObjectiveConfig { temperature: 0.0, ..Default::default() }.validate().is_err());
        assert!(ObjectiveConfig { beta: f32::NAN, ..Default::default() }.validate().is_err());
    }
}
