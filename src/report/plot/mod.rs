//! Charts of training logs (`dapo plot`): [`read_logs`] turns each `dapo_log.jsonl` into
//! series, [`render_run`] draws one run's page of small multiples and [`render_compare`] the
//! runs overlaid, each as PNG and SVG; [`plot_logs`] does all three for a list of logs.

mod render;
mod series;

use std::path::{Path, PathBuf};

pub use render::{render_compare, render_run, Smoothing, AUTO_SMOOTH_ABOVE, COLUMNS, PALETTE, PANEL_SIZE};
pub use series::{parse_log, read_log, read_logs, run_names, RunLog, Series, FALLBACKS};

use crate::error::{Error, Result};

/// The file stem of the comparison page (`compare.png`, `compare.svg`).
pub const COMPARE_STEM: &str = "compare";

/// Reads `logs` and writes into `out_dir` (created if needed) one page per run,
/// `<run>.png` and `<run>.svg`, and, for two or more logs, `compare.png` and `compare.svg`.
/// Every log is read before anything is written, so a bad one leaves no partial output. A log
/// whose last line is incomplete (a live run) is plotted without it, with a note on stderr.
/// Returns the files written.
pub fn plot_logs(logs: &[PathBuf], out_dir: &Path, smoothing: Smoothing) -> Result<Vec<PathBuf>> {
    if logs.is_empty() {
        return Err(Error::Invalid("no log files given".into()));
    }
    let runs = read_logs(logs)?;
    for r in runs.iter().filter(|r| r.torn_tail) {
        eprintln!(
            "note: {}: the last line is incomplete (a run still writing it?); plotted without it",
            r.path.display()
        );
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let stems = file_stems(&runs);
    let mut written = Vec::new();
    for (run, stem) in runs.iter().zip(&stems) {
        written.extend(render_run(run, smoothing, out_dir, stem)?);
    }
    if runs.len() > 1 {
        written.extend(render_compare(&runs, smoothing, out_dir, COMPARE_STEM)?);
    }
    Ok(written)
}

/// A file stem per run: its name with `/` and anything unusual in a file name made `_`, and
/// never [`COMPARE_STEM`] when there is a comparison page to write.
pub fn file_stems(runs: &[RunLog]) -> Vec<String> {
    let mut stems: Vec<String> = Vec::with_capacity(runs.len());
    for run in runs {
        let clean: String = run
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        let clean = if clean.is_empty() || clean.starts_with('.') { format!("run{clean}") } else { clean };
        let base = if runs.len() > 1 && clean == COMPARE_STEM { format!("{clean}-run") } else { clean };
        // Two names can clean to one stem (`a/b` and `a_b`): number the later ones.
        let stem = unused_name(&base, '-', &stems);
        stems.push(stem);
    }
    stems
}

/// `base`, or `base{sep}2`, `base{sep}3`, … : the first that `taken` does not hold.
pub(crate) fn unused_name(base: &str, sep: char, taken: &[String]) -> String {
    let mut name = base.to_string();
    let mut k = 2;
    while taken.contains(&name) {
        name = format!("{base}{sep}{k}");
        k += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_distinct() {
        let runs: Vec<RunLog> = ["grn-off/s0", "grn_off/s0", "compare", "a b#2", ".."]
            .iter()
            .map(|n| RunLog { name: n.to_string(), ..RunLog::default() })
            .collect();
        assert_eq!(file_stems(&runs), ["grn-off_s0", "grn_off_s0", "compare-run", "a_b_2", "run.."]);
        assert_eq!(file_stems(&runs[2..3]), ["compare"]);
    }
}
