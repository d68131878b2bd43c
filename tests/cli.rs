//! The `dapo` binary end to end: a short SFT run whose checkpoint reloads, and bad input that
//! must end in a clear error and exit code 1 (2 for usage errors), never a panic.

mod common;

use common::cli::{dapo, fails_with};

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::checkpoint::{load_model, load_optimizer};
use gepa_dapo_grn::optim::{AdamW, AdamWConfig};
use gepa_dapo_grn::tokenizer::Tokenizer;
use std::path::Path;

fn sft_args<'a>(out_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v =
        vec!["sft", "--output-dir", out_dir, "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--threads", "1"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn sft_default_task_writes_checkpoints_that_reload_and_resume_state() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let o = out_dir.to_str().unwrap();
    let out = dapo(&sft_args(o, &["--save-every", "2", "--device", "cpu"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("held-out loss") && err.contains("checkpoint-4"), "{err}");
    // One log record per step, with finite losses.
    let log = std::fs::read_to_string(out_dir.join("sft_log.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()));
    for step in [2, 4] {
        let ck = out_dir.join(format!("checkpoint-{step}"));
        let model = load_model(&ck, CpuBackend::new(Some(1))).unwrap();
        let tok = Tokenizer::from_dir(&ck).unwrap();
        assert_eq!(tok.vocab_size(), model.config().vocab_size);
        let mut opt = AdamW::new(&model, AdamWConfig::default());
        load_optimizer(&ck.join("optimizer.safetensors"), &model, &mut opt).unwrap();
        assert_eq!(opt.steps_taken(), step);
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(ck.join(f)).unwrap()).unwrap()
        };
        assert_eq!(read("dapo_state.json")["step"], step);
        // transformers' TrainerState schema, with the steps logged so far.
        let hf = read("trainer_state.json");
        assert_eq!(hf["global_step"], step);
        assert_eq!(hf["log_history"].as_array().unwrap().len(), step as usize);
    }
    // No temporary directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.') && e.file_name() != ".dapo.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sft_is_deterministic_for_a_seed_and_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let d = tmp.path().join(name);
        let out = dapo(&sft_args(d.to_str().unwrap(), &["--seed", "7"]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(d.join("checkpoint-4/model.safetensors")).unwrap()
    };
    assert_eq!(run("x"), run("y"), "same seed, same weights, bit for bit");
}

#[test]
fn sft_from_a_checkpoint_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    assert!(dapo(&sft_args(first.to_str().unwrap(), &[])).status.success());
    let second = tmp.path().join("second");
    let ck = first.join("checkpoint-4");
    let out = dapo(&sft_args(second.to_str().unwrap(), &["--model", ck.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(second.join("checkpoint-4/model.safetensors").exists());
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "bad.jsonl", "{\"text\": \"1+1=2\"}\n{\"text\": \"2+2=4\"}\n{\"text\": oops}\n");
    let o = tmp.path().join("o");
    fails_with(&dapo(&sft_args(o.to_str().unwrap(), &["--data", &data])), &["bad.jsonl:3:"]);
}

#[test]
fn empty_data_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "empty.jsonl", "\n\n");
    let o = tmp.path().join("o");
    fails_with(&dapo(&sft_args(o.to_str().unwrap(), &["--data", &data])), &["empty.jsonl", "empty"]);
    let data = write(tmp.path(), "empty.txt", "");
    fails_with(&dapo(&sft_args(o.to_str().unwrap(), &["--data", &data])), &["empty.txt", "empty"]);
}

#[test]
fn missing_files_and_unknown_tokenizers_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("o");
    let o = o.to_str().unwrap();
    fails_with(&dapo(&sft_args(o, &["--data", "/nonexistent/data.jsonl"])), &["/nonexistent/data.jsonl"]);
    fails_with(&dapo(&sft_args(o, &["--model", "/nonexistent/model"])), &["/nonexistent/model"]);
    // A model directory without tokenizer.json: say so and what to pass.
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/a/model");
    fails_with(&dapo(&sft_args(o, &["--model", golden])), &["tokenizer.json", "--tokenizer"]);
    let tok = write(tmp.path(), "tokenizer.json", "{\"model\": {\"type\": \"NoSuchModel\"}}");
    fails_with(&dapo(&sft_args(o, &["--tokenizer", &tok])), &["tokenizer.json", "not a valid tokenizer.json"]);
    // A character outside the built-in tokenizer's alphabet, named with its line.
    let data = write(tmp.path(), "accents.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"café\"}\n");
    fails_with(&dapo(&sft_args(o, &["--data", &data])), &["accents.jsonl:2:", "'é'"]);
}

#[test]
fn cuda_request_and_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("o");
    // Without a usable GPU, `--device cuda` names the flag and why (here: no driver). On a GPU
    // host the same command trains on the GPU, which tests/device_cli.rs covers through the
    // emulator.
    if gepa_dapo_grn::backend::cuda::CudaDevice::open(0).is_err() {
        fails_with(&dapo(&sft_args(o.to_str().unwrap(), &["--device", "cuda"])), &["--device cuda:0: "]);
    }
    fails_with(&dapo(&sft_args(o.to_str().unwrap(), &["--init", "gpt5"])), &["unknown model config `gpt5`"]);
    // Usage errors follow clap: exit code 2 and a usage line.
    let out = dapo(&["sft", "--steps", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'many'"));
    let help = dapo(&["sft", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--learning-rate"));
}

#[test]
fn selftest_on_the_emulator_passes_every_row() {
    let out = dapo(&["selftest", "--device", "emu", "--seed", "3"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("device: emulated"), "{stdout}");
    for op in gepa_dapo_grn::selftest::FAMILIES {
        assert!(stdout.lines().any(|l| l.starts_with(op) && l.contains("PASS")), "no PASS row for {op}:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed")).expect("a summary line");
    let (passed, total) = summary.split_whitespace().next().unwrap().split_once('/').unwrap();
    assert_eq!(passed, total, "{summary}");
}

/// `--dtype` and `--matmul-precision` on every command that runs GPT-2: the CPU (the f32
/// oracle) refuses bf16 and TF32 naming the flag, a bad value is a usage error listing the
/// choices, and `--help` documents both.
#[test]
fn precision_flags_are_checked_and_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("o");
    let o = o.to_str().unwrap();
    fails_with(&dapo(&sft_args(o, &["--device", "cpu", "--dtype", "bf16"])), &["--dtype bf16", "computes in f32 only"]);
    fails_with(&dapo(&["train", "--device", "cpu", "--matmul-precision", "tf32"]), &["--matmul-precision tf32"]);
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/a/model");
    let gen = ["generate", "--model", model.to_str().unwrap(), "--device", "cpu", "--dtype", "bf16", "--prompt", "1"];
    fails_with(&dapo(&gen), &["--dtype bf16"]);
    for cmd in ["train", "sft", "generate", "eval", "bench"] {
        let out = dapo(&[cmd, "--dtype", "f16"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("expected auto, f32 or bf16"), "{cmd}: {err}");
        let help = String::from_utf8_lossy(&dapo(&[cmd, "--help"]).stdout).to_string();
        assert!(help.contains("--dtype") && help.contains("--matmul-precision"), "{cmd} --help:\n{help}");
    }
    let out = dapo(&["bench", "--matmul-precision", "fp8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected auto, f32 or tf32"));
}

/// `dapo selftest` checks every precision a run can ask for: the f32 families, the GEMM
/// families with TF32 products, and every bf16 kernel.
#[test]
fn selftest_prints_tf32_and_bf16_rows() {
    let out = dapo(&["selftest", "--device", "emu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for op in [
        "matmul_tf32",
        "objective_tf32/",
        "matmul_bf16",
        "convert/f32_bf16",
        "gelu_forward_bf16",
        "attention_backward_bf16/dqkv",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(op) && l.contains("PASS")), "no PASS row for {op}:\n{stdout}");
    }
}

#[test]
fn selftest_refuses_the_cpu() {
    fails_with(
        &dapo(&["selftest", "--device", "cpu"]),
        &["selftest compares a device against the CPU oracle; pick cuda or emu"],
    );
}

#[test]
fn selftest_on_a_missing_gpu_says_why() {
    // This machine has no GPU (or GPU 7 does not exist on one that does): exit 1, naming the device.
    let out = dapo(&["selftest", "--device", "cuda:7"]);
    fails_with(&out, &["--device cuda:7"]);
}

/// The value of `key=` in a bench line, as a number.
fn field(line: &str, key: &str) -> f64 {
    let v = line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {line}"));
    v.trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{key}{v} in {line}"))
}

#[test]
fn bench_on_the_emulator_prints_the_gpt2_workloads_and_every_kernel() {
    let out = dapo(&["bench", "--device", "emu", "--small"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("host times"), "the emulator's times must be flagged as host times:\n{stdout}");
    // The GPT-2 workloads: throughput, and the peak of the device buffers (the tiny model's
    // weights alone are 0.4 MB; its AdamW state, activations and KV caches add to that).
    let line = |prefix: &str| {
        stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line:\n{stdout}"))
    };
    let train = line("dapo   train");
    assert!(field(train, "tokens/s=") > 0.0 && field(train, "peak_MiB=") >= 1.0, "{train}");
    let decode = line("dapo   decode");
    assert!(field(decode, "tokens/s=") > 0.0 && field(decode, "peak_MiB=") >= 1.0, "{decode}");
    let rl = line("dapo   rl-step");
    for key in ["rollout_s=", "reference_s=", "update_s=", "total_s="] {
        assert!(field(rl, key) > 0.0, "{rl}");
    }
    assert!(field(rl, "peak_MiB=") >= 1.0, "{rl}");
    for op in ["copy", "logprob_fwd", "logprob_bwd", "group_advantage", "policy_loss", "grn_fwd", "grn_bwd", "matmul"] {
        let line = stdout.lines().find(|l| l.starts_with(op)).unwrap_or_else(|| panic!("no {op} row:\n{stdout}"));
        // The median time is a positive number.
        let ms: f64 = line.split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(-1.0);
        assert!(ms > 0.0, "{line}");
    }
}

/// `dapo bench --device emu --full-size` measures the training step's peak device memory at
/// the precision the flags ask for (here the tiny model, so it is quick): bf16 mixed precision
/// and f32 storage with TF32 products reach the emulator through the same flags as a GPU run.
#[test]
fn bench_full_size_on_the_emulator_reports_memory_at_each_precision() {
    let mut peaks = vec![];
    for (flags, says) in [
        (&["--dtype", "f32"][..], "precision: f32\n"),
        (&["--matmul-precision", "tf32"][..], "precision: f32 (tf32 matmuls)"),
        (&["--dtype", "bf16"][..], "precision: bf16 mixed precision"),
    ] {
        let mut args = vec!["bench", "--device", "emu", "--full-size", "--model", "tiny", "--only", "train"];
        args.extend(flags);
        let out = dapo(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(says), "{args:?} does not say {says:?}:\n{stdout}");
        let train = stdout.lines().find(|l| l.starts_with("dapo   train")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(train.contains("B=1 T=128"), "{train}");
        peaks.push(field(train, "peak_MiB="));
    }
    // The tiny model's weights, gradients and AdamW state alone are ~50 MiB; f32 storage is the
    // same whatever the products' precision.
    assert!(peaks.iter().all(|&p| p >= 40.0), "{peaks:?}");
    assert_eq!(peaks[0], peaks[1], "{peaks:?}");
}

#[test]
fn bad_device_values_are_usage_errors() {
    for args in [&["selftest", "--device", "cuda:x"][..], &["bench", "--device", "cuda:x"], &["sft", "--device", "gpu"]]
    {
        let out = dapo(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a device"), "{args:?}: {err}");
    }
}

#[test]
fn a_reader_closing_the_pipe_early_is_not_a_failure() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_dapo"))
        .args(["selftest", "--device", "emu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("device: "), "{first}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sft_keeps_at_most_save_total_limit_checkpoints_and_writes_the_final_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("sft");
    let out = common::cli::tiny_sft(&run, "4", &["--save-every", "1", "--save-total-limit", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ck: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    ck.sort();
    assert_eq!(ck, ["checkpoint-3", "checkpoint-4"]);
    assert!(run.join("final/model.safetensors").exists() && run.join("final/tokenizer_config.json").exists());
    // The output directory now holds a run: a second start there is refused.
    let again = common::cli::tiny_sft(&run, "1", &[]);
    common::cli::fails_with(&again, &["holds a previous run", "--overwrite-output-dir"]);
}
