//! The one generate → decode → score path: the trainer's rollouts, its held-out evaluation and
//! `dapo eval` all turn prompts into scored completions here, so the text a scorer sees and the
//! way completions are batched cannot drift apart between training and evaluation.
//!
//! What the scorer sees is TRL's choice: the completion decoded without its end token (TRL
//! decodes with `skip_special_tokens`); nothing after the end token exists (generation stopped
//! there).

use std::time::Instant;

use super::{generate, Completion, FinishReason, RolloutKey, SamplingConfig};
use crate::backend::Backend;
use crate::data::Task;
use crate::error::Result;
use crate::model::Gpt2;
use crate::reward::{score_checked, Metrics, ScoreInput, Scorer};
use crate::tokenizer::Tokenizer;

/// Prompts per `generate` call of an evaluation: bounds the KV cache on long task files.
pub const EVAL_CHUNK: usize = 256;

/// How completions are generated and decoded for scoring.
#[derive(Clone, Copy, Debug)]
pub struct ScoredGeneration<'a> {
    /// Decodes completions (and, for stop strings, their text so far).
    pub tok: &'a Tokenizer,
    /// How to sample; its `stop_token_ids` are the end tokens left out of the scored text.
    pub sampling: &'a SamplingConfig,
    /// The RNG key of every `generate` call. Greedy decoding draws nothing, so only sampled
    /// generation depends on it; sampled rollouts are generated in one chunk, so no two
    /// completions share a counter.
    pub key: RolloutKey,
    /// Most prompts per `generate` call (a KV cache's worth). Scoring is one call over every
    /// completion whatever the chunking: a scorer sees one batch per rollout round or
    /// evaluation (an external scorer's batch count, and its timeout, follow from that).
    pub chunk: usize,
}

/// Completions of a list of prompts, in prompt order, each with its scored text and metrics.
#[derive(Clone, Debug, Default)]
pub struct ScoredCompletions {
    /// One completion per prompt; `prompt_index` is the prompt's index in the whole list.
    pub completions: Vec<Completion>,
    /// Each completion's text as the scorer saw it ([`scored_text`]).
    pub texts: Vec<String>,
    /// The scorer's metrics of each completion.
    pub metrics: Vec<Metrics>,
    /// Seconds spent generating.
    pub generate_s: f64,
    /// Seconds spent decoding and scoring.
    pub score_s: f64,
}

impl ScoredGeneration<'_> {
    /// Generates one completion per prompt with `model`, decodes each as the scorer sees it
    /// and scores it with `scorer` against `tasks[i]`, the task prompt `i` answers (its
    /// prompt text and record). Errors: `tasks` and `prompts` of different lengths, and
    /// whatever generation, decoding or the scorer report.
    pub fn run<K: Backend>(
        &self,
        model: &mut Gpt2<K>,
        scorer: &mut dyn Scorer,
        prompts: &[Vec<u32>],
        tasks: &[&Task],
    ) -> Result<ScoredCompletions> {
        if tasks.len() != prompts.len() {
            return Err(crate::Error::Invalid(format!(
                "scored generation: {} prompts but {} tasks",
                prompts.len(),
                tasks.len()
            )));
        }
        if prompts.is_empty() {
            // Nothing to generate, and no empty batch for the scorer.
            return Ok(ScoredCompletions::default());
        }
        let tok = self.tok;
        let decode = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
        // Only stop strings need the text while generating; decoding every step otherwise
        // would cost time and change nothing.
        let decode = (!self.sampling.stop_strings.is_empty()).then_some(&decode as super::Decode<'_>);
        let chunk = self.chunk.max(1);
        let t0 = Instant::now();
        let mut completions = Vec::with_capacity(prompts.len());
        for (c, part) in prompts.chunks(chunk).enumerate() {
            let mut part = generate(model, part, self.sampling, self.key, decode)?;
            for done in &mut part {
                done.prompt_index += c * chunk;
            }
            completions.extend(part);
        }
        let generate_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let texts: Vec<String> =
            completions.iter().map(|c| scored_text(tok, c, &self.sampling.stop_token_ids)).collect::<Result<_>>()?;
        let inputs: Vec<ScoreInput<'_>> = completions
            .iter()
            .zip(&texts)
            .map(|(c, text)| {
                let task = tasks[c.prompt_index];
                ScoreInput { prompt: &task.prompt, completion: text, metadata: &task.record }
            })
            .collect();
        let metrics = score_checked(scorer, &inputs)?;
        Ok(ScoredCompletions { completions, texts, metrics, generate_s, score_s: t1.elapsed().as_secs_f64() })
    }
}

/// The text a scorer sees: the completion decoded without the end token it stopped at (one of
/// `end_tokens`), as TRL decodes with `skip_special_tokens`.
pub fn scored_text(tok: &Tokenizer, c: &Completion, end_tokens: &[u32]) -> Result<String> {
    let body = match c.tokens.split_last() {
        Some((last, rest)) if c.finish == FinishReason::StopToken && end_tokens.contains(last) => rest,
        _ => &c.tokens[..],
    };
    tok.decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::model::Gpt2Config;

    /// Records each batch it is given; its metric is the completion's length in characters.
    struct Recorder(Vec<Vec<(String, String)>>);

    impl Scorer for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }

        fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
            self.0.push(batch.iter().map(|x| (x.prompt.to_string(), x.completion.to_string())).collect());
            Ok(batch
                .iter()
                .map(|x| Metrics::from([("len".to_string(), x.completion.chars().count() as f64)]))
                .collect())
        }
    }

    #[test]
    fn chunks_are_generated_apart_and_scored_in_one_call() {
        let tok = Tokenizer::char_level("abc").unwrap();
        let end = tok.eos_id().unwrap();
        let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
        let mut model = Gpt2::random(CpuBackend::new(Some(1)), cfg, 7).unwrap();
        let tasks: Vec<Task> = ["a", "b", "c", "ab", "ba"]
            .iter()
            .map(|p| Task { prompt: p.to_string(), task_id: "t".into(), record: serde_json::Value::Null })
            .collect();
        let prompts: Vec<Vec<u32>> = tasks.iter().map(|t| tok.encode(&t.prompt).unwrap()).collect();
        let refs: Vec<&Task> = tasks.iter().collect();
        let sampling =
            SamplingConfig { temperature: 0.0, max_new_tokens: 6, stop_token_ids: vec![end], ..Default::default() };
        let key = RolloutKey { seed: 1, step: 2 };
        let mut run = |chunk: usize| {
            let mut scorer = Recorder(Vec::new());
            let g = ScoredGeneration { tok: &tok, sampling: &sampling, key, chunk };
            (g.run(&mut model, &mut scorer, &prompts, &refs).unwrap(), scorer.0)
        };
        let (whole, calls) = run(usize::MAX);
        let (chunked, chunked_calls) = run(2);
        // One scorer call either way, every prompt with its own task, in prompt order.
        assert_eq!((calls.len(), chunked_calls.len()), (1, 1));
        assert_eq!(calls[0].iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "ab", "ba"]);
        assert_eq!(calls, chunked_calls);
        let index: Vec<usize> = chunked.completions.iter().map(|c| c.prompt_index).collect();
        assert_eq!(index, [0, 1, 2, 3, 4]);
        for (i, c) in whole.completions.iter().enumerate() {
            assert_eq!(c.tokens, chunked.completions[i].tokens, "greedy completions do not depend on chunking");
            // The scored text leaves out the end token it stopped at, and nothing else.
            let kept =
                if c.finish == FinishReason::StopToken { &c.tokens[..c.tokens.len() - 1] } else { &c.tokens[..] };
            assert_eq!(whole.texts[i], tok.decode(kept).unwrap());
            assert_eq!(whole.metrics[i]["len"], whole.texts[i].chars().count() as f64);
        }
        // Prompts and tasks must pair up.
        let e = ScoredGeneration { tok: &tok, sampling: &sampling, key, chunk: 1 }
            .run(&mut model, &mut Recorder(Vec::new()), &prompts, &refs[1..])
            .unwrap_err();
        assert!(e.to_string().contains("5 prompts but 4 tasks"), "{e}");
    }
}
