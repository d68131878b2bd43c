//! The scorer interface: anything that turns (prompt, completion, task metadata) into named
//! metrics. Scorers know nothing about GEPA keys or weights; a
//! [`FeedbackMapping`](super::FeedbackMapping) renames their metrics and the
//! [`RewardMixer`](super::RewardMixer) weighs them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// One completion's metrics, by the scorer's own metric names.
pub type Metrics = BTreeMap<String, f64>;

/// One item to score.
#[derive(Clone, Copy, Debug)]
pub struct ScoreInput<'a> {
    /// The prompt the completion answers.
    pub prompt: &'a str,
    /// The sampled completion (without the prompt).
    pub completion: &'a str,
    /// The task's dataset record (its `answer`, `task_id` and any extra fields); `Value::Null`
    /// when there is none.
    pub metadata: &'a Value,
}

/// Scores a batch of completions.
///
/// A batch holds every completion of a step, group after group, so a scorer that compares the
/// completions of one prompt (or batches calls to a judge model) sees them together. It must
/// return exactly one [`Metrics`] per input, in order. Values may be any `f64`; non-finite ones
/// are dealt with by the mixer's `nan` policy rather than here, so a scorer need not guess.
pub trait Scorer {
    /// A short name for error messages and logs.
    fn name(&self) -> &str;

    /// The metric names this scorer produces, when it knows them up front. Used to report a
    /// mixer weight that no scorer can satisfy before training starts
    /// ([`RewardMixer::check_keys`](super::RewardMixer::check_keys)); `None` (the default)
    /// leaves that check to the mixer's first call.
    fn metric_names(&self) -> Option<Vec<String>> {
        None
    }

    /// Checks, when the dataset is loaded, that a task's record holds what this scorer needs
    /// (e.g. an `answer`), so a bad line is named by `file:line` before the first step rather
    /// than when it happens to be sampled. `Err` says what is missing. Default: anything goes.
    fn check_task(&self, _record: &Value) -> std::result::Result<(), String> {
        Ok(())
    }

    /// One [`Metrics`] per item of `batch`. Takes `&mut self` so stateful scorers (a child
    /// process, a cache, a judge model's buffers) need no interior mutability.
    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>>;
}

/// Calls `scorer` and checks that it returned one result per input, naming the scorer when
/// not: a short result would otherwise misalign every later reward with its completion.
pub fn score_checked<S: Scorer + ?Sized>(scorer: &mut S, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
    let out = scorer.score(batch)?;
    if out.len() != batch.len() {
        return Err(Error::Invalid(format!(
            "scorer `{}` returned {} results for {} completions",
            scorer.name(),
            out.len(),
            batch.len()
        )));
    }
    Ok(out)
}

/// The check of scorers that compare with the record's `answer`: a string or a number.
pub fn require_answer(record: &Value) -> std::result::Result<(), String> {
    match record.get("answer") {
        Some(Value::String(_) | Value::Number(_)) => Ok(()),
        Some(other) => Err(format!("\"answer\" must be a string or a number, got {other}")),
        None => Err("missing \"answer\" (the scorer compares the completion with it)".into()),
    }
}

/// A scorer from a per-item closure, for tests, examples and simple rule-based rewards.
pub struct FnScorer<F> {
    name: String,
    metric_names: Option<Vec<String>>,
    f: F,
}

impl<F> FnScorer<F>
where
    F: FnMut(&ScoreInput<'_>) -> Result<Metrics>,
{
    /// A scorer named `name` that calls `f` once per completion.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        FnScorer { name: name.into(), metric_names: None, f }
    }

    /// Declares the metric names `f` produces (see [`Scorer::metric_names`]).
    pub fn with_metric_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.metric_names = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

impl<F> Scorer for FnScorer<F>
where
    F: FnMut(&ScoreInput<'_>) -> Result<Metrics>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        self.metric_names.clone()
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        batch.iter().map(|item| (self.f)(item)).collect()
    }
}

/// Built-in exact-match scorer: metric `correctness` is 1 when the completion, trimmed,
/// equals the metadata's `answer` field (a string or a number, trimmed), else 0. Items whose
/// metadata has no `answer` are an error naming the item, since scoring them 0 would silently
/// teach the policy that every answer is wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactMatchScorer;

impl Scorer for ExactMatchScorer {
    fn name(&self) -> &str {
        "exact_match"
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        Some(vec!["correctness".to_string()])
    }

    fn check_task(&self, record: &Value) -> std::result::Result<(), String> {
        require_answer(record)
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        batch
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let answer = match item.metadata.get("answer") {
                    Some(Value::String(s)) => s.trim().to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "scorer `exact_match`: item {i} has no string or number `answer` in its metadata"
                        )))
                    }
                };
                let hit = if item.completion.trim() == answer { 1.0 } else { 0.0 };
                Ok(Metrics::from([("correctness".to_string(), hit)]))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fn_scorer_and_exact_match_score_each_item() {
        let meta = [serde_json::json!({"answer": "4"}), serde_json::json!({"answer": 7})];
        let batch = [
            ScoreInput { prompt: "2+2=", completion: " 4 ", metadata: &meta[0] },
            ScoreInput { prompt: "3+4=", completion: "8", metadata: &meta[1] },
        ];
        let out = score_checked(&mut ExactMatchScorer, &batch).unwrap();
        assert_eq!(out[0]["correctness"], 1.0);
        assert_eq!(out[1]["correctness"], 0.0);

        let mut len = FnScorer::new("len", |x: &ScoreInput<'_>| {
            Ok(Metrics::from([("len".to_string(), x.completion.len() as f64)]))
        })
        .with_metric_names(["len"]);
        assert_eq!(len.metric_names(), Some(vec!["len".to_string()]));
        let out = score_checked(&mut len, &batch).unwrap();
        assert_eq!((out[0]["len"], out[1]["len"]), (3.0, 1.0));
    }

    #[test]
    fn short_results_and_missing_answers_are_named_errors() {
        let meta = serde_json::json!({});
        let batch = [ScoreInput { prompt: "p", completion: "c", metadata: &meta }];
        let mut broken = FnScorer::new("broken", |_: &ScoreInput<'_>| Ok(Metrics::new()));
        // A scorer that drops items: wrap it so it returns nothing at all.
        struct Dropper;
        impl Scorer for Dropper {
            fn name(&self) -> &str {
                "dropper"
            }
            fn score(&mut self, _: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
                Ok(Vec::new())
            }
        }
        assert_eq!(score_checked(&mut broken, &batch).unwrap().len(), 1);
        let e = score_checked(&mut Dropper, &batch).unwrap_err().to_string();
        assert!(e.contains("dropper") && e.contains("0 results for 1"), "{e}");
        let e = score_checked(&mut ExactMatchScorer, &batch).unwrap_err().to_string();
        assert!(e.contains("item 0") && e.contains("answer"), "{e}");
    }
}
