//! The update of a DAPO step over its sequences laid out as a [`Grid`]: the old log-probs
//! (when the sequences did not bring them) and the reference's, then `num_iterations` passes
//! of `mini_batches` optimizer steps, each accumulating micro-batches whose losses are
//! normalised as TRL's gradient accumulation normalises them ([`LossNorm`]).
//!
//! The grid goes to the device once per update, into buffers the trainer keeps
//! ([`GridBufs`]); each micro-batch's inputs are device-to-device copies out of them, the old
//! and reference log-probs are computed into them and never downloaded, and the reference
//! borrows the policy's activations for its pass. Once the buffers have seen a run's largest
//! step, an update allocates nothing on the device.

use std::time::Instant;

use super::dapo::{DapoTrainer, RlMetrics};
use super::grid::{Grid, GridBufs, Seq};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::Gpt2;
use crate::rl::objective::{DapoObjective, LossNorm, ObjectiveMetrics};

impl<K: Backend> DapoTrainer<K> {
    /// The update over `seqs` (in order): reference and old log-probs where needed, then μ
    /// passes of minibatch optimizer steps. Returns the metrics and the reference pass's
    /// seconds.
    pub(super) fn update(&mut self, seqs: &[Seq], lr: f32, beta: f64) -> Result<(RlMetrics, f64)> {
        let grid = Grid::build(seqs, self.cfg.mask_truncated, self.model.config().n_positions)?;
        grid.check_ids(self.model.config().vocab_size)?;
        self.objective.set_beta(beta as f32)?;
        let micro = self.cfg.micro_batch(grid.s);
        let k = self.model.backend().clone();
        let bufs = self.grid_bufs.get_or_insert_with(|| GridBufs::new(&k));
        bufs.load(&k, &grid);
        if !grid.has_logp_old {
            // TRL computes the old log-probs with the policy before the first update.
            token_logprobs(&mut self.model, &mut self.objective, bufs, (grid.s, grid.t), micro, false)?;
        }
        let mut reference_s = 0.0;
        let with_ref = match self.reference.as_mut() {
            Some(reference) if beta != 0.0 => {
                let t = Instant::now();
                // The reference runs on the policy's activations (sized for these micro-batches
                // already) and hands them back, so the two never hold activations side by side.
                if !reference.swap_activations(&mut self.model) {
                    self.model.release_activations();
                }
                let r = token_logprobs(reference, &mut self.objective, bufs, (grid.s, grid.t), micro, true);
                if !reference.swap_activations(&mut self.model) {
                    reference.release_activations();
                }
                r?;
                reference_s = t.elapsed().as_secs_f64();
                true
            }
            _ => false,
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
                    let m = self.backward_part(&grid, r, with_ref, norm)?;
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

    /// Forward and backward of sequences `seqs` of the loaded grid, adding to the gradients.
    fn backward_part(
        &mut self,
        grid: &Grid,
        seqs: std::ops::Range<usize>,
        with_ref: bool,
        norm: LossNorm,
    ) -> Result<ObjectiveMetrics> {
        let k = self.model.backend().clone();
        let (s, t, c, v) = (seqs.len(), grid.t, self.model.config().n_embd, self.model.config().vocab_size);
        let bufs = self.grid_bufs.as_mut().expect("loaded by update");
        bufs.load_micro(&k, seqs.clone(), t, with_ref);
        let (objective, bufs) = (&mut self.objective, &*bufs);
        self.model.forward_backward_on_device((&bufs.ids, seqs.start * t), s, t, |h| {
            let batch = bufs.micro.batch(h.hidden, h.wte, with_ref, (s, t, c, v), norm);
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
/// the old log-probs), (S, T), written into `bufs.logp_ref` (`reference`) or `bufs.logp_old`
/// on the device, computed in the update's micro-batches of `micro` sequences so these passes
/// never hold more activations than the update does.
fn token_logprobs<K: Backend>(
    model: &mut Gpt2<K>,
    objective: &mut DapoObjective<K>,
    bufs: &mut GridBufs<K>,
    (s, t): (usize, usize),
    micro: usize,
    reference: bool,
) -> Result<()> {
    let (c, v) = (model.config().n_embd, model.config().vocab_size);
    let k = model.backend().clone();
    for seqs in chunks(0..s, micro) {
        let n = seqs.len() * t;
        bufs.micro_targets(&k, seqs.clone(), t);
        let GridBufs { ids, micro, logp_old, logp_ref, .. } = &mut *bufs;
        let out = if reference { logp_ref } else { logp_old };
        model.forward_hidden_on_device((ids, seqs.start * t), seqs.len(), t, |h| {
            let inputs = (h.hidden, h.wte, &micro.targets);
            objective.token_logprobs_into(h.backend, inputs, (n, c, v), out, seqs.start * t)
        })??;
    }
    Ok(())
}
