//! The DAPO trainer: prompts → rollout → score → map → mix → (dynamic sampling) → advantages →
//! reference log-probs → μ passes of clipped-ratio updates → controllers → log / checkpoint.
//!
//! Sequences are laid out as (S, T) grids, prompt then completion, right-padded: position t's
//! hidden state predicts token t+1, so the loss mask is 1 on the positions P_i−1 … P_i+L_i−2 of
//! sequence i (prompt length P_i, completion length L_i). The objective runs over the whole
//! grid with that mask; padding after a sequence cannot influence it (attention is causal).
//!
//! Every random choice is keyed on (seed, step): prompt sampling through a generator seeded
//! from both, rollouts through the counter RNG. Together with the checkpointed optimizer,
//! mixer, KL-controller and curriculum state, a resumed run repeats the uninterrupted one
//! exactly (bit for bit on the CPU backend with the same thread count).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use super::dapo_config::DapoConfig;
use super::sft::save_checkpoint;
use crate::backend::{Backend, LossType};
use crate::checkpoint::{load_model, load_optimizer, save_model};
use crate::data::{Task, TaskDataset};
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::optim::{AdamW, LrSchedule};
use crate::reward::{
    score_checked, FeedbackMapping, GepaFeedback, Metrics, MixerState, RewardMixer, ScoreInput, Scorer,
};
use crate::rl::advantage::group_advantages;
use crate::rl::curriculum::Curriculum;
use crate::rl::dynamic_sampling::filter_groups;
use crate::rl::kl_controller::KlController;
use crate::rl::objective::{DapoObjective, ObjectiveBatch, ObjectiveMetrics};
use crate::rl::overlong::OverlongShaping;
use crate::rl::safety::{key_means, tag_means, SafetyDecision, SafetyEvent, SafetyMonitor};
use crate::rollout::{generate, Completion, FinishReason, RolloutKey, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::util::rng::{mix64, Rng};

/// The log file inside the output directory.
pub const LOG_FILE: &str = "dapo_log.jsonl";
/// The trainer state inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// Where the frozen reference model is kept (when β > 0), for resuming.
pub const REFERENCE_DIR: &str = "reference";

/// One scored completion of a step.
#[derive(Clone, Debug)]
struct Rollout {
    prompt_ids: Vec<u32>,
    completion: Completion,
    feedback: GepaFeedback,
    metrics: Metrics,
}

/// The `rl` part of a step's log record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RlMetrics {
    /// The aggregated loss of the last minibatch.
    pub loss: f32,
    /// The clipped surrogate alone.
    pub policy_loss: f32,
    /// Mean k3 KL to the reference (0 when β = 0).
    pub kl: f32,
    /// β used this step.
    pub kl_coef: f64,
    /// Mean policy entropy.
    pub entropy: f32,
    /// Fraction of tokens clipped below.
    pub clip_frac_low: f32,
    /// Fraction of tokens clipped above.
    pub clip_frac_high: f32,
    /// Learning rate.
    pub lr: f32,
    /// Gradient norm before clipping (last minibatch).
    pub grad_norm: f32,
}

/// What one step did: its log record, also handed to the progress callback.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// 1-based step.
    pub step: u64,
    /// Per completion: ids and the reward / tag vectors.
    pub gepa: Vec<GepaFeedback>,
    /// Loss, KL and optimizer numbers.
    pub rl: RlMetrics,
    /// Mean mixed reward of the kept completions.
    pub reward_mean: f64,
    /// Mean `correctness` metric, when the scorer emits one.
    pub accuracy: Option<f64>,
    /// Lengths: prompt and completion tokens, truncated completions.
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

/// The trainer. Owns the policy, the frozen reference (when β > 0) and all RL state.
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
    last_kl: f64,
    step: u64,
}

impl<K: Backend> DapoTrainer<K> {
    /// A trainer starting from `model`. The reference is a frozen copy of it, made only when
    /// β > 0 (and saved under the output directory so a resumed run finds it).
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
        let beta = f64::from(cfg.objective.beta);
        let kl = match cfg.kl_target {
            Some(target) => KlController::adaptive(beta, target, cfg.kl_horizon)?,
            None => KlController::fixed(beta)?,
        };
        let reference = (beta > 0.0 || cfg.kl_target.is_some()).then(|| model.weights_copy());
        let mut ocfg = cfg.objective.clone();
        ocfg.temperature = sampling_temperature(&cfg.sampling);
        ocfg.max_completion_length.get_or_insert(cfg.sampling.max_new_tokens);
        let objective = DapoObjective::new(ocfg)?;
        let opt = AdamW::new(&model, cfg.adamw);
        let curriculum = cfg.curriculum.map(Curriculum::new).transpose()?;
        let safety = cfg.safety.clone().map(SafetyMonitor::new).transpose()?;
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
            last_kl: 0.0,
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

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The settings.
    pub fn config(&self) -> &DapoConfig {
        &self.cfg
    }

    fn schedule(&self) -> LrSchedule {
        LrSchedule {
            max_lr: self.cfg.learning_rate,
            min_lr: self.cfg.min_learning_rate,
            warmup: self.cfg.warmup_steps,
            total: self.cfg.steps,
        }
    }

    /// Indices of the step's prompts: by curriculum weight when enabled, else uniform; keyed on
    /// (seed, step, round) so a resumed run draws the same ones.
    fn sample_prompts(&self, data: &TaskDataset, round: usize) -> Result<Vec<usize>> {
        let mut rng = Rng::new(mix_seed(self.cfg.seed, self.step, round as u64));
        let n = self.cfg.batch_size;
        match &self.curriculum {
            Some(c) => {
                let ids: Vec<&str> = data.tasks.iter().map(|t| t.task_id.as_str()).collect();
                c.sample(&ids, n, &mut rng)
            }
            None => Ok((0..n).map(|_| rng.below(data.len())).collect()),
        }
    }

    /// Encodes a task's prompt, with the task's line in the error.
    fn encode_prompt(&self, task: &Task, index: usize) -> Result<Vec<u32>> {
        self.tok.encode(&task.prompt).map_err(|e| Error::Invalid(format!("task {index} (\"{}\"): {e}", task.prompt)))
    }

    /// Generates and scores G completions for each of `tasks`.
    fn rollout_round(&mut self, data: &TaskDataset, tasks: &[usize], round: usize) -> Result<(Vec<Rollout>, f64, f64)> {
        let g = self.cfg.group_size;
        let mut prompts = Vec::with_capacity(tasks.len() * g);
        for &t in tasks {
            let ids = self.encode_prompt(&data.tasks[t], t)?;
            prompts.extend(std::iter::repeat(ids).take(g));
        }
        let t0 = Instant::now();
        let key = RolloutKey { seed: self.cfg.seed, step: self.step * 1000 + round as u64 };
        let tok = &self.tok;
        let decode = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
        let completions = generate(&mut self.model, &prompts, &self.cfg.sampling, key, Some(&decode))?;
        let rollout_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let texts: Vec<String> = completions.iter().map(|c| self.tok.decode(&c.tokens)).collect::<Result<_>>()?;
        let inputs: Vec<ScoreInput<'_>> = completions
            .iter()
            .zip(&texts)
            .map(|(c, text)| {
                let task = &data.tasks[tasks[c.prompt_index / g]];
                ScoreInput { prompt: &task.prompt, completion: text, metadata: &task.record }
            })
            .collect();
        let metrics = score_checked(self.scorer.as_mut(), &inputs)?;
        let mut out = Vec::with_capacity(completions.len());
        for ((c, m), p) in completions.into_iter().zip(metrics).zip(prompts) {
            let t = tasks[c.prompt_index / g];
            let prompt_id = t as u64;
            let completion_id = (c.prompt_index % g) as u64;
            let feedback = self.mapping.apply(&m, &data.tasks[t].task_id, prompt_id, completion_id)?;
            out.push(Rollout { prompt_ids: p, completion: c, feedback, metrics: m });
        }
        Ok((out, rollout_s, t1.elapsed().as_secs_f64()))
    }

    /// One RL step on `data`.
    pub fn step(&mut self, data: &TaskDataset) -> Result<StepRecord> {
        let g = self.cfg.group_size;
        let (mut kept, mut rewards) = (Vec::<Rollout>::new(), Vec::<f64>::new());
        let (mut rollout_s, mut score_s, mut dropped) = (0.0, 0.0, 0usize);
        for round in 0..self.cfg.max_sampling_rounds {
            let tasks = self.sample_prompts(data, round)?;
            let (rolls, r_s, s_s) = self.rollout_round(data, &tasks, round)?;
            rollout_s += r_s;
            score_s += s_s;
            let feedback: Vec<GepaFeedback> = rolls.iter().map(|r| r.feedback.clone()).collect();
            let (mut mixed, _) = self.mixer.mix(&feedback, &vec![g; tasks.len()])?;
            if let Some((max_len, cache)) = self.cfg.overlong {
                let lens: Vec<usize> = rolls.iter().map(|r| r.completion.tokens.len()).collect();
                OverlongShaping::new(max_len, cache)?.apply(&mut mixed, &lens)?;
            }
            if !self.cfg.dynamic_sampling {
                kept = rolls;
                rewards = mixed;
                break;
            }
            let filter = filter_groups(&mixed, &vec![g; tasks.len()])?;
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
        if decision.beta_scale != 1.0 {
            self.kl.scale(decision.beta_scale)?;
        }

        // The update (skipped when dynamic sampling kept nothing: every group was uniform).
        let t2 = Instant::now();
        let lr = self.schedule().lr(self.step) * decision.lr_scale as f32;
        let beta = self.kl.beta();
        let skipped_update = kept.is_empty() || decision.skip_update;
        self.objective.set_beta(beta as f32)?;
        let mut rl = RlMetrics { lr, kl_coef: beta, ..RlMetrics::default() };
        let mut reference_s = 0.0;
        if !skipped_update {
            let grid = Grid::build(&kept, &adv, self.cfg.mask_truncated, self.model.config().n_positions)?;
            if let Some(reference) = self.reference.as_mut() {
                let t = Instant::now();
                // In the update's micro-batches, so the frozen copy's activations never
                // outgrow the policy's; then freed, so they do not sit beside the update's.
                let micro = self.cfg.micro_batch(grid.s);
                let mut ref_logp = Vec::with_capacity(grid.s * grid.t);
                for start in (0..grid.s).step_by(micro) {
                    let part = start..(start + micro).min(grid.s);
                    ref_logp.extend(token_logprobs(reference, &mut self.objective, &grid, part)?);
                }
                reference.release_activations();
                reference_s = t.elapsed().as_secs_f64();
                rl = self.update(&grid, Some(&ref_logp), lr, beta)?;
            } else {
                rl = self.update(&grid, None, lr, beta)?;
            }
            rl.kl_coef = beta;
        }
        let update_s = t2.elapsed().as_secs_f64() - reference_s;
        if self.cfg.kl_target.is_some() && !skipped_update {
            self.kl.update(f64::from(rl.kl), 1)?;
        }
        if !skipped_update {
            self.last_kl = f64::from(rl.kl);
        }
        if let Some(c) = self.curriculum.as_mut() {
            c.update_many(kept.iter().zip(&rewards).map(|(r, &x)| (r.feedback.task_id.as_str(), x)))?;
        }
        self.step += 1;

        let tokens: usize = kept.iter().map(|r| r.completion.tokens.len()).sum();
        let n = kept.len().max(1) as f64;
        let truncated = kept.iter().filter(|r| r.completion.finish == FinishReason::Length).count();
        let accuracy = mean_metric(kept.iter().map(|r| &r.metrics), "correctness");
        Ok(StepRecord {
            step: self.step,
            gepa: kept.iter().map(|r| r.feedback.clone()).collect(),
            rl,
            reward_mean: rewards.iter().sum::<f64>() / n,
            accuracy,
            generation: json!({
                "prompt_len": kept.iter().map(|r| r.prompt_ids.len()).sum::<usize>() as f64 / n,
                "completion_len": tokens as f64 / n,
                "truncated": truncated,
            }),
            timing: json!({ "rollout_s": rollout_s, "score_s": score_s, "reference_s": reference_s, "update_s": update_s }),
            tokens,
            groups_dropped: dropped,
            safety: events,
            skipped_update,
        })
    }

    /// Evaluates the safety rules on the step's metrics; no rules, no events.
    fn check_safety(&self, kept: &[Rollout], rewards: &[f64]) -> Result<(Vec<SafetyEvent>, SafetyDecision)> {
        let Some(monitor) = &self.safety else {
            return Ok((Vec::new(), SafetyDecision::from_events(&[])));
        };
        let mut m = tag_means(kept.iter().map(|r| &r.feedback.tags));
        let n = rewards.len().max(1) as f64;
        m.insert("reward_mean".into(), rewards.iter().sum::<f64>() / n);
        m.insert("kl".into(), self.last_kl);
        for (k, v) in key_means(kept.iter().map(|r| &r.feedback.rewards)) {
            m.insert(format!("rewards.{k}"), v);
        }
        let events = monitor.evaluate(&m);
        let decision = SafetyDecision::from_events(&events);
        Ok((events, decision))
    }

    /// μ passes over the step's sequences in `mini_batches` optimizer steps each; within a
    /// minibatch, micro-batches of `micro_batch_size` sequences accumulate their gradients.
    fn update(&mut self, grid: &Grid, ref_logp: Option<&[f32]>, lr: f32, beta: f64) -> Result<RlMetrics> {
        let per = grid.s.div_ceil(self.cfg.mini_batches);
        let micro = self.cfg.micro_batch(per);
        let mut last = (ObjectiveMetrics::default(), 0.0f32);
        for _ in 0..self.cfg.num_iterations {
            for start in (0..grid.s).step_by(per) {
                let mini = start..(start + per).min(grid.s);
                self.model.zero_grad();
                // Each pass normalises its loss over its own tokens (or sequences); weighting
                // pass i's gradient by its share w_i of the minibatch gives the minibatch's
                // gradient. Scaling the running sum by w_i / w_(i+1) after each pass and by
                // the last w at the end does that with one in-place op per pass.
                let parts: Vec<(std::ops::Range<usize>, f64)> = mini
                    .clone()
                    .step_by(micro)
                    .map(|s| {
                        let r = s..(s + micro).min(mini.end);
                        let w = self.share(grid, &r, &mini);
                        (r, w)
                    })
                    .filter(|(_, w)| *w > 0.0)
                    .collect();
                for (i, (r, w)) in parts.iter().enumerate() {
                    last.0 = self.backward_part(grid, r.clone(), ref_logp)?;
                    let next = parts.get(i + 1).map_or(1.0, |(_, wn)| *wn);
                    if parts.len() > 1 {
                        self.model.scale_grads((w / next) as f32);
                    }
                }
                let max_norm = (self.cfg.max_grad_norm > 0.0).then_some(self.cfg.max_grad_norm);
                let info = self.opt.step(&mut self.model, lr, max_norm)?;
                last.1 = info.grad_norm;
            }
        }
        let (m, grad_norm) = last;
        Ok(RlMetrics {
            loss: m.loss,
            policy_loss: m.policy_loss,
            kl: m.kl,
            kl_coef: beta,
            entropy: m.entropy,
            clip_frac_low: m.clip_frac_low,
            clip_frac_high: m.clip_frac_high,
            lr,
            grad_norm,
        })
    }

    /// Micro-batch `part`'s share of minibatch `mini` in the loss: its masked tokens for the
    /// token-mean losses, its sequences for the per-sequence ones.
    fn share(&self, grid: &Grid, part: &std::ops::Range<usize>, mini: &std::ops::Range<usize>) -> f64 {
        match self.cfg.objective.loss_type {
            LossType::Dapo | LossType::Bnpo | LossType::Cispo | LossType::Vespo => {
                let tokens =
                    |r: &std::ops::Range<usize>| grid.mask[r.start * grid.t..r.end * grid.t].iter().sum::<f32>();
                f64::from(tokens(part)) / f64::from(tokens(mini)).max(f64::MIN_POSITIVE)
            }
            LossType::Grpo | LossType::DrGrpo | LossType::Sapo | LossType::Luspo => {
                part.len() as f64 / mini.len() as f64
            }
        }
    }

    /// Forward and backward of sequences `seqs`, adding to the gradients.
    fn backward_part(
        &mut self,
        grid: &Grid,
        seqs: std::ops::Range<usize>,
        ref_logp: Option<&[f32]>,
    ) -> Result<ObjectiveMetrics> {
        let sub = grid.slice(seqs, ref_logp);
        let k = self.model.backend().clone();
        let (t, c, v) = (grid.t, self.model.config().n_embd, self.model.config().vocab_size);
        let bufs = sub.upload(&k);
        let objective = &mut self.objective;
        self.model.forward_backward_with(&sub.ids, sub.s, t, |h| {
            let batch = bufs.batch(h.hidden, h.wte, sub.s, t, c, v);
            objective.forward_backward(h.backend, &batch, h.dhidden, h.dwte)
        })
    }

    /// Greedy completions of the first `n` tasks of `data`, scored.
    pub fn evaluate(&mut self, data: &TaskDataset, n: usize) -> Result<EvalReport> {
        let n = n.min(data.len());
        let prompts: Vec<Vec<u32>> = (0..n).map(|i| self.encode_prompt(&data.tasks[i], i)).collect::<Result<_>>()?;
        let cfg = SamplingConfig { temperature: 0.0, ..self.cfg.sampling.clone() };
        let tok = &self.tok;
        let decode = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
        // Generation in batches of 256 prompts keeps the KV cache small on long held-out
        // sets; scoring is one batch, so a scorer sees one call per evaluation.
        let mut texts = Vec::with_capacity(n);
        for start in (0..n).step_by(256) {
            let end = (start + 256).min(n);
            let key = RolloutKey { seed: self.cfg.seed, step: u64::MAX };
            for c in generate(&mut self.model, &prompts[start..end], &cfg, key, Some(&decode))? {
                texts.push(self.tok.decode(&c.tokens)?);
            }
        }
        let inputs: Vec<ScoreInput<'_>> = (0..n)
            .zip(&texts)
            .map(|(i, t)| ScoreInput { prompt: &data.tasks[i].prompt, completion: t, metadata: &data.tasks[i].record })
            .collect();
        let metrics = score_checked(self.scorer.as_mut(), &inputs)?;
        let means = key_means(metrics.iter());
        Ok(EvalReport { n, accuracy: means.get("correctness").copied(), metrics: means })
    }

    /// Writes `checkpoint-<step>` under the output directory: the HF model directory plus
    /// tokenizer, optimizer state and trainer state, swapped into place atomically.
    pub fn save(&self) -> Result<PathBuf> {
        let dir = self.cfg.output_dir.join(format!("checkpoint-{}", self.step));
        let state = json!({
            "step": self.step,
            "kl": self.kl,
            "mixer": self.mixer.state(),
            "curriculum": self.curriculum,
            "last_kl": self.last_kl,
            "config": self.cfg,
        });
        save_checkpoint(&dir, &self.model, &self.tok, &self.opt, &state)?;
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

    /// Continues from a checkpoint written by [`DapoTrainer::save`]: weights, optimizer,
    /// step, KL coefficient, mixer and curriculum state; the reference from the output
    /// directory when β > 0.
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
        let state: Value = serde_json::from_str(&crate::error::read_to_string(&path)?)
            .map_err(|e| Error::config(&path, e.to_string()))?;
        let field =
            |name: &str| state.get(name).cloned().ok_or_else(|| Error::config(&path, format!("missing `{name}`")));
        self.step = serde_json::from_value(field("step")?).map_err(|e| Error::config(&path, e.to_string()))?;
        self.kl = serde_json::from_value(field("kl")?).map_err(|e| Error::config(&path, e.to_string()))?;
        let mixer: MixerState =
            serde_json::from_value(field("mixer")?).map_err(|e| Error::config(&path, e.to_string()))?;
        self.mixer.set_state(mixer);
        self.curriculum =
            serde_json::from_value(field("curriculum")?).map_err(|e| Error::config(&path, e.to_string()))?;
        self.last_kl = serde_json::from_value(field("last_kl")?).map_err(|e| Error::config(&path, e.to_string()))?;
        if self.reference.is_some() {
            let rdir = self.cfg.output_dir.join(REFERENCE_DIR);
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
        self.save_reference()?;
        let mut report = TrainReport::default();
        let mut evaluate = |t: &mut Self, report: &mut TrainReport| -> Result<()> {
            if let Some(e) = eval {
                let r = t.evaluate(e, t.cfg.eval_size)?;
                t.log(&json!({ "step": t.step, "eval": &r }))?;
                on_eval(t.step, &r);
                report.evals.push((t.step, r));
            }
            Ok(())
        };
        evaluate(self, &mut report)?;
        while self.step < self.cfg.steps {
            let rec = self.step(data)?;
            self.log(&rec)?;
            on_step(&rec);
            let interrupted = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            let at_end = self.step == self.cfg.steps;
            if self.cfg.eval_every > 0 && self.step % self.cfg.eval_every == 0 && !at_end {
                evaluate(self, &mut report)?;
            }
            if interrupted || at_end || (self.cfg.save_every > 0 && self.step % self.cfg.save_every == 0) {
                report.checkpoints.push(self.save()?);
            }
            if interrupted {
                report.interrupted = true;
                return Ok(report);
            }
        }
        evaluate(self, &mut report)?;
        Ok(report)
    }

    /// Appends `record` to the output directory's JSONL log.
    pub fn log(&self, record: &impl Serialize) -> Result<()> {
        let path = self.cfg.output_dir.join(LOG_FILE);
        std::fs::create_dir_all(&self.cfg.output_dir).map_err(|e| Error::io(&self.cfg.output_dir, e))?;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let line = serde_json::to_string(record).expect("log records serialise");
        writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
    }
}

/// The temperature the objective must use: the sampler's (1 for greedy).
fn sampling_temperature(s: &SamplingConfig) -> f32 {
    if s.temperature > 0.0 {
        s.temperature
    } else {
        1.0
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

/// The step's sequences as (S, T) host grids.
struct Grid {
    s: usize,
    t: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    logp_old: Vec<f32>,
    adv: Vec<f32>,
}

/// One minibatch of a [`Grid`], with the reference log-probs when β > 0.
struct SubGrid {
    s: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    logp_old: Vec<f32>,
    logp_ref: Option<Vec<f32>>,
    adv: Vec<f32>,
}

/// A [`SubGrid`] on the backend.
struct SubGridBufs<K: Backend> {
    targets: K::Ids,
    mask: K::Buf,
    logp_old: K::Buf,
    logp_ref: Option<K::Buf>,
    adv: K::Buf,
}

impl Grid {
    fn build(rolls: &[Rollout], adv: &[f64], mask_truncated: bool, n_positions: usize) -> Result<Self> {
        let s = rolls.len();
        let t = rolls.iter().map(|r| r.prompt_ids.len() + r.completion.tokens.len()).max().unwrap_or(1).max(2);
        if t > n_positions {
            return Err(Error::Invalid(format!("a sequence of {t} tokens exceeds n_positions {n_positions}")));
        }
        let mut g = Grid {
            s,
            t,
            ids: vec![0; s * t],
            targets: vec![0; s * t],
            mask: vec![0.0; s * t],
            logp_old: vec![0.0; s * t],
            adv: adv.iter().map(|&a| a as f32).collect(),
        };
        for (i, r) in rolls.iter().enumerate() {
            let row = i * t;
            let (p, c) = (&r.prompt_ids, &r.completion.tokens);
            let seq: Vec<u32> = p.iter().chain(c).copied().collect();
            g.ids[row..row + seq.len()].copy_from_slice(&seq);
            g.targets[row..row + seq.len() - 1].copy_from_slice(&seq[1..]);
            let counts = !(mask_truncated && r.completion.finish == FinishReason::Length);
            for (j, &lp) in r.completion.logprobs.iter().enumerate() {
                // Position P−1+j predicts completion token j.
                let at = row + p.len() - 1 + j;
                g.logp_old[at] = lp;
                g.mask[at] = if counts { 1.0 } else { 0.0 };
            }
        }
        Ok(g)
    }

    fn slice(&self, r: std::ops::Range<usize>, ref_logp: Option<&[f32]>) -> SubGrid {
        let span = r.start * self.t..r.end * self.t;
        SubGrid {
            s: r.len(),
            ids: self.ids[span.clone()].to_vec(),
            targets: self.targets[span.clone()].to_vec(),
            mask: self.mask[span.clone()].to_vec(),
            logp_old: self.logp_old[span.clone()].to_vec(),
            logp_ref: ref_logp.map(|x| x[span].to_vec()),
            adv: self.adv[r].to_vec(),
        }
    }
}

impl SubGrid {
    fn upload<K: Backend>(&self, k: &K) -> SubGridBufs<K> {
        SubGridBufs {
            targets: k.upload_ids(&self.targets),
            mask: k.upload(&self.mask),
            logp_old: k.upload(&self.logp_old),
            logp_ref: self.logp_ref.as_ref().map(|x| k.upload(x)),
            adv: k.upload(&self.adv),
        }
    }
}

impl<K: Backend> SubGridBufs<K> {
    fn batch<'a>(
        &'a self,
        hidden: &'a K::Buf,
        weight: &'a K::Buf,
        s: usize,
        l: usize,
        c: usize,
        v: usize,
    ) -> ObjectiveBatch<'a, K> {
        ObjectiveBatch {
            hidden,
            weight,
            targets: &self.targets,
            mask: &self.mask,
            advantages: &self.adv,
            logp_old: &self.logp_old,
            logp_ref: self.logp_ref.as_ref(),
            s,
            l,
            c,
            v,
            norm: None,
        }
    }
}

/// Log-probs of every grid position's target under `model` (the frozen reference).
fn token_logprobs<K: Backend>(
    model: &mut Gpt2<K>,
    objective: &mut DapoObjective<K>,
    grid: &Grid,
    seqs: std::ops::Range<usize>,
) -> Result<Vec<f32>> {
    let sub = grid.slice(seqs, None);
    let (c, v) = (model.config().n_embd, model.config().vocab_size);
    let n = sub.s * grid.t;
    model.forward_hidden(&sub.ids, sub.s, grid.t, |h| {
        let targets = h.backend.upload_ids(&sub.targets);
        objective.token_logprobs(h.backend, h.hidden, h.wte, &targets, n, c, v).map(|(lp, _)| lp)
    })?
}
