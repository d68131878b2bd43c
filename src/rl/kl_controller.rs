//! The KL coefficient β that weighs the penalty to the frozen reference: fixed, or adapted
//! toward a KL target with the proportional rule of Ziegler et al. (2019), as verl's
//! `AdaptiveKLController` applies it:
//!
//! ```text
//! error = clip(kl / target − 1, −0.2, 0.2)
//! β ← β · (1 + error · n_steps / horizon)
//! ```
//!
//! KL above target raises β (pulls the policy back), KL below target lowers it. The trainer
//! calls it once per step with `n_steps` = the step's sequences, as verl passes its batch size,
//! so the horizon is counted in sequences (verl's default 10,000): with 256 sequences a step,
//! β moves by at most ±0.5 % per step. The clip bounds one update to ±20 % of the
//! horizon-scaled step, so one noisy KL estimate cannot swing β far.
//! The controller is plain data (serde) so it can be stored in `trainer_state.json` and resumed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The proportional error is clipped to ±this, as in the original rule.
pub const ADAPTIVE_ERROR_CLIP: f64 = 0.2;

/// A KL coefficient that never changes (β = 0 turns the KL term off).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedKl {
    /// The coefficient.
    pub beta: f64,
}

/// A KL coefficient adapted toward `target` over `horizon` samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveKl {
    /// The current coefficient (the initial one in a config file).
    pub beta: f64,
    /// The KL (per token, k3 estimator) the controller steers toward.
    pub target: f64,
    /// How many samples it takes to apply one full proportional step; larger is slower.
    pub horizon: f64,
}

/// A KL controller: fixed or adaptive. In a config file:
/// `{"fixed": {"beta": 0.04}}` or `{"adaptive": {"beta": 0.1, "target": 0.1, "horizon": 10000}}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlController {
    /// β stays where it was set.
    Fixed(FixedKl),
    /// β follows the adaptive rule.
    Adaptive(AdaptiveKl),
}

impl KlController {
    /// A fixed controller. Errors if `beta` is negative or not finite.
    pub fn fixed(beta: f64) -> Result<Self> {
        let c = KlController::Fixed(FixedKl { beta });
        c.validate()?;
        Ok(c)
    }

    /// An adaptive controller starting at `beta`. Errors unless `beta ≥ 0`, `target > 0` and
    /// `horizon > 0`, all finite.
    pub fn adaptive(beta: f64, target: f64, horizon: f64) -> Result<Self> {
        let c = KlController::Adaptive(AdaptiveKl { beta, target, horizon });
        c.validate()?;
        Ok(c)
    }

    /// Checks the parameters (useful after deserialising a config).
    pub fn validate(&self) -> Result<()> {
        let beta = self.beta();
        if !beta.is_finite() || beta < 0.0 {
            return Err(Error::Invalid(format!("KL coefficient must be finite and >= 0, got {beta}")));
        }
        if let KlController::Adaptive(a) = self {
            if !a.target.is_finite() || a.target <= 0.0 {
                return Err(Error::Invalid(format!("KL target must be finite and > 0, got {}", a.target)));
            }
            if !a.horizon.is_finite() || a.horizon <= 0.0 {
                return Err(Error::Invalid(format!("KL horizon must be finite and > 0, got {}", a.horizon)));
            }
        }
        Ok(())
    }

    /// The coefficient to use for the next update.
    pub fn beta(&self) -> f64 {
        match self {
            KlController::Fixed(f) => f.beta,
            KlController::Adaptive(a) => a.beta,
        }
    }

    /// Feeds the KL measured on the last batch of `n_steps` samples and returns the new β.
    ///
    /// `n_steps / horizon` is capped at 1: beyond that the multiplier could reach 0 or go
    /// negative, and a sign flip of β would turn the penalty into a reward for drifting.
    /// Errors on a non-finite `kl`, leaving β unchanged, so the caller can decide what a broken
    /// measurement means (see `safety`). A negative mean is accepted: the k1 estimator can give
    /// one, and it reads as "below target".
    pub fn update(&mut self, kl: f64, n_steps: usize) -> Result<f64> {
        if !kl.is_finite() {
            return Err(Error::Invalid(format!("KL controller fed a non-finite KL ({kl})")));
        }
        if let KlController::Adaptive(a) = self {
            let error = (kl / a.target - 1.0).clamp(-ADAPTIVE_ERROR_CLIP, ADAPTIVE_ERROR_CLIP);
            let frac = (n_steps as f64 / a.horizon).min(1.0);
            a.beta *= 1.0 + error * frac;
        }
        Ok(self.beta())
    }

    /// Multiplies β by `factor` (a safety action such as "raise β ×2"); works for either kind,
    /// and an adaptive controller keeps adapting from the new value.
    pub fn scale(&mut self, factor: f64) -> Result<f64> {
        if !factor.is_finite() || factor < 0.0 {
            return Err(Error::Invalid(format!("KL coefficient scale must be finite and >= 0, got {factor}")));
        }
        match self {
            KlController::Fixed(f) => f.beta *= factor,
            KlController::Adaptive(a) => a.beta *= factor,
        }
        Ok(self.beta())
    }
}

impl Default for KlController {
    /// Fixed β = 0: TRL's current default (no reference model needed).
    fn default() -> Self {
        KlController::Fixed(FixedKl { beta: 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_rule_by_hand() {
        let mut c = KlController::adaptive(0.1, 0.05, 100.0).unwrap();
        // kl/target − 1 = 0.2 → β·(1 + 0.2·10/100) = 0.1·1.02.
        assert!((c.update(0.06, 10).unwrap() - 0.102).abs() < 1e-15);
        // Far above target: the error clips at 0.2.
        let b = c.beta();
        assert!((c.update(10.0, 10).unwrap() - b * 1.02).abs() < 1e-15);
        // Below target: kl/target − 1 = −0.5 clips to −0.2.
        let b = c.beta();
        assert!((c.update(0.025, 50).unwrap() - b * 0.9).abs() < 1e-15);
        // At target: unchanged.
        let b = c.beta();
        assert_eq!(c.update(0.05, 50).unwrap(), b);
    }

    #[test]
    fn fixed_never_moves_and_bad_input_is_rejected() {
        let mut c = KlController::fixed(0.04).unwrap();
        assert_eq!(c.update(100.0, 1000).unwrap(), 0.04);
        assert!(c.update(f64::NAN, 1).is_err());
        assert_eq!(c.update(-0.1, 1).unwrap(), 0.04, "a negative (k1) mean is a measurement, not an error");
        assert!(KlController::fixed(-1.0).is_err());
        assert!(KlController::adaptive(0.1, 0.0, 1.0).is_err());
        assert!(KlController::adaptive(0.1, 0.1, f64::INFINITY).is_err());
        assert_eq!(c.scale(2.0).unwrap(), 0.08);
    }

    #[test]
    fn huge_batches_cannot_flip_the_sign() {
        let mut c = KlController::adaptive(0.1, 1.0, 1.0).unwrap();
        for _ in 0..10 {
            c.update(0.0, 1_000_000).unwrap();
        }
        assert!(c.beta() > 0.0);
    }

    #[test]
    fn serde_round_trip() {
        let c: KlController =
            serde_json::from_str(r#"{"adaptive": {"beta": 0.1, "target": 0.1, "horizon": 10000}}"#).unwrap();
        assert_eq!(c, KlController::adaptive(0.1, 0.1, 10000.0).unwrap());
        let back: KlController = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
