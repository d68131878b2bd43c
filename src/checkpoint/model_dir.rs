//! Hugging Face model directories: `config.json` + `model.safetensors` + `generation_config.json`
//! (+ the tokenizer: `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`).
//!
//! Loading accepts names with or without the `transformer.` prefix, f32/f16/bf16 tensors, and
//! ignores the attention-mask buffers old checkpoints carry; a stored `lm_head.weight` must
//! equal `wte.weight` (GPT-2 ties them). Saving writes what `GPT2LMHeadModel.from_pretrained`
//! loads as is: prefixed names, f32, no separate lm_head, `{"format": "pt"}` metadata. A policy
//! GRN is saved as `grn.gamma` / `grn.beta` at the top level (transformers reports them as
//! unused weights and loads the rest) and enabled by `grn` in `config.json`.

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

/// Tensors a GPT-2 file may hold besides the parameters: the attention-mask buffers of old
/// checkpoints, the tied lm_head (checked equal to wte), and a sequence-classification head
/// with its GRN (read by the judge scorer).
const KNOWN_EXTRAS: &[&str] = &[
    "attn.bias",
    "attn.masked_bias",
    "lm_head.weight",
    "score.weight",
    "score.bias",
    "value_grn.gamma",
    "value_grn.beta",
];

/// Checks that the file holds the layers `cfg` describes, before anything is sized from the
/// config: a `config.json` claiming more or fewer layers than the weights (or an absurd count)
/// is an error naming both numbers, and tensors that belong to no parameter are an error
/// listing them, rather than being ignored.
fn check_layout(file: &TensorFile, cfg: &Gpt2Config) -> Result<()> {
    let names = file.names();
    let layer = |n: &str| -> Option<usize> {
        let rest = n.strip_prefix("transformer.").unwrap_or(n).strip_prefix("h.")?;
        rest.split('.').next()?.parse().ok()
    };
    let in_file = names.iter().filter_map(|n| layer(n)).max().map_or(0, |l| l + 1);
    if in_file != cfg.n_layer {
        return Err(Error::tensor(
            file.path(),
            format!("h.{}", in_file.min(cfg.n_layer)),
            format!("the weights hold {in_file} transformer layers but config.json says n_layer = {}", cfg.n_layer),
        ));
    }
    let expected: std::collections::HashSet<String> = param_specs(cfg).into_iter().map(|s| s.name).collect();
    let mut extra: Vec<&String> = names
        .iter()
        .filter(|n| {
            let short = n.strip_prefix("transformer.").unwrap_or(n);
            let known = KNOWN_EXTRAS.iter().any(|x| short == *x || short.ends_with(&format!(".{x}")));
            !expected.contains(short) && !known
        })
        .collect();
    if !extra.is_empty() {
        extra.sort();
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        let more = if extra.len() > 5 { format!(" and {} more", extra.len() - 5) } else { String::new() };
        return Err(Error::tensor(
            file.path(),
            extra[0].clone(),
            format!(
                "{} tensor(s) belong to no parameter of this GPT-2 config ({}{more}); the config does not describe \
                 these weights",
                extra.len(),
                shown.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Reads every parameter of `cfg` from a safetensors file, in
/// [`param_specs`] order, converted to f32. The file must
/// hold exactly the config's layers (see `check_layout`), each tensor in its shape.
pub fn load_params(path: &Path, cfg: &Gpt2Config) -> Result<Vec<Vec<f32>>> {
    let file = TensorFile::open(path)?;
    check_layout(&file, cfg)?;
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
    let tensors: Vec<_> =
        model.specs().iter().zip(&host).map(|(s, v)| (s.file_name(), s.shape.clone(), v.as_slice())).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_f32(&dir.join(WEIGHTS_FILE), &tensors, meta)?;
    let gen = generation_config(model.config(), tokenizer);
    let path = dir.join(super::end_tokens::GENERATION_CONFIG_FILE);
    write_atomically(&path, &serde_json::to_vec_pretty(&gen).expect("a JSON value always serialises"))?;
    if let Some(tok) = tokenizer {
        tok.save_dir(dir, model.config().n_positions)?;
    }
    Ok(())
}

/// `generation_config.json`: the end tokens transformers' `generate` stops at (the config's
/// `eos_token_id`, one id or a list), BOS, and PAD (the tokenizer's, else the first end token,
/// as TRL pads), so `generate` on a checkpoint stops at EOS with no argument.
fn generation_config(cfg: &Gpt2Config, tok: Option<&Tokenizer>) -> serde_json::Value {
    let eos = crate::model::config::token_ids_json(&cfg.eos_token_ids);
    let pad = tok.and_then(Tokenizer::pad_id).or(cfg.eos_token_ids.first().copied());
    serde_json::json!({
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": pad,
    })
}

/// Builds a directory at `dir` through `fill(tmp)` on a sibling temporary directory, syncs
/// every file and the directories to disk, then swaps it into place. At every instant `dir`
/// is either the old complete directory or the new one, or, between the two renames of a
/// replacement, absent with both complete copies beside it (`.NAME.old-PID`, `.NAME.tmp-PID`),
/// which [`recover_dirs`] puts back at the next start.
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
    let filled = fill(&tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    crate::util::failpoint::hit("checkpoint.before_rename");
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        crate::util::failpoint::hit("checkpoint.between_renames");
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        sync_dir(&parent)?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        sync_dir(&parent)?;
    }
    Ok(())
}

/// fsyncs every file under `dir` and the directory itself, so a rename that publishes it
/// cannot outlive its contents in a crash.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

/// Puts back what an interrupted [`write_dir_atomically`] left in `parent`: a directory
/// missing between the two renames of a replacement is restored from its complete new copy
/// (`.NAME.tmp-PID`, renamed only after it was filled and synced) or else its old one
/// (`.NAME.old-PID`); leftover old copies of directories that exist, and unfinished temporary
/// copies, are removed. Returns one line per action. Run it only on a directory this process
/// has locked ([`crate::checkpoint::DirLock`]), so no other writer is mid-swap.
pub fn recover_dirs(parent: &Path) -> Result<Vec<String>> {
    let mut actions = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(actions) };
    let mut olds = Vec::new();
    let mut tmps = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix('.') else { continue };
        if let Some((name, _pid)) = rest.rsplit_once(".old-") {
            olds.push((name.to_string(), entry.path()));
        } else if let Some((name, _pid)) = rest.rsplit_once(".tmp-") {
            tmps.push((name.to_string(), entry.path()));
        }
    }
    for (name, old) in &olds {
        let target = parent.join(name);
        if !target.exists() {
            let fresh = if old.is_dir() { tmps.iter().find(|(n, t)| n == name && t.is_dir()) } else { None };
            match fresh {
                Some((_, tmp)) => {
                    std::fs::rename(tmp, &target).map_err(|e| Error::io(tmp, e))?;
                    actions.push(format!("recovered {} from its new copy", target.display()));
                }
                None => {
                    std::fs::rename(old, &target).map_err(|e| Error::io(old, e))?;
                    actions.push(format!("recovered {} from its previous copy", target.display()));
                    continue;
                }
            }
        }
        remove_any(old)?;
    }
    for (_, tmp) in &tmps {
        if tmp.exists() {
            remove_any(tmp)?;
            actions.push(format!("removed the unfinished {}", tmp.display()));
        }
    }
    if !actions.is_empty() {
        sync_dir(parent)?;
    }
    Ok(actions)
}

fn remove_any(path: &Path) -> Result<()> {
    let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    r.map_err(|e| Error::io(path, e))
}

/// Saves `model` (and `tokenizer`) to `dir` atomically; see [`write_dir_atomically`].
pub fn save_model<K: Backend>(dir: &Path, model: &Gpt2<K>, tokenizer: Option<&Tokenizer>) -> Result<()> {
    write_dir_atomically(dir, |tmp| save_model_files(tmp, model, tokenizer))
}
