//! RL task files: JSONL, one task a line, `{"prompt": ..., "answer": ..., "task_id": ...}`.
//! Only `prompt` is required; the whole record is kept and handed to scorers as metadata
//! (so extra fields reach them), and `task_id` (default `"default"`) keys the curriculum.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// One task.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The text the policy continues.
    pub prompt: String,
    /// The curriculum key.
    pub task_id: String,
    /// The whole JSON record (its `answer` and any extra fields), for scorers.
    pub record: Value,
}

/// A loaded task file.
#[derive(Clone, Debug)]
pub struct TaskDataset {
    /// The tasks, in file order.
    pub tasks: Vec<Task>,
    /// The 1-based line of each task in [`TaskDataset::source`] (its position for tasks built
    /// in memory), for errors that name `file:line`.
    pub lines: Vec<usize>,
    /// Where they came from.
    pub source: PathBuf,
    /// Lines skipped as malformed (only with `skip_bad_lines`), as `file:line: why`.
    pub skipped: Vec<String>,
}

/// Parses one non-blank line into a task, or says why not.
fn parse(line: &str) -> std::result::Result<Task, String> {
    let record: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = &record else {
        return Err("expected a JSON object like {\"prompt\": ..., \"answer\": ...}".into());
    };
    let prompt = match obj.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::String(_)) => return Err("\"prompt\" is empty".into()),
        Some(other) => return Err(format!("\"prompt\" must be a string, got {other}")),
        None => return Err("missing \"prompt\"".into()),
    };
    let task_id = match obj.get("task_id") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("\"task_id\" must be a string or a number, got {other}")),
    };
    Ok(Task { prompt, task_id, record })
}

impl TaskDataset {
    /// Reads `path`. A malformed line is an error naming `file:line`, or, with
    /// `skip_bad_lines`, is skipped and listed in [`TaskDataset::skipped`]. A file with no
    /// task is an error either way.
    pub fn load(path: &Path, skip_bad_lines: bool) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        // A byte-order mark is not part of the first line's JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut tasks = Vec::new();
        let mut lines = Vec::new();
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if let Err(why) = super::check_line_length(line) {
                return Err(Error::data(path, i + 1, why));
            }
            match parse(line) {
                Ok(t) => {
                    tasks.push(t);
                    lines.push(i + 1);
                }
                Err(why) if skip_bad_lines => skipped.push(format!("{}:{}: {why}", path.display(), i + 1)),
                Err(why) => return Err(Error::data(path, i + 1, why)),
            }
        }
        if tasks.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no tasks (an RL dataset needs {{\"prompt\": ...}} lines)",
                path.display()
            )));
        }
        Ok(TaskDataset { tasks, lines, source: path.to_path_buf(), skipped })
    }

    /// Tasks from memory (tests, examples).
    pub fn from_tasks(tasks: Vec<Task>) -> Self {
        let lines = (1..=tasks.len()).collect();
        TaskDataset { tasks, lines, source: PathBuf::from("<memory>"), skipped: Vec::new() }
    }

    /// Splits off a held-out set of `n` tasks chosen with `seed` (at least one task stays for
    /// training): `(train, held_out)`, each in file order.
    pub fn split_heldout(&self, n: usize, seed: u64) -> (TaskDataset, TaskDataset) {
        let n = n.min(self.len().saturating_sub(1));
        let mut idx: Vec<usize> = (0..self.len()).collect();
        crate::util::rng::Rng::new(seed).shuffle(&mut idx);
        let mut held: Vec<usize> = idx[..n].to_vec();
        held.sort_unstable();
        let mut is_held = vec![false; self.len()];
        held.iter().for_each(|&i| is_held[i] = true);
        let pick = |want: bool| {
            let keep: Vec<usize> = (0..self.len()).filter(|&i| is_held[i] == want).collect();
            TaskDataset {
                tasks: keep.iter().map(|&i| self.tasks[i].clone()).collect(),
                lines: keep.iter().map(|&i| self.lines[i]).collect(),
                source: self.source.clone(),
                skipped: Vec::new(),
            }
        };
        (pick(false), pick(true))
    }

    /// `file:line` of task `i`, for error messages.
    pub fn locate(&self, i: usize) -> String {
        format!("{}:{}", self.source.display(), self.lines.get(i).copied().unwrap_or(i + 1))
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when there is none (never for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n\n{\"prompt\": \"x\", \"task_id\": 7, \"extra\": 1}\n",
        )
        .unwrap();
        let d = TaskDataset::load(&p, false).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d.tasks[0].task_id.as_str(), d.tasks[1].task_id.as_str()), ("default", "7"));
        assert_eq!(d.tasks[1].record["extra"], 1);

        std::fs::write(&p, "{\"prompt\": \"a\"}\n{\"prompt\": 3}\nnot json\n").unwrap();
        let e = TaskDataset::load(&p, false).unwrap_err().to_string();
        assert!(e.contains("t.jsonl:2") && e.contains("\"prompt\" must be a string"), "{e}");
        let d = TaskDataset::load(&p, true).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d.skipped.len(), 2);
        assert!(d.skipped[1].contains("t.jsonl:3: invalid JSON"), "{:?}", d.skipped);

        assert_eq!(d.locate(0), format!("{}:1", p.display()));
        let (train, held) = d.split_heldout(5, 1);
        assert_eq!((train.len(), held.len()), (1, 0), "one task stays for training");

        std::fs::write(&p, "\n  \n").unwrap();
        assert!(TaskDataset::load(&p, true).unwrap_err().to_string().contains("no tasks"));
    }
}
