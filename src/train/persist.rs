//! What a DAPO run keeps on disk: `checkpoint-N` directories (the model, optimizer and the
//! trainer's resume state), the frozen reference, the final model, and the JSONL logs, which
//! a resumed run cuts back to its checkpoint so it writes what the uninterrupted run would
//! have written.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dapo::{DapoTrainer, TrainReport};
use super::dapo_config::DapoConfig;
use super::sft::save_checkpoint;
use crate::backend::Backend;
use crate::checkpoint::trainer_state::{read_dapo_state, HfTrainerState, DAPO_STATE_FILE};
use crate::checkpoint::{load_model, load_optimizer, save_model};
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::reward::MixerState;

/// The log file inside the output directory.
pub const LOG_FILE: &str = "dapo_log.jsonl";
/// The completions log (`log_completions`), beside [`LOG_FILE`] in the output directory.
pub const COMPLETIONS_FILE: &str = "completions.jsonl";
/// The trainer state inside a checkpoint.
pub const STATE_FILE: &str = DAPO_STATE_FILE;
/// Where the frozen reference model is kept (when β > 0), for resuming.
pub const REFERENCE_DIR: &str = "reference";

/// The KL controller's settings, saved beside its state: a resumed run whose settings differ
/// starts a controller from the new settings instead of restoring the old one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct KlSpec {
    beta: f64,
    target: Option<f64>,
    horizon: f64,
}

impl<K: Backend> DapoTrainer<K> {
    /// Writes `checkpoint-<step>` under the output directory: the HF model directory plus
    /// tokenizer, optimizer state and trainer state (with the run's settings), swapped into
    /// place atomically.
    pub fn save(&self) -> Result<PathBuf> {
        let dir = self.cfg.output_dir.join(format!("checkpoint-{}", self.step));
        let state = json!({
            "step": self.step,
            "kl": self.kl,
            "kl_spec": kl_spec(&self.cfg),
            "mixer": self.mixer.state(),
            "curriculum": self.curriculum,
            "sampler": self.sampler,
            "last_kl": self.last_kl,
            "last_loss": self.last_loss,
            "last_grad_norm": self.last_grad_norm,
            "tokens_seen": self.tokens_seen,
            "log_history": self.log_history,
            "config": self.cfg,
            "settings": self.run_settings,
        });
        let hf = HfTrainerState {
            global_step: self.step,
            max_steps: self.cfg.steps,
            logging_steps: self.cfg.logging_steps,
            eval_steps: self.cfg.eval_every,
            save_steps: self.cfg.save_every,
            train_batch_size: (self.cfg.batch_size * self.cfg.group_size) as u64,
            num_input_tokens_seen: self.tokens_seen,
            log_history: self.log_history.clone(),
        };
        save_checkpoint(&dir, &self.model, &self.tok, &self.opt, &hf, &state)?;
        Ok(dir)
    }

    /// Saves the frozen reference (when there is one) under the output directory, once.
    pub fn save_reference(&self) -> Result<()> {
        if let Some(r) = &self.reference {
            let dir = self.cfg.output_dir.join(REFERENCE_DIR);
            if !dir.join("model.safetensors").exists() {
                save_model(&dir, r, Some(&self.tok))?;
            }
        }
        Ok(())
    }

    /// Continues from a checkpoint written by [`DapoTrainer::save`]: weights, optimizer, step,
    /// mixer, prompt cursor and curriculum state; the KL controller's state when its settings
    /// are unchanged (else a fresh one from the current settings); the reference from the
    /// output directory when β > 0.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let k = self.model.backend().clone();
        let model = load_model(dir, k.clone())?;
        if model.config() != self.model.config() {
            return Err(Error::Invalid(format!("{}: the checkpoint's config differs from the model's", dir.display())));
        }
        self.model = model;
        self.opt = AdamW::new(&self.model, self.cfg.adamw);
        load_optimizer(&dir.join(crate::checkpoint::optimizer_state::OPTIMIZER_FILE), &self.model, &mut self.opt)?;
        let path = dir.join(STATE_FILE);
        let state = read_state(dir)?;
        let field = |name: &str| state.get(name).cloned().unwrap_or(Value::Null);
        let parse = |name: &str| -> Result<Value> {
            state.get(name).cloned().ok_or_else(|| Error::config(&path, format!("missing `{name}`")))
        };
        let bad = |e: serde_json::Error| Error::config(&path, e.to_string());
        self.step = serde_json::from_value(parse("step")?).map_err(bad)?;
        let saved_spec: Option<KlSpec> = serde_json::from_value(field("kl_spec")).map_err(bad)?;
        if saved_spec.map_or(true, |s| s == kl_spec(&self.cfg)) {
            self.kl = serde_json::from_value(parse("kl")?).map_err(bad)?;
        }
        let mixer: MixerState = serde_json::from_value(parse("mixer")?).map_err(bad)?;
        self.mixer.set_state(mixer);
        self.curriculum = serde_json::from_value(parse("curriculum")?).map_err(bad)?;
        self.sampler = serde_json::from_value(field("sampler")).map_err(bad)?;
        self.cut_log(self.step)?;
        self.last_kl = serde_json::from_value(parse("last_kl")?).map_err(bad)?;
        self.last_loss = serde_json::from_value(field("last_loss")).unwrap_or(0.0);
        self.last_grad_norm = serde_json::from_value(field("last_grad_norm")).unwrap_or(0.0);
        self.tokens_seen = serde_json::from_value(field("tokens_seen")).unwrap_or(0);
        self.log_history = serde_json::from_value(field("log_history")).unwrap_or_default();
        if self.reference.is_some() {
            let rdir = self.cfg.output_dir.join(REFERENCE_DIR);
            if !rdir.join(crate::checkpoint::model_dir::WEIGHTS_FILE).exists() {
                return Err(Error::Invalid(format!(
                    "resuming with beta > 0 needs the frozen reference model the run saved in {}, which is not \
                     there (did the run start with beta = 0?)",
                    rdir.display()
                )));
            }
            self.reference = Some(load_model(&rdir, k)?);
        }
        Ok(())
    }

    /// Writes the policy (weights, config, tokenizer files; no optimizer) to
    /// `OUTPUT_DIR/final/`, atomically: the model to use once a run has finished.
    pub fn save_final(&self) -> Result<PathBuf> {
        let dir = self.cfg.output_dir.join(crate::checkpoint::run_dir::FINAL_DIR);
        save_model(&dir, &self.model, Some(&self.tok))?;
        Ok(dir)
    }

    /// After a failure outside an update (a scorer that crashed, a full disk, a broken log):
    /// checkpoints the last completed step when no checkpoint holds it yet, and returns the
    /// error saying where the work is.
    pub(super) fn keep_completed_work(&mut self, e: Error, saved: u64, report: &mut TrainReport) -> Error {
        if self.step == saved {
            return e;
        }
        match self.save() {
            Ok(dir) => {
                let note = format!("{e}\n(step {} was checkpointed to {} before stopping)", self.step, dir.display());
                report.checkpoints.push(dir);
                Error::Invalid(note)
            }
            Err(save) => Error::Invalid(format!("{e}\n(and checkpointing step {} failed too: {save})", self.step)),
        }
    }

    /// Cuts the output directory's log back to the records of steps up to `step` (and drops
    /// a torn last line), so the run resumed from checkpoint `step` writes the same log as a
    /// run that was never interrupted.
    fn cut_log(&self, step: u64) -> Result<()> {
        [LOG_FILE, COMPLETIONS_FILE].iter().try_for_each(|f| self.cut_file(f, step))
    }

    /// [`DapoTrainer::cut_log`] for one JSONL file of the output directory.
    fn cut_file(&self, file: &str, step: u64) -> Result<()> {
        let path = self.cfg.output_dir.join(file);
        if !path.exists() {
            return Ok(());
        }
        let text = crate::error::read_to_string(&path)?;
        let mut kept = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let record: Option<Value> = line.strip_suffix('\n').and_then(|l| serde_json::from_str(l).ok());
            match record.and_then(|r| r.get("step").and_then(Value::as_u64)) {
                Some(s) if s <= step => kept.push_str(line),
                // A record of a later step, or a torn one: the interrupted run's, not this one's.
                _ => break,
            }
        }
        if kept.len() != text.len() {
            crate::checkpoint::tensors::write_atomically(&path, kept.as_bytes())?;
        }
        Ok(())
    }

    /// Appends `record` to the output directory's JSONL log, as one write of the whole line
    /// (so a crash leaves at most the last line torn, which [`DapoTrainer::resume`] cuts).
    pub fn log(&self, record: &impl Serialize) -> Result<()> {
        if !self.cfg.report_to.jsonl {
            return Ok(());
        }
        self.log_to(LOG_FILE, record)
    }

    /// [`DapoTrainer::log`] into `file` of the output directory.
    pub(super) fn log_to(&self, file: &str, record: &impl Serialize) -> Result<()> {
        let path = self.cfg.output_dir.join(file);
        std::fs::create_dir_all(&self.cfg.output_dir).map_err(|e| Error::io(&self.cfg.output_dir, e))?;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let mut line = serde_json::to_string(record).expect("log records serialise");
        line.push('\n');
        if crate::util::failpoint::armed("log.torn_record") {
            let _ = f.write_all(&line.as_bytes()[..line.len() / 2]);
            eprintln!("{}: aborting in the middle of a log record", crate::util::failpoint::ENV);
            std::process::abort();
        }
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&path, e))
    }
}

/// A checkpoint's dapo state (`dapo_state.json`; see [`read_dapo_state`]).
pub fn read_state(dir: &Path) -> Result<Value> {
    read_dapo_state(dir)
}

fn kl_spec(cfg: &DapoConfig) -> KlSpec {
    KlSpec { beta: f64::from(cfg.objective.beta), target: cfg.kl_target, horizon: cfg.kl_horizon }
}
