//! One line of an SFT JSONL file: which shape it has and what it holds.

use serde_json::{Map, Value};

/// The accepted shapes of a JSONL record.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// `{"text": ...}`: every token is trained on.
    Text(String),
    /// `{"prompt": ..., "completion" | "answer": ...}`: only the completion is trained on.
    PromptCompletion {
        /// The conditioning text.
        prompt: String,
        /// The target text.
        completion: String,
    },
}

/// The shapes, for error messages.
const SHAPES: &str = r#"{"text": ...} or {"prompt": ..., "completion": ...} or {"prompt": ..., "answer": ...}"#;

/// Parses one non-blank line. The error is a message; the caller adds the file and line.
///
/// Fields other than the ones of the chosen shape are ignored. When both `completion` and
/// `answer` are present, `completion` is the target (in RL task files `answer` is often a
/// reference answer kept alongside).
pub(crate) fn parse_line(line: &str, line_no: usize) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        // A JSON array file is a common mix-up with JSONL; say so rather than only "EOF".
        let hint = if line_no == 1 && line.trim_start().starts_with('[') {
            " (this reader expects JSONL: one JSON object a line, not a JSON array)"
        } else {
            ""
        };
        format!("invalid JSON: {e}{hint}")
    })?;
    let Value::Object(obj) = value else {
        return Err(format!("expected a JSON object ({SHAPES}), got {}", kind(&value)));
    };
    let text = string_field(&obj, "text")?;
    let prompt = string_field(&obj, "prompt")?;
    match (text, prompt) {
        (Some(_), Some(_)) => Err(format!("has both \"text\" and \"prompt\"; use one shape: {SHAPES}")),
        (Some(text), None) => Ok(Record::Text(text)),
        (None, Some(prompt)) => {
            let completion = match string_field(&obj, "completion")? {
                Some(c) => c,
                None => string_field(&obj, "answer")?
                    .ok_or_else(|| "has \"prompt\" but neither \"completion\" nor \"answer\"".to_string())?,
            };
            Ok(Record::PromptCompletion { prompt, completion })
        }
        (None, None) => {
            let fields: Vec<&str> = obj.keys().map(String::as_str).collect();
            Err(format!("expected {SHAPES}; found fields [{}]", fields.join(", ")))
        }
    }
}

/// `obj[name]` as a string: `None` when absent, an error when present but not a string.
fn string_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field \"{name}\" must be a string, got {}", kind(other))),
    }
}

/// A JSON value's type, as a word.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(parse_line(r#"{"text": "hi", "id": 3}"#, 1), Ok(Record::Text("hi".into())));
        let pc = |p: &str, c: &str| Record::PromptCompletion { prompt: p.into(), completion: c.into() };
        assert_eq!(parse_line(r#"{"prompt": "1+1=", "completion": "2"}"#, 1), Ok(pc("1+1=", "2")));
        assert_eq!(parse_line(r#"{"prompt": "1+1=", "answer": "2", "task_id": 7}"#, 1), Ok(pc("1+1=", "2")));
        assert_eq!(parse_line(r#"{"prompt": "p", "answer": "a", "completion": "c"}"#, 1), Ok(pc("p", "c")));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |line: &str| parse_line(line, 2).unwrap_err();
        assert!(err("{\"text\": ").starts_with("invalid JSON: EOF"), "{}", err("{\"text\": "));
        assert!(parse_line("[1,", 1).unwrap_err().contains("not a JSON array"));
        assert!(err("[1, 2]").contains("expected a JSON object") && err("[1, 2]").contains("an array"));
        assert!(err(r#"{"text": 5}"#).contains("field \"text\" must be a string, got a number"));
        assert!(err(r#"{"prompt": "p", "completion": null}"#).contains("\"completion\" must be a string, got null"));
        assert!(err(r#"{"prompt": "p"}"#).contains("neither \"completion\" nor \"answer\""));
        assert!(err(r#"{"text": "t", "prompt": "p"}"#).contains("both"));
        let e = err(r#"{"question": "q", "reply": "r"}"#);
        assert!(e.contains("found fields [question, reply]") && e.contains("\"completion\""), "{e}");
    }
}
