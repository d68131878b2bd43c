//! Activation and activation-gradient buffers, sized once for the largest (B, T) and reused
//! for every smaller shape ([`MemoryOps::resize`] within capacity), so the hot path does not
//! allocate: llm.c's discipline, with the short last micro-batch and a step's varying sequence
//! length served by the same buffers.

use super::config::Gpt2Config;
use crate::backend::{Backend, Dtype};

/// How the activations a GEMM reads or writes are stored on `k`: bf16 in bf16 mixed precision,
/// else f32. The residual stream, statistics, logits and losses stay f32 regardless.
pub fn gemm_dtype<K: Backend>(k: &K) -> Dtype {
    k.precision().dtype
}

/// The storage of ln_f's output: the lm_head's input (a GEMM operand) without a policy GRN,
/// the GRN's f32 input with one.
pub fn lnf_dtype<K: Backend>(k: &K, cfg: &Gpt2Config) -> Dtype {
    if super::params::policy_grn(cfg).is_some() {
        Dtype::F32
    } else {
        gemm_dtype(k)
    }
}

/// What one transformer block keeps from its forward pass for the backward pass.
pub struct BlockActs<K: Backend> {
    /// ln_1 output (B,T,C).
    pub ln1: K::Buf,
    /// ln_1 row means (B·T).
    pub ln1_mean: K::Buf,
    /// ln_1 row 1/std (B·T).
    pub ln1_rstd: K::Buf,
    /// c_attn output (B,T,3C).
    pub qkv: K::Buf,
    /// Attention output before c_proj (B,T,C).
    pub atty: K::Buf,
    /// Attention softmax log-sum-exp (B,NH,T).
    pub lse: K::Buf,
    /// Residual stream after attention (B,T,C).
    pub res2: K::Buf,
    /// ln_2 output (B,T,C).
    pub ln2: K::Buf,
    /// ln_2 row means (B·T).
    pub ln2_mean: K::Buf,
    /// ln_2 row 1/std (B·T).
    pub ln2_rstd: K::Buf,
    /// c_fc output, GELU input (B,T,4C).
    pub fch: K::Buf,
    /// GELU output (B,T,4C).
    pub fch_gelu: K::Buf,
    /// Residual stream after the MLP: the block's output (B,T,C).
    pub res3: K::Buf,
}

/// Buffers for the backward pass (allocated only when a model is trained).
pub struct GradScratch<K: Backend> {
    /// Gradient of the residual stream (B,T,C).
    pub dres: K::Buf,
    /// A (B,T,C) scratch gradient.
    pub dbtc: K::Buf,
    /// Gradient of qkv (B,T,3C).
    pub dqkv: K::Buf,
    /// Gradient of the MLP's hidden layer (B,T,4C).
    pub d4c: K::Buf,
    /// Gradient of ln_f's output through the policy GRN (B,T,C); empty without a GRN.
    pub dgrn: K::Buf,
}

/// What the policy head's causal GRN keeps from its forward pass.
pub struct GrnActs<K: Backend> {
    /// Its output, the lm_head's input (B,T,C).
    pub out: K::Buf,
    /// Prefix norms G (B,T,C).
    pub g: K::Buf,
    /// Their channel means (B·T).
    pub mean: K::Buf,
}

/// Every activation of one forward pass at one (B, T); [`Activations::reshape`] moves them to
/// another without allocating when it is no larger than the largest seen.
pub struct Activations<K: Backend> {
    /// B.
    pub b: usize,
    /// T.
    pub t: usize,
    /// Input token ids (B,T).
    pub ids: K::Ids,
    /// Target token ids (B,T).
    pub targets: K::Ids,
    /// Per-token loss weights (B,T).
    pub weights: K::Buf,
    /// Embeddings (B,T,C).
    pub encoded: K::Buf,
    /// Per-block activations.
    pub blocks: Vec<BlockActs<K>>,
    /// ln_f output (B,T,C).
    pub lnf: K::Buf,
    /// ln_f row means (B·T).
    pub lnf_mean: K::Buf,
    /// ln_f row 1/std (B·T).
    pub lnf_rstd: K::Buf,
    /// The policy GRN's activations, when the model has one.
    pub grn: Option<GrnActs<K>>,
    /// Logits (B,T,V); overwritten by their gradient in the fused loss. Sized by a full forward
    /// pass ([`Activations::ensure_logits`]), empty otherwise: passes that stop at the hidden
    /// state (the RL objective computes logits in row chunks) never need the (B,T,V) buffer.
    pub logits: K::Buf,
    /// Per-token weighted losses (B·T).
    pub losses: K::Buf,
    /// Backward-pass buffers, once the model has been trained at this shape.
    pub grad: Option<GradScratch<K>>,
}

/// The lm_head's input from the two fields it depends on (so a pass can borrow it beside
/// other fields of [`Activations`] it writes): the GRN's output, or `lnf` without a GRN.
pub fn head_input<'a, K: Backend>(grn: &'a Option<GrnActs<K>>, lnf: &'a K::Buf) -> &'a K::Buf {
    grn.as_ref().map_or(lnf, |g| &g.out)
}

impl<K: Backend> Activations<K> {
    /// Every forward buffer for (B, T): made empty, then sized by [`Activations::reshape`],
    /// the one place that knows each buffer's length.
    pub fn new(k: &K, cfg: &Gpt2Config, b: usize, t: usize) -> Self {
        let mm = gemm_dtype(k);
        let blocks = (0..cfg.n_layer)
            .map(|_| BlockActs {
                ln1: k.alloc_as(0, mm),
                ln1_mean: k.alloc(0),
                ln1_rstd: k.alloc(0),
                qkv: k.alloc_as(0, mm),
                atty: k.alloc_as(0, mm),
                lse: k.alloc(0),
                res2: k.alloc(0),
                ln2: k.alloc_as(0, mm),
                ln2_mean: k.alloc(0),
                ln2_rstd: k.alloc(0),
                fch: k.alloc_as(0, mm),
                fch_gelu: k.alloc_as(0, mm),
                res3: k.alloc(0),
            })
            .collect();
        let mut a = Activations {
            b: 0,
            t: 0,
            ids: k.upload_ids(&[]),
            targets: k.upload_ids(&[]),
            weights: k.alloc(0),
            encoded: k.alloc(0),
            blocks,
            lnf: k.alloc_as(0, lnf_dtype(k, cfg)),
            lnf_mean: k.alloc(0),
            lnf_rstd: k.alloc(0),
            grn: super::params::policy_grn(cfg).map(|_| GrnActs { out: k.alloc(0), g: k.alloc(0), mean: k.alloc(0) }),
            logits: k.alloc(0),
            losses: k.alloc(0),
            grad: None,
        };
        a.reshape(k, cfg, b, t);
        a
    }

    /// Moves every buffer to (B, T): no allocation unless B·T exceeds the largest B·T these
    /// buffers held (then only the buffers that grow are reallocated). The logits become empty
    /// until the next [`Activations::ensure_logits`]; their capacity stays. Values are
    /// overwritten by the next pass (the ids by the caller).
    pub fn reshape(&mut self, k: &K, cfg: &Gpt2Config, b: usize, t: usize) {
        if (self.b, self.t) == (b, t) {
            return;
        }
        let (n, c, nh) = (b * t, cfg.n_embd, cfg.n_head);
        for x in &mut self.blocks {
            for (buf, len) in [
                (&mut x.ln1, n * c),
                (&mut x.ln1_mean, n),
                (&mut x.ln1_rstd, n),
                (&mut x.qkv, n * 3 * c),
                (&mut x.atty, n * c),
                (&mut x.lse, b * nh * t),
                (&mut x.res2, n * c),
                (&mut x.ln2, n * c),
                (&mut x.ln2_mean, n),
                (&mut x.ln2_rstd, n),
                (&mut x.fch, n * 4 * c),
                (&mut x.fch_gelu, n * 4 * c),
                (&mut x.res3, n * c),
            ] {
                k.resize(buf, len);
            }
        }
        k.resize_ids(&mut self.ids, n);
        k.resize_ids(&mut self.targets, n);
        for (buf, len) in [
            (&mut self.weights, n),
            (&mut self.encoded, n * c),
            (&mut self.lnf, n * c),
            (&mut self.lnf_mean, n),
            (&mut self.lnf_rstd, n),
            (&mut self.logits, 0),
            (&mut self.losses, n),
        ] {
            k.resize(buf, len);
        }
        if let Some(g) = self.grn.as_mut() {
            k.resize(&mut g.out, n * c);
            k.resize(&mut g.g, n * c);
            k.resize(&mut g.mean, n);
        }
        (self.b, self.t) = (b, t);
        if let Some(s) = self.grad.as_mut() {
            s.resize(k, n, c, self.grn.is_some());
        }
    }

    /// The lm_head's input (B,T,C): the policy GRN's output, or ln_f's without a GRN.
    pub fn head_input(&self) -> &K::Buf {
        head_input(&self.grn, &self.lnf)
    }

    /// Sizes the (B,T,V) logits buffer (allocating only past its capacity).
    pub fn ensure_logits(&mut self, k: &K, cfg: &Gpt2Config) {
        k.resize(&mut self.logits, self.b * self.t * cfg.vocab_size);
    }

    /// Allocates the backward buffers the first time a pass needs them; they follow every
    /// later [`Activations::reshape`].
    pub fn ensure_grad(&mut self, k: &K, cfg: &Gpt2Config) {
        if self.grad.is_none() {
            // Made empty, then sized by GradScratch::resize (the one home of the lengths).
            // The gradients of GEMM-facing activations (q/k/v, the MLP's hidden layer) are
            // stored like the activations; the residual stream's and the layer norms' stay f32.
            let mm = gemm_dtype(k);
            let mut s = GradScratch {
                dres: k.alloc(0),
                dbtc: k.alloc(0),
                dqkv: k.alloc_as(0, mm),
                d4c: k.alloc_as(0, mm),
                dgrn: k.alloc(0),
            };
            s.resize(k, self.b * self.t, cfg.n_embd, self.grn.is_some());
            self.grad = Some(s);
        }
    }
}

impl<K: Backend> GradScratch<K> {
    /// Moves the buffers to N = B·T rows of C channels.
    fn resize(&mut self, k: &K, n: usize, c: usize, grn: bool) {
        k.resize(&mut self.dres, n * c);
        k.resize(&mut self.dbtc, n * c);
        k.resize(&mut self.dqkv, n * 3 * c);
        k.resize(&mut self.d4c, n * 4 * c);
        k.resize(&mut self.dgrn, if grn { n * c } else { 0 });
    }
}
