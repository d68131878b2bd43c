//! The settings and inputs of the policy-loss op: TRL's loss types, the KL estimators, the
//! importance-sampling level, and the slots of the metrics buffer it writes.

use super::ops::MemoryOps;
#[allow(unused_imports)] // for the doc links
use super::ops::PolicyLossOps;

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

/// The constants of one [`PolicyLossOps::policy_loss`] call. The semantics, per token t of
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

/// The per-token inputs of one [`PolicyLossOps::policy_loss`] call, each (S, L) except
/// `advantages` (S). `mask` holds 1 for completion tokens and 0 for padding (other
/// non-negative weights are allowed); values at mask-0 positions are never read into the
/// loss, so padding may hold anything, NaN included.
pub struct PolicyLossInputs<'a, B: MemoryOps + ?Sized> {
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
/// [`PolicyLossOps::policy_loss`] writes. Means are over masked tokens (mask-weighted) unless said
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
