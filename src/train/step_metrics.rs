//! A DAPO step's metrics under TRL's names (`GRPOTrainer`'s logged keys: `reward`,
//! `reward_std`, `rewards/<key>/mean`, `completions/mean_length`, `clip_ratio/low_mean`, …),
//! and the window that averages them over `logging_steps` steps as TRL's `log` does.
//!
//! Statistics follow TRL 1.16: `reward_std` and `rewards/<key>/std` are the unbiased (n − 1)
//! standard deviation over the step's completions (NaN for one completion, as torch gives);
//! `frac_reward_zero_std` is the share of sampled groups whose mixed rewards are all equal;
//! completion lengths count the end token; `completions/clipped_ratio` is the share that hit
//! the length cap with no end token, and the `terminated` lengths are over the others (0
//! when there are none, as in TRL); `num_tokens` counts prompt and completion tokens of every
//! trained completion since the run began.

use std::collections::BTreeMap;

use super::dapo::RlMetrics;

/// What one step measured, gathered by the trainer (slices are per kept completion).
#[derive(Clone, Debug)]
pub struct StepInputs<'a> {
    /// Mixed (scalar) rewards.
    pub rewards: &'a [f64],
    /// Each completion's reward vector, by key.
    pub reward_vectors: Vec<&'a BTreeMap<String, f64>>,
    /// Each completion's tags, by key.
    pub tags: Vec<&'a BTreeMap<String, f64>>,
    /// Advantages.
    pub advantages: &'a [f64],
    /// Completion lengths in tokens, the end token included.
    pub lengths: Vec<usize>,
    /// Whether each completion hit the cap without an end token.
    pub truncated: Vec<bool>,
    /// Sampled groups (before any dynamic-sampling filter) and how many had equal rewards.
    pub groups: usize,
    /// Of `groups`, those whose mixed rewards all equal.
    pub zero_std_groups: usize,
    /// The update's numbers.
    pub rl: &'a RlMetrics,
    /// Seconds per phase: rollout, score, reference, update.
    pub timing: [f64; 4],
    /// Completion tokens generated this step.
    pub completion_tokens: usize,
    /// Prompt + completion tokens trained on since the run began (this step included).
    pub num_tokens: u64,
}

/// The names of [`StepInputs::timing`]'s phases, as logged (`timing/<phase>_s`).
pub const PHASES: [&str; 4] = ["rollout", "score", "reference", "update"];

/// Mean and unbiased standard deviation of the finite values (NaN when there are none; the
/// deviation is NaN for a single value), as torch's `nanmean` / TRL's `nanstd`.
pub fn mean_std(xs: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = xs.into_iter().filter(|x| !x.is_nan()).collect();
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The step's metrics under TRL's names (see the module docs).
pub fn trl_metrics(x: &StepInputs<'_>) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: f64| {
        m.insert(k.to_string(), v);
    };
    let (reward, reward_std) = mean_std(x.rewards.iter().copied());
    put("reward", reward);
    put("reward_std", reward_std);
    put("frac_reward_zero_std", if x.groups == 0 { 0.0 } else { x.zero_std_groups as f64 / x.groups as f64 });
    let (adv_mean, adv_std) = mean_std(x.advantages.iter().copied());
    put("advantages/mean", adv_mean);
    put("advantages/std", adv_std);

    let lens = || x.lengths.iter().map(|&l| l as f64);
    let n = x.lengths.len().max(1) as f64;
    put("completions/mean_length", lens().sum::<f64>() / n);
    put("completions/min_length", if x.lengths.is_empty() { 0.0 } else { lens().fold(f64::INFINITY, f64::min) });
    put("completions/max_length", lens().fold(0.0, f64::max));
    let clipped = x.truncated.iter().filter(|&&t| t).count();
    put("completions/clipped_ratio", clipped as f64 / n);
    let term: Vec<f64> = x.lengths.iter().zip(&x.truncated).filter(|(_, &t)| !t).map(|(&l, _)| l as f64).collect();
    let (t_mean, t_min, t_max) = if term.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        let mean = term.iter().sum::<f64>() / term.len() as f64;
        (mean, term.iter().copied().fold(f64::INFINITY, f64::min), term.iter().copied().fold(0.0, f64::max))
    };
    put("completions/mean_terminated_length", t_mean);
    put("completions/min_terminated_length", t_min);
    put("completions/max_terminated_length", t_max);

    let rl = x.rl;
    put("loss", f64::from(rl.loss));
    put("policy_loss", f64::from(rl.policy_loss));
    put("kl", f64::from(rl.kl));
    put("beta", rl.kl_coef);
    put("entropy", f64::from(rl.entropy));
    put("clip_ratio/low_mean", f64::from(rl.clip_frac_low));
    put("clip_ratio/high_mean", f64::from(rl.clip_frac_high));
    // A token is clipped below only with A < 0 and above only with A > 0: the two are
    // disjoint, so the region fraction is their sum.
    put("clip_ratio/region_mean", f64::from(rl.clip_frac_low) + f64::from(rl.clip_frac_high));
    put("grad_norm", f64::from(rl.grad_norm));
    put("learning_rate", f64::from(rl.lr));
    put("num_tokens", x.num_tokens as f64);

    let total: f64 = x.timing.iter().sum();
    for (phase, s) in PHASES.iter().zip(x.timing) {
        put(&format!("timing/{phase}_s"), s);
    }
    put("timing/step_s", total);
    put("tokens_per_second", if total > 0.0 { x.completion_tokens as f64 / total } else { 0.0 });

    let keys: std::collections::BTreeSet<&String> = x.reward_vectors.iter().flat_map(|r| r.keys()).collect();
    for k in keys {
        let (mean, std) = mean_std(x.reward_vectors.iter().map(|r| r.get(k).copied().unwrap_or(f64::NAN)));
        put(&format!("rewards/{k}/mean"), mean);
        put(&format!("rewards/{k}/std"), std);
    }
    let tag_keys: std::collections::BTreeSet<&String> = x.tags.iter().flat_map(|r| r.keys()).collect();
    for k in tag_keys {
        let (mean, _) = mean_std(x.tags.iter().map(|r| r.get(k).copied().unwrap_or(f64::NAN)));
        put(&format!("tags/{k}/mean"), mean);
    }
    m
}

/// Whether `key` measures wall-clock time (phase seconds, throughput): left out of what a
/// checkpoint keeps (`log_history`), so two identical runs write identical checkpoints.
pub fn is_wall_clock(key: &str) -> bool {
    key.starts_with("timing/") || key == "tokens_per_second"
}

/// Metrics that are running totals or settings at the time of logging: a window reports the
/// last value, not the mean (TRL logs the learning rate and `num_tokens` so).
const LAST_VALUE: &[&str] = &["num_tokens", "learning_rate", "beta"];

/// Steps' metrics gathered between two logging steps; [`LogWindow::take`] averages them as
/// TRL's `log` does (NaN values left out of each mean; a key with none reports NaN).
#[derive(Clone, Debug, Default)]
pub struct LogWindow {
    sums: BTreeMap<String, (f64, u64)>,
    last: BTreeMap<String, f64>,
    steps: u64,
}

impl LogWindow {
    /// Adds one step's metrics.
    pub fn add(&mut self, m: &BTreeMap<String, f64>) {
        for (k, &v) in m {
            let e = self.sums.entry(k.clone()).or_insert((0.0, 0));
            if !v.is_nan() {
                e.0 += v;
                e.1 += 1;
            }
            self.last.insert(k.clone(), v);
        }
        self.steps += 1;
    }

    /// Steps added since the last [`LogWindow::take`].
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The window's averages, and a fresh window.
    pub fn take(&mut self) -> BTreeMap<String, f64> {
        let out = self
            .sums
            .iter()
            .map(|(k, &(s, n))| {
                let v = if LAST_VALUE.contains(&k.as_str()) {
                    self.last[k]
                } else if n == 0 {
                    f64::NAN
                } else {
                    s / n as f64
                };
                (k.clone(), v)
            })
            .collect();
        *self = LogWindow::default();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_torch() {
        let (m, s) = mean_std([1.0, 2.0, 4.0]);
        assert!((m - 7.0 / 3.0).abs() < 1e-12);
        // torch.tensor([1., 2., 4.]).std() = 1.5275252316519468
        assert!((s - 1.527_525_231_651_946_8).abs() < 1e-12);
        assert!(mean_std([3.0]).1.is_nan());
        assert!(mean_std([f64::NAN]).0.is_nan());
        assert_eq!(mean_std([1.0, f64::NAN, 3.0]).0, 2.0);
    }

    #[test]
    fn a_step_under_trl_names() {
        let rl = RlMetrics { clip_frac_low: 0.25, clip_frac_high: 0.125, lr: 1e-3, ..RlMetrics::default() };
        let r = [BTreeMap::from([("a".to_string(), 1.0)]), BTreeMap::from([("a".to_string(), 0.0), ("b".into(), 2.0)])];
        let x = StepInputs {
            rewards: &[1.0, 0.0],
            reward_vectors: r.iter().collect(),
            advantages: &[0.7, -0.7],
            lengths: vec![3, 5],
            truncated: vec![false, true],
            groups: 4,
            zero_std_groups: 1,
            rl: &rl,
            timing: [1.0, 0.5, 0.0, 0.5],
            completion_tokens: 8,
            num_tokens: 20,
            tags: Vec::new(),
        };
        let m = trl_metrics(&x);
        assert_eq!(m["reward"], 0.5);
        assert!((m["reward_std"] - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(m["frac_reward_zero_std"], 0.25);
        assert_eq!((m["completions/min_length"], m["completions/max_length"]), (3.0, 5.0));
        assert_eq!(m["completions/clipped_ratio"], 0.5);
        assert_eq!(m["completions/mean_terminated_length"], 3.0);
        assert_eq!(m["clip_ratio/region_mean"], 0.375);
        assert_eq!(m["rewards/a/mean"], 0.5);
        assert_eq!(m["rewards/b/mean"], 2.0, "a key only some completions have is averaged over those");
        assert!(m["rewards/b/std"].is_nan());
        assert_eq!(m["tokens_per_second"], 4.0);
        assert_eq!(m["learning_rate"], 1e-3f32 as f64);
    }

    #[test]
    fn the_window_averages_and_keeps_running_totals_last() {
        let mut w = LogWindow::default();
        w.add(&BTreeMap::from([("reward".to_string(), 1.0), ("num_tokens".into(), 10.0), ("x".into(), f64::NAN)]));
        w.add(&BTreeMap::from([("reward".to_string(), 0.0), ("num_tokens".into(), 25.0), ("x".into(), f64::NAN)]));
        assert_eq!(w.steps(), 2);
        let m = w.take();
        assert_eq!((m["reward"], m["num_tokens"]), (0.5, 25.0));
        assert!(m["x"].is_nan());
        assert_eq!(w.steps(), 0);
        assert!(w.take().is_empty());
    }
}
