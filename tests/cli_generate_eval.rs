//! `dapo generate`, `dapo eval` and the CPU bench's decode / RL-step lines, end to end through
//! the binary, on a checkpoint written by a 5-step `dapo sft` run.

mod common;

use common::cli::{dapo, fails_with, stderr, tiny_sft};

use std::path::{Path, PathBuf};
use std::process::Output;

const DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/toy_math/addition_small.jsonl");

/// A tiny checkpoint: 5 SFT steps on the built-in addition task, under `dir`.
fn checkpoint(dir: &Path) -> PathBuf {
    let run = dir.join("sft");
    let out = tiny_sft(&run, "5", &["--device", "cpu"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ck = run.join("checkpoint-5");
    assert!(ck.join("model.safetensors").exists() && ck.join("tokenizer.json").exists());
    ck
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8 stdout")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn generate_is_deterministic_and_prints_one_json_line_per_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    let ck = ck.to_str().unwrap();
    let args = ["generate", "--model", ck, "--prompt", "1+2=", "--num-samples", "2", "--seed", "3", "--threads", "1"];
    let (a, b) = (dapo(&args), dapo(&args));
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(a.stdout, b.stdout, "same seed, same completions");
    let lines = json_lines(&a);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["prompt"], "1+2=");
        assert!(l["completion"].is_string(), "{l}");
        let tokens = l["tokens"].as_u64().unwrap();
        assert!((1..=32).contains(&tokens), "{l}");
        assert!(["stop_token", "stop_string", "length"].contains(&l["finish"].as_str().unwrap()), "{l}");
        let lp = l["logprob_sum"].as_f64().unwrap();
        assert!(lp.is_finite() && lp <= 0.0, "{l}");
        // The EOS stop token is not part of the printed text.
        assert!(!l["completion"].as_str().unwrap().contains("<|endoftext|>"), "{l}");
    }
}

#[test]
fn generate_reads_a_prompt_file_and_honours_stop_strings_and_greedy() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"12+3=\"}\n\n{\"prompt\": \"7+8=\", \"answer\": \"15\"}\n").unwrap();
    let out = dapo(&[
        "generate",
        "--model",
        ck.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--num-samples",
        "3",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--stop",
        "1",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 6, "2 prompts × 3 samples");
    assert!(lines[..3].iter().all(|l| l["prompt"] == "12+3="));
    assert!(lines[3..].iter().all(|l| l["prompt"] == "7+8="));
    // Greedy: the samples of one prompt agree.
    assert_eq!(lines[0], lines[1]);
    assert_eq!(lines[3], lines[5]);
    for l in &lines {
        assert!(l["tokens"].as_u64().unwrap() <= 6, "{l}");
        // The text is cut before the stop string.
        assert!(!l["completion"].as_str().unwrap().contains('1'), "{l}");
    }
}

#[test]
fn eval_prints_accuracy_and_writes_per_task_results() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    let results = tmp.path().join("eval.jsonl");
    let out = dapo(&[
        "eval",
        "--model",
        ck.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--limit",
        "10",
        "--threads",
        "1",
        "--output",
        results.to_str().unwrap(),
        "--reward-mixer",
        concat!(env!("CARGO_MANIFEST_DIR"), "/configs/reward_mixer.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let acc =
        text.lines().find_map(|l| l.strip_prefix("accuracy=")).unwrap_or_else(|| panic!("no accuracy line:\n{text}"));
    let acc: f64 = acc.split_whitespace().next().unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{text}");
    assert!(text.contains("n=10"), "{text}");
    for key in ["correctness", "format_penalty", "reasoning_quality", "brevity"] {
        assert!(text.contains(&format!("mean {key}=")), "{text}");
    }
    assert!(text.contains("mean reward="), "{text}");
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&results).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0]["prompt"], "41+19=");
    assert_eq!(rows[0]["answer"], "60");
    let mean: f64 = rows.iter().map(|r| r["metrics"]["correctness"].as_f64().unwrap()).sum::<f64>() / 10.0;
    assert!((mean - acc).abs() < 1e-4, "file {mean} vs printed {acc}");
    assert!(rows.iter().all(|r| r["reward"].as_f64().is_some_and(f64::is_finite)));
}

#[test]
fn a_hub_name_is_refused_without_downloading() {
    let out = dapo(&["generate", "--model", "gpt2", "--prompt", "hi", "--device", "cpu"]);
    fails_with(&out, &["gpt2", "nothing is downloaded"]);
    let out = dapo(&["eval", "--model", "distilgpt2", "--dataset", DATASET, "--device", "cpu"]);
    fails_with(&out, &["distilgpt2", "nothing is downloaded"]);
}

#[test]
fn bad_generate_and_eval_input_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    let ck = ck.to_str().unwrap();
    fails_with(&dapo(&["generate", "--model", ck, "--prompt", "1+1=", "--num-samples", "0"]), &["--num-samples"]);
    fails_with(&dapo(&["generate", "--model", ck, "--prompt", "1+1=", "--top-p", "0"]), &["top_p"]);
    fails_with(&dapo(&["generate", "--model", ck, "--prompt", "é"]), &["prompt 0", "'é'"]);
    fails_with(&dapo(&["generate", "--model", ck, "--prompt", ""]), &["prompt 0 is empty"]);
    fails_with(&dapo(&["eval", "--model", ck, "--dataset", "/nonexistent/tasks.jsonl"]), &["/nonexistent/tasks.jsonl"]);
    fails_with(&dapo(&["eval", "--model", ck, "--dataset", DATASET, "--limit", "0"]), &["--limit"]);
    // No prompt at all is a usage error (clap's exit code 2).
    assert_eq!(dapo(&["generate", "--model", ck]).status.code(), Some(2));
}

#[test]
fn cpu_bench_prints_decode_and_rl_step_lines() {
    let out = dapo(&[
        "bench",
        "--device",
        "cpu",
        "--model",
        "tiny",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--iters",
        "1",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let decode = text.lines().find(|l| l.starts_with("dapo   decode")).unwrap_or_else(|| panic!("{text}"));
    assert!(decode.contains("B=8 prompt=16 new=32") && decode.contains("tokens/s="), "{decode}");
    let rl = text.lines().find(|l| l.starts_with("dapo   rl-step")).unwrap_or_else(|| panic!("{text}"));
    for field in ["rollout_s=", "score_s=", "reference_s=", "update_s=", "total_s="] {
        let v: f64 = rl.split(field).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{rl}");
    }
    // β > 0: the reference pass ran.
    let r: f64 = rl.split("reference_s=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(r > 0.0, "{rl}");
    let out = dapo(&["bench", "--device", "cpu", "--model", "tiny", "--seq-len", "8", "--iters", "1", "--skip-rl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dapo   decode") && !text.contains("rl-step"), "{text}");
}

#[test]
fn a_gpt2_dir_with_vocab_and_merges_and_an_end_token_named_in_its_configs_loads() {
    // A GPT-2-architecture directory as some exports ship it: config.json, model.safetensors,
    // vocab.json + merges.txt (no tokenizer.json), and a tokenizer_config.json whose end token
    // is `</s>`. generate stops at `</s>`; sft trains on it and writes a tokenizer.json.
    use gepa_dapo_grn::backend::cpu::CpuBackend;
    use gepa_dapo_grn::checkpoint::save_model;
    use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gpt2like");
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/gpt2_files");
    let model = Gpt2::random(CpuBackend::new(Some(1)), Gpt2Config::named("tiny", 321).unwrap(), 5).unwrap();
    save_model(&dir, &model, None).unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(files.join(f), dir.join(f)).unwrap();
    }
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let d = dir.to_str().unwrap();
    let out = dapo(&["generate", "--model", d, "--prompt", "The answer is", "--max-new-tokens", "4", "--threads", "1"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("end tokens: 320 (tokenizer eos_token \"</s>\")"), "{err}");
    // --tokenizer points another command at the same files.
    let run = tmp.path().join("sft");
    let out = tiny_sft(&run, "2", &["--model", d, "--tokenizer", d, "--data", DATASET]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint-2/tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["eos_token"], "</s>");
    assert!(run.join("checkpoint-2/tokenizer.json").exists());
}
