//! The minimal DAPO run, on the CPU, in a few seconds: a tiny random GPT-2 learns to favour
//! digits on addition prompts, scored by your own closure, with every step logged as JSONL.
//!
//! ```bash
//! cargo run --release --example dapo_minimal
//! ```
//!
//! It writes `runs/dapo_minimal/dapo_log.jsonl` (one record a step: the GEPA reward vectors,
//! the RL metrics, lengths and timings) and a checkpoint directory next to it.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::data::arithmetic::addition_problems;
use gepa_dapo_grn::data::{Task, TaskDataset};
use gepa_dapo_grn::error::Result;
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::reward::{FeedbackMapping, FnScorer, Metrics, RewardMixer, ScoreInput};
use gepa_dapo_grn::tokenizer::Tokenizer;
use gepa_dapo_grn::train::dapo::{DapoTrainer, LOG_FILE};
use gepa_dapo_grn::train::dapo_config::DapoConfig;

fn main() -> Result<()> {
    // Tasks: 64 addition prompts with their answers (any JSONL task file works the same way).
    let (train, _) = addition_problems(0);
    let tasks = train
        .into_iter()
        .take(64)
        .map(|(prompt, answer)| Task {
            record: serde_json::json!({ "prompt": prompt, "answer": answer }),
            prompt,
            task_id: "addition".into(),
        })
        .collect();
    let data = TaskDataset::from_tasks(tasks);

    // A scorer is any function from (prompt, completion, record) to named floats: here a
    // vector of two GEPA rewards, mixed 1.0 / 0.5 by the reward mixer.
    let scorer = FnScorer::new("digits", |x: &ScoreInput<'_>| {
        let text = x.completion.trim_end_matches("<|endoftext|>");
        let n = text.chars().count().max(1) as f64;
        let digits = text.chars().filter(char::is_ascii_digit).count() as f64;
        Ok(Metrics::from([("digit_share".to_string(), digits / n), ("short".to_string(), 1.0 / n)]))
    });
    let mixer = RewardMixer::from_weights([("digit_share", 1.0), ("short", 0.5)])?;

    let tok = Tokenizer::default_char();
    let model =
        Gpt2::random(CpuBackend::new(None), Gpt2Config::named("tiny", tok.vocab_size())?.with_eos(tok.eos_id()), 0)?;
    let mut cfg = DapoConfig {
        steps: 20,
        batch_size: 8,
        group_size: 4,
        learning_rate: 1e-3,
        output_dir: "runs/dapo_minimal".into(),
        ..DapoConfig::default()
    };
    cfg.sampling.max_new_tokens = 6;
    let out = cfg.output_dir.clone();
    let _ = std::fs::remove_file(out.join(LOG_FILE));
    let mut trainer = DapoTrainer::new(model, tok, Box::new(scorer), FeedbackMapping::identity(), mixer, cfg)?;
    let report = trainer.train(
        &data,
        None,
        None,
        &mut |r| println!("step {:2}  reward {:.3}  kl {:.4}  loss {:+.4}", r.step, r.reward_mean, r.rl.kl, r.rl.loss),
        &mut |_, _| {},
    )?;
    println!("log: {}; checkpoint: {}", out.join(LOG_FILE).display(), report.checkpoints[0].display());
    Ok(())
}
