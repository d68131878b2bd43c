//! The two state files of a checkpoint: `trainer_state.json` in transformers' own schema (so
//! `transformers.TrainerState.load_from_json` reads it, and tools that read HF checkpoints find
//! `global_step` and `log_history`), and `dapo_state.json`, what dapo needs to resume exactly
//! (KL controller, mixer, sampler, …), which transformers' dataclass would refuse.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{read_to_string, Error, Result};

/// transformers' `TrainerState` file.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// dapo's resume state (RL and SFT checkpoints alike).
pub const DAPO_STATE_FILE: &str = "dapo_state.json";

/// The fields of transformers' `TrainerState` this crate fills in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HfTrainerState {
    /// Optimizer steps (RL steps for `dapo train`) done.
    pub global_step: u64,
    /// The run's total.
    pub max_steps: u64,
    /// Metrics are logged every this many steps.
    pub logging_steps: u64,
    /// Evaluation every this many steps (0: only at the ends).
    pub eval_steps: u64,
    /// Checkpoints every this many steps (0: only at the end).
    pub save_steps: u64,
    /// Sequences per optimizer step.
    pub train_batch_size: u64,
    /// Tokens trained on so far.
    pub num_input_tokens_seen: u64,
    /// What was logged, one object per logging step or evaluation (with its `step`).
    pub log_history: Vec<Value>,
}

impl HfTrainerState {
    /// The JSON object, with exactly `TrainerState`'s fields (an unknown key would make
    /// `TrainerState(**json)` raise).
    pub fn to_json(&self) -> Value {
        json!({
            "epoch": null,
            "global_step": self.global_step,
            "max_steps": self.max_steps,
            "logging_steps": self.logging_steps,
            "eval_steps": self.eval_steps,
            "save_steps": self.save_steps,
            "train_batch_size": self.train_batch_size,
            "num_train_epochs": 0,
            "num_input_tokens_seen": self.num_input_tokens_seen,
            "total_flos": 0.0,
            "log_history": self.log_history,
            "best_metric": null,
            "best_global_step": null,
            "best_model_checkpoint": null,
            "is_local_process_zero": true,
            "is_world_process_zero": true,
            "is_hyper_param_search": false,
            "trial_name": null,
            "trial_params": null,
            "stateful_callbacks": null,
        })
    }
}

/// Writes both state files into the checkpoint directory `dir` (being built).
pub fn write_states(dir: &Path, hf: &HfTrainerState, dapo: &Value) -> Result<()> {
    for (file, v) in [(TRAINER_STATE_FILE, hf.to_json()), (DAPO_STATE_FILE, dapo.clone())] {
        let path = dir.join(file);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("JSON values serialise"))
            .map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// A checkpoint's dapo state: `dapo_state.json`, or, in a checkpoint written before it
/// existed, the `trainer_state.json` that held it then.
pub fn read_dapo_state(dir: &Path) -> Result<Value> {
    let path = dir.join(DAPO_STATE_FILE);
    let path = if path.exists() { path } else { dir.join(TRAINER_STATE_FILE) };
    serde_json::from_str(&read_to_string(&path)?).map_err(|e| Error::config(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_are_written_and_the_dapo_state_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let hf =
            HfTrainerState { global_step: 3, log_history: vec![json!({"step": 2, "loss": 0.5})], ..Default::default() };
        write_states(dir.path(), &hf, &json!({"step": 3})).unwrap();
        let t: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(TRAINER_STATE_FILE)).unwrap()).unwrap();
        assert_eq!((t["global_step"].as_u64(), t["log_history"][0]["loss"].as_f64()), (Some(3), Some(0.5)));
        assert_eq!(t.as_object().unwrap().len(), 20, "exactly TrainerState's fields");
        assert_eq!(read_dapo_state(dir.path()).unwrap()["step"], 3);
        // An older checkpoint: the dapo state in trainer_state.json.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join(TRAINER_STATE_FILE), r#"{"step": 7}"#).unwrap();
        assert_eq!(read_dapo_state(old.path()).unwrap()["step"], 7);
    }
}
