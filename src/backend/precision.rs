//! How a backend stores activations and multiplies matrices: the one home of `--dtype` and
//! `--matmul-precision`.
//!
//! Mixed precision as llm.c and PyTorch's autocast do it: the master weights, their
//! gradients and AdamW's moments stay f32; in bf16 the matmul weights get a bf16 copy (made
//! after every optimizer step) and the activations the GEMMs read and write (layer-norm
//! outputs, q/k/v, the attention output, the MLP's hidden layer and their gradients) are
//! stored as bf16. GEMMs multiply bf16 operands with f32 accumulation, as tensor cores do.
//! The residual stream, layer-norm statistics, softmax/log-softmax, the losses, KL,
//! advantages and sampling stay f32: the logits come out of the lm_head's GEMM in f32.
//!
//! The CPU backend, the oracle, always computes in f32.

use std::fmt;
use std::str::FromStr;

/// How values are stored in a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE single precision.
    #[default]
    F32,
    /// bfloat16: f32's exponent, an 8-bit significand (7 stored bits), round to nearest even.
    Bf16,
}

impl Dtype {
    /// The suffix of the kernels that take this type (`gelu_forward_bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }

    /// 32-bit words that hold `len` values of this type.
    pub fn words(self, len: usize) -> usize {
        match self {
            Dtype::F32 => len,
            Dtype::Bf16 => len.div_ceil(2),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            _ => Err(format!("unknown dtype `{s}` (expected f32 or bf16)")),
        }
    }
}

/// How f32 matrix products are computed on a GPU (bf16 products always use bf16 tensor cores
/// with f32 accumulation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulPrecision {
    /// True f32 products: cuBLASLt's pedantic f32 compute (no TF32, no reduced-precision
    /// split), so a GPU run is held to the CPU oracle's tolerances.
    #[default]
    F32,
    /// TF32 tensor cores: operands rounded to a 10-bit significand, f32 accumulation
    /// (PyTorch's `allow_tf32`).
    Tf32,
}

impl MatmulPrecision {
    /// `f32` or `tf32`.
    pub fn name(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Tf32 => "tf32",
        }
    }
}

impl fmt::Display for MatmulPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MatmulPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "highest" => Ok(MatmulPrecision::F32),
            "tf32" | "high" => Ok(MatmulPrecision::Tf32),
            _ => Err(format!("unknown matmul precision `{s}` (expected f32 or tf32)")),
        }
    }
}

/// A backend's precision: how activations are stored and how f32 products are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Precision {
    /// Storage of the GEMM-facing activations and the weights' compute copies.
    pub dtype: Dtype,
    /// How products of f32 operands are computed (only with `dtype` f32).
    pub matmul: MatmulPrecision,
}

impl Precision {
    /// f32 everywhere, true f32 products: the CPU oracle's arithmetic.
    pub const F32: Precision = Precision { dtype: Dtype::F32, matmul: MatmulPrecision::F32 };
    /// f32 storage, TF32 products.
    pub const TF32: Precision = Precision { dtype: Dtype::F32, matmul: MatmulPrecision::Tf32 };
    /// bf16 mixed precision.
    pub const BF16: Precision = Precision { dtype: Dtype::Bf16, matmul: MatmulPrecision::Tf32 };

    /// The default on a GPU: bf16 mixed precision (TRL's `bf16=True`, llm.c's default), TF32
    /// for whatever f32 products remain.
    pub const GPU_DEFAULT: Precision = Precision::BF16;

    /// "bf16", "f32" or "f32 (tf32 matmuls)", for logs.
    pub fn describe(self) -> String {
        match (self.dtype, self.matmul) {
            (Dtype::Bf16, _) => "bf16 mixed precision (f32 master weights)".into(),
            (Dtype::F32, MatmulPrecision::F32) => "f32".into(),
            (Dtype::F32, MatmulPrecision::Tf32) => "f32 (tf32 matmuls)".into(),
        }
    }
}

/// `x` rounded to bf16 and back to f32: round to nearest, ties to even, NaN kept a (quiet)
/// NaN, overflow to ±∞; bit for bit what `kernels/common.cuh`'s `f32_to_bf16` does.
pub fn round_bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// The bf16 bits of `x` (see [`round_bf16`]).
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x0040) as u16;
    }
    let rounding = 0x7fff + ((u >> 16) & 1);
    (u.wrapping_add(rounding) >> 16) as u16
}

/// The f32 value of bf16 bits (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `values` as bf16, two per 32-bit word (value 2i in the low half of word i, little-endian
/// like the device), the last word's high half zero when the count is odd.
pub fn pack_bf16(values: &[f32]) -> Vec<u32> {
    values
        .chunks(2)
        .map(|p| u32::from(f32_to_bf16(p[0])) | p.get(1).map_or(0, |&x| u32::from(f32_to_bf16(x)) << 16))
        .collect()
}

/// The first `len` bf16 values of packed `words`, as f32.
pub fn unpack_bf16(words: &[u32], len: usize) -> Vec<f32> {
    (0..len).map(|i| bf16_to_f32((words[i / 2] >> (16 * (i % 2))) as u16)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_the_half_crate_and_round_trips() {
        let mut rng = crate::util::rng::Rng::new(3);
        let specials = [0.0, -0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1e-40];
        let xs: Vec<f32> = specials.into_iter().chain((0..10_000).map(|_| rng.normal() * 100.0)).collect();
        for &x in &xs {
            assert_eq!(f32_to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x}");
        }
        // Ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert!(round_bf16(f32::NAN).is_nan());
        let packed = pack_bf16(&xs[..7]);
        assert_eq!(packed.len(), 4);
        let back = unpack_bf16(&packed, 7);
        assert!(back.iter().zip(&xs).all(|(b, x)| b.to_bits() == round_bf16(*x).to_bits()));
    }

    #[test]
    fn names_parse_both_ways() {
        for d in [Dtype::F32, Dtype::Bf16] {
            assert_eq!(d.name().parse::<Dtype>().unwrap(), d);
        }
        for m in [MatmulPrecision::F32, MatmulPrecision::Tf32] {
            assert_eq!(m.name().parse::<MatmulPrecision>().unwrap(), m);
        }
        assert!("f16".parse::<Dtype>().unwrap_err().contains("expected f32 or bf16"));
        assert_eq!(Dtype::Bf16.words(5), 3);
    }
}
