//! Global Response Normalization (GRN, the ConvNeXt V2 form) on a (B,T,C) hidden state, in two
//! forms, each with an exact backward pass:
//!
//! - **causal**, the only form allowed in front of the policy head: position t's
//!   statistic runs over the prefix s ≤ t, so no position sees a later token and KV-cache
//!   decoding (which keeps each sequence's running sums of squares beside its keys and values)
//!   reproduces the full pass;
//! - **sequence-wide**, for heads that read
//!   a whole sequence (the value / judge head): one statistic per sequence over its real
//!   positions.
//!
//! The sequence-wide form, for each sequence b over its real positions R_b (mask ≠ 0):
//!
//! ```text
//! G[b,c] = sqrt(Σ_{t∈R_b} x[b,t,c]²)           L2 norm of channel c over the sequence
//! μ[b]   = (1/C) Σ_c G[b,c]                     mean norm over channels
//! N[b,c] = G[b,c] / (μ[b] + eps)                relative norm, always in [0, C]
//! y[b,t,c] = γ_c·(x·N[b,c]) + β_c + x           at real positions
//! y[b,t,c] = x[b,t,c]                           at padding positions
//! ```
//!
//! Padding positions pass through untouched and take no part in G: a padded slot holds no
//! token, so letting it move the norms would make a sequence's outputs depend on how much
//! padding its batch happened to need, and adding β there would put made-up values into
//! positions that every loss masks out anyway.
//!
//! γ and β start at zero, so a freshly enabled GRN is the identity, bit for bit (see
//! [`grn_sequence_forward`] for how the arithmetic guarantees it): turning GRN on changes no logit until
//! it has learned something.
//!
//! The equations and their CPU implementation are the backend's ([`crate::backend::cpu::grn`],
//! the oracle of the [`crate::backend::GrnOps`] the model runs); this module holds the model's
//! side: the settings, which head gets which form, and [`Grn`], which wraps the oracle on host
//! slices with parameters, gradients and the statistics the backward needs (the seed's
//! `maybe_apply_grn`).

pub use crate::backend::cpu::grn::{
    grn_causal_backward, grn_causal_forward, grn_causal_step, grn_sequence_backward, grn_sequence_forward,
};
use crate::backend::shapes::{GrnCausalStats, GrnParams, GrnSeqStats, GrnShape, Masked};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default `eps` added to the mean norm (DESIGN.md: 1e-6).
pub const GRN_EPS: f32 = 1e-6;

/// Checkpoint name suffix of γ (the full name is `{prefix}.gamma`).
pub const GAMMA: &str = "gamma";

/// Checkpoint name suffix of β (the full name is `{prefix}.beta`).
pub const BETA: &str = "beta";

/// Whether and where GRN is applied. Off by default, so a default configuration trains
/// exactly as it would without GRN.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrnConfig {
    /// The master switch; when false neither head gets a GRN whatever the flags below say.
    pub enabled: bool,
    /// Wrap the input of the policy head (the lm_head).
    pub apply_to_policy: bool,
    /// Wrap the input of the scalar value / judge head.
    pub apply_to_value: bool,
    /// Added to the mean norm before dividing; keeps N finite when a sequence is all zeros.
    pub eps: f32,
}

impl Default for GrnConfig {
    /// Disabled; once enabled it applies to both heads unless a flag narrows it, so
    /// `enabled = true` alone does what its name says.
    fn default() -> Self {
        GrnConfig { enabled: false, apply_to_policy: true, apply_to_value: true, eps: GRN_EPS }
    }
}

impl GrnConfig {
    /// Whether a GRN wraps the input of `head` under this configuration.
    pub fn applies_to(&self, head: Head) -> bool {
        self.enabled
            && match head {
                Head::Policy => self.apply_to_policy,
                Head::Value => self.apply_to_value,
            }
    }

    /// Rejects an `eps` that is negative, NaN or infinite.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::Invalid(format!("grn.eps must be finite and >= 0, got {}", self.eps)));
        }
        Ok(())
    }
}

/// The heads whose input GRN may wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// The language-model head (lm_head, tied to wte): GRN sits between ln_f and it.
    Policy,
    /// A scalar value / judge head.
    Value,
}

/// Where a GRN's statistic comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrnForm {
    /// Position t's statistic runs over the prefix s ≤ t (`crate::backend::cpu::grn`'s causal form): the only form allowed
    /// in front of the policy head, where position t must not see later tokens and decoding
    /// one token at a time must reproduce the full pass.
    Causal,
    /// One statistic over every real position of the sequence: for heads that read a whole
    /// sequence (the value / judge head).
    Sequence,
}

impl Head {
    /// The form GRN takes in front of this head: causal for the policy, sequence-wide for the
    /// value head.
    pub fn form(self) -> GrnForm {
        match self {
            Head::Policy => GrnForm::Causal,
            Head::Value => GrnForm::Sequence,
        }
    }

    /// Refuses the sequence-wide form in front of the policy head: it would let position t
    /// condition on later tokens, so training would see the future and decoding could never
    /// reproduce it.
    pub fn check_form(self, form: GrnForm) -> Result<()> {
        if self == Head::Policy && form == GrnForm::Sequence {
            return Err(Error::Invalid(
                "the sequence-wide GRN cannot sit in front of the policy head: position t would see the tokens after \
                 it; the policy head takes the causal form"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The checkpoint-name prefix of this head's GRN: `grn` for the policy head (so its
    /// tensors are `grn.gamma`, `grn.beta`), `value_grn` for the value head.
    pub fn param_prefix(self) -> &'static str {
        match self {
            Head::Policy => "grn",
            Head::Value => "value_grn",
        }
    }
}

/// A zero-initialised [`Grn`] of width `c` when `config` applies GRN to `head`, else `None`
/// (the head's input is used as it is).
///
/// The Rust form of the seed's `maybe_apply_grn(head, config, apply)`: rather than wrapping a
/// module, the caller keeps the `Option<Grn>` beside the head and, when it is `Some`, runs the
/// head's input through [`Grn::forward`] first (and [`Grn::backward`] on the way back).
pub fn maybe_apply_grn(config: &GrnConfig, head: Head, c: usize) -> Option<Grn> {
    config.applies_to(head).then(|| Grn::new(head, c, config.eps))
}

/// What the last [`Grn::forward`] stored for the backward pass (also useful to log).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrnStats {
    /// B of the last forward.
    pub b: usize,
    /// T of the last forward.
    pub t: usize,
    /// Channel norms G: per sequence (B,C) in the sequence-wide form, per position (B,T,C)
    /// in the causal form.
    pub g: Vec<f32>,
    /// Mean norms μ: (B) sequence-wide, (B,T) causal.
    pub mean: Vec<f32>,
    /// Relative norms N (B,C) of the sequence-wide form (empty in the causal form, which
    /// recomputes them from G and μ).
    pub n: Vec<f32>,
}

/// A GRN layer of width C: its parameters γ, β (C), their gradients, and the statistics of
/// the last forward pass.
///
/// To wrap a head's input: `grn.forward(&mut h_grn, &h, &mask, b, t, c)` then feed `h_grn` to
/// the head; on the way back, `grn.backward(&mut dh, &dh_grn, &h, &mask, b, t, c)`.
/// γ and β are normalisation parameters and, like layer-norm weights, should not be decayed.
///
/// Its [`GrnForm`] follows the head it wraps ([`Head::form`]): causal for the policy head
/// (where the mask is not read: batches are right-padded and a padded tail cannot reach an
/// earlier position), sequence-wide under the mask for the value head.
#[derive(Clone, Debug)]
pub struct Grn {
    /// γ (C), the learnable scale of the normalised response; zero at init.
    pub gamma: Vec<f32>,
    /// β (C), the learnable bias; zero at init.
    pub beta: Vec<f32>,
    /// Accumulated gradient of γ (C).
    pub dgamma: Vec<f32>,
    /// Accumulated gradient of β (C).
    pub dbeta: Vec<f32>,
    /// Added to the mean norm before dividing.
    pub eps: f32,
    form: GrnForm,
    stats: GrnStats,
}

impl Grn {
    /// A zero-initialised GRN of width `c` in front of `head` (in the head's form): the
    /// identity until it learns.
    pub fn new(head: Head, c: usize, eps: f32) -> Self {
        Grn {
            gamma: vec![0.0; c],
            beta: vec![0.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            eps,
            form: head.form(),
            stats: GrnStats::default(),
        }
    }

    /// A zero-initialised GRN in front of `head` in an explicit `form`; the sequence-wide
    /// form in front of the policy head is refused ([`Head::check_form`]).
    pub fn with_form(head: Head, form: GrnForm, c: usize, eps: f32) -> Result<Self> {
        head.check_form(form)?;
        Ok(Grn { form, ..Grn::new(head, c, eps) })
    }

    /// A GRN in front of `head` with the given parameters (e.g. loaded from a checkpoint);
    /// gradients zeroed.
    pub fn from_params(head: Head, gamma: Vec<f32>, beta: Vec<f32>, eps: f32) -> Result<Self> {
        let mut grn = Grn::new(head, gamma.len(), eps);
        grn.set_params(&gamma, &beta)?;
        Ok(grn)
    }

    /// Causal or sequence-wide.
    pub fn form(&self) -> GrnForm {
        self.form
    }

    /// The width C.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Whether γ = β = 0, i.e. the layer is still the exact identity.
    pub fn is_identity(&self) -> bool {
        self.gamma.iter().chain(&self.beta).all(|&v| v == 0.0)
    }

    /// Overwrites γ and β, rejecting wrong lengths and non-finite values.
    pub fn set_params(&mut self, gamma: &[f32], beta: &[f32]) -> Result<()> {
        let c = self.channels();
        for (name, v) in [(GAMMA, gamma), (BETA, beta)] {
            if v.len() != c {
                return Err(Error::Invalid(format!("grn {name} has {} values, expected {c}", v.len())));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!("grn {name}[{i}] is not finite: {}", v[i])));
            }
        }
        self.gamma.copy_from_slice(gamma);
        self.beta.copy_from_slice(beta);
        Ok(())
    }

    /// The parameters under their checkpoint names, `{prefix}.gamma` and `{prefix}.beta`
    /// (see [`Head::param_prefix`]), each of shape (C).
    pub fn named_params(&self, prefix: &str) -> [(String, &[f32]); 2] {
        [(format!("{prefix}.{GAMMA}"), &self.gamma[..]), (format!("{prefix}.{BETA}"), &self.beta[..])]
    }

    /// Each parameter beside its gradient, γ then β, for an optimizer step.
    pub fn params_and_grads(&mut self) -> [(&mut [f32], &[f32]); 2] {
        [(&mut self.gamma[..], &self.dgamma[..]), (&mut self.beta[..], &self.dbeta[..])]
    }

    /// Zeroes the accumulated gradients.
    pub fn zero_grad(&mut self) {
        self.dgamma.iter_mut().chain(self.dbeta.iter_mut()).for_each(|v| *v = 0.0);
    }

    /// The statistics stored by the last [`Grn::forward`].
    pub fn stats(&self) -> &GrnStats {
        &self.stats
    }

    /// `out (B,T,C) = GRN(x (B,T,C))` under `mask (B,T)`, keeping what [`Grn::backward`]
    /// needs. Allocates only when B grows past what an earlier call used.
    ///
    /// # Panics
    /// If a length does not match B, T, C (C must equal [`Grn::channels`]).
    pub fn forward(&mut self, out: &mut [f32], x: &[f32], mask: &[f32], b: usize, t: usize, c: usize) {
        let st = &mut self.stats;
        (st.b, st.t) = (b, t);
        match self.form {
            GrnForm::Sequence => {
                st.g.resize(b * c, 0.0);
                st.n.resize(b * c, 0.0);
                st.mean.resize(b, 0.0);
                let stats = GrnSeqStats { g: &mut st.g[..], mean: &mut st.mean[..], n: &mut st.n[..] };
                let p = GrnParams { gamma: &self.gamma[..], beta: &self.beta[..] };
                grn_sequence_forward(out, stats, Masked { x, mask }, p, GrnShape { b, t, c, eps: self.eps });
            }
            GrnForm::Causal => {
                st.g.resize(b * t * c, 0.0);
                st.mean.resize(b * t, 0.0);
                st.n.clear();
                let stats = GrnCausalStats { g: &mut st.g[..], mean: &mut st.mean[..] };
                let p = GrnParams { gamma: &self.gamma[..], beta: &self.beta[..] };
                grn_causal_forward(out, stats, x, p, GrnShape { b, t, c, eps: self.eps });
            }
        }
    }

    /// Overwrites `dx (B,T,C)` and accumulates [`Grn::dgamma`], [`Grn::dbeta`] given
    /// `dy (B,T,C)`, for the `x` and `mask` of the last [`Grn::forward`].
    ///
    /// # Panics
    /// If no forward ran at this (B, T) or a length does not match.
    pub fn backward(&mut self, dx: &mut [f32], dy: &[f32], x: &[f32], mask: &[f32], b: usize, t: usize, c: usize) {
        let st = &self.stats;
        let g_len = if self.form == GrnForm::Causal { b * t * c } else { b * c };
        assert!(
            st.b == b && st.t == t && st.g.len() == g_len,
            "Grn::backward at (B={b}, T={t}, C={c}) needs a forward at that shape first"
        );
        let s = GrnShape { b, t, c, eps: self.eps };
        let dp = GrnParams { gamma: &mut self.dgamma[..], beta: &mut self.dbeta[..] };
        let gamma = &self.gamma[..];
        if self.form == GrnForm::Causal {
            grn_causal_backward(dx, dp, dy, x, gamma, GrnCausalStats { g: &st.g[..], mean: &st.mean[..] }, s);
            return;
        }
        let stats = GrnSeqStats { g: &st.g[..], mean: &st.mean[..], n: &st.n[..] };
        grn_sequence_backward(dx, dp, dy, Masked { x, mask }, gamma, stats, s);
    }

    /// `GRN(x)` as a new buffer, for inference: stores nothing, so it takes `&self`.
    ///
    /// # Panics
    /// If a length does not match B, T, C.
    pub fn apply(&self, x: &[f32], mask: &[f32], b: usize, t: usize, c: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        let (p, s) = (GrnParams { gamma: &self.gamma[..], beta: &self.beta[..] }, GrnShape { b, t, c, eps: self.eps });
        match self.form {
            GrnForm::Sequence => {
                let (mut g, mut mean, mut n) = (vec![0.0; b * c], vec![0.0; b], vec![0.0; b * c]);
                let stats = GrnSeqStats { g: &mut g[..], mean: &mut mean[..], n: &mut n[..] };
                grn_sequence_forward(&mut out, stats, Masked { x, mask }, p, s);
            }
            GrnForm::Causal => {
                let (mut g, mut mean) = (vec![0.0; b * t * c], vec![0.0; b * t]);
                grn_causal_forward(&mut out, GrnCausalStats { g: &mut g[..], mean: &mut mean[..] }, x, p, s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_toggles() {
        let cfg = GrnConfig::default();
        assert!(!cfg.enabled && !cfg.applies_to(Head::Policy) && !cfg.applies_to(Head::Value));
        assert!(maybe_apply_grn(&cfg, Head::Policy, 4).is_none());
        let cfg = GrnConfig { enabled: true, apply_to_value: false, ..cfg };
        assert!(cfg.applies_to(Head::Policy) && !cfg.applies_to(Head::Value));
        let grn = maybe_apply_grn(&cfg, Head::Policy, 4).unwrap();
        assert_eq!(grn.channels(), 4);
        assert_eq!(grn.form(), GrnForm::Causal, "the policy head's GRN is causal");
        assert!(Grn::with_form(Head::Policy, GrnForm::Sequence, 4, GRN_EPS).is_err(), "refused");
        assert_eq!(Grn::with_form(Head::Value, GrnForm::Causal, 4, GRN_EPS).unwrap().form(), GrnForm::Causal);
        assert!(grn.is_identity());
        assert!(maybe_apply_grn(&cfg, Head::Value, 4).is_none());
    }

    #[test]
    fn config_serde() {
        let cfg: GrnConfig = serde_json::from_str(r#"{"enabled": true, "apply_to_policy": false}"#).unwrap();
        assert_eq!(cfg, GrnConfig { enabled: true, apply_to_policy: false, ..GrnConfig::default() });
        assert!(serde_json::from_str::<GrnConfig>(r#"{"enabeld": true}"#).is_err());
        let back: GrnConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(GrnConfig { eps: -1.0, ..cfg }.validate().is_err());
        assert!(GrnConfig { eps: f32::NAN, ..cfg }.validate().is_err());
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn names_and_params() {
        let mut grn = Grn::new(Head::Value, 3, GRN_EPS);
        let [(gn, _), (bn, _)] = grn.named_params(Head::Policy.param_prefix());
        assert_eq!((gn.as_str(), bn.as_str()), ("grn.gamma", "grn.beta"));
        assert_eq!(grn.named_params(Head::Value.param_prefix())[0].0, "value_grn.gamma");
        assert!(grn.set_params(&[1.0, 2.0], &[0.0; 3]).is_err());
        assert!(grn.set_params(&[1.0, f32::INFINITY, 0.0], &[0.0; 3]).is_err());
        grn.set_params(&[1.0, 2.0, 3.0], &[0.5; 3]).unwrap();
        assert!(!grn.is_identity());
        grn.dgamma[0] = 1.0;
        grn.zero_grad();
        assert!(grn.dgamma.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn all_padding_and_all_zero_are_identity() {
        let grn = Grn::from_params(Head::Value, vec![1.5, -2.0], vec![0.3, 0.7], GRN_EPS).unwrap();
        // An all-padding sequence passes through; an all-zero one gets only β (N = 0, no NaN).
        let x = [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let y = grn.apply(&x, &[0.0, 0.0, 1.0, 1.0], 2, 2, 2);
        assert_eq!(&y[..4], &x[..4]);
        assert_eq!(&y[4..], &[0.3, 0.7, 0.3, 0.7]);
    }

    #[test]
    #[should_panic(expected = "needs a forward")]
    fn backward_without_forward_panics() {
        let mut grn = Grn::new(Head::Value, 2, GRN_EPS);
        let mut dx = vec![0.0; 4];
        grn.backward(&mut dx, &[0.0; 4], &[0.0; 4], &[1.0; 2], 1, 2, 2);
    }
}
