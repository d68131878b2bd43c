//! A run's output directory as a whole: its `checkpoint-N` directories (the latest complete
//! one for `--resume auto`, the oldest ones beyond `save_total_limit`), the `final/` model, and
//! what a fresh run must clear before it starts there (`--overwrite-output-dir`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The final model's directory under the output directory (weights and tokenizer, no
/// optimizer), written when a run finishes.
pub const FINAL_DIR: &str = "final";

/// What a run writes into its output directory, besides `checkpoint-N` directories: a fresh
/// run finding any of these (or a checkpoint) is refused unless told to overwrite them.
pub const RUN_ARTIFACTS: &[&str] = &[
    "dapo_log.jsonl",
    "completions.jsonl",
    "metrics.csv",
    "runs",
    "run_settings.json",
    "reference",
    "sft",
    "data",
    FINAL_DIR,
    "sft_log.jsonl",
];

/// The `checkpoint-N` directories under `dir`, by N ascending.
pub fn checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let step = name.to_str().and_then(|n| n.strip_prefix("checkpoint-")).and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, entry.path().is_dir()) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` holds a whole checkpoint: weights, optimizer state and dapo's state (a
/// checkpoint is swapped into place complete, but a directory may have been copied by hand).
pub fn is_complete(dir: &Path) -> bool {
    ["model.safetensors", "optimizer.safetensors", "config.json"].iter().all(|f| dir.join(f).is_file())
        && (dir.join(super::trainer_state::DAPO_STATE_FILE).is_file()
            || dir.join(super::trainer_state::TRAINER_STATE_FILE).is_file())
}

/// The latest complete checkpoint under `dir` (`--resume auto`), if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(checkpoints(dir)?.into_iter().rev().map(|(_, p)| p).find(|p| is_complete(p)))
}

/// Deletes the oldest `checkpoint-N` directories under `dir` so that at most `keep` remain
/// (transformers' `save_total_limit`; `keep` = 0 keeps everything). Returns what was removed.
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let all = checkpoints(dir)?;
    if keep == 0 || all.len() <= keep {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (_, path) in &all[..all.len() - keep] {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
        removed.push(path.clone());
    }
    Ok(removed)
}

/// What a previous run left in `dir`, by name: checkpoints, and the [`RUN_ARTIFACTS`] that are
/// directories or non-empty files (an empty log holds nothing of a run; a device such as
/// `/dev/full` linked in place of a log is not a run's file either).
pub fn previous_run(dir: &Path) -> Result<Vec<String>> {
    let mut found: Vec<String> = checkpoints(dir)?.iter().map(|(s, _)| format!("checkpoint-{s}")).collect();
    let left = |a: &&&str| std::fs::metadata(dir.join(a)).is_ok_and(|m| m.is_dir() || (m.is_file() && m.len() > 0));
    found.extend(RUN_ARTIFACTS.iter().filter(left).map(|a| a.to_string()));
    Ok(found)
}

/// Removes what [`previous_run`] lists (and nothing else) from `dir`.
pub fn clear_previous_run(dir: &Path) -> Result<()> {
    for name in previous_run(dir)? {
        let path = dir.join(&name);
        let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        r.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_checkpoint(dir: &Path, step: u64, complete: bool) {
        let c = dir.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&c).unwrap();
        let files: &[&str] = if complete {
            &["model.safetensors", "optimizer.safetensors", "config.json", "dapo_state.json"]
        } else {
            &["config.json"]
        };
        for f in files {
            std::fs::write(c.join(f), "x").unwrap();
        }
    }

    #[test]
    fn latest_prune_and_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(latest_checkpoint(d).unwrap(), None);
        for (s, ok) in [(2, true), (10, true), (4, true), (12, false)] {
            fake_checkpoint(d, s, ok);
        }
        std::fs::create_dir(d.join("checkpoint-x")).unwrap();
        assert_eq!(latest_checkpoint(d).unwrap(), Some(d.join("checkpoint-10")), "numeric order, complete only");
        let removed = prune_checkpoints(d, 2).unwrap();
        assert_eq!(removed, vec![d.join("checkpoint-2"), d.join("checkpoint-4")]);
        assert!(d.join("checkpoint-10").exists() && d.join("checkpoint-12").exists());
        std::fs::write(d.join("completions.jsonl"), "").unwrap();
        std::fs::write(d.join("dapo_log.jsonl"), "{}").unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        assert_eq!(previous_run(d).unwrap(), ["checkpoint-10", "checkpoint-12", "dapo_log.jsonl"]);
        clear_previous_run(d).unwrap();
        assert!(previous_run(d).unwrap().is_empty());
        assert!(d.join("notes.txt").exists() && d.join("checkpoint-x").exists(), "only a run's own files go");
    }
}
