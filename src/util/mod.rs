//! Small helpers shared across layers.

pub mod counter_rng;
pub mod rng;
