//! Progress of a long run on stderr: a bar with an ETA on a terminal, plain lines elsewhere
//! (`nohup`, a batch scheduler, `| tee`), where a bar would be hidden and its messages lost.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Where progress goes. Messages printed through it ([`Progress::println`]) appear as they
/// happen either way.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    /// The step the run started (or resumed) at, and when: the ETA is from this session's pace.
    start: (u64, Instant),
    /// When the last plain line was printed (a `Cell`: the step and evaluation callbacks
    /// both hold the display).
    last_line: std::cell::Cell<Instant>,
    /// A plain line at least this often, besides the logging steps.
    every: Duration,
}

/// A step's numbers for the progress display.
#[derive(Clone, Debug, Default)]
pub struct StepLine {
    /// The step just finished (1-based).
    pub step: u64,
    /// Mean mixed reward.
    pub reward: f64,
    /// Mean `correctness`, when the scorer gives one.
    pub accuracy: Option<f64>,
    /// KL to the reference.
    pub kl: f64,
    /// Completion tokens per second so far.
    pub tokens_per_s: f64,
    /// Whether the step closed a logging window (a plain line is printed then).
    pub logging_step: bool,
}

impl Progress {
    /// Progress over `total` steps starting at `pos`: a bar when stderr is a terminal, plain
    /// lines at logging steps and at least every `every` otherwise.
    pub fn new(total: u64, pos: u64, every: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] step {pos}/{len} (eta {eta}) {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_position(pos);
            bar
        });
        let now = Instant::now();
        Progress { bar, total, start: (pos, now), last_line: std::cell::Cell::new(now), every }
    }

    /// Prints a line above the bar, or as a plain line.
    pub fn println(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(msg.as_ref()),
            None => eprintln!("{}", msg.as_ref()),
        }
    }

    /// The estimated time left, from this session's pace.
    fn eta(&self, step: u64) -> Option<Duration> {
        let done = step.checked_sub(self.start.0).filter(|&d| d > 0)?;
        let per = self.start.1.elapsed().as_secs_f64() / done as f64;
        Some(Duration::from_secs_f64(per * self.total.saturating_sub(step) as f64))
    }

    /// Shows a finished step: the bar moves; a plain line is printed at a logging step, at
    /// the last step, or when `every` has passed since the last one.
    pub fn step(&self, s: &StepLine) {
        let acc = s.accuracy.map(|a| format!("acc {:.0}%  ", 100.0 * a)).unwrap_or_default();
        let msg = format!("reward {:.3}  {acc}KL {:.4}  {:.0} tok/s", s.reward, s.kl, s.tokens_per_s);
        if let Some(bar) = &self.bar {
            bar.set_position(s.step);
            bar.set_message(msg);
            return;
        }
        let due = s.logging_step || s.step == self.total || self.last_line.get().elapsed() >= self.every;
        if due {
            let eta = self.eta(s.step).map(|d| format!("  eta {}", human(d))).unwrap_or_default();
            let pct = 100.0 * s.step as f64 / self.total.max(1) as f64;
            eprintln!("step {}/{} ({pct:.0}%)  {msg}{eta}", s.step, self.total);
            self.last_line.set(Instant::now());
        }
    }

    /// Ends the display: the bar stays where the run stopped (an interrupted run's bar does
    /// not jump to 100 %).
    pub fn end(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `1h02m`, `5m07s`, `42s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(307)), "5m07s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }
}
