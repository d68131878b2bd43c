//! Training loops.

pub mod dapo;
pub mod dapo_config;
pub mod grid;
pub mod settings;
pub mod sft;
pub mod step_metrics;

pub use sft::{train_sft, SftConfig, SftProgress, SftReport};
