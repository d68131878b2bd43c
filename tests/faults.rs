//! Bad input and faults against the `dapo` binary: every class of the hostile-user corpus gets
//! a clear error (exit 1, never a panic or a hang), and no fault loses completed work —
//! signals to the process and to its group, crashes at chosen instants of a checkpoint write
//! and of a log write (`DAPO_FAILPOINT`), a full disk, a second run on a locked directory.

mod common;

use common::cli::{dapo, fails_with, stderr};

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh copy of the tiny TRL-parity GPT-2 (char tokenizer, 2 layers, EOS 0) in `dir`.
fn model_copy(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(root().join("tests/data/trl/model").join(f), m.join(f)).unwrap();
    }
    m
}

fn dataset() -> String {
    root().join("datasets/toy_math/addition_small.jsonl").display().to_string()
}

/// `dapo train` on the tiny model: small batches, a checkpoint every `save` steps.
fn train_args(model: &Path, out: &Path, steps: &str, save: &str) -> Vec<String> {
    [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        &dataset(),
        "--output-dir",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--save-every",
        save,
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--eval-every",
        "0",
        "--eval-size",
        "4",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Sets `flag` to `value` in `args`, replacing the value it has there.
fn set(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
}

fn run(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dapo"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn spawn(args: &[String], own_group: bool, extra: &[String]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dapo"));
    c.args(args).args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    if own_group {
        // Like a terminal's foreground job: dapo leads a process group a Ctrl-C is sent to.
        c.process_group(0);
    }
    c.spawn().unwrap()
}

fn wait_for(path: &Path, secs: u64) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed().as_secs() < secs, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    v.sort();
    v
}

fn kill(pid: i32, sig: &str) {
    assert!(Command::new("kill").args([sig, "--", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn malformed_model_files_are_named_errors_never_hangs_or_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // model.safetensors is a FIFO: refused before it is opened (opening would block).
    let m = model_copy(&tmp.path().join("fifo"));
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    assert!(Command::new("mkfifo").arg(m.join("model.safetensors")).status().unwrap().success());
    fails_with(&run(&train_args(&m, &out, "1", "0"), &[]), &["model.safetensors", "not a regular file"]);

    // config.json says 1 layer, the weights have 2: an error naming both, not a silently
    // truncated model; an absurd n_layer fails the same way, at once.
    for n in ["1", "1000000000"] {
        let m = model_copy(&tmp.path().join(format!("layers{n}")));
        let cfg = std::fs::read_to_string(m.join("config.json"))
            .unwrap()
            .replace("\"n_layer\": 2", &format!("\"n_layer\": {n}"));
        std::fs::write(m.join("config.json"), cfg).unwrap();
        let start = Instant::now();
        fails_with(
            &run(&train_args(&m, &out, "1", "0"), &[]),
            &["hold 2 transformer layers", &format!("n_layer = {n}")],
        );
        assert!(start.elapsed().as_secs() < 20, "refused before sizing anything from the config");
    }

    // A tensor that belongs to no parameter.
    let m = model_copy(&tmp.path().join("extra"));
    let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    let extra = [0.5f32; 4];
    views.push((
        "transformer.h.1.attn.c_extra.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], bytemuck::cast_slice(&extra)).unwrap(),
    ));
    let data = safetensors::tensor::serialize(views, &None).unwrap();
    std::fs::write(m.join("model.safetensors"), data).unwrap();
    fails_with(&run(&train_args(&m, &out, "1", "0"), &[]), &["c_extra", "belong to no parameter"]);
}

#[test]
fn bad_data_and_settings_are_refused_before_training_with_the_culprit_named() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    let out = tmp.path().join("out");
    // A 2 MiB single-line prompt: refused by file:line before the tokenizer sees it.
    let data = tmp.path().join("long.jsonl");
    std::fs::write(
        &data,
        format!(
            "{{\"prompt\": \"1+1=\", \"answer\": \"2\"}}\n{{\"prompt\": \"{}\", \"answer\": \"1\"}}\n",
            "7".repeat(2 << 20)
        ),
    )
    .unwrap();
    let mut args = train_args(&m, &out, "1", "0");
    args[4] = data.display().to_string();
    fails_with(&run(&args, &[]), &["long.jsonl:2", "bytes long"]);

    // Sizes: one that overflows the step's bookkeeping, one that cannot fit in memory.
    let mut a = train_args(&m, &out, "1", "0");
    set(&mut a, "--batch-size", "10000000000");
    fails_with(&run(&a, &[]), &["batch_size", "absurdly large"]);
    let mut a = train_args(&m, &out, "1", "0");
    for (f, v) in [("--batch-size", "65536"), ("--group-size", "256"), ("--max-new-tokens", "25")] {
        set(&mut a, f, v);
    }
    fails_with(&run(&a, &[]), &["needs at least", "of memory", "--batch-size"]);

    let o = dapo(&["bench", "--batch-size", "10000000000", "--skip-rl", "--threads", "1"]);
    fails_with(&o, &["needs at least", "--batch-size"]);

    // Numbers out of range, each named.
    for (flag, value, needle) in [
        ("--learning-rate", "NaN", "--learning-rate: NaN is not a finite number"),
        ("--adam-beta2", "1.5", "beta2"),
        ("--max-grad-norm", "-1", "max_grad_norm"),
        ("--eval-size", "0", "eval_size"),
        ("--temperature", "-1", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--scorer-timeout", "1e20", "scorer-timeout"),
        ("--max-new-tokens", "18446744073709551615", "max_new_tokens"),
    ] {
        let mut a = train_args(&m, &out, "1", "0");
        if let Some(i) = a.iter().position(|x| x == flag) {
            a.drain(i..i + 2);
        }
        a.push(format!("{flag}={value}"));
        fails_with(&run(&a, &[]), &[needle]);
    }

    // SFT that would train on nothing: every completion lies beyond --seq-len, or every text
    // is empty.
    for (name, lines) in [
        ("late.jsonl", format!("{{\"prompt\": \"{}\", \"completion\": \"3\"}}\n", "1".repeat(40))),
        ("empty.jsonl", "{\"text\": \"\"}\n{\"text\": \"\"}\n".to_string()),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, lines).unwrap();
        let o = tmp.path().join(format!("sft-{name}"));
        let out = dapo(&[
            "sft",
            "--data",
            p.to_str().unwrap(),
            "--output-dir",
            o.to_str().unwrap(),
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--threads",
            "1",
        ]);
        fails_with(&out, &[name, "no example has a token to train on"]);
    }
    let out = dapo(&[
        "sft",
        "--output-dir",
        tmp.path().join("s").to_str().unwrap(),
        "--steps",
        "2",
        "--max-grad-norm=-1",
        "--threads",
        "1",
    ]);
    fails_with(&out, &["--max-grad-norm"]);
}

#[test]
fn safety_rules_on_unknown_metrics_fail_at_start_and_loss_and_grad_norm_rules_work() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    let out = tmp.path().join("out");
    let rules = tmp.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - {name: typo, metric: rewards.corectness, when: {below: 0.5}, action: skip_update}\n",
    )
    .unwrap();
    let mut a = train_args(&m, &out, "2", "0");
    a.extend(["--safety".to_string(), rules.display().to_string()]);
    let o = run(&a, &[]);
    fails_with(&o, &["typo", "rewards.corectness"]);
    assert!(!out.join("dapo_log.jsonl").exists(), "refused before the first step");

    std::fs::write(
        &rules,
        "rules:\n  - {name: spike, metric: grad_norm, when: {above: -1.0}, action: skip_update}\n  - {name: lossy, metric: loss, when: {above: -1.0e9}, action: {scale_lr: 0.5}}\n",
    )
    .unwrap();
    let o = run(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(out.join("dapo_log.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r.get("rl").is_some())
        .collect();
    let rules_seen: Vec<String> =
        steps[1]["safety"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap().to_string()).collect();
    assert_eq!(rules_seen, ["spike", "lossy"], "both rules see the previous step's grad_norm and loss");
    assert_eq!(steps[1]["skipped_update"], true);
}

#[test]
fn sigterm_and_a_terminal_ctrl_c_checkpoint_and_exit_143_and_130() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    for (sig, code, group) in [("-TERM", 143, false), ("-INT", 130, true)] {
        let out = tmp.path().join(format!("out{code}"));
        let args = train_args(&m, &out, "100000", "0");
        // The Ctrl-C case runs an external scorer: a terminal signals the whole foreground
        // group, and the scorer (in its own group) must keep answering so the step finishes.
        let mix = tmp.path().join("mix.yaml");
        std::fs::write(&mix, "correctness: 1.0\n").unwrap();
        let scorer = [
            "--scorer-cmd".to_string(),
            format!("python3 {}", root().join("tests/data/scorers/good.py").display()),
            "--reward-mixer".to_string(),
            mix.display().to_string(),
        ];
        let mut child = spawn(&args, group, if group { &scorer[..] } else { &[] });
        wait_for(&out.join("dapo_log.jsonl"), 120);
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id() as i32;
        kill(if group { -pid } else { pid }, sig);
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(code), "{sig}: {err}");
        assert!(err.contains("resume with --resume"), "{err}");
        let ck = checkpoints(&out);
        assert_eq!(ck.len(), 1, "{ck:?}");
        assert!(out.join(&ck[0]).join("trainer_state.json").exists());
    }
}

#[test]
fn a_scorer_failure_checkpoints_the_last_completed_step() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    let out = tmp.path().join("out");
    // Two good batches (the evaluation before RL, step 1), then a crash in step 2; no
    // periodic checkpoints.
    let mut args = train_args(&m, &out, "5", "0");
    set(&mut args, "--eval-every", "100");
    let mix = tmp.path().join("mix.yaml");
    std::fs::write(&mix, "correctness: 1.0\n").unwrap();
    let cmd = format!("python3 {} crash 2", root().join("tests/data/scorers/fail_later.py").display());
    args.extend(["--scorer-cmd".into(), cmd, "--reward-mixer".into(), mix.display().to_string()]);
    let o = run(&args, &[]);
    fails_with(&o, &["out of credits", "step 1 was checkpointed"]);
    assert_eq!(checkpoints(&out), ["checkpoint-1"]);
}

/// Log records without their timings (wall-clock seconds differ between runs).
fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            // Wall-clock values: when the step ended and how long its phases took.
            let o = r.as_object_mut().unwrap();
            o.remove("timing");
            o.remove("time");
            if let Some(m) = o.get_mut("metrics").and_then(|m| m.as_object_mut()) {
                m.retain(|k, _| !k.starts_with("timing/") && k != "tokens_per_second");
            }
            r
        })
        .collect()
}

#[test]
fn crashes_inside_a_checkpoint_or_a_log_write_lose_nothing_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    // The straight run: 4 steps, a checkpoint every 2.
    let straight = tmp.path().join("straight");
    let o = run(&train_args(&m, &straight, "4", "2"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A crash in the middle of the log record of step 3 (the 3rd record), after checkpoint-2.
    let crash = tmp.path().join("crash");
    let o = run(&train_args(&m, &crash, "4", "2"), &[("DAPO_FAILPOINT", "log.torn_record@3")]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(checkpoints(&crash), ["checkpoint-2"]);
    let mut args = train_args(&m, &crash, "4", "2");
    args.extend(["--resume".to_string(), crash.join("checkpoint-2").display().to_string()]);
    let o = run(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        records(&crash.join("dapo_log.jsonl")),
        records(&straight.join("dapo_log.jsonl")),
        "the resumed log equals the straight one"
    );
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join("checkpoint-4").join(f)).unwrap(),
            std::fs::read(crash.join("checkpoint-4").join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs from the straight run's");
    }

    // A crash between the two renames that replace an existing checkpoint: resuming from
    // checkpoint-2 with --steps 4 rewrites checkpoint-4. The next start puts it back.
    let before = std::fs::read(crash.join("checkpoint-4/model.safetensors")).unwrap();
    let o = run(&args, &[("DAPO_FAILPOINT", "checkpoint.between_renames")]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!crash.join("checkpoint-4").exists(), "the crash came between the renames");
    let again = args.clone();
    let o = run(&again, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("recovered"), "{err}");
    assert_eq!(std::fs::read(crash.join("checkpoint-4/model.safetensors")).unwrap(), before);
    let leftovers: Vec<String> = std::fs::read_dir(&crash)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".dapo.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A crash after a new checkpoint was filled but before it was published leaves only a
    // temporary copy, which the next start removes.
    let o = run(&args, &[("DAPO_FAILPOINT", "checkpoint.before_rename")]);
    assert_ne!(o.status.code(), Some(0));
    let o = run(&again, &[]);
    assert!(o.status.success() && stderr(&o).contains("removed the unfinished"), "{}", stderr(&o));
}

#[test]
fn the_same_run_twice_writes_byte_identical_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    let out = tmp.path().join("out");
    let mut first = Vec::new();
    for round in 0..2 {
        if out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        }
        let o = run(&train_args(&m, &out, "2", "0"), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let files: Vec<Vec<u8>> =
            ["model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json", "trainer_state.json"]
                .iter()
                .map(|f| std::fs::read(out.join("checkpoint-2").join(f)).unwrap())
                .collect();
        if round == 0 {
            first = files;
        } else {
            assert!(files == first, "checkpoint files differ between identical runs");
        }
    }
}

#[test]
fn a_full_disk_and_a_locked_output_dir_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path());
    // A full disk under the log: /dev/full refuses every write with ENOSPC.
    let out = tmp.path().join("full");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink("/dev/full", out.join("dapo_log.jsonl")).unwrap();
    fails_with(&run(&train_args(&m, &out, "2", "0"), &[]), &["dapo_log.jsonl", "No space left on device"]);

    // A second run into a directory a running one holds.
    let out = tmp.path().join("busy");
    let args = train_args(&m, &out, "100000", "0");
    let mut child = spawn(&args, false, &[]);
    wait_for(&out.join("dapo_log.jsonl"), 120);
    let o = run(&args, &[]);
    fails_with(&o, &["in use by another dapo run", &format!("pid {}", child.id())]);
    kill(child.id() as i32, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(143));
    // The lock died with the process.
    let ck = checkpoints(&out);
    let mut resume = train_args(&m, &out, "0", "0");
    let steps: u64 = ck[0].trim_start_matches("checkpoint-").parse().unwrap();
    let at = resume.iter().position(|a| a == "--steps").unwrap() + 1;
    resume[at] = (steps + 1).to_string();
    resume.extend(["--resume".to_string(), out.join(&ck[0]).display().to_string()]);
    let o = run(&resume, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}
