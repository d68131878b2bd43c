//! Safety rules: checks over a step's metrics (and the batch means of GEPA tags) that, when
//! tripped, ask the trainer to skip the update, scale the learning rate, or raise the KL
//! coefficient. Every tripped rule becomes a [`SafetyEvent`] that the trainer logs, both as a
//! JSON object and as a human-readable line, so no intervention is silent.
//!
//! A rules file (YAML, TOML or JSON, chosen by extension), e.g. in YAML:
//!
//! ```yaml
//! rules:
//!   - { name: kl_limit, metric: kl, when: { above: 0.5 }, action: skip_update }
//!   - { name: nan_loss, metric: loss, when: non_finite, action: skip_update }
//!   - { name: format, metric: "tags.format_penalty", when: { above: 0.3 }, action: { raise_beta: 2.0 } }
//!   - { name: grad_spike, metric: grad_norm, when: { above: 100.0 }, action: { scale_lr: 0.5 } }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix under which [`tag_means`] puts the batch mean of each GEPA tag, so rules can
/// name tags and metrics in one map (`tags.format_penalty`).
pub const TAG_PREFIX: &str = "tags.";

/// When a rule trips.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The value is above the threshold. A NaN value also trips it: a comparison with NaN is
    /// false, and a rule like `kl > 0.5` must not pass a KL that has blown up to NaN.
    Above(f64),
    /// The value is below the threshold (NaN trips it too, for the same reason).
    Below(f64),
    /// The value is NaN or infinite.
    NonFinite,
}

impl Trigger {
    fn trips(&self, value: f64) -> bool {
        match *self {
            Trigger::Above(t) => value.is_nan() || value > t,
            Trigger::Below(t) => value.is_nan() || value < t,
            Trigger::NonFinite => !value.is_finite(),
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Above(t) => write!(f, "> {t}"),
            Trigger::Below(t) => write!(f, "< {t}"),
            Trigger::NonFinite => write!(f, "is not finite"),
        }
    }
}

/// What the trainer is asked to do when a rule trips.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyAction {
    /// Discard this step's gradients: no optimizer step.
    SkipUpdate,
    /// Multiply the learning rate by this factor (finite, > 0).
    ScaleLr(f64),
    /// Multiply the KL coefficient β by this factor (finite, ≥ 1).
    RaiseBeta(f64),
}

impl fmt::Display for SafetyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafetyAction::SkipUpdate => write!(f, "skip update"),
            SafetyAction::ScaleLr(x) => write!(f, "scale lr x{x}"),
            SafetyAction::RaiseBeta(x) => write!(f, "raise beta x{x}"),
        }
    }
}

/// One rule: `metric` `when` → `action`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyRule {
    /// A name for logs.
    pub name: String,
    /// The metric it watches (a key of the metrics map, e.g. `kl`, `loss`, `tags.format_penalty`).
    pub metric: String,
    /// When it trips.
    pub when: Trigger,
    /// What it asks for.
    pub action: SafetyAction,
}

/// A set of rules, as loaded from a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// The rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<SafetyRule>,
}

impl SafetyConfig {
    /// Reads rules from a `.yaml`/`.yml`, `.toml` or `.json` file
    /// ([`crate::util::settings_file`]); errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: SafetyConfig = crate::util::settings_file::read(path)?;
        config.validate().map_err(|e| Error::config(path, e.to_string()))?;
        Ok(config)
    }

    /// Checks thresholds and factors; the error names the rule.
    pub fn validate(&self) -> Result<()> {
        for r in &self.rules {
            let bad = |msg: String| Err(Error::Invalid(format!("safety rule `{}`: {msg}", r.name)));
            if r.metric.is_empty() {
                return bad("empty metric name".into());
            }
            if let Trigger::Above(t) | Trigger::Below(t) = r.when {
                if t.is_nan() {
                    return bad("threshold is NaN".into());
                }
            }
            match r.action {
                SafetyAction::ScaleLr(x) if !(x.is_finite() && x > 0.0) => {
                    return bad(format!("scale_lr factor must be finite and > 0, got {x}"))
                }
                SafetyAction::RaiseBeta(x) if !(x.is_finite() && x >= 1.0) => {
                    return bad(format!("raise_beta factor must be finite and >= 1, got {x}"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A tripped rule, with the value that tripped it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SafetyEvent {
    /// The rule's name.
    pub rule: String,
    /// The metric it watched.
    pub metric: String,
    /// The value seen.
    pub value: f64,
    /// The condition it met.
    pub when: Trigger,
    /// What it asks for.
    pub action: SafetyAction,
}

impl fmt::Display for SafetyEvent {
    /// `safety: rule kl_limit: kl = 0.73 (> 0.5) -> skip update`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "safety: rule {}: {} = {} ({}) -> {}", self.rule, self.metric, self.value, self.when, self.action)
    }
}

/// The combined request of a step's events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SafetyDecision {
    /// Any event asked to skip the update.
    pub skip_update: bool,
    /// Product of the `scale_lr` factors (1 when none).
    pub lr_scale: f64,
    /// Product of the `raise_beta` factors (1 when none).
    pub beta_scale: f64,
}

impl SafetyDecision {
    /// Combines `events`: skip if any asks to, factors multiply. Whether a scale persists past
    /// this step is the trainer's policy, not the rule's.
    pub fn from_events(events: &[SafetyEvent]) -> Self {
        let mut d = SafetyDecision { skip_update: false, lr_scale: 1.0, beta_scale: 1.0 };
        for e in events {
            match e.action {
                SafetyAction::SkipUpdate => d.skip_update = true,
                SafetyAction::ScaleLr(x) => d.lr_scale *= x,
                SafetyAction::RaiseBeta(x) => d.beta_scale *= x,
            }
        }
        d
    }
}

/// Evaluates a validated set of rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafetyMonitor {
    rules: Vec<SafetyRule>,
}

impl SafetyMonitor {
    /// A monitor for `config`'s rules. Errors if a rule is invalid.
    pub fn new(config: SafetyConfig) -> Result<Self> {
        config.validate()?;
        Ok(SafetyMonitor { rules: config.rules })
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[SafetyRule] {
        &self.rules
    }

    /// The events of every rule that trips on `metrics`, in rule order. A rule whose metric is
    /// absent does not trip (a step may legitimately lack a metric, e.g. `kl` with β = 0); use
    /// [`SafetyMonitor::check_metrics`] once to catch misspelt metric names.
    pub fn evaluate(&self, metrics: &BTreeMap<String, f64>) -> Vec<SafetyEvent> {
        self.rules
            .iter()
            .filter_map(|r| {
                let &value = metrics.get(&r.metric)?;
                r.when.trips(value).then(|| SafetyEvent {
                    rule: r.name.clone(),
                    metric: r.metric.clone(),
                    value,
                    when: r.when,
                    action: r.action,
                })
            })
            .collect()
    }

    /// Errors naming the first rule whose metric is not in `metrics` (call it on the first
    /// step's metrics so a typo in the rules file fails loudly instead of never tripping).
    pub fn check_metrics(&self, metrics: &BTreeMap<String, f64>) -> Result<()> {
        match self.rules.iter().find(|r| !metrics.contains_key(&r.metric)) {
            Some(r) => Err(Error::Invalid(format!(
                "safety rule `{}` watches metric `{}`, which this step does not produce (have: {})",
                r.name,
                r.metric,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// The mean of each tag over `tags` (one map per completion), keyed `tags.<name>`. A tag absent
/// from some completions is averaged over those that have it.
pub fn tag_means<'a>(tags: impl IntoIterator<Item = &'a BTreeMap<String, f64>>) -> BTreeMap<String, f64> {
    key_means(tags).into_iter().map(|(k, m)| (format!("{TAG_PREFIX}{k}"), m)).collect()
}

/// Per key, the mean of its values over the maps that have it.
pub fn key_means<'a>(maps: impl IntoIterator<Item = &'a BTreeMap<String, f64>>) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for m in maps {
        for (k, &v) in m {
            let s = sums.entry(k.as_str()).or_insert((0.0, 0));
            s.0 += v;
            s.1 += 1;
        }
    }
    sums.into_iter().map(|(k, (s, n))| (k.to_string(), s / n as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, metric: &str, when: Trigger, action: SafetyAction) -> SafetyRule {
        SafetyRule { name: name.into(), metric: metric.into(), when, action }
    }

    fn metrics(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
        kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn triggers() {
        assert!(Trigger::Above(0.5).trips(0.6));
        assert!(!Trigger::Above(0.5).trips(0.5));
        assert!(Trigger::Above(0.5).trips(f64::NAN));
        assert!(Trigger::Below(0.0).trips(-1.0));
        assert!(!Trigger::Below(0.0).trips(0.0));
        assert!(Trigger::NonFinite.trips(f64::INFINITY));
        assert!(!Trigger::NonFinite.trips(1e300));
    }

    #[test]
    fn event_line_reads_well() {
        let m = SafetyMonitor::new(SafetyConfig {
            rules: vec![rule("kl_limit", "kl", Trigger::Above(0.5), SafetyAction::SkipUpdate)],
        })
        .unwrap();
        let ev = m.evaluate(&metrics(&[("kl", 0.75)]));
        assert_eq!(ev[0].to_string(), "safety: rule kl_limit: kl = 0.75 (> 0.5) -> skip update");
    }

    #[test]
    fn invalid_rules_are_named() {
        for (r, want) in [
            (rule("a", "lr", Trigger::Above(1.0), SafetyAction::ScaleLr(0.0)), "`a`"),
            (rule("b", "kl", Trigger::Above(1.0), SafetyAction::RaiseBeta(0.5)), "`b`"),
            (rule("c", "", Trigger::NonFinite, SafetyAction::SkipUpdate), "`c`"),
            (rule("d", "kl", Trigger::Below(f64::NAN), SafetyAction::SkipUpdate), "`d`"),
        ] {
            let e = SafetyMonitor::new(SafetyConfig { rules: vec![r] }).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn tag_means_average_over_present_values() {
        let a: BTreeMap<String, f64> = metrics(&[("format_penalty", 1.0), ("x", 2.0)]);
        let b: BTreeMap<String, f64> = metrics(&[("format_penalty", 0.0)]);
        let m = tag_means([&a, &b]);
        assert_eq!(m["tags.format_penalty"], 0.5);
        assert_eq!(m["tags.x"], 2.0);
    }
}
