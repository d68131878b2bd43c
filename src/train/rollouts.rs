//! A DAPO step's rollouts: the task file's prompts prepared once ([`PromptPool`]), each
//! round's prompts picked (seeded epochs or curriculum weights), G completions per prompt
//! generated and scored through [`crate::rollout::scored`], their feedback mapped and mixed,
//! and the rounds of dynamic sampling that fill the step with groups that carry a learning
//! signal. The held-out evaluation runs through the same generation path.

use super::dapo::{mix_seed, DapoTrainer, EvalReport};
use super::step_metrics::mean_std;
use crate::backend::Backend;
use crate::data::{EpochSampler, Task, TaskDataset};
use crate::error::{Error, Result};
use crate::reward::{GepaFeedback, Metrics};
use crate::rl::dynamic_sampling::filter_groups;
use crate::rl::overlong::OverlongShaping;
use crate::rl::safety::key_means;
use crate::rollout::scored::{ScoredGeneration, EVAL_CHUNK};
use crate::rollout::{Completion, RolloutKey, SamplingConfig};
use crate::util::rng::Rng;

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

/// One scored completion of a step.
#[derive(Clone, Debug)]
pub(super) struct Rollout {
    /// The dataset task it answers.
    pub(super) task: usize,
    pub(super) prompt_ids: Vec<u32>,
    pub(super) completion: Completion,
    /// The completion's text as the scorer saw it.
    pub(super) text: String,
    pub(super) feedback: GepaFeedback,
    pub(super) metrics: Metrics,
}

/// What a step's sampling rounds kept, with the counts its metrics report.
pub(super) struct StepRollouts {
    /// Whole groups of rollouts, G after G.
    pub(super) kept: Vec<Rollout>,
    /// The mixed (and overlong-shaped) reward of each kept rollout.
    pub(super) rewards: Vec<f64>,
    /// Seconds spent generating.
    pub(super) rollout_s: f64,
    /// Seconds spent decoding and scoring.
    pub(super) score_s: f64,
    /// Groups dropped by dynamic sampling.
    pub(super) dropped: usize,
    /// Groups sampled over every round.
    pub(super) groups: usize,
    /// Sampled groups whose rewards were all equal (TRL's `frac_reward_zero_std`).
    pub(super) zero_std_groups: usize,
}

impl<K: Backend> DapoTrainer<K> {
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
    pub(super) fn pool_for(&mut self, data: &TaskDataset) -> Result<std::sync::Arc<PromptPool>> {
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
        let rows = scored.completions.into_iter().zip(scored.metrics).zip(prompts).zip(scored.texts);
        for (((c, m), p), text) in rows {
            let t = pool.task[picks[c.prompt_index / g]];
            let completion_id = (c.prompt_index % g) as u64;
            let feedback = self.mapping.apply(&m, &data.tasks[t].task_id, t as u64, completion_id)?;
            out.push(Rollout { task: t, prompt_ids: p, completion: c, text, feedback, metrics: m });
        }
        Ok((out, scored.generate_s, scored.score_s))
    }

    /// The step's rollouts: rounds of G completions for `batch_size` prompts, scored and mixed
    /// (with the overlong penalty), until a round is kept whole or, with dynamic sampling,
    /// until the groups with a learning signal fill the batch or `max_sampling_rounds` ran.
    pub(super) fn collect_rollouts(&mut self, data: &TaskDataset) -> Result<StepRollouts> {
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
        Ok(StepRollouts { kept, rewards, rollout_s, score_s, dropped, groups, zero_std_groups })
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
}
