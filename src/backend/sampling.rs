//! The types of [`SamplingOps::sample`](super::SamplingOps::sample): drawing one token per row of
//! logits where the logits live, so a decode step moves a token id and a log-prob per sequence
//! off the device instead of a (rows, V) matrix.
//!
//! The semantics are [`super::cpu::sampling`]'s (the CPU oracle): temperature → top-k → top-p →
//! an inverse-CDF draw with the uniform `counter_rng::uniform(seed, step, sequence, position)`,
//! and the recorded log-prob is that of the untruncated tempered distribution.

use std::fmt;

/// What [`SamplingOps::sample`](super::SamplingOps::sample) draws with: the sampler's settings and
/// the rollout's RNG key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// Divides the logits; 0 means greedy (argmax, lowest id on ties; log-probs at T = 1).
    pub temperature: f32,
    /// Keep only the k most probable tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-probable set with this much mass; 1.0 = off.
    pub top_p: f32,
    /// The run's seed (the Philox key).
    pub seed: u64,
    /// The training step (the counter's high half).
    pub step: u64,
}

/// One sampled token and its log-probability under the untruncated tempered distribution,
/// `log softmax(logits / T)[token]` (T = 1 when greedy): what the policy-gradient objective
/// recomputes, so its first ratio is 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// The token id.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
}

/// Why a row of logits could not be sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleError {
    /// A logit is NaN or +∞ (the first such token in id order).
    NonFinite {
        /// Its token id.
        token: u32,
        /// Its value.
        value: f32,
    },
    /// Every logit is −∞.
    AllMasked,
    /// Dividing the logits by the temperature overflows f32.
    TemperatureOverflow {
        /// The temperature.
        temperature: f32,
    },
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleError::NonFinite { token, value } => {
                write!(f, "logit {value} for token {token}: the model produced a non-finite value")
            }
            SampleError::AllMasked => f.write_str("every logit is −∞: there is no token to sample"),
            SampleError::TemperatureOverflow { temperature } => {
                write!(f, "logits divided by the temperature {temperature} overflow f32")
            }
        }
    }
}

impl std::error::Error for SampleError {}
