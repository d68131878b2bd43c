//! From a scorer's local metric names to GEPA keys: which metrics become rewards, which become
//! tags, and under what name (the rg-tracer `FeedbackMappingConfig`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::feedback::GepaFeedback;
use super::scorer::Metrics;
use crate::error::{Error, Result};

/// Renames scorer metrics into a [`GepaFeedback`].
///
/// `reward_keys` maps a local metric name to the GEPA reward key it fills; `tag_keys` likewise
/// for tags. A metric may feed both a reward and a tag. Metrics named in neither map are
/// dropped — except that when **both maps are empty** (the [`Default`], also
/// [`FeedbackMapping::identity`]) every metric becomes a reward under its own name.
///
/// A mapped metric that the scorer did not produce is an error naming the metric and the item:
/// mapping is configuration, so a miss is a typo or a scorer change, never a value to guess.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackMapping {
    /// Local metric name → GEPA reward key.
    #[serde(default)]
    pub reward_keys: BTreeMap<String, String>,
    /// Local metric name → GEPA tag key.
    #[serde(default)]
    pub tag_keys: BTreeMap<String, String>,
}

impl FeedbackMapping {
    /// Every metric becomes a reward of the same name.
    pub fn identity() -> Self {
        FeedbackMapping::default()
    }

    /// Whether this is the pass-through mapping (both maps empty).
    pub fn is_identity(&self) -> bool {
        self.reward_keys.is_empty() && self.tag_keys.is_empty()
    }

    /// Checks that no two metrics fill the same reward key (or the same tag key), which would
    /// make the result depend on map order.
    pub fn validate(&self) -> Result<()> {
        for (what, map) in [("reward", &self.reward_keys), ("tag", &self.tag_keys)] {
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            for (metric, key) in map {
                if let Some(other) = seen.insert(key.as_str(), metric.as_str()) {
                    return Err(Error::Invalid(format!(
                        "feedback mapping: metrics `{other}` and `{metric}` both map to {what} key `{key}`"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The GEPA keys this mapping can produce from a scorer offering `metrics` (for the
    /// identity mapping, the metric names themselves). Feed the result to
    /// [`RewardMixer::check_keys`](super::RewardMixer::check_keys).
    pub fn output_keys<'a>(&'a self, metrics: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let metrics: BTreeSet<&str> = metrics.into_iter().collect();
        if self.is_identity() {
            return metrics.into_iter().map(str::to_string).collect();
        }
        self.reward_keys
            .iter()
            .chain(&self.tag_keys)
            .filter(|(m, _)| metrics.contains(m.as_str()))
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Builds the feedback of one completion from its metrics.
    pub fn apply(&self, metrics: &Metrics, task_id: &str, prompt_id: u64, completion_id: u64) -> Result<GepaFeedback> {
        let mut fb = GepaFeedback::new(task_id, prompt_id, completion_id);
        if self.is_identity() {
            fb.rewards = metrics.clone();
            return Ok(fb);
        }
        for (map, out) in [(&self.reward_keys, &mut fb.rewards), (&self.tag_keys, &mut fb.tags)] {
            for (metric, key) in map {
                let value = metrics.get(metric).ok_or_else(|| {
                    let have: Vec<&str> = metrics.keys().map(String::as_str).collect();
                    Error::Invalid(format!(
                        "feedback mapping: metric `{metric}` (for GEPA key `{key}`) is missing from the scores of \
                         prompt {prompt_id} completion {completion_id}; the scorer produced [{}]",
                        have.join(", ")
                    ))
                })?;
                out.insert(key.clone(), *value);
            }
        }
        Ok(fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_metrics() -> Metrics {
        Metrics::from([
            ("correctness".to_string(), 1.0),
            ("reasoning_quality".to_string(), 0.8),
            ("format_penalty".to_string(), 0.0),
        ])
    }

    #[test]
    fn seed_mapping_splits_rewards_and_tags() {
        // The rg-tracer example: two rewards, one tag.
        let m: FeedbackMapping = serde_json::from_str(
            r#"{"reward_keys": {"correctness": "correctness", "reasoning_quality": "reasoning_quality"},
                "tag_keys": {"format_penalty": "format_penalty"}}"#,
        )
        .unwrap();
        m.validate().unwrap();
        let fb = m.apply(&seed_metrics(), "add", 2, 1).unwrap();
        assert_eq!(fb.rewards.len(), 2);
        assert_eq!(fb.rewards["reasoning_quality"], 0.8);
        assert_eq!(fb.tags["format_penalty"], 0.0);
        assert_eq!((fb.task_id.as_str(), fb.prompt_id, fb.completion_id), ("add", 2, 1));
        let keys = m.output_keys(["correctness", "format_penalty"]);
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["correctness", "format_penalty"]);
    }

    #[test]
    fn identity_copies_everything_and_renames_work() {
        let fb = FeedbackMapping::identity().apply(&seed_metrics(), "", 0, 0).unwrap();
        assert_eq!(fb.rewards, seed_metrics());
        assert!(fb.tags.is_empty());
        let m = FeedbackMapping {
            reward_keys: BTreeMap::from([("correctness".into(), "acc".into())]),
            tag_keys: BTreeMap::from([("correctness".into(), "acc_tag".into())]),
        };
        let fb = m.apply(&seed_metrics(), "", 0, 0).unwrap();
        assert_eq!(fb.rewards, BTreeMap::from([("acc".to_string(), 1.0)]));
        assert_eq!(fb.tags, BTreeMap::from([("acc_tag".to_string(), 1.0)]));
    }

    #[test]
    fn missing_metric_and_collisions_are_named() {
        let m = FeedbackMapping {
            reward_keys: BTreeMap::from([("brevity".into(), "brevity".into())]),
            tag_keys: BTreeMap::new(),
        };
        let e = m.apply(&seed_metrics(), "t", 4, 3).unwrap_err().to_string();
        assert!(e.contains("`brevity`") && e.contains("prompt 4 completion 3") && e.contains("correctness"), "{e}");
        let m = FeedbackMapping {
            reward_keys: BTreeMap::from([("a".into(), "k".into()), ("b".into(), "k".into())]),
            tag_keys: BTreeMap::new(),
        };
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("`a`") && e.contains("`b`") && e.contains("`k`"), "{e}");
        assert!(serde_json::from_str::<FeedbackMapping>(r#"{"reward_key": {}}"#).is_err());
    }
}
