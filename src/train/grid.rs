//! A step's sequences laid out for the model: an (S, T) grid, prompt then completion,
//! right-padded. Position t's hidden state predicts token t+1, so the loss mask is 1 on the
//! positions P_i−1 … P_i+L_i−2 of sequence i (prompt length P_i, completion length L_i), and 0
//! on the prompt, the padding and — with `mask_truncated` — every position of a completion that
//! was cut off. Padding after a sequence cannot influence it (attention is causal).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rl::objective::{LossNorm, ObjectiveBatch};

/// One sequence to train on.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq {
    /// Prompt token ids (P ≥ 1).
    pub prompt: Vec<u32>,
    /// Completion token ids, the end token included when there is one.
    pub completion: Vec<u32>,
    /// Log-probs of the completion's tokens under the sampling policy; `None`: computed by a
    /// forward pass of the policy before the update (TRL's on-policy case).
    pub logp_old: Option<Vec<f32>>,
    /// The completion reached the length cap without an end token.
    pub truncated: bool,
    /// The sequence's advantage.
    pub advantage: f64,
}

/// The step's sequences as (S, T) host grids.
#[derive(Debug)]
pub struct Grid {
    /// Sequences.
    pub s: usize,
    /// Positions per sequence (the longest prompt + completion).
    pub t: usize,
    /// Token ids (S, T).
    pub ids: Vec<u32>,
    /// Next-token targets (S, T).
    pub targets: Vec<u32>,
    /// 1 where the loss counts (S, T).
    pub mask: Vec<f32>,
    /// Sampling-policy log-probs at the masked positions (S, T); filled by a policy pass when
    /// the sequences did not bring them.
    pub logp_old: Vec<f32>,
    /// Whether `logp_old` is complete (every sequence brought its log-probs).
    pub has_logp_old: bool,
    /// One advantage per sequence (S).
    pub adv: Vec<f32>,
}

impl Grid {
    /// Lays out `seqs`. Errors: no sequence, an empty prompt, a sequence longer than the
    /// model's `n_positions`, log-probs of the wrong length, a non-finite advantage.
    pub fn build(seqs: &[Seq], mask_truncated: bool, n_positions: usize) -> Result<Self> {
        let s = seqs.len();
        if s == 0 {
            return Err(Error::Invalid("no sequences to train on".into()));
        }
        let t = seqs.iter().map(|q| q.prompt.len() + q.completion.len()).max().unwrap_or(1).max(2);
        if t > n_positions {
            return Err(Error::Invalid(format!(
                "a prompt + completion of {t} tokens exceeds the model's n_positions {n_positions}"
            )));
        }
        let has_logp_old = seqs.iter().all(|q| q.logp_old.is_some());
        let mut g = Grid {
            s,
            t,
            ids: vec![0; s * t],
            targets: vec![0; s * t],
            mask: vec![0.0; s * t],
            logp_old: vec![0.0; s * t],
            has_logp_old,
            adv: Vec::with_capacity(s),
        };
        for (i, q) in seqs.iter().enumerate() {
            if q.prompt.is_empty() {
                return Err(Error::Invalid(format!("sequence {i} has an empty prompt")));
            }
            if !q.advantage.is_finite() {
                return Err(Error::Invalid(format!("sequence {i}: advantage {} is not finite", q.advantage)));
            }
            g.adv.push(q.advantage as f32);
            if let Some(lp) = &q.logp_old {
                if lp.len() != q.completion.len() {
                    return Err(Error::Invalid(format!(
                        "sequence {i}: {} old log-probs for {} completion tokens",
                        lp.len(),
                        q.completion.len()
                    )));
                }
            }
            let row = i * t;
            let (p, c) = (&q.prompt, &q.completion);
            let seq: Vec<u32> = p.iter().chain(c).copied().collect();
            g.ids[row..row + seq.len()].copy_from_slice(&seq);
            g.targets[row..row + seq.len() - 1].copy_from_slice(&seq[1..]);
            let counts = !(mask_truncated && q.truncated);
            for j in 0..c.len() {
                // Position P−1+j predicts completion token j.
                let at = row + p.len() - 1 + j;
                g.mask[at] = if counts { 1.0 } else { 0.0 };
                if let Some(lp) = &q.logp_old {
                    g.logp_old[at] = lp[j];
                }
            }
        }
        Ok(g)
    }

    /// Masked positions of sequences `r`.
    pub fn tokens(&self, r: std::ops::Range<usize>) -> f32 {
        self.mask[r.start * self.t..r.end * self.t].iter().sum()
    }

    /// Errors unless every token id is below `vocab_size`: the grid's ids go to the device
    /// once and feed the embedding unchecked from there.
    pub fn check_ids(&self, vocab_size: usize) -> Result<()> {
        match self.ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab_size) {
            Some((i, id)) => Err(Error::Invalid(format!(
                "sequence {}: token id {id} at position {} is out of range for vocab_size {vocab_size}",
                i / self.t,
                i % self.t
            ))),
            None => Ok(()),
        }
    }
}

/// One step's [`Grid`] on the backend, and one micro-batch's inputs: the buffers of the
/// update, kept by the trainer from step to step and resized within their capacity, so an
/// update uploads its grid once and allocates nothing once it has seen its largest shapes.
/// The old and reference log-probs are written here by forward passes on the device, never
/// downloaded.
pub struct GridBufs<K: Backend> {
    /// Token ids (S, T).
    pub ids: K::Ids,
    /// Next-token targets (S, T).
    pub targets: K::Ids,
    /// Loss mask (S, T).
    pub mask: K::Buf,
    /// Sampling-policy log-probs (S, T).
    pub logp_old: K::Buf,
    /// Reference log-probs (S, T), when the step has a KL term.
    pub logp_ref: K::Buf,
    /// Advantages (S).
    pub adv: K::Buf,
    /// One micro-batch's slice of each, (s, T) and (s): what the objective reads.
    pub micro: MicroBufs<K>,
}

/// The objective's per-token inputs for one micro-batch of s sequences, copied on the device
/// out of [`GridBufs`] into buffers sized for the largest micro-batch.
pub struct MicroBufs<K: Backend> {
    /// Targets (s, T).
    pub targets: K::Ids,
    /// Loss mask (s, T).
    pub mask: K::Buf,
    /// Old log-probs (s, T).
    pub logp_old: K::Buf,
    /// Reference log-probs (s, T).
    pub logp_ref: K::Buf,
    /// Advantages (s).
    pub adv: K::Buf,
}

impl<K: Backend> GridBufs<K> {
    /// Empty buffers; the first [`GridBufs::load`] sizes them.
    pub fn new(k: &K) -> Self {
        GridBufs {
            ids: k.upload_ids(&[]),
            targets: k.upload_ids(&[]),
            mask: k.alloc(0),
            logp_old: k.alloc(0),
            logp_ref: k.alloc(0),
            adv: k.alloc(0),
            micro: MicroBufs {
                targets: k.upload_ids(&[]),
                mask: k.alloc(0),
                logp_old: k.alloc(0),
                logp_ref: k.alloc(0),
                adv: k.alloc(0),
            },
        }
    }

    /// Writes `grid` in (one host-to-device copy per field; `logp_old` only when the sequences
    /// brought it, else a policy pass fills it). `logp_ref` is sized for the reference pass.
    pub fn load(&mut self, k: &K, grid: &Grid) {
        let n = grid.s * grid.t;
        k.resize_ids(&mut self.ids, n);
        k.write_ids(&mut self.ids, &grid.ids);
        k.resize_ids(&mut self.targets, n);
        k.write_ids(&mut self.targets, &grid.targets);
        for (buf, host) in [(&mut self.mask, &grid.mask), (&mut self.adv, &grid.adv)] {
            k.resize(buf, host.len());
            k.write(buf, host);
        }
        k.resize(&mut self.logp_old, n);
        if grid.has_logp_old {
            k.write(&mut self.logp_old, &grid.logp_old);
        }
        k.resize(&mut self.logp_ref, n);
    }

    /// Copies sequences `r` of the grid's targets (T per sequence) into `micro.targets`, for a
    /// log-prob pass.
    pub fn micro_targets(&mut self, k: &K, r: std::ops::Range<usize>, t: usize) {
        let n = r.len() * t;
        k.resize_ids(&mut self.micro.targets, n);
        k.copy_ids_range(&mut self.micro.targets, 0, &self.targets, r.start * t, n);
    }

    /// Copies sequences `r` of every objective input into [`GridBufs::micro`] (device to
    /// device), `logp_ref` only `with_ref`.
    pub fn load_micro(&mut self, k: &K, r: std::ops::Range<usize>, t: usize, with_ref: bool) {
        self.micro_targets(k, r.clone(), t);
        let (n, at) = (r.len() * t, r.start * t);
        let m = &mut self.micro;
        let mut pairs = vec![(&mut m.mask, &self.mask), (&mut m.logp_old, &self.logp_old)];
        if with_ref {
            pairs.push((&mut m.logp_ref, &self.logp_ref));
        }
        for (dst, src) in pairs {
            k.resize(dst, n);
            k.copy_range(dst, 0, src, at, n);
        }
        k.resize(&mut m.adv, r.len());
        k.copy_range(&mut m.adv, 0, &self.adv, r.start, r.len());
    }
}

impl<K: Backend> MicroBufs<K> {
    /// The objective's batch over `hidden` (s·T, C) and the lm_head `weight` (V, C), as
    /// [`GridBufs::load_micro`] left it.
    pub fn batch<'a>(
        &'a self,
        hidden: &'a K::Buf,
        weight: &'a K::Buf,
        with_ref: bool,
        (s, l, c, v): (usize, usize, usize, usize),
        norm: LossNorm,
    ) -> ObjectiveBatch<'a, K> {
        ObjectiveBatch {
            hidden,
            weight,
            targets: &self.targets,
            mask: &self.mask,
            advantages: &self.adv,
            logp_old: &self.logp_old,
            logp_ref: with_ref.then_some(&self.logp_ref),
            s,
            l,
            c,
            v,
            norm: Some(norm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_masks() {
        let seqs = vec![
            Seq {
                prompt: vec![1, 2],
                completion: vec![3, 0],
                logp_old: Some(vec![-0.5, -0.25]),
                truncated: false,
                advantage: 1.0,
            },
            Seq {
                prompt: vec![4],
                completion: vec![5, 6, 7],
                logp_old: Some(vec![-1.0; 3]),
                truncated: true,
                advantage: -1.0,
            },
        ];
        let g = Grid::build(&seqs, false, 8).unwrap();
        assert_eq!((g.s, g.t), (2, 4));
        assert_eq!(g.ids, vec![1, 2, 3, 0, 4, 5, 6, 7]);
        assert_eq!(g.targets, vec![2, 3, 0, 0, 5, 6, 7, 0]);
        assert_eq!(g.mask, vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(g.logp_old[1..3], [-0.5, -0.25]);
        let m = Grid::build(&seqs, true, 8).unwrap();
        assert_eq!(m.mask, vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "the truncated completion leaves the loss");
        assert_eq!(m.tokens(0..2), 2.0);
        assert!(Grid::build(&seqs, false, 3).unwrap_err().to_string().contains("n_positions"));
    }
}
