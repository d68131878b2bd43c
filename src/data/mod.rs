//! Datasets and batching.
//!
//! Supervised fine-tuning reads JSONL (`{"text"}`, or `{"prompt", "completion" | "answer"}`
//! with the loss on the completion only) or plain text (one long token stream), and cuts
//! fixed-shape [`Batch`]es of (input, target, weight) triples for next-token training.
//! [`arithmetic`] writes the built-in toy task (two-digit addition) as such a JSONL file.

pub mod arithmetic;
mod batch;
pub mod epochs;
mod jsonl;
mod sft;
pub mod tasks;

pub use batch::Batch;
pub use epochs::EpochSampler;
pub use sft::{Example, SftDataset};
pub use tasks::{Task, TaskDataset};
