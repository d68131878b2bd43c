//! The built-in toy task: two-digit addition, written as JSONL prompt/answer pairs so the
//! default `dapo sft` and `dapo train` runs need no downloaded data.

use crate::error::{Error, Result};
use crate::util::rng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// (prompt, answer) pairs such as ("12+34=", "46").
pub type Problems = Vec<(String, String)>;

/// Every `a+b=` problem with 0 ≤ a, b < 100, as (prompt, answer), shuffled with `seed` and
/// split 90/10 into (train, held-out).
pub fn addition_problems(seed: u64) -> (Problems, Problems) {
    let mut all: Vec<(String, String)> =
        (0..100).flat_map(|a| (0..100).map(move |b| (format!("{a}+{b}="), format!("{}", a + b)))).collect();
    Rng::new(seed).shuffle(&mut all);
    let heldout = all.split_off(all.len() * 9 / 10);
    (all, heldout)
}

fn write_jsonl(path: &Path, rows: &[(String, String)]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?);
    for (p, a) in rows {
        let line = serde_json::json!({ "prompt": p, "answer": a, "task_id": "addition" });
        writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    }
    f.flush().map_err(|e| Error::io(path, e))
}

/// Writes `train.jsonl` and `heldout.jsonl` of [`addition_problems`] into `dir` and returns
/// their paths.
pub fn write_addition_task(dir: &Path, seed: u64) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (train, heldout) = addition_problems(seed);
    let (tp, hp) = (dir.join("train.jsonl"), dir.join("heldout.jsonl"));
    write_jsonl(&tp, &train)?;
    write_jsonl(&hp, &heldout)?;
    Ok((tp, hp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_complete_and_correct() {
        let (train, heldout) = addition_problems(3);
        assert_eq!((train.len(), heldout.len()), (9000, 1000));
        let mut all: Vec<_> = train.iter().chain(&heldout).map(|(p, _)| p.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10_000);
        for (p, a) in train.iter().take(50) {
            let (x, y) = p.trim_end_matches('=').split_once('+').unwrap();
            assert_eq!(x.parse::<u32>().unwrap() + y.parse::<u32>().unwrap(), a.parse::<u32>().unwrap());
        }
        assert_eq!(addition_problems(3), (train, heldout), "same seed, same split");
    }
}
