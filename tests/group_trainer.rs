//! The model-agnostic group trainer on the drifting bandit: it learns the best arm, follows it
//! when the arms rotate (regret falls within each period), and rejects bad input.

use gepa_dapo_grn::reward::mixer::RewardMixer;
use gepa_dapo_grn::rl::bandit::{DriftingBandit, SoftmaxPolicy};
use gepa_dapo_grn::rl::group_trainer::{GroupConfig, GroupTrainer};

fn trainer(seed: u64) -> GroupTrainer {
    let config = GroupConfig { group_size: 16, epochs: 2, entropy_coef: 0.1, lr: 0.5, seed, ..GroupConfig::default() };
    GroupTrainer::new(config, RewardMixer::from_weights([("reward", 1.0)]).unwrap()).unwrap()
}

#[test]
fn regret_falls_within_each_period() {
    let mut env = DriftingBandit::new(vec![0.2, 0.5, 1.0, 0.0, 0.3], 300, 0.5, 3);
    let mut policy = SoftmaxPolicy::new(5);
    let mut t = trainer(5);
    let mut regret = Vec::new();
    for _ in 0..900 {
        regret.push(env.regret(&policy));
        t.step(&mut policy, &mut env, &[()]).unwrap();
        env.tick();
    }
    let window = |a: usize| regret[a..a + 30].iter().sum::<f64>() / 30.0;
    for period in 0..3 {
        let (start, end) = (window(period * 300), window(period * 300 + 270));
        println!("period {period}: regret {start:.4} at the start, {end:.4} at the end");
        assert!(end < 0.1, "period {period}: still {end} regret at the end");
        assert!(end < start / 3.0, "period {period}: regret did not fall ({start} -> {end})");
    }
}

#[test]
fn one_step_moves_probability_toward_the_better_arm() {
    // Two arms, deterministic rewards 1 and 0: after one step the better arm gains mass.
    let mut env = DriftingBandit::new(vec![1.0, 0.0], 1_000, 0.0, 0);
    let mut policy = SoftmaxPolicy::new(2);
    let m = trainer(1).step(&mut policy, &mut env, &[(), ()]).unwrap();
    assert_eq!(m.actions, 32);
    assert!(policy.probs()[0] > 0.5, "{:?}", policy.probs());
    // The first epoch starts at ratio 1, so nothing is clipped then; metrics are finite.
    assert!(m.loss.is_finite() && m.entropy > 0.0);
}

#[test]
fn bad_input_is_rejected() {
    let mut env = DriftingBandit::new(vec![1.0, 0.0], 10, 0.0, 0);
    let mut policy = SoftmaxPolicy::new(2);
    let e = trainer(0).step(&mut policy, &mut env, &[]).unwrap_err().to_string();
    assert!(e.contains("no states"), "{e}");
    let bad = GroupConfig { group_size: 0, ..GroupConfig::default() };
    assert!(GroupTrainer::new(bad, RewardMixer::from_weights([("reward", 1.0)]).unwrap()).is_err());
    // A mixer weight for a key the reward model never produces is named at the first step.
    let mut t =
        GroupTrainer::new(GroupConfig::default(), RewardMixer::from_weights([("accuracy", 1.0)]).unwrap()).unwrap();
    let e = t.step(&mut policy, &mut env, &[()]).unwrap_err().to_string();
    assert!(e.contains("accuracy"), "{e}");
}
