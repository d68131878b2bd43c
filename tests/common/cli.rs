//! Running the `dapo` binary from tests and checking how it failed.

use std::process::{Command, Output};

/// Runs `dapo args…` to completion.
pub fn dapo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dapo")).args(args).output().expect("the binary runs")
}

/// The run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed run: exit code 1, no panic, and every `needle` in stderr.
pub fn fails_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

/// `dapo sft` at toy size on the built-in task into `run`: `steps` steps of 2 sequences × 16
/// tokens on one CPU thread, plus `extra` flags.
pub fn tiny_sft(run: &std::path::Path, steps: &str, extra: &[&str]) -> Output {
    let run = run.to_str().expect("a UTF-8 path");
    let mut args = vec!["sft", "--output-dir", run, "--steps", steps, "--batch-size", "2", "--seq-len", "16"];
    args.extend_from_slice(&["--threads", "1"]);
    args.extend_from_slice(extra);
    dapo(&args)
}
