//! GPT-2 hyperparameters, read from and written to a transformers `config.json`.

use super::grn::GrnConfig;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The architecture of a GPT-2 model (what `config.json` says about it).
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    /// V: vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (learned position embeddings).
    pub n_positions: usize,
    /// C: channels.
    pub n_embd: usize,
    /// L: transformer blocks.
    pub n_layer: usize,
    /// NH: attention heads; C must divide evenly.
    pub n_head: usize,
    /// Layer-norm epsilon.
    pub layer_norm_epsilon: f32,
    /// Beginning-of-sequence token id (GPT-2 uses the same id as end-of-sequence), if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (`eos_token_id` in config.json: an int or a list); rollouts
    /// stop at any of them. Empty when the config names none.
    pub eos_token_ids: Vec<u32>,
    /// Global Response Normalization in front of the heads (`grn` in config.json, the seed's
    /// `GRNConfig`); off unless the config enables it. With the policy head enabled the model
    /// holds `grn.gamma` / `grn.beta` and applies the causal form between ln_f and the lm_head.
    pub grn: GrnConfig,
}

/// Architectures a name given to `--init` can stand for.
pub const NAMED_CONFIGS: &[&str] = &["tiny", "small", "gpt2", "gpt2-medium"];

impl Gpt2Config {
    /// A named architecture with the given vocabulary size: `tiny` (2 layers, C=64),
    /// `small` (4 layers, C=128), `gpt2` (124M shape), `gpt2-medium` (350M shape). It names
    /// no special tokens; [`Gpt2Config::with_eos`] sets them from the tokenizer.
    pub fn named(name: &str, vocab_size: usize) -> Result<Self> {
        let (n_layer, n_head, n_embd, n_positions) = match name {
            "tiny" => (2, 4, 64, 128),
            "small" => (4, 4, 128, 256),
            "gpt2" => (12, 12, 768, 1024),
            "gpt2-medium" => (24, 16, 1024, 1024),
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown model config `{name}`; expected one of {}",
                    NAMED_CONFIGS.join(", ")
                )))
            }
        };
        let cfg = Gpt2Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            layer_norm_epsilon: 1e-5,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            grn: GrnConfig::default(),
        };
        cfg.validate().map_err(Error::Invalid)?;
        Ok(cfg)
    }

    /// The same architecture with `eos` as both BOS and EOS (GPT-2's convention), e.g. the
    /// tokenizer's `<|endoftext|>`; `None` clears both.
    pub fn with_eos(mut self, eos: Option<u32>) -> Self {
        self.bos_token_id = eos;
        self.eos_token_ids = eos.into_iter().collect();
        self
    }

    /// Checks the invariants the kernels rely on; the message names the offending field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return Err(format!("`n_embd` ({}) is not divisible by `n_head` ({})", self.n_embd, self.n_head));
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(format!("`layer_norm_epsilon` must be positive, got {}", self.layer_norm_epsilon));
        }
        self.grn.validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads a transformers `config.json`. Architecture fields are required; fields this
    /// implementation cannot honour (another activation, untied lm_head, cross-attention)
    /// are rejected rather than silently ignored.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::config(path, format!("invalid JSON: {e}")))?;
        Self::from_json(&v).map_err(|msg| Error::config(path, msg))
    }

    /// Parses a `config.json` value; the error says which field is missing or wrong.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let obj = v.as_object().ok_or("expected a JSON object")?;
        let req = |names: &[&str]| -> std::result::Result<usize, String> {
            for n in names {
                if let Some(x) = obj.get(*n) {
                    return x
                        .as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| format!("`{n}` must be a non-negative integer, got {x}"));
                }
            }
            Err(format!("missing required field `{}`", names[0]))
        };
        let opt_str = |n: &str| obj.get(n).and_then(|x| x.as_str());
        if let Some(mt) = opt_str("model_type") {
            if mt != "gpt2" {
                return Err(format!("`model_type` is `{mt}`; only `gpt2` is supported"));
            }
        }
        if let Some(act) = opt_str("activation_function") {
            if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
                return Err(format!(
                    "`activation_function` `{act}` is not supported (GPT-2's tanh GELU: gelu_new / gelu_pytorch_tanh)"
                ));
            }
        }
        if obj.get("tie_word_embeddings").and_then(|x| x.as_bool()) == Some(false) {
            return Err("`tie_word_embeddings` is false; only GPT-2's tied lm_head is supported".into());
        }
        if obj.get("add_cross_attention").and_then(|x| x.as_bool()) == Some(true) {
            return Err("`add_cross_attention` is not supported".into());
        }
        if obj.get("scale_attn_by_inverse_layer_idx").and_then(|x| x.as_bool()) == Some(true) {
            return Err("`scale_attn_by_inverse_layer_idx` is not supported".into());
        }
        let n_embd = req(&["n_embd", "hidden_size"])?;
        if let Some(inner) = obj.get("n_inner").filter(|x| !x.is_null()) {
            if inner.as_u64() != Some(4 * n_embd as u64) {
                return Err(format!("`n_inner` {inner} is not supported (only 4·n_embd = {})", 4 * n_embd));
            }
        }
        let eps = match obj.get("layer_norm_epsilon") {
            None => 1e-5,
            Some(x) => x.as_f64().ok_or_else(|| format!("`layer_norm_epsilon` must be a number, got {x}"))? as f32,
        };
        let vocab_size = req(&["vocab_size"])?;
        let cfg = Gpt2Config {
            vocab_size,
            n_positions: req(&["n_positions", "n_ctx", "max_position_embeddings"])?,
            n_embd,
            n_layer: req(&["n_layer", "num_hidden_layers"])?,
            n_head: req(&["n_head", "num_attention_heads"])?,
            layer_norm_epsilon: eps,
            bos_token_id: token_ids(obj.get("bos_token_id"), "bos_token_id")?.first().copied(),
            eos_token_ids: token_ids(obj.get("eos_token_id"), "eos_token_id")?,
            grn: match obj.get("grn") {
                None | Some(Value::Null) => GrnConfig::default(),
                Some(g) => serde_json::from_value(g.clone()).map_err(|e| format!("`grn`: {e}"))?,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `config.json` that transformers' `GPT2LMHeadModel.from_pretrained` loads as is
    /// (an enabled `grn` is one more key, which transformers keeps as an attribute).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": null,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": 0.02,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": token_ids_json(&self.eos_token_ids),
            "torch_dtype": "float32",
        });
        if self.grn.enabled {
            v["grn"] = serde_json::to_value(self.grn).expect("GRN settings serialise");
        }
        v
    }

    /// HS: channels per head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// A special-token field of a transformers config (`eos_token_id` and friends): absent or
/// null (none), a non-negative integer, or a list of them.
pub fn token_ids(v: Option<&Value>, field: &str) -> std::result::Result<Vec<u32>, String> {
    let one = |x: &Value| {
        x.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| format!("`{field}` must be a token id (a non-negative integer) or a list of them, got {x}"))
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(xs)) => xs.iter().map(one).collect(),
        Some(x) => Ok(vec![one(x)?]),
    }
}

/// The JSON form transformers writes: null, one id, or a list.
pub fn token_ids_json(ids: &[u32]) -> Value {
    match ids {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}
