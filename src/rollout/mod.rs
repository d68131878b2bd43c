//! Batched generation with a KV cache: the rollouts of RL training.
//!
//! [`generate`] samples one completion per prompt (the trainer passes each prompt G times);
//! [`scored`] decodes and scores them, the one path of rollouts and evaluations.
//! All prompts are prefilled in one pass, then each decode step feeds one token per
//! unfinished sequence; a sequence leaves the batch as soon as it finishes, so finished
//! sequences cost nothing. Every token's log-probability under the sampling policy is
//! recorded for the policy-gradient ratio.
//!
//! Reproducibility: the uniform behind token j of completion i is
//! `counter_rng::uniform(seed, step, i, j)` ([`crate::util::counter_rng::uniform`]), a pure
//! function of those four numbers. A completion therefore depends only on its prompt, its
//! index and the key, never on the other sequences in the batch or the order in which they
//! finish (up to floating-point differences in the logits themselves, which on the CPU can
//! come from the matmul's blocking for a different number of rows).

pub mod scored;

use crate::backend::{Backend, SampleParams};
use crate::error::{Error, Result};
use crate::model::Gpt2;

/// The most new tokens a completion may ask for (2^20): far beyond any GPT-2 context, and small
/// enough that position arithmetic on it cannot overflow.
pub const MAX_NEW_TOKENS: usize = 1 << 20;

/// How to sample. temperature 0 = greedy (argmax; top-k/top-p ignored).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Divides the logits; 0 means greedy.
    pub temperature: f32,
    /// Keep only the k most probable tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-probable set with this much mass; 1.0 = off.
    pub top_p: f32,
    /// At most this many new tokens per completion.
    pub max_new_tokens: usize,
    /// Stop after sampling any of these tokens (the token is kept in the completion).
    pub stop_token_ids: Vec<u32>,
    /// Stop once the decoded completion contains any of these strings (the token that
    /// completed it is kept). Needs a `decode` function in [`generate`].
    pub stop_strings: Vec<String>,
}

impl Default for SamplingConfig {
    /// Plain sampling at temperature 1, 16 new tokens, no stops.
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 16,
            stop_token_ids: vec![],
            stop_strings: vec![],
        }
    }
}

impl SamplingConfig {
    /// The settings [`SamplingOps::sample`](crate::backend::SamplingOps::sample) draws with under `key`.
    pub fn params(&self, key: RolloutKey) -> SampleParams {
        SampleParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: key.seed,
            step: key.step,
        }
    }

    /// Checks temperature ≥ 0 and finite, top_p in (0, 1], max_new_tokens ≥ 1 and no empty
    /// stop string.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("sampling config: {msg}")));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be finite and ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.max_new_tokens == 0 || self.max_new_tokens > MAX_NEW_TOKENS {
            return bad(format!("max_new_tokens must be in 1..={MAX_NEW_TOKENS}, got {}", self.max_new_tokens));
        }
        if let Some(i) = self.stop_strings.iter().position(|s| s.is_empty()) {
            return bad(format!("stop string {i} is empty (it would stop every completion at once)"));
        }
        Ok(())
    }
}

/// The RNG key of one generate call; sequence index and position complete the counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutKey {
    /// The run's seed.
    pub seed: u64,
    /// The training step (so every step draws fresh completions).
    pub step: u64,
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum FinishReason {
    /// It sampled one of the stop tokens.
    StopToken,
    /// Its text came to contain one of the stop strings.
    StopString,
    /// It reached max_new_tokens, or the model's n_positions (prompt + completion).
    Length,
}

/// One sampled completion.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Index into `prompts`.
    pub prompt_index: usize,
    /// Sampled tokens, including the stop token / the token that completed a stop string.
    pub tokens: Vec<u32>,
    /// Per token: `log softmax(logits / T)[token]` (T = temperature, or 1 when greedy), not
    /// truncated by top-k/top-p: what the DAPO objective recomputes with the same
    /// temperature, so the ratio is 1 on the first update.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Turns token ids into text, for stop strings.
pub type Decode<'a> = &'a dyn Fn(&[u32]) -> String;

/// Generates one completion per prompt. `decode` turns token ids into text (needed only for
/// stop strings). Errors: empty prompts list or an empty prompt, a token id ≥ vocab, invalid
/// config, stop strings without `decode`, a prompt that leaves no room below n_positions,
/// non-finite logits. A sequence that reaches the model's n_positions stops with
/// [`FinishReason::Length`].
///
/// Token j of completion i is drawn with the uniform `counter_rng::uniform(key.seed,
/// key.step, i, j)` ([`crate::util::counter_rng::uniform`]), on the model's backend.
pub fn generate<K: Backend>(
    model: &mut Gpt2<K>,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    key: RolloutKey,
    decode: Option<Decode<'_>>,
) -> Result<Vec<Completion>> {
    cfg.validate()?;
    let n_positions = model.config().n_positions;
    if prompts.is_empty() {
        return Err(Error::Invalid("generate: no prompts".into()));
    }
    if prompts.len() > u32::MAX as usize {
        return Err(Error::Invalid(format!("generate: {} prompts do not fit the RNG counter", prompts.len())));
    }
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() || p.len() >= n_positions {
            return Err(Error::Invalid(format!(
                "generate: prompt {i} has {} tokens; it needs 1 to {} so that at least one token fits in the model's \
                 n_positions {n_positions}",
                p.len(),
                n_positions - 1
            )));
        }
    }
    let decode = match (cfg.stop_strings.is_empty(), decode) {
        (false, None) => return Err(Error::Invalid("generate: stop strings need a decode function".into())),
        (_, d) => d,
    };
    // The last sampled token is never fed back, so a sequence occupies at most
    // P + max_new_tokens − 1 positions.
    let p_max = prompts.iter().map(Vec::len).max().expect("non-empty");
    let t_max = (p_max + cfg.max_new_tokens - 1).min(n_positions);
    let need = crate::model::memory::kv_cache_bytes(model.config(), prompts.len() as u128, t_max as u128)
        + 4 * prompts.len() as u128 * model.config().vocab_size as u128;
    crate::util::mem::ensure_fits(
        need,
        model.backend().available_memory(),
        &format!("generating {} sequences of up to {t_max} positions", prompts.len()),
        "the number of prompts × samples or the new-token limit",
    )?;
    // The model's kept cache (when a generate call left one) is reused, so rollouts allocate
    // their cache once per run, not per call.
    let mut cache = model.take_kv_cache(prompts.len(), t_max)?;
    let out = decode_all(model, &mut cache, prompts, cfg, key, decode);
    model.keep_kv_cache(cache);
    out
}

/// Prefill and decode loop of [`generate`], on a cache of B = `prompts.len()` sequences.
fn decode_all<K: Backend>(
    model: &mut Gpt2<K>,
    cache: &mut crate::model::KvCache<K>,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    key: RolloutKey,
    decode: Option<Decode<'_>>,
) -> Result<Vec<Completion>> {
    let n_positions = model.config().n_positions;
    model.prefill_in_cache(cache, prompts)?;
    let params = cfg.params(key);

    let mut out: Vec<Completion> = (0..prompts.len())
        .map(|i| Completion { prompt_index: i, tokens: vec![], logprobs: vec![], finish: FinishReason::Length })
        .collect();
    // Row r of the cached logits belongs to sequence active[r]. The draw happens where the
    // logits are (Backend::sample); only a token and a log-prob per row come back.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    while !active.is_empty() {
        let counters: Vec<[u32; 2]> = active.iter().map(|&i| [i as u32, out[i].tokens.len() as u32]).collect();
        let drawn = model.sample_in_cache(cache, &counters, params);
        let (mut next, mut fed) = (Vec::with_capacity(active.len()), Vec::with_capacity(active.len()));
        for (&i, s) in active.iter().zip(drawn) {
            let c = &mut out[i];
            let s = s.map_err(|e| Error::Invalid(format!("generate: sequence {i}, token {}: {e}", c.tokens.len())))?;
            c.tokens.push(s.token);
            c.logprobs.push(s.logprob);
            let finish = if cfg.stop_token_ids.contains(&s.token) {
                Some(FinishReason::StopToken)
            } else if decode.is_some_and(|d| {
                let text = d(&c.tokens);
                cfg.stop_strings.iter().any(|s| text.contains(s.as_str()))
            }) {
                Some(FinishReason::StopString)
            } else if c.tokens.len() == cfg.max_new_tokens || prompts[i].len() + c.tokens.len() == n_positions {
                Some(FinishReason::Length)
            } else {
                None
            };
            match finish {
                Some(f) => c.finish = f,
                None => {
                    next.push(i);
                    fed.push(s.token);
                }
            }
        }
        if !next.is_empty() {
            model.decode_in_cache(cache, &next, &fed)?;
        }
        active = next;
    }
    Ok(out)
}
