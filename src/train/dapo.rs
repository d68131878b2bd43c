//! The DAPO trainer: prompts → rollout (stopping at the model's end tokens) → score → map →
//! mix → (dynamic sampling) → advantages → reference log-probs → μ passes of clipped-ratio
//! updates → controllers → log / checkpoint.
//!
//! [`DapoTrainer::step`] runs all of it on a task file; [`DapoTrainer::train_step`] is the
//! update alone on a batch the caller built ([`DapoBatch`]: prompts, completions,
//! advantages), the seed library's `DAPOTrainer.train_step(DAPOBatch)`.
//!
//! What TRL's GRPOTrainer does, this does: a completion ends at its first end token, which is
//! kept and trained on; nothing after it reaches the loss, the scorer (which sees the text
//! without the end token, as TRL decodes with `skip_special_tokens`) or the logged lengths; a
//! completion that reached the length cap without one is "truncated". A step's sequences are
//! shuffled and split into `mini_batches` optimizer steps of micro-batches whose losses are
//! normalised as TRL's gradient accumulation normalises them
//! ([`LossNorm`](crate::rl::objective::LossNorm)).
//!
//! Every random choice is keyed on (seed, step): the prompt order through seeded epochs, the
//! minibatch shuffle through a generator seeded from both, rollouts through the counter RNG.
//! Together with the checkpointed optimizer, mixer, KL controller, prompt cursor and curriculum
//! state, a resumed run repeats the uninterrupted one exactly (bit for bit on the CPU backend
//! with the same thread count).
//!
//! The trainer is one type over four files of `src/train/`: this one holds it, its step and
//! run loops and the records they return; `rollouts.rs` the prompts, the step's rollouts
//! (dynamic sampling included) and the held-out evaluation; `update.rs` the μ passes of
//! optimizer steps over the step's [`Grid`](super::grid::Grid); `persist.rs` checkpoints,
//! resume and the JSONL logs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use super::dapo_config::DapoConfig;
use super::grid::Seq;
pub use super::persist::{read_state, COMPLETIONS_FILE, LOG_FILE, REFERENCE_DIR, STATE_FILE};
pub use super::rollouts::PromptPool;
use super::rollouts::{Rollout, StepRollouts};
use super::step_metrics::{is_wall_clock, trl_metrics, LogWindow, StepInputs};
use crate::backend::Backend;
use crate::checkpoint::EndTokens;
use crate::data::{EpochSampler, TaskDataset};
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::optim::AdamW;
use crate::report::tensorboard::unix_time;
use crate::report::Reporters;
use crate::reward::{FeedbackMapping, GepaFeedback, Metrics, RewardMixer, Scorer};
use crate::rl::advantage::group_advantages;
use crate::rl::curriculum::Curriculum;
use crate::rl::kl_controller::KlController;
use crate::rl::objective::DapoObjective;
use crate::rl::safety::{key_means, tag_means, SafetyDecision, SafetyEvent, SafetyMonitor};
use crate::rollout::FinishReason;
use crate::tokenizer::Tokenizer;
use crate::util::rng::{mix64, Rng};

/// A batch for [`DapoTrainer::train_step`]: S sequences the caller sampled and scored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DapoBatch {
    /// Prompt token ids per sequence (each non-empty).
    pub prompts: Vec<Vec<u32>>,
    /// Completion token ids per sequence, cut after the first end token (which is kept). A
    /// completion whose last token is not an end token counts as truncated.
    pub completions: Vec<Vec<u32>>,
    /// One advantage per sequence (e.g. from [`group_advantages`]).
    pub advantages: Vec<f64>,
    /// Log-probs of each completion's tokens under the policy that sampled them; `None`: the
    /// current policy's, computed before the update (TRL's on-policy case, ratio 1 on the
    /// first pass).
    pub logp_old: Option<Vec<Vec<f32>>>,
}

/// The `rl` part of a step's log record, aggregated over every optimizer step of the step
/// (μ passes × minibatches).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RlMetrics {
    /// The loss, mean over the step's optimizer steps (each the sum of its micro-batches).
    pub loss: f32,
    /// The surrogate alone (without KL and entropy bonus), mean over optimizer steps.
    pub policy_loss: f32,
    /// Mean KL to the reference per token (0 when β = 0).
    pub kl: f32,
    /// β used this step.
    pub kl_coef: f64,
    /// Mean policy entropy per token.
    pub entropy: f32,
    /// Fraction of tokens clipped below.
    pub clip_frac_low: f32,
    /// Fraction of tokens clipped above.
    pub clip_frac_high: f32,
    /// Fraction of tokens held by the dual clip (`clip_ratio_c`).
    pub clip_frac_dual: f32,
    /// Learning rate.
    pub lr: f32,
    /// Gradient norm before clipping, mean over optimizer steps.
    pub grad_norm: f32,
    /// Optimizer steps taken.
    pub optimizer_steps: usize,
    /// Completion tokens in the loss.
    pub tokens: f32,
}

/// What one step did: its log record, also handed to the progress callback.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// 1-based step.
    pub step: u64,
    /// When the step ended, in seconds since the Unix epoch.
    pub time: f64,
    /// The step's metrics under TRL's names ([`crate::train::step_metrics`]); a value that
    /// has no meaning this step (a deviation of one value) is NaN, written as `null`.
    pub metrics: BTreeMap<String, f64>,
    /// Every completion of the step as text with its rewards and advantage (for
    /// `log_completions`); not part of the JSONL record.
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// When this step closed a logging window (`logging_steps`): the window's averaged
    /// metrics, as the reporters received them. Not part of the JSONL record.
    #[serde(skip)]
    pub logged: Option<BTreeMap<String, f64>>,
    /// Per completion: ids and the reward / tag vectors.
    pub gepa: Vec<GepaFeedback>,
    /// Loss, KL and optimizer numbers.
    pub rl: RlMetrics,
    /// Mean mixed reward of the kept completions.
    pub reward_mean: f64,
    /// Mean `correctness` metric, when the scorer emits one.
    pub accuracy: Option<f64>,
    /// Lengths: prompt and completion tokens (the end token included), truncated completions.
    pub generation: Value,
    /// Seconds per phase.
    pub timing: Value,
    /// Completion tokens generated this step.
    pub tokens: usize,
    /// Groups dropped by dynamic sampling.
    pub groups_dropped: usize,
    /// Safety rules that tripped this step (and what they did).
    pub safety: Vec<SafetyEvent>,
    /// The update was skipped (a safety rule asked for it, or no group had a learning signal).
    pub skipped_update: bool,
}

/// One completion of a step, as `log_completions` records it (TRL's completions table).
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The task's prompt text.
    pub prompt: String,
    /// The completion's text as the scorer saw it.
    pub completion: String,
    /// Each reward key's value (after the feedback mapping).
    pub rewards: BTreeMap<String, f64>,
    /// The mixed reward.
    pub reward: f64,
    /// The group-relative advantage.
    pub advantage: f64,
}

/// A held-out evaluation: greedy completions scored.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Prompts evaluated.
    pub n: usize,
    /// Mean `correctness`, when the scorer emits one.
    pub accuracy: Option<f64>,
    /// Mean of every metric.
    pub metrics: BTreeMap<String, f64>,
}

/// What [`DapoTrainer::train`] did.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// Evaluations as (step, report), the first before any training step.
    pub evals: Vec<(u64, EvalReport)>,
    /// Checkpoints written, the last one last.
    pub checkpoints: Vec<PathBuf>,
    /// Stopped early on request (Ctrl-C).
    pub interrupted: bool,
}

/// The trainer. Owns the policy, the frozen reference (when β > 0 or adapted) and all RL state.
pub struct DapoTrainer<K: Backend> {
    pub(super) cfg: DapoConfig,
    pub(super) model: Gpt2<K>,
    pub(super) reference: Option<Gpt2<K>>,
    pub(super) tok: Tokenizer,
    pub(super) scorer: Box<dyn Scorer>,
    pub(super) mapping: FeedbackMapping,
    pub(super) mixer: RewardMixer,
    pub(super) objective: DapoObjective<K>,
    /// The update's device buffers, kept from step to step ([`super::grid::GridBufs`]).
    pub(super) grid_bufs: Option<super::grid::GridBufs<K>>,
    pub(super) opt: AdamW<K>,
    pub(super) kl: KlController,
    pub(super) curriculum: Option<Curriculum>,
    pub(super) safety: Option<SafetyMonitor>,
    pub(super) end_tokens: Vec<u32>,
    pub(super) sampler: Option<EpochSampler>,
    pub(super) pool: Option<std::sync::Arc<PromptPool>>,
    pub(super) run_settings: Option<Value>,
    /// Whether the safety rules' metric names were checked against a real step's metrics.
    pub(super) safety_checked: bool,
    /// Set when a step starts changing the model or the KL controller: a failure after it is
    /// not undone by restoring the step's inputs.
    pub(super) mid_update: bool,
    pub(super) last_kl: f64,
    pub(super) last_loss: f64,
    pub(super) last_grad_norm: f64,
    /// Prompt + completion tokens of every completion trained on so far (TRL's `num_tokens`).
    pub(super) tokens_seen: u64,
    /// Every logging step's averaged metrics and every evaluation, with its `step`: the
    /// `log_history` of transformers' `trainer_state.json`.
    pub(super) log_history: Vec<Value>,
    pub(super) step: u64,
}

impl<K: Backend> DapoTrainer<K> {
    /// A trainer starting from `model` (given a zero-initialised policy GRN first when
    /// `cfg.grn` applies one and the model has none). The reference is a frozen copy of it, made only when
    /// β > 0 or β is adapted (and saved under the output directory so a resumed run finds it);
    /// with β = 0 and no KL target no reference exists and no reference pass runs. Rollouts
    /// end at the model config's `eos_token_id`s (else the tokenizer's `<|endoftext|>`) and
    /// the configured stop tokens; [`DapoTrainer::set_end_tokens`] replaces them.
    pub fn new(
        model: Gpt2<K>,
        tok: Tokenizer,
        scorer: Box<dyn Scorer>,
        mapping: FeedbackMapping,
        mixer: RewardMixer,
        cfg: DapoConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        mapping.validate()?;
        let mut model = model;
        if cfg.grn.applies_to(crate::model::grn::Head::Policy) {
            model.add_policy_grn(cfg.grn)?;
        }
        if tok.vocab_size() > model.config().vocab_size {
            return Err(Error::Invalid(format!(
                "the tokenizer has {} tokens but the model's vocab_size is {}",
                tok.vocab_size(),
                model.config().vocab_size
            )));
        }
        if let Some(names) = scorer.metric_names() {
            mixer.check_keys(mapping.output_keys(names.iter().map(String::as_str)).iter().map(String::as_str))?;
        }
        let kl = kl_controller(&cfg)?;
        let with_reference = cfg.objective.beta > 0.0 || cfg.kl_target.is_some();
        check_memory(&model, &cfg, with_reference)?;
        let reference = with_reference.then(|| model.weights_copy());
        let objective = DapoObjective::new(cfg.objective_config())?;
        let opt = AdamW::new(&model, cfg.adamw);
        let curriculum = cfg.curriculum.map(Curriculum::new).transpose()?;
        let safety = cfg.safety.clone().map(SafetyMonitor::new).transpose()?;
        // Rules on metrics no step can produce are refused now when the scorer names its
        // metrics up front (else at the first step, see `check_safety`).
        let mut safety_checked = false;
        if let (Some(monitor), Some(names)) = (&safety, scorer.metric_names()) {
            let mut known: BTreeMap<String, f64> = STEP_METRICS.iter().map(|k| (k.to_string(), 0.0)).collect();
            for key in mapping.output_keys(names.iter().map(String::as_str)) {
                known.insert(format!("rewards.{key}"), 0.0);
                known.insert(format!("tags.{key}"), 0.0);
            }
            monitor.check_metrics(&known)?;
            safety_checked = true;
        }
        let end_tokens = EndTokens::of_model(model.config(), &tok, &cfg.sampling.stop_token_ids).ids;
        Ok(DapoTrainer {
            cfg,
            model,
            reference,
            tok,
            scorer,
            mapping,
            mixer,
            objective,
            grid_bufs: None,
            opt,
            kl,
            curriculum,
            safety,
            end_tokens,
            sampler: None,
            pool: None,
            run_settings: None,
            safety_checked,
            mid_update: false,
            last_kl: 0.0,
            last_loss: 0.0,
            last_grad_norm: 0.0,
            tokens_seen: 0,
            log_history: Vec::new(),
            step: 0,
        })
    }

    /// The policy.
    pub fn model(&self) -> &Gpt2<K> {
        &self.model
    }

    /// The policy, mutably (e.g. to swap in weights).
    pub fn model_mut(&mut self) -> &mut Gpt2<K> {
        &mut self.model
    }

    /// Whether a frozen reference model is held (β > 0 or adapted).
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Device memory of the policy's backend, which the reference, the optimizer and the
    /// update's buffers share: bytes held now, the peak, and the device allocations made so
    /// far (`None` on the CPU backend, which does not meter its `Vec`s). Read it before and
    /// after [`DapoTrainer::step`]: the difference in `allocations` is the step's count, 0
    /// once the run's largest shapes have been seen.
    pub fn memory(&self) -> Option<crate::backend::MemoryUse> {
        crate::backend::MemoryOps::memory(self.model.backend())
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The settings.
    pub fn config(&self) -> &DapoConfig {
        &self.cfg
    }

    /// The current KL coefficient β.
    pub fn kl_coef(&self) -> f64 {
        self.kl.beta()
    }

    /// The token ids that end a completion.
    pub fn end_tokens(&self) -> &[u32] {
        &self.end_tokens
    }

    /// Replaces the end tokens (e.g. with [`EndTokens::of_dir`] of the model's directory).
    /// Errors when an id is outside the vocabulary.
    pub fn set_end_tokens(&mut self, ids: Vec<u32>) -> Result<()> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.model.config().vocab_size) {
            return Err(Error::Invalid(format!("end token {id} is outside the vocabulary")));
        }
        self.end_tokens = ids;
        Ok(())
    }

    /// Settings of the surrounding run (e.g. the CLI's data paths) saved in every checkpoint's
    /// `trainer_state.json` under `settings`, so `--resume` can restore them.
    pub fn set_run_settings(&mut self, settings: Value) {
        self.run_settings = Some(settings);
    }

    /// One RL step on `data`.
    pub fn step(&mut self, data: &TaskDataset) -> Result<StepRecord> {
        let g = self.cfg.group_size;
        let StepRollouts { kept, rewards, rollout_s, score_s, dropped, groups, zero_std_groups } =
            self.collect_rollouts(data)?;
        let adv = if kept.is_empty() {
            Vec::new()
        } else {
            group_advantages(&rewards, &vec![g; kept.len() / g], &self.cfg.advantage)?
        };

        // Safety rules see the step's rewards and tags and the previous step's KL.
        let (events, decision) = self.check_safety(&kept, &rewards)?;
        self.mid_update = true;
        if decision.beta_scale != 1.0 {
            self.kl.scale(decision.beta_scale)?;
        }

        // The update (skipped when dynamic sampling kept nothing: every group was uniform).
        let t2 = Instant::now();
        let lr = self.cfg.lr_schedule().lr(self.step) * decision.lr_scale as f32;
        let beta = self.kl.beta();
        let skipped_update = kept.is_empty() || decision.skip_update;
        let mut rl = RlMetrics { lr, kl_coef: beta, ..RlMetrics::default() };
        let mut reference_s = 0.0;
        if !skipped_update {
            let mut seqs: Vec<Seq> = kept
                .iter()
                .zip(&adv)
                .map(|(r, &a)| Seq {
                    prompt: r.prompt_ids.clone(),
                    completion: r.completion.tokens.clone(),
                    logp_old: Some(r.completion.logprobs.clone()),
                    truncated: r.completion.finish == FinishReason::Length,
                    advantage: a,
                })
                .collect();
            // As TRL shuffles a generation batch before cutting it into optimizer steps, so a
            // minibatch mixes prompts; an unsplit batch stays in order (nothing depends on it).
            let split = self.cfg.mini_batches > 1 || self.cfg.micro_batch(seqs.len()) < seqs.len();
            if split {
                Rng::new(mix_seed(self.cfg.seed ^ 0x5_4FF1E, self.step, 0)).shuffle(&mut seqs);
            }
            let (m, ref_s) = self.update(&seqs, lr, beta)?;
            rl = m;
            reference_s = ref_s;
        }
        let update_s = t2.elapsed().as_secs_f64() - reference_s;
        self.finish_update(skipped_update, &rl, kept.len())?;
        if let Some(c) = self.curriculum.as_mut() {
            c.update_many(kept.iter().zip(&rewards).map(|(r, &x)| (r.feedback.task_id.as_str(), x)))?;
        }
        self.step += 1;

        let tokens: usize = kept.iter().map(|r| r.completion.tokens.len()).sum();
        let n = kept.len().max(1) as f64;
        let truncated = kept.iter().filter(|r| r.completion.finish == FinishReason::Length).count();
        let accuracy = mean_metric(kept.iter().map(|r| &r.metrics), "correctness");
        self.tokens_seen += kept.iter().map(|r| (r.prompt_ids.len() + r.completion.tokens.len()) as u64).sum::<u64>();
        let metrics = trl_metrics(&StepInputs {
            rewards: &rewards,
            reward_vectors: kept.iter().map(|r| &r.feedback.rewards).collect(),
            tags: kept.iter().map(|r| &r.feedback.tags).collect(),
            advantages: &adv,
            lengths: kept.iter().map(|r| r.completion.tokens.len()).collect(),
            truncated: kept.iter().map(|r| r.completion.finish == FinishReason::Length).collect(),
            groups,
            zero_std_groups,
            rl: &rl,
            timing: [rollout_s, score_s, reference_s, update_s],
            completion_tokens: tokens,
            num_tokens: self.tokens_seen,
        });
        let samples = kept
            .iter()
            .zip(&rewards)
            .zip(&adv)
            .map(|((r, &reward), &advantage)| Sample {
                prompt: data.tasks[r.task].prompt.clone(),
                completion: r.text.clone(),
                rewards: r.feedback.rewards.clone(),
                reward,
                advantage,
            })
            .collect();
        let time = unix_time();
        Ok(StepRecord {
            step: self.step,
            time,
            metrics,
            samples,
            logged: None,
            gepa: kept.iter().map(|r| r.feedback.clone()).collect(),
            rl,
            reward_mean: rewards.iter().sum::<f64>() / n,
            accuracy,
            generation: json!({
                "prompt_len": kept.iter().map(|r| r.prompt_ids.len()).sum::<usize>() as f64 / n,
                "completion_len": tokens as f64 / n,
                "completion_len_min": kept.iter().map(|r| r.completion.tokens.len()).min().unwrap_or(0),
                "completion_len_max": kept.iter().map(|r| r.completion.tokens.len()).max().unwrap_or(0),
                "truncated": truncated,
            }),
            timing: json!({ "rollout_s": rollout_s, "score_s": score_s, "reference_s": reference_s, "update_s": update_s }),
            tokens,
            groups_dropped: dropped,
            safety: events,
            skipped_update,
        })
    }

    /// The update alone on a batch the caller built: the reference pass (when β > 0), the old
    /// log-probs when the batch has none, then `num_iterations` passes of `mini_batches`
    /// optimizer steps over the sequences in the given order, each accumulating micro-batches
    /// of `micro_batch_size`. Advances the step (learning-rate schedule, KL controller) as
    /// [`DapoTrainer::step`] does. The batch's completions are masked out of the loss when
    /// `mask_truncated` is set and their last token is not an end token (TRL's rule).
    pub fn train_step(&mut self, batch: &DapoBatch) -> Result<RlMetrics> {
        let s = batch.prompts.len();
        if batch.completions.len() != s || batch.advantages.len() != s {
            return Err(Error::Invalid(format!(
                "train_step: {s} prompts, {} completions and {} advantages; they must match",
                batch.completions.len(),
                batch.advantages.len()
            )));
        }
        if let Some(lp) = &batch.logp_old {
            if lp.len() != s {
                return Err(Error::Invalid(format!("train_step: {} logp_old rows for {s} sequences", lp.len())));
            }
        }
        let v = self.model.config().vocab_size;
        let mut seqs = Vec::with_capacity(s);
        for i in 0..s {
            let (p, c) = (&batch.prompts[i], &batch.completions[i]);
            if let Some(&id) = p.iter().chain(c).find(|&&id| id as usize >= v) {
                return Err(Error::Invalid(format!("train_step: sequence {i} has token id {id} >= vocab_size {v}")));
            }
            seqs.push(Seq {
                prompt: p.clone(),
                completion: c.clone(),
                logp_old: batch.logp_old.as_ref().map(|lp| lp[i].clone()),
                truncated: c.last().map_or(true, |t| !self.end_tokens.contains(t)),
                advantage: batch.advantages[i],
            });
        }
        let lr = self.cfg.lr_schedule().lr(self.step);
        let beta = self.kl.beta();
        let (rl, _) = self.update(&seqs, lr, beta)?;
        self.finish_update(false, &rl, s)?;
        self.step += 1;
        Ok(rl)
    }

    /// After an update: the adaptive KL controller sees the step's KL with the step's
    /// sequence count (verl's rule), and safety rules see it next step.
    fn finish_update(&mut self, skipped: bool, rl: &RlMetrics, sequences: usize) -> Result<()> {
        if skipped {
            return Ok(());
        }
        if self.cfg.kl_target.is_some() {
            self.kl.update(f64::from(rl.kl), sequences)?;
        }
        self.last_kl = f64::from(rl.kl);
        self.last_loss = f64::from(rl.loss);
        self.last_grad_norm = f64::from(rl.grad_norm);
        Ok(())
    }

    /// Evaluates the safety rules on the step's metrics; no rules, no events. The first step
    /// with completions also checks that every rule's metric exists, so a misspelt metric is
    /// an error rather than a rule that never trips.
    fn check_safety(&mut self, kept: &[Rollout], rewards: &[f64]) -> Result<(Vec<SafetyEvent>, SafetyDecision)> {
        if self.safety.is_none() {
            return Ok((Vec::new(), SafetyDecision::from_events(&[])));
        }
        let mut m = tag_means(kept.iter().map(|r| &r.feedback.tags));
        let n = rewards.len().max(1) as f64;
        let step = [rewards.iter().sum::<f64>() / n, self.last_kl, self.last_loss, self.last_grad_norm];
        m.extend(STEP_METRICS.iter().map(|k| k.to_string()).zip(step));
        for (k, v) in key_means(kept.iter().map(|r| &r.feedback.rewards)) {
            m.insert(format!("rewards.{k}"), v);
        }
        let monitor = self.safety.as_ref().expect("checked above");
        if !self.safety_checked && !kept.is_empty() {
            monitor.check_metrics(&m)?;
        }
        let events = monitor.evaluate(&m);
        self.safety_checked |= !kept.is_empty();
        let decision = SafetyDecision::from_events(&events);
        Ok((events, decision))
    }

    /// Runs from the current step to `config().steps`: a log record per step, an evaluation
    /// every `eval_every` steps (and before the first and after the last step when `eval` is
    /// given), a checkpoint every `save_every` steps and at the end. When `stop` becomes true
    /// (Ctrl-C) it finishes the current step, writes a checkpoint and returns early.
    pub fn train(
        &mut self,
        data: &TaskDataset,
        eval: Option<&TaskDataset>,
        stop: Option<&std::sync::atomic::AtomicBool>,
        on_step: &mut dyn FnMut(&StepRecord),
        on_eval: &mut dyn FnMut(u64, &EvalReport),
    ) -> Result<TrainReport> {
        std::fs::create_dir_all(&self.cfg.output_dir).map_err(|e| Error::io(&self.cfg.output_dir, e))?;
        // Every task (and the held-out ones) is checked before the first step.
        self.pool_for(data)?;
        if let Some(e) = eval {
            self.prepare(e)?;
        }
        self.save_reference()?;
        let mut report = TrainReport::default();
        // A resumed run's reporters drop what the interrupted run wrote after its checkpoint.
        let resumed_at = (self.step > 0).then_some(self.step);
        let mut reporters = Reporters::open(&self.cfg.output_dir, &self.cfg.report_to, resumed_at)?;
        let mut evaluate = |t: &mut Self, report: &mut TrainReport, rep: &mut Reporters| -> Result<()> {
            if let Some(e) = eval {
                let r = t.evaluate(e, t.cfg.eval_size)?;
                t.log(&json!({ "step": t.step, "eval": &r }))?;
                let mut scalars: BTreeMap<String, f64> =
                    r.metrics.iter().map(|(k, &v)| (format!("eval/{k}"), v)).collect();
                if let Some(a) = r.accuracy {
                    scalars.insert("eval/accuracy".into(), a);
                }
                rep.log(t.step, unix_time(), &scalars)?;
                let mut entry: serde_json::Map<String, Value> =
                    r.metrics.iter().map(|(k, &v)| (format!("eval_{k}"), json!(v))).collect();
                entry.insert("eval_accuracy".into(), json!(r.accuracy));
                entry.insert("step".into(), json!(t.step));
                t.log_history.push(Value::Object(entry));
                on_eval(t.step, &r);
                report.evals.push((t.step, r));
            }
            Ok(())
        };
        // A resumed run does not evaluate again at its first step: its log then continues the
        // interrupted run's exactly.
        if self.step == 0 {
            evaluate(self, &mut report, &mut reporters)?;
        }
        let mut saved = self.step;
        let mut window = LogWindow::default();

        while self.step < self.cfg.steps {
            // What a step changes before its update, to put back if it fails there.
            let before = (self.sampler.clone(), self.mixer.state().clone());
            self.mid_update = false;
            let rec = match self.step(data) {
                Ok(r) => r,
                Err(e) if !self.mid_update => {
                    self.sampler = before.0;
                    self.mixer.set_state(before.1);
                    return Err(self.keep_completed_work(e, saved, &mut report));
                }
                // Failed inside the update: the weights may be half-updated, so the last
                // checkpoint written stands.
                Err(e) => return Err(e),
            };
            let interrupted = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            let at_end = self.step == self.cfg.steps;
            let mut rec = rec;
            window.add(&rec.metrics);
            if at_end || interrupted || self.step % self.cfg.logging_steps == 0 {
                let logged = window.take();
                let tagged = logged.iter().map(|(k, &v)| (format!("train/{k}"), v)).collect();
                if let Err(e) = reporters.log(self.step, rec.time, &tagged) {
                    return Err(self.keep_completed_work(e, saved, &mut report));
                }
                let mut entry: serde_json::Map<String, Value> =
                    logged.iter().filter(|(k, _)| !is_wall_clock(k)).map(|(k, &v)| (k.clone(), json!(v))).collect();
                entry.insert("step".into(), json!(self.step));
                self.log_history.push(Value::Object(entry));
                rec.logged = Some(logged);
            }
            let logged = self.log(&rec).and_then(|()| {
                if rec.logged.is_some() && self.cfg.log_completions {
                    self.log_to(COMPLETIONS_FILE, &json!({ "step": rec.step, "completions": &rec.samples }))?;
                }
                on_step(&rec);
                if self.cfg.eval_every > 0 && self.step % self.cfg.eval_every == 0 && !at_end {
                    evaluate(self, &mut report, &mut reporters)?;
                }
                Ok(())
            });
            if let Err(e) = logged {
                return Err(self.keep_completed_work(e, saved, &mut report));
            }
            if interrupted || at_end || (self.cfg.save_every > 0 && self.step % self.cfg.save_every == 0) {
                report.checkpoints.push(self.save()?);
                saved = self.step;
                if let Some(keep) = self.cfg.save_total_limit {
                    let removed = crate::checkpoint::run_dir::prune_checkpoints(&self.cfg.output_dir, keep)?;
                    report.checkpoints.retain(|c| !removed.contains(c));
                }
            }
            if interrupted {
                report.interrupted = true;
                return Ok(report);
            }
        }
        evaluate(self, &mut report, &mut reporters)?;
        self.save_final()?;
        Ok(report)
    }
}

/// What safety rules can watch besides `rewards.<key>` and `tags.<key>`: the step's mean
/// reward, and the previous update's KL, loss and gradient norm (in this order in
/// `check_safety`).
pub const STEP_METRICS: &[&str] = &["reward_mean", "kl", "loss", "grad_norm"];

/// Refuses settings whose smallest possible step cannot fit in the backend's memory: the
/// gradients, AdamW's moments and the reference beside the loaded weights, and the larger of
/// one micro-batch's activations and the rollouts' KV cache, at the shortest sequences the
/// settings allow (a one-token prompt).
fn check_memory<K: Backend>(model: &Gpt2<K>, cfg: &DapoConfig, with_reference: bool) -> Result<()> {
    use crate::model::memory::{activation_bytes, kv_cache_bytes, training_state_bytes};
    let m = model.config();
    let t = (1 + cfg.sampling.max_new_tokens).min(m.n_positions) as u128;
    let seqs = (cfg.batch_size * cfg.group_size) as u128;
    let micro = cfg.micro_batch(cfg.batch_size * cfg.group_size) as u128;
    // The weights are already allocated: count what comes on top of them.
    let state = training_state_bytes(m, u128::from(with_reference)) - training_state_bytes(m, 0) / 4;
    let need = state + activation_bytes(m, micro * t).max(kv_cache_bytes(m, seqs, t));
    crate::util::mem::ensure_fits(
        need,
        model.backend().available_memory(),
        &format!("a DAPO step of {seqs} completions of up to {t} positions"),
        "--batch-size, --group-size, --max-new-tokens or --micro-batch-size",
    )
}

fn kl_controller(cfg: &DapoConfig) -> Result<KlController> {
    let beta = f64::from(cfg.objective.beta);
    match cfg.kl_target {
        Some(target) => KlController::adaptive(beta, target, cfg.kl_horizon),
        None => KlController::fixed(beta),
    }
}

/// A seed from (seed, step, round), mixed so nearby steps are unrelated.
pub(super) fn mix_seed(seed: u64, step: u64, round: u64) -> u64 {
    mix64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Mean of `key` over the metric maps that have it.
fn mean_metric<'a>(ms: impl Iterator<Item = &'a Metrics>, key: &str) -> Option<f64> {
    let vals: Vec<f64> = ms.filter_map(|m| m.get(key).copied()).collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}
