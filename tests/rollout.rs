//! Batched KV-cache generation (`rollout::generate`) on the CPU oracle: the cached passes
//! reproduce the full forward pass, sampling follows the truncated distribution, draws are
//! reproducible and independent of batch composition, and every finish reason fires.

mod common;

use common::rel_err;
use gepa_dapo_grn::backend::cpu::sampling::sample;
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::rollout::{generate, Completion, FinishReason, RolloutKey, SamplingConfig};
use gepa_dapo_grn::util::counter_rng;
use gepa_dapo_grn::util::rng::Rng;

const V: usize = 37;

fn model(seed: u64) -> Gpt2<CpuBackend> {
    let cfg = Gpt2Config::named("tiny", V).unwrap();
    Gpt2::random(CpuBackend::new(Some(2)), cfg, seed).unwrap()
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(V) as u32).collect()
}

/// Logits (T,V) of one whole sequence through the ordinary forward pass.
fn full_logits(m: &mut Gpt2<CpuBackend>, ids: &[u32]) -> Vec<f32> {
    m.forward(ids, 1, ids.len()).unwrap();
    m.logits().unwrap()
}

/// log softmax(row / T)[j] in f64.
fn log_softmax(row: &[f32], t: f32, j: usize) -> f64 {
    let z: Vec<f64> = row.iter().map(|&x| x as f64 / t as f64).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    z[j] - m - z.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// One character per token id, all distinct, so stop strings map back to token positions.
fn decode(ids: &[u32]) -> String {
    ids.iter().map(|&i| char::from_u32(0x41 + i).unwrap()).collect()
}

fn key(seed: u64, step: u64) -> RolloutKey {
    RolloutKey { seed, step }
}

fn sampling(temperature: f32, max_new_tokens: usize) -> SamplingConfig {
    SamplingConfig { temperature, max_new_tokens, ..SamplingConfig::default() }
}

#[test]
fn kv_cache_prefill_and_decode_reproduce_the_full_forward_logits() {
    // The cached passes run the same ops as the full pass; only the matmuls see a different
    // number of rows, which may change the gemm's blocking and so the f32 rounding of each
    // dot product (~1e-7 relative). 1e-5 of the logits' scale leaves room for that and
    // catches any indexing error (which shows up at the scale itself).
    let mut m = model(3);
    let mut rng = Rng::new(11);
    let lens = [3usize, 7, 1, 5];
    let steps = 6;
    let seqs: Vec<Vec<u32>> = lens.iter().map(|&p| random_ids(&mut rng, p + steps)).collect();
    let want: Vec<Vec<f32>> = seqs.iter().map(|s| full_logits(&mut m, s)).collect();
    let prompts: Vec<Vec<u32>> = seqs.iter().zip(lens).map(|(s, p)| s[..p].to_vec()).collect();

    let mut cache = m.kv_cache(lens.len(), 7 + steps).unwrap();
    let got = m.prefill(&mut cache, &prompts).unwrap();
    let mut worst = 0.0f32;
    for (i, &p) in lens.iter().enumerate() {
        worst = worst.max(rel_err(&got[i * V..(i + 1) * V], &want[i][(p - 1) * V..p * V], 1e-3));
    }
    // Sequences drop out at different steps, as finished ones do in generation.
    for step in 0..steps - 1 {
        let active: Vec<usize> = (0..lens.len()).filter(|&i| step < steps - 1 - i).collect();
        if active.is_empty() {
            break;
        }
        let tokens: Vec<u32> = active.iter().map(|&i| seqs[i][lens[i] + step]).collect();
        let got = m.decode_step(&mut cache, &active, &tokens).unwrap();
        for (r, &i) in active.iter().enumerate() {
            let at = lens[i] + step;
            assert_eq!(cache.len(i), at + 1);
            worst = worst.max(rel_err(&got[r * V..(r + 1) * V], &want[i][at * V..(at + 1) * V], 1e-3));
        }
    }
    println!("max relative logit difference, cached vs full forward: {worst:.2e}");
    assert!(worst < 1e-5, "cached logits differ from the full forward by {worst}");
}

#[test]
fn kv_cache_rejects_bad_input() {
    let m = model(3);
    let mut cache = m.kv_cache(2, 8).unwrap();
    assert!(m.kv_cache(1, 129).is_err());
    assert!(m.prefill(&mut cache, &[vec![1]]).is_err()); // wrong batch
    assert!(m.prefill(&mut cache, &[vec![1], vec![]]).is_err());
    assert!(m.prefill(&mut cache, &[vec![1], vec![V as u32]]).is_err());
    assert!(m.prefill(&mut cache, &[vec![1], vec![0; 9]]).is_err()); // longer than T_max
    assert!(m.decode_step(&mut cache, &[0], &[1]).is_err()); // not prefilled
    m.prefill(&mut cache, &[vec![1], vec![0; 8]]).unwrap();
    assert!(m.decode_step(&mut cache, &[1], &[1]).is_err()); // full
    assert!(m.decode_step(&mut cache, &[0, 0], &[1, 1]).is_err());
    assert!(m.decode_step(&mut cache, &[2], &[1]).is_err());
    assert!(m.decode_step(&mut cache, &[0], &[V as u32]).is_err());
    m.decode_step(&mut cache, &[0], &[1]).unwrap();
}

#[test]
fn sampled_frequencies_match_the_truncated_distribution() {
    let logits = [1.2f32, -0.3, 2.0, 0.1, 1.9, -1.0, 0.6, 0.8, 0.4, -2.0, 1.1, 0.0];
    let cfg = SamplingConfig { temperature: 0.8, top_k: 5, top_p: 0.9, ..SamplingConfig::default() };
    // The expected distribution, derived here independently of the sampler: softmax of
    // logits/T, the 5 most probable, renormalised, then the smallest prefix reaching 0.9.
    let mut p: Vec<(usize, f64)> = logits.iter().map(|&x| (x as f64 / 0.8).exp()).enumerate().collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    p.truncate(5);
    let total: f64 = p.iter().map(|x| x.1).sum();
    let mut cum = 0.0;
    let keep = p.iter().position(|x| {
        cum += x.1 / total;
        cum >= 0.9
    });
    p.truncate(keep.unwrap() + 1);
    let total: f64 = p.iter().map(|x| x.1).sum();
    assert_eq!(p.len(), 4, "the logits were chosen so that top-p cuts the top-5 set to 4");

    let n = 20_000;
    let mut counts = vec![0usize; logits.len()];
    for i in 0..n {
        let u = counter_rng::uniform(42, 0, 0, i);
        counts[sample(&logits, &cfg.params(RolloutKey { seed: 0, step: 0 }), u).unwrap().token as usize] += 1;
    }
    let kept: Vec<usize> = p.iter().map(|x| x.0).collect();
    for (j, &c) in counts.iter().enumerate() {
        assert!(c == 0 || kept.contains(&j), "token {j} is outside the truncated set but was drawn {c} times");
    }
    let chi2: f64 = p
        .iter()
        .map(|&(j, w)| {
            let e = n as f64 * w / total;
            (counts[j] as f64 - e).powi(2) / e
        })
        .sum();
    // χ² with 3 degrees of freedom exceeds 16.27 with probability 0.001.
    println!("chi-square {chi2:.2} over tokens {kept:?}, counts {counts:?}");
    assert!(chi2 < 16.27, "chi-square {chi2} (counts {counts:?})");
}

fn tokens(cs: &[Completion]) -> Vec<Vec<u32>> {
    cs.iter().map(|c| c.tokens.clone()).collect()
}

#[test]
fn same_key_same_tokens_and_sequences_do_not_depend_on_their_batch() {
    let mut m = model(5);
    let mut rng = Rng::new(2);
    let prompts: Vec<Vec<u32>> = [4usize, 9, 2, 6].iter().map(|&n| random_ids(&mut rng, n)).collect();
    let cfg = SamplingConfig { top_k: 20, top_p: 0.95, ..sampling(1.0, 20) };
    let a = generate(&mut m, &prompts, &cfg, key(7, 3), None).unwrap();
    let b = generate(&mut m, &prompts, &cfg, key(7, 3), None).unwrap();
    assert_eq!(tokens(&a), tokens(&b));
    assert!(a.iter().enumerate().all(|(i, c)| c.prompt_index == i && c.tokens.len() == 20));
    assert_ne!(tokens(&a), tokens(&generate(&mut m, &prompts, &cfg, key(8, 3), None).unwrap()));
    assert_ne!(tokens(&a), tokens(&generate(&mut m, &prompts, &cfg, key(7, 4), None).unwrap()));
    // The same prompt repeated (as the trainer passes a group) gets distinct completions.
    let group = vec![prompts[0].clone(); 4];
    let g = tokens(&generate(&mut m, &group, &cfg, key(7, 3), None).unwrap());
    assert!(g[1..].iter().all(|t| *t != g[0]), "{g:?}");
    assert_eq!(g[0], a[0].tokens);

    // Prompt 0 alone, and first in a batch whose other members stop early at different
    // times (stop tokens), draws the same tokens: its draws are keyed by (seed, step, 0, j).
    let alone = generate(&mut m, &prompts[..1], &cfg, key(7, 3), None).unwrap();
    assert_eq!(alone[0].tokens, a[0].tokens);
    let stop = SamplingConfig { stop_token_ids: vec![a[1].tokens[2], a[3].tokens[5]], ..cfg.clone() };
    let mixed = generate(&mut m, &prompts, &stop, key(7, 3), None).unwrap();
    let cut = |c: &Completion| c.tokens.iter().position(|t| stop.stop_token_ids.contains(t));
    for (c, full) in mixed.iter().zip(&a) {
        match cut(full) {
            Some(j) => assert_eq!((c.tokens.as_slice(), c.finish), (&full.tokens[..=j], FinishReason::StopToken)),
            None => assert_eq!((&c.tokens, c.finish), (&full.tokens, FinishReason::Length)),
        }
    }
    assert!(mixed[1].tokens.len() <= 3 && mixed[3].tokens.len() <= 6);
}

#[test]
fn every_finish_reason_fires_and_logprobs_match_a_full_forward() {
    let mut m = model(8);
    let mut rng = Rng::new(4);
    let prompts: Vec<Vec<u32>> = [5usize, 1, 8].iter().map(|&n| random_ids(&mut rng, n)).collect();
    let t = 0.7;
    let cfg = SamplingConfig { top_k: 5, top_p: 0.9, ..sampling(t, 12) };
    let free = generate(&mut m, &prompts, &cfg, key(1, 0), None).unwrap();
    for c in &free {
        assert_eq!((c.tokens.len(), c.finish), (12, FinishReason::Length));
    }

    // Log-probs are those of the untruncated tempered distribution at each position.
    let mut worst = 0.0f64;
    for (c, p) in free.iter().zip(&prompts) {
        let seq: Vec<u32> = p.iter().chain(&c.tokens).copied().collect();
        let logits = full_logits(&mut m, &seq);
        for (j, (&tok, &lp)) in c.tokens.iter().zip(&c.logprobs).enumerate() {
            let at = p.len() - 1 + j;
            let want = log_softmax(&logits[at * V..(at + 1) * V], t, tok as usize);
            worst = worst.max((lp as f64 - want).abs());
        }
    }
    assert!(worst < 1e-4, "logprob differs from the full forward's by {worst}");

    // Stop token: the first token of sequence 0 that did not occur before it.
    let toks = &free[0].tokens;
    let j = (1..toks.len()).find(|&j| !toks[..j].contains(&toks[j])).unwrap();
    let c = SamplingConfig { stop_token_ids: vec![toks[j]], ..cfg.clone() };
    let got = generate(&mut m, &prompts[..1], &c, key(1, 0), None).unwrap();
    assert_eq!((got[0].tokens.as_slice(), got[0].finish), (&toks[..=j], FinishReason::StopToken));
    // Equal up to rounding: a batch of one runs the matmuls on fewer rows.
    assert!(got[0].logprobs.iter().zip(&free[0].logprobs).all(|(a, b)| (a - b).abs() < 1e-5));

    // Stop string: three decoded tokens of sequence 2; generation ends at the token that
    // first completes it.
    let text = decode(&free[2].tokens);
    let stop: String = text.chars().skip(4).take(3).collect();
    let end = (1..=text.len()).find(|&e| text[..e].contains(&stop)).unwrap();
    let c = SamplingConfig { stop_strings: vec![stop.clone()], ..cfg.clone() };
    let got = generate(&mut m, &prompts, &c, key(1, 0), Some(&decode)).unwrap();
    assert_eq!((got[2].tokens.as_slice(), got[2].finish), (&free[2].tokens[..end], FinishReason::StopString));
    assert!(got.iter().all(|c| c.finish == FinishReason::Length || decode(&c.tokens).ends_with(&stop)));
    assert!(generate(&mut m, &prompts, &c, key(1, 0), None).is_err(), "stop strings need decode");

    // n_positions = 128: a 125-token prompt has room for 3 tokens, a 127-token one for 1.
    let long = vec![random_ids(&mut rng, 125), random_ids(&mut rng, 127), vec![3]];
    let got = generate(&mut m, &long, &cfg, key(1, 0), None).unwrap();
    let lens: Vec<_> = got.iter().map(|c| (c.tokens.len(), c.finish)).collect();
    assert_eq!(lens, vec![(3, FinishReason::Length), (1, FinishReason::Length), (12, FinishReason::Length)]);
    assert!(generate(&mut m, &[random_ids(&mut rng, 128)], &cfg, key(1, 0), None).is_err());
}

#[test]
fn greedy_is_deterministic_and_picks_the_argmax() {
    let mut m = model(9);
    let mut rng = Rng::new(6);
    let prompts: Vec<Vec<u32>> = [3usize, 6].iter().map(|&n| random_ids(&mut rng, n)).collect();
    // top-k/top-p are ignored when greedy.
    let cfg = SamplingConfig { top_k: 2, top_p: 0.3, ..sampling(0.0, 10) };
    let a = generate(&mut m, &prompts, &cfg, key(1, 0), None).unwrap();
    let b = generate(&mut m, &prompts, &cfg, key(99, 5), None).unwrap();
    assert_eq!(tokens(&a), tokens(&b));
    for (c, p) in a.iter().zip(&prompts) {
        let seq: Vec<u32> = p.iter().chain(&c.tokens).copied().collect();
        let logits = full_logits(&mut m, &seq);
        for (j, (&tok, &lp)) in c.tokens.iter().zip(&c.logprobs).enumerate() {
            let row = &logits[(p.len() - 1 + j) * V..][..V];
            let mut sorted = row.to_vec();
            sorted.sort_by(|x, y| y.total_cmp(x));
            // Skip near-ties, where cached and full logits may round to different winners.
            if sorted[0] - sorted[1] > 1e-5 {
                assert_eq!(row[tok as usize], sorted[0], "token {j} of prompt {p:?} is not the argmax");
            }
            assert!((lp as f64 - log_softmax(row, 1.0, tok as usize)).abs() < 1e-4);
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut m = model(1);
    let ok = SamplingConfig::default();
    let k = key(0, 0);
    assert!(generate(&mut m, &[], &ok, k, None).is_err());
    assert!(generate(&mut m, &[vec![1], vec![]], &ok, k, None).is_err());
    assert!(generate(&mut m, &[vec![V as u32]], &ok, k, None).is_err());
    for bad in [
        SamplingConfig { temperature: -1.0, ..ok.clone() },
        SamplingConfig { temperature: f32::NAN, ..ok.clone() },
        SamplingConfig { top_p: 0.0, ..ok.clone() },
        SamplingConfig { top_p: 1.5, ..ok.clone() },
        SamplingConfig { max_new_tokens: 0, ..ok.clone() },
        SamplingConfig { stop_strings: vec![String::new()], ..ok.clone() },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
        assert!(generate(&mut m, &[vec![1]], &bad, k, None).is_err());
    }
    assert!(ok.validate().is_ok());
}
