//! A counter-based random number generator: Philox4x32-10 (Salmon et al., "Parallel random
//! numbers: as easy as 1, 2, 3", SC 2011), as in Random123 and cuRAND.
//!
//! Sampling draws one uniform per (seed, step, sequence, position) as a pure function of
//! those four numbers, with no generator state carried between draws. That is what makes a
//! rollout reproducible regardless of how it was computed: a sequence's tokens do not depend
//! on which other sequences share its batch, on the order in which sequences finish, or on
//! how many threads ran; and a CUDA kernel can evaluate the same function on the device (ten
//! rounds of 32-bit multiplies, nothing else) and draw the same tokens as the CPU.
//!
//! Layout: the 64-bit key is the seed; the 128-bit counter is (position, sequence, step low
//! word, step high word).

/// Philox's round multipliers.
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
/// The Weyl sequence that bumps the key between rounds (golden ratio and √3 − 1).
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32-10 block function: 128 random bits from a 128-bit counter and a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// A uniform f64 in [0, 1) with 53 random bits, a pure function of its four arguments.
pub fn uniform(seed: u64, step: u64, sequence: u32, position: u32) -> f64 {
    let x = philox4x32_10([position, sequence, step as u32, (step >> 32) as u32], [seed as u32, (seed >> 32) as u32]);
    let bits = (((x[0] as u64) << 32) | x[1] as u64) >> 11;
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_random123_known_answers() {
        // Random123's kat_vectors, the three `philox4x32 10` lines.
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:x?} key {key:x?}");
        }
    }

    #[test]
    fn uniforms_are_uniform_and_every_coordinate_matters() {
        // 64 equal bins over 64k draws that walk the position and sequence words: a
        // chi-square with 63 degrees of freedom stays below 110 with probability > 0.9998.
        let bins = 64;
        let mut counts = vec![0usize; bins];
        let n = 1 << 16;
        for i in 0..n as u32 {
            let u = uniform(12345, 7, i / 256, i % 256);
            assert!((0.0..1.0).contains(&u));
            counts[(u * bins as f64) as usize] += 1;
        }
        let e = n as f64 / bins as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 110.0, "chi-square {chi2} over {bins} bins: {counts:?}");
        let mean = (0..n as u32).map(|i| uniform(1, 2, 3, i)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");

        let base = uniform(1, 2, 3, 4);
        assert_eq!(base, uniform(1, 2, 3, 4));
        for other in [uniform(0, 2, 3, 4), uniform(1, 1, 3, 4), uniform(1, 2, 2, 4), uniform(1, 2, 3, 5)] {
            assert_ne!(base, other);
        }
        // The high words of seed and step are part of the key and counter too.
        assert_ne!(uniform(1 << 40, 2, 3, 4), uniform(0, 2, 3, 4));
        assert_ne!(uniform(1, 2 | 1 << 40, 3, 4), base);
    }
}
