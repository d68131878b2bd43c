//! Allocate once, stay on the device (llm.c's discipline, issue 16): on a kernel backend an RL
//! step whose shapes are no larger than an earlier step's makes no device allocation and does
//! not raise the peak, and KV-cache decoding allocates nothing after its first step.
//!
//! Run with `--nocapture` to see each step's allocations and peak bytes.

mod common;

use common::tasks;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::backend::{MemoryUse, SampleParams};
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::reward::{FeedbackMapping, FnScorer, Metrics, RewardMixer, ScoreInput};
use gepa_dapo_grn::tokenizer::Tokenizer;
use gepa_dapo_grn::train::dapo::DapoTrainer;
use gepa_dapo_grn::train::dapo_config::DapoConfig;

fn memory(k: &EmuBackend) -> MemoryUse {
    k.memory().expect("a kernel backend meters its buffers")
}

/// The tiny random GPT-2 (seed 3) with the char tokenizer, on the emulated kernels.
fn model() -> (Gpt2<EmuBackend>, Tokenizer) {
    let tok = Tokenizer::default_char();
    let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
    (Gpt2::random(EmuBackend::emulated(), cfg, 3).unwrap(), tok)
}

#[test]
fn steady_state_rl_steps_allocate_nothing() {
    // Shapes vary between steps: prompts of different lengths ("1+2=" … "12+34="), completions
    // that stop at any of half the characters (so T changes), dynamic sampling dropping uniform
    // groups (so S changes), and 6 sequences in micro-batches of 4 (a short last one). β > 0
    // runs the frozen reference too; two minibatches × two passes run four optimizer steps.
    let data = tasks(40);
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = model();
    let mut cfg = DapoConfig {
        batch_size: 3,
        group_size: 2,
        micro_batch_size: 4,
        mini_batches: 2,
        num_iterations: 2,
        learning_rate: 1e-3,
        output_dir: dir.path().to_path_buf(),
        seed: 5,
        ..DapoConfig::default()
    };
    cfg.objective.beta = 0.04;
    cfg.sampling.max_new_tokens = 5;
    cfg.sampling.stop_token_ids = (0..tok.vocab_size() as u32).step_by(2).collect();
    let scorer = FnScorer::new("digits", |x: &ScoreInput<'_>| {
        let n = x.completion.chars().count().max(1) as f64;
        let d = x.completion.chars().filter(char::is_ascii_digit).count() as f64;
        Ok(Metrics::from([("digits".to_string(), d / n)]))
    });
    let mixer = RewardMixer::from_weights([("digits", 1.0)]).unwrap();
    let mut t = DapoTrainer::new(model, tok, Box::new(scorer), FeedbackMapping::identity(), mixer, cfg).unwrap();
    let k = t.model().backend().clone();

    let (warm_up, measured) = (4, 4);
    let mut lengths = vec![];
    let mut rows = vec![];
    for step in 0..warm_up + measured {
        let before = memory(&k);
        let r = t.step(&data).unwrap();
        let after = memory(&k);
        let allocations = after.allocations - before.allocations;
        // Characters are tokens here: prompt + completion is the sequence's length (±1).
        let lens: Vec<usize> =
            r.samples.iter().map(|x| x.prompt.chars().count() + x.completion.chars().count()).collect();
        println!(
            "step {step}: {allocations} device allocations, peak {} bytes, now {} bytes, T = {:?}",
            after.peak,
            after.now,
            lens.iter().max()
        );
        lengths.push(lens);
        rows.push((allocations, after.peak));
    }
    let longest = |l: &[usize]| l.iter().copied().max().unwrap_or(0);
    let seen = lengths[..warm_up].iter().map(|l| longest(l)).max().unwrap();
    // The measured steps are no larger than the warm-up (else this checks nothing) and differ
    // among themselves (else it checks only a repeated shape).
    assert!(lengths[warm_up..].iter().all(|l| longest(l) <= seen), "{lengths:?}");
    let shapes: std::collections::BTreeSet<_> =
        lengths[warm_up..].iter().map(|l| (l.len(), longest(l), l.iter().sum::<usize>())).collect();
    assert!(shapes.len() > 1, "the measured steps should vary in shape: {lengths:?}");
    let warm_peak = rows[warm_up - 1].1;
    for (i, &(allocations, peak)) in rows.iter().enumerate().skip(warm_up) {
        assert_eq!(allocations, 0, "step {i} allocated on the device: {rows:?}");
        assert_eq!(peak, warm_peak, "step {i} raised the peak: {rows:?}");
    }
}

#[test]
fn decode_steps_after_the_first_allocate_nothing() {
    let (model, _) = model();
    let k = model.backend().clone();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 6, 7], vec![8], vec![9, 10, 11, 12], vec![13, 14]];
    let mut cache = model.kv_cache(prompts.len(), 12).unwrap();
    model.prefill_in_cache(&mut cache, &prompts).unwrap();
    let params = SampleParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 1, step: 0 };
    // Every sequence decodes; then one finishes after each step, so the row count shrinks.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut steps = 0;
    while !active.is_empty() {
        let before = memory(&k);
        let counters: Vec<[u32; 2]> = active.iter().map(|&s| [s as u32, steps]).collect();
        let drawn = model.sample_in_cache(&cache, &counters, params);
        let tokens: Vec<u32> = drawn.into_iter().map(|d| d.unwrap().token).collect();
        model.decode_in_cache(&mut cache, &active, &tokens).unwrap();
        let allocations = memory(&k).allocations - before.allocations;
        println!("decode step {steps}: {} rows, {allocations} device allocations", active.len());
        if steps > 0 {
            assert_eq!(allocations, 0, "decode step {steps} with {} rows allocated", active.len());
        }
        steps += 1;
        if steps > 1 {
            active.pop();
        }
    }
    assert!(steps >= 4);
}

#[test]
fn reserved_activations_serve_every_smaller_shape_without_allocating() {
    let (mut model, _) = model();
    let k = model.backend().clone();
    model.reserve(4, 16, false).unwrap();
    let before = memory(&k);
    // The largest shape, a short micro-batch and a shorter sequence: all within the reservation.
    for (b, t) in [(4, 16), (3, 16), (2, 7), (4, 9)] {
        let ids: Vec<u32> = (0..b * t).map(|i| (i % 50) as u32).collect();
        model.forward_hidden(&ids, b, t, |_| ()).unwrap();
    }
    let after = memory(&k);
    assert_eq!(after.allocations, before.allocations, "forward passes within the reservation allocated");
    assert_eq!(after.peak, before.peak);
}
