//! `--model DIR`: a local checkpoint directory, never a download. Shared by `train`,
//! `generate` and `eval`.

use std::path::Path;

use crate::backend::Backend;
use crate::checkpoint::load_model;
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::tokenizer::Tokenizer;

/// `--model` must be a local directory: say so for a hub name.
pub(super) fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let looks_like_hub = !dir.exists() && dir.components().count() <= 2 && !dir.to_string_lossy().starts_with('.');
    let hint = if looks_like_hub {
        format!(
            " — `{}` looks like a Hugging Face hub name, but nothing is downloaded: save the model once with \
             transformers (`AutoModelForCausalLM.from_pretrained(name).save_pretrained(dir)` plus the tokenizer) \
             and pass that directory",
            dir.display()
        )
    } else {
        String::new()
    };
    Err(Error::Invalid(format!("--model {}: not a directory{hint}", dir.display())))
}

/// Loads the checkpoint directory onto backend `k` with its tokenizer, or with `tokenizer`
/// (`--tokenizer`: a `tokenizer.json` or a directory holding one, or vocab.json + merges.txt).
pub(super) fn load_checkpoint<K: Backend>(dir: &Path, tokenizer: Option<&Path>, k: K) -> Result<(Gpt2<K>, Tokenizer)> {
    let model = load_model(dir, k)?;
    let tok = match tokenizer {
        Some(p) => Tokenizer::load(p)?,
        None => Tokenizer::from_dir(dir)?,
    };
    if tok.vocab_size() > model.config().vocab_size {
        return Err(Error::Invalid(format!(
            "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
            dir.display(),
            tok.vocab_size(),
            model.config().vocab_size
        )));
    }
    Ok((model, tok))
}
