//! Vector-valued rewards and a curriculum with the model-agnostic trainer (the seed's
//! `simple_bandit_demo`): three tasks of different difficulty, each a 4-armed bandit whose
//! arms return a reward *vector* (`correctness`, `reasoning_quality`, `format_penalty`).
//! `configs/reward_mixer.yaml` mixes them (1.0, 0.5, −0.25); a curriculum keeps an EMA of
//! correctness per task and samples the tasks that are neither solved nor hopeless.
//!
//! ```text
//! cargo run --release --example vector_rewards
//! ```

use gepa_dapo_grn::reward::mixer::RewardMixer;
use gepa_dapo_grn::rl::curriculum::{Curriculum, CurriculumConfig};
use gepa_dapo_grn::rl::group_trainer::{GroupConfig, GroupTrainer};
use gepa_dapo_grn::rl::policy::{Policy, RewardModel};
use gepa_dapo_grn::util::rng::Rng;
use gepa_dapo_grn::Result;
use std::collections::BTreeMap;

const TASKS: [&str; 3] = ["easy", "medium", "hard"];

/// A softmax policy per task: logits[task][arm]. Implementing [`Policy`] for your own model
/// looks like this.
struct TabularPolicy {
    logits: Vec<Vec<f64>>,
    grad: Vec<Vec<f64>>,
}

impl TabularPolicy {
    fn probs(&self, task: usize) -> Vec<f64> {
        let l = &self.logits[task];
        let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = l.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }
}

impl Policy for TabularPolicy {
    type State = usize;
    type Action = usize;

    fn sample(&mut self, task: &usize, g: usize, rng: &mut Rng) -> Result<Vec<(usize, f64)>> {
        let p = self.probs(*task);
        Ok((0..g)
            .map(|_| {
                let (u, mut acc) = (rng.uniform() as f64, 0.0);
                let a = p.iter().position(|&x| {
                    acc += x;
                    u < acc
                });
                let a = a.unwrap_or(p.len() - 1);
                (a, p[a].ln())
            })
            .collect())
    }

    fn evaluate(&mut self, pairs: &[(&usize, &usize)]) -> Result<Vec<(f64, f64)>> {
        Ok(pairs
            .iter()
            .map(|(&t, &a)| {
                let p = self.probs(t);
                (p[a].ln(), -p.iter().map(|x| x * x.ln()).sum::<f64>())
            })
            .collect())
    }

    fn backward(&mut self, pairs: &[(&usize, &usize)], dlogp: &[f64], dentropy: &[f64]) -> Result<()> {
        for (i, (&t, &a)) in pairs.iter().enumerate() {
            let p = self.probs(t);
            let h = -p.iter().map(|x| x * x.ln()).sum::<f64>();
            for (j, (&pj, g)) in p.iter().zip(self.grad[t].iter_mut()).enumerate() {
                let dl = if j == a { 1.0 - pj } else { -pj };
                *g += dlogp[i] * dl - dentropy[i] * pj * (pj.ln() + h);
            }
        }
        Ok(())
    }

    fn step(&mut self, lr: f64) -> Result<()> {
        for (l, g) in self.logits.iter_mut().flatten().zip(self.grad.iter_mut().flatten()) {
            *l -= lr * *g;
            *g = 0.0;
        }
        Ok(())
    }
}

/// Each task's arms: probability of a correct answer, a reasoning-quality score, and whether
/// the answer is badly formatted. Arm 3 is often "correct" but badly formatted, so only the
/// mixed reward (with its −0.25 format penalty) prefers the well-formatted arm.
struct Tasks {
    rng: Rng,
    /// Correctness of each (task, arm) in the last call, for the curriculum.
    last: Vec<(usize, f64)>,
}

const P_CORRECT: [[f64; 4]; 3] = [[0.9, 0.95, 0.3, 0.95], [0.2, 0.6, 0.1, 0.6], [0.0, 0.02, 0.0, 0.02]];
const QUALITY: [f64; 4] = [0.2, 0.8, 0.5, 0.3];
const BAD_FORMAT: [f64; 4] = [0.0, 0.0, 0.0, 1.0];

impl RewardModel<usize, usize> for Tasks {
    fn feedback(&mut self, pairs: &[(&usize, &usize)]) -> Result<Vec<BTreeMap<String, f64>>> {
        self.last.clear();
        Ok(pairs
            .iter()
            .map(|(&t, &a)| {
                let correct = if (self.rng.uniform() as f64) < P_CORRECT[t][a] { 1.0 } else { 0.0 };
                self.last.push((t, correct));
                BTreeMap::from([
                    ("correctness".to_string(), correct),
                    ("reasoning_quality".to_string(), QUALITY[a]),
                    ("format_penalty".to_string(), BAD_FORMAT[a]),
                ])
            })
            .collect())
    }
}

fn main() -> Result<()> {
    let mixer = RewardMixer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/reward_mixer.yaml"))?;
    let config = GroupConfig { group_size: 8, epochs: 2, entropy_coef: 0.02, lr: 0.3, ..GroupConfig::default() };
    let mut trainer = GroupTrainer::new(config, mixer)?;
    let mut policy = TabularPolicy { logits: vec![vec![0.0; 4]; 3], grad: vec![vec![0.0; 4]; 3] };
    let mut tasks = Tasks { rng: Rng::new(7), last: Vec::new() };
    let mut curriculum = Curriculum::new(CurriculumConfig::default())?;
    let mut rng = Rng::new(11);
    let mut sampled = [0usize; 3];
    let mut reward = 0.0;
    println!("{:>5}  {:>12}  {:>26}  {:>26}", "step", "mixed reward", "EMA correctness e/m/h", "sampling prob e/m/h");
    for step in 1..=300 {
        let states = curriculum.sample(&TASKS, 4, &mut rng)?;
        states.iter().for_each(|&t| sampled[t] += 1);
        let m = trainer.step(&mut policy, &mut tasks, &states)?;
        reward += m.mean_reward;
        curriculum.update_many(tasks.last.iter().map(|&(t, c)| (TASKS[t], c)))?;
        if step % 50 == 0 {
            let ema: Vec<String> = TASKS.iter().map(|t| format!("{:.2}", curriculum.success(t))).collect();
            let prob: Vec<String> = curriculum.probabilities(&TASKS).iter().map(|p| format!("{p:.2}")).collect();
            println!("{step:>5}  {:>12.3}  {:>26}  {:>26}", reward / 50.0, ema.join(" / "), prob.join(" / "));
            reward = 0.0;
        }
    }
    let arms: Vec<usize> = (0..3)
        .map(|t| policy.probs(t).iter().enumerate().fold(0, |b, (i, &p)| if p > policy.probs(t)[b] { i } else { b }))
        .collect();
    println!("tasks sampled (easy/medium/hard): {sampled:?}; preferred arm per task: {arms:?}");
    Ok(())
}
