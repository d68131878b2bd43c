//! Checkpoints on disk: safetensors I/O, HF model directories, optimizer state.

pub mod dir_lock;
pub mod end_tokens;
pub mod model_dir;
pub mod optimizer_state;
pub mod run_dir;
pub mod tensors;
pub mod trainer_state;

pub use dir_lock::DirLock;
pub use end_tokens::EndTokens;
pub use model_dir::{load_config, load_model, load_params, recover_dirs, save_model, write_dir_atomically};
pub use optimizer_state::{load_optimizer, save_optimizer};
pub use tensors::TensorFile;
