//! Optimisation: AdamW with gradient clipping, and the learning-rate schedule.

pub mod adamw;
pub mod schedule;

pub use adamw::{clip_scale, AdamW, AdamWConfig, StepInfo};
pub use schedule::{LrDecay, LrSchedule};
