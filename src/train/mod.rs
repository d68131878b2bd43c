//! Training loops.

pub mod sft;

pub use sft::{train_sft, SftConfig, SftProgress, SftReport};
