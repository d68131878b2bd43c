//! [`Backend`] on any [`Device`]: the ops that have a kernel in `kernels/*.cu` go through the
//! launch wrappers of [`crate::backend::kernels`], matmuls through the device's GEMM (cuBLASLt
//! on a GPU). The same code serves the real GPU ([`crate::backend::cuda::CudaBackend`]) and the
//! emulator ([`EmuBackend`]), so CI executes it.
//!
//! Every op of the set has a kernel: memory, `matmul`, the fused log-prob + entropy
//! forward/backward and the clipped-ratio policy loss (here), GRN and group advantages (as
//! inherent methods, outside the op set), and the GPT-2 layer ops by family: embeddings, GELU,
//! bias gradients, AdamW, norms ([`basic`]); layer norm and cross-entropy ([`norm`]); causal and
//! KV-cache attention ([`attention`]); token sampling ([`sampling`]).
//!
//! The op set is infallible (the CPU cannot fail mid-op), so a device failure (out of memory,
//! a launch error) panics with the op, its shapes and the device's error; size mismatches are
//! caught before anything is launched, as on the CPU backend.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod attention;
mod basic;
mod grn;
mod norm;
mod sampling;

use super::device::Device;
use super::emu::EmuDevice;
use super::kernels::{advantage, logprob, policy_loss, DevPtr};
use super::{
    check_logprob_chunk, AdamWStep, Backend, Gemm, GrnShape, LogprobChunk, PolicyLossInputs, PolicyLossParams,
};
use super::{MemoryUse, SampleError, SampleParams, Sampled};
use crate::rl::advantage::AdvantageScaling;

/// The op set on a kernel-running device. Cloning shares the device.
pub struct KernelBackend<D: Device> {
    dev: Arc<D>,
    meter: Arc<Meter>,
}

impl<D: Device> Clone for KernelBackend<D> {
    fn clone(&self) -> Self {
        KernelBackend { dev: self.dev.clone(), meter: self.meter.clone() }
    }
}

/// Bytes held by a backend's live buffers, and the most held since the last reset: what
/// `torch.cuda.max_memory_allocated` counts (tensors, not the context or library workspaces),
/// so peak-memory numbers read side by side with PyTorch's.
#[derive(Default)]
struct Meter {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Meter {
    fn add(&self, bytes: usize) {
        let now = self.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// The emulated device as a backend: what CI runs the CUDA code path on.
pub type EmuBackend = KernelBackend<EmuDevice>;

impl EmuBackend {
    /// The emulator as a backend.
    pub fn emulated() -> Self {
        KernelBackend::new(EmuDevice::new())
    }

    /// The emulator with TF32-rounded matmul operands: the GPU's matmul precision on the host.
    pub fn emulated_tf32() -> Self {
        KernelBackend::new(EmuDevice::with_tf32())
    }
}

/// A buffer of `len` 32-bit values (f32 or u32) in device memory.
pub struct DeviceBuf<D: Device> {
    mem: D::Mem,
    len: usize,
    meter: Arc<Meter>,
}

impl<D: Device> Drop for DeviceBuf<D> {
    fn drop(&mut self) {
        self.meter.now.fetch_sub(Self::bytes(self.len), Ordering::Relaxed);
    }
}

impl<D: Device> DeviceBuf<D> {
    /// Bytes of an allocation of `len` words (at least one word: see [`Device::alloc`]).
    fn bytes(len: usize) -> usize {
        4 * len.max(1)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Checked group boundaries on the device ([`KernelBackend::group_offsets`]).
pub struct GroupOffsets<D: Device> {
    buf: DeviceBuf<D>,
    groups: usize,
    n: usize,
}

impl<D: Device> GroupOffsets<D> {
    /// Number of groups, G.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// Number of rewards, N.
    pub fn len(&self) -> usize {
        self.n
    }
    /// True when there are no rewards (never: a group is never empty).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

impl<D: Device> KernelBackend<D> {
    /// A backend on `dev`.
    pub fn new(dev: D) -> Self {
        KernelBackend { dev: Arc::new(dev), meter: Arc::default() }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Unwraps a device result, or panics naming the op, its shapes and the device error.
    fn ok<T>(&self, op: &str, shapes: impl Display, r: Result<T, D::Error>) -> T {
        r.unwrap_or_else(|e| panic!("{op} ({shapes}) failed on {}: {e}", self.dev.describe()))
    }

    fn buf(&self, op: &str, len: usize) -> DeviceBuf<D> {
        let mem = self.ok(op, format_args!("{len} values"), self.dev.alloc(len));
        self.meter.add(DeviceBuf::<D>::bytes(len));
        DeviceBuf { mem, len, meter: self.meter.clone() }
    }

    fn ptr(&self, b: &DeviceBuf<D>) -> DevPtr {
        self.dev.ptr(&b.mem)
    }

    fn ptr_mut(&self, b: &mut DeviceBuf<D>) -> DevPtr {
        self.dev.ptr_mut(&mut b.mem)
    }

    /// A buffer holding the bits of `words` (f32 bits or u32/i32 values).
    pub fn upload_words(&self, words: &[u32]) -> DeviceBuf<D> {
        let mut b = self.buf("upload", words.len());
        self.ok("upload", format_args!("{} values", words.len()), self.dev.htod(&mut b.mem, 0, words));
        b
    }

    /// The buffer's values as raw 32-bit words.
    pub fn download_words(&self, b: &DeviceBuf<D>) -> Vec<u32> {
        let mut out = vec![0u32; b.len];
        self.ok("download", format_args!("{} values", b.len), self.dev.dtoh(&b.mem, 0, &mut out));
        out
    }

    /// Group boundaries for [`KernelBackend::group_advantage`], checked and uploaded once:
    /// `offsets` are G+1 increasing values from 0 to N (group g is `offsets[g]..offsets[g+1]`),
    /// no group empty.
    pub fn group_offsets(&self, offsets: &[i32]) -> Result<GroupOffsets<D>, String> {
        let valid = offsets.len() >= 2 && offsets[0] == 0 && offsets.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return Err(format!(
                "group offsets must rise strictly from 0 (at least one group, none empty): {:?}",
                &offsets[..offsets.len().min(8)]
            ));
        }
        let n = offsets[offsets.len() - 1] as usize;
        Ok(GroupOffsets { buf: self.upload_words(bytemuck::cast_slice(offsets)), groups: offsets.len() - 1, n })
    }

    /// Group-relative advantages of `rewards` (N) in the ragged groups of `offsets`, written
    /// to `out` (N); see [`crate::rl::advantage::group_advantages`] for the semantics (here in
    /// f32).
    pub fn group_advantage(
        &self,
        out: &mut DeviceBuf<D>,
        rewards: &DeviceBuf<D>,
        offsets: &GroupOffsets<D>,
        scaling: AdvantageScaling,
        eps: f32,
        clip: Option<f32>,
    ) {
        let (n, g) = (offsets.n, offsets.groups);
        let shapes = format!("N={n}, G={g}");
        assert!(
            rewards.len == n && out.len == n,
            "group_advantage ({shapes}): rewards ({}) and out ({}) must hold N values",
            rewards.len,
            out.len
        );
        let (o, r, p) = (self.ptr_mut(out), self.ptr(rewards), self.ptr(&offsets.buf));
        // SAFETY: out and rewards hold N f32 in separate allocations; offsets holds G+1
        // increasing i32 from 0 to N (checked when it was built).
        let res = unsafe { advantage::group_advantage(&*self.dev, o, r, p, g, n, scaling, eps, clip) };
        self.ok("group_advantage", &shapes, res);
    }
}

impl<D: Device> Backend for KernelBackend<D> {
    type Buf = DeviceBuf<D>;
    type Ids = DeviceBuf<D>;

    fn name(&self) -> String {
        self.dev.describe()
    }

    fn alloc(&self, len: usize) -> DeviceBuf<D> {
        self.buf("alloc", len)
    }
    fn upload(&self, host: &[f32]) -> DeviceBuf<D> {
        self.upload_words(bytemuck::cast_slice(host))
    }
    fn write(&self, buf: &mut DeviceBuf<D>, host: &[f32]) {
        assert_eq!(buf.len, host.len(), "write: buffer holds {} values, host slice {}", buf.len, host.len());
        let r = self.dev.htod(&mut buf.mem, 0, bytemuck::cast_slice(host));
        self.ok("write", format_args!("{} values", host.len()), r);
    }
    fn download(&self, buf: &DeviceBuf<D>) -> Vec<f32> {
        self.download_words(buf).into_iter().map(f32::from_bits).collect()
    }
    fn len(&self, buf: &DeviceBuf<D>) -> usize {
        buf.len
    }
    fn upload_ids(&self, ids: &[u32]) -> DeviceBuf<D> {
        self.upload_words(ids)
    }
    fn write_ids(&self, buf: &mut DeviceBuf<D>, ids: &[u32]) {
        assert_eq!(buf.len, ids.len(), "write_ids: buffer holds {} ids, host slice {}", buf.len, ids.len());
        let r = self.dev.htod(&mut buf.mem, 0, ids);
        self.ok("write_ids", format_args!("{} ids", ids.len()), r);
    }
    fn zero(&self, buf: &mut DeviceBuf<D>) {
        let r = self.dev.zero(&mut buf.mem, buf.len);
        self.ok("zero", format_args!("{} values", buf.len), r);
    }
    fn copy(&self, dst: &mut DeviceBuf<D>, src: &DeviceBuf<D>) {
        assert_eq!(dst.len, src.len, "copy: destination holds {} values, source {}", dst.len, src.len);
        self.copy_range(dst, 0, src, 0, src.len);
    }

    fn matmul(&self, out: &mut DeviceBuf<D>, a: &DeviceBuf<D>, b: &DeviceBuf<D>, bias: Option<&DeviceBuf<D>>, g: Gemm) {
        let shapes = format!("m={}, n={}, k={}, trans_a={}, trans_b={}", g.m, g.n, g.k, g.trans_a, g.trans_b);
        let ok =
            out.len == g.m * g.n && a.len == g.m * g.k && b.len == g.k * g.n && bias.map_or(true, |x| x.len == g.n);
        assert!(ok, "matmul ({shapes}): buffer sizes out={}, a={}, b={} do not match", out.len, a.len, b.len);
        if g.m * g.n == 0 {
            return;
        }
        if g.k == 0 {
            // An empty product: cuBLASLt rejects k = 0, and the result is just the bias and/or
            // the old `out`, so take the rare case through the host.
            let mut host = if g.accumulate { self.download(out) } else { vec![0.0; out.len] };
            if let Some(bias) = bias.map(|x| self.download(x)) {
                host.chunks_exact_mut(g.n).for_each(|row| row.iter_mut().zip(&bias).for_each(|(o, b)| *o += b));
            }
            self.write(out, &host);
            return;
        }
        let r = self.dev.gemm(&mut out.mem, &a.mem, &b.mem, bias.map(|x| &x.mem), g);
        self.ok("matmul", &shapes, r);
    }
    fn bias_backward(&self, dbias: &mut DeviceBuf<D>, dout: &DeviceBuf<D>, rows: usize, cols: usize) {
        self.bias_backward_k(dbias, dout, rows, cols)
    }

    fn encoder_forward(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        self.encoder_forward_k(out, ids, wte, wpe, b, t, c)
    }
    fn encoder_backward(
        &self,
        dwte: &mut DeviceBuf<D>,
        dwpe: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        self.encoder_backward_k(dwte, dwpe, dout, ids, b, t, c)
    }
    fn layernorm_forward(
        &self,
        out: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        rstd: &mut DeviceBuf<D>,
        inp: &DeviceBuf<D>,
        w: &DeviceBuf<D>,
        bias: &DeviceBuf<D>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        self.layernorm_forward_k(out, mean, rstd, inp, w, bias, n, c, eps)
    }
    fn layernorm_backward(
        &self,
        dinp: &mut DeviceBuf<D>,
        dw: &mut DeviceBuf<D>,
        dbias: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        inp: &DeviceBuf<D>,
        w: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        rstd: &DeviceBuf<D>,
        n: usize,
        c: usize,
    ) {
        self.layernorm_backward_k(dinp, dw, dbias, dout, inp, w, mean, rstd, n, c)
    }
    fn attention_forward(
        &self,
        out: &mut DeviceBuf<D>,
        lse: &mut DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        self.attention_forward_k(out, lse, qkv, b, t, nh, c)
    }
    fn attention_backward(
        &self,
        dqkv: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        out: &DeviceBuf<D>,
        lse: &DeviceBuf<D>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        self.attention_backward_k(dqkv, dout, qkv, out, lse, b, t, nh, c)
    }
    fn encoder_forward_at(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        rows: usize,
        c: usize,
    ) {
        self.encoder_forward_at_k(out, ids, pos, wte, wpe, rows, c)
    }
    fn attention_cached(
        &self,
        out: &mut DeviceBuf<D>,
        k_cache: &mut DeviceBuf<D>,
        v_cache: &mut DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        rows: usize,
        t_max: usize,
        nh: usize,
        c: usize,
    ) {
        self.attention_cached_k(out, k_cache, v_cache, qkv, seq, pos, rows, t_max, nh, c)
    }
    fn gelu_forward(&self, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_forward_k(out, inp)
    }
    fn gelu_backward(&self, d: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_backward_k(d, inp)
    }
    fn grn_causal_forward(
        &self,
        out: &mut DeviceBuf<D>,
        g: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        self.grn_causal_forward_k(out, g, mean, x, gamma, beta, s)
    }
    fn grn_causal_backward(
        &self,
        dx: &mut DeviceBuf<D>,
        dgamma: &mut DeviceBuf<D>,
        dbeta: &mut DeviceBuf<D>,
        dy: &DeviceBuf<D>,
        x: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        g: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        self.grn_causal_backward_k(dx, dgamma, dbeta, dy, x, gamma, g, mean, s)
    }
    fn grn_causal_step(
        &self,
        out: &mut DeviceBuf<D>,
        sumsq: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        rows: usize,
        c: usize,
        eps: f32,
    ) {
        self.grn_causal_step_k(out, sumsq, x, seq, gamma, beta, rows, c, eps)
    }
    fn grn_sequence_forward(
        &self,
        out: &mut DeviceBuf<D>,
        g: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        n: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        mask: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        self.grn_sequence_forward_k(out, g, mean, n, x, mask, gamma, beta, s)
    }
    fn grn_sequence_backward(
        &self,
        dx: &mut DeviceBuf<D>,
        dgamma: &mut DeviceBuf<D>,
        dbeta: &mut DeviceBuf<D>,
        dy: &DeviceBuf<D>,
        x: &DeviceBuf<D>,
        mask: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        g: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        n: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        self.grn_sequence_backward_k(dx, dgamma, dbeta, dy, x, mask, gamma, g, mean, n, s)
    }
    fn cross_entropy(
        &self,
        logits: &mut DeviceBuf<D>,
        losses: &mut DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        weights: &DeviceBuf<D>,
        n: usize,
        v: usize,
        backward: bool,
    ) {
        self.cross_entropy_k(logits, losses, targets, weights, n, v, backward)
    }
    fn adamw(
        &self,
        param: &mut DeviceBuf<D>,
        grad: &DeviceBuf<D>,
        m: &mut DeviceBuf<D>,
        v: &mut DeviceBuf<D>,
        h: AdamWStep,
    ) {
        self.adamw_k(param, grad, m, v, h)
    }
    fn global_norm(&self, bufs: &[&DeviceBuf<D>]) -> f32 {
        self.global_norm_k(bufs)
    }
    fn scale(&self, buf: &mut DeviceBuf<D>, alpha: f32) {
        self.scale_k(buf, alpha)
    }

    fn ids_len(&self, ids: &DeviceBuf<D>) -> usize {
        ids.len
    }

    fn copy_range(&self, dst: &mut DeviceBuf<D>, dst_offset: usize, src: &DeviceBuf<D>, src_offset: usize, len: usize) {
        let shapes = format!("dst {dst_offset}..+{len} of {}, src {src_offset}..+{len} of {}", dst.len, src.len);
        assert!(dst_offset + len <= dst.len && src_offset + len <= src.len, "copy_range ({shapes}): out of bounds");
        if len > 0 {
            let r = self.dev.dtod(&mut dst.mem, dst_offset, &src.mem, src_offset, len);
            self.ok("copy_range", &shapes, r);
        }
    }

    fn logprob_entropy_forward(
        &self,
        logits: &DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        logp: &mut DeviceBuf<D>,
        entropy: &mut DeviceBuf<D>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_forward", chunk, logits.len, targets.len, [logp.len, entropy.len]);
        let (lp, h, x, t) = (self.ptr_mut(logp), self.ptr_mut(entropy), self.ptr(logits), self.ptr(targets));
        // SAFETY: logits holds rows·V f32, targets/logp/entropy at least row0 + rows values
        // (checked above); logp and entropy are distinct allocations, not the inputs.
        let r = unsafe { logprob::logprob_entropy_forward(&*self.dev, lp, h, x, t, chunk) };
        self.ok("logprob_entropy_forward", format_args!("{chunk:?}"), r);
    }

    fn logprob_entropy_backward(
        &self,
        logits: &mut DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        dlogp: &DeviceBuf<D>,
        dentropy: &DeviceBuf<D>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_backward", chunk, logits.len, targets.len, [dlogp.len, dentropy.len]);
        let (x, t, gl, gh) = (self.ptr_mut(logits), self.ptr(targets), self.ptr(dlogp), self.ptr(dentropy));
        // SAFETY: sizes checked above; logits (written) is a distinct allocation from the inputs.
        let r = unsafe { logprob::logprob_entropy_backward(&*self.dev, x, t, gl, gh, chunk) };
        self.ok("logprob_entropy_backward", format_args!("{chunk:?}"), r);
    }

    fn policy_loss(
        &self,
        dlogp: &mut DeviceBuf<D>,
        dentropy: &mut DeviceBuf<D>,
        metrics: &mut DeviceBuf<D>,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    ) {
        let (s, l) = (params.s, params.l);
        let shapes = format!("S={s}, L={l}");
        let PolicyLossInputs { logp, logp_old, logp_ref, advantages, entropy, mask } = inputs;
        let sl = s * l;
        let ok = l > 0
            && [dlogp.len, dentropy.len, logp.len, logp_old.len, entropy.len, mask.len].iter().all(|&n| n == sl)
            && logp_ref.map_or(true, |r| r.len == sl)
            && advantages.len == s
            && metrics.len == super::policy_metric::LEN;
        assert!(ok, "policy_loss ({shapes}): buffer sizes do not match");
        let mut workspace = self.buf("policy_loss", policy_loss::WORKSPACE_PER_SEQ * s.max(1));
        let bufs = policy_loss::PolicyLossBufs {
            dlogp: self.ptr_mut(dlogp),
            dentropy: self.ptr_mut(dentropy),
            metrics: self.ptr_mut(metrics),
            workspace: self.ptr_mut(&mut workspace),
            logp: self.ptr(logp),
            logp_old: self.ptr(logp_old),
            logp_ref: logp_ref.map(|r| self.ptr(r)),
            advantages: self.ptr(advantages),
            entropy: self.ptr(entropy),
            mask: self.ptr(mask),
        };
        // SAFETY: sizes checked above, the workspace holds WORKSPACE_PER_SEQ·S f32, and the
        // three outputs are distinct allocations from each other and from the inputs.
        let r = unsafe { policy_loss::policy_loss(&*self.dev, &bufs, &params) };
        self.ok("policy_loss", &shapes, r);
    }

    fn synchronize(&self) {
        let r = self.dev.synchronize();
        self.ok("synchronize", "", r);
    }

    fn memory(&self) -> Option<MemoryUse> {
        Some(MemoryUse { now: self.meter.now.load(Ordering::Relaxed), peak: self.meter.peak.load(Ordering::Relaxed) })
    }

    fn available_memory(&self) -> Option<u64> {
        self.dev.free_memory()
    }

    fn reset_peak_memory(&self) {
        self.meter.peak.store(self.meter.now.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn sample(
        &self,
        logits: &DeviceBuf<D>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>> {
        self.sample_with_uniforms(logits, v, counters, p).into_iter().map(|(r, _)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_counts_live_buffers_and_their_peak() {
        let k = EmuBackend::emulated();
        let m0 = k.memory().expect("a kernel backend tracks its buffers");
        let a = k.alloc(1000);
        let b = k.clone().upload(&[1.0; 10]);
        let e = k.alloc(0);
        let m = k.memory().unwrap();
        // Every allocation holds at least one word.
        assert_eq!(m.now - m0.now, 4 * (1000 + 10 + 1));
        assert_eq!(m.peak, m.now);
        drop(a);
        let m = k.memory().unwrap();
        assert_eq!((m.now - m0.now, m.peak - m0.now), (44, 4044));
        k.reset_peak_memory();
        assert_eq!(k.memory().unwrap().peak, m.now);
        drop((b, e));
        assert_eq!(k.memory().unwrap().now, m0.now);
    }
}
