//! The GEPA feedback record: one completion's reward vector and tags, with the ids that tie it
//! to its task, prompt and group. This is the unit the mixer consumes and the `gepa` array of
//! the JSONL training log holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One completion's vector-valued feedback.
///
/// `rewards` are the axes a [`RewardMixer`](super::RewardMixer) weights into a scalar; `tags`
/// are diagnostics (format violations, lengths, judge confidences) that safety rules and
/// analyses read. The mixer looks a key up in `rewards` first and then in `tags`, so a weight
/// may also be put on a tag (the seed weights its `format_penalty` tag by −0.25).
///
/// Serialised as `{"prompt_id", "completion_id", "task_id", "rewards": {}, "tags": {}}`;
/// `task_id` and `tags` may be omitted when reading. Maps are ordered (`BTreeMap`) so logs are
/// byte-for-byte reproducible. JSON cannot hold NaN or infinities: `serde_json` writes them as
/// `null`, which does not read back as a number — keep non-finite values out of logged records
/// (the mixer's `nan` policy decides what they mean before logging).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GepaFeedback {
    /// Index of the prompt within its step (all completions of one group share it).
    pub prompt_id: u64,
    /// Index of the completion within its prompt's group.
    pub completion_id: u64,
    /// The dataset task this prompt came from (its `task_id` field); empty when unknown.
    #[serde(default)]
    pub task_id: String,
    /// Reward axes, by GEPA key.
    pub rewards: BTreeMap<String, f64>,
    /// Diagnostic values, by GEPA key.
    #[serde(default)]
    pub tags: BTreeMap<String, f64>,
}

impl GepaFeedback {
    /// Feedback with no rewards or tags yet.
    pub fn new(task_id: impl Into<String>, prompt_id: u64, completion_id: u64) -> Self {
        GepaFeedback { prompt_id, completion_id, task_id: task_id.into(), ..Default::default() }
    }

    /// Adds (or replaces) reward `key`.
    pub fn with_reward(mut self, key: impl Into<String>, value: f64) -> Self {
        self.rewards.insert(key.into(), value);
        self
    }

    /// Adds (or replaces) tag `key`.
    pub fn with_tag(mut self, key: impl Into<String>, value: f64) -> Self {
        self.tags.insert(key.into(), value);
        self
    }

    /// The value of `key`: from `rewards` if present there, else from `tags`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.rewards.get(key).or_else(|| self.tags.get(key)).copied()
    }
}

/// Sizes of the runs of consecutive items that share a `prompt_id`: the ragged group sizes the
/// mixer and the advantage computation take, for feedback laid out group after group.
pub fn group_sizes_by_prompt(feedback: &[GepaFeedback]) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    let mut prev: Option<u64> = None;
    for fb in feedback {
        match (prev, sizes.last_mut()) {
            (Some(p), Some(last)) if p == fb.prompt_id => *last += 1,
            _ => sizes.push(1),
        }
        prev = Some(fb.prompt_id);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_in_the_log_shape() {
        let fb = GepaFeedback::new("add", 3, 1).with_reward("correctness", 1.0).with_tag("format_penalty", 0.5);
        let text = serde_json::to_string(&fb).unwrap();
        assert_eq!(
            text,
            r#"{"prompt_id":3,"completion_id":1,"task_id":"add","rewards":{"correctness":1.0},"tags":{"format_penalty":0.5}}"#
        );
        assert_eq!(serde_json::from_str::<GepaFeedback>(&text).unwrap(), fb);
        // The log's minimal shape (no task_id, no tags) reads too.
        let min: GepaFeedback =
            serde_json::from_str(r#"{"prompt_id":0,"completion_id":2,"rewards":{"a":0.5}}"#).unwrap();
        assert_eq!(min, GepaFeedback::new("", 0, 2).with_reward("a", 0.5));
    }

    #[test]
    fn rewards_shadow_tags_and_groups_follow_prompt_runs() {
        let fb = GepaFeedback::new("t", 0, 0).with_reward("k", 1.0).with_tag("k", 2.0).with_tag("only_tag", 3.0);
        assert_eq!(fb.get("k"), Some(1.0));
        assert_eq!(fb.get("only_tag"), Some(3.0));
        assert_eq!(fb.get("absent"), None);
        let items: Vec<GepaFeedback> = [0u64, 0, 0, 1, 2, 2, 0].iter().map(|&p| GepaFeedback::new("t", p, 0)).collect();
        assert_eq!(group_sizes_by_prompt(&items), vec![3, 1, 2, 1]);
        assert!(group_sizes_by_prompt(&[]).is_empty());
    }
}
