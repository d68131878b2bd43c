//! The built-in character-level tokenizer: one token per character of a fixed alphabet.
//!
//! It is written as a `tokenizer.json` document and loaded by the `tokenizers` crate like any
//! other, so what [`Tokenizer::save`] writes is an ordinary Hugging Face tokenizer that
//! `transformers` loads and that encodes identically there:
//! - model: BPE whose vocabulary is the characters and which has no merges, so each
//!   character is its own token;
//! - no normalizer and no pre-tokenizer, so the text reaches the model unchanged;
//! - decoder `Fuse`, so decoding concatenates tokens (a BPE with no decoder joins them with
//!   spaces);
//! - `<|endoftext|>` as id 0, both in the vocabulary and as a special added token, so it is
//!   recognised in text and kept by decoding, as in GPT-2.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::{Tokenizer, EOS_TOKEN};
use crate::error::{Error, Result};

/// What [`Tokenizer::source`] reports for a built-in tokenizer.
const BUILT_IN: &str = "<built-in char-level>";

/// The `tokenizer.json` document of a character-level tokenizer over `alphabet`.
fn char_level_json(alphabet: &str) -> Result<Value> {
    let mut vocab = Map::new();
    vocab.insert(EOS_TOKEN.to_string(), json!(0));
    let mut seen = HashSet::new();
    for c in alphabet.chars() {
        if seen.insert(c) {
            vocab.insert(c.to_string(), json!(seen.len()));
        }
    }
    if seen.is_empty() {
        return Err(Error::tokenizer(BUILT_IN, "the alphabet is empty"));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": 0,
            "content": EOS_TOKEN,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": { "type": "Fuse" },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": []
        }
    }))
}

impl Tokenizer {
    /// A character-level tokenizer: id 0 is `<|endoftext|>` (special), then one id per
    /// distinct character of `alphabet`, in order of first appearance.
    ///
    /// Encoding a character outside the alphabet is an error naming it. An empty alphabet is
    /// an [`Error::Tokenizer`].
    pub fn char_level(alphabet: &str) -> Result<Self> {
        let json = char_level_json(alphabet)?;
        Tokenizer::from_json(&json.to_string(), PathBuf::from(BUILT_IN))
    }

    /// The character-level tokenizer over `'\n'` followed by printable ASCII (32..=126):
    /// 97 ids, with `<|endoftext|>` = 0, `'\n'` = 1, `' '` = 2, ..., `'~'` = 96.
    pub fn default_char() -> Self {
        let alphabet: String = std::iter::once('\n').chain((32u8..=126).map(char::from)).collect();
        // The alphabet is a constant, so failure here is a bug in this file, not bad input.
        Tokenizer::char_level(&alphabet).expect("the built-in character-level tokenizer must load")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn default_vocab_layout_and_eos() {
        let tok = Tokenizer::default_char();
        assert_eq!(tok.vocab_size(), 97);
        assert_eq!(tok.eos_id(), Some(0));
        assert_eq!(tok.encode("\n").unwrap(), vec![1]);
        assert_eq!(tok.encode(" ").unwrap(), vec![2]);
        assert_eq!(tok.encode("0").unwrap(), vec![2 + (b'0' - 32) as u32]);
        assert_eq!(tok.encode("~").unwrap(), vec![96]);
        assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
        assert_eq!(tok.source(), std::path::Path::new("<built-in char-level>"));
        assert_eq!(tok.decode(&[0]).unwrap(), "<|endoftext|>");
    }

    #[test]
    fn round_trip_is_exact_concatenation() {
        let tok = Tokenizer::default_char();
        for text in ["12 + 3\n", "  two  spaces\n\n", "a", "x<|endoftext|>y", "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
        }
        // One id per character, except the special token, which is one id.
        assert_eq!(tok.encode("12 + 3\n").unwrap().len(), 7);
        let ids = tok.encode("x<|endoftext|>y").unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[1], 0);
    }

    #[test]
    fn custom_alphabet_order_and_duplicates() {
        let tok = Tokenizer::char_level("ba\nab").unwrap();
        assert_eq!(tok.vocab_size(), 4);
        assert_eq!(tok.encode("ab\n").unwrap(), vec![2, 1, 3]);
        assert_eq!(tok.decode(&[1, 2, 3, 0]).unwrap(), "ba\n<|endoftext|>");
        assert!(matches!(Tokenizer::char_level(""), Err(Error::Tokenizer { .. })));
    }

    #[test]
    fn unknown_character_is_an_error_naming_it() {
        let tok = Tokenizer::char_level("ab").unwrap();
        let err = tok.encode("aa b").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Tokenizer { .. }), "{msg}");
        assert!(msg.contains("' '") && msg.contains("position 2"), "{msg}");
        let msg = Tokenizer::default_char().encode("café").unwrap_err().to_string();
        assert!(msg.contains("'é'") && msg.contains("U+00E9") && msg.contains("position 3"), "{msg}");
    }

    #[test]
    fn decode_rejects_out_of_range_ids() {
        let tok = Tokenizer::default_char();
        let msg = tok.decode(&[5, 97]).unwrap_err().to_string();
        assert!(msg.contains("97") && msg.contains("vocab_size 97"), "{msg}");
    }

    #[test]
    fn save_then_load_encodes_identically() {
        let dir = temp_dir();
        let tok = Tokenizer::default_char();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["decoder"]["type"], "Fuse");
        assert_eq!(saved["added_tokens"][0]["content"], EOS_TOKEN);
        let loaded = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(loaded.source(), path);
        assert_eq!(loaded.vocab_size(), 97);
        assert_eq!(loaded.eos_id(), Some(0));
        let text = "Q: 12 + 3?\nA: 15<|endoftext|>";
        assert_eq!(loaded.encode(text).unwrap(), tok.encode(text).unwrap());
        assert_eq!(loaded.decode(&loaded.encode(text).unwrap()).unwrap(), text);
        // Strictness survives the round trip: the loaded file still rejects unknown characters.
        assert!(loaded.encode("é").is_err());
    }

    #[test]
    fn missing_and_garbage_files() {
        let dir = temp_dir();
        let msg = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("no tokenizer.json (nor vocab.json + merges.txt) in") && msg.contains("--tokenizer"),
            "{msg}"
        );

        let missing = dir.path().join("nope.json");
        let err = Tokenizer::from_file(&missing).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("nope.json"), "{err}");

        let garbage = dir.path().join("tokenizer.json");
        std::fs::write(&garbage, "{ this is not json").unwrap();
        let err = Tokenizer::from_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Tokenizer { .. }), "{msg}");
        assert!(msg.contains(&garbage.display().to_string()) && msg.contains("not a valid tokenizer.json"), "{msg}");

        // Valid JSON, unknown model type: the parser's complaint is passed on.
        let mut json = char_level_json("ab").unwrap();
        json["model"]["type"] = json!("Mystery");
        std::fs::write(&garbage, json.to_string()).unwrap();
        let msg = Tokenizer::from_file(&garbage).unwrap_err().to_string();
        assert!(msg.contains("tokenizer.json") && msg.len() > "not a valid tokenizer.json: ".len() + 10, "{msg}");
    }

    #[test]
    fn debug_is_a_summary() {
        let s = format!("{:?}", Tokenizer::default_char());
        assert!(s.contains("vocab_size: 97") && s.contains("BPE") && s.len() < 200, "{s}");
    }
}
