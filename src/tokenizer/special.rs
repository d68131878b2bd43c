//! A tokenizer's special tokens and settings as transformers keeps them beside the vocabulary:
//! `tokenizer_config.json` (special tokens, `chat_template`, the tokenizer class, …) and the
//! older `special_tokens_map.json`. Read from a model directory so the end token is whatever
//! the model says (`</s>` as well as `<|endoftext|>`), and written back into every checkpoint,
//! every field of the input's `tokenizer_config.json` preserved.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{read_to_string, Error, Result};

/// `tokenizer_config.json`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// `special_tokens_map.json`.
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

/// The special-token roles this crate reads and writes, by their transformers field names.
pub const ROLES: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

/// A tokenizer's special tokens (by role) and the rest of its `tokenizer_config.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecialTokens {
    /// The token text of each role present, e.g. `eos_token` → `<|endoftext|>`.
    pub tokens: Map<String, Value>,
    /// `tokenizer_config.json` as read (empty when there was none): written back with the
    /// special tokens set, so a `chat_template` or a tokenizer class survives training.
    pub config: Map<String, Value>,
}

/// A special-token field: a string, or transformers' `AddedToken` form `{"content": …}`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A JSON object file, `None` when it does not exist; anything else is an error naming it.
pub(crate) fn read_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    match serde_json::from_str(&read_to_string(path)?) {
        Ok(Value::Object(o)) => Ok(Some(o)),
        Ok(_) => Err(Error::config(path, "expected a JSON object")),
        Err(e) => Err(Error::config(path, format!("invalid JSON: {e}"))),
    }
}

impl SpecialTokens {
    /// Reads `dir/tokenizer_config.json`, then `dir/special_tokens_map.json` for the roles the
    /// first does not name. Neither file is required; a malformed one, or a special-token field
    /// that is neither a string nor `{"content": …}` (nor null), is an error naming the file.
    pub fn read(dir: &Path) -> Result<Self> {
        let mut s = SpecialTokens::default();
        for file in [TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE] {
            let path = dir.join(file);
            let Some(obj) = read_object(&path)? else { continue };
            for role in ROLES {
                match obj.get(role) {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        let text = token_text(v).ok_or_else(|| {
                            Error::config(&path, format!("`{role}` must be a string or {{\"content\": ...}}, got {v}"))
                        })?;
                        s.tokens.entry(role.to_string()).or_insert(Value::String(text));
                    }
                }
            }
            if file == TOKENIZER_CONFIG_FILE {
                s.config = obj;
            }
        }
        Ok(s)
    }

    /// The token text of `role` (`eos_token`, …), if set.
    pub fn get(&self, role: &str) -> Option<&str> {
        self.tokens.get(role).and_then(Value::as_str)
    }

    /// Sets `role` to `text` unless it is set already.
    pub fn set_default(&mut self, role: &str, text: &str) {
        self.tokens.entry(role.to_string()).or_insert_with(|| Value::String(text.to_string()));
    }

    /// Writes `tokenizer_config.json` (the input's fields, the special tokens, a tokenizer
    /// class transformers' `AutoTokenizer` can build from `tokenizer.json` alone when the input
    /// named none, and `model_max_length`) and `special_tokens_map.json` into `dir`.
    pub fn write(&self, dir: &Path, model_max_length: usize) -> Result<()> {
        let mut config = self.config.clone();
        for (role, v) in &self.tokens {
            config.insert(role.clone(), v.clone());
        }
        config.entry("tokenizer_class").or_insert_with(|| Value::from("PreTrainedTokenizerFast"));
        config.entry("model_max_length").or_insert_with(|| Value::from(model_max_length));
        for (file, obj) in [(TOKENIZER_CONFIG_FILE, config), (SPECIAL_TOKENS_FILE, self.tokens.clone())] {
            let path = dir.join(file);
            let text = serde_json::to_vec_pretty(&Value::Object(obj)).expect("JSON values serialise");
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms_and_keeps_the_rest_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            r#"{"eos_token": {"content": "</s>", "special": true}, "chat_template": "{{ x }}", "pad_token": null}"#;
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), cfg).unwrap();
        std::fs::write(dir.path().join(SPECIAL_TOKENS_FILE), r#"{"eos_token": "<eos>", "bos_token": "<s>"}"#).unwrap();
        let s = SpecialTokens::read(dir.path()).unwrap();
        assert_eq!(s.get("eos_token"), Some("</s>"), "tokenizer_config.json comes first");
        assert_eq!(s.get("bos_token"), Some("<s>"));
        assert_eq!(s.get("pad_token"), None);
        let out = tempfile::tempdir().unwrap();
        let mut s = s;
        s.set_default("pad_token", "</s>");
        s.write(out.path(), 128).unwrap();
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(TOKENIZER_CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(back["chat_template"], "{{ x }}");
        assert_eq!((back["eos_token"].as_str(), back["pad_token"].as_str()), (Some("</s>"), Some("</s>")));
        assert_eq!(SpecialTokens::read(out.path()).unwrap().get("pad_token"), Some("</s>"));
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), r#"{"eos_token": 3}"#).unwrap();
        let e = SpecialTokens::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains(TOKENIZER_CONFIG_FILE) && e.contains("eos_token"), "{e}");
    }
}
