//! Supervised fine-tuning data: loading JSONL or plain text, and sampling batches.

use std::path::{Path, PathBuf};

use super::batch::Batch;
use super::jsonl::{parse_line, Record};
use crate::error::{read_to_string, Error, Result};
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;

/// One training sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// `loss_mask[i]`: whether `tokens[i]` is a target trained on (predicted from the tokens
    /// before it). Same length as `tokens`; `loss_mask[0]` is never used, nothing predicts it.
    pub loss_mask: Vec<bool>,
}

/// How batches are cut from the examples.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// One long stream (plain text): rows are random windows of it.
    Stream,
    /// Separate examples (JSONL): each row is one example, truncated or padded.
    Examples,
}

/// A supervised fine-tuning dataset.
#[derive(Clone, Debug)]
pub struct SftDataset {
    /// The examples; for plain text, a single one holding the whole file.
    pub examples: Vec<Example>,
    source: PathBuf,
    layout: Layout,
    /// What fills rows past an example's end: the EOS id, else 0. Its weight is always 0.
    pad_id: u32,
}

impl SftDataset {
    /// Loads `path`: JSONL when the extension is `.jsonl` or `.json`, plain text otherwise.
    ///
    /// JSONL: one object a line, blank lines skipped; `{"text"}` trains on every token,
    /// `{"prompt", "completion"}` or `{"prompt", "answer"}` only on the completion (tokens are
    /// `encode(prompt) ++ encode(completion)`); other fields are ignored. The tokenizer's EOS,
    /// if it has one, ends every example and is trained on.
    ///
    /// Plain text: the whole file is one token stream, every token trained on.
    ///
    /// Errors: a missing file is [`Error::Io`]; a bad line (invalid JSON, wrong shape, a
    /// non-string field, text the tokenizer cannot encode) or a file with no examples is
    /// [`Error::Data`] with the 1-based line (0 for the file as a whole).
    pub fn load(path: &Path, tok: &Tokenizer) -> Result<Self> {
        let text = read_to_string(path)?;
        // A byte-order mark is not part of the first line (editors on Windows write one).
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let is_jsonl = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
        let (examples, layout) = if is_jsonl {
            (load_jsonl(path, text, tok)?, Layout::Examples)
        } else {
            (vec![load_text(path, text, tok)?], Layout::Stream)
        };
        Ok(SftDataset { examples, source: path.to_path_buf(), layout, pad_id: tok.eos_id().unwrap_or(0) })
    }

    /// A dataset of separate examples built in memory (each row of a batch is one example);
    /// `pad_id` fills rows past an example's end.
    ///
    /// No examples, or an example whose `loss_mask` and `tokens` differ in length, is an
    /// [`Error::Invalid`].
    pub fn from_examples(examples: Vec<Example>, pad_id: u32) -> Result<Self> {
        if examples.is_empty() {
            return Err(Error::Invalid("SFT dataset: no examples".into()));
        }
        if let Some((i, e)) = examples.iter().enumerate().find(|(_, e)| e.tokens.len() != e.loss_mask.len()) {
            return Err(Error::Invalid(format!(
                "SFT example {i}: {} tokens but {} loss-mask entries",
                e.tokens.len(),
                e.loss_mask.len()
            )));
        }
        Ok(SftDataset { examples, source: PathBuf::from("<in-memory>"), layout: Layout::Examples, pad_id })
    }

    /// The file the dataset was loaded from (`<in-memory>` for [`SftDataset::from_examples`]).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Errors when no batch of rows of `t` positions could hold a token to train on: every
    /// example's trained tokens lie beyond the first `t + 1` (a prompt longer than `--seq-len`)
    /// or there are none (empty texts). Training would otherwise run with a zero loss.
    pub fn check_trainable(&self, t: usize) -> Result<()> {
        let trainable = |e: &Example| match self.layout {
            Layout::Stream => e.tokens.len() >= 2,
            Layout::Examples => e.loss_mask.iter().take(t + 1).skip(1).any(|&m| m),
        };
        if self.examples.iter().any(trainable) {
            return Ok(());
        }
        Err(Error::data(
            &self.source,
            0,
            format!(
                "no example has a token to train on within the first {} tokens (--seq-len {t}): every completion \
                 starts later or is empty",
                t + 1
            ),
        ))
    }

    /// Total tokens over all examples.
    pub fn num_tokens(&self) -> usize {
        self.examples.iter().map(|e| e.tokens.len()).sum()
    }

    /// Samples a `b` x `t` batch; deterministic given `rng`'s state.
    ///
    /// Plain text: each row is a window of `t + 1` tokens at a random offset of the stream.
    /// Examples: each row is a randomly chosen example, truncated to `t + 1` tokens and
    /// padded (weight 0) to length. Weights are then normalised to sum to 1 over the batch;
    /// if nothing in the batch is trained on they stay 0 ([`Batch::num_targets`] is 0).
    pub fn batch(&self, b: usize, t: usize, rng: &mut Rng) -> Batch {
        let mut batch = Batch::padding(b, t, self.pad_id);
        // Only reachable through the public `examples` field being emptied by hand: an
        // all-padding batch says "nothing to train on" without panicking.
        if self.examples.is_empty() {
            return batch;
        }
        for row in 0..b {
            let example = match self.layout {
                Layout::Stream => &self.examples[0],
                Layout::Examples => &self.examples[rng.below(self.examples.len())],
            };
            let len = example.tokens.len();
            let start = if self.layout == Layout::Stream && len > t + 1 { rng.below(len - t) } else { 0 };
            let end = len.min(start + t + 1);
            batch.fill_row(row, &example.tokens[start..end], example.loss_mask.get(start..).unwrap_or(&[]));
        }
        batch.normalise();
        batch
    }
}

/// Parses every non-blank line of a JSONL file into an example.
fn load_jsonl(path: &Path, text: &str, tok: &Tokenizer) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        super::check_line_length(line).map_err(|msg| Error::data(path, line_no, msg))?;
        let record = parse_line(line, line_no).map_err(|msg| Error::data(path, line_no, msg))?;
        let encode = |field: &str, s: &str| {
            tok.encode(s).map_err(|e| Error::data(path, line_no, format!("field \"{field}\": {e}")))
        };
        let (mut tokens, mut loss_mask) = match record {
            Record::Text(text) => {
                let tokens = encode("text", &text)?;
                let mask = vec![true; tokens.len()];
                (tokens, mask)
            }
            Record::PromptCompletion { prompt, completion } => {
                let mut tokens = encode("prompt", &prompt)?;
                let mut mask = vec![false; tokens.len()];
                let completion = encode("completion", &completion)?;
                mask.resize(tokens.len() + completion.len(), true);
                tokens.extend(completion);
                (tokens, mask)
            }
        };
        // EOS is a target so the model learns where to stop.
        if let Some(eos) = tok.eos_id() {
            tokens.push(eos);
            loss_mask.push(true);
        }
        examples.push(Example { tokens, loss_mask });
    }
    if examples.is_empty() {
        return Err(Error::data(path, 0, "file is empty: no examples (only blank lines or nothing)"));
    }
    Ok(examples)
}

/// Encodes a whole plain-text file as one stream.
fn load_text(path: &Path, text: &str, tok: &Tokenizer) -> Result<Example> {
    if text.is_empty() {
        return Err(Error::data(path, 0, "file is empty: no text to train on"));
    }
    for (i, line) in text.split_inclusive('\n').enumerate() {
        super::check_line_length(line).map_err(|msg| Error::data(path, i + 1, msg))?;
    }
    // The tokenizer needs ~170 bytes per character of the text it is given: a large file is
    // encoded in blocks of whole lines, so memory stays bounded by the block.
    let mut tokens = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + super::MAX_LINE_BYTES).min(text.len());
        if end < text.len() {
            // Cut after the last newline of the block: a line is never longer than a block, so
            // there is one, and a cut after '\n' is a character boundary.
            let bytes = &text.as_bytes()[start..end];
            end = start + bytes.iter().rposition(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        }
        let block = &text[start..end];
        tokens.extend(tok.encode(block).map_err(|e| locate_encode_error(path, text, tok, e))?);
        start = end;
    }
    if tokens.len() < 2 {
        return Err(Error::data(
            path,
            0,
            format!("only {} token(s): at least 2 are needed to predict anything", tokens.len()),
        ));
    }
    let loss_mask = vec![true; tokens.len()];
    Ok(Example { tokens, loss_mask })
}

/// Turns a failure to encode a whole text file into an error on the line at fault, found by
/// encoding line by line (only on this error path, so the normal path encodes once).
fn locate_encode_error(path: &Path, text: &str, tok: &Tokenizer, whole: Error) -> Error {
    // Lines keep their '\n', which may itself be what the tokenizer cannot encode.
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if let Err(e) = tok.encode(line) {
            return Error::data(path, i + 1, format!("cannot encode line: {e}"));
        }
    }
    // Line by line it encodes (a tokenizer whose tokens span lines): report the whole file.
    Error::data(path, 0, format!("cannot encode file: {whole}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    fn ids(tok: &Tokenizer, s: &str) -> Vec<u32> {
        tok.encode(s).unwrap()
    }

    #[test]
    fn jsonl_masks_and_eos() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::default_char();
        let path = write(
            &dir,
            "d.jsonl",
            "{\"prompt\": \"1+2=\", \"completion\": \"3\"}\n\n  \n{\"text\": \"ab\", \"id\": 1}\r\n{\"prompt\": \"x\", \"answer\": \"yz\"}\n",
        );
        let ds = SftDataset::load(&path, &tok).unwrap();
        assert_eq!(ds.source(), path);
        assert_eq!(ds.examples.len(), 3);
        let e = &ds.examples[0];
        assert_eq!(e.tokens, [ids(&tok, "1+2="), ids(&tok, "3"), vec![0]].concat());
        assert_eq!(e.loss_mask, vec![false, false, false, false, true, true]);
        assert_eq!(ds.examples[1].tokens, [ids(&tok, "ab"), vec![0]].concat());
        assert_eq!(ds.examples[1].loss_mask, vec![true; 3]);
        assert_eq!(ds.examples[2].loss_mask, vec![false, true, true, true]);
        assert_eq!(ds.num_tokens(), 6 + 3 + 4);

        // A tokenizer with no EOS appends nothing: drop it from a saved char-level tokenizer.
        let tok_path = dir.path().join("tokenizer.json");
        Tokenizer::char_level("123+=abxyz").unwrap().save(&tok_path).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
        json["added_tokens"] = serde_json::json!([]);
        json["model"]["vocab"].as_object_mut().unwrap().remove("<|endoftext|>");
        std::fs::write(&tok_path, json.to_string()).unwrap();
        let no_eos = Tokenizer::from_file(&tok_path).unwrap();
        assert_eq!(no_eos.eos_id(), None);
        let ds = SftDataset::load(&path, &no_eos).unwrap();
        assert_eq!(ds.examples[0].tokens, ids(&no_eos, "1+2=3"));
        assert_eq!(ds.examples[0].loss_mask, vec![false, false, false, false, true]);
        assert_eq!(ds.examples[1].loss_mask, vec![true, true]);
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::default_char();
        let good = "{\"text\": \"ok\"}\n";
        let path = write(&dir, "bad.jsonl", &format!("{good}{good}{{\"text\": \"oops\"\n{good}"));
        let msg = SftDataset::load(&path, &tok).unwrap_err().to_string();
        assert!(msg.contains(&format!("{}:3:", path.display())) && msg.contains("invalid JSON"), "{msg}");

        let path = write(&dir, "missing.jsonl", &format!("{good}{{\"prompt\": \"p\"}}\n"));
        let msg = SftDataset::load(&path, &tok).unwrap_err().to_string();
        assert!(msg.contains("missing.jsonl:2:") && msg.contains("\"completion\""), "{msg}");

        let path = write(&dir, "type.json", "{\"prompt\": \"p\", \"completion\": 3}\n");
        let msg = SftDataset::load(&path, &tok).unwrap_err().to_string();
        assert!(msg.contains("type.json:1:") && msg.contains("must be a string"), "{msg}");

        let path = write(&dir, "char.jsonl", &format!("{good}{{\"prompt\": \"p\", \"completion\": \"naïve\"}}\n"));
        let err = SftDataset::load(&path, &tok).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Data { line: 2, .. }), "{msg}");
        assert!(msg.contains("\"completion\"") && msg.contains("'ï'"), "{msg}");

        for contents in ["", "\n  \n\n"] {
            let path = write(&dir, "empty.jsonl", contents);
            let err = SftDataset::load(&path, &tok).unwrap_err();
            assert!(matches!(err, Error::Data { line: 0, .. }) && err.to_string().contains("empty"), "{err}");
        }

        let err = SftDataset::load(&dir.path().join("absent.jsonl"), &tok).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("absent.jsonl"), "{err}");
    }

    #[test]
    fn text_mode_windows_are_contiguous_and_shifted() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::default_char();
        let text: String = (0..50).map(|i| char::from(b'a' + (i % 26) as u8)).collect::<String>() + "\n";
        let path = write(&dir, "corpus.txt", &text);
        let ds = SftDataset::load(&path, &tok).unwrap();
        assert_eq!(ds.examples.len(), 1);
        let stream = &ds.examples[0].tokens;
        assert_eq!(stream, &ids(&tok, &text));
        assert_eq!(ds.num_tokens(), 51);

        let (b, t) = (4, 8);
        let batch = ds.batch(b, t, &mut Rng::new(3));
        assert_eq!((batch.b, batch.t), (b, t));
        assert_eq!(batch.num_targets(), b * t);
        let mut starts = Vec::new();
        for r in 0..b {
            let row = &batch.inputs[r * t..(r + 1) * t];
            let targets = &batch.targets[r * t..(r + 1) * t];
            let start = (0..=stream.len() - t - 1).find(|&s| stream[s..s + t] == *row).unwrap();
            assert_eq!(targets, &stream[start + 1..start + t + 1]);
            starts.push(start);
        }
        assert!(starts.iter().any(|&s| s != starts[0]), "windows should vary: {starts:?}");
        let sum: f32 = batch.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        assert!(batch.weights.iter().all(|&w| w == 1.0 / 32.0));
        // Same rng state, same batch.
        assert_eq!(batch, ds.batch(b, t, &mut Rng::new(3)));
    }

    #[test]
    fn text_mode_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::default_char();
        let err = SftDataset::load(&write(&dir, "e.txt", ""), &tok).unwrap_err();
        assert!(matches!(err, Error::Data { .. }) && err.to_string().contains("empty"), "{err}");
        let err = SftDataset::load(&write(&dir, "u.txt", "fine\nfine\nbad\u{7}\n"), &tok).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("u.txt:3:") && msg.contains("U+0007"), "{msg}");
        // The newline itself may be what the alphabet lacks.
        let letters = Tokenizer::char_level("ab").unwrap();
        let msg = SftDataset::load(&write(&dir, "n.txt", "ab\nab"), &letters).unwrap_err().to_string();
        assert!(msg.contains("n.txt:1:") && msg.contains("'\\n'"), "{msg}");
    }

    #[test]
    fn example_batches_pad_truncate_and_normalise() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::default_char();
        let path = write(&dir, "d.jsonl", "{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"text\": \"0123456789\"}\n");
        let ds = SftDataset::load(&path, &tok).unwrap();
        let (b, t) = (8, 5);
        let batch = ds.batch(b, t, &mut Rng::new(11));
        let short = &ds.examples[0].tokens; // a b c <eos>
        let long = &ds.examples[1].tokens; // 0..9 <eos>
        let mut seen = [false; 2];
        let mut trained = 0;
        for r in 0..b {
            let s = r * t..(r + 1) * t;
            let (inputs, targets, weights) = (&batch.inputs[s.clone()], &batch.targets[s.clone()], &batch.weights[s]);
            if inputs[0] == short[0] {
                seen[0] = true;
                assert_eq!(inputs, &[short[0], short[1], short[2], 0, 0]);
                assert_eq!(targets, &[short[1], short[2], short[3], 0, 0]);
                // Only "c" and EOS are targets; padding is not.
                let on: Vec<bool> = weights.iter().map(|&w| w > 0.0).collect();
                assert_eq!(on, vec![false, true, true, false, false]);
                trained += 2;
            } else {
                seen[1] = true;
                assert_eq!(inputs, &long[..t]);
                assert_eq!(targets, &long[1..t + 1]);
                assert!(weights.iter().all(|&w| w > 0.0));
                trained += t;
            }
            // Targets are the inputs shifted by one, over the row's real (unpadded) positions.
            let real = if inputs[0] == short[0] { short.len() - 1 } else { t };
            for i in 0..real - 1 {
                assert_eq!(targets[i], inputs[i + 1]);
            }
        }
        assert!(seen[0] && seen[1], "both examples should be drawn in 8 rows");
        assert_eq!(batch.num_targets(), trained);
        let sum: f32 = batch.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert_eq!(batch, ds.batch(b, t, &mut Rng::new(11)));
    }

    #[test]
    fn all_masked_batch_has_zero_weights() {
        let ds =
            SftDataset::from_examples(vec![Example { tokens: vec![1, 2, 3], loss_mask: vec![true, false, false] }], 0)
                .unwrap();
        let batch = ds.batch(2, 4, &mut Rng::new(0));
        assert_eq!(batch.num_targets(), 0);
        assert!(batch.weights.iter().all(|&w| w == 0.0));
        assert_eq!(batch.inputs, vec![1, 2, 0, 0, 1, 2, 0, 0]);
        assert!(SftDataset::from_examples(vec![], 0).is_err());
        let bad = Example { tokens: vec![1, 2], loss_mask: vec![true] };
        assert!(matches!(SftDataset::from_examples(vec![bad], 0), Err(Error::Invalid(_))));
    }
}
