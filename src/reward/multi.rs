//! Several reward sources in one run: the built-in math scorer, judge models and external
//! scorers side by side, each contributing its named metrics to every completion's reward
//! vector, which the mixer then weighs (TRL's list of `reward_funcs` with `reward_weights`).
//!
//! Every source sees the whole batch. Two sources emitting a metric of the same name would
//! make the mixer's weight ambiguous, so that is an error naming both.

use serde_json::Value;

use super::scorer::{score_checked, Metrics, ScoreInput, Scorer};
use crate::error::{Error, Result};

/// Scorers whose metrics are merged into one [`Metrics`] per completion.
pub struct MultiScorer {
    parts: Vec<Box<dyn Scorer>>,
    name: String,
}

impl MultiScorer {
    /// The union of `parts`' metrics. Errors when there is no part, or when two parts declare
    /// the same metric name up front.
    pub fn new(parts: Vec<Box<dyn Scorer>>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::Invalid("no reward source: give a scorer".into()));
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for p in &parts {
            for m in p.metric_names().unwrap_or_default() {
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == m) {
                    return Err(Error::Invalid(format!(
                        "reward sources `{other}` and `{}` both produce the metric `{m}`",
                        p.name()
                    )));
                }
                seen.push((m, p.name().to_string()));
            }
        }
        let name = parts.iter().map(|p| p.name()).collect::<Vec<_>>().join("+");
        Ok(MultiScorer { parts, name })
    }

    /// The sources' names, in order.
    pub fn part_names(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.name()).collect()
    }
}

impl Scorer for MultiScorer {
    fn name(&self) -> &str {
        &self.name
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.metric_names()?);
        }
        Some(all)
    }

    fn check_task(&self, record: &Value) -> std::result::Result<(), String> {
        for p in &self.parts {
            p.check_task(record).map_err(|e| format!("{} (needed by scorer `{}`)", e, p.name()))?;
        }
        Ok(())
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        let mut out = vec![Metrics::new(); batch.len()];
        for p in &mut self.parts {
            let name = p.name().to_string();
            for (i, (acc, m)) in out.iter_mut().zip(score_checked(p.as_mut(), batch)?).enumerate() {
                for (k, v) in m {
                    if acc.insert(k.clone(), v).is_some() {
                        return Err(Error::Invalid(format!(
                            "reward source `{name}` returned the metric `{k}` for completion {i}, which another \
                             source already produced"
                        )));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::{FnScorer, MathScorer};

    #[test]
    fn metrics_merge_and_collisions_are_named() {
        let len = FnScorer::new("len", |x: &ScoreInput<'_>| {
            Ok(Metrics::from([("len".to_string(), x.completion.len() as f64)]))
        });
        let mut m = MultiScorer::new(vec![Box::new(MathScorer), Box::new(len)]).unwrap();
        let rec = serde_json::json!({"answer": "4"});
        let out = m.score(&[ScoreInput { prompt: "2+2=", completion: "4", metadata: &rec }]).unwrap();
        assert_eq!((out[0]["correctness"], out[0]["len"]), (1.0, 1.0));
        assert!(m.check_task(&serde_json::json!({})).unwrap_err().contains("math"));
        assert_eq!(m.metric_names(), None, "the closure declares no names");

        let twice = MultiScorer::new(vec![Box::new(MathScorer), Box::new(MathScorer)]);
        assert!(twice.err().unwrap().to_string().contains("correctness"));
        let a = FnScorer::new("a", |_: &ScoreInput<'_>| Ok(Metrics::from([("x".to_string(), 1.0)])));
        let b = FnScorer::new("b", |_: &ScoreInput<'_>| Ok(Metrics::from([("x".to_string(), 2.0)])));
        let mut ab = MultiScorer::new(vec![Box::new(a), Box::new(b)]).unwrap();
        let e = ab.score(&[ScoreInput { prompt: "", completion: "", metadata: &rec }]).unwrap_err().to_string();
        assert!(e.contains("`b`") && e.contains("`x`"), "{e}");
    }
}
