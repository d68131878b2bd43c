//! The reward mixer end to end: the example config files, every normalisation and mode with
//! values worked out by hand, the missing/NaN policies, and every bad input named.

use std::path::{Path, PathBuf};

use gepa_dapo_grn::reward::{
    group_sizes_by_prompt, ConfigFormat, FeedbackMapping, GepaFeedback, Metrics, MixMode, Normalize, RewardMixer,
    RunningStats, ValuePolicy,
};

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name)
}

/// Feedback for prompt `p`, completion `c`, with the given rewards.
fn fb(p: u64, c: u64, rewards: &[(&str, f64)]) -> GepaFeedback {
    rewards.iter().fold(GepaFeedback::new("task", p, c), |f, (k, v)| f.with_reward(*k, *v))
}

/// One group per item list, values of key `a` only.
fn items_a(values: &[f64]) -> Vec<GepaFeedback> {
    values.iter().enumerate().map(|(i, &v)| fb(0, i as u64, &[("a", v)])).collect()
}

fn yaml(text: &str) -> RewardMixer {
    RewardMixer::parse(text, ConfigFormat::Yaml, "test.yaml").unwrap()
}

#[track_caller]
fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[test]
fn seed_weights_give_the_weighted_sum_with_the_penalty_read_from_tags() {
    let mut mixer = RewardMixer::from_file(config("reward_mixer.yaml")).unwrap();
    // The seed's mapping: correctness and reasoning_quality are rewards, format_penalty a tag.
    let mapping: FeedbackMapping = serde_json::from_str(
        r#"{"reward_keys": {"correctness": "correctness", "reasoning_quality": "reasoning_quality"},
            "tag_keys": {"format_penalty": "format_penalty"}}"#,
    )
    .unwrap();
    let scores = [(1.0, 0.8, 0.0), (0.0, 0.6, 1.0), (1.0, 0.2, 0.5)];
    let feedback: Vec<GepaFeedback> = scores
        .iter()
        .enumerate()
        .map(|(i, &(c, r, f))| {
            let m = Metrics::from([
                ("correctness".to_string(), c),
                ("reasoning_quality".to_string(), r),
                ("format_penalty".to_string(), f),
            ]);
            mapping.apply(&m, "add", 0, i as u64).unwrap()
        })
        .collect();
    assert!(feedback[0].tags.contains_key("format_penalty"));
    let (r, stats) = mixer.mix(&feedback, &group_sizes_by_prompt(&feedback)).unwrap();
    // 1·c + 0.5·r − 0.25·f: 1 + 0.4 − 0, 0 + 0.3 − 0.25, 1 + 0.1 − 0.125.
    close(&r, &[1.4, 0.05, 0.975]);
    close(&[stats.scalar_mean], &[(1.4 + 0.05 + 0.975) / 3.0]);
    close(&[stats.raw_mean["correctness"], stats.raw_mean["format_penalty"]], &[2.0 / 3.0, 0.5]);
    close(&[stats.scalar_min, stats.scalar_max], &[0.05, 1.4]);
    assert_eq!(stats.items, 3);
    assert!(stats.missing.values().chain(stats.non_finite.values()).all(|&n| n == 0));
}

#[test]
fn the_richer_example_files_load_as_documented() {
    let json = RewardMixer::from_file(config("reward_mixer.json")).unwrap();
    let c = json.config();
    assert_eq!(
        (c.mode, c.normalize, c.nan, c.final_clip),
        (MixMode::NormalizeThenSum, Normalize::Group, ValuePolicy::Zero, Some((-5.0, 5.0)))
    );
    assert_eq!(c.keys["reasoning_quality"].normalize, Some(Normalize::Batch));
    assert!(c.keys["format_penalty"].optional);
    let toml = RewardMixer::from_file(config("reward_mixer.toml")).unwrap();
    let c = toml.config();
    assert_eq!((c.mode, c.normalize, c.running_momentum), (MixMode::SumThenNormalize, Normalize::Running, 0.99));
    assert_eq!(c.keys["reasoning_quality"].clip, Some((0.0, 1.0)));
    assert_eq!(c.keys["format_penalty"].weight, -0.25);
}

#[test]
fn group_normalisation_on_ragged_groups() {
    let mut m = yaml("eps: 1.0e-12\nkeys:\n  a: {weight: 2, normalize: group}\n  b: 1\n");
    // Groups of 3, 2 and 1. a: [0,1,2] → mean 1, std √(2/3) → ∓√1.5; [4,6] → ∓1; [7] → 0.
    // b is not normalised: [1,0,0,2,0,3].
    let a = [0.0, 1.0, 2.0, 4.0, 6.0, 7.0];
    let b = [1.0, 0.0, 0.0, 2.0, 0.0, 3.0];
    let p = [0, 0, 0, 1, 1, 2];
    let items: Vec<GepaFeedback> = (0..6).map(|i| fb(p[i], i as u64, &[("a", a[i]), ("b", b[i])])).collect();
    assert_eq!(group_sizes_by_prompt(&items), [3, 2, 1]);
    let (r, _) = m.mix(&items, &[3, 2, 1]).unwrap();
    let s = 1.5f64.sqrt();
    close(&r, &[-2.0 * s + 1.0, 0.0, 2.0 * s, 0.0, 2.0, 3.0]);
}

#[test]
fn batch_normalisation_with_a_penalty_weight() {
    let mut m = yaml("normalize: batch\neps: 1.0e-12\nkeys:\n  a: -1\n");
    // [1,2,3,4]: mean 2.5, std √1.25; the groups do not matter for `batch`.
    let (r, _) = m.mix(&items_a(&[1.0, 2.0, 3.0, 4.0]), &[2, 2]).unwrap();
    let sd = 1.25f64.sqrt();
    close(&r, &[1.5 / sd, 0.5 / sd, -0.5 / sd, -1.5 / sd]);
}

#[test]
fn running_statistics_evolve_across_calls() {
    let mut m = yaml("normalize: running\nrunning_momentum: 0.5\neps: 1.0e-12\nkeys:\n  a: 1\n");
    // Call 1 takes the batch as is: mean 1, var 1.
    let (r, _) = m.mix(&items_a(&[0.0, 2.0]), &[2]).unwrap();
    close(&r, &[-1.0, 1.0]);
    assert_eq!(m.state().keys["a"], RunningStats { mean: 1.0, var: 1.0, updates: 1 });
    // Call 2: batch mean 5, var 1 → mean 0.5·1 + 0.5·5 = 3, var 0.5 + 0.5 + 0.25·16 = 5.
    let (r, _) = m.mix(&items_a(&[4.0, 6.0]), &[2]).unwrap();
    close(&r, &[1.0 / 5f64.sqrt(), 3.0 / 5f64.sqrt()]);
    // Call 3: batch mean 2, var 1 → mean 2.5, var 2.5 + 0.5 + 0.25·1 = 3.25.
    let (r, _) = m.mix(&items_a(&[1.0, 3.0]), &[1, 1]).unwrap();
    close(&r, &[-1.5 / 3.25f64.sqrt(), 0.5 / 3.25f64.sqrt()]);
    let s = m.state();
    assert_eq!((s.calls, s.keys["a"].updates), (3, 3));
    close(&[s.keys["a"].mean, s.keys["a"].var], &[2.5, 3.25]);

    // The state survives a round trip through JSON (checkpoint resume) and continues the same.
    let saved: gepa_dapo_grn::reward::MixerState = serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap();
    let mut resumed = yaml("normalize: running\nrunning_momentum: 0.5\neps: 1.0e-12\nkeys:\n  a: 1\n");
    resumed.set_state(saved);
    let next = [7.0, 9.0];
    assert_eq!(resumed.mix(&items_a(&next), &[2]).unwrap().0, m.mix(&items_a(&next), &[2]).unwrap().0);
}

#[test]
fn clip_per_key_then_final_clip() {
    let text = "keys:\n  a: {weight: 1, clip: [0, 1]}\n  b: {weight: -0.5, clip: [-1, 1]}\n";
    let items: Vec<GepaFeedback> = [(-2.0, 4.0), (0.5, -3.0), (3.0, 0.5)]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| fb(0, i as u64, &[("a", a), ("b", b)]))
        .collect();
    // a → [0, 0.5, 1], b → [1, −1, 0.5]; a − 0.5·b = [−0.5, 1, 0.75].
    let (r, _) = yaml(text).mix(&items, &[3]).unwrap();
    close(&r, &[-0.5, 1.0, 0.75]);
    let (r, _) = yaml(&format!("final_clip: [-0.25, 0.8]\n{text}")).mix(&items, &[3]).unwrap();
    close(&r, &[-0.25, 0.8, 0.75]);
    // Clip comes after normalisation: [0,1,2] → ∓1.2247 → clipped to ∓1.
    let (r, _) = yaml("keys:\n  a: {weight: 1, normalize: group, clip: [-1, 1]}\n")
        .mix(&items_a(&[0.0, 1.0, 2.0]), &[3])
        .unwrap();
    close(&r, &[-1.0, 0.0, 1.0]);
}

#[test]
fn the_two_modes_give_different_numbers() {
    let items: Vec<GepaFeedback> = [(1.0, 3.0), (2.0, 1.0), (3.0, 2.0)]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| fb(0, i as u64, &[("a", a), ("b", b)]))
        .collect();
    let keys = "normalize: batch\neps: 1.0e-12\nkeys: {a: 1, b: 2}\n";
    // Normalise then sum: a → [−s, 0, s], b → [s, −s, 0] with s = √1.5; a + 2b = [s, −2s, s].
    let (r, _) = yaml(&format!("mode: normalize_then_sum\n{keys}")).mix(&items, &[3]).unwrap();
    let s = 1.5f64.sqrt();
    close(&r, &[s, -2.0 * s, s]);
    // Sum then normalise: a + 2b = [7, 4, 7] → mean 6, std √2 → [1/√2, −2/√2, 1/√2].
    let (r, _) = yaml(&format!("mode: sum_then_normalize\n{keys}")).mix(&items, &[3]).unwrap();
    let q = 2f64.sqrt();
    close(&r, &[1.0 / q, -2.0 / q, 1.0 / q]);
}

#[test]
fn missing_and_nan_policies() {
    let items =
        [fb(0, 0, &[("a", 1.0), ("b", f64::NAN)]), fb(0, 1, &[("a", 3.0), ("b", 1.0)]), fb(0, 2, &[("b", 2.0)])];
    // a missing → 0, b NaN → left out: [1 + nothing, 3 + 2, 0 + 4].
    let (r, st) = yaml("missing: zero\nnan: skip\nkeys: {a: 1, b: 2}\n").mix(&items, &[3]).unwrap();
    close(&r, &[1.0, 5.0, 4.0]);
    assert_eq!((st.missing["a"], st.missing["b"], st.non_finite["a"], st.non_finite["b"]), (1, 0, 0, 1));
    close(&[st.raw_mean["a"], st.raw_mean["b"]], &[2.0, 1.5]);
    // Infinity counts as non-finite too; zero replaces it.
    let inf = [fb(0, 0, &[("a", f64::INFINITY)]), fb(0, 1, &[("a", 2.0)])];
    let (r, st) = yaml("nan: zero\nkeys: {a: 1}\n").mix(&inf, &[2]).unwrap();
    close(&r, &[0.0, 2.0]);
    assert_eq!(st.non_finite["a"], 1);

    // With batch normalisation, `zero` takes part in the statistics and `skip` does not.
    let a = [fb(0, 0, &[("a", 1.0)]), fb(0, 1, &[("a", 3.0)]), fb(0, 2, &[("b", 0.0)])];
    let (r, _) = yaml(
        "normalize: batch\neps: 1.0e-12\nkeys:\n  a: {weight: 1, missing: zero}\n  b: {weight: 0, missing: zero}\n",
    )
    .mix(&a, &[3])
    .unwrap();
    // [1, 3, 0]: mean 4/3, std √14/3.
    let sd = 14f64.sqrt() / 3.0;
    close(&r, &[(-1.0 / 3.0) / sd, (5.0 / 3.0) / sd, (-4.0 / 3.0) / sd]);
    let (r, _) = yaml(
        "normalize: batch\neps: 1.0e-12\nkeys:\n  a: {weight: 1, missing: skip}\n  b: {weight: 0, missing: zero}\n",
    )
    .mix(&a, &[3])
    .unwrap();
    close(&r, &[-1.0, 1.0, 0.0]);
}

#[test]
fn default_policy_errors_name_the_key_and_the_item() {
    let mut m = yaml("keys: {a: 1, b: 1}\n");
    let e = m.mix(&[fb(0, 0, &[("a", 1.0), ("b", 1.0)]), fb(3, 5, &[("a", 1.0)])], &[1, 1]).unwrap_err().to_string();
    assert!(
        e.contains("test.yaml") && e.contains("`b`") && e.contains("item 1") && e.contains("prompt 3 completion 5"),
        "{e}"
    );
    assert!(e.contains("missing") && e.contains("set `missing`"), "{e}");
    let e = m
        .mix(&[fb(0, 0, &[("a", 1.0), ("b", 1.0)]), fb(0, 1, &[("a", f64::NAN), ("b", 0.0)])], &[2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`a`") && e.contains("NaN") && e.contains("item 1"), "{e}");
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[track_caller]
fn assert_names(e: impl std::fmt::Display, needles: &[&str]) {
    let e = e.to_string();
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("nan.yaml", "correctness: 1.0\nreasoning_quality: .nan\n", &["`reasoning_quality`", "NaN"]),
        ("inf.toml", "keys = { a = { weight = -inf } }\n", &["`a`", "-inf"]),
        ("bad.json", "{\"correctness\": 1.0,,}", &["not valid JSON"]),
        ("bad.toml", "correctness = = 1\n", &["not valid TOML"]),
        ("bad.yaml", "correctness: [1.0\n", &["not valid YAML"]),
        ("norm.yaml", "keys:\n  correctness: {weight: 1, normalize: zscore}\n", &["`correctness`", "zscore"]),
        ("clip.json", r#"{"keys": {"c": {"weight": 1, "clip": [1, -1]}}}"#, &["`c`", "lo > hi"]),
        ("policy.toml", "missing = \"ignore\"\n[keys]\na = 1\n", &["`missing`", "ignore"]),
        ("mixer.ini", "correctness = 1\n", &["unknown config file format"]),
        ("noext", "correctness: 1\n", &["unknown config file format"]),
    ];
    for (name, text, needles) in cases {
        let path = write(&dir, name, text);
        let e = RewardMixer::from_file(&path).unwrap_err();
        assert_names(&e, needles);
        assert_names(&e, &[&path.display().to_string()]);
    }
    let missing = dir.path().join("absent.yaml");
    assert_names(RewardMixer::from_file(&missing).unwrap_err(), &[&missing.display().to_string()]);
}

#[test]
fn a_weight_no_scorer_produces_is_named_at_the_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "mix.yaml", "correctness: 1.0\nreasoning_qualty: 0.5\n");
    let mut m = RewardMixer::from_file(&path).unwrap();
    let items = [fb(0, 0, &[("correctness", 1.0), ("reasoning_quality", 0.5)])];
    let e = m.mix(&items, &[1]).unwrap_err();
    assert_names(&e, &[&path.display().to_string(), "`reasoning_qualty`", "first batch", "reasoning_quality"]);
    // Nothing was committed: the next call checks again.
    assert_eq!(m.state().calls, 0);
    assert!(m.mix(&items, &[1]).is_err());
    // An optional key is exempt, and behaves per its missing policy (here: skip).
    let mut m = yaml("keys:\n  correctness: 1\n  rare: {weight: 5, optional: true, missing: skip}\n");
    assert_eq!(m.mix(&items, &[1]).unwrap().0, [1.0]);
}

#[test]
fn bad_batches_are_named_errors() {
    let mut m = yaml("a: 1\n");
    let two = items_a(&[1.0, 2.0]);
    assert_names(m.mix(&[], &[]).unwrap_err(), &["test.yaml", "empty batch"]);
    assert_names(m.mix(&two, &[]).unwrap_err(), &["no group sizes"]);
    assert_names(m.mix(&two, &[2, 0]).unwrap_err(), &["group 1 is empty"]);
    assert_names(m.mix(&two, &[3]).unwrap_err(), &["sum to 3", "2 feedback item(s)"]);
    assert_names(m.mix(&two, &[1]).unwrap_err(), &["sum to 1", "2 feedback item(s)"]);
    // In-code configurations are validated too, naming the key.
    let mut cfg = gepa_dapo_grn::reward::MixerConfig::from_weights([("a", f64::NAN)]);
    assert_names(RewardMixer::new(cfg.clone()).unwrap_err(), &["`a`", "NaN"]);
    cfg.keys.clear();
    assert_names(RewardMixer::new(cfg).unwrap_err(), &["no keys"]);
}
