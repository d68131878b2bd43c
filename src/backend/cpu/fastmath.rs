//! `exp` and `tanh` written in plain arithmetic so that loops calling them vectorise (libm
//! calls cannot), and a dot product with fixed partial-sum lanes, which vectorises where a
//! strict left-to-right float sum cannot. Accuracy: `exp` within 2 ulp of the correctly rounded result on
//! [−87, 88]; `tanh` within 2e-7 absolute — far below what the golden tests resolve.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part exact in f32 and the remainder (Cody-Waite), so x − k·ln2 keeps
/// full precision.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds an f32 to the nearest integer without `round()`,
/// which baseline x86-64 (SSE2) has no vector instruction for.
const ROUND: f32 = 12_582_912.0;

/// eˣ for x ≤ 88; inputs below −87 return e⁻⁸⁷ ≈ 1.6e-38 instead of a denormal or zero.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    // Minimax polynomial for e^r − 1 − r on |r| ≤ ln2/2 (Cephes' coefficients).
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^k from its exponent bits; k is in [−126, 127] after the clamp.
    er * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// tanh(x) = 1 − 2/(e^{2x} + 1): exact limits ±1, absolute error ≤ 2e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Σ a·b with 16 independent partial sums: a strict left-to-right float sum cannot be
/// vectorised, this can (and its order is still fixed, so results stay reproducible).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        let mut x = -12.0f32;
        while x < 12.0 {
            worst_tanh = worst_tanh.max((tanh(x) as f64 - (x as f64).tanh()).abs());
            x += 0.00093;
        }
        assert!(worst_exp < 2.5e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(exp(-200.0) < 1e-37 && exp(-200.0) >= 0.0);
    }

    #[test]
    fn lane_dot_matches_f64() {
        for n in [0usize, 1, 15, 16, 17, 100, 769] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.3).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "dot n={n}");
        }
    }
}
