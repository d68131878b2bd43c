//! `dapo plot`: charts of training logs. Each `dapo_log.jsonl` becomes a page of small
//! multiples (reward, reward per key, held-out accuracy, KL and β, entropy, completion length,
//! clip fractions, throughput, ...) as PNG and SVG; several logs also get a page overlaying
//! the runs. The work is [`crate::report::plot::plot_logs`]; this file is its flags.

use std::path::PathBuf;

use crate::error::Result;
use crate::report::plot::{plot_logs, Smoothing};

/// Arguments of `dapo plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Training logs: dapo_log.jsonl from a `dapo train` output directory. Each run is named
    /// after its log's directory (with more of the path where two names would be equal).
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// Directory for the charts (created if needed): a PNG and an SVG per log, named after its
    /// run, and compare.png and compare.svg when two or more logs are given.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Moving-average window over step records, drawn over the faint raw series; 0 or 1 draws
    /// every series as logged. Default: about 1% of the run for runs longer than 200 steps,
    /// none for shorter ones.
    #[arg(long, value_name = "STEPS")]
    smooth: Option<usize>,
}

/// Runs `dapo plot`: prints each file written.
pub fn run(a: PlotArgs) -> Result<()> {
    let smoothing = match a.smooth {
        None => Smoothing::Auto,
        Some(0 | 1) => Smoothing::Off,
        Some(w) => Smoothing::Window(w),
    };
    for path in plot_logs(&a.logs, &a.out, smoothing)? {
        outln!("wrote {}", path.display());
    }
    Ok(())
}
