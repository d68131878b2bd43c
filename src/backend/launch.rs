//! The launch interface both kernel-running devices share, the real GPU
//! ([`crate::backend::cuda`]) and the emulator ([`crate::backend::emu`]): device pointers, the
//! `void**` argument list of `cuLaunchKernel`, a launch configuration and the [`Launcher`]
//! trait the launchers of [`crate::backend::kernel`] are generic over. Because the emulator
//! runs the same launchers, the parity tests check the launch code as well as the kernels.

use std::ffi::c_void;
use std::marker::PhantomData;

/// Grid, block and dynamic shared memory of one kernel launch (cudarc's `LaunchConfig`:
/// `grid_dim`, `block_dim`, `shared_mem_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl Launch {
    /// A 1-D launch of `blocks` blocks of `threads` threads, no dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Launch { grid: (blocks, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
    /// Enough 1-D blocks of `threads` threads to cover `n` elements (at least one block).
    pub fn cover(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads.max(1) as usize).max(1);
        Launch::linear(u32::try_from(blocks).unwrap_or(u32::MAX), threads)
    }
    /// The launch of the grid-stride elementwise kernels for `n` items: ⌈n / 256⌉ blocks of
    /// [`ELEMENTWISE_THREADS`] threads, at most [`ELEMENTWISE_MAX_BLOCKS`], beyond which
    /// threads loop. 1024 blocks of 256 threads is about one full wave on an H100 (132 SMs ×
    /// 2048 resident threads), so larger grids only add scheduling work, and the cap keeps
    /// per-block partial sums (the global norm's) few.
    pub fn elementwise(n: usize) -> Self {
        let blocks = n.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, ELEMENTWISE_MAX_BLOCKS as usize);
        Launch::linear(blocks as u32, ELEMENTWISE_THREADS)
    }
    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_shared(self, bytes: u32) -> Self {
        Launch { shared_bytes: bytes, ..self }
    }
}

/// Threads per block of the elementwise kernels (a multiple of 32, as block reductions need).
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks an elementwise launch uses; past that the grid-stride loops take over.
pub const ELEMENTWISE_MAX_BLOCKS: u32 = 1024;

/// A device pointer as a kernel parameter: `CUdeviceptr` on a GPU, a host address under
/// emulation. Kernel parameters of any pointer type (`float*`, `const unsigned int*`) take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct DevPtr(pub u64);

impl DevPtr {
    /// The address of a host slice's first element, as an emulated device pointer.
    pub fn host<T>(s: &mut [T]) -> Self {
        DevPtr(s.as_mut_ptr() as u64)
    }
    /// The same for data the kernel only reads (a `const T*` parameter).
    pub fn host_const<T>(s: &[T]) -> Self {
        DevPtr(s.as_ptr() as u64)
    }
    /// The address `words` 32-bit values (f32 or u32) further on: a sub-buffer of a workspace.
    pub fn offset(self, words: usize) -> Self {
        DevPtr(self.0 + 4 * words as u64)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Types that can be passed by value as kernel parameters: plain-old-data whose layout is the
/// C type the kernel declares (`u32` ↔ `unsigned int`, `i32` ↔ `int`, `f32` ↔ `float`,
/// `u64` ↔ `unsigned long long`, [`DevPtr`] ↔ any pointer).
pub trait KernelParam: sealed::Sealed + Copy {}
macro_rules! kernel_param {
    ($($t:ty),*) => { $(impl sealed::Sealed for $t {} impl KernelParam for $t {})* };
}
kernel_param!(u32, i32, f32, u64, i64, DevPtr);

/// The argument list of one launch, in the shape `cuLaunchKernel` takes: entry `i` points at
/// the value of the kernel's parameter `i`. The values are borrowed (`'a`), so they stay alive
/// and unmoved while the list exists. The emulator also receives each value's size and checks
/// it against the kernel's parameter types.
///
/// ```
/// use gepa_dapo_grn::backend::launch::{DevPtr, KernelArgs};
/// // For `row_sum_f32(float* out, const float* inp, int rows, int cols)`:
/// let (mut out, inp) = (vec![0.0f32; 7], vec![1.0f32; 7 * 100]);
/// let (out_p, inp_p) = (DevPtr::host(&mut out), DevPtr::host_const(&inp));
/// let (rows, cols) = (7i32, 100i32);
/// let mut args = KernelArgs::new();
/// args.arg(&out_p).arg(&inp_p).arg(&rows).arg(&cols);
/// assert_eq!(args.sizes(), &[8, 8, 4, 4]);
/// assert_eq!(args.as_mut_ptrs().len(), 4); // the `void**` of cuLaunchKernel
/// ```
#[derive(Default)]
pub struct KernelArgs<'a> {
    ptrs: Vec<*mut c_void>,
    sizes: Vec<usize>,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> KernelArgs<'a> {
    /// An empty list.
    pub fn new() -> Self {
        KernelArgs { ptrs: Vec::new(), sizes: Vec::new(), _borrow: PhantomData }
    }
    /// Appends the next parameter.
    pub fn arg<T: KernelParam>(&mut self, value: &'a T) -> &mut Self {
        // The kernel only reads through this pointer (`cuLaunchKernel` copies the values at
        // launch); `*mut` is the C API's spelling.
        self.ptrs.push(value as *const T as *mut c_void);
        self.sizes.push(std::mem::size_of::<T>());
        self
    }
    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.ptrs.len()
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ptrs.is_empty()
    }
    /// The `void**` array `cuLaunchKernel` (and the emulator) takes.
    pub fn as_mut_ptrs(&mut self) -> &mut [*mut c_void] {
        &mut self.ptrs
    }
    /// Byte size of each parameter, in order.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
}

/// A device that can look kernels up by name and launch them (`cuModuleGetFunction` +
/// `cuLaunchKernel`).
pub trait Launcher {
    /// A loaded kernel.
    type Function;
    /// Why a lookup or launch failed.
    type Error: std::error::Error;

    /// The kernel named `name`.
    fn function(&self, name: &str) -> Result<Self::Function, Self::Error>;

    /// Launches `f` over `cfg` with `args` on the device's stream.
    ///
    /// # Safety
    /// Every [`DevPtr`] in `args` must point at device memory valid, for the whole launch, for
    /// every access the kernel makes with that configuration and those arguments, and nothing
    /// else may write that memory (or read what the kernel writes) until the launch completes.
    unsafe fn launch(&self, f: &Self::Function, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), Self::Error>;
}

/// Looks `name` up and launches it: the one call every launcher ends with.
///
/// # Safety
/// As [`Launcher::launch`].
pub(crate) unsafe fn run<L: Launcher>(
    dev: &L,
    name: &str,
    cfg: Launch,
    args: &mut KernelArgs<'_>,
) -> Result<(), L::Error> {
    let f = dev.function(name)?;
    // SAFETY: forwarded from the caller.
    unsafe { dev.launch(&f, cfg, args) }
}

/// Launches `name(out, inp, n)`, an elementwise kernel over `n` values that takes `per_thread`
/// consecutive values per thread (a 16-byte pack) in a grid-stride loop; nothing when n = 0.
/// GELU's and the conversions' launchers.
///
/// # Safety
/// As [`Launcher::launch`]: `out` and `inp` must address the `n` values the kernel reads and
/// writes, without overlapping (unless the kernel works in place on `out`).
pub(crate) unsafe fn run_elementwise<L: Launcher>(
    dev: &L,
    name: &str,
    out: DevPtr,
    inp: DevPtr,
    n: usize,
    per_thread: usize,
) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&inp).arg(&nn);
    // SAFETY: forwarded from the caller.
    unsafe { run(dev, name, Launch::elementwise(n.div_ceil(per_thread)), &mut args) }
}

/// A shape as the kernels' `int`.
///
/// # Panics
/// If it does not fit in an `i32` (the kernels index with 64-bit offsets, but take shapes as `int`).
pub(crate) fn dim(what: &str, v: usize) -> i32 {
    i32::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit in a kernel's int"))
}

/// Threads per block for a block that strides over `work` items: a multiple of 32, at most `max`.
pub(crate) fn threads_for(work: usize, max: u32) -> u32 {
    let w = u32::try_from(work.div_ceil(32) * 32).unwrap_or(u32::MAX);
    w.clamp(32, max)
}

/// `n` as the kernels' 64-bit element count.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).expect("element count fits in i64")
}
