//! Rewards: GEPA feedback vectors, scorers, the mapping from scorer metrics to GEPA keys, and
//! the mixer that turns reward vectors into scalar rewards.
//!
//! The flow of one step: a [`Scorer`] turns each (prompt, completion, task metadata) into
//! named [`Metrics`]; a [`FeedbackMapping`] renames them into a [`GepaFeedback`] (rewards and
//! tags under GEPA keys, plus the task, prompt and completion ids); a [`RewardMixer`] weighs,
//! normalises and clips the feedback of the whole batch into one scalar reward per
//! completion, which the advantage computation in [`crate::rl`] consumes. The mixer's file
//! format and exact semantics are documented in [`mix_config`].

pub mod external;
pub mod feedback;
pub mod judge;
pub mod mapping;
pub mod math;
pub mod mix_config;
pub mod mixer;
pub mod multi;
pub mod scorer;

pub use external::ExternalScorer;
pub use feedback::{group_sizes_by_prompt, GepaFeedback};
pub use judge::JudgeScorer;
pub use mapping::FeedbackMapping;
pub use math::MathScorer;
pub use mix_config::{ConfigFormat, KeyConfig, MixMode, MixerConfig, Normalize, ValuePolicy};
pub use mixer::{MixStats, MixerState, RewardMixer, RunningStats};
pub use multi::MultiScorer;
pub use scorer::{require_answer, score_checked, ExactMatchScorer, FnScorer, Metrics, ScoreInput, Scorer};
