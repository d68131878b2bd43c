//! The shapes and small parameter groups the ops take, so that an op's signature is its
//! buffers plus one shape: llm.c's B, T, C, NH, V named once here instead of as loose `usize`
//! arguments at every layer (trait, CPU oracle, checked kernel op, launcher).
//!
//! The buffer groups ([`LnStats`], [`Affine`], [`KvBufs`], [`GrnParams`], [`GrnCausalStats`],
//! [`GrnSeqStats`], [`Masked`]) are generic over the handle `P`: `&B::Buf` or `&mut B::Buf` in
//! the op set, `&[f32]` in the CPU oracle's free functions, [`DevPtr`] in the launchers. One
//! struct then names the same tensors at every layer.
//!
//! [`DevPtr`]: crate::backend::launch::DevPtr

#[allow(unused_imports)] // for the doc links
use super::ops::{LayerNormOps, LogprobOps};

/// One matrix product `out (m,n) = op(a) · op(b)` in row-major storage, where `op(a)` is
/// (m,k) and `op(b)` is (k,n). With `trans_a` the buffer `a` holds (k,m); with `trans_b`
/// `b` holds (n,k). With `accumulate` the product is added to `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `out`.
    pub m: usize,
    /// Columns of `out`.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// `a` is stored transposed, (k,m).
    pub trans_a: bool,
    /// `b` is stored transposed, (n,k).
    pub trans_b: bool,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// `out (m,n) = a (m,k) · b (k,n)`, overwriting `out`.
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        Gemm { m, n, k, trans_a: false, trans_b: false, accumulate: false }
    }
    /// Same product with `b` stored as (n,k).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        Gemm { trans_b: true, ..Gemm::nn(m, n, k) }
    }
    /// Same product with `a` stored as (k,m).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        Gemm { trans_a: true, ..Gemm::nn(m, n, k) }
    }
    /// The same product, added into `out`.
    pub fn acc(self) -> Self {
        Gemm { accumulate: true, ..self }
    }
}

/// The per-call constants of one AdamW update (decoupled weight decay, bias correction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate for this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator's square root.
    pub eps: f32,
    /// Decoupled weight decay (0 for biases and norms).
    pub weight_decay: f32,
    /// 1-based step number, for bias correction.
    pub step: u64,
    /// Multiplies the gradient before use: global-norm clipping folded into the update.
    pub grad_scale: f32,
}

/// B sequences of T positions with C channels each: the (B,T,C) activations of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Btc {
    /// B: sequences.
    pub b: usize,
    /// T: positions per sequence.
    pub t: usize,
    /// C: channels.
    pub c: usize,
}

impl Btc {
    /// N = B·T rows.
    pub fn rows(&self) -> usize {
        self.b * self.t
    }
    /// B·T·C values.
    pub fn len(&self) -> usize {
        self.b * self.t * self.c
    }
    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// R independent rows of C channels: the rows of one KV-cached decoding call, each at its own
/// sequence and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsC {
    /// R: rows.
    pub rows: usize,
    /// C: channels.
    pub c: usize,
}

/// A layer norm over N rows of C channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormShape {
    /// N = B·T rows.
    pub n: usize,
    /// C: channels.
    pub c: usize,
    /// Added to the variance (the forward reads it; the backward uses the stored 1/std).
    pub eps: f32,
}

/// Causal multi-head self-attention over (B,T) with NH heads of C/NH channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// B: sequences.
    pub b: usize,
    /// T: positions per sequence.
    pub t: usize,
    /// NH: heads.
    pub nh: usize,
    /// C: channels (NH · head size).
    pub c: usize,
}

/// R new rows attending against a KV cache of T_max slots per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedShape {
    /// R: rows of this call.
    pub rows: usize,
    /// T_max: cache slots per sequence.
    pub t_max: usize,
    /// NH: heads.
    pub nh: usize,
    /// C: channels.
    pub c: usize,
}

/// Softmax cross-entropy over N rows of V logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyShape {
    /// N: rows.
    pub n: usize,
    /// V: vocabulary (row length).
    pub v: usize,
}

/// The shape of one decoding step of the causal GRN: R rows of C channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrnStepShape {
    /// R: rows.
    pub rows: usize,
    /// C: channels.
    pub c: usize,
    /// Added to the mean norm before dividing.
    pub eps: f32,
}

/// A layer norm's per-row statistics, stored by the forward for the backward: mean and
/// 1/std (N each).
#[derive(Debug)]
pub struct LnStats<P> {
    /// Row means (N).
    pub mean: P,
    /// Row 1/std (N).
    pub rstd: P,
}

/// A learned per-channel scale and shift (C each): a layer norm's weight and bias, or their
/// gradients.
#[derive(Debug)]
pub struct Affine<P> {
    /// Scale.
    pub w: P,
    /// Shift.
    pub b: P,
}

/// One layer's key and value caches, (B, T_max, C) each.
#[derive(Debug)]
pub struct KvBufs<P> {
    /// Keys.
    pub k: P,
    /// Values.
    pub v: P,
}

/// GRN's learned γ and β (C each), or their gradients.
#[derive(Debug)]
pub struct GrnParams<P> {
    /// γ, the scale of the normalised response.
    pub gamma: P,
    /// β, the shift.
    pub beta: P,
}

/// What the causal GRN forward stores for its backward: the prefix norms G (B,T,C) and their
/// channel means (B,T).
#[derive(Debug)]
pub struct GrnCausalStats<P> {
    /// Prefix norms G.
    pub g: P,
    /// Mean of G over channels, per position.
    pub mean: P,
}

/// What the sequence-wide GRN forward stores for its backward: the norms G (B,C), their
/// channel means (B) and the normalised response N = G / (mean + eps) (B,C).
#[derive(Debug)]
pub struct GrnSeqStats<P> {
    /// Masked norms G over each sequence.
    pub g: P,
    /// Mean of G over channels, per sequence.
    pub mean: P,
    /// The normalised response.
    pub n: P,
}

/// An input and its (B,T) mask, non-zero at real positions.
#[derive(Debug)]
pub struct Masked<P> {
    /// The input (B,T,C).
    pub x: P,
    /// The mask (B,T).
    pub mask: P,
}

// The groups are plain bundles of handles: copyable whenever the handle is (shared
// references, slices, device pointers), never for `&mut`; and `map` turns one kind of handle
// into another (`&mut Vec<f32>` into `&mut [f32]`, a buffer into its device pointer).
macro_rules! handle_group {
    ($($t:ident { $($f:ident),+ }),* $(,)?) => {$(
        impl<P: Copy> Clone for $t<P> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<P: Copy> Copy for $t<P> {}
        impl<P> $t<P> {
            /// The same group with `f` applied to every handle.
            pub fn map<Q>(self, mut f: impl FnMut(P) -> Q) -> $t<Q> {
                $t { $($f: f(self.$f)),+ }
            }
        }
    )*};
}
handle_group!(
    LnStats { mean, rstd },
    Affine { w, b },
    KvBufs { k, v },
    GrnParams { gamma, beta },
    GrnCausalStats { g, mean },
    GrnSeqStats { g, mean, n },
    Masked { x, mask },
);

/// The shape of a GRN call: B sequences of T positions and C channels, and the `eps` added
/// to the mean norm (see [`crate::backend::cpu::grn`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrnShape {
    /// B: sequences.
    pub b: usize,
    /// T: positions per sequence.
    pub t: usize,
    /// C: channels.
    pub c: usize,
    /// Added to the mean norm before dividing.
    pub eps: f32,
}

/// Which rows of the vocabulary-sized logits a [`LogprobOps::logprob_entropy_forward`] /
/// [`LogprobOps::logprob_entropy_backward`] call covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogprobChunk {
    /// Row `r` of the logits buffer is row `row0 + r` of the per-token buffers (targets,
    /// log-probs, entropies and their gradients).
    pub row0: usize,
    /// Rows processed: the first `rows · v` values of the logits buffer (it may be longer,
    /// e.g. a fixed-size chunk workspace holding a shorter last chunk).
    pub rows: usize,
    /// Vocabulary size (row length).
    pub v: usize,
    /// 1 / sampling temperature: the distribution is softmax(logits · inv_temperature).
    pub inv_temperature: f32,
}
