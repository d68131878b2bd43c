//! A group-relative trainer for any [`Policy`] and [`RewardModel`]: collect G actions per
//! state, mix their reward vectors, compute group advantages, then μ epochs of clipped
//! updates with an entropy bonus (the `grpo-model-agnostic` seed, with DAPO's decoupled clip).

use super::advantage::{group_advantages, AdvantageConfig};
use super::policy::{Policy, RewardModel};
use crate::error::{Error, Result};
use crate::reward::feedback::GepaFeedback;
use crate::reward::mixer::RewardMixer;
use crate::util::rng::Rng;

/// Hyperparameters of [`GroupTrainer`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    /// Actions sampled per state (G).
    pub group_size: usize,
    /// Update epochs over each collected batch (μ).
    pub epochs: usize,
    /// Lower clip range: the ratio is kept above 1 − eps_low.
    pub eps_low: f64,
    /// Upper clip range: the ratio is kept below 1 + eps_high.
    pub eps_high: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Learning rate passed to [`Policy::step`].
    pub lr: f64,
    /// How advantages are scaled.
    pub advantage: AdvantageConfig,
    /// Seed of the sampling stream.
    pub seed: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            group_size: 8,
            epochs: 2,
            eps_low: 0.2,
            eps_high: 0.28,
            entropy_coef: 0.0,
            lr: 0.1,
            advantage: AdvantageConfig::default(),
            seed: 0,
        }
    }
}

/// What one [`GroupTrainer::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMetrics {
    /// Mean mixed reward of the collected actions.
    pub mean_reward: f64,
    /// Clipped-surrogate loss of the last epoch (before its update).
    pub loss: f64,
    /// Mean policy entropy over the batch, last epoch.
    pub entropy: f64,
    /// Fraction of actions whose ratio was clipped below, last epoch.
    pub clip_frac_low: f64,
    /// Fraction clipped above, last epoch.
    pub clip_frac_high: f64,
    /// Actions collected.
    pub actions: usize,
}

/// The collect → advantages → μ clipped epochs loop over a [`Policy`].
pub struct GroupTrainer {
    /// Hyperparameters.
    pub config: GroupConfig,
    /// Turns each action's reward vector into a scalar.
    pub mixer: RewardMixer,
    rng: Rng,
}

impl GroupTrainer {
    /// A trainer mixing rewards with `mixer`.
    pub fn new(config: GroupConfig, mixer: RewardMixer) -> Result<Self> {
        if config.group_size == 0 || config.epochs == 0 {
            return Err(Error::Invalid("group_size and epochs must be positive".into()));
        }
        if !(config.eps_low >= 0.0 && config.eps_high >= 0.0 && config.lr.is_finite()) {
            return Err(Error::Invalid("clip ranges must be >= 0 and the learning rate finite".into()));
        }
        config.advantage.validate()?;
        let rng = Rng::new(config.seed);
        Ok(GroupTrainer { config, mixer, rng })
    }

    /// One training step on `states`.
    pub fn step<P, R>(&mut self, policy: &mut P, reward: &mut R, states: &[P::State]) -> Result<GroupMetrics>
    where
        P: Policy,
        R: RewardModel<P::State, P::Action>,
    {
        if states.is_empty() {
            return Err(Error::Invalid("no states to train on".into()));
        }
        let g = self.config.group_size;
        // Collect: G actions per state with their log-probs under the sampling policy.
        let mut states_of = Vec::with_capacity(states.len() * g);
        let mut actions = Vec::with_capacity(states.len() * g);
        let mut logp_old = Vec::with_capacity(states.len() * g);
        for s in states {
            let sampled = policy.sample(s, g, &mut self.rng)?;
            if sampled.len() != g {
                return Err(Error::Invalid(format!("policy returned {} actions, expected {g}", sampled.len())));
            }
            for (a, lp) in sampled {
                states_of.push(s);
                actions.push(a);
                logp_old.push(lp);
            }
        }
        let pairs: Vec<(&P::State, &P::Action)> = states_of.iter().copied().zip(actions.iter()).collect();
        let vectors = reward.feedback(&pairs)?;
        if vectors.len() != pairs.len() {
            return Err(Error::Invalid(format!("reward model scored {} of {} actions", vectors.len(), pairs.len())));
        }
        let feedback: Vec<GepaFeedback> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, rewards)| GepaFeedback {
                prompt_id: (i / g) as u64,
                completion_id: (i % g) as u64,
                rewards,
                ..Default::default()
            })
            .collect();
        let groups = vec![g; states.len()];
        let (scalars, _) = self.mixer.mix(&feedback, &groups)?;
        let adv = group_advantages(&scalars, &groups, &self.config.advantage)?;
        let n = pairs.len() as f64;
        let mut m = GroupMetrics {
            mean_reward: scalars.iter().sum::<f64>() / n,
            loss: 0.0,
            entropy: 0.0,
            clip_frac_low: 0.0,
            clip_frac_high: 0.0,
            actions: pairs.len(),
        };
        let (lo, hi) = (1.0 - self.config.eps_low, 1.0 + self.config.eps_high);
        for _ in 0..self.config.epochs {
            let eval = policy.evaluate(&pairs)?;
            let mut dlogp = vec![0.0; pairs.len()];
            let (mut loss, mut ent, mut low, mut high) = (0.0, 0.0, 0, 0);
            for (i, &(lp, h)) in eval.iter().enumerate() {
                let ratio = (lp - logp_old[i]).exp();
                let a = adv[i];
                let clipped = ratio.clamp(lo, hi);
                // −min(ρA, clip(ρ)A): the gradient flows only when the unclipped term is the
                // smaller one, i.e. when clipping does not bind in the direction A pushes.
                let (un, cl) = (ratio * a, clipped * a);
                loss -= un.min(cl) / n;
                if un <= cl {
                    dlogp[i] = -a * ratio / n;
                }
                low += (ratio < lo && a < 0.0) as usize;
                high += (ratio > hi && a > 0.0) as usize;
                ent += h / n;
            }
            loss -= self.config.entropy_coef * ent;
            let dent = vec![-self.config.entropy_coef / n; pairs.len()];
            policy.backward(&pairs, &dlogp, &dent)?;
            policy.step(self.config.lr)?;
            m.loss = loss;
            m.entropy = ent;
            m.clip_frac_low = low as f64 / n;
            m.clip_frac_high = high as f64 / n;
        }
        Ok(m)
    }
}
