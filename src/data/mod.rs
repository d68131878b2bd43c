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

/// The longest line a data file may have, in bytes (1 MiB). A prompt or text longer than this
/// cannot fit any GPT-2 context, and tokenizing it would take ~170 bytes of memory per
/// character before any length check could run.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Refuses a line longer than [`MAX_LINE_BYTES`]; the message says how long it is.
pub(crate) fn check_line_length(line: &str) -> std::result::Result<(), String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("the line is {} bytes long; lines are limited to {MAX_LINE_BYTES} bytes", line.len()));
    }
    Ok(())
}

pub use batch::Batch;
pub use epochs::EpochSampler;
pub use sft::{Example, SftDataset};
pub use tasks::{Task, TaskDataset};
