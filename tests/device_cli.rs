//! The GPT-2 commands on the kernel backend. `--device emu` runs `train`, `sft`, `generate`
//! and `eval` through exactly the code `--device cuda` runs (KernelBackend, the launch
//! wrappers, every kernel, device-side sampling), with the kernels compiled for the host; each
//! command must agree with `--device cpu`, the oracle, on the same inputs and seed.
//!
//! Sampled tokens must match exactly (the logits agree to ~1e-6 and a draw only flips when
//! the uniform lands that close to a CDF boundary); losses, KL and gradient norms within
//! 1e-3 relative (f32 sums in a different order over two steps of AdamW).

mod common;

use common::cli::{dapo, stderr};

use std::path::{Path, PathBuf};

/// A tiny GPT-2 checkpoint (3 SFT steps on the CPU) in `dir`.
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let sft = dir.join("sft");
    let out =
        dapo(&["sft", "--output-dir", sft.to_str().unwrap(), "--steps", "3", "--device", "cpu", "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    sft.join("checkpoint-3")
}

/// `n` addition tasks as JSONL.
fn tasks(dir: &Path, name: &str, n: usize) -> String {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let (a, b) = (3 * i + 2, 7 * i + 5);
            format!("{{\"prompt\": \"{a}+{b}=\", \"answer\": \"{}\", \"task_id\": \"add\"}}", a + b)
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_str().unwrap().to_string()
}

/// Runs `dapo args` and checks it succeeded on the device it was given.
fn run_ok(args: &[&str]) -> std::process::Output {
    let out = dapo(args);
    let err = stderr(&out);
    assert!(out.status.success(), "dapo {}:\n{err}", args.join(" "));
    let device = args[args.iter().position(|a| *a == "--device").unwrap() + 1];
    let said = if device == "emu" { "device: emulated CUDA device" } else { "device: cpu" };
    assert!(err.contains(said), "dapo {} did not say it ran on {device}:\n{err}", args.join(" "));
    out
}

fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The value without the scorer's process id (the one field that must differ between runs).
fn without_pid(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            m.iter().filter(|(k, _)| k.as_str() != "pid").map(|(k, v)| (k.clone(), without_pid(v))).collect()
        }
        serde_json::Value::Array(a) => a.iter().map(without_pid).collect(),
        v => v.clone(),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn generate_and_eval_on_the_emulated_device_match_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_checkpoint(tmp.path());
    let m = model.to_str().unwrap();
    let data = tasks(tmp.path(), "eval.jsonl", 3);
    let mut per_device = vec![];
    for device in ["cpu", "emu"] {
        #[rustfmt::skip]
        let gen = run_ok(&[
            "generate", "--model", m, "--prompt", "12+34=", "--prompt", "7+8=", "--num-samples", "2",
            "--max-new-tokens", "4", "--top-k", "20", "--top-p", "0.95", "--seed", "3", "--device", device,
            "--threads", "1",
        ]);
        #[rustfmt::skip]
        let eval = run_ok(&["eval", "--model", m, "--dataset", &data, "--max-new-tokens", "4", "--device", device,
                            "--threads", "1"]);
        per_device.push((json_lines(&gen.stdout), String::from_utf8_lossy(&eval.stdout).to_string()));
    }
    let ((gc, ec), (ge, ee)) = (&per_device[0], &per_device[1]);
    assert_eq!(gc.len(), 4, "2 prompts × 2 samples");
    assert_eq!(ge.len(), gc.len());
    for (c, e) in gc.iter().zip(ge) {
        assert_eq!((&c["completion"], &c["tokens"], &c["finish"]), (&e["completion"], &e["tokens"], &e["finish"]));
        let (lc, le) = (c["logprob_sum"].as_f64().unwrap(), e["logprob_sum"].as_f64().unwrap());
        assert!(lc < 0.0 && close(lc, le, 1e-4), "log-prob sums {lc} (cpu) and {le} (emu)");
    }
    assert!(ec.contains("accuracy=") && ec == ee, "eval differs:\ncpu:\n{ec}\nemu:\n{ee}");
}

#[test]
fn train_and_sft_on_the_emulated_device_match_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_checkpoint(tmp.path());
    let (train, heldout) = (tasks(tmp.path(), "train.jsonl", 4), tasks(tmp.path(), "heldout.jsonl", 2));
    // Rewards that differ within a group (completion length), so advantages, the loss and
    // the gradient are not zero.
    let scorer = format!("python3 {}/tests/data/scorers/good.py", env!("CARGO_MANIFEST_DIR"));
    let mixer = tmp.path().join("mix.yaml");
    std::fs::write(&mixer, "correctness: 1.0\nlength: 0.1\n").unwrap();
    let mut logs = vec![];
    for device in ["cpu", "emu"] {
        let out = tmp.path().join(device);
        #[rustfmt::skip]
        run_ok(&[
            "train", "--model", model.to_str().unwrap(), "--dataset", &train, "--eval-dataset", &heldout,
            "--output-dir", out.to_str().unwrap(), "--steps", "2", "--batch-size", "2", "--group-size", "3",
            "--max-new-tokens", "3", "--kl-coef", "0.1", "--scorer-cmd", &scorer,
            "--reward-mixer", mixer.to_str().unwrap(), "--eval-every", "2", "--learning-rate", "1e-3",
            "--seed", "5", "--device", device, "--threads", "1",
        ]);
        assert!(
            out.join("checkpoint-2/model.safetensors").exists() && out.join("reference/model.safetensors").exists()
        );
        logs.push(json_lines(&std::fs::read(out.join("dapo_log.jsonl")).unwrap()));
    }
    let (cpu, emu) = (&logs[0], &logs[1]);
    assert_eq!(cpu.len(), emu.len());
    let mut nonzero = 0;
    for (c, e) in cpu.iter().zip(emu) {
        if c.get("eval").is_some() {
            assert_eq!(without_pid(&c["eval"]), without_pid(&e["eval"]), "greedy held-out evaluation");
            continue;
        }
        assert_eq!(
            without_pid(&c["gepa"]),
            without_pid(&e["gepa"]),
            "the same completions get the same rewards (step {})",
            c["step"]
        );
        for key in ["loss", "policy_loss", "kl", "entropy", "grad_norm"] {
            let (a, b) = (c["rl"][key].as_f64().unwrap(), e["rl"][key].as_f64().unwrap());
            assert!(close(a, b, 1e-3), "step {} rl.{key}: cpu {a}, emu {b}", c["step"]);
            nonzero += usize::from(key == "grad_norm" && a > 0.0);
        }
    }
    assert_eq!(nonzero, 2, "both steps update the policy");

    // SFT: the same batches, so the same losses.
    let mut losses = vec![];
    for device in ["cpu", "emu"] {
        let out = tmp.path().join(format!("sft-{device}"));
        #[rustfmt::skip]
        let run = run_ok(&[
            "sft", "--output-dir", out.to_str().unwrap(), "--data", &train, "--steps", "2", "--batch-size", "2",
            "--seq-len", "12", "--device", device, "--threads", "1",
        ]);
        let err = stderr(&run);
        let loss = err.split("final train loss ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
        losses.push(loss.parse::<f64>().unwrap());
    }
    assert!(close(losses[0], losses[1], 1e-3), "final SFT loss: cpu {}, emu {}", losses[0], losses[1]);
}

#[test]
fn the_builtin_default_runs_on_the_emulated_device_as_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let mut logs = vec![];
    // f32 on the CPU, f32 on the emulated kernels, and bf16 mixed precision on them (`--dtype
    // bf16`, the GPU's default: bf16 activations and GEMM operands, f32 master weights).
    for (name, device, dtype) in [("cpu", "cpu", "auto"), ("emu", "emu", "auto"), ("emu-bf16", "emu", "bf16")] {
        let out = tmp.path().join(name);
        #[rustfmt::skip]
        let run = run_ok(&[
            "train", "--output-dir", out.to_str().unwrap(), "--warmup-sft-steps", "20", "--steps", "3",
            "--batch-size", "2", "--group-size", "2", "--eval-every", "2", "--device", device, "--threads", "1",
            "--dtype", dtype,
        ]);
        let err = stderr(&run);
        for needle in ["warm start", "before RL: held-out accuracy", "after RL: held-out accuracy", "checkpoint-3"] {
            assert!(err.contains(needle), "{name}: stderr lacks {needle:?}:\n{err}");
        }
        let said_bf16 = err.contains("bf16 mixed precision");
        assert_eq!(said_bf16, dtype == "bf16", "{name}: the device line names the precision:\n{err}");
        logs.push(json_lines(&std::fs::read(out.join("dapo_log.jsonl")).unwrap()));
    }
    let cpu = &logs[0];
    for (name, run) in [("emu", &logs[1]), ("emu-bf16", &logs[2])] {
        assert_eq!(cpu.len(), run.len());
        let bf16 = name == "emu-bf16";
        for (c, e) in cpu.iter().zip(run) {
            if c.get("eval").is_some() {
                // Greedy decoding of 300 held-out prompts: a near-tie between two logits could
                // flip an answer after 20 SFT steps in a different summation order (one
                // allowed), or with bf16 GEMM operands (logits move by ~5e-3 of their scale,
                // the golden tests measure it: two allowed).
                let (a, b) = (c["eval"]["accuracy"].as_f64().unwrap(), e["eval"]["accuracy"].as_f64().unwrap());
                let allowed = if bf16 { 2.0 } else { 1.0 } / 300.0 + 1e-12;
                assert!((a - b).abs() <= allowed, "held-out accuracy cpu {a}, {name} {b}");
            } else {
                let (a, b) = (c["rl"]["loss"].as_f64().unwrap(), e["rl"]["loss"].as_f64().unwrap());
                assert!(b.is_finite(), "step {} loss on {name}: {b}", c["step"]);
                if bf16 {
                    // bf16 may sample other tokens (a draw near a CDF boundary): the losses
                    // are then of other batches, bounded by the clip range, not equal.
                    assert!((a - b).abs() < 0.5, "step {} loss: cpu {a}, {name} {b}", c["step"]);
                } else {
                    assert_eq!(c["gepa"], e["gepa"], "step {} rewards", c["step"]);
                    assert!(close(a, b, 1e-3), "step {} loss: cpu {a}, {name} {b}", c["step"]);
                }
            }
        }
    }
}
