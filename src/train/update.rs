//! The update of a DAPO step over its sequences laid out as a [`Grid`]: the old log-probs
//! (when the sequences did not bring them) and the reference's, then `num_iterations` passes
//! of `mini_batches` optimizer steps, each accumulating micro-batches whose losses are
//! normalised as TRL's gradient accumulation normalises them ([`LossNorm`]).

use std::time::Instant;

use super::dapo::{DapoTrainer, RlMetrics};
use super::grid::{Grid, Seq};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::Gpt2;
use crate::rl::objective::{DapoObjective, LossNorm, ObjectiveMetrics};

impl<K: Backend> DapoTrainer<K> {
    /// The update over `seqs` (in order): reference and old log-probs where needed, then μ
    /// passes of minibatch optimizer steps. Returns the metrics and the reference pass's
    /// seconds.
    pub(super) fn update(&mut self, seqs: &[Seq], lr: f32, beta: f64) -> Result<(RlMetrics, f64)> {
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
