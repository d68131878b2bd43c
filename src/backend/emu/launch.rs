//! The launch description shared by the emulated device and (later) the CUDA backend: a
//! launch configuration and the `void**` argument list of `cuLaunchKernel`.

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
    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_shared(self, bytes: u32) -> Self {
        Launch { shared_bytes: bytes, ..self }
    }
}

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
/// use gepa_dapo_grn::backend::emu::{DevPtr, KernelArgs};
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
