//! The external-process scorer against small Python scripts in `tests/data/scorers/`: a good
//! one, and one per failure mode (crash, hang, garbage, too few and too many responses). Every
//! failure must be a clear error, and the scorer must work again on the next batch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gepa_dapo_grn::reward::{score_checked, ExternalScorer, Metrics, ScoreInput, Scorer};
use serde_json::json;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/scorers").join(name)
}

fn scorer(name: &str) -> ExternalScorer {
    ExternalScorer::new("python3", [script(name)]).with_timeout(Duration::from_secs(20))
}

/// Scores `completions`, each against the answer "46".
fn run(s: &mut ExternalScorer, completions: &[&str]) -> gepa_dapo_grn::Result<Vec<Metrics>> {
    let meta = json!({"answer": "46", "task_id": "addition"});
    let batch: Vec<_> =
        completions.iter().map(|c| ScoreInput { prompt: "12+34=", completion: c, metadata: &meta }).collect();
    score_checked(s, &batch)
}

#[test]
fn a_good_scorer_answers_in_order_and_stays_alive() {
    let mut s = scorer("good.py").with_metric_names(["correctness", "length"]);
    assert_eq!(s.metric_names().unwrap(), ["correctness", "length"]);
    assert!(s.name().contains("good.py"));
    assert!(!s.is_running());

    let out = run(&mut s, &["46", " 46\n", "47", "", "quote \" and\nnewline"]).unwrap();
    let correct: Vec<f64> = out.iter().map(|m| m["correctness"]).collect();
    assert_eq!(correct, [1.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(out[4]["length"], 19.0, "strings travel JSON-escaped, one request per line");
    assert!(out.iter().all(|m| m["batch_size"] == 5.0));
    let pid = out[0]["pid"];

    // The same process answers the next batch: its request counter keeps counting.
    let out = run(&mut s, &["46", "x"]).unwrap();
    assert_eq!((out[0]["pid"], out[1]["answered"]), (pid, 7.0));
    assert_eq!(s.starts(), 1);
    assert!(s.stderr_tail().iter().any(|l| l.contains("ready")), "{:?}", s.stderr_tail());
    assert!(run(&mut s, &[]).unwrap().is_empty());

    // Dropping the scorer kills the process.
    drop(s);
    let proc_dir = PathBuf::from(format!("/proc/{}", pid as u64));
    if PathBuf::from("/proc/self").exists() {
        let t0 = Instant::now();
        while proc_dir.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!proc_dir.exists(), "the scorer process {pid} outlived the scorer");
    }
}

#[test]
fn a_batch_larger_than_the_pipe_buffers_does_not_deadlock() {
    let mut s = scorer("good.py");
    let long = "4".repeat(300);
    let completions: Vec<&str> = (0..3000).map(|i| if i % 2 == 0 { "46" } else { long.as_str() }).collect();
    let out = run(&mut s, &completions).unwrap();
    assert_eq!(out.len(), 3000);
    assert!(out.iter().enumerate().all(|(i, m)| m["correctness"] == if i % 2 == 0 { 1.0 } else { 0.0 }));
}

#[test]
fn a_crash_mid_batch_reports_the_exit_status_and_stderr_then_restarts() {
    let mut s = scorer("crash.py");
    let e = run(&mut s, &["46", "boom", "46"]).unwrap_err().to_string();
    assert!(e.contains("crash.py"), "names the scorer: {e}");
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("1 of 3 responses"), "{e}");
    assert!(e.contains("fatal: cannot score item 1"), "{e}");
    assert!(!s.is_running());

    let out = run(&mut s, &["46", "0"]).unwrap();
    assert_eq!((out[0]["correctness"], out[1]["correctness"]), (1.0, 0.0));
    assert_eq!(s.starts(), 2);
}

#[test]
fn a_hang_times_out_kills_the_process_and_restarts() {
    let mut s = scorer("hang.py").with_timeout(Duration::from_secs(1));
    assert_eq!(s.timeout(), Duration::from_secs(1));
    let t0 = Instant::now();
    let e = run(&mut s, &["46", "hang", "46"]).unwrap_err().to_string();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(e.contains("hang.py") && e.contains("timed out after 1s"), "{e}");
    assert!(e.contains("1 of 3 responses") && e.contains("killed"), "{e}");
    assert!(e.contains("hang.py: stuck"), "stderr tail: {e}");
    assert!(!s.is_running());

    let out = run(&mut s, &["46"]).unwrap();
    assert_eq!(out[0]["correctness"], 1.0);
    assert_eq!(s.starts(), 2);
}

#[test]
fn garbage_on_stdout_names_the_line_and_the_text() {
    let mut s = scorer("garbage.py");
    // A valid batch first, so line numbers count across batches; `null` reads as NaN.
    let out = run(&mut s, &["ok", "ok"]).unwrap();
    assert!(out[0]["missing"].is_nan() && out[1]["correctness"] == 1.0);

    let e = run(&mut s, &["ok", "text"]).unwrap_err().to_string();
    assert!(e.contains("garbage.py"), "{e}");
    assert!(e.contains("stdout line 4") && e.contains("completion 1 of 2"), "{e}");
    assert!(e.contains("Loading model weights... done") && e.contains("not JSON"), "{e}");

    // The next batch runs on a fresh process (line numbers restart).
    let e = run(&mut s, &["list"]).unwrap_err().to_string();
    assert!(e.contains("stdout line 1") && e.contains("[1, 2, 3]") && e.contains("JSON object"), "{e}");
    let e = run(&mut s, &["string"]).unwrap_err().to_string();
    assert!(e.contains("metric `correctness`") && e.contains("not a number"), "{e}");

    assert_eq!(run(&mut s, &["ok"]).unwrap()[0]["correctness"], 1.0);
    assert_eq!(s.starts(), 4);
}

#[test]
fn too_few_responses_time_out_with_the_count() {
    let mut s = scorer("too_few.py").with_timeout(Duration::from_secs(1));
    let e = run(&mut s, &["a", "b", "c"]).unwrap_err().to_string();
    assert!(e.contains("too_few.py") && e.contains("timed out") && e.contains("2 of 3 responses"), "{e}");
    assert!(e.contains("waiting for completion 2"), "{e}");
    assert!(e.contains("stderr was empty"), "{e}");
}

#[test]
fn a_response_left_over_from_the_previous_batch_is_an_error() {
    let mut s = scorer("too_many.py");
    // The extra line is taken as the second response here (the scorer cannot tell within a
    // batch); the one left over is caught before the next batch is sent.
    run(&mut s, &["a", "b"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let e = run(&mut s, &["c"]).unwrap_err().to_string();
    assert!(e.contains("too_many.py") && e.contains("left over") && e.contains("stdout line 3"), "{e}");
    assert!(run(&mut s, &["d"]).is_ok());
}

#[test]
fn a_program_that_cannot_start_is_a_named_error() {
    let mut s = ExternalScorer::new("/nonexistent/bin/scorer", Vec::<String>::new()).with_name("mine");
    let e = run(&mut s, &["46"]).unwrap_err().to_string();
    assert!(e.contains("`mine`") && e.contains("cannot start") && e.contains("/nonexistent/bin/scorer"), "{e}");
}

#[test]
fn a_timeout_kills_a_wrapper_scripts_children_too() {
    // A shell wrapper that forks a long-lived child and never answers: on the timeout the
    // scorer's whole process group is killed, so the child does not outlive it.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let mut s = ExternalScorer::new("sh", ["-c", script.as_str()]).with_timeout(Duration::from_millis(500));
    let e = run(&mut s, &["46"]).unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    // `kill -0` succeeds while the process exists; give the kernel a moment to reap it.
    let start = Instant::now();
    loop {
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if !alive {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the wrapper's child {pid} survived the kill");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_command_line_with_a_quoted_path_holding_a_space_runs() {
    // `--scorer-cmd 'python3 "…/my scorers/good.py"'`: shell quoting keeps the path one word.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my scorers");
    std::fs::create_dir(&dir).unwrap();
    let copy = dir.join("good.py");
    std::fs::copy(script("good.py"), &copy).unwrap();
    let line = format!("python3 \"{}\"", copy.display());
    let mut s = ExternalScorer::from_command_line(&line).unwrap().with_timeout(Duration::from_secs(20));
    let out = run(&mut s, &["46", "47"]).unwrap();
    assert_eq!(out.iter().map(|m| m["correctness"]).collect::<Vec<_>>(), [1.0, 0.0]);
}
