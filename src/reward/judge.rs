//! A judge-model scorer: a frozen GPT-2 with a linear scoring head, in the layout of
//! transformers' `GPT2ForSequenceClassification`, scores prompt + completion.
//!
//! # The model directory
//!
//! * `config.json`: a GPT-2 config (read by [`load_config`]); `pad_token_id` (optional) and
//!   `id2label` (optional, for the metric names of a multi-label head) are read here too.
//! * `model.safetensors`: the GPT-2 weights (`transformer.`-prefixed or not, f32/f16/bf16, as
//!   for [`load_model`]) plus `score.weight` of shape (num_labels, n_embd) and **no bias**
//!   (transformers' head has none, so a `score.bias` is rejected rather than ignored).
//! * `tokenizer.json`.
//! * Optionally a GRN on the score head's input: `grn` in `config.json` with `enabled` and
//!   `apply_to_value`, and `value_grn.gamma` / `value_grn.beta` (each `[n_embd]`) in
//!   `model.safetensors`. The head reads a whole text, so this GRN is the sequence-wide form:
//!   its statistic runs over the text's tokens up to the scored position (padding excluded).
//!
//! # What is computed
//!
//! The text `prompt + completion` is tokenized (no special tokens added). Its score is
//! `h · score.weightᵀ`, where `h` is the final-layer-norm hidden state at the *last
//! non-padding token*, which is how transformers picks the position:
//! - with a `pad_token_id` in `config.json`, the last position whose id is not the pad id (so
//!   trailing `<|endoftext|>` tokens are skipped when pad = EOS, as in GPT-2 reward models),
//!   or position 0 when every id is the pad id;
//! - without one, the last position.
//!
//! Since attention is causal, tokens after that position cannot change `h`, so they are
//! dropped before the forward pass, and texts are batched by right-padding (with id 0) to the
//! longest text of a micro-batch: the result equals scoring each text alone. A text longer
//! than the judge's context (`n_positions`) keeps its **last** `n_positions` tokens, where the
//! completion and its answer are (transformers would fail instead); an empty text is an error.
//!
//! # Metrics
//!
//! With one label (a scalar judge), one metric named `judge` by default
//! ([`JudgeScorer::with_metric_name`]). With `num_labels > 1`, one metric per label,
//! `<name>.<label>`, where `<label>` is `config.json`'s `id2label` entry or the index.

use crate::backend::{GrnParams, GrnSeqStats, Masked};
use std::path::Path;

use serde_json::Value;

use super::scorer::{Metrics, ScoreInput, Scorer};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Dtype, Gemm, GrnShape};
use crate::checkpoint::model_dir::{CONFIG_FILE, WEIGHTS_FILE};
use crate::checkpoint::{load_config, load_model, TensorFile};
use crate::error::{read_to_string, Error, Result};
use crate::model::grn::{Head, BETA, GAMMA};
use crate::model::Gpt2;
use crate::tokenizer::Tokenizer;

/// The name of the scoring head's weight in `model.safetensors`.
pub const SCORE_WEIGHT: &str = "score.weight";
/// The default metric name.
pub const DEFAULT_METRIC: &str = "judge";
/// The default number of texts per forward pass.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// Reads `score.weight` from the safetensors file `path`, checked to be (num_labels, `n_embd`)
/// with num_labels ≥ 1 and finite values; returns the values (row-major) and num_labels.
pub fn load_score_weight(path: &Path, n_embd: usize) -> Result<(Vec<f32>, usize)> {
    let file = TensorFile::open(path)?;
    if !file.contains(SCORE_WEIGHT) {
        return Err(Error::tensor(
            path,
            SCORE_WEIGHT,
            format!(
                "missing: a judge model needs the scoring head of a GPT2ForSequenceClassification checkpoint, \
                 shape [num_labels, {n_embd}]"
            ),
        ));
    }
    if file.contains("score.bias") {
        return Err(Error::tensor(
            path,
            "score.bias",
            "the scoring head has a bias, which GPT2ForSequenceClassification does not; it is not supported",
        ));
    }
    let (values, shape) = file.f32(SCORE_WEIGHT, None)?;
    if shape.len() != 2 || shape[0] == 0 || shape[1] != n_embd {
        return Err(Error::tensor(path, SCORE_WEIGHT, format!("shape {shape:?}, expected [num_labels, {n_embd}]")));
    }
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(Error::tensor(path, SCORE_WEIGHT, format!("value {} at index {i} is not finite", values[i])));
    }
    Ok((values, shape[0]))
}

/// A frozen GPT-2 judge with a linear scoring head; see the [module docs](self).
pub struct JudgeScorer<K: Backend = CpuBackend> {
    name: String,
    metric_names: Vec<String>,
    labels: Vec<String>,
    model: Gpt2<K>,
    tokenizer: Tokenizer,
    /// `score.weight` (num_labels, C) on the backend.
    score_weight: K::Buf,
    /// The score head's GRN: γ, β (C) on the backend and eps, when the config applies one.
    value_grn: Option<(K::Buf, K::Buf, f32)>,
    pad_token_id: Option<u32>,
    max_batch: usize,
}

impl JudgeScorer<CpuBackend> {
    /// Loads the judge in `dir` onto a CPU backend using every core.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, CpuBackend::new(None))
    }
}

impl<K: Backend> JudgeScorer<K> {
    /// Loads the judge in `dir` onto `backend`. A missing file, a bad config, a missing or
    /// misshapen tensor are errors naming the file (and the tensor).
    pub fn load_on(dir: &Path, backend: K) -> Result<Self> {
        let model = load_model(dir, backend)?;
        let cfg = load_config(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let (w, num_labels) = load_score_weight(&weights, cfg.n_embd)?;
        let config_path = dir.join(CONFIG_FILE);
        let raw: Value = serde_json::from_str(&read_to_string(&config_path)?)
            .map_err(|e| Error::config(&config_path, format!("invalid JSON: {e}")))?;
        let pad_token_id = match raw.get("pad_token_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| {
                Error::config(&config_path, format!("`pad_token_id` must be a non-negative integer or null, got {v}"))
            })?),
        };
        let labels = labels_of(&raw, num_labels, &config_path, &weights)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(Error::config(
                &config_path,
                format!(
                    "vocab_size {} is smaller than the tokenizer's {} ids ({})",
                    cfg.vocab_size,
                    tokenizer.vocab_size(),
                    tokenizer.source().display()
                ),
            ));
        }
        let score_weight = model.backend().upload(&w);
        let value_grn = load_value_grn(&weights, &cfg)?
            .map(|(g, b)| (model.backend().upload(&g), model.backend().upload(&b), cfg.grn.eps));
        let mut judge = JudgeScorer {
            name: format!("judge {}", dir.display()),
            metric_names: Vec::new(),
            labels,
            model,
            tokenizer,
            score_weight,
            value_grn,
            pad_token_id,
            max_batch: DEFAULT_MAX_BATCH,
        };
        judge.set_metric_names(DEFAULT_METRIC);
        Ok(judge)
    }

    fn set_metric_names(&mut self, metric: &str) {
        self.metric_names = if self.labels.len() == 1 {
            vec![metric.to_string()]
        } else {
            self.labels.iter().map(|l| format!("{metric}.{l}")).collect()
        };
    }

    /// Names the metric (default `judge`; with several labels, the prefix of each name).
    pub fn with_metric_name(mut self, name: impl Into<String>) -> Self {
        self.set_metric_names(&name.into());
        self
    }

    /// Texts per forward pass (default [`DEFAULT_MAX_BATCH`]; at least 1). Larger batches are
    /// faster and need activation memory for `max_batch × longest text` tokens.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// The number of outputs of the scoring head.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// The pad id used to find the last real token (`config.json`'s `pad_token_id`).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// The judge's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The position whose hidden state is scored, for `ids` as transformers picks it.
    fn last_index(&self, ids: &[u32]) -> usize {
        match self.pad_token_id {
            Some(pad) => ids.iter().rposition(|&id| id != pad).unwrap_or(0),
            None => ids.len() - 1,
        }
    }

    /// The scores of already tokenized texts: one row of [`num_labels`](Self::num_labels)
    /// values per text. Each text must be non-empty; see the [module docs](self) for the
    /// position scored and the truncation of long texts.
    pub fn score_ids(&mut self, texts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let n_ctx = self.model.config().n_positions;
        let mut inputs = Vec::with_capacity(texts.len());
        for (i, ids) in texts.iter().enumerate() {
            if ids.is_empty() {
                return Err(Error::Invalid(format!("{}: text {i} is empty; there is nothing to score", self.name)));
            }
            let end = self.last_index(ids) + 1;
            inputs.push(&ids[end.saturating_sub(n_ctx)..end]);
        }
        let (c, l) = (self.model.config().n_embd, self.labels.len());
        let mut out = Vec::with_capacity(texts.len());
        for chunk in inputs.chunks(self.max_batch) {
            let (b, t) = (chunk.len(), chunk.iter().map(|x| x.len()).max().unwrap_or(1));
            // Right padding: the padded positions come after each text's scored position, so
            // causal attention keeps them out of its hidden state.
            let mut ids = vec![0u32; b * t];
            for (row, x) in chunk.iter().enumerate() {
                ids[row * t..row * t + x.len()].copy_from_slice(x);
            }
            let (w, grn) = (&self.score_weight, &self.value_grn);
            let scores = self.model.forward_hidden(&ids, b, t, |h| {
                let k = h.backend;
                // The score head reads ln_f's output (a policy GRN belongs to the lm_head),
                // through its own sequence-wide GRN over each text's real positions.
                let normed = grn.as_ref().map(|(gamma, beta, eps)| {
                    let mut mask = vec![0.0f32; b * t];
                    for (row, x) in chunk.iter().enumerate() {
                        mask[row * t..row * t + x.len()].fill(1.0);
                    }
                    let gs = GrnShape { b, t, c, eps: *eps };
                    let (mut out, mut g, mut mean, mut n) =
                        (k.alloc(b * t * c), k.alloc(b * c), k.alloc(b), k.alloc(b * c));
                    // The GRN computes in f32; in bf16 mixed precision ln_f's output is bf16.
                    let widened = (k.dtype(h.final_hidden) != Dtype::F32).then(|| {
                        let mut x = k.alloc(b * t * c);
                        k.copy(&mut x, h.final_hidden);
                        x
                    });
                    k.grn_sequence_forward(
                        &mut out,
                        GrnSeqStats { g: &mut g, mean: &mut mean, n: &mut n },
                        Masked { x: widened.as_ref().unwrap_or(h.final_hidden), mask: &k.upload(&mask) },
                        GrnParams { gamma, beta },
                        gs,
                    );
                    out
                });
                let hidden = normed.as_ref().unwrap_or(h.final_hidden);
                // Gather each text's last hidden row, then one (B, C)·(L, C)ᵀ product.
                let mut rows = h.backend.alloc_as(b * c, h.backend.dtype(hidden));
                for (row, x) in chunk.iter().enumerate() {
                    h.backend.copy_range(&mut rows, row * c, hidden, (row * t + x.len() - 1) * c, c);
                }
                let mut s = h.backend.alloc(b * l);
                h.backend.matmul(&mut s, &rows, w, None, Gemm::nt(b, l, c));
                h.backend.download(&s)
            })?;
            out.extend(scores.chunks(l).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// The scores of `texts` (tokenized with the judge's tokenizer); see
    /// [`score_ids`](Self::score_ids).
    pub fn score_texts(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts.iter().map(|t| self.tokenizer.encode(t)).collect::<Result<Vec<_>>>()?;
        self.score_ids(&ids)
    }
}

/// The score head's GRN parameters (γ, β) from the safetensors file `path` when `cfg.grn`
/// applies one to the value head, each checked to be [n_embd] and finite; a file holding them
/// under a config that does not enable them is an error (they would be silently unused).
fn load_value_grn(path: &Path, cfg: &crate::model::Gpt2Config) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let file = TensorFile::open(path)?;
    let prefix = Head::Value.param_prefix();
    let names = [format!("{prefix}.{GAMMA}"), format!("{prefix}.{BETA}")];
    if !cfg.grn.applies_to(Head::Value) {
        return match names.iter().find(|n| file.contains(n)) {
            Some(n) => Err(Error::tensor(
                path,
                n.clone(),
                "present, but config.json does not enable `grn` with `apply_to_value`; it would be ignored",
            )),
            None => Ok(None),
        };
    }
    let mut out = Vec::with_capacity(2);
    for name in &names {
        if !file.contains(name) {
            return Err(Error::tensor(
                path,
                name.clone(),
                format!(
                    "missing: config.json enables a GRN on the score head, which needs {name} of shape [{}]",
                    cfg.n_embd
                ),
            ));
        }
        let (v, _) = file.f32(name, Some(&[cfg.n_embd]))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(path, name.clone(), format!("value {} at index {i} is not finite", v[i])));
        }
        out.push(v);
    }
    let beta = out.pop().expect("two tensors");
    Ok(Some((out.pop().expect("two tensors"), beta)))
}

/// The label names of a `num_labels`-row head: `config.json`'s `id2label` values by index
/// when present (their count must match the tensor), else the indices.
fn labels_of(raw: &Value, num_labels: usize, config_path: &Path, weights: &Path) -> Result<Vec<String>> {
    let mut labels: Vec<String> = (0..num_labels).map(|i| i.to_string()).collect();
    if let Some(map) = raw.get("id2label").and_then(Value::as_object) {
        if map.len() != num_labels {
            return Err(Error::tensor(
                weights,
                SCORE_WEIGHT,
                format!("has {num_labels} rows but {} lists {} labels in `id2label`", config_path.display(), map.len()),
            ));
        }
        for (k, v) in map {
            match (k.parse::<usize>(), v.as_str()) {
                (Ok(i), Some(name)) if i < num_labels => labels[i] = name.to_string(),
                _ => {
                    return Err(Error::config(
                        config_path,
                        format!("`id2label` entry {k:?}: {v} is not an index below {num_labels} with a string label"),
                    ))
                }
            }
        }
    }
    Ok(labels)
}

impl<K: Backend> Scorer for JudgeScorer<K> {
    fn name(&self) -> &str {
        &self.name
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        Some(self.metric_names.clone())
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        let mut ids = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            let text = format!("{}{}", item.prompt, item.completion);
            let x =
                self.tokenizer.encode(&text).map_err(|e| Error::Invalid(format!("{}: item {i}: {e}", self.name)))?;
            if x.is_empty() {
                return Err(Error::Invalid(format!("{}: item {i}: prompt and completion are both empty", self.name)));
            }
            ids.push(x);
        }
        let scores = self.score_ids(&ids)?;
        Ok(scores
            .into_iter()
            .map(|row| self.metric_names.iter().cloned().zip(row.into_iter().map(f64::from)).collect())
            .collect())
    }
}

impl<K: Backend> std::fmt::Debug for JudgeScorer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeScorer")
            .field("name", &self.name)
            .field("metric_names", &self.metric_names)
            .field("pad_token_id", &self.pad_token_id)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}
