//! Reports drawn from training logs (`dapo_log.jsonl`): charts.
pub mod plot;
