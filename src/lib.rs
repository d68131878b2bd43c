//! # gepa-dapo-grn
//!
//! Reinforcement-learning fine-tuning (DAPO and the GRPO family) of GPT-2-class language
//! models, with vector-valued ("GEPA") rewards and optional GRN, in Rust.
//!
//! The layers, top to bottom (each calls only the ones below it):
//! - [`cli`]: the `dapo` command line.
//! - [`train`]: the DAPO and SFT training loops.
//! - [`report`]: metric writers (TensorBoard event files, a CSV table) and charts of training
//!   logs.
//! - [`reward`]: GEPA feedback, scorers, reward mixing.
//! - [`rl`]: advantages, the DAPO objective, controllers.
//! - [`data`]: datasets and batching.
//! - [`model`]: GPT-2 written once against the [`backend::Backend`] op set.
//! - [`checkpoint`]: Hugging Face model directories (config.json + model.safetensors).
//! - [`tokenizer`]: `tokenizer.json` through the `tokenizers` crate, and a built-in
//!   character-level tokenizer.
//! - [`optim`]: AdamW, gradient clipping and the learning-rate schedule.
//! - [`backend`]: the op set; [`backend::cpu`] is the f32 numerical oracle.

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
