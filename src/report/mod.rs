//! What a run reports besides the terminal: metric writers for `--report-to
//! tensorboard,csv,jsonl` (TensorBoard event files, `metrics.csv`), and charts drawn from
//! training logs (`dapo plot`).

pub mod csv;
pub mod plot;
pub mod reporters;
pub mod tensorboard;

pub use reporters::{ReportTo, Reporters};
