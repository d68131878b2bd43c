//! Curriculum over tasks: an exponential moving average (EMA) of the reward seen per `task_id`,
//! turned into sampling weights that favour tasks the policy neither always solves nor always
//! fails, since those are the ones whose groups carry a learning signal (a group whose rewards
//! are all equal has zero advantage everywhere).
//!
//! With `p` the EMA mapped linearly from `[reward_min, reward_max]` onto `[0, 1]` (and clamped),
//! a task's weight is `p·(1 − p) + floor`: the Bernoulli variance of a task solved with
//! probability `p`, largest at `p = ½`, plus a floor so that solved and hopeless tasks are still
//! revisited now and then (a policy can forget, and a hopeless task can become reachable).
//!
//! The state is plain data (serde) for checkpoints. Sampling takes the caller's [`Rng`], so a
//! run's task order depends only on its seed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::rng::Rng;

/// Curriculum parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurriculumConfig {
    /// EMA step: `ema ← (1 − alpha)·ema + alpha·reward`, in (0, 1].
    pub alpha: f64,
    /// The reward that means "hopeless" (maps to p = 0).
    pub reward_min: f64,
    /// The reward that means "solved" (maps to p = 1).
    pub reward_max: f64,
    /// Added to every weight, ≥ 0; with floor 0 solved and hopeless tasks are never sampled.
    pub floor: f64,
    /// The normalised success `p` assumed for a task never seen, in [0, 1]. The default ½ gives
    /// unseen tasks the largest weight, so every task gets tried early.
    pub prior: f64,
}

impl Default for CurriculumConfig {
    /// alpha 0.1, rewards in [0, 1], floor 0.05, prior ½.
    fn default() -> Self {
        CurriculumConfig { alpha: 0.1, reward_min: 0.0, reward_max: 1.0, floor: 0.05, prior: 0.5 }
    }
}

impl CurriculumConfig {
    /// Checks the ranges stated on each field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| Err(Error::Invalid(format!("curriculum {what} out of range: {v}")));
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return bad("alpha (want (0, 1])", self.alpha);
        }
        if !(self.reward_min.is_finite() && self.reward_max.is_finite() && self.reward_min < self.reward_max) {
            return Err(Error::Invalid(format!(
                "curriculum reward range [{}, {}] must be finite with min < max",
                self.reward_min, self.reward_max
            )));
        }
        if !(self.floor.is_finite() && self.floor >= 0.0) {
            return bad("floor (want finite >= 0)", self.floor);
        }
        if !(0.0..=1.0).contains(&self.prior) {
            return bad("prior (want [0, 1])", self.prior);
        }
        Ok(())
    }
}

/// What the curriculum knows about one task.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// EMA of the rewards seen, in reward units.
    pub ema: f64,
    /// How many rewards have been folded in.
    pub count: u64,
}

/// Per-task reward EMAs and the sampling weights derived from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curriculum {
    /// The parameters.
    pub config: CurriculumConfig,
    /// Per `task_id`; sorted so the serialised state is stable.
    pub tasks: BTreeMap<String, TaskStats>,
}

impl Curriculum {
    /// An empty curriculum. Errors if `config` is out of range.
    pub fn new(config: CurriculumConfig) -> Result<Self> {
        config.validate()?;
        Ok(Curriculum { config, tasks: BTreeMap::new() })
    }

    /// Folds one reward for `task_id` into its EMA. A task's EMA starts from the prior (in reward
    /// units), not from its first reward, so one lucky or unlucky sample does not mark it solved
    /// or hopeless. Errors on a non-finite reward, leaving the state unchanged.
    pub fn update(&mut self, task_id: &str, reward: f64) -> Result<()> {
        if !reward.is_finite() {
            return Err(Error::Invalid(format!("curriculum: reward for task `{task_id}` is not finite ({reward})")));
        }
        let c = self.config;
        let prior = c.reward_min + c.prior * (c.reward_max - c.reward_min);
        let t = self.tasks.entry(task_id.to_string()).or_insert(TaskStats { ema: prior, count: 0 });
        t.ema = (1.0 - c.alpha) * t.ema + c.alpha * reward;
        t.count += 1;
        Ok(())
    }

    /// Folds in many `(task_id, reward)` pairs in order. Every reward is checked first, so on
    /// error nothing has been folded in.
    pub fn update_many<'a>(&mut self, items: impl IntoIterator<Item = (&'a str, f64)>) -> Result<()> {
        let items: Vec<_> = items.into_iter().collect();
        if let Some((i, (task, r))) = items.iter().enumerate().find(|(_, (_, r))| !r.is_finite()) {
            return Err(Error::Invalid(format!("curriculum: reward {i} (task `{task}`) is not finite ({r})")));
        }
        for (task, r) in items {
            self.update(task, r)?;
        }
        Ok(())
    }

    /// The normalised success `p ∈ [0, 1]` of `task_id`; the prior for a task never seen.
    pub fn success(&self, task_id: &str) -> f64 {
        let c = &self.config;
        match self.tasks.get(task_id) {
            Some(t) => ((t.ema - c.reward_min) / (c.reward_max - c.reward_min)).clamp(0.0, 1.0),
            None => c.prior,
        }
    }

    /// The unnormalised weight `p·(1 − p) + floor` of `task_id`.
    pub fn weight(&self, task_id: &str) -> f64 {
        let p = self.success(task_id);
        p * (1.0 - p) + self.config.floor
    }

    /// Sampling probabilities over `task_ids` (summing to 1). When every weight is 0 (floor 0 and
    /// every task solved or hopeless) the distribution is uniform rather than undefined.
    pub fn probabilities<S: AsRef<str>>(&self, task_ids: &[S]) -> Vec<f64> {
        let w: Vec<f64> = task_ids.iter().map(|t| self.weight(t.as_ref())).collect();
        let total: f64 = w.iter().sum();
        if total > 0.0 {
            w.iter().map(|x| x / total).collect()
        } else {
            vec![1.0 / task_ids.len() as f64; task_ids.len()]
        }
    }

    /// Draws `n` indices into `task_ids` with replacement, with the probabilities of
    /// [`Curriculum::probabilities`]. Errors if `task_ids` is empty.
    pub fn sample<S: AsRef<str>>(&self, task_ids: &[S], n: usize, rng: &mut Rng) -> Result<Vec<usize>> {
        if task_ids.is_empty() {
            return Err(Error::Invalid("curriculum: cannot sample from an empty task list".into()));
        }
        let probs = self.probabilities(task_ids);
        let mut cumulative = Vec::with_capacity(probs.len());
        let mut acc = 0.0;
        for p in &probs {
            acc += p;
            cumulative.push(acc);
        }
        let last = task_ids.len() - 1;
        Ok((0..n)
            .map(|_| {
                let u = rng.uniform() as f64 * acc;
                // First bucket whose upper edge is above u; rounding can leave u at the very top.
                cumulative.partition_point(|&c| c <= u).min(last)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_by_hand_and_prior_for_unseen() {
        let mut c = Curriculum::new(CurriculumConfig { alpha: 0.5, ..Default::default() }).unwrap();
        assert_eq!(c.success("new"), 0.5);
        c.update("t", 1.0).unwrap(); // 0.5·0.5 + 0.5·1 = 0.75
        c.update("t", 0.0).unwrap(); // 0.375
        assert!((c.success("t") - 0.375).abs() < 1e-15);
        assert!((c.weight("t") - (0.375 * 0.625 + 0.05)).abs() < 1e-15);
        assert_eq!(c.tasks["t"].count, 2);
        assert!(c.update("t", f64::NAN).is_err());
        assert_eq!(c.tasks["t"].count, 2);
    }

    #[test]
    fn rewards_are_normalised_and_clamped() {
        let cfg = CurriculumConfig { alpha: 1.0, reward_min: -1.0, reward_max: 3.0, ..Default::default() };
        let mut c = Curriculum::new(cfg).unwrap();
        c.update("a", 1.0).unwrap();
        c.update("b", 10.0).unwrap();
        assert_eq!(c.success("a"), 0.5);
        assert_eq!(c.success("b"), 1.0);
    }

    #[test]
    fn zero_weights_fall_back_to_uniform() {
        let cfg = CurriculumConfig { alpha: 1.0, floor: 0.0, ..Default::default() };
        let mut c = Curriculum::new(cfg).unwrap();
        c.update("a", 1.0).unwrap();
        c.update("b", 0.0).unwrap();
        assert_eq!(c.probabilities(&["a", "b"]), vec![0.5, 0.5]);
    }

    #[test]
    fn invalid_configs() {
        for cfg in [
            CurriculumConfig { alpha: 0.0, ..Default::default() },
            CurriculumConfig { reward_min: 1.0, reward_max: 1.0, ..Default::default() },
            CurriculumConfig { floor: -0.1, ..Default::default() },
            CurriculumConfig { prior: 1.5, ..Default::default() },
        ] {
            assert!(Curriculum::new(cfg).is_err(), "{cfg:?}");
        }
        let c = Curriculum::new(CurriculumConfig::default()).unwrap();
        assert!(c.sample::<&str>(&[], 1, &mut Rng::new(0)).is_err());
    }
}
