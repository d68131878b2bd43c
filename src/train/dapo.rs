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
//! normalised as TRL's gradient accumulation normalises them ([`LossNorm`]).
//!
//! Every random choice is keyed on (seed, step): the prompt order through seeded epochs, the
//! minibatch shuffle through a generator seeded from both, rollouts through the counter RNG.
//! Together with the checkpointed optimizer, mixer, KL controller, prompt cursor and curriculum
//! state, a resumed run repeats the uninterrupted one exactly (bit for bit on the CPU backend
//! with the same thread count).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dapo_config::DapoConfig;
use super::grid::{Grid, Seq};
use super::sft::save_checkpoint;
use super::step_metrics::{is_wall_clock, mean_std, trl_metrics, LogWindow, StepInputs};
use crate::backend::Backend;
use crate::checkpoint::trainer_state::{read_dapo_state, HfTrainerState, DAPO_STATE_FILE};
use crate::checkpoint::{load_model, load_optimizer, save_model, EndTokens};
use crate::data::{EpochSampler, Task, TaskDataset};
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::optim::AdamW;
use crate::report::tensorboard::unix_time;
use crate::report::Reporters;
use crate::reward::{FeedbackMapping, GepaFeedback, Metrics, MixerState, RewardMixer, Scorer};
use crate::rl::advantage::group_advantages;
use crate::rl::curriculum::Curriculum;
use crate::rl::dynamic_sampling::filter_groups;
use crate::rl::kl_controller::KlController;
use crate::rl::objective::{DapoObjective, LossNorm, ObjectiveMetrics};
use crate::rl::overlong::OverlongShaping;
use crate::rl::safety::{key_means, tag_means, SafetyDecision, SafetyEvent, SafetyMonitor};
use crate::rollout::scored::{ScoredGeneration, EVAL_CHUNK};
use crate::rollout::{Completion, FinishReason, RolloutKey, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::util::rng::{mix64, Rng};

/// The log file inside the output directory.
pub const LOG_FILE: &str = "dapo_log.jsonl";
/// The completions log (`log_completions`), beside [`LOG_FILE`] in the output directory.
pub const COMPLETIONS_FILE: &str = "completions.jsonl";
/// The trainer state inside a checkpoint.
pub const STATE_FILE: &str = DAPO_STATE_FILE;
/// Where the frozen reference model is kept (when β > 0), for resuming.
pub const REFERENCE_DIR: &str = "reference";

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

/// One scored completion of a step.
#[derive(Clone, Debug)]
struct Rollout {
    /// The dataset task it answers.
    task: usize,
    prompt_ids: Vec<u32>,
    completion: Completion,
    /// The completion's text as the scorer saw it.
    text: String,
    feedback: GepaFeedback,
    metrics: Metrics,
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

/// A task file's prompts as the trainer uses them: encoded once, checked against the scorer,
/// truncated to `max_prompt_length`, and without those that leave no room for a completion.
#[derive(Clone, Debug)]
pub struct PromptPool {
    /// Encoded prompt of each usable task.
    pub ids: Vec<Vec<u32>>,
    /// The task index (into the dataset) of each usable prompt.
    pub task: Vec<usize>,
    /// Prompts left out because prompt + `max_new_tokens` exceeds the model's context.
    pub dropped: usize,
    /// Prompts cut to their last `max_prompt_length` tokens.
    pub truncated: usize,
    /// Which dataset this was built from (its address and length), for the step cache.
    key: (usize, usize),
}

/// The KL controller's settings, saved beside its state: a resumed run whose settings differ
/// starts a controller from the new settings instead of restoring the old one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct KlSpec {
    beta: f64,
    target: Option<f64>,
    horizon: f64,
}

/// The trainer. Owns the policy, the frozen reference (when β > 0 or adapted) and all RL state.
pub struct DapoTrainer<K: Backend> {
    cfg: DapoConfig,
    model: Gpt2<K>,
    reference: Option<Gpt2<K>>,
    tok: Tokenizer,
    scorer: Box<dyn Scorer>,
    mapping: FeedbackMapping,
    mixer: RewardMixer,
    objective: DapoObjective<K>,
    opt: AdamW<K>,
    kl: KlController,
    curriculum: Option<Curriculum>,
    safety: Option<SafetyMonitor>,
    end_tokens: Vec<u32>,
    sampler: Option<EpochSampler>,
    pool: Option<std::sync::Arc<PromptPool>>,
    run_settings: Option<Value>,
    /// Whether the safety rules' metric names were checked against a real step's metrics.
    safety_checked: bool,
    /// Set when a step starts changing the model or the KL controller: a failure after it is
    /// not undone by restoring the step's inputs.
    mid_update: bool,
    last_kl: f64,
    last_loss: f64,
    last_grad_norm: f64,
    /// Prompt + completion tokens of every completion trained on so far (TRL's `num_tokens`).
    tokens_seen: u64,
    /// Every logging step's averaged metrics and every evaluation, with its `step`: the
    /// `log_history` of transformers' `trainer_state.json`.
    log_history: Vec<Value>,
    step: u64,
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

    /// The sampling settings of rollouts: the configured ones, stopping at the end tokens.
    fn rollout_sampling(&self) -> SamplingConfig {
        SamplingConfig { stop_token_ids: self.end_tokens.clone(), ..self.cfg.sampling.clone() }
    }

    /// Prepares `data`'s prompts ([`PromptPool`]): every task is checked against the scorer
    /// and encoded, so a line missing what the scorer needs, or that the tokenizer cannot
    /// encode, is an error naming `file:line` before any step. Errors when no prompt fits.
    pub fn prepare(&self, data: &TaskDataset) -> Result<PromptPool> {
        let n_positions = self.model.config().n_positions;
        let room = n_positions.saturating_sub(self.cfg.sampling.max_new_tokens);
        let mut pool = PromptPool {
            ids: Vec::new(),
            task: Vec::new(),
            dropped: 0,
            truncated: 0,
            key: (data as *const TaskDataset as usize, data.len()),
        };
        for (i, task) in data.tasks.iter().enumerate() {
            let at = || data.locate(i);
            self.scorer.check_task(&task.record).map_err(|m| Error::Invalid(format!("{}: {m}", at())))?;
            let mut ids =
                self.tok.encode(&task.prompt).map_err(|e| Error::Invalid(format!("{}: prompt: {e}", at())))?;
            if ids.is_empty() {
                return Err(Error::Invalid(format!("{}: the prompt encodes to no tokens", at())));
            }
            if let Some(max) = self.cfg.max_prompt_length {
                if ids.len() > max {
                    ids.drain(..ids.len() - max);
                    pool.truncated += 1;
                }
            }
            if ids.len() > room {
                pool.dropped += 1;
                continue;
            }
            pool.ids.push(ids);
            pool.task.push(i);
        }
        if pool.ids.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: none of its {} prompts leaves room for {} new tokens below the model's n_positions \
                 {n_positions} (lower --max-new-tokens or set --max-prompt-length)",
                data.source.display(),
                data.len(),
                self.cfg.sampling.max_new_tokens
            )));
        }
        Ok(pool)
    }

    /// The prepared prompts of `data`, built on first use and kept while the same dataset is
    /// passed (shared, so a step does not copy every encoded prompt).
    fn pool_for(&mut self, data: &TaskDataset) -> Result<std::sync::Arc<PromptPool>> {
        let key = (data as *const TaskDataset as usize, data.len());
        match &self.pool {
            Some(p) if p.key == key => Ok(p.clone()),
            _ => {
                let p = std::sync::Arc::new(self.prepare(data)?);
                self.pool = Some(p.clone());
                Ok(p)
            }
        }
    }

    /// Indices (into the pool) of a round's prompts: by curriculum weight when enabled (keyed
    /// on (seed, step, round)), else the next ones of the seeded epoch stream.
    fn sample_prompts(&mut self, data: &TaskDataset, pool: &PromptPool, round: usize) -> Result<Vec<usize>> {
        let n = self.cfg.batch_size;
        if let Some(c) = &self.curriculum {
            let mut rng = Rng::new(mix_seed(self.cfg.seed, self.step, round as u64));
            let ids: Vec<&str> = pool.task.iter().map(|&t| data.tasks[t].task_id.as_str()).collect();
            return c.sample(&ids, n, &mut rng);
        }
        let fresh = || EpochSampler::new(pool.ids.len(), self.cfg.seed, self.cfg.shuffle_dataset);
        let sampler = match &mut self.sampler {
            Some(s) if s.n == pool.ids.len() => s,
            slot => slot.insert(fresh()?),
        };
        Ok(sampler.take(n))
    }

    /// Generates and scores G completions for each of `picks` (pool indices).
    fn rollout_round(
        &mut self,
        data: &TaskDataset,
        pool: &PromptPool,
        picks: &[usize],
        round: usize,
    ) -> Result<(Vec<Rollout>, f64, f64)> {
        let g = self.cfg.group_size;
        let mut prompts = Vec::with_capacity(picks.len() * g);
        let mut tasks = Vec::with_capacity(picks.len() * g);
        for &p in picks {
            prompts.extend(std::iter::repeat(pool.ids[p].clone()).take(g));
            tasks.extend(std::iter::repeat(&data.tasks[pool.task[p]]).take(g));
        }
        let sampling = self.rollout_sampling();
        // One chunk: every completion of the round draws with its own index under the key.
        let generation = ScoredGeneration {
            tok: &self.tok,
            sampling: &sampling,
            key: RolloutKey { seed: self.cfg.seed, step: self.step.wrapping_mul(1000).wrapping_add(round as u64) },
            chunk: prompts.len(),
        };
        let scored = generation.run(&mut self.model, self.scorer.as_mut(), &prompts, &tasks)?;
        let mut out = Vec::with_capacity(prompts.len());
        let rounds = scored.completions.into_iter().zip(scored.metrics).zip(prompts).zip(scored.texts);
        for (((c, m), p), text) in rounds {
            let t = pool.task[picks[c.prompt_index / g]];
            let completion_id = (c.prompt_index % g) as u64;
            let feedback = self.mapping.apply(&m, &data.tasks[t].task_id, t as u64, completion_id)?;
            out.push(Rollout { task: t, prompt_ids: p, completion: c, text, feedback, metrics: m });
        }
        Ok((out, scored.generate_s, scored.score_s))
    }

    /// One RL step on `data`.
    pub fn step(&mut self, data: &TaskDataset) -> Result<StepRecord> {
        let pool = self.pool_for(data)?;
        let g = self.cfg.group_size;
        let (mut kept, mut rewards) = (Vec::<Rollout>::new(), Vec::<f64>::new());
        let (mut rollout_s, mut score_s, mut dropped) = (0.0, 0.0, 0usize);
        let (mut groups, mut zero_std_groups) = (0usize, 0usize);
        for round in 0..self.cfg.max_sampling_rounds {
            let picks = self.sample_prompts(data, &pool, round)?;
            let (rolls, r_s, s_s) = self.rollout_round(data, &pool, &picks, round)?;
            rollout_s += r_s;
            score_s += s_s;
            let feedback: Vec<GepaFeedback> = rolls.iter().map(|r| r.feedback.clone()).collect();
            let (mut mixed, _) = self.mixer.mix(&feedback, &vec![g; picks.len()])?;
            if let Some(buffer) = self.cfg.overlong_buffer_len {
                let lens: Vec<usize> = rolls.iter().map(|r| r.completion.tokens.len()).collect();
                OverlongShaping::new(self.cfg.sampling.max_new_tokens, buffer)?
                    .with_penalty_factor(self.cfg.overlong_penalty_factor)?
                    .apply(&mut mixed, &lens)?;
            }
            // TRL's `frac_reward_zero_std`: groups whose std is within 1e-8 of zero (its
            // `torch.isclose(std, 0)`), counted over every group sampled.
            groups += mixed.len() / g;
            zero_std_groups += mixed.chunks(g).filter(|c| mean_std(c.iter().copied()).1.abs() <= 1e-8).count();
            if !self.cfg.dynamic_sampling {
                kept = rolls;
                rewards = mixed;
                break;
            }
            let filter = filter_groups(&mixed, &vec![g; picks.len()])?;
            dropped += filter.dropped;
            for &gi in &filter.kept {
                if kept.len() < self.cfg.batch_size * g {
                    kept.extend_from_slice(&rolls[gi * g..(gi + 1) * g]);
                    rewards.extend_from_slice(&mixed[gi * g..(gi + 1) * g]);
                }
            }
            if kept.len() >= self.cfg.batch_size * g {
                break;
            }
        }
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

    /// The update over `seqs` (in order): reference and old log-probs where needed, then μ
    /// passes of minibatch optimizer steps. Returns the metrics and the reference pass's
    /// seconds.
    fn update(&mut self, seqs: &[Seq], lr: f32, beta: f64) -> Result<(RlMetrics, f64)> {
        let mut grid = Grid::build(seqs, self.cfg.mask_truncated, self.model.config().n_positions)?;
        self.objective.set_beta(beta as f32)?;
        let micro = self.cfg.micro_batch(grid.s);
        if !grid.has_logp_old {
            // TRL computes the old log-probs with the policy before the first update.
            grid.logp_old = token_logprobs(&mut self.model, &mut self.objective, &grid, micro)?;
        }
        let mut reference_s = 0.0;
        let ref_logp = match self.reference.as_mut() {
            Some(reference) if beta != 0.0 => {
                let t = Instant::now();
                let lp = token_logprobs(reference, &mut self.objective, &grid, micro)?;
                // Freed, so the frozen copy's activations do not sit beside the update's.
                reference.release_activations();
                reference_s = t.elapsed().as_secs_f64();
                Some(lp)
            }
            _ => None,
        };

        // TRL's normalisers: a minibatch is `per` sequences in `n_parts` accumulated
        // micro-batches; the token-mean losses divide by the step's tokens / mini_batches
        // (its `num_items_in_batch` scaled to one accumulation window).
        let per = grid.s.div_ceil(self.cfg.mini_batches);
        let token_norm = grid.tokens(0..grid.s).max(1.0) / self.cfg.mini_batches as f32;
        let mut acc = MetricsSum::default();
        for _ in 0..self.cfg.num_iterations {
            for start in (0..grid.s).step_by(per) {
                let mini = start..(start + per).min(grid.s);
                self.model.zero_grad();
                let pieces = chunks(mini.clone(), micro);
                let norm = LossNorm { sequences: mini.len() as f32, tokens: token_norm, accum: pieces.len() as f32 };
                let mut step_loss = (0.0f32, 0.0f32);
                for r in pieces {
                    // A micro-batch with no token in the loss (all truncated and masked) adds
                    // nothing to any loss type; TRL's clamped normalisers give it exactly 0.
                    if grid.tokens(r.clone()) == 0.0 {
                        continue;
                    }
                    let m = self.backward_part(&grid, r, ref_logp.as_deref(), norm)?;
                    step_loss.0 += m.loss;
                    step_loss.1 += m.policy_loss;
                    acc.add_part(&m);
                }
                let max_norm = (self.cfg.max_grad_norm > 0.0).then_some(self.cfg.max_grad_norm);
                let info = self.opt.step(&mut self.model, lr, max_norm)?;
                acc.add_step(step_loss, info.grad_norm);
            }
        }
        Ok((acc.finish(lr, beta, self.cfg.num_iterations), reference_s))
    }

    /// Forward and backward of sequences `seqs`, adding to the gradients.
    fn backward_part(
        &mut self,
        grid: &Grid,
        seqs: std::ops::Range<usize>,
        ref_logp: Option<&[f32]>,
        norm: LossNorm,
    ) -> Result<ObjectiveMetrics> {
        let sub = grid.slice(seqs, ref_logp);
        let k = self.model.backend().clone();
        let (t, c, v) = (grid.t, self.model.config().n_embd, self.model.config().vocab_size);
        let bufs = sub.upload(&k);
        let objective = &mut self.objective;
        self.model.forward_backward_with(&sub.ids, sub.s, t, |h| {
            let batch = bufs.batch(h.hidden, h.wte, sub.s, t, c, v, norm);
            objective.forward_backward(h.backend, &batch, h.dhidden, h.dwte)
        })
    }

    /// Greedy completions of the first `n` usable tasks of `data`, scored as `dapo eval` scores
    /// them: generated in chunks of [`EVAL_CHUNK`] prompts (a small KV cache on long held-out
    /// sets) and scored in one call, so a scorer sees one batch per evaluation.
    pub fn evaluate(&mut self, data: &TaskDataset, n: usize) -> Result<EvalReport> {
        let pool = self.prepare(data)?;
        let n = n.min(pool.ids.len());
        let sampling = SamplingConfig { temperature: 0.0, ..self.rollout_sampling() };
        let tasks: Vec<&Task> = pool.task[..n].iter().map(|&t| &data.tasks[t]).collect();
        let generation = ScoredGeneration {
            tok: &self.tok,
            sampling: &sampling,
            key: RolloutKey { seed: self.cfg.seed, step: u64::MAX },
            chunk: EVAL_CHUNK,
        };
        let scored = generation.run(&mut self.model, self.scorer.as_mut(), &pool.ids[..n], &tasks)?;
        let means = key_means(scored.metrics.iter());
        Ok(EvalReport { n, accuracy: means.get("correctness").copied(), metrics: means })
    }

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
    fn keep_completed_work(&mut self, e: Error, saved: u64, report: &mut TrainReport) -> Error {
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
    fn log_to(&self, file: &str, record: &impl Serialize) -> Result<()> {
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

/// What safety rules can watch besides `rewards.<key>` and `tags.<key>`: the step's mean
/// reward, and the previous update's KL, loss and gradient norm (in this order in
/// `check_safety`).
pub const STEP_METRICS: &[&str] = &["reward_mean", "kl", "loss", "grad_norm"];

/// A checkpoint's dapo state (`dapo_state.json`; see [`read_dapo_state`]).
pub fn read_state(dir: &Path) -> Result<Value> {
    read_dapo_state(dir)
}

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

fn kl_spec(cfg: &DapoConfig) -> KlSpec {
    KlSpec { beta: f64::from(cfg.objective.beta), target: cfg.kl_target, horizon: cfg.kl_horizon }
}

fn kl_controller(cfg: &DapoConfig) -> Result<KlController> {
    let beta = f64::from(cfg.objective.beta);
    match cfg.kl_target {
        Some(target) => KlController::adaptive(beta, target, cfg.kl_horizon),
        None => KlController::fixed(beta),
    }
}

/// Sums of the objective's metrics over a step's passes. Per-token metrics are averaged over
/// micro-batches, each micro-batch's token mean counting once, as TRL's logger averages the
/// values its loss appends per micro-batch.
#[derive(Default)]
struct MetricsSum {
    loss: f64,
    policy_loss: f64,
    grad_norm: f64,
    steps: usize,
    parts: usize,
    tokens: f64,
    kl: f64,
    entropy: f64,
    clip_low: f64,
    clip_high: f64,
    clip_dual: f64,
}

impl MetricsSum {
    fn add_part(&mut self, m: &ObjectiveMetrics) {
        self.parts += 1;
        self.tokens += f64::from(m.tokens);
        self.kl += f64::from(m.kl);
        self.entropy += f64::from(m.entropy);
        self.clip_low += f64::from(m.clip_frac_low);
        self.clip_high += f64::from(m.clip_frac_high);
        self.clip_dual += f64::from(m.clip_frac_dual);
    }

    fn add_step(&mut self, (loss, policy): (f32, f32), grad_norm: f32) {
        self.loss += f64::from(loss);
        self.policy_loss += f64::from(policy);
        self.grad_norm += f64::from(grad_norm);
        self.steps += 1;
    }

    fn finish(&self, lr: f32, beta: f64, passes: usize) -> RlMetrics {
        let per_step = |x: f64| (x / self.steps.max(1) as f64) as f32;
        let per_part = |x: f64| (x / self.parts.max(1) as f64) as f32;
        RlMetrics {
            loss: per_step(self.loss),
            policy_loss: per_step(self.policy_loss),
            kl: per_part(self.kl),
            kl_coef: beta,
            entropy: per_part(self.entropy),
            clip_frac_low: per_part(self.clip_low),
            clip_frac_high: per_part(self.clip_high),
            clip_frac_dual: per_part(self.clip_dual),
            lr,
            grad_norm: per_step(self.grad_norm),
            optimizer_steps: self.steps,
            tokens: (self.tokens / passes.max(1) as f64) as f32,
        }
    }
}

/// A seed from (seed, step, round), mixed so nearby steps are unrelated.
fn mix_seed(seed: u64, step: u64, round: u64) -> u64 {
    mix64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Mean of `key` over the metric maps that have it.
fn mean_metric<'a>(ms: impl Iterator<Item = &'a Metrics>, key: &str) -> Option<f64> {
    let vals: Vec<f64> = ms.filter_map(|m| m.get(key).copied()).collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// `r` cut into consecutive ranges of at most `size` (micro-batches of sequences).
fn chunks(r: std::ops::Range<usize>, size: usize) -> Vec<std::ops::Range<usize>> {
    r.clone().step_by(size.max(1)).map(|a| a..(a + size).min(r.end)).collect()
}

/// Log-probs of every grid position's target under `model` (the reference, or the policy for
/// the old log-probs), (S, T), computed in the update's micro-batches of `micro` sequences so
/// these passes never hold more activations than the update does.
fn token_logprobs<K: Backend>(
    model: &mut Gpt2<K>,
    objective: &mut DapoObjective<K>,
    grid: &Grid,
    micro: usize,
) -> Result<Vec<f32>> {
    let (c, v) = (model.config().n_embd, model.config().vocab_size);
    let mut out = Vec::with_capacity(grid.s * grid.t);
    for seqs in chunks(0..grid.s, micro) {
        let sub = grid.slice(seqs, None);
        let n = sub.s * grid.t;
        out.extend(model.forward_hidden(&sub.ids, sub.s, grid.t, |h| {
            let targets = h.backend.upload_ids(&sub.targets);
            objective.token_logprobs(h.backend, h.hidden, h.wte, &targets, n, c, v).map(|(lp, _)| lp)
        })??);
    }
    Ok(out)
}
