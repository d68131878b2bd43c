//! Training loops.

pub mod dapo;
pub mod dapo_config;
pub mod sft;

pub use sft::{train_sft, SftConfig, SftProgress, SftReport};
