//! `dapo train` end to end through the binary: the built-in default at toy size, the seed's
//! example command, and the faults a run must survive with a clear error (exit 1, never a
//! panic) and its last checkpoint intact; Ctrl-C writes a checkpoint and exits 130.

mod common;

use common::cli::{dapo, fails_with, stderr, tiny_sft};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The built-in default at toy size: a few SFT and RL steps (3 unless `extra` sets `--steps`).
fn small<'a>(out_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let steps = extra.iter().position(|a| *a == "--steps").map_or("3", |i| extra[i + 1]);
    let extra: Vec<&str> = match extra.iter().position(|a| *a == "--steps") {
        Some(i) => extra[..i].iter().chain(&extra[i + 2..]).copied().collect(),
        None => extra.to_vec(),
    };
    let mut v = vec![
        "train",
        "--output-dir",
        out_dir,
        "--warmup-sft-steps",
        "20",
        "--steps",
        steps,
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--eval-every",
        "2",
        "--threads",
        "1",
    ];
    v.extend_from_slice(&extra);
    v
}

fn scorer(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/scorers").join(name);
    format!("python3 {}", p.display())
}

fn correctness_only_mixer(dir: &Path) -> PathBuf {
    let p = dir.join("mix.yaml");
    std::fs::write(&p, "correctness: 1.0\n").unwrap();
    p
}

#[test]
fn the_builtin_default_trains_logs_evaluates_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let out = dapo(&small(o.to_str().unwrap(), &["--save-every", "2", "--logging-steps", "2", "--log-completions"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // stderr is a pipe here, not a terminal: plain progress lines at the logging steps and the
    // last step, the mid-run evaluation and the completions table as they happen.
    for needle in [
        "warm start",
        "before RL: held-out accuracy",
        "step 2/3 (67%)  reward",
        "step 2: held-out accuracy",
        "step 2 completions:",
        "step 3/3 (100%)",
        "after RL: held-out accuracy",
        "checkpoint-3",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(err.contains("eta "), "a plain line carries an ETA:\n{err}");
    assert!(o.join("checkpoint-2/model.safetensors").exists() && o.join("checkpoint-3/trainer_state.json").exists());
    let log = std::fs::read_to_string(o.join("dapo_log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&serde_json::Value> = records.iter().filter(|r| r.get("rl").is_some()).collect();
    let evals = records.iter().filter(|r| r.get("eval").is_some()).count();
    assert_eq!((steps.len(), evals), (3, 3), "three steps; evals before, at step 2 and at the end");
    for key in ["loss", "policy_loss", "kl", "kl_coef", "entropy", "clip_frac_low", "clip_frac_high", "lr", "grad_norm"]
    {
        assert!(steps[0]["rl"].get(key).is_some(), "rl.{key} missing: {}", steps[0]);
    }
    assert_eq!(steps[0]["gepa"].as_array().unwrap().len(), 4, "batch 2 × group 2");
    for key in ["reward", "reward_std", "completions/mean_length", "kl", "entropy", "clip_ratio/region_mean"] {
        assert!(steps[0]["metrics"].get(key).is_some(), "metrics.{key} missing: {}", steps[0]);
    }
    let comps = std::fs::read_to_string(o.join("completions.jsonl")).unwrap();
    assert_eq!(comps.lines().count(), 2, "logging steps 2 and 3 (the last)");
}

/// The seed's example command for 2 steps on a 3-step SFT checkpoint made in `tmp`, plus
/// `extra` flags: (its output directory, how it ended).
fn seed_example(tmp: &Path, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let sft = tmp.join("sft");
    let out = dapo(&["sft", "--output-dir", sft.to_str().unwrap(), "--steps", "3", "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let model = sft.join("checkpoint-3");
    let run = tmp.join("dapo_hybrid");
    let root = env!("CARGO_MANIFEST_DIR");
    let (dataset, mixer) =
        (format!("{root}/datasets/toy_math/addition_small.jsonl"), format!("{root}/configs/reward_mixer.yaml"));
    #[rustfmt::skip]
    let mut args = vec![
        "train", "--model", model.to_str().unwrap(), "--dataset", &dataset, "--output-dir", run.to_str().unwrap(),
        "--batch-size", "4", "--group-size", "2", "--learning-rate", "1e-5", "--clip-ratio", "0.2",
        "--kl-target", "0.1", "--kl-coef", "0.1", "--reward-mixer", &mixer, "--eval-every", "100", "--seed", "42",
        "--steps", "2", "--threads", "1",
    ];
    args.extend_from_slice(extra);
    let out = dapo(&args);
    (run, out)
}

#[test]
fn the_seed_example_command_runs_as_written_on_a_local_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = seed_example(tmp.path(), &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("holding out 20 of 200 tasks"), "{err}");
    assert!(run.join("checkpoint-2/model.safetensors").exists(), "{err}");
    assert!(run.join("reference/model.safetensors").exists(), "β > 0 keeps the reference for resuming");
}

#[test]
fn resume_continues_from_the_checkpoint_step() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let os = o.to_str().unwrap();
    assert!(dapo(&small(os, &["--steps", "2"])).status.success());
    let ckpt = o.join("checkpoint-2");
    let out = dapo(&small(os, &["--steps", "3", "--resume", ckpt.to_str().unwrap()]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed from") && err.contains("at step 2") && err.contains("checkpoint-3"), "{err}");
}

#[test]
fn malformed_dataset_lines_fail_with_file_and_line_or_are_skipped_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tasks.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n{\"prompt\": 12}\n{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n",
    )
    .unwrap();
    let o = tmp.path().join("run");
    let d = data.to_str().unwrap();
    fails_with(
        &dapo(&small(o.to_str().unwrap(), &["--dataset", d])),
        &["tasks.jsonl:2", "\"prompt\" must be a string"],
    );
    // With --skip-bad-lines the line is reported and skipped; the model still has to come from
    // somewhere, so this run stops at the (missing) --model instead: past the dataset.
    let out = dapo(&small(o.to_str().unwrap(), &["--dataset", d, "--skip-bad-lines", "--model", "no/such/dir"]));
    fails_with(&out, &["warning: skipped", "tasks.jsonl:2", "no/such/dir"]);
}

#[test]
fn a_hub_name_or_a_directory_without_weights_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let ds = format!("{}/datasets/toy_math/addition_small.jsonl", env!("CARGO_MANIFEST_DIR"));
    let out = dapo(&["train", "--model", "gpt2", "--dataset", &ds, "--output-dir", o.to_str().unwrap()]);
    fails_with(&out, &["gpt2", "nothing is downloaded", "save_pretrained"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out =
        dapo(&["train", "--model", empty.to_str().unwrap(), "--dataset", &ds, "--output-dir", o.to_str().unwrap()]);
    fails_with(&out, &["config.json"]);
}

#[test]
fn an_output_dir_that_cannot_be_created_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a_file");
    std::fs::write(&file, "not a directory").unwrap();
    let o = file.join("run");
    fails_with(&dapo(&small(o.to_str().unwrap(), &[])), &["a_file"]);
}

#[test]
fn scorer_processes_that_crash_hang_or_print_garbage_stop_the_run_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mixer = correctness_only_mixer(tmp.path());
    let m = mixer.to_str().unwrap();
    // Batches: the evaluation before RL, then step 1 (checkpointed), then step 2 fails.
    for (mode, needles, timeout) in [
        ("crash", &["exit status: 4", "out of credits"][..], "30"),
        ("hang", &["timed out after"][..], "1"),
        ("garbage", &["this is not JSON"][..], "30"),
    ] {
        let o = tmp.path().join(mode);
        let cmd = format!("{} {mode} 2", scorer("fail_later.py"));
        let extra = ["--scorer-cmd", &cmd, "--scorer-timeout", timeout, "--reward-mixer", m, "--save-every", "1"];
        let out = dapo(&small(o.to_str().unwrap(), &extra));
        fails_with(&out, needles);
        assert!(!o.join("checkpoint-2").exists(), "{mode}: no checkpoint after the failed step");
        {
            // The first step finished and was checkpointed before the scorer failed.
            let ckpt = o.join("checkpoint-1");
            assert!(ckpt.join("model.safetensors").exists() && ckpt.join("trainer_state.json").exists());
            let ids = std::fs::read_dir(&o).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect::<Vec<_>>();
            assert!(ids.iter().all(|n| !n.to_string_lossy().contains("tmp")), "no half-written checkpoint: {ids:?}");
        }
    }
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let args = small(o.to_str().unwrap(), &["--steps", "100000"]);
    let child = Command::new(env!("CARGO_BIN_EXE_dapo"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until RL has started (the log file appears after the first evaluation).
    let start = std::time::Instant::now();
    while !o.join("dapo_log.jsonl").exists() {
        assert!(start.elapsed().as_secs() < 120, "training never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT at step") && err.contains("--resume"), "{err}");
    let ckpts: Vec<_> = std::fs::read_dir(&o)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .collect();
    assert_eq!(ckpts.len(), 1, "one checkpoint, written on the interrupt");
    assert!(ckpts[0].path().join("trainer_state.json").exists());
}

fn settings_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run_settings.json")).unwrap()).unwrap()
}

#[test]
fn the_readme_resume_restores_the_saved_settings_and_names_each_override() {
    // The README's pair of commands: a run with the seed's flags, then a resume that repeats
    // none of them but --steps.
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = seed_example(tmp.path(), &["--save-every", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = settings_of(&run);
    let ckpt = run.join("checkpoint-1");
    let out = dapo(&["train", "--resume", ckpt.to_str().unwrap(), "--steps", "3", "--threads", "1"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed from") && err.contains("at step 1"), "{err}");
    assert!(err.contains("resume: steps = 3 (was 2; set by --steps)"), "{err}");
    assert_eq!(err.matches("resume: ").count(), 1, "only the one override is reported:\n{err}");
    let again = settings_of(&run);
    for key in ["batch_size", "group_size", "dataset", "model", "reward_mixer", "objective", "kl_target", "seed"] {
        assert_eq!(again[key], first[key], "{key} restored");
    }
    assert!(run.join("checkpoint-3/model.safetensors").exists(), "{err}");
}

#[test]
fn a_trl_config_file_runs_and_flags_set_only_their_own_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("grpo.yaml");
    // A TRL user's GRPOConfig YAML: TRL's names, TrainingArguments keys that do not apply here,
    // and a native partial table.
    std::fs::write(
        &cfg,
        "num_generations: 2\nmax_steps: 2\nepsilon: 0.1\nepsilon_high: 0.3\nbeta: 0.02\nmax_completion_length: 4\n\
         scale_rewards: batch\nmask_truncated_completions: true\nloss_type: dr_grpo\nimportance_sampling_level: sequence\n\
         per_device_train_batch_size: 2\ngradient_accumulation_steps: 1\nsteps_per_generation: 2\n\
         lr_scheduler_type: cosine\nmin_learning_rate: 1.0e-5\nwarmup_steps: 1\nbf16: true\nlogging_steps: 10\n\
         report_to: none\nsampling:\n  temperature: 0.9\n",
    )
    .unwrap();
    let o = tmp.path().join("run");
    let mut args = small(o.to_str().unwrap(), &["--config", cfg.to_str().unwrap(), "--learning-rate", "1e-3"]);
    // The toy default's own --steps/--batch-size/--group-size would override the file.
    for flag in ["--steps", "--batch-size", "--group-size"] {
        let i = args.iter().position(|a| *a == flag).unwrap();
        args.drain(i..i + 2);
    }
    let out = dapo(&args);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("`bf16` has no effect") && err.contains("settings:"), "{err}");
    let s = settings_of(&o);
    assert_eq!((s["group_size"].clone(), s["steps"].clone()), (serde_json::json!(2), serde_json::json!(2)));
    assert_eq!(
        (s["batch_size"].clone(), s["mini_batches"].clone(), s["micro_batch_size"].clone()),
        (serde_json::json!(2), serde_json::json!(2), serde_json::json!(2)),
        "TRL's batch layout"
    );
    let obj = &s["objective"];
    assert_eq!((obj["eps_low"].as_f64().unwrap() as f32, obj["eps_high"].as_f64().unwrap() as f32), (0.1, 0.3));
    assert_eq!(
        (obj["loss_type"].as_str(), obj["importance_sampling_level"].as_str()),
        (Some("dr_grpo"), Some("sequence"))
    );
    assert_eq!(s["sampling"]["max_new_tokens"], 4);
    assert_eq!(s["sampling"]["temperature"].as_f64().unwrap() as f32, 0.9);
    assert_eq!(s["sampling"]["top_p"], 1.0, "the rest of a partial table comes from the defaults");
    assert_eq!(s["advantage"]["scaling"], "batch");
    assert_eq!(s["mask_truncated"], true);
    // --learning-rate set the learning rate and nothing else.
    assert_eq!(s["learning_rate"].as_f64().unwrap() as f32, 1e-3);
    assert_eq!(s["min_learning_rate"].as_f64().unwrap() as f32, 1e-5);
    assert_eq!(s["lr_scheduler_type"], "cosine");
}

#[test]
fn group_size_one_and_unknown_settings_are_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let mut args = small(o.to_str().unwrap(), &[]);
    let i = args.iter().position(|a| *a == "--group-size").unwrap();
    args[i + 1] = "1";
    fails_with(&dapo(&args), &["group_size", "at least 2"]);
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[sampling]\ntemprature = 0.5\n").unwrap();
    fails_with(&dapo(&small(o.to_str().unwrap(), &["--config", cfg.to_str().unwrap()])), &["temprature", "bad.toml"]);
    fails_with(&dapo(&small(o.to_str().unwrap(), &["--kl-target", "0.1"])), &["kl_target", "beta"]);
}

#[test]
fn three_reward_sources_contribute_to_one_reward_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let mix = tmp.path().join("mix.yaml");
    std::fs::write(&mix, "correctness: 1.0\nshortness: 0.5\njudge: 0.1\n").unwrap();
    let judge = format!("{}/tests/data/judge", env!("CARGO_MANIFEST_DIR"));
    let cmd = scorer("length.py");
    let out = dapo(&small(
        o.to_str().unwrap(),
        &["--math-scorer", "--judge-model", &judge, "--scorer-cmd", &cmd, "--reward-mixer", mix.to_str().unwrap()],
    ));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let log = std::fs::read_to_string(o.join("dapo_log.jsonl")).unwrap();
    let step: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r.get("gepa").is_some())
        .unwrap();
    let rewards = &step["gepa"][0]["rewards"];
    for key in ["correctness", "brevity", "shortness", "judge"] {
        assert!(rewards.get(key).is_some(), "reward vector lacks {key}: {rewards}");
    }
}

#[test]
fn the_builtin_checkpoint_names_its_end_token_for_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let out = dapo(&small(o.to_str().unwrap(), &["--steps", "1"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("end tokens: 0"), "{err}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(o.join("checkpoint-1/config.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["eos_token_id"].clone(), cfg["bos_token_id"].clone()),
        (serde_json::json!(0), serde_json::json!(0)),
        "<|endoftext|> is id 0"
    );
    // The log's lengths count only tokens up to the end token: a warm-started model answers in
    // a few characters and stops, well below the cap of 5 on most completions.
    let log = std::fs::read_to_string(o.join("dapo_log.jsonl")).unwrap();
    let step = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r.get("gepa").is_some())
        .unwrap();
    assert!(step["generation"]["truncated"].as_u64().unwrap() < 4, "{}", step["generation"]);
}

#[test]
fn grn_flag_trains_a_policy_grn_that_checkpoints_resume_generate_and_sft_use() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let os = o.to_str().unwrap();
    let out = dapo(&small(os, &["--steps", "2", "--grn"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("grn: causal GRN in front of the policy head") && err.contains("zero at init"), "{err}");
    assert_eq!(settings_of(&o)["grn"]["enabled"], true);
    let ck = o.join("checkpoint-2");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["grn"]["enabled"], true, "{cfg}");
    let w = gepa_dapo_grn::checkpoint::TensorFile::open(&ck.join("model.safetensors")).unwrap();
    let (gamma, _) = w.f32("grn.gamma", None).unwrap();
    assert!(gamma.iter().any(|&g| g != 0.0), "γ learned");
    // Resuming keeps the GRN (the checkpoint's config equals the trainer's).
    let out = dapo(&small(os, &["--steps", "3", "--grn", "--resume", ck.to_str().unwrap()]));
    let err = stderr(&out);
    assert!(out.status.success() && err.contains("at step 2") && err.contains("loaded from the checkpoint"), "{err}");
    // generate decodes with it (KV cache + running sums).
    let out = dapo(&["generate", "--model", ck.to_str().unwrap(), "--prompt", "1+2=", "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"completion\""));
    // sft --grn writes a checkpoint with one.
    let s = tmp.path().join("sft");
    let out = tiny_sft(&s, "2", &["--grn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.join("checkpoint-2/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["grn"]["enabled"], true, "{cfg}");
    // A misspelt GRN setting is named.
    let out = dapo(&small(tmp.path().join("bad").to_str().unwrap(), &["--set", "grn.enabeld=true"]));
    fails_with(&out, &["grn", "enabeld"]);
}

#[test]
fn checkpoints_are_complete_hf_directories_and_output_dirs_are_not_mixed() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let os = o.to_str().unwrap();
    let out =
        dapo(&small(os, &["--steps", "3", "--save-every", "1", "--save-total-limit", "2", "--logging-steps", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let read =
        |p: PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    // save_total_limit 2: checkpoint-1 is gone.
    let mut ckpts: Vec<String> = std::fs::read_dir(&o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, ["checkpoint-2", "checkpoint-3"]);
    let ck = o.join("checkpoint-3");
    // What transformers reads: tokenizer configs with EOS and PAD, generation config, and a
    // trainer_state.json with TrainerState's fields only.
    let tc = read(ck.join("tokenizer_config.json"));
    assert_eq!((tc["eos_token"].as_str(), tc["pad_token"].as_str()), (Some("<|endoftext|>"), Some("<|endoftext|>")));
    assert_eq!(read(ck.join("special_tokens_map.json"))["eos_token"], "<|endoftext|>");
    let gen = read(ck.join("generation_config.json"));
    assert_eq!((gen["eos_token_id"].as_u64(), gen["pad_token_id"].as_u64()), (Some(0), Some(0)));
    let ts = read(ck.join("trainer_state.json"));
    let fields: Vec<&str> = ts.as_object().unwrap().keys().map(String::as_str).collect();
    for f in ["global_step", "max_steps", "log_history", "num_input_tokens_seen", "best_metric", "stateful_callbacks"] {
        assert!(fields.contains(&f), "{f} missing: {fields:?}");
    }
    assert_eq!(fields.len(), 20, "exactly transformers' TrainerState fields: {fields:?}");
    assert_eq!(ts["global_step"], 3);
    let history = ts["log_history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["step"] == 3 && h.get("reward").is_some()), "{history:?}");
    assert!(history.iter().any(|h| h.get("eval_accuracy").is_some()), "evaluations are in the history");
    assert_eq!(read(ck.join("dapo_state.json"))["step"], 3);
    // The final model, beside the checkpoints.
    assert!(o.join("final/model.safetensors").exists() && o.join("final/tokenizer_config.json").exists());

    // A fresh run into the same directory is refused, naming the way out.
    let again = dapo(&small(os, &["--steps", "2"]));
    fails_with(&again, &["holds a previous run", "checkpoint-2", "--overwrite-output-dir", "--resume auto"]);
    // --resume auto continues from the latest checkpoint.
    let auto = dapo(&small(os, &["--steps", "4", "--resume", "auto"]));
    let err = stderr(&auto);
    assert!(auto.status.success() && err.contains("checkpoint-3") && err.contains("at step 3"), "{err}");
    // --overwrite-output-dir clears the old run first.
    let over = dapo(&small(os, &["--steps", "1", "--overwrite-output-dir"]));
    assert!(over.status.success(), "{}", stderr(&over));
    assert!(!o.join("checkpoint-4").exists() && o.join("checkpoint-1").exists());
    assert_eq!(
        std::fs::read_to_string(o.join("dapo_log.jsonl")).unwrap().lines().filter(|l| l.contains("\"rl\"")).count(),
        1
    );
    // --resume auto in an empty directory starts fresh.
    let fresh = tmp.path().join("fresh");
    let out = dapo(&small(fresh.to_str().unwrap(), &["--steps", "1", "--resume", "auto"]));
    assert!(out.status.success() && stderr(&out).contains("starting fresh"), "{}", stderr(&out));
}

#[test]
fn report_to_writes_tensorboard_events_and_a_csv_or_nothing() {
    use gepa_dapo_grn::report::tensorboard::{event_files, read_events, What};
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let out = dapo(&small(o.to_str().unwrap(), &["--report-to", "tensorboard,csv,jsonl", "--logging-steps", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    // TensorBoard: one event per logging step (its CRCs checked by the reader) and per
    // evaluation, the TRL names under train/ and eval/.
    let files = event_files(&o.join("runs")).unwrap();
    assert_eq!(files.len(), 1);
    let mut seen: Vec<(i64, String)> = Vec::new();
    for e in read_events(&files[0]).unwrap() {
        if let What::Scalars(v) = e.what {
            seen.extend(v.into_iter().map(|(tag, _)| (e.step, tag)));
        }
    }
    for step in 1..=3 {
        assert!(seen.contains(&(step, "train/reward".into())), "step {step}: {seen:?}");
        assert!(seen.contains(&(step, "train/completions/mean_length".into())), "step {step}");
    }
    assert!(seen.contains(&(0, "eval/accuracy".into())) && seen.contains(&(3, "eval/accuracy".into())), "{seen:?}");
    // CSV: a row per logging step and evaluation, a column per metric.
    let csv = std::fs::read_to_string(o.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[..2], ["step", "time"]);
    assert!(header.contains(&"train/reward") && header.contains(&"eval/accuracy"), "{header:?}");
    assert_eq!(csv.lines().count(), 1 + 3 + 3, "header, 3 logging steps, 3 evaluations");
    assert!(o.join("dapo_log.jsonl").exists());

    // none: no log files at all.
    let n = tmp.path().join("quiet");
    let out = dapo(&small(n.to_str().unwrap(), &["--report-to", "none"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!n.join("dapo_log.jsonl").exists() && !n.join("metrics.csv").exists() && !n.join("runs").exists());
    // An unknown name is refused by name.
    fails_with(
        &dapo(&small(tmp.path().join("x").to_str().unwrap(), &["--report-to", "wandb"])),
        &["wandb", "tensorboard"],
    );
}
