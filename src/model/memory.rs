//! Lower bounds on what a GPT-2 needs in memory (f32), from its config alone, so a command can
//! refuse settings that cannot fit before allocating anything (see [`crate::util::mem`]).
//! Counts follow what [`super::activations`] and [`super::kv_cache`] allocate; u128 so that
//! absurd settings give absurd numbers, not overflow.

use super::Gpt2Config;

/// Parameters: wte, wpe, L blocks (12C² + 13C), ln_f and the policy GRN's γ, β (2C) if any.
pub fn param_count(cfg: &Gpt2Config) -> u128 {
    let (v, p, c, l) = (cfg.vocab_size as u128, cfg.n_positions as u128, cfg.n_embd as u128, cfg.n_layer as u128);
    let grn = if super::params::policy_grn(cfg).is_some() { 2 * c } else { 0 };
    v * c + p * c + l * (12 * c * c + 13 * c) + 2 * c + grn
}

/// Bytes of weights, gradients and AdamW's two moments, plus `extra_copies` frozen copies of
/// the weights (the RL reference).
pub fn training_state_bytes(cfg: &Gpt2Config, extra_copies: u128) -> u128 {
    4 * param_count(cfg) * (4 + extra_copies)
}

/// Bytes of the activations and their gradients for one forward/backward pass over `rows`
/// (= B·T) positions: about C·(16L + 11) values a position, 3C more with a policy GRN (its
/// output, prefix norms and input gradient).
pub fn activation_bytes(cfg: &Gpt2Config, rows: u128) -> u128 {
    let (c, l) = (cfg.n_embd as u128, cfg.n_layer as u128);
    let grn = if super::params::policy_grn(cfg).is_some() { 3 } else { 0 };
    4 * rows * c * (16 * l + 11 + grn)
}

/// Bytes of the KV cache of `seqs` sequences of up to `t` positions (plus a policy GRN's
/// running sums of squares, C per sequence).
pub fn kv_cache_bytes(cfg: &Gpt2Config, seqs: u128, t: u128) -> u128 {
    let grn = if super::params::policy_grn(cfg).is_some() { seqs * cfg.n_embd as u128 } else { 0 };
    4 * (2 * cfg.n_layer as u128 * seqs * t * cfg.n_embd as u128 + grn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_124m_counts() {
        let cfg = Gpt2Config::named("gpt2", 50257).unwrap();
        assert_eq!(param_count(&cfg), 124_439_808);
        assert_eq!(training_state_bytes(&cfg, 0), 16 * 124_439_808);
        assert_eq!(kv_cache_bytes(&cfg, 1, 1), 4 * 2 * 12 * 768);
    }
}
