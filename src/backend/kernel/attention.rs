//! The launchers of the GPT-2 layer kernels: causal attention forward/backward and KV-cache
//! attention (`kernels/attention.cu`), the device form of
//! [`AttentionOps::attention_forward`], `attention_backward` and `attention_cached`.
//!
//! Shapes: B sequences, T positions, C channels, NH heads of hs = C/NH channels; R rows and
//! T_max cache slots per sequence for the cached op.

use super::{same_dtype, DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::AttentionOps;
use crate::backend::precision::Dtype;
use crate::backend::shapes::{AttentionShape, CachedShape, KvBufs};

/// Rows (warps) per block of the forward and backward kernels (`ATT_ROWS` in the source).
const ROWS: usize = 8;
/// Streamed rows per shared-memory tile (`ATT_TILE`).
const TILE: usize = 32;
/// Largest head size the kernels take: each lane keeps 4 output channels in registers
/// (`ATT_MAX_PER_LANE` = 4) and the backward's shared memory must stay within 48 KiB.
pub(crate) const MAX_HEAD_SIZE: usize = 128;

/// The scale of the scores, computed exactly as the CPU oracle computes it.
fn scale(hs: usize) -> f32 {
    1.0 / (hs as f32).sqrt()
}

/// Dynamic shared memory (bytes) of each kernel for head size `hs`; the layouts are listed
/// above each kernel in the source. At hs = 128 the largest is 43,520 bytes.
fn forward_shared(hs: usize) -> u32 {
    floats(ROWS * hs + TILE * (hs + 1) + TILE * hs + ROWS * TILE)
}
fn dq_shared(hs: usize) -> u32 {
    floats(2 * ROWS * hs + 2 * TILE * (hs + 1) + ROWS * TILE)
}
fn dkv_shared(hs: usize) -> u32 {
    floats(2 * ROWS * hs + 2 * TILE * (hs + 1) + 2 * TILE + 2 * ROWS * TILE)
}
fn floats(n: usize) -> u32 {
    u32::try_from(4 * n).expect("attention shared memory fits in u32")
}

/// Grid (ceil(T/ROWS), NH, B), blocks of ROWS warps, `bytes` of dynamic shared memory.
fn row_blocks(b: usize, t: usize, nh: usize, bytes: u32) -> Launch {
    let gx = dim("ceil(T/8)", t.div_ceil(ROWS)) as u32;
    Launch {
        grid: (gx, dim("NH", nh) as u32, dim("B", b) as u32),
        block: (32 * ROWS as u32, 1, 1),
        shared_bytes: bytes,
    }
}

/// Panics unless 1 ≤ hs ≤ [`MAX_HEAD_SIZE`] with C = NH·hs.
fn head_size(nh: usize, c: usize) -> usize {
    assert!(nh > 0 && c % nh == 0, "attention: C = {c} is not a multiple of NH = {nh}");
    let hs = c / nh;
    assert!((1..=MAX_HEAD_SIZE).contains(&hs), "attention kernels take head sizes 1..={MAX_HEAD_SIZE}, not {hs}");
    hs
}

/// `attention_forward_{dtype}`: `out (B,T,C)` and `lse (B,NH,T, f32)` from `qkv (B,T,3C)`,
/// out and qkv stored as `dtype`. Nothing is launched when B·T = 0.
///
/// # Panics
/// If NH does not divide C or hs = C/NH is outside 1..=[`MAX_HEAD_SIZE`].
///
/// # Safety
/// `qkv` must address B·T·3C values of `dtype`, `out` B·T·C of them and `lse` B·NH·T f32;
/// the outputs must not overlap each other or `qkv`.
unsafe fn attention_forward<L: Launcher>(
    dev: &L,
    dtype: Dtype,
    out: DevPtr,
    lse: DevPtr,
    qkv: DevPtr,
    s: AttentionShape,
) -> Result<(), L::Error> {
    let AttentionShape { b, t, nh, c } = s;
    let hs = head_size(nh, c);
    if b * t == 0 {
        return Ok(());
    }
    let (ti, nhi, ci, sc) = (dim("T", t), dim("NH", nh), dim("C", c), scale(hs));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&lse).arg(&qkv).arg(&ti).arg(&nhi).arg(&ci).arg(&sc);
    // SAFETY: block (x, h, b) reads head h of sequence b of qkv and writes out and lse rows
    // (b, h, i) for its own query rows i < T only: in bounds of the sizes above, disjoint
    // across blocks.
    unsafe { run(dev, &format!("attention_forward_{dtype}"), row_blocks(b, t, nh, forward_shared(hs)), &mut args) }
}

/// `attention_backward_dq_{dtype}` then `attention_backward_dkv_{dtype}`: overwrites every
/// value of `dqkv (B,T,3C)` from `dout (B,T,C, f32)` and the forward's `qkv`, `out`, `lse`
/// (dqkv, qkv and out stored as `dtype`). The first
/// launch writes the q third and D_i = dout_i·out_i into `dsum (B,NH,T)`, the second (which
/// reads `dsum`) the k and v thirds. Nothing is launched when B·T = 0.
///
/// # Panics
/// As [`attention_forward`].
///
/// # Safety
/// `dqkv` and `qkv` must address B·T·3C values of `dtype`, `out` B·T·C of them, `dout` B·T·C
/// f32, `lse` and `dsum` (a workspace, overwritten) B·NH·T f32; `dqkv` and `dsum` must not
/// overlap each other or the inputs.
unsafe fn attention_backward<L: Launcher>(
    dev: &L,
    dtype: Dtype,
    [dqkv, dsum]: [DevPtr; 2],
    [dout, qkv, out, lse]: [DevPtr; 4],
    s: AttentionShape,
) -> Result<(), L::Error> {
    let AttentionShape { b, t, nh, c } = s;
    let hs = head_size(nh, c);
    if b * t == 0 {
        return Ok(());
    }
    let (ti, nhi, ci, sc) = (dim("T", t), dim("NH", nh), dim("C", c), scale(hs));
    let mut args = KernelArgs::new();
    args.arg(&dqkv).arg(&dsum).arg(&dout).arg(&qkv).arg(&out).arg(&lse).arg(&ti).arg(&nhi).arg(&ci).arg(&sc);
    // SAFETY: block (x, h, b) reads head h of sequence b of the inputs and writes the q part
    // of head h of its own query rows of dqkv and their dsum entries: in bounds, disjoint.
    unsafe { run(dev, &format!("attention_backward_dq_{dtype}"), row_blocks(b, t, nh, dq_shared(hs)), &mut args)? };
    let mut args = KernelArgs::new();
    args.arg(&dqkv).arg(&dsum).arg(&dout).arg(&qkv).arg(&lse).arg(&ti).arg(&nhi).arg(&ci).arg(&sc);
    // SAFETY: as above, writing the k and v parts of head h of its own key rows; dsum was
    // written by the previous launch on the same stream, which completes first.
    unsafe { run(dev, &format!("attention_backward_dkv_{dtype}"), row_blocks(b, t, nh, dkv_shared(hs)), &mut args) }
}

/// The buffers of one KV-cache attention call.
#[derive(Clone, Copy, Debug)]
struct CachedAttention {
    /// out (R,C), written.
    pub out: DevPtr,
    /// k_cache (B,T_max,C), written at the rows' slots.
    pub k_cache: DevPtr,
    /// v_cache (B,T_max,C), written at the rows' slots.
    pub v_cache: DevPtr,
    /// qkv (R,3C).
    pub qkv: DevPtr,
    /// seq (R) u32: each row's cache sequence.
    pub seq: DevPtr,
    /// pos (R) u32: each row's position.
    pub pos: DevPtr,
}

/// `attention_cache_store_{dtype}` then `attention_cached_{dtype}` (out, the caches and qkv
/// stored as `dtype`): stores every row's k and v at
/// slot (seq[r], pos[r]) of the caches, then row r attends over slots 0..=pos[r] of its
/// sequence. A row with seq ≥ B or pos ≥ T_max stores nothing and gets NaN outputs. Nothing
/// is launched when R = 0.
///
/// # Panics
/// As [`attention_forward`].
///
/// # Safety
/// The pointers must address the counts their fields name for (R, B, T_max, C); `out` and
/// the caches must not overlap each other or the inputs. (Out-of-range seq/pos values are
/// guarded in the kernels.)
unsafe fn attention_cached<L: Launcher>(
    dev: &L,
    dtype: Dtype,
    p: &CachedAttention,
    (r, b, t_max, nh, c): (usize, usize, usize, usize, usize),
) -> Result<(), L::Error> {
    let hs = head_size(nh, c);
    if r == 0 {
        return Ok(());
    }
    let (ri, bi, tmi, nhi, ci, sc) =
        (dim("R", r), dim("B", b), dim("T_max", t_max), dim("NH", nh), dim("C", c), scale(hs));
    let mut args = KernelArgs::new();
    args.arg(&p.k_cache).arg(&p.v_cache).arg(&p.qkv).arg(&p.seq).arg(&p.pos).arg(&ri).arg(&bi).arg(&tmi).arg(&ci);
    // SAFETY: block r reads row r of qkv, seq, pos and writes the cache slot (seq[r], pos[r]),
    // checked in the kernel against B and T_max.
    let store = format!("attention_cache_store_{dtype}");
    unsafe { run(dev, &store, Launch::linear(ri as u32, threads_for(c, 256)), &mut args)? };
    let mut args = KernelArgs::new();
    args.arg(&p.out).arg(&p.k_cache).arg(&p.v_cache).arg(&p.qkv).arg(&p.seq).arg(&p.pos);
    args.arg(&ri).arg(&bi).arg(&tmi).arg(&nhi).arg(&ci).arg(&sc);
    let cfg = Launch { grid: (ri as u32, nhi as u32, 1), block: (32, 1, 1), shared_bytes: floats(hs + TILE) };
    // SAFETY: block (r, h) reads slots 0..=pos[r] < T_max of sequence seq[r] < B (checked in
    // the kernel), written by the previous launch on the same stream, and writes head h of
    // out row r.
    unsafe { run(dev, &format!("attention_cached_{dtype}"), cfg, &mut args) }
}

impl<D: Device> AttentionOps for KernelBackend<D> {
    fn attention_forward(&self, out: &mut DeviceBuf<D>, lse: &mut DeviceBuf<D>, qkv: &DeviceBuf<D>, s: AttentionShape) {
        let AttentionShape { b, t, nh, c } = s;
        let shapes = format!("B={b}, T={t}, NH={nh}, C={c}");
        assert!(
            nh > 0 && c % nh == 0 && out.len == b * t * c && lse.len == b * nh * t && qkv.len == 3 * b * t * c,
            "attention_forward ({shapes}): buffer sizes out={}, lse={}, qkv={} do not match",
            out.len,
            lse.len,
            qkv.len
        );
        let dtype = same_dtype("attention_forward", &[&*out, qkv]);
        let (o, l, x) = (self.ptr_mut(out), self.ptr32_mut(lse), self.ptr(qkv));
        // SAFETY: qkv holds B·T·3C, out B·T·C values of `dtype`, lse B·NH·T f32 (checked
        // above); out and lse are distinct allocations, not qkv.
        let r = unsafe { attention_forward(&*self.dev, dtype, o, l, x, s) };
        self.ok("attention_forward", &shapes, r);
    }

    fn attention_backward(
        &self,
        dqkv: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        out: &DeviceBuf<D>,
        lse: &DeviceBuf<D>,
        s: AttentionShape,
    ) {
        let AttentionShape { b, t, nh, c } = s;
        let shapes = format!("B={b}, T={t}, NH={nh}, C={c}");
        let sizes = [dqkv.len, dout.len, qkv.len, out.len, lse.len];
        assert!(
            nh > 0 && c % nh == 0 && sizes == [3 * b * t * c, b * t * c, 3 * b * t * c, b * t * c, b * nh * t],
            "attention_backward ({shapes}): buffer sizes [dqkv, dout, qkv, out, lse] = {sizes:?} do not match"
        );
        // D_i = dout_i·out_i per (b, h, i), written by the dq pass and read by the dk/dv pass.
        let dtype = same_dtype("attention_backward", &[&*dqkv, qkv, out]);
        let mut dsum = self.scratch("attention_backward", b * nh * t);
        let (dx, ds) = (self.ptr_mut(dqkv), self.ptr32_mut(&mut dsum));
        let (g, x, o, l) = (self.ptr32(dout), self.ptr(qkv), self.ptr(out), self.ptr32(lse));
        // SAFETY: sizes checked above, dsum holds B·NH·T; dqkv and dsum are distinct
        // allocations from each other and from the inputs.
        let r = unsafe { attention_backward(&*self.dev, dtype, [dx, ds], [g, x, o, l], s) };
        self.ok("attention_backward", &shapes, r);
    }

    fn attention_cached(
        &self,
        out: &mut DeviceBuf<D>,
        cache: KvBufs<&mut DeviceBuf<D>>,
        qkv: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        s: CachedShape,
    ) {
        let CachedShape { rows, t_max, nh, c } = s;
        let KvBufs { k: k_cache, v: v_cache } = cache;
        let shapes = format!("R={rows}, T_max={t_max}, NH={nh}, C={c}");
        let b = k_cache.len.checked_div(t_max * c).unwrap_or(0);
        // seq and pos stay on the device (checking them here would cost a copy and a sync per
        // decoding step); the kernels skip a row whose (seq, pos) is out of range instead, so
        // a bad index cannot write outside the caches, and give it NaN outputs.
        assert!(
            nh > 0
                && c % nh == 0
                && out.len == rows * c
                && qkv.len == rows * 3 * c
                && seq.len == rows
                && pos.len == rows
                && k_cache.len == b * t_max * c
                && v_cache.len == k_cache.len,
            "attention_cached ({shapes}): buffer sizes out={}, qkv={}, seq={}, pos={}, k_cache={}, v_cache={} \
             do not match",
            out.len,
            qkv.len,
            seq.len,
            pos.len,
            k_cache.len,
            v_cache.len
        );
        let dtype = same_dtype("attention_cached", &[&*out, &*k_cache, &*v_cache, qkv]);
        let p = CachedAttention {
            out: self.ptr_mut(out),
            k_cache: self.ptr_mut(k_cache),
            v_cache: self.ptr_mut(v_cache),
            qkv: self.ptr(qkv),
            seq: self.ptr(seq),
            pos: self.ptr(pos),
        };
        // SAFETY: sizes checked above (the caches hold B·T_max·C with B derived from them);
        // out and the caches are distinct allocations from each other and from the inputs.
        let r = unsafe { attention_cached(&*self.dev, dtype, &p, (rows, b, t_max, nh, c)) };
        self.ok("attention_cached", &shapes, r);
    }
}
