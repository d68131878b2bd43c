//! Where training metrics go besides the terminal: `--report-to tensorboard,csv,jsonl`.

pub mod csv;
pub mod reporters;
pub mod tensorboard;

pub use reporters::{ReportTo, Reporters};
