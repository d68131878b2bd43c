//! A multi-armed bandit for the model-agnostic trainer: a softmax [`Policy`] over K arms and a
//! [`RewardModel`] whose arm means drift, so the best arm changes over time. Small enough to
//! check the group trainer exactly, and the `examples/bandit.rs` demo.

use super::policy::{Policy, RewardModel};
use crate::error::{Error, Result};
use crate::util::rng::Rng;
use std::collections::BTreeMap;

/// π(a) = softmax(θ)_a over K arms, trained by plain gradient descent on θ.
#[derive(Clone, Debug)]
pub struct SoftmaxPolicy {
    /// Logits θ (K).
    pub logits: Vec<f64>,
    grad: Vec<f64>,
}

impl SoftmaxPolicy {
    /// A uniform policy over `k` arms.
    pub fn new(k: usize) -> Self {
        SoftmaxPolicy { logits: vec![0.0; k], grad: vec![0.0; k] }
    }

    /// The action probabilities.
    pub fn probs(&self) -> Vec<f64> {
        let max = self.logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = self.logits.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }

    fn entropy(p: &[f64]) -> f64 {
        -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>()
    }
}

impl Policy for SoftmaxPolicy {
    type State = ();
    type Action = usize;

    fn sample(&mut self, _state: &(), g: usize, rng: &mut Rng) -> Result<Vec<(usize, f64)>> {
        let p = self.probs();
        Ok((0..g)
            .map(|_| {
                let u = rng.uniform() as f64;
                let mut acc = 0.0;
                let a = p.iter().position(|&pi| {
                    acc += pi;
                    u < acc
                });
                let a = a.unwrap_or(p.len() - 1);
                (a, p[a].ln())
            })
            .collect())
    }

    fn evaluate(&mut self, pairs: &[(&(), &usize)]) -> Result<Vec<(f64, f64)>> {
        let p = self.probs();
        let h = Self::entropy(&p);
        pairs
            .iter()
            .map(|(_, &a)| {
                p.get(a)
                    .map(|pa| (pa.ln(), h))
                    .ok_or_else(|| Error::Invalid(format!("arm {a} out of range {}", p.len())))
            })
            .collect()
    }

    fn backward(&mut self, pairs: &[(&(), &usize)], dlogp: &[f64], dentropy: &[f64]) -> Result<()> {
        let p = self.probs();
        let h = Self::entropy(&p);
        for (i, (_, &a)) in pairs.iter().enumerate() {
            // ∂ log p_a / ∂θ_j = 1[j=a] − p_j;  ∂H/∂θ_j = −p_j (log p_j + H).
            for (j, (&pj, g)) in p.iter().zip(self.grad.iter_mut()).enumerate() {
                let dl = if j == a { 1.0 - pj } else { -pj };
                let dh = -pj * (pj.ln() + h);
                *g += dlogp[i] * dl + dentropy[i] * dh;
            }
        }
        Ok(())
    }

    fn step(&mut self, lr: f64) -> Result<()> {
        for (t, g) in self.logits.iter_mut().zip(self.grad.iter_mut()) {
            *t -= lr * *g;
            *g = 0.0;
        }
        Ok(())
    }
}

/// K arms with Gaussian rewards whose means rotate every `period` steps: the best arm moves,
/// and a policy has to notice and follow it.
#[derive(Clone, Debug)]
pub struct DriftingBandit {
    /// Arm means at step 0.
    pub base_means: Vec<f64>,
    /// Steps between rotations.
    pub period: u64,
    /// Reward noise standard deviation.
    pub noise: f64,
    /// Current step (advance with [`DriftingBandit::tick`]).
    pub step: u64,
    rng: Rng,
}

impl DriftingBandit {
    /// A bandit whose means shift by one arm every `period` steps.
    pub fn new(base_means: Vec<f64>, period: u64, noise: f64, seed: u64) -> Self {
        DriftingBandit { base_means, period, noise, step: 0, rng: Rng::new(seed) }
    }

    /// The arm means now.
    pub fn means(&self) -> Vec<f64> {
        let k = self.base_means.len();
        let shift = (self.step / self.period.max(1)) as usize % k;
        (0..k).map(|a| self.base_means[(a + shift) % k]).collect()
    }

    /// Expected regret of `policy` now: best mean − Σ_a π(a)·μ_a.
    pub fn regret(&self, policy: &SoftmaxPolicy) -> f64 {
        let mu = self.means();
        let best = mu.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        best - policy.probs().iter().zip(&mu).map(|(p, m)| p * m).sum::<f64>()
    }

    /// Moves time forward one step.
    pub fn tick(&mut self) {
        self.step += 1;
    }
}

impl RewardModel<(), usize> for DriftingBandit {
    /// One key, `reward`: the arm's mean plus Gaussian noise.
    fn feedback(&mut self, pairs: &[(&(), &usize)]) -> Result<Vec<BTreeMap<String, f64>>> {
        let mu = self.means();
        pairs
            .iter()
            .map(|(_, &a)| {
                let m = mu.get(a).ok_or_else(|| Error::Invalid(format!("arm {a} out of range {}", mu.len())))?;
                let r = m + self.noise * self.rng.normal() as f64;
                Ok(BTreeMap::from([("reward".to_string(), r)]))
            })
            .collect()
    }
}
