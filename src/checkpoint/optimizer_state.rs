//! `optimizer.safetensors`: AdamW moments by parameter name, and the step count, so training
//! resumes exactly where it stopped.

use super::tensors::{write_f32, TensorFile};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::optim::AdamW;
use std::collections::HashMap;
use std::path::Path;

/// The optimizer state file of a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Writes `opt`'s state for `model` to `path`.
pub fn save_optimizer<K: Backend>(path: &Path, model: &Gpt2<K>, opt: &AdamW<K>) -> Result<()> {
    let (step, m, v) = opt.to_host(model.backend());
    let mut tensors = Vec::with_capacity(2 * m.len());
    for (s, (m, v)) in model.specs().iter().zip(m.iter().zip(&v)) {
        tensors.push((format!("m.{}", s.name), s.shape.clone(), m.as_slice()));
        tensors.push((format!("v.{}", s.name), s.shape.clone(), v.as_slice()));
    }
    // One metadata entry: safetensors writes the map in hash order, so two entries would make
    // identical runs write different bytes.
    let meta = HashMap::from([("step".to_string(), step.to_string())]);
    write_f32(path, &tensors, meta)
}

/// Restores `opt` from a file written by [`save_optimizer`].
pub fn load_optimizer<K: Backend>(path: &Path, model: &Gpt2<K>, opt: &mut AdamW<K>) -> Result<()> {
    let file = TensorFile::open(path)?;
    let step: u64 = file
        .metadata()
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Safetensors { path: path.to_path_buf(), msg: "metadata has no integer `step`".into() })?;
    let mut m = Vec::new();
    let mut v = Vec::new();
    for s in model.specs() {
        m.push(file.f32(&format!("m.{}", s.name), Some(&s.shape))?.0);
        v.push(file.f32(&format!("v.{}", s.name), Some(&s.shape))?.0);
    }
    opt.load_host(model.backend(), step, &m, &v)
}
