//! The model-agnostic group trainer on a drifting multi-armed bandit (the
//! `grpo-model-agnostic` seed's demo): a softmax policy over 5 arms follows the best arm as
//! the arm means rotate every 300 steps. Prints the mean expected regret per 50-step window;
//! within each period it falls as the policy moves to the new best arm.
//!
//! ```text
//! cargo run --release --example bandit
//! ```

use gepa_dapo_grn::reward::mixer::RewardMixer;
use gepa_dapo_grn::rl::bandit::{DriftingBandit, SoftmaxPolicy};
use gepa_dapo_grn::rl::group_trainer::{GroupConfig, GroupTrainer};

fn main() -> gepa_dapo_grn::Result<()> {
    let mut env = DriftingBandit::new(vec![0.2, 0.5, 1.0, 0.0, 0.3], 300, 0.5, 1);
    let mut policy = SoftmaxPolicy::new(5);
    let config = GroupConfig { group_size: 16, epochs: 2, entropy_coef: 0.1, lr: 0.5, ..GroupConfig::default() };
    let mut trainer = GroupTrainer::new(config, RewardMixer::from_weights([("reward", 1.0)])?)?;
    let window = 50;
    let mut acc = 0.0;
    println!("{:>6}  {:>10}  {:>8}  best arm", "steps", "regret", "entropy");
    for step in 1..=1200u64 {
        acc += env.regret(&policy);
        let m = trainer.step(&mut policy, &mut env, &[()])?;
        if step % window == 0 {
            let best = env.means().iter().enumerate().fold(0, |b, (i, &x)| if x > env.means()[b] { i } else { b });
            println!("{step:>6}  {:>10.4}  {:>8.4}  {best}", acc / window as f64, m.entropy);
            acc = 0.0;
        }
        env.tick();
    }
    Ok(())
}
