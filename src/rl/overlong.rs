//! DAPO overlong handling. Soft overlong punishment adds a length penalty that ramps from 0 to
//! −1 over the last `L_cache` tokens before `L_max`, so the policy learns to stop before it is
//! cut off instead of being punished only by a cliff; truncated-completion masking removes
//! completions that were cut off from the loss altogether, since their reward judges an answer
//! that was never finished.
//!
//! ```text
//! penalty(len) = 0                               if len ≤ L_max − L_cache
//!              = ((L_max − L_cache) − len) / L_cache   if L_max − L_cache < len ≤ L_max
//!              = −1                              if len > L_max
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Soft overlong punishment with maximum length `max_len` (L_max) and a buffer of `cache_len`
/// (L_cache) tokens, both counted in completion tokens, scaled by `penalty_factor` (verl's
/// `overlong_buffer.penalty_factor`; 1 gives the ramp above).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlongShaping {
    /// L_max.
    pub max_len: usize,
    /// L_cache: the width of the ramp before L_max.
    pub cache_len: usize,
    /// The penalty at (and beyond) L_max, as a positive size.
    #[serde(default = "one")]
    pub penalty_factor: f64,
}

fn one() -> f64 {
    1.0
}

impl OverlongShaping {
    /// Errors if `max_len` is 0 or `cache_len > max_len`. `cache_len = 0` is a hard cliff:
    /// no penalty up to `max_len`, −1 beyond.
    pub fn new(max_len: usize, cache_len: usize) -> Result<Self> {
        let s = OverlongShaping { max_len, cache_len, penalty_factor: 1.0 };
        s.validate()?;
        Ok(s)
    }

    /// The same shaping with the penalty scaled by `factor` (finite, ≥ 0).
    pub fn with_penalty_factor(self, factor: f64) -> Result<Self> {
        let s = OverlongShaping { penalty_factor: factor, ..self };
        s.validate()?;
        Ok(s)
    }

    /// Checks the constraints of [`OverlongShaping::new`] (useful after deserialising).
    pub fn validate(&self) -> Result<()> {
        if !(self.penalty_factor.is_finite() && self.penalty_factor >= 0.0) {
            return Err(Error::Invalid(format!(
                "overlong shaping: penalty_factor must be finite and >= 0, got {}",
                self.penalty_factor
            )));
        }
        if self.max_len == 0 {
            return Err(Error::Invalid("overlong shaping: max_len (L_max) must be >= 1".into()));
        }
        if self.cache_len > self.max_len {
            return Err(Error::Invalid(format!(
                "overlong shaping: cache_len (L_cache = {}) exceeds max_len (L_max = {})",
                self.cache_len, self.max_len
            )));
        }
        Ok(())
    }

    /// The penalty (≤ 0) for a completion of `len` tokens.
    pub fn penalty(&self, len: usize) -> f64 {
        self.penalty_factor * self.unit_penalty(len)
    }

    fn unit_penalty(&self, len: usize) -> f64 {
        let start = self.max_len - self.cache_len;
        if len <= start {
            0.0
        } else if len <= self.max_len {
            // Reached only when cache_len > 0, since start < len ≤ max_len.
            (start as f64 - len as f64) / self.cache_len as f64
        } else {
            -1.0
        }
    }

    /// Adds each completion's penalty to its reward in place. Errors on mismatched lengths.
    pub fn apply(&self, rewards: &mut [f64], lens: &[usize]) -> Result<()> {
        if rewards.len() != lens.len() {
            return Err(Error::Invalid(format!("{} rewards but {} completion lengths", rewards.len(), lens.len())));
        }
        for (r, &len) in rewards.iter_mut().zip(lens) {
            *r += self.penalty(len);
        }
        Ok(())
    }
}

/// Whether each completion takes part in the loss: `false` for a completion that reached
/// `max_new_tokens` without emitting EOS (it was cut off), `true` otherwise.
///
/// Errors on mismatched lengths, or a length above `max_new_tokens` (the sampler cannot have
/// produced it, so the inputs are inconsistent).
pub fn truncation_mask(lens: &[usize], ended_with_eos: &[bool], max_new_tokens: usize) -> Result<Vec<bool>> {
    if lens.len() != ended_with_eos.len() {
        return Err(Error::Invalid(format!(
            "{} completion lengths but {} EOS flags",
            lens.len(),
            ended_with_eos.len()
        )));
    }
    if let Some(i) = lens.iter().position(|&l| l > max_new_tokens) {
        return Err(Error::Invalid(format!(
            "completion {i} has {} tokens, more than max_new_tokens = {max_new_tokens}",
            lens[i]
        )));
    }
    Ok(lens.iter().zip(ended_with_eos).map(|(&len, &eos)| eos || len < max_new_tokens).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        let s = OverlongShaping::new(20, 4).unwrap();
        assert_eq!(s.penalty(0), 0.0);
        assert_eq!(s.penalty(16), 0.0);
        assert_eq!(s.penalty(17), -0.25);
        assert_eq!(s.penalty(18), -0.5);
        assert_eq!(s.penalty(20), -1.0);
        assert_eq!(s.penalty(21), -1.0);
    }

    #[test]
    fn zero_cache_is_a_cliff_and_full_cache_ramps_from_zero() {
        let s = OverlongShaping::new(10, 0).unwrap();
        assert_eq!((s.penalty(10), s.penalty(11)), (0.0, -1.0));
        let s = OverlongShaping::new(4, 4).unwrap();
        assert_eq!((s.penalty(0), s.penalty(1), s.penalty(4)), (0.0, -0.25, -1.0));
    }

    #[test]
    fn validation() {
        assert!(OverlongShaping::new(4, 5).unwrap_err().to_string().contains("exceeds"));
        assert!(OverlongShaping::new(0, 0).is_err());
        let mut r = [1.0];
        assert!(OverlongShaping::new(4, 1).unwrap().apply(&mut r, &[1, 2]).is_err());
    }

    #[test]
    fn mask() {
        let m = truncation_mask(&[8, 8, 3, 3], &[true, false, true, false], 8).unwrap();
        assert_eq!(m, vec![true, false, true, true]);
        assert!(truncation_mask(&[9], &[true], 8).unwrap_err().to_string().contains("completion 0"));
        assert!(truncation_mask(&[1], &[], 8).is_err());
    }
}
