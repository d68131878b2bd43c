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
use gepa_dapo_grn::rl::bandit::SoftmaxPolicy;
use gepa_dapo_grn::rl::curriculum::{Curriculum, CurriculumConfig};
use gepa_dapo_grn::rl::group_trainer::{GroupConfig, GroupTrainer};
use gepa_dapo_grn::rl::policy::{Policy, RewardModel};
use gepa_dapo_grn::util::rng::Rng;
use gepa_dapo_grn::Result;
use std::collections::BTreeMap;

const TASKS: [&str; 3] = ["easy", "medium", "hard"];

/// One softmax over the arms per task. Implementing [`Policy`] for your own model looks like
/// this; here each task delegates to the crate's single-state [`SoftmaxPolicy`].
struct TabularPolicy {
    tasks: Vec<SoftmaxPolicy>,
}

impl TabularPolicy {
    /// The pairs of one task, in the single-state form [`SoftmaxPolicy`] takes, with their
    /// positions in `pairs`.
    fn of_task<'a>(pairs: &[(&usize, &'a usize)], task: usize) -> (Vec<usize>, Vec<(&'static (), &'a usize)>) {
        pairs.iter().enumerate().filter(|(_, (&t, _))| t == task).map(|(i, (_, a))| (i, (&(), *a))).unzip()
    }
}

impl Policy for TabularPolicy {
    type State = usize;
    type Action = usize;

    fn sample(&mut self, task: &usize, g: usize, rng: &mut Rng) -> Result<Vec<(usize, f64)>> {
        self.tasks[*task].sample(&(), g, rng)
    }

    fn evaluate(&mut self, pairs: &[(&usize, &usize)]) -> Result<Vec<(f64, f64)>> {
        let mut out = vec![(0.0, 0.0); pairs.len()];
        for (t, policy) in self.tasks.iter_mut().enumerate() {
            let (idx, own) = Self::of_task(pairs, t);
            for (i, r) in idx.into_iter().zip(policy.evaluate(&own)?) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn backward(&mut self, pairs: &[(&usize, &usize)], dlogp: &[f64], dentropy: &[f64]) -> Result<()> {
        for (t, policy) in self.tasks.iter_mut().enumerate() {
            let (idx, own) = Self::of_task(pairs, t);
            let dl: Vec<f64> = idx.iter().map(|&i| dlogp[i]).collect();
            let de: Vec<f64> = idx.iter().map(|&i| dentropy[i]).collect();
            policy.backward(&own, &dl, &de)?;
        }
        Ok(())
    }

    fn step(&mut self, lr: f64) -> Result<()> {
        self.tasks.iter_mut().try_for_each(|p| p.step(lr))
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
    let mut policy = TabularPolicy { tasks: vec![SoftmaxPolicy::new(4); 3] };
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
        .map(|t| {
            let p = policy.tasks[t].probs();
            (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b })
        })
        .collect();
    println!("tasks sampled (easy/medium/hard): {sampled:?}; preferred arm per task: {arms:?}");
    Ok(())
}
