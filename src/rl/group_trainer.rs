//! A group-relative trainer for any [`Policy`] and [`RewardModel`]: collect G actions per
//! state, mix their reward vectors, compute group advantages, then μ epochs of clipped
//! updates with an entropy bonus (the `grpo-model-agnostic` seed, with DAPO's decoupled clip).
//!
//! The loss is the DAPO objective's own ([`DapoObjective::policy_loss`] on the CPU oracle):
//! each action is a one-token sequence, so the objective's token-level ratio, clip and token
//! mean over the batch are exactly the per-action clipped surrogate averaged over actions.

use super::advantage::{group_advantages, AdvantageConfig};
use super::objective::{DapoObjective, HostPolicyInputs, ObjectiveConfig};
use super::policy::{Policy, RewardModel};
use crate::backend::cpu::CpuBackend;
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
    /// The DAPO objective with this trainer's clip range and entropy bonus.
    objective: DapoObjective<CpuBackend>,
    /// Where the objective's loss runs: one thread, as a batch of actions is small.
    cpu: CpuBackend,
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
        let objective = DapoObjective::new(ObjectiveConfig {
            eps_low: config.eps_low as f32,
            eps_high: config.eps_high as f32,
            entropy_coef: config.entropy_coef as f32,
            ..ObjectiveConfig::default()
        })?;
        let rng = Rng::new(config.seed);
        Ok(GroupTrainer { config, mixer, rng, objective, cpu: CpuBackend::new(Some(1)) })
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
        let advantages: Vec<f32> = adv.iter().map(|&a| a as f32).collect();
        let logp_old: Vec<f32> = logp_old.iter().map(|&lp| lp as f32).collect();
        let mask = vec![1.0f32; pairs.len()];
        for _ in 0..self.config.epochs {
            let eval = policy.evaluate(&pairs)?;
            let logp: Vec<f32> = eval.iter().map(|&(lp, _)| lp as f32).collect();
            let entropy: Vec<f32> = eval.iter().map(|&(_, h)| h as f32).collect();
            let inputs = HostPolicyInputs {
                l: 1,
                logp: &logp,
                logp_old: &logp_old,
                entropy: &entropy,
                mask: &mask,
                advantages: &advantages,
            };
            let out = self.objective.policy_loss(&self.cpu, inputs)?;
            let dlogp: Vec<f64> = out.dlogp.iter().map(|&d| f64::from(d)).collect();
            let dent: Vec<f64> = out.dentropy.iter().map(|&d| f64::from(d)).collect();
            policy.backward(&pairs, &dlogp, &dent)?;
            policy.step(self.config.lr)?;
            m.loss = f64::from(out.metrics.loss);
            m.entropy = f64::from(out.metrics.entropy);
            m.clip_frac_low = f64::from(out.metrics.clip_frac_low);
            m.clip_frac_high = f64::from(out.metrics.clip_frac_high);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objective's loss on one-token sequences is the per-action clipped surrogate
    /// −mean(min(ρA, clip(ρ, 1−ε_low, 1+ε_high)·A)) − c·mean(H), with d/d logp = −ρA/n where
    /// the unclipped term is the smaller and d/dH = −c/n.
    #[test]
    fn the_objective_on_one_token_sequences_is_the_per_action_surrogate() {
        let t = GroupTrainer::new(
            GroupConfig { eps_low: 0.2, eps_high: 0.28, entropy_coef: 0.05, ..GroupConfig::default() },
            RewardMixer::from_weights([("reward", 1.0)]).unwrap(),
        )
        .unwrap();
        let mut objective = t.objective;
        let mut rng = Rng::new(9);
        let n = 64;
        let logp_old: Vec<f32> = (0..n).map(|_| -1.0 - rng.uniform()).collect();
        // Ratios from about 0.5 to 1.6: some clipped below, some above, most inside.
        let logp: Vec<f32> = logp_old.iter().map(|&lp| lp + 0.5 * rng.normal()).collect();
        let adv: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let entropy: Vec<f32> = (0..n).map(|_| 1.0 + rng.uniform()).collect();
        let mask = vec![1.0f32; n];
        let x = HostPolicyInputs {
            l: 1,
            logp: &logp,
            logp_old: &logp_old,
            entropy: &entropy,
            mask: &mask,
            advantages: &adv,
        };
        let out = objective.policy_loss(&t.cpu, x).unwrap();
        let (mut loss, mut low, mut high) = (0.0f64, 0.0, 0.0);
        for i in 0..n {
            let (r, a) = (f64::from((logp[i] - logp_old[i]).exp()), f64::from(adv[i]));
            let (un, cl) = (r * a, r.clamp(0.8, 1.28) * a);
            loss -= un.min(cl) / n as f64;
            let want = if un <= cl { -a * r / n as f64 } else { 0.0 };
            assert!((f64::from(out.dlogp[i]) - want).abs() < 1e-6, "{i}: {} vs {want}", out.dlogp[i]);
            assert!((f64::from(out.dentropy[i]) + 0.05 / n as f64).abs() < 1e-7);
            low += f64::from(u8::from(r < 0.8 && a < 0.0)) / n as f64;
            high += f64::from(u8::from(r > 1.28 && a > 0.0)) / n as f64;
        }
        let mean_h = entropy.iter().map(|&h| f64::from(h)).sum::<f64>() / n as f64;
        loss -= 0.05 * mean_h;
        assert!((f64::from(out.metrics.loss) - loss).abs() < 1e-5, "{} vs {loss}", out.metrics.loss);
        assert!((f64::from(out.metrics.entropy) - mean_h).abs() < 1e-5);
        assert!(low > 0.0 && high > 0.0, "the case clips both ways: {low} {high}");
        assert!((f64::from(out.metrics.clip_frac_low) - low).abs() < 1e-6);
        assert!((f64::from(out.metrics.clip_frac_high) - high).abs() < 1e-6);
    }
}
