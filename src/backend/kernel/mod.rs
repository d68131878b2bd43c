//! The op set on any kernel-running [`Device`]: the real GPU
//! ([`crate::backend::cuda::CudaBackend`]) and the emulator ([`EmuBackend`]), so CI executes
//! every line between the op set and `cuLaunchKernel`.
//!
//! One file per op family, each in llm.c's order: the unsafe launchers of its
//! `kernels/<family>.cu` kernels (private: they take raw [`DevPtr`]s, choose grid, block and
//! shared memory, and build the argument list in the kernel's parameter order), then the
//! family's trait implementation, which checks buffer sizes before anything is launched and
//! is the only caller of its launchers. Matmuls go through the device's GEMM (cuBLASLt on a
//! GPU). This file holds the backend itself and its memory ops.
//!
//! The op set is infallible (the CPU cannot fail mid-op), so a device failure (out of memory,
//! a launch error) panics with the op, its shapes and the device's error; size mismatches are
//! caught before anything is launched, as on the CPU backend.

use std::fmt::Display;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

mod advantage;
mod attention;
mod convert;
mod cross_entropy;
mod encoder;
mod gelu;
mod grn;
mod layernorm;
mod logprob;
mod matmul;
mod optim;
mod policy_loss;
mod sampling;

use super::device::Device;
use super::emu::EmuDevice;
use super::launch::DevPtr;
use super::ops::{MemoryOps, MemoryUse};
use super::precision::{pack_bf16, unpack_bf16, Dtype, Precision};

/// The op set on a kernel-running device. Cloning shares the device.
pub struct KernelBackend<D: Device> {
    dev: Arc<D>,
    meter: Arc<Meter>,
    scratch: Arc<ScratchPool<D>>,
    precision: Precision,
}

impl<D: Device> Clone for KernelBackend<D> {
    fn clone(&self) -> Self {
        KernelBackend {
            dev: self.dev.clone(),
            meter: self.meter.clone(),
            scratch: self.scratch.clone(),
            precision: self.precision,
        }
    }
}

/// Bytes held by a backend's live buffers, and the most held since the last reset: what
/// `torch.cuda.max_memory_allocated` counts (tensors, not the context or library workspaces),
/// so peak-memory numbers read side by side with PyTorch's. A buffer counts its capacity,
/// not its logical length ([`MemoryOps::resize`]): that is what the device holds.
/// `allocations` counts every device allocation (uploads included) since the backend was
/// made: a steady-state step that allocates nothing leaves it unchanged.
#[derive(Default)]
struct Meter {
    now: AtomicUsize,
    peak: AtomicUsize,
    allocations: AtomicU64,
}

impl Meter {
    fn add(&self, bytes: usize) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        let now = self.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// The ops' own workspaces (layer-norm and attention backward partials, the policy loss's
/// per-sequence sums, sampling's counters and outputs, ...), kept between calls so that an op
/// allocates only the first time it needs more than any earlier call did (llm.c allocates
/// them once). Free buffers wait here; [`KernelBackend::scratch`] lends one out.
struct ScratchPool<D: Device> {
    free: Mutex<Vec<DeviceBuf<D>>>,
}

impl<D: Device> Default for ScratchPool<D> {
    fn default() -> Self {
        ScratchPool { free: Mutex::new(Vec::new()) }
    }
}

/// A workspace lent by [`KernelBackend::scratch`]; it goes back to the pool when dropped.
pub(crate) struct Scratch<'a, D: Device> {
    buf: Option<DeviceBuf<D>>,
    pool: &'a ScratchPool<D>,
}

impl<D: Device> Deref for Scratch<'_, D> {
    type Target = DeviceBuf<D>;
    fn deref(&self) -> &DeviceBuf<D> {
        self.buf.as_ref().expect("held until drop")
    }
}

impl<D: Device> DerefMut for Scratch<'_, D> {
    fn deref_mut(&mut self) -> &mut DeviceBuf<D> {
        self.buf.as_mut().expect("held until drop")
    }
}

impl<D: Device> Drop for Scratch<'_, D> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // A poisoned lock only means another thread panicked mid-op; the list is intact.
            self.pool.free.lock().unwrap_or_else(|e| e.into_inner()).push(b);
        }
    }
}

/// The one storage type of the buffers an op reads and writes as activations, or a panic
/// naming the op (its kernels come in `{op}_f32` and `{op}_bf16`, never mixed).
fn same_dtype<D: Device>(op: &str, bufs: &[&DeviceBuf<D>]) -> Dtype {
    let d = bufs[0].dtype;
    assert!(
        bufs.iter().all(|b| b.dtype == d),
        "{op}: buffers of mixed types {:?}",
        bufs.iter().map(|b| b.dtype.name()).collect::<Vec<_>>()
    );
    d
}

/// The emulated device as a backend: what CI runs the CUDA code path on.
pub type EmuBackend = KernelBackend<EmuDevice>;

impl EmuBackend {
    /// The emulator as a backend, in f32 with true f32 matmuls (the CPU oracle's arithmetic).
    pub fn emulated() -> Self {
        KernelBackend::new(EmuDevice::new())
    }

    /// The emulator with TF32-rounded matmul operands: the GPU's f32 matmul precision on the
    /// host.
    pub fn emulated_tf32() -> Self {
        KernelBackend::with_precision(EmuDevice::new(), Precision::TF32)
    }

    /// The emulator in bf16 mixed precision: bf16 activations and weight copies, bf16 GEMM
    /// operands with f32 accumulation, as on a GPU.
    pub fn emulated_bf16() -> Self {
        KernelBackend::with_precision(EmuDevice::new(), Precision::BF16)
    }
}

/// A buffer of `len` values (f32 or u32 in a word each, or bf16 two to a word) in device
/// memory, in an allocation of `cap` ≥ its words ([`MemoryOps::resize`] moves `len` within
/// it). Ops see `len` only.
pub struct DeviceBuf<D: Device> {
    /// `None` only inside [`MemoryOps::resize`], between freeing an outgrown empty allocation
    /// and making its replacement (so the two never sit side by side).
    mem: Option<D::Mem>,
    len: usize,
    /// Words allocated.
    cap: usize,
    dtype: Dtype,
    meter: Arc<Meter>,
}

impl<D: Device> Drop for DeviceBuf<D> {
    fn drop(&mut self) {
        // Without its allocation (a resize that panicked mid-way) it was already uncounted.
        if self.mem.is_some() {
            self.meter.now.fetch_sub(Self::bytes(self.cap), Ordering::Relaxed);
        }
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
    fn mem(&self) -> &D::Mem {
        self.mem.as_ref().expect("a buffer holds its allocation outside resize")
    }

    fn mem_mut(&mut self) -> &mut D::Mem {
        self.mem.as_mut().expect("a buffer holds its allocation outside resize")
    }

    /// Number of values the allocation holds (≥ [`DeviceBuf::len`]).
    pub fn capacity(&self) -> usize {
        match self.dtype {
            Dtype::F32 => self.cap,
            Dtype::Bf16 => 2 * self.cap,
        }
    }

    /// How the values are stored.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Words holding the first `len` values.
    fn words(&self) -> usize {
        self.dtype.words(self.len)
    }
    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<D: Device> KernelBackend<D> {
    /// A backend on `dev` in f32 with true f32 matmuls.
    pub fn new(dev: D) -> Self {
        Self::with_precision(dev, Precision::F32)
    }

    /// A backend on `dev` computing at `precision`.
    pub fn with_precision(dev: D, precision: Precision) -> Self {
        KernelBackend { dev: Arc::new(dev), meter: Arc::default(), scratch: Arc::default(), precision }
    }

    /// The same device (memory meter and workspaces shared) computing at `precision`.
    pub fn at_precision(&self, precision: Precision) -> Self {
        KernelBackend { precision, ..self.clone() }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Unwraps a device result, or panics naming the op, its shapes and the device error.
    fn ok<T>(&self, op: &str, shapes: impl Display, r: Result<T, D::Error>) -> T {
        r.unwrap_or_else(|e| panic!("{op} ({shapes}) failed on {}: {e}", self.dev.describe()))
    }

    fn buf(&self, op: &str, len: usize, dtype: Dtype) -> DeviceBuf<D> {
        let words = dtype.words(len);
        let mem = self.ok(op, format_args!("{len} {dtype} values"), self.dev.alloc(words));
        self.meter.add(DeviceBuf::<D>::bytes(words));
        DeviceBuf { mem: Some(mem), len, cap: words, dtype, meter: self.meter.clone() }
    }

    /// A zero-filled workspace of `len` words for `op`, lent from the backend's pool: the
    /// smallest free one that holds `len`, else a new allocation (replacing the largest free
    /// one that is too small, so the pool does not pile up outgrown buffers). Zeroed because
    /// the ops were written against fresh (zero-filled) allocations.
    pub(crate) fn scratch(&self, op: &str, len: usize) -> Scratch<'_, D> {
        self.scratch_as(op, len, Dtype::F32)
    }

    /// [`KernelBackend::scratch`] for `len` values stored as `dtype`.
    pub(crate) fn scratch_as(&self, op: &str, len: usize, dtype: Dtype) -> Scratch<'_, D> {
        let pool = &*self.scratch;
        let words = dtype.words(len);
        let taken = {
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            let fits = (0..free.len()).filter(|&i| free[i].cap >= words).min_by_key(|&i| free[i].cap);
            match fits {
                Some(i) => Some(free.swap_remove(i)),
                None => {
                    if let Some(i) = (0..free.len()).max_by_key(|&i| free[i].cap) {
                        drop(free.swap_remove(i));
                    }
                    None
                }
            }
        };
        let buf = match taken {
            Some(mut b) => {
                (b.len, b.dtype) = (len, dtype);
                let r = self.dev.zero(b.mem_mut(), 0, words);
                self.ok(op, format_args!("workspace of {len} values"), r);
                b
            }
            None => self.buf(op, len, dtype),
        };
        Scratch { buf: Some(buf), pool }
    }

    /// A workspace holding the bits of `words`, lent like [`KernelBackend::scratch`].
    pub(crate) fn scratch_words(&self, op: &str, words: &[u32]) -> Scratch<'_, D> {
        let mut b = self.scratch(op, words.len());
        self.ok(op, format_args!("{} values", words.len()), self.dev.htod(b.mem_mut(), 0, words));
        b
    }

    fn ptr(&self, b: &DeviceBuf<D>) -> DevPtr {
        self.dev.ptr(b.mem())
    }

    /// [`KernelBackend::ptr`] for the kernel arguments that are f32 (or u32) whatever the
    /// precision (statistics, losses, optimizer state, and every buffer of the ops that have no
    /// bf16 kernels): a bf16 buffer there is a caller's bug, caught before it is read as f32.
    fn ptr32(&self, b: &DeviceBuf<D>) -> DevPtr {
        assert_eq!(b.dtype, Dtype::F32, "an f32-only op was handed a {} buffer of {} values", b.dtype, b.len);
        self.ptr(b)
    }

    /// [`KernelBackend::ptr_mut`] for f32-only ops (see [`KernelBackend::ptr32`]).
    fn ptr32_mut(&self, b: &mut DeviceBuf<D>) -> DevPtr {
        assert_eq!(b.dtype, Dtype::F32, "an f32-only op was handed a {} buffer of {} values", b.dtype, b.len);
        self.ptr_mut(b)
    }

    fn ptr_mut(&self, b: &mut DeviceBuf<D>) -> DevPtr {
        self.dev.ptr_mut(b.mem_mut())
    }

    /// A buffer holding the bits of `words` (f32 bits or u32/i32 values).
    pub fn upload_words(&self, words: &[u32]) -> DeviceBuf<D> {
        let mut b = self.buf("upload", words.len(), Dtype::F32);
        self.ok("upload", format_args!("{} values", words.len()), self.dev.htod(b.mem_mut(), 0, words));
        b
    }

    /// The words holding the buffer's values (f32 bits, ids, or bf16 pairs).
    pub fn download_words(&self, b: &DeviceBuf<D>) -> Vec<u32> {
        let mut out = vec![0u32; b.words()];
        self.ok("download", format_args!("{} values", b.len), self.dev.dtoh(b.mem(), 0, &mut out));
        out
    }

    /// `values` as `dtype` words.
    fn encode(dtype: Dtype, values: &[f32]) -> Vec<u32> {
        match dtype {
            Dtype::F32 => bytemuck::cast_slice(values).to_vec(),
            Dtype::Bf16 => pack_bf16(values),
        }
    }

    /// Values `offset .. offset + len` of a bf16 buffer through the host: the fallback for
    /// copies whose ends split a word (two bf16 values share one).
    fn copy_bf16_on_host(
        &self,
        dst: &mut DeviceBuf<D>,
        dst_offset: usize,
        src: &DeviceBuf<D>,
        src_offset: usize,
        len: usize,
    ) {
        let from = unpack_bf16(&self.download_words(src), src.len);
        let mut to = unpack_bf16(&self.download_words(dst), dst.len);
        to[dst_offset..dst_offset + len].copy_from_slice(&from[src_offset..src_offset + len]);
        self.write(dst, &to);
    }
}

impl<D: Device> MemoryOps for KernelBackend<D> {
    type Buf = DeviceBuf<D>;
    type Ids = DeviceBuf<D>;

    fn name(&self) -> String {
        self.dev.describe()
    }

    fn alloc(&self, len: usize) -> DeviceBuf<D> {
        self.buf("alloc", len, Dtype::F32)
    }
    fn alloc_as(&self, len: usize, dtype: Dtype) -> DeviceBuf<D> {
        assert!(
            dtype == Dtype::F32 || self.precision.dtype == dtype,
            "alloc_as: a {dtype} buffer on a backend computing in {}",
            self.precision.dtype
        );
        self.buf("alloc", len, dtype)
    }
    fn dtype(&self, buf: &DeviceBuf<D>) -> Dtype {
        buf.dtype
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn upload(&self, host: &[f32]) -> DeviceBuf<D> {
        self.upload_words(bytemuck::cast_slice(host))
    }
    fn write(&self, buf: &mut DeviceBuf<D>, host: &[f32]) {
        assert_eq!(buf.len, host.len(), "write: buffer holds {} values, host slice {}", buf.len, host.len());
        let words = Self::encode(buf.dtype, host);
        let r = self.dev.htod(buf.mem_mut(), 0, &words);
        self.ok("write", format_args!("{} values", host.len()), r);
    }
    fn download(&self, buf: &DeviceBuf<D>) -> Vec<f32> {
        let words = self.download_words(buf);
        match buf.dtype {
            Dtype::F32 => words.into_iter().map(f32::from_bits).collect(),
            Dtype::Bf16 => unpack_bf16(&words, buf.len),
        }
    }
    fn len(&self, buf: &DeviceBuf<D>) -> usize {
        buf.len
    }
    fn upload_ids(&self, ids: &[u32]) -> DeviceBuf<D> {
        self.upload_words(ids)
    }
    fn write_ids(&self, buf: &mut DeviceBuf<D>, ids: &[u32]) {
        assert_eq!(buf.len, ids.len(), "write_ids: buffer holds {} ids, host slice {}", buf.len, ids.len());
        let r = self.dev.htod(buf.mem_mut(), 0, ids);
        self.ok("write_ids", format_args!("{} ids", ids.len()), r);
    }
    fn zero(&self, buf: &mut DeviceBuf<D>) {
        let n = buf.words();
        let r = self.dev.zero(buf.mem_mut(), 0, n);
        self.ok("zero", format_args!("{} values", buf.len), r);
    }
    fn copy(&self, dst: &mut DeviceBuf<D>, src: &DeviceBuf<D>) {
        assert_eq!(dst.len, src.len, "copy: destination holds {} values, source {}", dst.len, src.len);
        if dst.dtype == src.dtype {
            self.copy_range(dst, 0, src, 0, src.len);
        } else {
            self.convert(dst, src);
        }
    }

    fn ids_len(&self, ids: &DeviceBuf<D>) -> usize {
        ids.len
    }

    fn resize(&self, buf: &mut DeviceBuf<D>, len: usize) {
        let words = buf.dtype.words(len);
        if words > buf.cap {
            // Outgrown: a new, zero-filled allocation. With values to keep, they are copied
            // over before the old allocation is freed; without, it is freed first, so the two
            // never sit side by side (a pass's logits emptied by a reshape, then regrown).
            let keep = buf.len;
            if keep == 0 {
                drop(buf.mem.take());
                self.meter.now.fetch_sub(DeviceBuf::<D>::bytes(buf.cap), Ordering::Relaxed);
                let mem = self.ok("resize", format_args!("0 to {len} values"), self.dev.alloc(words));
                self.meter.add(DeviceBuf::<D>::bytes(words));
                (buf.mem, buf.len, buf.cap) = (Some(mem), len, words);
            } else {
                let mut grown = self.buf("resize", len, buf.dtype);
                self.copy_range(&mut grown, 0, buf, 0, keep);
                *buf = grown;
            }
        } else {
            if len > buf.len {
                let old = buf.len;
                // A bf16 buffer of odd length shares its last word with the first new value:
                // clear that half on the host, then whole words on the device.
                let first = buf.dtype.words(old);
                if buf.dtype == Dtype::Bf16 && old % 2 == 1 {
                    let mut w = [0u32];
                    let r = self.dev.dtoh(buf.mem(), old / 2, &mut w);
                    self.ok("resize", format_args!("{old} to {len} values"), r);
                    let r = self.dev.htod(buf.mem_mut(), old / 2, &[w[0] & 0xffff]);
                    self.ok("resize", format_args!("{old} to {len} values"), r);
                }
                let r = self.dev.zero(buf.mem_mut(), first, words - first);
                self.ok("resize", format_args!("{old} to {len} values"), r);
            }
            buf.len = len;
        }
    }

    fn resize_ids(&self, ids: &mut DeviceBuf<D>, len: usize) {
        self.resize(ids, len);
    }

    fn copy_ids_range(
        &self,
        dst: &mut DeviceBuf<D>,
        dst_offset: usize,
        src: &DeviceBuf<D>,
        src_offset: usize,
        len: usize,
    ) {
        self.copy_range(dst, dst_offset, src, src_offset, len);
    }

    fn copy_range(&self, dst: &mut DeviceBuf<D>, dst_offset: usize, src: &DeviceBuf<D>, src_offset: usize, len: usize) {
        let shapes = format!("dst {dst_offset}..+{len} of {}, src {src_offset}..+{len} of {}", dst.len, src.len);
        assert!(dst_offset + len <= dst.len && src_offset + len <= src.len, "copy_range ({shapes}): out of bounds");
        assert_eq!(dst.dtype, src.dtype, "copy_range ({shapes}): {} into {}", src.dtype, dst.dtype);
        if len == 0 {
            return;
        }
        if dst.dtype == Dtype::Bf16 {
            // Whole words on the device when both ranges start on a word (rows of even width,
            // every GPT-2 shape); a range that splits a word goes through the host.
            let whole = len / 2;
            if dst_offset % 2 == 1 || src_offset % 2 == 1 || (len % 2 == 1 && dst_offset + len < dst.len) {
                self.copy_bf16_on_host(dst, dst_offset, src, src_offset, len);
                return;
            }
            // An odd tail that ends the destination may copy the source word whole: the half
            // past the end is padding.
            let words = whole + len % 2;
            let r = self.dev.dtod(dst.mem_mut(), dst_offset / 2, src.mem(), src_offset / 2, words);
            self.ok("copy_range", &shapes, r);
            return;
        }
        let r = self.dev.dtod(dst.mem_mut(), dst_offset, src.mem(), src_offset, len);
        self.ok("copy_range", &shapes, r);
    }

    fn synchronize(&self) {
        let r = self.dev.synchronize();
        self.ok("synchronize", "", r);
    }

    fn memory(&self) -> Option<MemoryUse> {
        let m = &self.meter;
        Some(MemoryUse {
            now: m.now.load(Ordering::Relaxed),
            peak: m.peak.load(Ordering::Relaxed),
            allocations: m.allocations.load(Ordering::Relaxed),
        })
    }

    fn available_memory(&self) -> Option<u64> {
        self.dev.free_memory()
    }

    fn reset_peak_memory(&self) {
        self.meter.peak.store(self.meter.now.load(Ordering::Relaxed), Ordering::Relaxed);
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

    #[test]
    fn resize_allocates_only_past_capacity_and_keeps_values() {
        let k = EmuBackend::emulated();
        let m0 = k.memory().unwrap();
        let used = |k: &EmuBackend| {
            let m = k.memory().unwrap();
            (m.allocations - m0.allocations, m.now - m0.now, m.peak - m0.now)
        };
        let mut b = k.upload(&[1.0, 2.0, 3.0, 4.0]);
        k.resize(&mut b, 2);
        assert_eq!((k.len(&b), b.capacity()), (2, 4));
        assert_eq!(k.download(&b), [1.0, 2.0]);
        // Regrown within capacity: the values past the old length are zero, not stale.
        k.resize(&mut b, 3);
        assert_eq!(k.download(&b), [1.0, 2.0, 0.0]);
        assert_eq!(used(&k), (1, 16, 16), "the meter counts the capacity");
        // Past capacity: one allocation, the values kept, the old allocation freed.
        k.resize(&mut b, 6);
        assert_eq!(k.download(&b), [1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(used(&k), (2, 24, 40));
        // An empty buffer regrown is freed before its replacement is made.
        k.reset_peak_memory();
        k.resize(&mut b, 0);
        k.resize(&mut b, 8);
        assert_eq!(k.download(&b), [0.0; 8]);
        assert_eq!(used(&k), (3, 32, 32));
        drop(b);
        assert_eq!(used(&k).1, 0);
    }

    #[test]
    fn op_workspaces_are_lent_from_a_pool_zeroed() {
        let k = EmuBackend::emulated();
        let a0 = k.memory().unwrap().allocations;
        {
            let mut s = k.scratch("test", 10);
            k.write(&mut s, &[7.0; 10]);
        }
        // The smallest free workspace that fits is lent again, zeroed, at the asked length.
        let s = k.scratch("test", 4);
        assert_eq!(k.download(&s), [0.0; 4]);
        // Two at once need two; a larger one replaces the outgrown free one.
        let t = k.scratch("test", 3);
        drop((s, t));
        let _u = k.scratch("test", 20);
        assert_eq!(k.memory().unwrap().allocations - a0, 3);
    }
}
