//! The reward mixer: GEPA reward vectors in, one scalar reward per completion out, with the
//! weights, normalisations, clipping and missing/NaN policies of a [`MixerConfig`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::feedback::GepaFeedback;
use super::mix_config::{inline_source, ConfigFormat, MixMode, MixerConfig, Normalize, ValuePolicy};
use crate::error::{Error, Result};

/// Exponential moving mean and variance of one key (or of the mixed scalar).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    /// Moving mean.
    pub mean: f64,
    /// Moving (population) variance.
    pub var: f64,
    /// How many calls have updated these statistics; 0 means "never", and the next update
    /// takes the batch's statistics as they are.
    pub updates: u64,
}

impl RunningStats {
    /// The statistics after a batch with mean `m_b` and variance `v_b`: those of a mixture
    /// weighing the past by `momentum` and the batch by `1 − momentum`.
    pub fn updated(&self, m_b: f64, v_b: f64, momentum: f64) -> RunningStats {
        if self.updates == 0 {
            return RunningStats { mean: m_b, var: v_b, updates: 1 };
        }
        let mu = momentum;
        let d = m_b - self.mean;
        RunningStats {
            mean: mu * self.mean + (1.0 - mu) * m_b,
            var: mu * self.var + (1.0 - mu) * v_b + mu * (1.0 - mu) * d * d,
            updates: self.updates + 1,
        }
    }
}

/// The mixer's state across calls: what a checkpoint must keep for an exact resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MixerState {
    /// Running statistics per key normalised with `running`.
    pub keys: BTreeMap<String, RunningStats>,
    /// Running statistics of the weighted sum (`sum_then_normalize` with `running`).
    pub scalar: Option<RunningStats>,
    /// Successful [`RewardMixer::mix`] calls so far; the first-call key check runs while 0.
    pub calls: u64,
}

/// What one [`RewardMixer::mix`] call saw, for the training log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MixStats {
    /// Items mixed.
    pub items: usize,
    /// Per key, the mean of its finite raw values before any policy, normalisation or clip;
    /// a key with no finite value in the batch is absent.
    pub raw_mean: BTreeMap<String, f64>,
    /// Mean of the mixed scalars.
    pub scalar_mean: f64,
    /// Population standard deviation of the mixed scalars.
    pub scalar_std: f64,
    /// Smallest mixed scalar.
    pub scalar_min: f64,
    /// Largest mixed scalar.
    pub scalar_max: f64,
    /// Per key, how many items lacked it (and were handled by the `zero` or `skip` policy).
    pub missing: BTreeMap<String, usize>,
    /// Per key, how many items had a NaN or infinite value (handled by `zero` or `skip`).
    pub non_finite: BTreeMap<String, usize>,
}

/// Mixes GEPA feedback into scalar rewards. Holds the configuration, the file it came from
/// (named in every error) and the running statistics.
#[derive(Clone, Debug)]
pub struct RewardMixer {
    config: MixerConfig,
    source: PathBuf,
    state: MixerState,
}

impl RewardMixer {
    /// A mixer from an in-code configuration, validated.
    pub fn new(config: MixerConfig) -> Result<Self> {
        RewardMixer::with_source(config, inline_source())
    }

    /// A mixer from a configuration that came from `source` (named in errors), validated.
    pub fn with_source(config: MixerConfig, source: impl Into<PathBuf>) -> Result<Self> {
        let source = source.into();
        config.validate(&source)?;
        Ok(RewardMixer { config, source, state: MixerState::default() })
    }

    /// A plain weighted sum of `weights` (see [`MixerConfig::from_weights`]).
    pub fn from_weights<I, S>(weights: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        RewardMixer::new(MixerConfig::from_weights(weights))
    }

    /// Loads a YAML (`.yaml`/`.yml`), JSON or TOML mixer file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        RewardMixer::with_source(MixerConfig::from_file(path)?, path)
    }

    /// Parses a mixer configuration held in memory; `source` names it in errors.
    pub fn parse(text: &str, format: ConfigFormat, source: impl AsRef<Path>) -> Result<Self> {
        let source = source.as_ref();
        RewardMixer::with_source(MixerConfig::parse(text, format, source)?, source)
    }

    /// The configuration.
    pub fn config(&self) -> &MixerConfig {
        &self.config
    }

    /// Where the configuration came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The state across calls (running statistics, call count), for checkpoints.
    pub fn state(&self) -> &MixerState {
        &self.state
    }

    /// Restores a state saved from [`RewardMixer::state`].
    pub fn set_state(&mut self, state: MixerState) {
        self.state = state;
    }

    /// Checks, before any data, that every non-optional key is among `available` (the GEPA
    /// keys the scorers and mapping can produce), naming the first key that is not.
    pub fn check_keys<'a>(&self, available: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let available: Vec<&str> = available.into_iter().collect();
        for (key, kc) in &self.config.keys {
            if !kc.optional && !available.contains(&key.as_str()) {
                return Err(Error::config(
                    &self.source,
                    format!(
                        "key `{key}` has weight {} but no scorer produces it (available: [{}])",
                        kc.weight,
                        available.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Mixes one batch: returns one scalar reward per item of `feedback`, and statistics.
    ///
    /// `group_sizes` are the ragged sizes of consecutive groups (the completions of one prompt),
    /// in order, summing to `feedback.len()` (see
    /// [`group_sizes_by_prompt`](super::group_sizes_by_prompt)); pass `&[feedback.len()]` when
    /// there are no groups. On error nothing changes: the running statistics are committed
    /// only when the whole batch mixes.
    pub fn mix(&mut self, feedback: &[GepaFeedback], group_sizes: &[usize]) -> Result<(Vec<f64>, MixStats)> {
        let groups = self.groups(feedback.len(), group_sizes)?;
        if self.state.calls == 0 {
            self.check_first_batch(feedback)?;
        }
        let cfg = &self.config;
        let n = feedback.len();
        let mut stats = MixStats { items: n, ..MixStats::default() };
        let mut new_state = self.state.clone();
        let mut scalar = vec![0.0f64; n];

        for (key, kc) in &cfg.keys {
            let missing = kc.missing.unwrap_or(cfg.missing);
            let nan = kc.nan.unwrap_or(cfg.nan);
            let (mut n_missing, mut n_nan, mut raw_sum, mut raw_n) = (0usize, 0usize, 0.0f64, 0usize);
            let mut values: Vec<Option<f64>> = Vec::with_capacity(n);
            for (i, fb) in feedback.iter().enumerate() {
                let value = match fb.get(key) {
                    None => {
                        n_missing += 1;
                        self.apply_policy(missing, "missing", key, i, fb, "is missing")?
                    }
                    Some(x) if !x.is_finite() => {
                        n_nan += 1;
                        self.apply_policy(nan, "nan", key, i, fb, &format!("is {x}"))?
                    }
                    Some(x) => {
                        raw_sum += x;
                        raw_n += 1;
                        Some(x)
                    }
                };
                values.push(value);
            }
            if raw_n > 0 {
                stats.raw_mean.insert(key.clone(), raw_sum / raw_n as f64);
            }
            stats.missing.insert(key.clone(), n_missing);
            stats.non_finite.insert(key.clone(), n_nan);

            if cfg.mode == MixMode::NormalizeThenSum {
                let how = kc.normalize.unwrap_or(cfg.normalize);
                let running = new_state.keys.get(key).copied().unwrap_or_default();
                if let Some(updated) = normalize(&mut values, how, &groups, cfg.eps, running, cfg.running_momentum) {
                    new_state.keys.insert(key.clone(), updated);
                }
            }
            for (s, v) in scalar.iter_mut().zip(&values) {
                if let Some(v) = v {
                    let v = match kc.clip {
                        Some((lo, hi)) => v.clamp(lo, hi),
                        None => *v,
                    };
                    *s += kc.weight * v;
                }
            }
        }

        if cfg.mode == MixMode::SumThenNormalize {
            let mut values: Vec<Option<f64>> = scalar.iter().copied().map(Some).collect();
            let running = new_state.scalar.unwrap_or_default();
            if let Some(updated) =
                normalize(&mut values, cfg.normalize, &groups, cfg.eps, running, cfg.running_momentum)
            {
                new_state.scalar = Some(updated);
            }
            // Every entry is still Some: nothing above removes a value.
            scalar = values.into_iter().map(|v| v.unwrap_or(0.0)).collect();
        }
        if let Some((lo, hi)) = cfg.final_clip {
            scalar.iter_mut().for_each(|s| *s = s.clamp(lo, hi));
        }

        let (mean, var) = mean_var(scalar.iter().copied()).unwrap_or((0.0, 0.0));
        stats.scalar_mean = mean;
        stats.scalar_std = var.sqrt();
        stats.scalar_min = scalar.iter().copied().fold(f64::INFINITY, f64::min);
        stats.scalar_max = scalar.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        new_state.calls += 1;
        self.state = new_state;
        Ok((scalar, stats))
    }

    /// The item ranges of each group, after checking the batch and the sizes agree.
    fn groups(&self, n: usize, sizes: &[usize]) -> Result<Vec<Range<usize>>> {
        let src = self.source.display();
        if n == 0 {
            return Err(Error::Invalid(format!("reward mixer {src}: empty batch (no feedback items)")));
        }
        if sizes.is_empty() {
            return Err(Error::Invalid(format!(
                "reward mixer {src}: no group sizes for {n} feedback items (pass [{n}] for a single group)"
            )));
        }
        if let Some(g) = sizes.iter().position(|&s| s == 0) {
            return Err(Error::Invalid(format!("reward mixer {src}: group {g} is empty")));
        }
        let total: usize = sizes.iter().sum();
        if total != n {
            return Err(Error::Invalid(format!(
                "reward mixer {src}: group sizes sum to {total} but the batch has {n} feedback item(s)"
            )));
        }
        let mut start = 0;
        Ok(sizes
            .iter()
            .map(|&s| {
                start += s;
                start - s..start
            })
            .collect())
    }

    /// The first call's check that every weighted, non-optional key occurs in some item.
    fn check_first_batch(&self, feedback: &[GepaFeedback]) -> Result<()> {
        for (key, kc) in &self.config.keys {
            if kc.optional || feedback.iter().any(|fb| fb.get(key).is_some()) {
                continue;
            }
            let mut seen: Vec<&str> =
                feedback.iter().flat_map(|fb| fb.rewards.keys().chain(fb.tags.keys())).map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            return Err(Error::config(
                &self.source,
                format!(
                    "key `{key}` has weight {} but no item of the first batch carries it in its rewards or tags \
                     (they carry [{}]); check the scorer and the feedback mapping, or mark the key `optional: true`",
                    kc.weight,
                    seen.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The value a missing or non-finite entry becomes under `policy`, or the error naming it.
    fn apply_policy(
        &self,
        policy: ValuePolicy,
        field: &str,
        key: &str,
        i: usize,
        fb: &GepaFeedback,
        what: &str,
    ) -> Result<Option<f64>> {
        match policy {
            ValuePolicy::Zero => Ok(Some(0.0)),
            ValuePolicy::Skip => Ok(None),
            ValuePolicy::Error => Err(Error::Invalid(format!(
                "reward mixer {}: key `{key}` {what} in item {i} (prompt {} completion {}); \
                 set `{field}` to zero or skip (for the key or for all keys) to allow it",
                self.source.display(),
                fb.prompt_id,
                fb.completion_id
            ))),
        }
    }
}

/// Population mean and variance of `xs`; `None` when empty.
fn mean_var(xs: impl Iterator<Item = f64> + Clone) -> Option<(f64, f64)> {
    let (sum, n) = xs.clone().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    // Two passes rather than E[x²] − E[x]², which cancels badly when the mean is large.
    let var = xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    Some((mean, var))
}

/// Normalises the present values in place; returns the updated running statistics when `how`
/// is `running` and the batch had a value (the caller stores them).
fn normalize(
    values: &mut [Option<f64>],
    how: Normalize,
    groups: &[Range<usize>],
    eps: f64,
    running: RunningStats,
    momentum: f64,
) -> Option<RunningStats> {
    let scale = |vs: &mut [Option<f64>], mean: f64, std: f64| {
        vs.iter_mut().flatten().for_each(|x| *x = (*x - mean) / (std + eps));
    };
    match how {
        Normalize::None => None,
        Normalize::Group => {
            for g in groups {
                let vs = &mut values[g.clone()];
                if let Some((mean, var)) = mean_var(vs.iter().flatten().copied()) {
                    scale(vs, mean, var.sqrt());
                }
            }
            None
        }
        Normalize::Batch => {
            if let Some((mean, var)) = mean_var(values.iter().flatten().copied()) {
                scale(values, mean, var.sqrt());
            }
            None
        }
        Normalize::Running => {
            let (m_b, v_b) = mean_var(values.iter().flatten().copied())?;
            let updated = running.updated(m_b, v_b, momentum);
            scale(values, updated.mean, updated.var.sqrt());
            Some(updated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::mix_config::KeyConfig;

    fn fb(p: u64, c: u64, pairs: &[(&str, f64)]) -> GepaFeedback {
        let mut f = GepaFeedback::new("t", p, c);
        for (k, v) in pairs {
            f.rewards.insert(k.to_string(), *v);
        }
        f
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn running_update_is_the_mixture_of_past_and_batch() {
        let s = RunningStats::default().updated(2.0, 1.0, 0.9);
        assert_eq!(s, RunningStats { mean: 2.0, var: 1.0, updates: 1 });
        // Past N(2, 1) weight 0.5, batch N(4, 3) weight 0.5: mean 3, var 0.5 + 1.5 + 0.25·4 = 3.
        let s = s.updated(4.0, 3.0, 0.5);
        assert_eq!(s, RunningStats { mean: 3.0, var: 3.0, updates: 2 });
    }

    #[test]
    fn group_normalisation_skips_absent_values_and_singletons_become_zero() {
        let mut cfg = MixerConfig::from_weights([("a", 1.0)]);
        cfg.normalize = Normalize::Group;
        cfg.missing = ValuePolicy::Skip;
        cfg.eps = 1e-12;
        let mut m = RewardMixer::new(cfg).unwrap();
        // Group 0: [1, absent, 3] → mean 2, std 1 → [-1, (nothing), 1]; group 1: [5] → 0.
        let items = [fb(0, 0, &[("a", 1.0)]), fb(0, 1, &[]), fb(0, 2, &[("a", 3.0)]), fb(1, 0, &[("a", 5.0)])];
        let (r, s) = m.mix(&items, &[3, 1]).unwrap();
        close(&r, &[-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(s.missing["a"], 1);
        assert_eq!(s.raw_mean["a"], 3.0);
    }

    #[test]
    fn failed_calls_leave_the_state_alone() {
        let mut cfg = MixerConfig::from_weights([("a", 1.0)]);
        cfg.normalize = Normalize::Running;
        let mut m = RewardMixer::new(cfg).unwrap();
        m.mix(&[fb(0, 0, &[("a", 1.0)]), fb(0, 1, &[("a", 3.0)])], &[2]).unwrap();
        let before = m.state().clone();
        assert!(m.mix(&[fb(0, 0, &[("a", 1.0)]), fb(0, 1, &[("a", f64::NAN)])], &[2]).is_err());
        assert_eq!(m.state(), &before);
        assert_eq!(before.calls, 1);
        assert_eq!(before.keys["a"], RunningStats { mean: 2.0, var: 1.0, updates: 1 });
    }

    #[test]
    fn check_keys_names_the_unproduced_key_and_spares_optional_ones() {
        let mut cfg = MixerConfig::from_weights([("a", 1.0), ("b", 2.0)]);
        let m = RewardMixer::new(cfg.clone()).unwrap();
        m.check_keys(["a", "b", "c"]).unwrap();
        let e = m.check_keys(["a"]).unwrap_err().to_string();
        assert!(e.contains("`b`") && e.contains("<reward mixer config>"), "{e}");
        cfg.keys.insert("b".into(), KeyConfig { optional: true, ..KeyConfig::weight(2.0) });
        RewardMixer::new(cfg).unwrap().check_keys(["a"]).unwrap();
    }
}
