//! `--report-to`: which metric writers a run keeps, and the writers themselves under the
//! output directory.
//!
//! Layout (`OUTPUT_DIR` is the run's output directory):
//! - `tensorboard`: event files in `OUTPUT_DIR/runs/` ([`TENSORBOARD_DIR`]; transformers'
//!   default `logging_dir` is under `runs/` too, so `tensorboard --logdir OUTPUT_DIR/runs`
//!   is the familiar command). One directory per output directory, one new event file per
//!   start; see [`Reporters::open`] for what that means on resume.
//! - `csv`: `OUTPUT_DIR/metrics.csv` ([`CSV_FILE`]), see [`super::csv`].
//! - `jsonl`: the trainer's own `dapo_log.jsonl`, written elsewhere; [`Reporters`] only
//!   records whether it is on.

use std::collections::BTreeMap;
use std::path::Path;

use super::csv::CsvWriter;
use super::tensorboard::{unix_time, EventWriter};
use crate::error::Result;

/// The subdirectory of the output directory that holds the TensorBoard event files.
pub const TENSORBOARD_DIR: &str = "runs";

/// The CSV table's file name in the output directory.
pub const CSV_FILE: &str = "metrics.csv";

/// The names `--report-to` accepts, in the order [`ReportTo`]'s `Display` lists writers.
pub const NAMES: [&str; 5] = ["tensorboard", "csv", "jsonl", "all", "none"];

/// The metric writers a run keeps, parsed from a comma-separated list of
/// `tensorboard`, `csv`, `jsonl`, `all` (every writer, as in transformers) and `none`.
///
/// Names are trimmed and case-insensitive; repeating one is harmless. `none` means no
/// optional writer and must stand alone (`none,csv` is refused as contradictory); an empty
/// list or an empty name (`csv,,jsonl`) is refused too. Which writers are on by default is
/// the caller's choice: [`Default`] is `none`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportTo {
    /// TensorBoard event files under `OUTPUT_DIR/runs/`.
    pub tensorboard: bool,
    /// `OUTPUT_DIR/metrics.csv`.
    pub csv: bool,
    /// The trainer's JSONL log.
    pub jsonl: bool,
}

impl ReportTo {
    /// No optional writer.
    pub const NONE: ReportTo = ReportTo { tensorboard: false, csv: false, jsonl: false };
    /// Every writer.
    pub const ALL: ReportTo = ReportTo { tensorboard: true, csv: true, jsonl: true };

    /// Whether no writer is on.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

impl std::str::FromStr for ReportTo {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let allowed = "expected a comma-separated list of tensorboard, csv, jsonl, all, or none alone";
        let mut r = ReportTo::NONE;
        let mut saw_none = false;
        for name in s.split(',') {
            match name.trim().to_ascii_lowercase().as_str() {
                "tensorboard" => r.tensorboard = true,
                "csv" => r.csv = true,
                "jsonl" => r.jsonl = true,
                "all" => r = ReportTo::ALL,
                "none" => saw_none = true,
                "" => return Err(format!("empty reporter name in `{s}` ({allowed})")),
                _ => return Err(format!("unknown reporter `{}` in `{s}` ({allowed})", name.trim())),
            }
        }
        if saw_none && !r.is_none() {
            return Err(format!("`none` cannot be combined with other reporters in `{s}`"));
        }
        Ok(r)
    }
}

/// The canonical list (`tensorboard,csv`, or `none`), which parses back to the same value.
impl std::fmt::Display for ReportTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = [self.tensorboard, self.csv, self.jsonl];
        let names: Vec<&str> = NAMES[..3].iter().zip(on).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        f.write_str(if names.is_empty() { "none".to_string() } else { names.join(",") }.as_str())
    }
}

/// Serialised as the canonical string.
impl serde::Serialize for ReportTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from the `--report-to` string or, as transformers' `report_to` is often written in
/// config files, from a list of names (an empty list meaning `none`).
impl<'de> serde::Deserialize<'de> for ReportTo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(String),
            Many(Vec<String>),
        }
        let text = match Repr::deserialize(d)? {
            Repr::One(s) => s,
            Repr::Many(v) if v.is_empty() => return Ok(ReportTo::NONE),
            Repr::Many(v) => v.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The enabled file writers of one run (TensorBoard and CSV; JSONL is the trainer's).
#[derive(Debug)]
pub struct Reporters {
    report_to: ReportTo,
    tensorboard: Option<EventWriter>,
    csv: Option<CsvWriter>,
}

impl Reporters {
    /// Opens the writers `report_to` enables under `out_dir`.
    ///
    /// A fresh run (`resume_from_step` None) starts a new `metrics.csv`, replacing any left
    /// there, and a new event file beginning with a `SessionLog.START` at step 0, so
    /// TensorBoard hides what earlier runs logged in `runs/` (their files stay on disk).
    ///
    /// A run resumed from checkpoint `s` keeps the CSV rows of steps up to `s` and drops the
    /// later ones (the interrupted run's, past its checkpoint); for TensorBoard it starts a
    /// new event file beginning with `SessionLog.START` at step `s + 1`, upon which
    /// TensorBoard's event loader forgets the events of steps after `s` from the earlier
    /// files, which are left untouched.
    pub fn open(out_dir: &Path, report_to: &ReportTo, resume_from_step: Option<u64>) -> Result<Self> {
        let tensorboard = if report_to.tensorboard {
            let mut w = EventWriter::create(&out_dir.join(TENSORBOARD_DIR))?;
            let start = resume_from_step.map_or(0, |s| s.saturating_add(1));
            w.write_session_start(step_i64(start), unix_time())?;
            w.flush()?;
            Some(w)
        } else {
            None
        };
        let csv = if report_to.csv {
            let path = out_dir.join(CSV_FILE);
            Some(match resume_from_step {
                Some(s) => CsvWriter::resume(&path, s)?,
                None => CsvWriter::create(&path)?,
            })
        } else {
            None
        };
        Ok(Reporters { report_to: *report_to, tensorboard, csv })
    }

    /// Writes `metrics` at `step` to every enabled writer: one TensorBoard event holding all
    /// of them (flushed, so a live TensorBoard sees it), one CSV row. An empty `metrics`
    /// writes nothing. Every writer is tried; the first error is returned.
    pub fn log(&mut self, step: u64, wall_time: f64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        let tb = match &mut self.tensorboard {
            Some(w) => {
                let pairs: Vec<(&str, f64)> = metrics.iter().map(|(k, &v)| (k.as_str(), v)).collect();
                w.write_scalars(step_i64(step), wall_time, &pairs).and_then(|()| w.flush())
            }
            None => Ok(()),
        };
        let csv = match &mut self.csv {
            Some(w) => w.append(step, wall_time, metrics),
            None => Ok(()),
        };
        tb.and(csv)
    }

    /// Flushes the TensorBoard writer (CSV rows are written unbuffered).
    pub fn flush(&mut self) -> Result<()> {
        self.tensorboard.as_mut().map_or(Ok(()), EventWriter::flush)
    }

    /// What `--report-to` enabled.
    pub fn report_to(&self) -> ReportTo {
        self.report_to
    }

    /// Whether the trainer should write its JSONL log.
    pub fn jsonl(&self) -> bool {
        self.report_to.jsonl
    }

    /// The event file this run writes, when TensorBoard is on.
    pub fn tensorboard_file(&self) -> Option<&Path> {
        self.tensorboard.as_ref().map(EventWriter::path)
    }

    /// The CSV file, when CSV is on.
    pub fn csv_file(&self) -> Option<&Path> {
        self.csv.as_ref().map(CsvWriter::path)
    }
}

/// Steps beyond i64 (never reached) are pinned to its maximum rather than wrapped negative.
fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}
