//! The op set every model and loss is written against, and its implementations.
//!
//! Ops take buffers plus shapes, never host slices, so a device backend keeps the hot path on
//! the device; host data crosses only at [`Backend::upload`] / [`Backend::download`]. Shapes use
//! llm.c's names: B batch, T time, C channels, NH heads, V vocabulary, N = B·T rows.
//!
//! Conventions that every implementation follows:
//! - Parameter gradients are **accumulated** (`+=`), so several micro-batches can add into
//!   them before one optimizer step; the model zeroes them explicitly.
//! - Activation gradients are **overwritten** unless the op says otherwise (layernorm's
//!   `dinp` accumulates because it is the residual stream's gradient).

pub mod cpu;

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

/// The op set. `Buf` holds f32 values, `Ids` token ids; both live wherever the backend
/// computes.
pub trait Backend: Clone + Send + Sync {
    /// An f32 buffer owned by the backend.
    type Buf: Send + Sync;
    /// A buffer of u32 token ids.
    type Ids: Send + Sync;

    /// A short human-readable name ("cpu (2 threads)").
    fn name(&self) -> String;

    // ---- memory ----------------------------------------------------------------------

    /// A zero-filled buffer of `len` values.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A buffer holding a copy of `host`.
    fn upload(&self, host: &[f32]) -> Self::Buf;
    /// Copies `host` into an existing buffer of the same length.
    fn write(&self, buf: &mut Self::Buf, host: &[f32]);
    /// A host copy of the buffer.
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Number of values in the buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// A buffer holding a copy of `ids`.
    fn upload_ids(&self, ids: &[u32]) -> Self::Ids;
    /// Copies `ids` into an existing id buffer of the same length.
    fn write_ids(&self, buf: &mut Self::Ids, ids: &[u32]);
    /// Sets every value to zero.
    fn zero(&self, buf: &mut Self::Buf);
    /// `dst = src` (same length).
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);

    // ---- linear algebra --------------------------------------------------------------

    /// `out = op(a) · op(b) (+ bias broadcast over rows) (+ out if accumulating)`; see
    /// [`Gemm`]. `bias` has `n` values.
    fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: Option<&Self::Buf>, g: Gemm);
    /// `dbias (cols) += Σ_rows dout (rows, cols)`.
    fn bias_backward(&self, dbias: &mut Self::Buf, dout: &Self::Buf, rows: usize, cols: usize);

    // ---- GPT-2 layers ----------------------------------------------------------------

    /// `out (B,T,C) = wte[ids (B,T)] + wpe[t]`.
    fn encoder_forward(
        &self,
        out: &mut Self::Buf,
        ids: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
    );
    /// `dwte[ids] += dout`, `dwpe[t] += Σ_b dout`.
    fn encoder_backward(
        &self,
        dwte: &mut Self::Buf,
        dwpe: &mut Self::Buf,
        dout: &Self::Buf,
        ids: &Self::Ids,
        b: usize,
        t: usize,
        c: usize,
    );
    /// Row-wise layer norm of `inp (N,C)`; also stores each row's mean and 1/std (N) for
    /// the backward pass.
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        n: usize,
        c: usize,
        eps: f32,
    );
    /// Accumulates into `dinp (N,C)`, `dw (C)` and `dbias (C)`.
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        dbias: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    );
    /// Causal multi-head self-attention. `qkv (B,T,3C)` holds q, k, v side by side (HF's
    /// `c_attn` layout); `out (B,T,C)`; `lse (B,NH,T)` keeps each softmax row's log-sum-exp
    /// so the backward pass recomputes probabilities instead of storing the (T,T) matrix.
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        qkv: &Self::Buf,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    );
    /// Overwrites `dqkv (B,T,3C)` from `dout (B,T,C)`.
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    );
    /// GPT-2's tanh-approximated GELU, elementwise.
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf);
    /// In place: `d = d · gelu'(inp)`.
    fn gelu_backward(&self, d: &mut Self::Buf, inp: &Self::Buf);

    // ---- losses ------------------------------------------------------------------------

    /// Weighted softmax cross-entropy over `logits (N,V)`: `losses[i] = w[i] · (−log softmax(logits[i])[targets[i]])`.
    /// With `backward`, `logits` is overwritten by its gradient `w[i] · (softmax − onehot)`
    /// (the (N,V) probabilities are never stored separately); without, it is left as is.
    fn cross_entropy(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        n: usize,
        v: usize,
        backward: bool,
    );

    // ---- optimisation ------------------------------------------------------------------

    /// One AdamW update of `param` from `grad`, moments `m` and `v` (all the same length).
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: AdamWStep);
    /// `sqrt(Σ_buffers Σ x²)`, the global gradient norm.
    fn global_norm(&self, bufs: &[&Self::Buf]) -> f32;
    /// `buf *= alpha`.
    fn scale(&self, buf: &mut Self::Buf, alpha: f32);
}
