//! GPT-2 on the [`Backend`](crate::backend::Backend) op set: configuration, parameter
//! layout, activations, forward and backward.

pub mod activations;
pub mod config;
pub mod gpt2;
pub mod kv_cache;
pub mod memory;
pub mod params;

pub use config::Gpt2Config;
pub use gpt2::{mean_weights, Gpt2, HeadGrad, HiddenView};
pub use kv_cache::KvCache;
pub use params::ParamSpec;
pub mod grn;
