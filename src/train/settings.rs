//! Settings as layers of JSON values: defaults ← a settings file ← flags (and, on resume, the
//! run's saved settings in place of the defaults). Every layer is a partial tree merged over
//! the one below it, so a file may give one field of a table and keep the rest; the merged
//! tree is then read with unknown keys refused, so a misspelt setting is an error naming it.
//!
//! Settings files may use this crate's names (`group_size`, `objective.eps_high`, …) or TRL's
//! `GRPOConfig` / `TrainingArguments` names (`num_generations`, `epsilon_high`, `beta`,
//! `max_completion_length`, `per_device_train_batch_size`, …), so a TRL user's YAML runs;
//! [`translate_trl_names`] maps them, and names that have no meaning here (`report_to`, …, and
//! `bf16` / `tf32`, which are the `--dtype` / `--matmul-precision` flags here) are dropped with
//! a note rather than refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dapo_config::DapoConfig;
use crate::error::{Error, Result};

/// Where a run's model, data and rewards come from: the part of `dapo train`'s settings that
/// the library trainer does not see. Saved with every checkpoint so `--resume` needs no flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSources {
    /// The policy's checkpoint directory; `None` for the built-in default.
    pub model: Option<PathBuf>,
    /// The tokenizer, when not the checkpoint's own (a `tokenizer.json` or a directory).
    pub tokenizer: Option<PathBuf>,
    /// The task file (JSONL).
    pub dataset: Option<PathBuf>,
    /// The held-out task file.
    pub eval_dataset: Option<PathBuf>,
    /// Reward mixer weights; `None`: the seed's weights.
    pub reward_mixer: Option<PathBuf>,
    /// Use the built-in math scorer; `None`: only when no other scorer is given.
    pub math_scorer: Option<bool>,
    /// Judge models (GPT2ForSequenceClassification directories), each a reward source.
    pub judge_models: Vec<PathBuf>,
    /// External scorer command lines, each a reward source.
    pub scorer_cmds: Vec<String>,
    /// Seconds an external scorer may take per batch.
    pub scorer_timeout: f64,
    /// Skip malformed dataset lines instead of stopping.
    pub skip_bad_lines: bool,
    /// SFT warm-start steps of the built-in default.
    pub warmup_sft_steps: u64,
}

impl Default for RunSources {
    fn default() -> Self {
        RunSources {
            model: None,
            tokenizer: None,
            dataset: None,
            eval_dataset: None,
            reward_mixer: None,
            math_scorer: None,
            judge_models: Vec::new(),
            scorer_cmds: Vec::new(),
            scorer_timeout: 60.0,
            skip_bad_lines: false,
            warmup_sft_steps: 900,
        }
    }
}

/// Everything `dapo train` runs with: where things come from, and the trainer's settings.
/// Written flat: the two parts' keys are disjoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainSettings {
    /// Model, data and reward sources.
    pub sources: RunSources,
    /// The trainer's settings.
    pub trainer: DapoConfig,
}

impl TrainSettings {
    /// The flat JSON tree of both parts, with f32 settings written as their shortest decimal
    /// (`0.999`, not the f64 expansion `0.9990000128746033` of the f32 value).
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(&self.trainer).expect("settings serialise");
        merge(&mut v, &serde_json::to_value(&self.sources).expect("settings serialise"));
        tidy_floats(&mut v);
        v
    }

    /// Reads a flat tree (see [`TrainSettings::to_value`]); unknown keys and bad values are
    /// errors, with `origin` (a file, or "the command line") in the message.
    pub fn from_value(v: &Value, origin: &str) -> Result<Self> {
        let source_keys = object_keys(&serde_json::to_value(RunSources::default()).expect("settings serialise"));
        let Value::Object(all) = v else {
            return Err(Error::Invalid(format!("{origin}: settings must be a table of keys")));
        };
        let (mut src, mut tr) = (Map::new(), Map::new());
        for (k, x) in all {
            if source_keys.contains(k) {
                src.insert(k.clone(), x.clone());
            } else {
                tr.insert(k.clone(), x.clone());
            }
        }
        let sources: RunSources = from_tree(Value::Object(src), origin)?;
        let trainer: DapoConfig = from_tree(Value::Object(tr), origin)?;
        Ok(TrainSettings { sources, trainer })
    }
}

/// Rewrites every number that is an f32 value widened to f64 as the f64 nearest to that f32's
/// shortest decimal, which reads back to the same f32.
fn tidy_floats(v: &mut Value) {
    match v {
        Value::Object(o) => o.values_mut().for_each(tidy_floats),
        Value::Array(a) => a.iter_mut().for_each(tidy_floats),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().expect("an f64");
            let f = x as f32;
            if f64::from(f) == x && f.is_finite() {
                if let Some(t) = format!("{f}").parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    *n = t;
                }
            }
        }
        _ => {}
    }
}

/// Deserialises a settings tree; the error names the setting's dotted path (a NaN or an
/// infinity in a YAML or TOML file arrives here as `null`, which the message says).
pub fn from_tree<T: serde::de::DeserializeOwned>(v: Value, origin: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let hint = if inner.contains("invalid type: null") { " (NaN and infinities are not settings)" } else { "" };
        Error::Invalid(format!("{origin}: `{path}`: {inner}{hint}"))
    })
}

fn object_keys(v: &Value) -> Vec<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

/// Parses a settings file by extension (`.toml`, `.yaml`/`.yml`, `.json`) into a tree, with
/// TRL's names translated ([`translate_trl_names`]). Returns the tree and the notes about
/// keys that were dropped. Errors name the file.
pub fn read_settings(path: &Path) -> Result<(Value, Vec<String>)> {
    let v = read_tree(path)?;
    translate_trl_names(v).map_err(|m| Error::config(path, m))
}

/// A TOML, YAML or JSON file as a JSON tree, by extension, read by
/// [`crate::util::settings_file`]; a file whose top level is not a table is an error naming it.
pub fn read_tree(path: &Path) -> Result<Value> {
    let v: Value = crate::util::settings_file::read(path)?;
    match v {
        Value::Object(_) => Ok(v),
        // An empty YAML document.
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(Error::config(path, format!("expected a table of settings, got {other}"))),
    }
}

/// Merges `over` into `base`: tables merge key by key (recursively), anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Sets the dotted `path` (`objective.eps_high`) of `tree` to `value`, creating tables.
pub fn set_path(tree: &mut Value, path: &str, value: Value) {
    let mut at = tree;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let obj = at.as_object_mut().expect("just made an object");
        if parts.peek().is_none() {
            obj.insert(p.to_string(), value);
            return;
        }
        at = obj.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The leaves of `v` as (dotted path, value), in key order.
pub fn leaves(v: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(o) if !o.is_empty() => {
                for (k, x) in o {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, x, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// The leaves whose value differs between `old` and `new`: (path, old, new). A leaf present
/// in only one of them counts with `null` on the other side.
pub fn changes(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    let (a, b) = (leaves(old), leaves(new));
    let find = |l: &[(String, Value)], k: &str| l.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let mut keys: Vec<String> = a.iter().chain(&b).map(|(p, _)| p.clone()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (find(&a, &k).unwrap_or(Value::Null), find(&b, &k).unwrap_or(Value::Null));
            (x != y).then_some((k, x, y))
        })
        .collect()
}

/// TRL / transformers names with a direct home here: (TRL name, dotted path).
const TRL_RENAMES: &[(&str, &str)] = &[
    ("num_generations", "group_size"),
    ("max_steps", "steps"),
    ("epsilon_high", "objective.eps_high"),
    ("beta", "objective.beta"),
    ("kl_coef", "objective.beta"),
    ("loss_type", "objective.loss_type"),
    ("importance_sampling_level", "objective.importance_sampling_level"),
    ("delta", "objective.delta"),
    ("clip_ratio_c", "objective.clip_ratio_c"),
    ("kl_estimator", "objective.kl_estimator"),
    ("use_bias_correction_kl", "objective.use_bias_correction_kl"),
    ("entropy_coef", "objective.entropy_coef"),
    ("top_entropy_quantile", "objective.top_entropy_quantile"),
    ("sapo_temperature_pos", "objective.sapo_temperature_pos"),
    ("sapo_temperature_neg", "objective.sapo_temperature_neg"),
    ("vespo_k_pos", "objective.vespo_k_pos"),
    ("vespo_lambda_pos", "objective.vespo_lambda_pos"),
    ("vespo_k_neg", "objective.vespo_k_neg"),
    ("vespo_lambda_neg", "objective.vespo_lambda_neg"),
    ("clip_ratio_low", "objective.eps_low"),
    ("clip_ratio_high", "objective.eps_high"),
    ("max_completion_length", "sampling.max_new_tokens"),
    ("max_new_tokens", "sampling.max_new_tokens"),
    ("temperature", "sampling.temperature"),
    ("top_p", "sampling.top_p"),
    ("top_k", "sampling.top_k"),
    ("stop_token_ids", "sampling.stop_token_ids"),
    ("stop_strings", "sampling.stop_strings"),
    ("mask_truncated_completions", "mask_truncated"),
    ("save_steps", "save_every"),
    ("eval_steps", "eval_every"),
    ("weight_decay", "adamw.weight_decay"),
    ("adam_beta1", "adamw.beta1"),
    ("adam_beta2", "adamw.beta2"),
    ("adam_epsilon", "adamw.eps"),
    ("model_name_or_path", "model"),
    ("dataset_name", "dataset"),
];

/// TRL / transformers settings that do not apply to this trainer (precision, logging
/// integrations, hub uploads, dataloader knobs): dropped with a note.
const TRL_IGNORED: &[&str] = &[
    "bf16",
    "fp16",
    "tf32",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "logging_first_step",
    "logging_dir",
    "logging_strategy",
    "run_name",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "save_strategy",
    "save_only_model",
    "eval_strategy",
    "evaluation_strategy",
    "per_device_eval_batch_size",
    "num_generations_eval",
    "log_level",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "remove_unused_columns",
    "model_init_kwargs",
    "disable_dropout",
    "ds3_gather_for_generation",
    "torch_compile",
    "overwrite_output_dir",
    "do_train",
    "do_eval",
    "ddp_find_unused_parameters",
    "use_liger_kernel",
    "use_liger_loss",
    "cast_lm_head_to_fp32",
    "torch_dtype",
    "dtype",
    "attn_implementation",
    "trust_remote_code",
    "pad_to_multiple_of",
    "optim",
];

/// Rewrites TRL's names into this crate's (see the module docs): plain renames, `epsilon`
/// (both clip bounds unless `epsilon_high` is given, as in TRL), `scale_rewards`
/// (`true`/`"group"`, `"batch"`, `false`/`"none"`), `warmup_ratio`, and TRL's batch layout
/// (`per_device_train_batch_size`, `gradient_accumulation_steps`, `steps_per_generation`,
/// `generation_batch_size`, in completions) into prompts per step, minibatches and
/// micro-batches. Returns the tree and notes on dropped keys; an error when a name and its
/// TRL alias are both given, or the batch layout does not divide.
pub fn translate_trl_names(v: Value) -> std::result::Result<(Value, Vec<String>), String> {
    let Value::Object(mut top) = v else { return Ok((v, Vec::new())) };
    let mut notes = Vec::new();
    let mut out = Value::Object(Map::new());
    let mut given: Vec<String> = Vec::new();
    let put = |out: &mut Value, given: &mut Vec<String>, from: &str, path: &str, x: Value| {
        if given.iter().any(|p| p == path) {
            return Err(format!("`{from}` sets `{path}`, which another key of the file sets too"));
        }
        given.push(path.to_string());
        set_path(out, path, x);
        Ok(())
    };

    // TRL's batch layout, counted in completions.
    let layout_keys =
        ["per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size"];
    if layout_keys.iter().any(|k| top.contains_key(*k)) {
        let num = |top: &Map<String, Value>, k: &str| -> std::result::Result<Option<u64>, String> {
            top.get(k)
                .map(|x| {
                    x.as_u64().filter(|&n| n > 0).ok_or_else(|| format!("`{k}` must be a positive integer, got {x}"))
                })
                .transpose()
        };
        let per_device = num(&top, "per_device_train_batch_size")?.unwrap_or(8);
        let accum = num(&top, "gradient_accumulation_steps")?.unwrap_or(1);
        let spg = num(&top, "steps_per_generation")?.unwrap_or(accum);
        let gen_batch = num(&top, "generation_batch_size")?.unwrap_or(per_device * spg);
        let g = match (top.get("num_generations"), top.get("group_size")) {
            (Some(x), _) | (None, Some(x)) => {
                x.as_u64().ok_or_else(|| format!("`num_generations` must be an integer, got {x}"))?
            }
            (None, None) => DapoConfig::default().group_size as u64,
        };
        if spg % accum != 0 {
            return Err(format!(
                "steps_per_generation ({spg}) must be a multiple of gradient_accumulation_steps ({accum})"
            ));
        }
        if g == 0 || gen_batch % g != 0 {
            return Err(format!(
                "the generation batch ({gen_batch} completions = per_device_train_batch_size × steps_per_generation) \
                 must be a multiple of num_generations ({g})"
            ));
        }
        for k in layout_keys {
            top.remove(k);
        }
        put(&mut out, &mut given, "per_device_train_batch_size", "micro_batch_size", Value::from(per_device))?;
        put(&mut out, &mut given, "steps_per_generation", "mini_batches", Value::from(spg / accum))?;
        put(&mut out, &mut given, "generation_batch_size", "batch_size", Value::from(gen_batch / g))?;
    }
    if let Some(eps) = top.remove("epsilon") {
        put(&mut out, &mut given, "epsilon", "objective.eps_low", eps.clone())?;
        if !top.contains_key("epsilon_high") {
            put(&mut out, &mut given, "epsilon", "objective.eps_high", eps)?;
        }
    }
    if let Some(x) = top.remove("clip_ratio") {
        put(&mut out, &mut given, "clip_ratio", "objective.eps_low", x.clone())?;
        put(&mut out, &mut given, "clip_ratio", "objective.eps_high", x)?;
    }
    if let Some(x) = top.remove("scale_rewards") {
        let s = match &x {
            Value::Bool(true) => "group",
            Value::Bool(false) => "none",
            Value::String(s) if matches!(s.as_str(), "group" | "batch" | "none") => s.as_str(),
            other => return Err(format!("`scale_rewards` must be group, batch, none, true or false, got {other}")),
        };
        put(&mut out, &mut given, "scale_rewards", "advantage.scaling", Value::from(s))?;
    }
    if let Some(x) = top.remove("warmup_ratio") {
        let r = x
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or(format!("`warmup_ratio` must be in [0, 1], got {x}"))?;
        let steps =
            top.get("max_steps").or(top.get("steps")).and_then(Value::as_u64).unwrap_or(DapoConfig::default().steps);
        put(&mut out, &mut given, "warmup_ratio", "warmup_steps", Value::from((r * steps as f64).ceil() as u64))?;
    }
    // transformers' integrations this crate does not have (wandb, mlflow, …) are dropped with a
    // note; the ones it has (tensorboard, and its own csv / jsonl) are kept.
    if let Some(x) = top.remove("report_to") {
        let names: Vec<String> = match &x {
            Value::String(s) => s.split(',').map(|n| n.trim().to_lowercase()).collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(|n| n.trim().to_lowercase()).collect(),
            Value::Null => Vec::new(),
            other => return Err(format!("`report_to` must be a name or a list of names, got {other}")),
        };
        let known = crate::report::reporters::NAMES;
        let (kept, dropped): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| known.contains(&n.as_str()));
        if !dropped.is_empty() {
            notes.push(format!(
                "`report_to`: {} not available here (ignored); this crate reports to {}",
                dropped.join(", "),
                known.join(", ")
            ));
        }
        let v = if kept.is_empty() { "jsonl".to_string() } else { kept.join(",") };
        put(&mut out, &mut given, "report_to", "report_to", Value::from(v))?;
    }
    if let Some(x) = top.remove("use_vllm") {
        if x != Value::Bool(false) {
            return Err("`use_vllm` is not supported: rollouts run in-process on the trainer's device".into());
        }
    }
    for (k, x) in std::mem::take(&mut top) {
        if let Some((_, path)) = TRL_RENAMES.iter().find(|(name, _)| *name == k) {
            put(&mut out, &mut given, &k, path, x)?;
        } else if TRL_IGNORED.contains(&k.as_str()) {
            // Precision is a device flag here, as `--device` is, not a saved setting.
            let flag = match k.as_str() {
                "bf16" | "fp16" => " (precision is the --dtype flag: bf16 on a GPU unless --dtype f32)",
                "tf32" => " (the --matmul-precision flag: tf32 on a GPU unless --matmul-precision f32)",
                _ => "",
            };
            notes.push(format!("`{k}` has no effect here (ignored){flag}"));
        } else {
            // A native name (`group_size`, or a table such as `[objective]` beside TRL names
            // that filled parts of it): each leaf may be set once.
            for (p, _) in leaves(&serde_json::json!({ k.clone(): x.clone() })) {
                if given.contains(&p) {
                    return Err(format!("`{p}` is set twice (once under a TRL name)"));
                }
                given.push(p);
            }
            let mut tree = serde_json::json!({ k: x });
            merge(&mut tree, &out);
            out = tree;
        }
    }
    Ok((out, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_the_rest_of_a_partial_table() {
        let mut base = json!({"a": 1, "t": {"x": 1, "y": 2}});
        merge(&mut base, &json!({"t": {"y": 5}, "b": [1]}));
        assert_eq!(base, json!({"a": 1, "t": {"x": 1, "y": 5}, "b": [1]}));
        assert_eq!(
            changes(&json!({"t": {"x": 1}}), &json!({"t": {"x": 2}, "n": null})),
            vec![("t.x".to_string(), json!(1), json!(2))]
        );
    }

    #[test]
    fn trl_report_to_keeps_what_exists_here() {
        let (v, notes) = translate_trl_names(json!({"report_to": ["wandb", "tensorboard"]})).unwrap();
        assert_eq!(v["report_to"], "tensorboard");
        assert!(notes.iter().any(|n| n.contains("wandb")), "{notes:?}");
        let (v, _) = translate_trl_names(json!({"report_to": "wandb"})).unwrap();
        assert_eq!(v["report_to"], "jsonl", "nothing usable left: the default");
    }

    #[test]
    fn trl_names_translate() {
        let (v, notes) = translate_trl_names(json!({
            "num_generations": 4, "epsilon": 0.2, "beta": 0.04, "max_completion_length": 64,
            "scale_rewards": false, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
            "steps_per_generation": 4, "bf16": true, "objective": {"entropy_coef": 0.01}
        }))
        .unwrap();
        assert_eq!(v["group_size"], 4);
        assert_eq!((v["objective"]["eps_low"].clone(), v["objective"]["eps_high"].clone()), (json!(0.2), json!(0.2)));
        assert_eq!(v["objective"]["beta"], 0.04);
        assert_eq!(v["objective"]["entropy_coef"], 0.01);
        assert_eq!(v["sampling"]["max_new_tokens"], 64);
        assert_eq!(v["advantage"]["scaling"], "none");
        // 8 × 4 = 32 completions a generation = 8 prompts of 4; 2 optimizer steps of 2 × 8.
        assert_eq!(
            (v["batch_size"].clone(), v["mini_batches"].clone(), v["micro_batch_size"].clone()),
            (json!(8), json!(2), json!(8))
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let e = translate_trl_names(json!({"num_generations": 4, "group_size": 4})).unwrap_err();
        assert!(e.contains("group_size"), "{e}");
        let (v, _) = translate_trl_names(json!({"epsilon": 0.1, "epsilon_high": 0.3})).unwrap();
        assert_eq!((v["objective"]["eps_low"].clone(), v["objective"]["eps_high"].clone()), (json!(0.1), json!(0.3)));
    }
}
