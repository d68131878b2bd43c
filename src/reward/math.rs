//! The built-in rule-based scorer for the toy arithmetic task ([`crate::data::arithmetic`]):
//! prompts like `12+34=`, records with `"answer": "46"`.
//!
//! # The expected form of a completion
//!
//! The completion is first cut at its first `<|endoftext|>` (the trainer decodes the EOS token
//! to that marker; anything after it was never meant to be read), then trimmed of ASCII
//! whitespace. What remains is the *body*, which is well formed when it reads
//!
//! ```text
//! body     := (step ";")* answer
//! step     := int op int "=" int        spaces allowed around op and "="
//! op       := "+" | "-" | "*"
//! answer   := int
//! int      := "-"? digits               no leading zeros ("0" itself is fine, "-0" is not)
//! ```
//!
//! Each `;`-separated segment is trimmed of whitespace before it is parsed. Examples for the
//! prompt `12+34=` (answer 46): `46` and `10+30=40; 2+4=6; 40+6=46; 46` are well formed;
//! `046`, `46 apples`, `forty-six`, `46;` and the empty string are not.
//!
//! # The four metrics
//!
//! * `correctness`: 1 when the *final answer* (the body's last `;`-segment, trimmed) equals the
//!   record's `answer`, else 0. When both are integers they are compared by value, so `046`
//!   and `-0` still count as correct answers (the form is `format_penalty`'s business, which
//!   keeps the two reward axes independent); otherwise the two strings are compared exactly.
//! * `reasoning_quality`: the shown work is every segment before the final answer; the
//!   quality is the fraction of those segments that are *true* equations under the `step`
//!   grammar (`40+6=46` is, `40+6=47` and `forty plus six` are not). No shown work gives 0,
//!   so a mixer weight on this key rewards showing arithmetic that checks out. It does not
//!   check that the steps are relevant to the prompt: a true but irrelevant step counts. That
//!   is a deliberate limit of a rule-based checker; the correctness weight keeps such padding
//!   from paying off on its own, and brevity charges for it.
//! * `format_penalty`: 1 when the body is not well formed, else 0 (intended for a negative
//!   mixer weight, as in the seed config `format_penalty: -0.25`).
//! * `brevity`: `min(1, L / n)` for a well-formed completion, where `n` is the number of
//!   characters of the completion with the end-of-text marker (and anything after it)
//!   removed but whitespace kept, and `L` is the length of the shortest well-formed correct
//!   answer: the record's answer in canonical form (`46` → 2). The bare answer gets 1, every
//!   extra character (whitespace, shown work) lowers it, e.g. `40+6=46;46` → 2/10 = 0.2. A
//!   malformed completion gets 0, so brevity never rewards short garbage.
//!
//! A record without a string or number `answer` is an error naming the item, as in
//! [`ExactMatchScorer`](super::ExactMatchScorer): scoring it 0 would silently teach the
//! policy that every answer is wrong.

use serde_json::Value;

use super::scorer::{Metrics, ScoreInput, Scorer};
use crate::error::{Error, Result};
use crate::tokenizer::EOS_TOKEN;

/// Metric name: the final answer equals the record's answer.
pub const CORRECTNESS: &str = "correctness";
/// Metric name: the fraction of shown steps that are true equations.
pub const REASONING_QUALITY: &str = "reasoning_quality";
/// Metric name: 1 when the completion is not in the expected form.
pub const FORMAT_PENALTY: &str = "format_penalty";
/// Metric name: shortness of a well-formed completion, in [0, 1].
pub const BREVITY: &str = "brevity";

/// Integers longer than this are not parsed (they could not be a toy-task value anyway, and
/// the bound keeps the arithmetic inside `i128`).
const MAX_DIGITS: usize = 30;

/// The rule-based scorer of the toy arithmetic task; see the [module docs](self) for the
/// expected form and the exact definition of each metric.
#[derive(Clone, Copy, Debug, Default)]
pub struct MathScorer;

impl MathScorer {
    /// The scorer (it has no settings).
    pub fn new() -> Self {
        MathScorer
    }

    /// The four metrics of one completion against the record's `answer` (already trimmed).
    pub fn score_one(completion: &str, answer: &str) -> Metrics {
        // Everything from the first end-of-text marker on is outside the completion proper.
        let visible = completion.split(EOS_TOKEN).next().unwrap_or("");
        let body = visible.trim();
        let segments: Vec<&str> = body.split(';').map(str::trim).collect();
        let (final_answer, work) = segments.split_last().expect("split yields at least one segment");

        let correct = match (parse_int(final_answer, false), parse_int(answer, false)) {
            (Some(got), Some(want)) => got == want,
            _ => *final_answer == answer,
        };
        let true_steps = work.iter().filter(|s| step_is_true(s)).count();
        let quality = if work.is_empty() { 0.0 } else { true_steps as f64 / work.len() as f64 };
        let well_formed = !body.is_empty()
            && parse_int(final_answer, true).is_some()
            && work.iter().all(|s| parse_step(s, true).is_some());
        let brevity = if well_formed {
            let shortest = match parse_int(answer, false) {
                Some(v) => v.to_string().chars().count(),
                None => answer.chars().count(),
            };
            let n = visible.chars().count();
            (shortest as f64 / n as f64).min(1.0)
        } else {
            0.0
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        Metrics::from([
            (CORRECTNESS.to_string(), flag(correct)),
            (REASONING_QUALITY.to_string(), quality),
            (FORMAT_PENALTY.to_string(), flag(!well_formed)),
            (BREVITY.to_string(), brevity),
        ])
    }
}

/// The record's answer as a trimmed string: a JSON string, or a number (integral floats such
/// as `46.0` written as integers, so they compare by value with the completion's answer).
fn answer_of(metadata: &Value) -> Option<String> {
    match metadata.get("answer")? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// Parses `-?digits`. With `canonical`, leading zeros and `-0` are rejected (the form the
/// format check requires); without, any such spelling is read by value.
fn parse_int(s: &str, canonical: bool) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if canonical && ((digits.len() > 1 && digits.starts_with('0')) || (digits == "0" && s.starts_with('-'))) {
        return None;
    }
    s.parse().ok()
}

/// Parses `a op b = c` (spaces allowed around `op` and `=`) into its values.
fn parse_step(s: &str, canonical: bool) -> Option<(i128, u8, i128, i128)> {
    let (lhs, rhs) = s.split_once('=')?;
    let c = parse_int(rhs.trim(), canonical)?;
    let lhs = lhs.trim();
    // The operator is the first `+ - *` after the first character, so a leading minus sign
    // belongs to `a` and `3--2` reads as 3 − (−2).
    let pos = lhs.char_indices().skip(1).find(|&(_, ch)| matches!(ch, '+' | '-' | '*')).map(|(i, _)| i)?;
    let a = parse_int(lhs[..pos].trim(), canonical)?;
    let b = parse_int(lhs[pos + 1..].trim(), canonical)?;
    Some((a, lhs.as_bytes()[pos], b, c))
}

/// Whether `s` is an equation under the step grammar that holds. Leading zeros do not make a
/// step false (`05+1=6` is arithmetically right; the format check flags the spelling).
fn step_is_true(s: &str) -> bool {
    let Some((a, op, b, c)) = parse_step(s, false) else { return false };
    let value = match op {
        b'+' => a.checked_add(b),
        b'-' => a.checked_sub(b),
        _ => a.checked_mul(b),
    };
    value == Some(c)
}

impl Scorer for MathScorer {
    fn name(&self) -> &str {
        "math"
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        Some([CORRECTNESS, REASONING_QUALITY, FORMAT_PENALTY, BREVITY].map(String::from).to_vec())
    }

    fn check_task(&self, record: &Value) -> std::result::Result<(), String> {
        super::scorer::require_answer(record)
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        batch
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let answer = answer_of(item.metadata).ok_or_else(|| {
                    Error::Invalid(format!("scorer `math`: item {i} has no string or number `answer` in its metadata"))
                })?;
                Ok(Self::score_one(item.completion, &answer))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (correctness, reasoning_quality, format_penalty, brevity)
    fn m(completion: &str, answer: &str) -> (f64, f64, f64, f64) {
        let x = MathScorer::score_one(completion, answer);
        (x[CORRECTNESS], x[REASONING_QUALITY], x[FORMAT_PENALTY], x[BREVITY])
    }

    #[test]
    fn bare_answer_is_correct_well_formed_and_shortest() {
        assert_eq!(m("46", "46"), (1.0, 0.0, 0.0, 1.0));
        assert_eq!(m("46<|endoftext|>", "46"), (1.0, 0.0, 0.0, 1.0));
        assert_eq!(m("45<|endoftext|>", "46"), (0.0, 0.0, 0.0, 1.0));
        assert_eq!(m("0", "0"), (1.0, 0.0, 0.0, 1.0));
        // Text after the end-of-text marker is ignored entirely.
        assert_eq!(m("46<|endoftext|>garbage<|endoftext|>", "46"), (1.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn empty_and_whitespace_completions() {
        assert_eq!(m("", "46"), (0.0, 0.0, 1.0, 0.0));
        assert_eq!(m("<|endoftext|>", "46"), (0.0, 0.0, 1.0, 0.0));
        assert_eq!(m("  \n", "46"), (0.0, 0.0, 1.0, 0.0));
        // Surrounding whitespace is allowed by the form but costs brevity.
        assert_eq!(m(" 46\n<|endoftext|>", "46"), (1.0, 0.0, 0.0, 0.5));
        assert_eq!(m("46 ", "46"), (1.0, 0.0, 0.0, 2.0 / 3.0));
    }

    #[test]
    fn shown_work_quality_is_the_fraction_of_true_steps() {
        let (c, q, f, b) = m("40+6=46;46", "46");
        assert_eq!((c, q, f), (1.0, 1.0, 0.0));
        assert!((b - 0.2).abs() < 1e-12, "{b}");
        assert_eq!(m("10+30=40; 2+4=6; 40 + 6 = 46; 46", "46").1, 1.0);
        assert_eq!(m("40+6=47;46", "46"), (1.0, 0.0, 0.0, 0.2));
        let (_, q, f, _) = m("40+6=46;7*3=20;9-1=8;46", "46");
        assert!((q - 2.0 / 3.0).abs() < 1e-12 && f == 0.0, "{q} {f}");
        // A segment that is not an equation counts as shown work that is not true, and
        // breaks the form.
        assert_eq!(m("hmm;40+6=46;46", "46"), (1.0, 0.5, 1.0, 0.0));
        // Multiplication and subtraction.
        assert_eq!(m("6*7=42;42", "42").1, 1.0);
        assert_eq!(m("50-4=46;46", "46").1, 1.0);
    }

    #[test]
    fn negative_numbers() {
        assert_eq!(m("-5", "-5"), (1.0, 0.0, 0.0, 1.0));
        // Brevity is measured against the record's answer: "5" is one character, "-5" two.
        assert_eq!(m("-5", "5"), (0.0, 0.0, 0.0, 0.5));
        // The leading minus belongs to the first operand; `3--2` is 3 − (−2).
        assert_eq!(m("-3+5=2;3--2=5;-7*-2=14;2", "2").1, 1.0);
        assert_eq!(m("2-5=-3;-3", "-3").2, 0.0);
        // `-0` is the value 0 but not the canonical spelling.
        assert_eq!(m("-0", "0"), (1.0, 0.0, 1.0, 0.0));
        // Overflowing arithmetic is false, not a panic.
        let big = "99999999999999999999999999999";
        assert_eq!(m(&format!("{big}*{big}=1;1"), "1").1, 0.0);
    }

    #[test]
    fn leading_zeros_are_correct_by_value_but_malformed() {
        assert_eq!(m("046", "46"), (1.0, 0.0, 1.0, 0.0));
        assert_eq!(m("40+06=46;46", "46"), (1.0, 1.0, 1.0, 0.0));
        assert_eq!(m("46", "046"), (1.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn garbage_and_near_misses() {
        for g in ["46 apples", "forty-six", "46;", ";46x", "4 6", "+46", "46=46", "1+2", "12+34=46"] {
            let (c, _, f, b) = m(g, "46");
            assert_eq!((c, f, b), (0.0, 1.0, 0.0), "{g:?}");
        }
        // A non-integer answer is compared as a string.
        assert_eq!(m("abc", "abc").0, 1.0);
        assert_eq!(m("abc", "abd").0, 0.0);
    }

    #[test]
    fn batch_scoring_reads_string_and_number_answers() {
        let meta = [json!({"answer": "46"}), json!({"answer": 46}), json!({"answer": 46.0}), json!({"answer": -3})];
        let comps = ["46", "46<|endoftext|>", "46", "-3"];
        let batch: Vec<_> =
            meta.iter().zip(comps).map(|(m, c)| ScoreInput { prompt: "12+34=", completion: c, metadata: m }).collect();
        let mut s = MathScorer::new();
        let out = crate::reward::score_checked(&mut s, &batch).unwrap();
        assert!(out.iter().all(|x| x[CORRECTNESS] == 1.0 && x[BREVITY] == 1.0), "{out:?}");
        let names = s.metric_names().unwrap();
        assert_eq!(names, ["correctness", "reasoning_quality", "format_penalty", "brevity"]);
        for x in &out {
            assert_eq!(x.keys().cloned().collect::<std::collections::BTreeSet<_>>(), names.iter().cloned().collect());
        }
    }

    #[test]
    fn missing_answer_is_a_named_error() {
        let meta = [json!({"answer": "1"}), json!({"task_id": "addition"}), json!(null)];
        for (i, m) in meta.iter().enumerate().skip(1) {
            let batch = [
                ScoreInput { prompt: "p", completion: "1", metadata: &meta[0] },
                ScoreInput { prompt: "p", completion: "1", metadata: m },
            ];
            let e = MathScorer.score(&batch).unwrap_err().to_string();
            assert!(e.contains("math") && e.contains("item 1") && e.contains("answer"), "{i}: {e}");
        }
    }
}
