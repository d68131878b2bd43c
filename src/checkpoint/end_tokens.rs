//! The tokens that end a completion, found the way transformers and TRL find them: the model's
//! `eos_token_id` (in `generation_config.json` and `config.json`, an int or a list) and the
//! tokenizer's EOS (`eos_token` in `tokenizer_config.json` / `special_tokens_map.json`), plus
//! any stop tokens the run configures. TRL's GRPOTrainer stops a rollout at any of them and
//! masks everything after the first one; `dapo train`, `generate` and `eval` do the same.
//!
//! An id outside the vocabulary can never be sampled; it is dropped with a note rather than
//! kept silently (GPT-2 configs saved for a small vocabulary still say 50256). When no source
//! names an end token, the tokenizer's `<|endoftext|>` is used if it has one.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::config::token_ids;
use crate::model::Gpt2Config;
use crate::tokenizer::special::read_object;
use crate::tokenizer::{SpecialTokens, Tokenizer};

/// `generation_config.json`: generation defaults, `eos_token_id` among them.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub use crate::tokenizer::special::{SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE};

/// The end tokens of a model, and where each came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndTokens {
    /// Token ids that end a completion, in the order found, without repeats.
    pub ids: Vec<u32>,
    /// One line per id found: `id (source)`.
    pub sources: Vec<String>,
    /// Ids named by a source that were dropped (out of the vocabulary), with why.
    pub notes: Vec<String>,
}

impl EndTokens {
    fn add(&mut self, id: u32, source: &str, vocab_size: usize) {
        if id as usize >= vocab_size {
            self.notes.push(format!("{source} names token {id}, outside the vocabulary ({vocab_size}); ignored"));
        } else if !self.ids.contains(&id) {
            self.ids.push(id);
            self.sources.push(format!("{id} ({source})"));
        }
    }

    /// The end tokens of a model held in memory: its config's `eos_token_ids`, then the
    /// tokenizer's `<|endoftext|>` when the config names none, then `extra` (configured stop
    /// tokens).
    pub fn of_model(cfg: &Gpt2Config, tok: &Tokenizer, extra: &[u32]) -> Self {
        let mut e = EndTokens::default();
        for &id in &cfg.eos_token_ids {
            e.add(id, "config eos_token_id", cfg.vocab_size);
        }
        e.fallback(tok, cfg.vocab_size);
        for &id in extra {
            e.add(id, "stop_token_ids", cfg.vocab_size);
        }
        e
    }

    /// The end tokens of the model directory `dir`: `generation_config.json`'s and
    /// `config.json`'s `eos_token_id`, the tokenizer's `eos_token` from
    /// `tokenizer_config.json` or `special_tokens_map.json`, the `<|endoftext|>` fallback, then
    /// `extra`. A malformed file is an error naming it.
    pub fn of_dir(dir: &Path, cfg: &Gpt2Config, tok: &Tokenizer, extra: &[u32]) -> Result<Self> {
        let mut e = EndTokens::default();
        let v = cfg.vocab_size;
        if let Some(gen) = read_object(&dir.join(GENERATION_CONFIG_FILE))? {
            let path = dir.join(GENERATION_CONFIG_FILE);
            for id in token_ids(gen.get("eos_token_id"), "eos_token_id").map_err(|m| Error::config(&path, m))? {
                e.add(id, GENERATION_CONFIG_FILE, v);
            }
        }
        for &id in &cfg.eos_token_ids {
            e.add(id, "config.json eos_token_id", v);
        }
        // The tokenizer's configs (tokenizer_config.json, then special_tokens_map.json).
        if let Some(token) = SpecialTokens::read(dir)?.get("eos_token") {
            match tok.token_to_id(token) {
                Some(id) => e.add(id, &format!("tokenizer eos_token {token:?}"), v),
                None => {
                    e.notes.push(format!("the tokenizer configs' eos_token {token:?} is not in the tokenizer; ignored"))
                }
            }
        }
        e.fallback(tok, v);
        for &id in extra {
            e.add(id, "stop_token_ids", v);
        }
        Ok(e)
    }

    /// `<|endoftext|>` when nothing else named an end token.
    fn fallback(&mut self, tok: &Tokenizer, vocab_size: usize) {
        if self.ids.is_empty() {
            if let Some(id) = tok.eos_id() {
                self.add(id, "the tokenizer's <|endoftext|>", vocab_size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_union_in_order_and_out_of_range_ids_are_noted() {
        let tok = Tokenizer::default_char();
        let dir = tempfile::tempdir().unwrap();
        let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap().with_eos(Some(50256));
        std::fs::write(dir.path().join(GENERATION_CONFIG_FILE), r#"{"eos_token_id": [5, 0]}"#).unwrap();
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), r#"{"eos_token": {"content": "~"}}"#).unwrap();
        std::fs::write(dir.path().join(SPECIAL_TOKENS_FILE), r#"{"eos_token": "<|endoftext|>"}"#).unwrap();
        let e = EndTokens::of_dir(dir.path(), &cfg, &tok, &[7, 5]).unwrap();
        assert_eq!(e.ids, vec![5, 0, 96, 7]);
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(e.notes[0].contains("50256"), "{:?}", e.notes);

        // Nothing named: the tokenizer's <|endoftext|>.
        let bare = tempfile::tempdir().unwrap();
        let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
        assert_eq!(EndTokens::of_dir(bare.path(), &cfg, &tok, &[]).unwrap().ids, vec![0]);
        assert_eq!(EndTokens::of_model(&cfg, &tok, &[3]).ids, vec![0, 3]);

        std::fs::write(bare.path().join(GENERATION_CONFIG_FILE), r#"{"eos_token_id": "x"}"#).unwrap();
        let err = EndTokens::of_dir(bare.path(), &cfg, &tok, &[]).unwrap_err().to_string();
        assert!(err.contains(GENERATION_CONFIG_FILE) && err.contains("eos_token_id"), "{err}");
    }
}
