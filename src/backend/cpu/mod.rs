//! The CPU backend: f32 everywhere, multi-threaded with rayon, matmuls through `gemm`.
//!
//! It is the numerical oracle the CUDA kernels are checked against, so each op is written to
//! be read next to its equation (one file per op family). Reductions use fixed blocking, so
//! for a given thread count results are bit-for-bit reproducible.

mod attention;
mod cross_entropy;
mod encoder;
mod fastmath;
mod gelu;
mod generation;
mod layernorm;
mod logprob;
pub(crate) mod matmul;
mod optim;
mod policy_loss;

pub(crate) use policy_loss::vespo_phi;

use crate::backend::{check_logprob_chunk, check_sample_rows, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use crate::backend::{AdamWStep, Backend, Gemm, GrnShape, SampleError, SampleParams, Sampled};
use crate::model::grn;
use std::sync::Arc;

/// The CPU backend. Cloning shares the thread pool.
#[derive(Clone)]
pub struct CpuBackend {
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new(None)
    }
}

impl CpuBackend {
    /// A backend with its own pool of `threads` workers (default: all cores).
    pub fn new(threads: Option<usize>) -> Self {
        let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("dapo-cpu-{i}"))
            .build()
            .expect("building a rayon pool only fails if threads cannot be spawned");
        CpuBackend { pool: Arc::new(pool) }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) {
        buf.copy_from_slice(host);
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn upload_ids(&self, ids: &[u32]) -> Vec<u32> {
        ids.to_vec()
    }
    fn write_ids(&self, buf: &mut Vec<u32>, ids: &[u32]) {
        buf.copy_from_slice(ids);
    }
    fn zero(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }
    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.copy_from_slice(src);
    }

    fn matmul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, bias: Option<&Vec<f32>>, g: Gemm) {
        self.run(|| matmul::matmul(out, a, b, bias.map(|v| v.as_slice()), g));
    }
    fn bias_backward(&self, dbias: &mut Vec<f32>, dout: &Vec<f32>, rows: usize, cols: usize) {
        debug_assert_eq!(dout.len(), rows * cols);
        self.run(|| optim::bias_backward(dbias, dout, cols));
    }

    fn encoder_forward(
        &self,
        out: &mut Vec<f32>,
        ids: &Vec<u32>,
        wte: &Vec<f32>,
        wpe: &Vec<f32>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        debug_assert_eq!(out.len(), b * t * c);
        self.run(|| encoder::encoder_forward(out, ids, wte, wpe, t, c));
    }
    fn encoder_backward(
        &self,
        dwte: &mut Vec<f32>,
        dwpe: &mut Vec<f32>,
        dout: &Vec<f32>,
        ids: &Vec<u32>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        debug_assert_eq!(dout.len(), b * t * c);
        self.run(|| encoder::encoder_backward(dwte, dwpe, dout, ids, t, c));
    }
    fn layernorm_forward(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        inp: &Vec<f32>,
        w: &Vec<f32>,
        bias: &Vec<f32>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        debug_assert_eq!(inp.len(), n * c);
        self.run(|| layernorm::layernorm_forward(out, mean, rstd, inp, w, bias, c, eps));
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Vec<f32>,
        dw: &mut Vec<f32>,
        dbias: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        w: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        n: usize,
        c: usize,
    ) {
        debug_assert_eq!(inp.len(), n * c);
        self.run(|| layernorm::layernorm_backward(dinp, dw, dbias, dout, inp, w, mean, rstd, c));
    }
    fn attention_forward(
        &self,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        qkv: &Vec<f32>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        assert!(
            out.len() == b * t * c && lse.len() == b * nh * t && qkv.len() == 3 * b * t * c && c % nh == 0,
            "attention_forward: buffer sizes do not match B={b} T={t} NH={nh} C={c}"
        );
        self.run(|| attention::attention_forward(out, lse, qkv, t, nh, c));
    }
    fn attention_backward(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        qkv: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        assert!(
            dqkv.len() == 3 * b * t * c
                && dout.len() == b * t * c
                && out.len() == b * t * c
                && lse.len() == b * nh * t
                && qkv.len() == 3 * b * t * c
                && c % nh == 0,
            "attention_backward: buffer sizes do not match B={b} T={t} NH={nh} C={c}"
        );
        self.run(|| attention::attention_backward(dqkv, dout, qkv, out, lse, b, t, nh, c));
    }
    fn encoder_forward_at(
        &self,
        out: &mut Vec<f32>,
        ids: &Vec<u32>,
        pos: &Vec<u32>,
        wte: &Vec<f32>,
        wpe: &Vec<f32>,
        rows: usize,
        c: usize,
    ) {
        assert!(
            out.len() == rows * c
                && ids.len() == rows
                && pos.len() == rows
                && ids.iter().all(|&i| (i as usize + 1) * c <= wte.len())
                && pos.iter().all(|&p| (p as usize + 1) * c <= wpe.len()),
            "encoder_forward_at: buffer sizes, ids or positions do not match R={rows} C={c}"
        );
        self.run(|| generation::encoder_forward_at(out, ids, pos, wte, wpe, c));
    }
    fn attention_cached(
        &self,
        out: &mut Vec<f32>,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        qkv: &Vec<f32>,
        seq: &Vec<u32>,
        pos: &Vec<u32>,
        rows: usize,
        t_max: usize,
        nh: usize,
        c: usize,
    ) {
        let b = k_cache.len().checked_div(t_max * c).unwrap_or(0);
        assert!(
            nh > 0
                && c % nh == 0
                && out.len() == rows * c
                && qkv.len() == rows * 3 * c
                && seq.len() == rows
                && pos.len() == rows
                && k_cache.len() == b * t_max * c
                && v_cache.len() == k_cache.len()
                && seq.iter().zip(pos).all(|(&s, &p)| (s as usize) < b && (p as usize) < t_max),
            "attention_cached: buffer sizes, sequences or positions do not match R={rows} T_max={t_max} NH={nh} C={c}"
        );
        self.run(|| generation::attention_cached(out, k_cache, v_cache, qkv, seq, pos, t_max, nh, c));
    }
    fn gelu_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>) {
        self.run(|| gelu::gelu_forward(out, inp));
    }
    fn gelu_backward(&self, d: &mut Vec<f32>, inp: &Vec<f32>) {
        self.run(|| gelu::gelu_backward(d, inp));
    }
    fn grn_causal_forward(
        &self,
        out: &mut Vec<f32>,
        g: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: GrnShape,
    ) {
        self.run(|| grn::grn_causal_forward(out, g, mean, x, gamma, beta, s.b, s.t, s.c, s.eps));
    }
    fn grn_causal_backward(
        &self,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        g: &Vec<f32>,
        mean: &Vec<f32>,
        s: GrnShape,
    ) {
        self.run(|| grn::grn_causal_backward(dx, dgamma, dbeta, dy, x, gamma, g, mean, s.b, s.t, s.c, s.eps));
    }
    fn grn_causal_step(
        &self,
        out: &mut Vec<f32>,
        sumsq: &mut Vec<f32>,
        x: &Vec<f32>,
        seq: &Vec<u32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        rows: usize,
        c: usize,
        eps: f32,
    ) {
        grn::grn_causal_step(out, sumsq, x, seq, gamma, beta, rows, c, eps);
    }
    fn grn_sequence_forward(
        &self,
        out: &mut Vec<f32>,
        g: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        n: &mut Vec<f32>,
        x: &Vec<f32>,
        mask: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: GrnShape,
    ) {
        self.run(|| grn::grn_forward(out, g, mean, n, x, mask, gamma, beta, s.b, s.t, s.c, s.eps));
    }
    fn grn_sequence_backward(
        &self,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        mask: &Vec<f32>,
        gamma: &Vec<f32>,
        g: &Vec<f32>,
        mean: &Vec<f32>,
        n: &Vec<f32>,
        s: GrnShape,
    ) {
        self.run(|| grn::grn_backward(dx, dgamma, dbeta, dy, x, mask, gamma, g, mean, n, s.b, s.t, s.c, s.eps));
    }

    fn cross_entropy(
        &self,
        logits: &mut Vec<f32>,
        losses: &mut Vec<f32>,
        targets: &Vec<u32>,
        weights: &Vec<f32>,
        n: usize,
        v: usize,
        backward: bool,
    ) {
        assert!(
            logits.len() == n * v && losses.len() == n && targets.len() == n && weights.len() == n,
            "cross_entropy: buffer sizes do not match N={n} V={v}"
        );
        self.run(|| cross_entropy::cross_entropy(logits, losses, targets, weights, v, backward));
    }
    fn adamw(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, h: AdamWStep) {
        self.run(|| optim::adamw(param, grad, m, v, h));
    }
    fn global_norm(&self, bufs: &[&Vec<f32>]) -> f32 {
        self.run(|| bufs.iter().map(|b| optim::sum_squares(b)).sum::<f64>().sqrt() as f32)
    }
    fn scale(&self, buf: &mut Vec<f32>, alpha: f32) {
        self.run(|| optim::scale(buf, alpha));
    }
    // ---- RL objective (additions) --------------------------------------------------------

    fn ids_len(&self, ids: &Vec<u32>) -> usize {
        ids.len()
    }
    fn copy_range(&self, dst: &mut Vec<f32>, dst_offset: usize, src: &Vec<f32>, src_offset: usize, len: usize) {
        assert!(
            dst_offset + len <= dst.len() && src_offset + len <= src.len(),
            "copy_range: [{src_offset}, +{len}) of {} values into [{dst_offset}, +{len}) of {}",
            src.len(),
            dst.len()
        );
        dst[dst_offset..dst_offset + len].copy_from_slice(&src[src_offset..src_offset + len]);
    }
    fn logprob_entropy_forward(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        logp: &mut Vec<f32>,
        entropy: &mut Vec<f32>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_forward", chunk, logits.len(), targets.len(), [logp.len(), entropy.len()]);
        self.run(|| logprob::forward(logits, targets, logp, entropy, chunk));
    }
    fn logprob_entropy_backward(
        &self,
        logits: &mut Vec<f32>,
        targets: &Vec<u32>,
        dlogp: &Vec<f32>,
        dentropy: &Vec<f32>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk(
            "logprob_entropy_backward",
            chunk,
            logits.len(),
            targets.len(),
            [dlogp.len(), dentropy.len()],
        );
        self.run(|| logprob::backward(logits, targets, dlogp, dentropy, chunk));
    }
    fn policy_loss(
        &self,
        dlogp: &mut Vec<f32>,
        dentropy: &mut Vec<f32>,
        metrics: &mut Vec<f32>,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    ) {
        let sl = params.s * params.l;
        let PolicyLossInputs { logp, logp_old, logp_ref, advantages, entropy, mask } = inputs;
        assert!(
            params.l > 0
                && [dlogp.len(), dentropy.len(), logp.len(), logp_old.len(), entropy.len(), mask.len()]
                    .iter()
                    .all(|&n| n == sl)
                && logp_ref.map_or(true, |r| r.len() == sl)
                && advantages.len() == params.s
                && metrics.len() == crate::backend::policy_metric::LEN,
            "policy_loss: buffer sizes do not match S={} L={}",
            params.s,
            params.l
        );
        let x =
            policy_loss::Inputs { logp, logp_old, logp_ref: logp_ref.map(|r| r.as_slice()), advantages, entropy, mask };
        self.run(|| policy_loss::policy_loss(dlogp, dentropy, metrics, x, params));
    }

    fn sample(
        &self,
        logits: &Vec<f32>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>> {
        check_sample_rows(logits.len(), counters.len(), v);
        self.run(|| sample_rows(logits, v, counters, p))
    }
}

/// Row by row with `rollout::sampler`, the oracle of every backend's `sample`.
fn sample_rows(logits: &[f32], v: usize, counters: &[[u32; 2]], p: SampleParams) -> Vec<Result<Sampled, SampleError>> {
    use rayon::prelude::*;
    logits
        .par_chunks(v)
        .zip(counters.par_iter())
        .map(|(row, &[seq, pos])| {
            let u = crate::util::counter_rng::uniform(p.seed, p.step, seq, pos);
            crate::rollout::sampler::sample(row, &p, u)
        })
        .collect()
}
