//! Choosing one token from one row of logits: greedy, or temperature → top-k → top-p
//! (nucleus) → an inverse-CDF draw with a given uniform. This is the CPU oracle of
//! [`SamplingOps::sample`]; `kernels/sampling.cu` implements the
//! same rules on the device.
//!
//! The order follows transformers' logits warpers: top-k keeps the k highest tempered
//! logits; top-p then keeps, among those and renormalised over them, the smallest set of
//! most probable tokens whose mass reaches top_p. Ties are broken by the lower token id
//! everywhere, so the kept set and the draw order are functions of the logits alone.

use super::CpuBackend;
use crate::backend::ops::{check_sample_rows, SamplingOps};
pub use crate::backend::sampling::{SampleError, SampleParams, Sampled};

/// The kept tokens and their probabilities (renormalised over the kept set, summing to 1)
/// in draw order: token id order when nothing is truncated, else decreasing probability.
/// Errors if the row has a NaN or +∞, or no finite logit at all.
pub fn truncated_distribution(logits: &[f32], cfg: &SampleParams) -> Result<Vec<(u32, f64)>, SampleError> {
    let inv_t = inv_temperature(cfg);
    let z = tempered(logits, inv_t)?;
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut kept: Vec<(u32, f64)> = z.iter().enumerate().map(|(j, &x)| (j as u32, (x as f64 - m).exp())).collect();
    // Decreasing probability, ties by lower id: a total order, so the kept set and the draw
    // order do not depend on how the sort proceeds.
    let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if cfg.top_k > 0 && cfg.top_k < kept.len() {
        // Select the k best in O(V); only those are sorted.
        kept.select_nth_unstable_by(cfg.top_k - 1, order);
        kept.truncate(cfg.top_k);
        kept.sort_unstable_by(order);
    }
    if cfg.top_p < 1.0 {
        let target = cfg.top_p as f64 * kept.iter().map(|x| x.1).sum::<f64>();
        // The nucleus is a prefix of the sorted order and usually short, so sort a head of
        // n candidates (selected in O(V)) and grow n until the head reaches the target;
        // the prefix sums are the same as after a full sort.
        let mut n = kept.len().min(64);
        loop {
            if n < kept.len() {
                kept.select_nth_unstable_by(n - 1, order);
            }
            kept[..n].sort_unstable_by(order);
            let mut cum = 0.0;
            let reached = kept[..n].iter().position(|x| {
                cum += x.1;
                cum >= target
            });
            match reached {
                Some(i) => {
                    kept.truncate(i + 1);
                    break;
                }
                // Rounding can leave the full sum a hair below top_p · total: keep all.
                None if n == kept.len() => break,
                // ×4 (and the whole row once a quarter is reached) bounds the worst case, a
                // near-flat distribution, to about twice the cost of one full sort.
                None => n = if 4 * n >= kept.len() { kept.len() } else { 4 * n },
            }
        }
    }
    // Tokens at −∞ (masked) have zero mass; drop them so a draw can never pick one.
    kept.retain(|x| x.1 > 0.0);
    let total: f64 = kept.iter().map(|x| x.1).sum();
    kept.iter_mut().for_each(|x| x.1 /= total);
    Ok(kept)
}

/// Samples one token from `logits` (V) with the uniform `u` in [0, 1): greedy (argmax,
/// lowest id on ties) when the temperature is 0, else the first kept token (in
/// [`truncated_distribution`]'s order) whose cumulative probability exceeds `u`.
pub fn sample(logits: &[f32], cfg: &SampleParams, u: f64) -> Result<Sampled, SampleError> {
    let inv_t = inv_temperature(cfg);
    let token = if cfg.temperature == 0.0 {
        let z = tempered(logits, inv_t)?;
        // max_by keeps the last maximum; scanning for a strictly greater value keeps the first.
        let mut best = 0usize;
        for (j, &x) in z.iter().enumerate() {
            if x > z[best] {
                best = j;
            }
        }
        best as u32
    } else {
        let kept = truncated_distribution(logits, cfg)?;
        let mut cum = 0.0;
        // Rounding can leave the last cumulative sum just below u; the last token takes it.
        kept.iter()
            .find(|x| {
                cum += x.1;
                cum > u
            })
            .unwrap_or(kept.last().expect("at least one finite logit"))
            .0
    };
    Ok(Sampled { token, logprob: log_softmax_at(logits, inv_t, token as usize) })
}

/// `log softmax(logits · inv_t)[j]`, with z = logits · inv_t rounded to f32 as the
/// objective's log-prob op forms it, then reduced in f64.
pub fn log_softmax_at(logits: &[f32], inv_t: f32, j: usize) -> f32 {
    let m = logits.iter().map(|&x| x * inv_t).fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = logits.iter().map(|&x| ((x * inv_t) as f64 - m).exp()).sum();
    ((logits[j] * inv_t) as f64 - m - s.ln()) as f32
}

/// 1/T, or 1 for greedy (whose log-probs are those of the untempered model).
fn inv_temperature(cfg: &SampleParams) -> f32 {
    if cfg.temperature == 0.0 {
        1.0
    } else {
        1.0 / cfg.temperature
    }
}

/// logits · inv_t, rejecting rows no distribution can be made from.
fn tempered(logits: &[f32], inv_t: f32) -> Result<Vec<f32>, SampleError> {
    if let Some((j, &x)) = logits.iter().enumerate().find(|(_, x)| x.is_nan() || **x == f32::INFINITY) {
        return Err(SampleError::NonFinite { token: j as u32, value: x });
    }
    if !logits.iter().any(|x| x.is_finite()) {
        return Err(SampleError::AllMasked);
    }
    let z: Vec<f32> = logits.iter().map(|&x| x * inv_t).collect();
    if z.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
        return Err(SampleError::TemperatureOverflow { temperature: 1.0 / inv_t });
    }
    Ok(z)
}

impl SamplingOps for CpuBackend {
    fn sample(
        &self,
        logits: &Vec<f32>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<Result<Sampled, SampleError>> {
        use rayon::prelude::*;
        check_sample_rows(logits.len(), counters.len(), v);
        // Row by row with [`sample`], each with the uniform of its (sequence, position).
        self.run(|| {
            logits
                .par_chunks(v)
                .zip(counters.par_iter())
                .map(|(row, &[seq, pos])| sample(row, &p, crate::util::counter_rng::uniform(p.seed, p.step, seq, pos)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32) -> SampleParams {
        SampleParams { temperature, top_k, top_p, seed: 0, step: 0 }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let logits = [0.5, 2.0, -1.0, 2.0];
        let s = sample(&logits, &cfg(0.0, 0, 1.0), 0.99).unwrap();
        assert_eq!(s.token, 1);
        let want = 2.0 - logits.iter().map(|&x: &f32| (x as f64).exp()).sum::<f64>().ln();
        assert!((s.logprob as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_keep_the_expected_sets() {
        // Probabilities ∝ e^x: tokens 3 and 1 tie; top-k 2 keeps ids 1 and 3 (the tie
        // resolved by the lower id first in the draw order) over 0.
        let logits = [0.0f32, 1.0, -5.0, 1.0];
        let kept = truncated_distribution(&logits, &cfg(1.0, 2, 1.0)).unwrap();
        assert_eq!(kept.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((kept[0].1 - 0.5).abs() < 1e-12);
        // top-p 0.5: token 1 alone holds mass 0.5 of the top-2 set, which reaches 0.5.
        let kept = truncated_distribution(&logits, &cfg(1.0, 2, 0.5)).unwrap();
        assert_eq!(kept, vec![(1, 1.0)]);
        // No truncation: every token, in id order.
        let kept = truncated_distribution(&logits, &cfg(1.0, 0, 1.0)).unwrap();
        assert_eq!(kept.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // Masked (−∞) tokens are never kept.
        let kept = truncated_distribution(&[f32::NEG_INFINITY, 0.0], &cfg(1.0, 0, 1.0)).unwrap();
        assert_eq!(kept, vec![(1, 1.0)]);
    }

    #[test]
    fn the_growing_head_finds_the_same_nucleus_as_a_full_sort() {
        // Nearly flat logits over 5000 tokens put the 0.9 nucleus far beyond the first head
        // of 64, so the head is grown several times.
        let mut rng = crate::util::rng::Rng::new(3);
        let logits: Vec<f32> = (0..5000).map(|_| rng.normal() * 0.5).collect();
        let kept = truncated_distribution(&logits, &cfg(1.0, 0, 0.9)).unwrap();
        let mut all: Vec<(u32, f64)> = logits.iter().enumerate().map(|(j, &x)| (j as u32, (x as f64).exp())).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = all.iter().map(|x| x.1).sum();
        let mut cum = 0.0;
        let n = all.iter().position(|x| {
            cum += x.1 / total;
            cum >= 0.9
        });
        assert!(kept.len() > 1000);
        assert_eq!(
            kept.iter().map(|x| x.0).collect::<Vec<_>>(),
            all[..=n.unwrap()].iter().map(|x| x.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn inverse_cdf_walks_the_kept_tokens_in_order() {
        let logits = [0.0f32, 0.0, 0.0, 0.0];
        let c = cfg(1.0, 0, 1.0);
        let picks: Vec<u32> =
            [0.0, 0.24, 0.26, 0.74, 0.76, 0.999_999].iter().map(|&u| sample(&logits, &c, u).unwrap().token).collect();
        assert_eq!(picks, vec![0, 0, 1, 2, 3, 3]);
    }

    #[test]
    fn bad_rows_are_errors() {
        let c = cfg(1.0, 0, 1.0);
        assert!(sample(&[0.0, f32::NAN], &c, 0.5).is_err());
        assert!(sample(&[0.0, f32::INFINITY], &c, 0.5).is_err());
        assert!(sample(&[f32::NEG_INFINITY; 3], &c, 0.5).is_err());
    }
}
