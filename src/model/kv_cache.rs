//! The key/value cache of batched generation, and the row-sized buffers its forward passes
//! reuse.
//!
//! A prefill or decode pass processes R rows, each one token of one sequence at its own
//! position: a prefill packs every prompt's tokens back to back (no padding, so no work is
//! spent on pad positions), a decode step has one row per unfinished sequence (finished
//! sequences drop out). Each layer's attention stores the rows' keys and values at
//! (sequence, position) and attends over the sequence's cached prefix.

use super::activations::{gemm_dtype, lnf_dtype};
use super::config::Gpt2Config;
use crate::backend::Backend;

/// Per-layer keys and values for B sequences of up to T_max positions, and how many
/// positions of each sequence are filled. Made by [`Gpt2::kv_cache`](super::Gpt2::kv_cache).
pub struct KvCache<K: Backend> {
    pub(crate) b: usize,
    pub(crate) t_max: usize,
    /// Keys per layer, (B, T_max, C).
    pub(crate) k: Vec<K::Buf>,
    /// Values per layer, (B, T_max, C).
    pub(crate) v: Vec<K::Buf>,
    /// Filled positions per sequence: the next token of sequence s goes to position `lens[s]`.
    pub(crate) lens: Vec<usize>,
    /// The policy GRN's running sums of squares per sequence and channel (B,C), beside the
    /// keys and values, when the model has a GRN: what makes decoding equal the full pass.
    pub(crate) grn_sumsq: Option<K::Buf>,
    pub(crate) scratch: Option<RowScratch<K>>,
}

impl<K: Backend> KvCache<K> {
    /// An empty cache (every sequence at length 0).
    pub(crate) fn new(k: &K, cfg: &Gpt2Config, b: usize, t_max: usize) -> Self {
        let per_layer = b * t_max * cfg.n_embd;
        KvCache {
            b,
            t_max,
            k: (0..cfg.n_layer).map(|_| k.alloc_as(per_layer, gemm_dtype(k))).collect(),
            v: (0..cfg.n_layer).map(|_| k.alloc_as(per_layer, gemm_dtype(k))).collect(),
            lens: vec![0; b],
            grn_sumsq: super::params::policy_grn(cfg).map(|_| k.alloc(b * cfg.n_embd)),
            scratch: None,
        }
    }

    /// B: the number of sequences.
    pub fn batch(&self) -> usize {
        self.b
    }

    /// T_max: positions per sequence.
    pub fn capacity(&self) -> usize {
        self.t_max
    }

    /// Filled positions of sequence `s` (its prompt plus the tokens fed so far).
    pub fn len(&self, s: usize) -> usize {
        self.lens[s]
    }

    /// True when no sequence has any position filled.
    pub fn is_empty(&self) -> bool {
        self.lens.iter().all(|&l| l == 0)
    }

    /// The buffers for a pass of `rows` rows that returns logits for `out_rows` of them,
    /// resized within the capacity of the most rows seen: a prefill's packed prompt tokens
    /// size them, and every decode step (one row per unfinished sequence) reuses them without
    /// allocating.
    pub(crate) fn scratch(&mut self, k: &K, cfg: &Gpt2Config, rows: usize, out_rows: usize) -> &mut RowScratch<K> {
        match self.scratch.as_mut() {
            Some(s) => s.resize(k, cfg, rows, out_rows),
            None => self.scratch = Some(RowScratch::new(k, cfg, rows, out_rows)),
        }
        self.scratch.as_mut().expect("allocated above")
    }

    /// Empties the cache for B sequences of up to T_max positions, reusing its buffers (an
    /// allocation only past their capacity). Stale keys and values are never read: a
    /// position is attended to only after a prefill or decode step has stored it.
    pub(crate) fn reshape(&mut self, k: &K, cfg: &Gpt2Config, b: usize, t_max: usize) {
        let per_layer = b * t_max * cfg.n_embd;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            k.resize(buf, per_layer);
        }
        if let Some(sums) = self.grn_sumsq.as_mut() {
            k.resize(sums, b * cfg.n_embd);
        }
        (self.b, self.t_max) = (b, t_max);
        self.lens.clear();
        self.lens.resize(b, 0);
    }
}

/// The activations of one cached pass over R rows. Nothing is kept for a backward pass, so
/// one set of buffers serves every layer.
pub(crate) struct RowScratch<K: Backend> {
    /// R.
    pub rows: usize,
    /// S: rows whose logits are wanted.
    pub out_rows: usize,
    /// Token ids (R).
    pub ids: K::Ids,
    /// Cache sequence of each row (R).
    pub seq: K::Ids,
    /// Position of each row (R).
    pub pos: K::Ids,
    /// The residual stream (R,C), updated in place layer by layer.
    pub x: K::Buf,
    /// Layer-norm output of the blocks (R,C), a GEMM's input.
    pub ln: K::Buf,
    /// ln_f's output (R,C): the lm_head's input, or the policy GRN's (f32) input.
    pub lnf: K::Buf,
    /// Layer-norm row statistics (R), required by the op, unused here.
    pub mean: K::Buf,
    /// Layer-norm row 1/std (R).
    pub rstd: K::Buf,
    /// c_attn output (R,3C).
    pub qkv: K::Buf,
    /// Attention output before c_proj (R,C).
    pub atty: K::Buf,
    /// c_fc output (R,4C).
    pub fch: K::Buf,
    /// GELU output (R,4C).
    pub fch_gelu: K::Buf,
    /// The policy GRN's output (R,C); empty without a GRN.
    pub grn: K::Buf,
    /// The final hidden state of the wanted rows (S,C).
    pub sel: K::Buf,
    /// Their logits (S,V).
    pub logits: K::Buf,
}

impl<K: Backend> RowScratch<K> {
    /// Moves every buffer to `rows` rows (`out_rows` of logits), within capacity when they
    /// are no more than the most seen.
    fn resize(&mut self, k: &K, cfg: &Gpt2Config, rows: usize, out_rows: usize) {
        if (self.rows, self.out_rows) == (rows, out_rows) {
            return;
        }
        let (r, c) = (rows, cfg.n_embd);
        for ids in [&mut self.ids, &mut self.seq, &mut self.pos] {
            k.resize_ids(ids, r);
        }
        let grn = if super::params::policy_grn(cfg).is_some() { r * c } else { 0 };
        for (buf, len) in [
            (&mut self.x, r * c),
            (&mut self.ln, r * c),
            (&mut self.lnf, r * c),
            (&mut self.mean, r),
            (&mut self.rstd, r),
            (&mut self.qkv, r * 3 * c),
            (&mut self.atty, r * c),
            (&mut self.fch, r * 4 * c),
            (&mut self.fch_gelu, r * 4 * c),
            (&mut self.grn, grn),
            (&mut self.sel, out_rows * c),
            (&mut self.logits, out_rows * cfg.vocab_size),
        ] {
            k.resize(buf, len);
        }
        (self.rows, self.out_rows) = (rows, out_rows);
    }

    /// Buffers for `rows` rows (`out_rows` of logits): made empty, then sized by
    /// [`RowScratch::resize`], the one place that knows each buffer's length.
    fn new(k: &K, cfg: &Gpt2Config, rows: usize, out_rows: usize) -> Self {
        let mut s = RowScratch {
            rows: 0,
            out_rows: 0,
            ids: k.upload_ids(&[]),
            seq: k.upload_ids(&[]),
            pos: k.upload_ids(&[]),
            x: k.alloc(0),
            ln: k.alloc_as(0, gemm_dtype(k)),
            lnf: k.alloc_as(0, lnf_dtype(k, cfg)),
            mean: k.alloc(0),
            rstd: k.alloc(0),
            qkv: k.alloc_as(0, gemm_dtype(k)),
            atty: k.alloc_as(0, gemm_dtype(k)),
            fch: k.alloc_as(0, gemm_dtype(k)),
            fch_gelu: k.alloc_as(0, gemm_dtype(k)),
            grn: k.alloc(0),
            sel: k.alloc_as(0, lnf_dtype(k, cfg)),
            logits: k.alloc(0),
        };
        s.resize(k, cfg, rows, out_rows);
        s
    }
}
