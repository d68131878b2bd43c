//! The judge-model scorer against transformers' `GPT2ForSequenceClassification`
//! (`tests/data/judge/`, written by `tools/golden/gen_judge.py`), and its load errors.
//!
//! The references are float64; the judge computes in f32, so scores are compared with a
//! tolerance of 1e-5 relative (to max(1, |reference|)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::checkpoint::tensors::write_f32;
use gepa_dapo_grn::checkpoint::TensorFile;
use gepa_dapo_grn::reward::{score_checked, JudgeScorer, ScoreInput, Scorer};
use gepa_dapo_grn::tokenizer::Tokenizer;
use serde_json::Value;

const TOL: f64 = 1e-5;

fn judge_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/judge")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(judge_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn items() -> Vec<(String, Vec<u32>, f64, f64)> {
    expected()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            let ids = it["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let text = it["text"].as_str().unwrap().to_string();
            (text, ids, it["score_pad"].as_f64().unwrap(), it["score_nopad"].as_f64().unwrap())
        })
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL * want.abs().max(1.0)
}

fn load(dir: &Path) -> JudgeScorer {
    JudgeScorer::load_on(dir, CpuBackend::new(Some(2))).unwrap()
}

/// A copy of the judge directory in a temp dir, with `edit` applied to its config and its
/// tensors (name → (shape, values)).
fn variant(
    edit_config: impl FnOnce(&mut Value),
    edit_tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> tempfile::TempDir {
    let src = judge_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("tokenizer.json"), tmp.path().join("tokenizer.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut cfg);
    std::fs::write(tmp.path().join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let file = TensorFile::open(&src.join("model.safetensors")).unwrap();
    let mut tensors: Vec<_> = file
        .names()
        .into_iter()
        .map(|n| {
            let (v, shape) = file.f32(&n, None).unwrap();
            (n, shape, v)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit_tensors(&mut tensors);
    let named: Vec<_> = tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect();
    write_f32(&tmp.path().join("model.safetensors"), &named, HashMap::new()).unwrap();
    tmp
}

#[test]
fn reference_data_matches_the_built_in_tokenizer() {
    let judge = load(&judge_dir());
    let builtin = Tokenizer::default_char();
    assert_eq!(judge.tokenizer().vocab_size(), builtin.vocab_size());
    for (text, ids, _, _) in items() {
        assert_eq!(judge.tokenizer().encode(&text).unwrap(), ids, "{text:?}");
        assert_eq!(builtin.encode(&text).unwrap(), ids, "{text:?}");
    }
    assert_eq!(judge.pad_token_id(), Some(0));
    assert_eq!(judge.num_labels(), 1);
}

#[test]
fn scores_match_transformers_with_a_pad_token() {
    let items = items();
    // Batches of 3 mix texts of different lengths, the truncated one included.
    let mut judge = load(&judge_dir()).with_max_batch(3);
    let texts: Vec<&str> = items.iter().map(|x| x.0.as_str()).collect();
    let got = judge.score_texts(&texts).unwrap();
    let mut worst = 0.0f64;
    for ((text, _, want, _), row) in items.iter().zip(&got) {
        assert_eq!(row.len(), 1);
        worst = worst.max((row[0] as f64 - want).abs() / want.abs().max(1.0));
        assert!(close(row[0] as f64, *want), "{text:?}: {} vs {want}", row[0]);
    }
    eprintln!("judge vs transformers (float64): max relative error {worst:.2e}");
    // One at a time gives the same as batched.
    let mut single = load(&judge_dir()).with_max_batch(1);
    let one = single.score_texts(&texts).unwrap();
    for (a, b) in got.iter().zip(&one) {
        assert!((a[0] - b[0]).abs() <= 1e-6 * a[0].abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn scores_match_transformers_without_a_pad_token() {
    let dir = variant(|c| c["pad_token_id"] = Value::Null, |_| {});
    let mut judge = load(dir.path());
    assert_eq!(judge.pad_token_id(), None);
    for (text, _, _, want) in items() {
        let got = judge.score_texts(&[&text]).unwrap()[0][0] as f64;
        assert!(close(got, want), "{text:?}: {got} vs {want}");
    }
}

#[test]
fn the_scorer_scores_prompt_plus_completion_under_its_metric_name() {
    let items = items();
    let mut judge = load(&judge_dir()).with_metric_name("quality").with_max_batch(2);
    assert_eq!(judge.metric_names(), Some(vec!["quality".to_string()]));
    assert!(judge.name().contains("judge"));
    let meta = Value::Null;
    let batch: Vec<_> = items
        .iter()
        .map(|(text, ..)| {
            // Split anywhere (on a char boundary): only the concatenation is scored.
            let cut = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
            ScoreInput { prompt: &text[..cut], completion: &text[cut..], metadata: &meta }
        })
        .collect();
    let out = score_checked(&mut judge, &batch).unwrap();
    for ((text, _, want, _), m) in items.iter().zip(&out) {
        assert_eq!(m.len(), 1);
        assert!(close(m["quality"], *want), "{text:?}: {} vs {want}", m["quality"]);
    }
    // Empty prompt + completion, and a character outside the vocabulary, are item errors.
    let empty = [ScoreInput { prompt: "", completion: "", metadata: &meta }];
    let e = judge.score(&empty).unwrap_err().to_string();
    assert!(e.contains("item 0") && e.contains("empty"), "{e}");
    let bad = [batch[0], ScoreInput { prompt: "1+1=", completion: "2\u{e9}", metadata: &meta }];
    let e = judge.score(&bad).unwrap_err().to_string();
    assert!(e.contains("item 1") && e.contains("vocabulary"), "{e}");
}

#[test]
fn a_multi_label_head_gives_one_metric_per_label() {
    // Row 1 = −2 × row 0, so the second score is −2 × the first.
    let dir = variant(
        |c| {
            c["id2label"] = serde_json::json!({"0": "good", "1": "bad"});
        },
        |t| {
            let w = t.iter_mut().find(|x| x.0 == "score.weight").unwrap();
            let row: Vec<f32> = w.2.clone();
            w.2 = row.iter().copied().chain(row.iter().map(|x| -2.0 * x)).collect();
            w.1 = vec![2, row.len()];
        },
    );
    let mut judge = load(dir.path());
    assert_eq!(judge.num_labels(), 2);
    assert_eq!(judge.metric_names().unwrap(), ["judge.good", "judge.bad"]);
    let (text, _, want, _) = &items()[0];
    let meta = Value::Null;
    let out = judge.score(&[ScoreInput { prompt: "", completion: text, metadata: &meta }]).unwrap();
    assert!(close(out[0]["judge.good"], *want) && close(out[0]["judge.bad"], -2.0 * want), "{out:?}");
}

fn load_err(dir: &Path) -> String {
    JudgeScorer::load_on(dir, CpuBackend::new(Some(1))).unwrap_err().to_string()
}

#[test]
fn missing_or_misshapen_score_weight_is_a_named_error() {
    let dir = variant(|_| {}, |t| t.retain(|x| x.0 != "score.weight"));
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("score.weight") && e.contains("missing"), "{e}");

    for shape in [vec![1, 15], vec![16], vec![0, 16], vec![1, 1, 16]] {
        let n: usize = shape.iter().product();
        let dir = variant(
            |_| {},
            |t| {
                let w = t.iter_mut().find(|x| x.0 == "score.weight").unwrap();
                w.2 = vec![0.5; n];
                w.1 = shape.clone();
            },
        );
        let e = load_err(dir.path());
        assert!(e.contains("model.safetensors") && e.contains("score.weight") && e.contains("shape"), "{shape:?}: {e}");
    }

    // Two rows while config.json's id2label lists one label.
    let dir = variant(
        |_| {},
        |t| {
            let w = t.iter_mut().find(|x| x.0 == "score.weight").unwrap();
            w.2 = w.2.repeat(2);
            w.1 = vec![2, 16];
        },
    );
    let e = load_err(dir.path());
    assert!(e.contains("score.weight") && e.contains("id2label"), "{e}");

    // A bias is not part of the layout and would otherwise be silently ignored.
    let dir = variant(|_| {}, |t| t.push(("score.bias".into(), vec![1], vec![0.25])));
    let e = load_err(dir.path());
    assert!(e.contains("score.bias"), "{e}");

    let dir = variant(
        |_| {},
        |t| {
            let w = t.iter_mut().find(|x| x.0 == "score.weight").unwrap();
            w.2[3] = f32::NAN;
        },
    );
    let e = load_err(dir.path());
    assert!(e.contains("score.weight") && e.contains("not finite"), "{e}");
}

#[test]
fn bad_directories_are_named_errors() {
    let e = load_err(Path::new("/nonexistent/judge-dir"));
    assert!(e.contains("/nonexistent/judge-dir"), "{e}");

    let dir = variant(|_| {}, |_| {});
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("tokenizer.json"), "{e}");

    let dir = variant(|c| c["pad_token_id"] = serde_json::json!("eos"), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("config.json") && e.contains("pad_token_id"), "{e}");

    // The GPT-2 body is still checked by the crate's loader.
    let dir = variant(|_| {}, |t| t.retain(|x| x.0 != "transformer.ln_f.weight"));
    let e = load_err(dir.path());
    assert!(e.contains("ln_f.weight") && e.contains("missing"), "{e}");
}

/// The judge directory with a GRN on the score head (`value_grn.*` and `grn` in the config
/// with `apply_to_value` only), γ, β from expected.json.
fn grn_variant() -> tempfile::TempDir {
    let grn = expected()["value_grn"].clone();
    let vals = |k: &str| grn[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let (gamma, beta) = (vals("gamma"), vals("beta"));
    let eps = grn["eps"].as_f64().unwrap();
    variant(
        |c| {
            c["grn"] =
                serde_json::json!({"enabled": true, "apply_to_policy": false, "apply_to_value": true, "eps": eps})
        },
        |t| {
            t.push(("value_grn.gamma".into(), vec![gamma.len()], gamma));
            t.push(("value_grn.beta".into(), vec![beta.len()], beta));
        },
    )
}

#[test]
fn a_grn_on_the_score_head_matches_torch_batched_or_alone() {
    // Reference: the score head's input through a sequence-wide GRN over the scored tokens,
    // written out in torch (gen_judge.py, float64). Batched texts are right-padded; the
    // padding must stay out of each text's statistic.
    let dir = grn_variant();
    let items = items();
    let texts: Vec<&str> = items.iter().map(|x| x.0.as_str()).collect();
    let want: Vec<f64> =
        expected()["items"].as_array().unwrap().iter().map(|it| it["score_grn"].as_f64().unwrap()).collect();
    for batch in [1, 3] {
        let got = load(dir.path()).with_max_batch(batch).score_texts(&texts).unwrap();
        for ((text, w), row) in texts.iter().zip(&want).zip(&got) {
            assert!(close(row[0] as f64, *w), "batch {batch}, {text:?}: {} vs {w}", row[0]);
        }
    }
    // It changes the scores (the test would notice a GRN that is not applied).
    let plain = items.iter().map(|x| x.2);
    assert!(plain.zip(&want).any(|(p, w)| (p - w).abs() > 1e-3));
}

#[test]
fn score_head_grn_tensors_must_match_the_config() {
    // Present without the config enabling them: refused rather than ignored.
    let dir = variant(|_| {}, |t| t.push(("value_grn.gamma".into(), vec![16], vec![0.5; 16])));
    let e = load_err(dir.path());
    assert!(e.contains("value_grn.gamma") && e.contains("apply_to_value"), "{e}");
    // Enabled without the tensors, or misshapen: named errors.
    let dir = variant(|c| c["grn"] = serde_json::json!({"enabled": true, "apply_to_policy": false}), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("value_grn.gamma") && e.contains("missing"), "{e}");
    let dir = variant(
        |c| c["grn"] = serde_json::json!({"enabled": true, "apply_to_policy": false}),
        |t| {
            t.push(("value_grn.gamma".into(), vec![15], vec![0.5; 15]));
            t.push(("value_grn.beta".into(), vec![16], vec![0.5; 16]));
        },
    );
    let e = load_err(dir.path());
    assert!(e.contains("value_grn.gamma") && e.contains("shape"), "{e}");
    // A misspelt GRN setting in config.json names the key.
    let dir = variant(|c| c["grn"] = serde_json::json!({"enabeld": true}), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("config.json") && e.contains("enabeld"), "{e}");
}

/// A judge on a kernel backend in bf16 mixed precision (the GPU default): its hidden state is
/// stored as bf16, the score head reads it (through the value GRN in f32 when there is one)
/// and the scores stay within bf16's reach of transformers' float64 ones: the final hidden
/// state carries ~4e-3 relative rounding, so 5e-2 of max(|score|, 1) (the f32 path holds
/// `close`'s much tighter bound).
#[test]
fn a_judge_in_bf16_mixed_precision_scores_within_bf16_reach() {
    let k = gepa_dapo_grn::backend::kernel::EmuBackend::emulated_bf16();
    let items = items();
    let texts: Vec<&str> = items.iter().map(|x| x.0.as_str()).collect();
    let want_grn: Vec<f64> =
        expected()["items"].as_array().unwrap().iter().map(|it| it["score_grn"].as_f64().unwrap()).collect();
    let want_plain: Vec<f64> = items.iter().map(|x| x.2).collect();
    let grn = grn_variant();
    for (dir, want) in [(judge_dir(), &want_plain), (grn.path().to_path_buf(), &want_grn)] {
        let mut judge = JudgeScorer::load_on(&dir, k.clone()).unwrap().with_max_batch(3);
        let got = judge.score_texts(&texts).unwrap();
        for ((text, w), row) in texts.iter().zip(want).zip(&got) {
            let err = (row[0] as f64 - w).abs() / w.abs().max(1.0);
            assert!(err < 5e-2, "{}: {text:?}: {} vs {w} ({err:.1e})", dir.display(), row[0]);
        }
    }
}
