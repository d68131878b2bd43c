//! The RL controllers through the public API: advantages, adaptive KL, curriculum, safety rules,
//! dynamic sampling and overlong shaping, each on small hand-checked cases.

use std::collections::BTreeMap;

use gepa_dapo_grn::rl::advantage::{group_advantages, group_advantages_by_id, AdvantageConfig, AdvantageScaling};
use gepa_dapo_grn::rl::curriculum::{Curriculum, CurriculumConfig};
use gepa_dapo_grn::rl::dynamic_sampling::{filter_groups, BatchFiller, FillStatus};
use gepa_dapo_grn::rl::kl_controller::KlController;
use gepa_dapo_grn::rl::overlong::{truncation_mask, OverlongShaping};
use gepa_dapo_grn::rl::safety::{tag_means, SafetyAction, SafetyConfig, SafetyDecision, SafetyMonitor, Trigger};
use gepa_dapo_grn::util::rng::Rng;
use gepa_dapo_grn::Error;

fn metrics(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
    kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn advantages_for_ragged_groups_by_hand() {
    // Groups [1, 0, 0, 1] (mean ½, unbiased std √(1/3)), [5] (singleton), [2, 2] (equal).
    let r = [1.0, 0.0, 0.0, 1.0, 5.0, 2.0, 2.0];
    let cfg = AdvantageConfig { eps: 0.0, ..Default::default() };
    let a = group_advantages(&r, &[4, 1, 2], &cfg).unwrap();
    let z = 0.5 / (1.0f64 / 3.0).sqrt();
    let want = [z, -z, -z, z, 0.0, 0.0, 0.0];
    for (x, y) in a.iter().zip(want) {
        assert!((x - y).abs() < 1e-12, "{a:?}");
    }
    assert!(a.iter().all(|x| x.is_finite()));

    // Dr. GRPO: centred only, then clipped.
    let cfg = AdvantageConfig { scaling: AdvantageScaling::None, eps: 1e-4, clip: Some(0.25) };
    assert_eq!(group_advantages(&r, &[4, 1, 2], &cfg).unwrap(), vec![0.25, -0.25, -0.25, 0.25, 0.0, 0.0, 0.0]);

    // Grouping by prompt id gives the same numbers when members are interleaved.
    let ids = [7u64, 9, 7, 9];
    let a = group_advantages_by_id(&[1.0, 3.0, 2.0, 5.0], &ids, &AdvantageConfig::default()).unwrap();
    let b = group_advantages(&[1.0, 2.0, 3.0, 5.0], &[2, 2], &AdvantageConfig::default()).unwrap();
    assert_eq!(a, vec![b[0], b[2], b[1], b[3]]);
}

#[test]
fn advantage_errors_name_the_culprit() {
    let cfg = AdvantageConfig::default();
    let e = group_advantages(&[0.0, f64::NAN, 1.0], &[3], &cfg).unwrap_err();
    assert!(matches!(e, Error::Invalid(ref m) if m.contains("reward 1")), "{e}");
    let e = group_advantages(&[0.0, 1.0], &[0, 2], &cfg).unwrap_err();
    assert!(e.to_string().contains("group 0 is empty"), "{e}");
    let e = group_advantages(&[0.0, 1.0], &[1], &cfg).unwrap_err();
    assert!(e.to_string().contains("sum to 1"), "{e}");
    let cfg: AdvantageConfig = serde_json::from_str(r#"{"scaling": "batch", "clip": 3.0}"#).unwrap();
    assert_eq!(cfg, AdvantageConfig { scaling: AdvantageScaling::Batch, eps: 1e-4, clip: Some(3.0) });
}

#[test]
fn adaptive_kl_steers_toward_target() {
    // A toy policy whose KL to the reference falls as β rises: kl = 0.02 / β.
    // At β = 0.01 the KL (2.0) is far above the 0.1 target, so β must grow until kl ≈ target,
    // i.e. β ≈ 0.2. Starting far above (β = 5, kl = 0.004) it must shrink to the same place.
    for start in [0.01, 5.0] {
        let mut c = KlController::adaptive(start, 0.1, 64.0).unwrap();
        let mut betas = vec![c.beta()];
        for _ in 0..2000 {
            let kl = 0.02 / c.beta();
            betas.push(c.update(kl, 16).unwrap());
        }
        let kl = 0.02 / c.beta();
        assert!((kl - 0.1).abs() < 0.005, "start {start}: final kl {kl}, beta {}", c.beta());
        // Monotone approach from either side while far away.
        if start < 0.2 {
            assert!(betas[1] > betas[0] && betas[10] > betas[1]);
        } else {
            assert!(betas[1] < betas[0] && betas[10] < betas[1]);
        }
    }
    let mut fixed = KlController::fixed(0.04).unwrap();
    assert_eq!(fixed.update(3.0, 16).unwrap(), 0.04);
    assert!(fixed.update(f64::INFINITY, 16).is_err());
}

#[test]
fn curriculum_favours_mid_success_tasks() {
    let mut c = Curriculum::new(CurriculumConfig { alpha: 0.5, ..Default::default() }).unwrap();
    for _ in 0..20 {
        c.update_many([("solved", 1.0), ("hopeless", 0.0), ("mid", 0.0), ("mid", 1.0)]).unwrap();
    }
    let tasks = ["solved", "hopeless", "mid", "unseen"];
    let p = c.probabilities(&tasks);
    assert!(p[2] > 3.0 * p[0] && p[2] > 3.0 * p[1], "{p:?}");
    // An unseen task gets the prior ½, the largest weight, so it is tried early.
    assert_eq!(c.success("unseen"), 0.5);
    assert!(p[3] >= p[2]);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);

    // Sampling follows the weights and depends only on the seed.
    let a = c.sample(&tasks, 4000, &mut Rng::new(42)).unwrap();
    let b = c.sample(&tasks, 4000, &mut Rng::new(42)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c.sample(&tasks, 4000, &mut Rng::new(43)).unwrap());
    let mut counts = [0usize; 4];
    for i in a {
        counts[i] += 1;
    }
    assert!(counts[2] > 3 * counts[0] && counts[2] > 3 * counts[1], "{counts:?}");
    assert!(counts[0] > 0 && counts[1] > 0, "the floor keeps every task reachable: {counts:?}");
}

#[test]
fn curriculum_state_round_trips_for_checkpoints() {
    let mut c = Curriculum::new(CurriculumConfig::default()).unwrap();
    c.update("a", 0.3).unwrap();
    c.update("b", 0.9).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: Curriculum = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    let tasks = ["a", "b", "c"];
    assert_eq!(back.sample(&tasks, 50, &mut Rng::new(1)).unwrap(), c.sample(&tasks, 50, &mut Rng::new(1)).unwrap());
    assert!(c.update("a", f64::NAN).is_err());
}

const RULES_YAML: &str = r#"
rules:
  - { name: kl_limit, metric: kl, when: { above: 0.5 }, action: skip_update }
  - { name: nan_loss, metric: loss, when: non_finite, action: skip_update }
  - { name: format, metric: "tags.format_penalty", when: { above: 0.3 }, action: { raise_beta: 2.0 } }
  - { name: grad_spike, metric: grad_norm, when: { above: 100.0 }, action: { scale_lr: 0.5 } }
"#;

fn monitor() -> SafetyMonitor {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety.yaml");
    std::fs::write(&path, RULES_YAML).unwrap();
    SafetyMonitor::new(SafetyConfig::from_path(&path).unwrap()).unwrap()
}

#[test]
fn safety_kl_over_limit_skips_the_update() {
    let m = monitor();
    let quiet = metrics(&[("kl", 0.1), ("loss", 1.0), ("tags.format_penalty", 0.0), ("grad_norm", 1.0)]);
    assert!(m.evaluate(&quiet).is_empty());
    m.check_metrics(&quiet).unwrap();

    let ev = m.evaluate(&metrics(&[("kl", 0.9), ("loss", 1.0)]));
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].rule.as_str(), ev[0].value, ev[0].action), ("kl_limit", 0.9, SafetyAction::SkipUpdate));
    assert_eq!(ev[0].to_string(), "safety: rule kl_limit: kl = 0.9 (> 0.5) -> skip update");
    let d = SafetyDecision::from_events(&ev);
    assert!(d.skip_update && d.lr_scale == 1.0 && d.beta_scale == 1.0);
}

#[test]
fn safety_non_finite_loss_skips_the_update() {
    let m = monitor();
    for loss in [f64::NAN, f64::INFINITY] {
        let ev = m.evaluate(&metrics(&[("loss", loss)]));
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].rule.as_str(), ev[0].when), ("nan_loss", Trigger::NonFinite));
        assert!(SafetyDecision::from_events(&ev).skip_update);
    }
    // A NaN KL also trips the `kl > 0.5` rule instead of slipping past the comparison.
    assert_eq!(m.evaluate(&metrics(&[("kl", f64::NAN)]))[0].rule, "kl_limit");
}

#[test]
fn safety_tag_mean_over_threshold_raises_beta() {
    let m = monitor();
    let per_completion: Vec<BTreeMap<String, f64>> =
        [1.0, 0.0, 1.0, 0.0].iter().map(|&v| metrics(&[("format_penalty", v)])).collect();
    let mut step = metrics(&[("kl", 0.1), ("loss", 0.5)]);
    step.extend(tag_means(&per_completion));
    let ev = m.evaluate(&step);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].metric.as_str(), ev[0].value), ("tags.format_penalty", 0.5));
    let d = SafetyDecision::from_events(&ev);
    assert!(!d.skip_update && d.beta_scale == 2.0);
    // The decision feeds the KL controller.
    let mut kl = KlController::adaptive(0.1, 0.1, 1000.0).unwrap();
    assert!((kl.scale(d.beta_scale).unwrap() - 0.2).abs() < 1e-15);
    // Events are loggable as JSON.
    let json = serde_json::to_value(&ev[0]).unwrap();
    assert_eq!(json["action"], serde_json::json!({"raise_beta": 2.0}));
}

#[test]
fn safety_grad_spike_scales_lr_and_actions_combine() {
    let m = monitor();
    let ev = m.evaluate(&metrics(&[("grad_norm", 500.0), ("kl", 2.0), ("tags.format_penalty", 0.9)]));
    let names: Vec<&str> = ev.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(names, ["kl_limit", "format", "grad_spike"]);
    let d = SafetyDecision::from_events(&ev);
    assert_eq!((d.skip_update, d.lr_scale, d.beta_scale), (true, 0.5, 2.0));
}

#[test]
fn safety_config_formats_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("s.toml");
    std::fs::write(
        &toml_path,
        "[[rules]]\nname = \"lr\"\nmetric = \"grad_norm\"\nwhen = { above = 10.0 }\naction = { scale_lr = 0.1 }\n\n\
         [[rules]]\nname = \"nan\"\nmetric = \"loss\"\nwhen = \"non_finite\"\naction = \"skip_update\"\n",
    )
    .unwrap();
    let toml_cfg = SafetyConfig::from_path(&toml_path).unwrap();
    let json_path = dir.path().join("s.json");
    std::fs::write(&json_path, serde_json::to_string(&toml_cfg).unwrap()).unwrap();
    assert_eq!(SafetyConfig::from_path(&json_path).unwrap(), toml_cfg);
    assert_eq!(toml_cfg.rules[0].action, SafetyAction::ScaleLr(0.1));

    // A misspelt metric is caught on the first step's metrics.
    let m = SafetyMonitor::new(toml_cfg).unwrap();
    let e = m.check_metrics(&metrics(&[("grad_norm", 1.0)])).unwrap_err().to_string();
    assert!(e.contains("`nan`") && e.contains("`loss`"), "{e}");

    // Malformed and invalid files name the file.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "rules:\n  - { name: x, metric: kl, when: { sideways: 1 }, action: skip_update }\n").unwrap();
    let e = SafetyConfig::from_path(&bad).unwrap_err();
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("bad.yaml"), "{e}");
    std::fs::write(&bad, "rules:\n  - { name: y, metric: kl, when: { above: 1 }, action: { raise_beta: 0.5 } }\n")
        .unwrap();
    let e = SafetyConfig::from_path(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("`y`"), "{e}");
    assert!(SafetyConfig::from_path(dir.path().join("missing.yaml")).is_err());
}

#[test]
fn dynamic_sampling_fills_a_batch_within_the_round_cap() {
    // Round 1: groups of 2 with rewards {1,1} {0,1} {0,0} {0.5,0.25}: two are informative.
    let f = filter_groups(&[1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.25], &[2, 2, 2, 2]).unwrap();
    assert_eq!((f.kept.clone(), f.dropped), (vec![1, 3], 2));
    let mut filler = BatchFiller::new(3, 3).unwrap();
    assert_eq!(filler.record(&f), FillStatus::NeedMore(1));
    // Round 2: nothing informative.
    let f = filter_groups(&[1.0, 1.0, 1.0], &[3]).unwrap();
    assert_eq!(filler.record(&f), FillStatus::NeedMore(1));
    // Round 3: the cap is reached even though one group is still missing.
    let f = filter_groups(&[1.0, 1.0], &[1, 1]).unwrap();
    assert_eq!(f.dropped, 2);
    assert_eq!(filler.record(&f), FillStatus::RoundCapReached);
    assert_eq!((filler.kept, filler.dropped, filler.rounds), (2, 5, 3));
}

#[test]
fn overlong_shaping_and_truncation_mask() {
    let s = OverlongShaping::new(512, 128).unwrap();
    let lens = [10, 384, 385, 448, 512, 513];
    let mut r = [1.0; 6];
    s.apply(&mut r, &lens).unwrap();
    assert_eq!(r, [1.0, 1.0, 1.0 - 1.0 / 128.0, 0.5, 0.0, 0.0]);
    let e = OverlongShaping::new(128, 512).unwrap_err().to_string();
    assert!(e.contains("512") && e.contains("128"), "{e}");
    let cfg: OverlongShaping = serde_json::from_str(r#"{"max_len": 20, "cache_len": 4}"#).unwrap();
    assert_eq!(cfg.penalty(18), -0.5);

    let keep = truncation_mask(&[512, 512, 100], &[true, false, false], 512).unwrap();
    assert_eq!(keep, [true, false, true]);
}
