//! Learning-rate schedule: linear warmup, then constant, linear or cosine decay to a floor
//! (transformers' `lr_scheduler_type` names: `constant`, `linear`, `cosine`).

use serde::{Deserialize, Serialize};

/// What the learning rate does after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// Stays at the peak.
    #[default]
    Constant,
    /// Falls linearly from the peak to the floor at the last step.
    Linear,
    /// Follows half a cosine from the peak to the floor.
    Cosine,
}

impl std::str::FromStr for LrDecay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" | "constant_with_warmup" => Ok(LrDecay::Constant),
            "linear" => Ok(LrDecay::Linear),
            "cosine" | "cosine_with_min_lr" => Ok(LrDecay::Cosine),
            _ => Err(format!("unknown lr_scheduler_type `{s}` (expected constant, linear or cosine)")),
        }
    }
}

/// Warmup + decay schedule over `total` optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate, reached at the end of warmup.
    pub max_lr: f32,
    /// Floor the decay ends at (ignored when constant).
    pub min_lr: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// Total steps.
    pub total: u64,
    /// The shape after warmup.
    pub decay: LrDecay,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> Self {
        LrSchedule { max_lr: lr, min_lr: lr, warmup: 0, total: 1, decay: LrDecay::Constant }
    }

    /// Warmup then cosine decay from `max_lr` to `min_lr` at step `total`.
    pub fn cosine(max_lr: f32, min_lr: f32, warmup: u64, total: u64) -> Self {
        LrSchedule { max_lr, min_lr, warmup, total, decay: LrDecay::Cosine }
    }

    /// Learning rate for 0-based step `s`: `max·(s+1)/warmup` during warmup (so the last
    /// warmup step runs at the peak; transformers' warmup starts from 0 instead), then with
    /// `p = (s − warmup)/(total − warmup)`: `max` (constant), `min + (max − min)(1 − p)`
    /// (linear) or `min + ½(max − min)(1 + cos πp)` (cosine), and `min` past the end.
    pub fn lr(&self, s: u64) -> f32 {
        if s < self.warmup {
            return self.max_lr * (s + 1) as f32 / self.warmup as f32;
        }
        if self.decay == LrDecay::Constant {
            return self.max_lr;
        }
        if s >= self.total || self.total <= self.warmup {
            return self.min_lr;
        }
        let progress = (s - self.warmup) as f64 / (self.total - self.warmup) as f64;
        let f = match self.decay {
            LrDecay::Constant => 1.0,
            LrDecay::Linear => 1.0 - progress,
            LrDecay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        (self.min_lr as f64 + (self.max_lr - self.min_lr) as f64 * f) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_each_decay() {
        let s = LrSchedule::cosine(1.0, 0.1, 4, 14);
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert!((s.lr(4) - 1.0).abs() < 1e-6);
        assert!((s.lr(9) - 0.55).abs() < 1e-6, "{}", s.lr(9));
        assert!(s.lr(13) > 0.1 && s.lr(13) < 0.15);
        assert_eq!(s.lr(14), 0.1);
        assert_eq!(LrSchedule::constant(3e-4).lr(100), 3e-4);
        let lin = LrSchedule { decay: LrDecay::Linear, min_lr: 0.0, ..s };
        assert!((lin.lr(9) - 0.5).abs() < 1e-6, "{}", lin.lr(9));
        assert_eq!(lin.lr(14), 0.0);
        let flat = LrSchedule { decay: LrDecay::Constant, ..s };
        assert_eq!((flat.lr(1), flat.lr(9), flat.lr(100)), (0.5, 1.0, 1.0));
        assert_eq!("cosine".parse::<LrDecay>(), Ok(LrDecay::Cosine));
        assert!("step".parse::<LrDecay>().is_err());
    }
}
