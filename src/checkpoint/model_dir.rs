//! Hugging Face model directories: `config.json` + `model.safetensors` (+ `tokenizer.json`).
//!
//! Loading accepts names with or without the `transformer.` prefix, f32/f16/bf16 tensors, and
//! ignores the attention-mask buffers old checkpoints carry; a stored `lm_head.weight` must
//! equal `wte.weight` (GPT-2 ties them). Saving writes what `GPT2LMHeadModel.from_pretrained`
//! loads as is: prefixed names, f32, no separate lm_head, `{"format": "pt"}` metadata.

use super::tensors::{write_atomically, write_f32, TensorFile};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::params::param_specs;
use crate::model::{Gpt2, Gpt2Config};
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The model configuration file of a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file of a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Reads `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<Gpt2Config> {
    Gpt2Config::from_json_file(&dir.join(CONFIG_FILE))
}

/// Reads every parameter of `cfg` from a safetensors file, in
/// [`param_specs`](crate::model::params::param_specs) order, converted to f32.
pub fn load_params(path: &Path, cfg: &Gpt2Config) -> Result<Vec<Vec<f32>>> {
    let file = TensorFile::open(path)?;
    let specs = param_specs(cfg);
    let mut out = Vec::with_capacity(specs.len());
    for spec in &specs {
        let prefixed = format!("transformer.{}", spec.name);
        let name = if file.contains(&prefixed) { prefixed } else { spec.name.clone() };
        let (values, _) = file.f32(&name, Some(&spec.shape))?;
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(path, name, format!("value {} at index {i} is not finite", values[i])));
        }
        out.push(values);
    }
    if file.contains("lm_head.weight") {
        let (lm, _) = file.f32("lm_head.weight", Some(&specs[0].shape))?;
        if lm != out[0] {
            return Err(Error::tensor(
                path,
                "lm_head.weight",
                "differs from wte.weight; only a tied lm_head is supported",
            ));
        }
    }
    Ok(out)
}

/// Loads a GPT-2 checkpoint directory onto `backend`.
pub fn load_model<K: Backend>(dir: &Path, backend: K) -> Result<Gpt2<K>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a directory (expected config.json + model.safetensors)",
            ),
        ));
    }
    let cfg = load_config(dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() {
        let hint = if dir.join("model.safetensors.index.json").exists() {
            "sharded checkpoints are not supported; merge the shards into one model.safetensors"
        } else if dir.join("pytorch_model.bin").exists() {
            "only safetensors weights are read; re-save with `model.save_pretrained(dir, safe_serialization=True)`"
        } else {
            "no weights file"
        };
        return Err(Error::io(&weights, std::io::Error::new(std::io::ErrorKind::NotFound, hint)));
    }
    let params = load_params(&weights, &cfg)?;
    Gpt2::from_host(backend, cfg, &params)
}

/// Writes `model` (and `tokenizer`, if given) as a transformers-loadable directory.
pub fn save_model_files<K: Backend>(dir: &Path, model: &Gpt2<K>, tokenizer: Option<&Tokenizer>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg = serde_json::to_vec_pretty(&model.config().to_json()).expect("a JSON value always serialises");
    write_atomically(&dir.join(CONFIG_FILE), &cfg)?;
    let host = model.to_host();
    let tensors: Vec<_> = model
        .specs()
        .iter()
        .zip(&host)
        .map(|(s, v)| (format!("transformer.{}", s.name), s.shape.clone(), v.as_slice()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_f32(&dir.join(WEIGHTS_FILE), &tensors, meta)?;
    if let Some(tok) = tokenizer {
        tok.save(&dir.join(TOKENIZER_FILE))?;
    }
    Ok(())
}

/// Builds a directory at `dir` through `fill(tmp)` on a sibling temporary directory, then
/// swaps it into place, so `dir` is always either the old complete directory or the new one.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Saves `model` (and `tokenizer`) to `dir` atomically; see [`write_dir_atomically`].
pub fn save_model<K: Backend>(dir: &Path, model: &Gpt2<K>, tokenizer: Option<&Tokenizer>) -> Result<()> {
    write_dir_atomically(dir, |tmp| save_model_files(tmp, model, tokenizer))
}
