//! Training loops.

pub mod dapo;
pub mod dapo_config;
pub mod grid;
mod persist;
mod rollouts;
pub mod settings;
pub mod sft;
pub mod step_metrics;
mod update;

pub use sft::{train_sft, SftConfig, SftProgress, SftReport};
