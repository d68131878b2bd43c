//! The emulated device's memory, copies, GEMM and timer ([`Device`] for [`EmuDevice`]).
//!
//! "Device memory" is a host allocation owned through a raw pointer, so kernels may write
//! through the [`DevPtr`] a launch was given while Rust holds only this handle (a `&mut [u32]`
//! kept alive across the launch would alias the kernel's writes). The GEMM is the CPU
//! backend's matmul: the emulator stands in for our kernels, not for cuBLAS.

use super::{EmuDevice, EmuError};
use crate::backend::cpu::matmul;
use crate::backend::device::{word_range, Device, GemmTypes};
use crate::backend::launch::DevPtr;
use crate::backend::precision::{pack_bf16, unpack_bf16, Dtype, MatmulPrecision};
use crate::backend::Gemm;

/// One emulated allocation of 32-bit words, 16-byte aligned like a device allocation (the
/// kernels' 16-byte vector loads need it; cudaMalloc gives at least 256).
pub struct EmuMem {
    ptr: *mut u32,
    /// Words.
    len: usize,
}

// SAFETY: `EmuMem` owns its allocation exclusively (like a `Box<[u32]>`); the raw pointer is
// only dereferenced through `&self`/`&mut self` methods or by a launch the caller made safe.
unsafe impl Send for EmuMem {}
// SAFETY: shared access only reads (`words`); writes need `&mut EmuMem` or an unsafe launch.
unsafe impl Sync for EmuMem {}

impl EmuMem {
    fn new(words: usize) -> Self {
        let len = words.max(1);
        // Whole 16-byte units: u128's alignment is 16 on x86-64 and aarch64.
        let v = vec![0u128; len.div_ceil(4)].into_boxed_slice();
        EmuMem { ptr: Box::into_raw(v) as *mut u32, len }
    }

    /// The words (no launch runs concurrently: emulated launches are synchronous).
    pub fn words(&self) -> &[u32] {
        // SAFETY: `ptr` points at the live allocation made in `new`, which holds at least
        // `len` words; emulated launches have returned before any safe method can be called
        // again.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The words, mutably.
    pub fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as `words`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn f32s(&self) -> &[f32] {
        bytemuck::cast_slice(self.words())
    }

    fn f32s_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(self.words_mut())
    }
}

impl Drop for EmuMem {
    fn drop(&mut self) {
        let units = self.len.div_ceil(4);
        // SAFETY: `ptr` comes from `Box::into_raw` of a `Box<[u128]>` of `units` elements in
        // `new`, and is freed only here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr as *mut u128, units)) });
    }
}

/// `xs` rounded to TF32: the 13 low mantissa bits dropped, rounding to nearest with ties away
/// from zero (PTX's `cvt.rna.tf32.f32`, which tensor-core matmuls of f32 data apply). Non-finite
/// values pass through.
pub fn to_tf32(xs: &[f32]) -> Vec<f32> {
    xs.iter()
        .map(|&x| if x.is_finite() { f32::from_bits(x.to_bits().wrapping_add(0x1000) & !0x1fff) } else { x })
        .collect()
}

/// An out-of-range copy: the emulator reports what the device would fault on.
fn range(what: &'static str, offset: usize, words: usize, len: usize) -> Result<std::ops::Range<usize>, EmuError> {
    word_range(offset, words, len).ok_or(EmuError::OutOfBounds(what, offset, words, len))
}

impl Device for EmuDevice {
    type Mem = EmuMem;

    fn describe(&self) -> String {
        "emulated CUDA device (kernels/*.cu compiled for the host; GEMMs on the CPU matmul)".into()
    }

    fn alloc(&self, words: usize) -> Result<EmuMem, EmuError> {
        Ok(EmuMem::new(words))
    }

    fn ptr(&self, mem: &EmuMem) -> DevPtr {
        DevPtr(mem.ptr as u64)
    }

    fn ptr_mut(&self, mem: &mut EmuMem) -> DevPtr {
        DevPtr(mem.ptr as u64)
    }

    fn htod(&self, dst: &mut EmuMem, offset: usize, src: &[u32]) -> Result<(), EmuError> {
        let r = range("htod", offset, src.len(), dst.len)?;
        dst.words_mut()[r].copy_from_slice(src);
        Ok(())
    }

    fn dtoh(&self, src: &EmuMem, offset: usize, dst: &mut [u32]) -> Result<(), EmuError> {
        let r = range("dtoh", offset, dst.len(), src.len)?;
        dst.copy_from_slice(&src.words()[r]);
        Ok(())
    }

    fn dtod(
        &self,
        dst: &mut EmuMem,
        dst_offset: usize,
        src: &EmuMem,
        src_offset: usize,
        words: usize,
    ) -> Result<(), EmuError> {
        let rs = range("dtod source", src_offset, words, src.len)?;
        let rd = range("dtod destination", dst_offset, words, dst.len)?;
        dst.words_mut()[rd].copy_from_slice(&src.words()[rs]);
        Ok(())
    }

    fn zero(&self, mem: &mut EmuMem, offset: usize, words: usize) -> Result<(), EmuError> {
        let r = range("memset", offset, words, mem.len)?;
        mem.words_mut()[r].fill(0);
        Ok(())
    }

    fn gemm(
        &self,
        out: &mut EmuMem,
        a: &EmuMem,
        b: &EmuMem,
        bias: Option<&EmuMem>,
        g: Gemm,
        types: GemmTypes,
    ) -> Result<(), EmuError> {
        let (mn, mk, kn) = (g.m * g.n, g.m * g.k, g.k * g.n);
        range("gemm out", 0, types.out.words(mn), out.len)?;
        range("gemm a", 0, types.inputs.words(mk), a.len)?;
        range("gemm b", 0, types.inputs.words(kn), b.len)?;
        let bias = match bias {
            Some(x) => Some(&x.f32s()[range("gemm bias", 0, g.n, x.len)?]),
            None => None,
        };
        // Tensor cores read bf16 exactly and TF32 after rounding; both accumulate in f32, which
        // the CPU's f32 matmul stands in for (in its own summation order).
        let operand = |m: &EmuMem, n: usize| -> Vec<f32> {
            match (types.inputs, types.matmul) {
                (Dtype::Bf16, _) => unpack_bf16(m.words(), n),
                (Dtype::F32, MatmulPrecision::Tf32) => to_tf32(&m.f32s()[..n]),
                (Dtype::F32, MatmulPrecision::F32) => m.f32s()[..n].to_vec(),
            }
        };
        let (a, b) = (operand(a, mk), operand(b, kn));
        match types.out {
            Dtype::F32 => matmul::matmul(&mut out.f32s_mut()[..mn], &a, &b, bias, g),
            Dtype::Bf16 => {
                // The product (plus the old out) in f32, rounded once on the store, as a bf16
                // epilogue does.
                let mut acc = if g.accumulate { unpack_bf16(out.words(), mn) } else { vec![0.0; mn] };
                matmul::matmul(&mut acc, &a, &b, bias, g);
                let packed = pack_bf16(&acc);
                out.words_mut()[..packed.len()].copy_from_slice(&packed);
            }
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), EmuError> {
        Ok(())
    }

    fn free_memory(&self) -> Option<u64> {
        crate::util::mem::host_available()
    }

    fn time_ms(&self, run: &mut dyn FnMut() -> Result<(), EmuError>) -> Result<f64, EmuError> {
        let t = std::time::Instant::now();
        run()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::to_tf32;

    #[test]
    fn tf32_keeps_ten_mantissa_bits_rounding_half_away_from_zero() {
        let ulp = 2f32.powi(-10);
        let got =
            to_tf32(&[1.0 + ulp / 2.0, 1.0 + ulp / 4.0, -(1.0 + ulp / 2.0), 1.0 + 3.0 * ulp / 4.0, 2.0 - ulp / 4.0]);
        assert_eq!(got, vec![1.0 + ulp, 1.0, -(1.0 + ulp), 1.0 + ulp, 2.0]);
        assert!(to_tf32(&[f32::NAN])[0].is_nan() && to_tf32(&[f32::NEG_INFINITY])[0] == f32::NEG_INFINITY);
        // Relative error at most half a TF32 ulp, 2^-11.
        let mut rng = crate::util::rng::Rng::new(9);
        let xs: Vec<f32> = (0..10_000).map(|_| rng.normal() * 1e3).collect();
        for (x, t) in xs.iter().zip(to_tf32(&xs)) {
            assert!(((t - x) / x).abs() <= 2f32.powi(-11) * 1.000_001, "{x} -> {t}");
            assert_eq!(t.to_bits() & 0x1fff, 0);
        }
    }
}
