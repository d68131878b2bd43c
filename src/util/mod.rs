//! Small helpers shared across layers.

pub mod counter_rng;
pub mod failpoint;
pub mod mem;
pub mod rng;
pub mod settings_file;
