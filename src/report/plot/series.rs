//! A training log (`dapo_log.jsonl`) read into series: one `(step, value)` list per metric,
//! under TRL's metric names whatever the log's age.
//!
//! A log holds two kinds of JSON lines: step records (`{"step", "metrics": {TRL names}, "rl",
//! "generation", "gepa", ...}`) and evaluation records (`{"step", "eval": {"accuracy",
//! "metrics", "n"}}`). Logs written before the `metrics` map existed are read through
//! [`FALLBACKS`] and the per-completion `gepa` rewards, so old and new runs plot side by side.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A metric over training: `(step, value)` in log order, non-finite values left out.
pub type Series = Vec<(u64, f64)>;

/// One training log read into series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunLog {
    /// The run's display name: its directory's name, see [`run_names`].
    pub name: String,
    /// The log file.
    pub path: PathBuf,
    /// Step metrics under their TRL names: `reward`, `reward_std`, `rewards/<key>/mean`,
    /// `tags/<key>/mean`, `kl`, `beta`, `entropy`, `completions/mean_length`, ...
    pub steps: BTreeMap<String, Series>,
    /// Held-out evaluations: `accuracy`, and every evaluated metric as `metrics/<key>`.
    pub evals: BTreeMap<String, Series>,
    /// Step records read.
    pub step_records: usize,
    /// Evaluation records read.
    pub eval_records: usize,
    /// The log's last line was incomplete (no newline, not valid JSON) and was skipped: a run
    /// still writing its log, whose trainer cuts such a line on resume too.
    pub torn_tail: bool,
}

/// Where a log without a `metrics` map keeps each TRL metric: `(TRL name, JSON path)`.
pub const FALLBACKS: &[(&str, &[&str])] = &[
    ("reward", &["reward_mean"]),
    ("kl", &["rl", "kl"]),
    ("beta", &["rl", "kl_coef"]),
    ("entropy", &["rl", "entropy"]),
    ("clip_ratio/low_mean", &["rl", "clip_frac_low"]),
    ("clip_ratio/high_mean", &["rl", "clip_frac_high"]),
    ("grad_norm", &["rl", "grad_norm"]),
    ("learning_rate", &["rl", "lr"]),
    ("completions/mean_length", &["generation", "completion_len"]),
    ("completions/min_length", &["generation", "completion_len_min"]),
    ("completions/max_length", &["generation", "completion_len_max"]),
];

/// Reads a log file; see [`parse_log`]. The run is named after the file's directory.
pub fn read_log(path: &Path) -> Result<RunLog> {
    crate::error::check_regular(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut run = parse_log(path, BufReader::new(file))?;
    run.name = run_names(&[path.to_path_buf()]).remove(0);
    Ok(run)
}

/// Reads several logs and names the runs so that no two names are equal ([`run_names`]).
pub fn read_logs(paths: &[PathBuf]) -> Result<Vec<RunLog>> {
    let mut runs = paths.iter().map(|p| read_log(p)).collect::<Result<Vec<_>>>()?;
    for (run, name) in runs.iter_mut().zip(run_names(paths)) {
        run.name = name;
    }
    Ok(runs)
}

/// Parses a log's lines (`path` names it in errors; the returned run has no name yet). Blank
/// lines are skipped, and so is an incomplete last line (no newline, not JSON: a live run is
/// writing it; see [`RunLog::torn_tail`]); any other line that is not a JSON object with an
/// integer `step` is an error naming `path:line`, and so is a log without any step record.
pub fn parse_log(path: &Path, mut reader: impl BufRead) -> Result<RunLog> {
    let mut run = RunLog { path: path.to_path_buf(), ..RunLog::default() };
    let mut bytes = Vec::new();
    for n in 1.. {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(|e| Error::io(path, e))? == 0 {
            break;
        }
        let complete = bytes.ends_with(b"\n");
        let text = std::str::from_utf8(&bytes).map_err(|e| Error::data(path, n, format!("not UTF-8: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) if !complete => {
                run.torn_tail = true;
                break;
            }
            Err(e) => return Err(Error::data(path, n, format!("not valid JSON: {e}"))),
        };
        let Value::Object(record) = value else {
            return Err(Error::data(path, n, "expected a JSON object (a step or evaluation record)"));
        };
        let step = record
            .get("step")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::data(path, n, "no \"step\" (a non-negative integer): not a dapo_log.jsonl record"))?;
        match record.get("eval") {
            Some(Value::Object(eval)) => add_eval(&mut run, step, eval),
            Some(_) => return Err(Error::data(path, n, "\"eval\" is not an object")),
            None => add_step(&mut run, step, &record),
        }
    }
    if run.step_records == 0 {
        return Err(Error::Invalid(format!(
            "{}: no step records (lines with \"step\" and the step's metrics): nothing to plot",
            path.display()
        )));
    }
    Ok(run)
}

/// Adds one step record. The `metrics` map wins; each TRL name it lacks comes from the older
/// fields, so a log from before the map (or one whose map misses a metric) still plots.
fn add_step(run: &mut RunLog, step: u64, record: &Map<String, Value>) {
    run.step_records += 1;
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(Value::Object(metrics)) = record.get("metrics") {
        for (k, v) in metrics {
            if let Some(x) = finite(v) {
                values.insert(k.clone(), x);
            }
        }
    }
    for (name, path) in FALLBACKS {
        if !values.contains_key(*name) {
            if let Some(x) = lookup(record, path).and_then(finite) {
                values.insert((*name).to_string(), x);
            }
        }
    }
    // Logs from before the map held per-key rewards: the means over the step's completions
    // (`gepa[i].rewards.<key>`); a map that has them wins (they are the same numbers).
    if let Some(Value::Array(gepa)) = record.get("gepa") {
        for (field, prefix) in [("rewards", "rewards/"), ("tags", "tags/")] {
            if !values.keys().any(|k| k.starts_with(prefix)) {
                for (key, mean) in completion_means(gepa, field) {
                    values.insert(format!("{prefix}{key}/mean"), mean);
                }
            }
        }
    }
    // Throughput for logs without it: completion tokens over the step's timed phases
    // (rollout, scoring, reference, update), the time the step spent on that work.
    if !values.contains_key("tokens_per_second") {
        let seconds: f64 = match record.get("timing") {
            Some(Value::Object(t)) => t.values().filter_map(finite).sum(),
            _ => 0.0,
        };
        if let Some(tokens) = record.get("tokens").and_then(finite) {
            if seconds > 0.0 {
                values.insert("tokens_per_second".into(), tokens / seconds);
            }
        }
    }
    for (k, v) in values {
        run.steps.entry(k).or_default().push((step, v));
    }
}

/// Adds one evaluation record: `accuracy` (absent when null) and `metrics/<key>`.
fn add_eval(run: &mut RunLog, step: u64, eval: &Map<String, Value>) {
    run.eval_records += 1;
    if let Some(x) = eval.get("accuracy").and_then(finite) {
        run.evals.entry("accuracy".into()).or_default().push((step, x));
    }
    if let Some(Value::Object(metrics)) = eval.get("metrics") {
        for (k, v) in metrics {
            if let Some(x) = finite(v) {
                run.evals.entry(format!("metrics/{k}")).or_default().push((step, x));
            }
        }
    }
}

/// Mean of each key of `gepa[i].<field>` over the completions that have it.
fn completion_means(gepa: &[Value], field: &str) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for c in gepa {
        if let Some(Value::Object(m)) = c.get(field) {
            for (k, v) in m {
                if let Some(x) = finite(v) {
                    let s = sums.entry(k.as_str()).or_default();
                    s.0 += x;
                    s.1 += 1;
                }
            }
        }
    }
    sums.into_iter().map(|(k, (sum, n))| (k.to_string(), sum / n as f64)).collect()
}

/// The value at `path` inside `record`.
fn lookup<'a>(record: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(record.get(*first)?, |v, k| v.get(k))
}

/// A JSON number as a finite f64 (the log writes NaN and infinities as `null`).
fn finite(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// Display names for runs: each log's directory name, with more of the path (`grn-on/s0`,
/// then the file's stem) where two would be equal, and `#2`, `#3` for the same file given
/// twice.
pub fn run_names(paths: &[PathBuf]) -> Vec<String> {
    // Candidate names from shortest to longest: parent, grandparent/parent, ..., then the
    // whole directory path with the file's stem.
    let candidates: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            // Absolute, so `dapo_log.jsonl` and `./dapo_log.jsonl` are named after their
            // directory; a file that cannot be resolved keeps the path as given.
            let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let dirs: Vec<String> = abs
                .parent()
                .map(|d| {
                    d.components()
                        .filter_map(|c| match c {
                            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let stem = abs.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            let mut names: Vec<String> = (1..=dirs.len()).map(|k| dirs[dirs.len() - k..].join("/")).collect();
            names.push(if dirs.is_empty() { stem } else { format!("{}/{stem}", dirs.join("/")) });
            names
        })
        .collect();
    let mut depth = vec![0usize; paths.len()];
    loop {
        let names: Vec<&String> = candidates.iter().zip(&depth).map(|(c, &d)| &c[d]).collect();
        let mut grew = false;
        for i in 0..paths.len() {
            let clash = names.iter().enumerate().any(|(j, n)| j != i && *n == names[i]);
            if clash && depth[i] + 1 < candidates[i].len() {
                depth[i] += 1;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for (c, &d) in candidates.iter().zip(&depth) {
        let name = super::unused_name(&c[d], '#', &out);
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunLog> {
        parse_log(Path::new("runs/x/dapo_log.jsonl"), text.as_bytes())
    }

    #[test]
    fn metrics_map_is_read_under_its_trl_names() {
        let log = concat!(
            r#"{"step":0,"eval":{"accuracy":0.25,"metrics":{"correctness":0.25,"brevity":1.0},"n":4}}"#,
            "\n",
            r#"{"step":1,"time":1.5,"metrics":{"reward":0.5,"reward_std":0.1,"rewards/correctness/mean":0.4,"#,
            r#""kl":0.01,"tokens_per_second":100.0},"reward_mean":9.0,"rl":{"kl":9.0,"entropy":0.7}}"#,
            "\n\n",
            r#"{"step":2,"metrics":{"reward":0.75,"reward_std":null,"rewards/correctness/mean":0.6}}"#,
            "\n",
            r#"{"step":2,"eval":{"accuracy":null,"metrics":{"correctness":0.5},"n":4}}"#,
        );
        let run = parse(log).unwrap();
        assert_eq!((run.step_records, run.eval_records), (2, 2));
        assert_eq!(run.steps["reward"], vec![(1, 0.5), (2, 0.75)]);
        // null is left out, not read as 0.
        assert_eq!(run.steps["reward_std"], vec![(1, 0.1)]);
        assert_eq!(run.steps["rewards/correctness/mean"], vec![(1, 0.4), (2, 0.6)]);
        // The map wins over the old fields; a name the map lacks comes from them.
        assert_eq!(run.steps["kl"], vec![(1, 0.01)]);
        assert_eq!(run.steps["entropy"], vec![(1, 0.7)]);
        assert_eq!(run.steps["tokens_per_second"], vec![(1, 100.0)]);
        assert_eq!(run.evals["accuracy"], vec![(0, 0.25)]);
        assert_eq!(run.evals["metrics/correctness"], vec![(0, 0.25), (2, 0.5)]);
        assert_eq!(run.evals["metrics/brevity"], vec![(0, 1.0)]);
    }

    #[test]
    fn old_logs_fall_back_to_rl_generation_and_gepa() {
        let log = concat!(
            r#"{"step":3,"reward_mean":0.3,"tokens":300,"timing":{"rollout_s":1.0,"update_s":2.0},"#,
            r#""rl":{"kl":0.02,"kl_coef":0.04,"entropy":0.5,"clip_frac_low":0.1,"clip_frac_high":0.2,"#,
            r#""grad_norm":1.5,"lr":0.001},"generation":{"completion_len":4.5,"completion_len_min":2,"#,
            r#""completion_len_max":8},"gepa":[{"rewards":{"a":1.0,"b":0.0},"tags":{"t":2.0}},"#,
            r#"{"rewards":{"a":0.0,"b":null}},{"rewards":{"a":0.5}}]}"#,
        );
        let run = parse(log).unwrap();
        let at3 = |k: &str| run.steps.get(k).map(|s| s.as_slice()).unwrap_or_default().to_vec();
        assert_eq!(at3("reward"), vec![(3, 0.3)]);
        assert_eq!(at3("kl"), vec![(3, 0.02)]);
        assert_eq!(at3("beta"), vec![(3, 0.04)]);
        assert_eq!(at3("entropy"), vec![(3, 0.5)]);
        assert_eq!(at3("clip_ratio/low_mean"), vec![(3, 0.1)]);
        assert_eq!(at3("clip_ratio/high_mean"), vec![(3, 0.2)]);
        assert_eq!(at3("grad_norm"), vec![(3, 1.5)]);
        assert_eq!(at3("learning_rate"), vec![(3, 0.001)]);
        assert_eq!(at3("completions/mean_length"), vec![(3, 4.5)]);
        assert_eq!(at3("completions/min_length"), vec![(3, 2.0)]);
        assert_eq!(at3("completions/max_length"), vec![(3, 8.0)]);
        // Per-key means over the completions that carry the key (b's null is not a 0).
        assert_eq!(at3("rewards/a/mean"), vec![(3, 0.5)]);
        assert_eq!(at3("rewards/b/mean"), vec![(3, 0.0)]);
        assert_eq!(at3("tags/t/mean"), vec![(3, 2.0)]);
        assert_eq!(at3("tokens_per_second"), vec![(3, 100.0)]);
        assert!(!run.steps.contains_key("reward_std"), "old logs have no reward std");
    }

    #[test]
    fn a_torn_last_line_of_a_live_log_is_skipped() {
        let run = parse("{\"step\":1,\"reward_mean\":1}\n{\"step\": 2, \"rew").unwrap();
        assert!(run.torn_tail);
        assert_eq!(run.step_records, 1);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse("{\"step\":1,\"reward_mean\":1}\n\n{\"step\": 2,\n").unwrap_err().to_string();
        assert!(e.starts_with("runs/x/dapo_log.jsonl:3: not valid JSON"), "{e}");
        let e = parse("{\"step\":1}\n[1,2]\n").unwrap_err().to_string();
        assert!(e.starts_with("runs/x/dapo_log.jsonl:2: expected a JSON object"), "{e}");
        let e = parse("{\"prompt\":\"1+1\",\"answer\":\"2\"}\n").unwrap_err().to_string();
        assert!(e.starts_with("runs/x/dapo_log.jsonl:1: no \"step\""), "{e}");
        let e = parse("{\"step\":0,\"eval\":{\"accuracy\":0.5}}\n\n").unwrap_err().to_string();
        assert!(e.contains("runs/x/dapo_log.jsonl: no step records"), "{e}");
        assert!(parse("").is_err());
    }

    #[test]
    fn run_names_grow_until_they_differ() {
        let p = |s: &str| PathBuf::from(s);
        let names =
            run_names(&[p("/r/grn-off/s0/dapo_log.jsonl"), p("/r/grn-on/s0/dapo_log.jsonl"), p("/r/x/log.jsonl")]);
        assert_eq!(names, ["grn-off/s0", "grn-on/s0", "x"]);
        let names = run_names(&[p("/r/a/one.jsonl"), p("/r/a/two.jsonl"), p("/r/a/one.jsonl")]);
        assert_eq!(names, ["r/a/one", "r/a/two", "r/a/one#2"]);
    }
}
