//! The CPU backend: f32 everywhere, multi-threaded with rayon, matmuls through `gemm` (and,
//! for the few-row products of decode steps, the streaming kernels of `skinny`).
//!
//! It is the numerical oracle the CUDA kernels are checked against, so each op is written to
//! be read next to its equation: one file per op family, holding the family's trait
//! implementation; the oracles other layers call on host slices (GRN, sampling, advantages)
//! are public there. Reductions use fixed blocking, so
//! for a given thread count results are bit-for-bit reproducible.

pub mod advantage;
mod attention;
mod cross_entropy;
mod encoder;
mod fastmath;
mod gelu;
pub mod grn;
mod layernorm;
mod logprob;
pub(crate) mod matmul;
mod optim;
mod policy_loss;
pub mod sampling;
mod simd;
mod skinny;

pub(crate) use policy_loss::vespo_phi;

use crate::backend::ops::MemoryOps;
use crate::backend::precision::Dtype;
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
        let builder = || rayon::ThreadPoolBuilder::new().num_threads(n).thread_name(|i| format!("dapo-cpu-{i}"));
        // The thread that makes the backend (the CLI's main thread, a test's thread) joins the
        // pool as worker 0, so each op runs on it directly instead of being handed to a pool
        // thread and waited for: two thread wake-ups per op, which at tiny model sizes cost as
        // much as the op. Only with 2+ threads: ops called from another thread then still
        // have a spawned worker to run on while the owner thread is busy elsewhere. A thread
        // can be in one pool only; a second backend made on it gets a pool of its own threads.
        let pool = if n > 1 {
            builder().use_current_thread().build().or_else(|_| builder().build())
        } else {
            builder().build()
        };
        let pool = pool.expect("building a rayon pool only fails if threads cannot be spawned");
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

/// Values an op's parallel task should cover at least: rows of fewer values are grouped so that
/// a tiny model's ops (C = 64 rows of a layer norm, say) are not split into tasks smaller than
/// the cost of handing them to another thread. Splitting never changes what a row computes.
const MIN_TASK_VALUES: usize = 8192;

/// `with_min_len` for a parallel loop over rows of `row_len` values.
fn rows_per_task(row_len: usize) -> usize {
    (MIN_TASK_VALUES / row_len.max(1)).max(1)
}

/// `dst[dst_offset..+len] = src[src_offset..+len]`, or a panic naming `op` when either span
/// is out of bounds: [`MemoryOps::copy_range`] and its ids twin.
fn copy_span<T: Copy>(op: &str, dst: &mut [T], dst_offset: usize, src: &[T], src_offset: usize, len: usize) {
    assert!(
        dst_offset + len <= dst.len() && src_offset + len <= src.len(),
        "{op}: [{src_offset}, +{len}) of {} values into [{dst_offset}, +{len}) of {}",
        src.len(),
        dst.len()
    );
    dst[dst_offset..dst_offset + len].copy_from_slice(&src[src_offset..src_offset + len]);
}

impl MemoryOps for CpuBackend {
    type Buf = Vec<f32>;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn alloc_as(&self, len: usize, dtype: Dtype) -> Vec<f32> {
        assert_eq!(dtype, Dtype::F32, "the CPU backend computes in f32 only");
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
    fn ids_len(&self, ids: &Vec<u32>) -> usize {
        ids.len()
    }
    fn resize(&self, buf: &mut Vec<f32>, len: usize) {
        // Vec::resize keeps the capacity when it shrinks, and zero-fills when it grows.
        buf.resize(len, 0.0);
    }
    fn resize_ids(&self, ids: &mut Vec<u32>, len: usize) {
        ids.resize(len, 0);
    }
    fn copy_ids_range(&self, dst: &mut Vec<u32>, dst_offset: usize, src: &Vec<u32>, src_offset: usize, len: usize) {
        copy_span("copy_ids_range", dst, dst_offset, src, src_offset, len);
    }
    fn zero(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }
    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.copy_from_slice(src);
    }
    fn copy_range(&self, dst: &mut Vec<f32>, dst_offset: usize, src: &Vec<f32>, src_offset: usize, len: usize) {
        copy_span("copy_range", dst, dst_offset, src, src_offset, len);
    }
}
