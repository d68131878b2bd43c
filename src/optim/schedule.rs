//! Learning-rate schedule: linear warmup, then cosine decay to a floor.

/// Warmup + cosine schedule over `total` optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate, reached at the end of warmup.
    pub max_lr: f32,
    /// Floor the cosine decays to.
    pub min_lr: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// Total steps.
    pub total: u64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> Self {
        LrSchedule { max_lr: lr, min_lr: lr, warmup: 0, total: 1 }
    }

    /// Learning rate for 0-based step `s`: `max·(s+1)/warmup` during warmup, then
    /// `min + ½(max − min)(1 + cos(π·(s − warmup)/(total − warmup)))`, and `min` past the end.
    pub fn lr(&self, s: u64) -> f32 {
        if s < self.warmup {
            return self.max_lr * (s + 1) as f32 / self.warmup as f32;
        }
        if s >= self.total || self.total <= self.warmup {
            return self.min_lr;
        }
        let progress = (s - self.warmup) as f64 / (self.total - self.warmup) as f64;
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + (self.max_lr - self.min_lr) as f64 * cos) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule { max_lr: 1.0, min_lr: 0.1, warmup: 4, total: 14 };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert!((s.lr(4) - 1.0).abs() < 1e-6);
        assert!((s.lr(9) - 0.55).abs() < 1e-6, "{}", s.lr(9));
        assert!(s.lr(13) > 0.1 && s.lr(13) < 0.15);
        assert_eq!(s.lr(14), 0.1);
        assert_eq!(LrSchedule::constant(3e-4).lr(100), 3e-4);
    }
}
