//! # gepa-dapo-grn
//!
//! Reinforcement-learning fine-tuning (DAPO and the GRPO family) of GPT-2-class language
//! models, with vector-valued ("GEPA") rewards and optional GRN, in Rust.
//!
//! The layers, top to bottom (each calls only the ones below it):
//! - [`cli`]: the `dapo` command line.
//! - [`train`]: the DAPO trainer and the SFT loop, their settings, checkpoints and logs.
//! - [`rollout`]: batched KV-cache generation, and the one generate → decode → score path of
//!   the trainer's rollouts, its evaluation and `dapo eval`.
//! - [`report`]: metric writers (TensorBoard event files, a CSV table) and charts of training
//!   logs.
//! - [`selftest`]: the parity cases of every op family, a kernel device against the CPU oracle
//!   (`dapo selftest` and the tests).
//! - [`rl`]: advantages, the DAPO objective, controllers, and a group trainer for any policy.
//! - [`reward`]: GEPA feedback, scorers (built-in, external commands, judge models), reward
//!   mixing.
//! - [`data`]: datasets and batching.
//! - [`checkpoint`]: Hugging Face model directories (config.json + model.safetensors), optimizer
//!   and trainer state.
//! - [`optim`]: AdamW, gradient clipping and the learning-rate schedule.
//! - [`model`]: GPT-2 (with an optional GRN before the lm_head) written once against the
//!   [`backend::Backend`] op set.
//! - [`tokenizer`]: `tokenizer.json` through the `tokenizers` crate, and a built-in
//!   character-level tokenizer.
//! - [`backend`]: the op set, one trait per op family; [`backend::cpu`] is the f32 numerical
//!   oracle, and [`backend::kernel`] runs the same ops as CUDA kernels on a GPU, or through the
//!   kernel emulator on the host (`docs/architecture.md`).
//!
//! Beside them, [`util`] holds helpers every layer may use (seeded RNGs, memory checks, the
//! settings-file reader, failpoints) and [`error`] the library's error type.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod model;
pub mod optim;
pub mod report;
pub mod reward;
pub mod rl;
pub mod rollout;
pub mod selftest;
pub mod tokenizer;
pub mod train;
pub mod util;

pub use error::{Error, Result};

/// The README's code blocks, compiled as doctests so its examples stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
