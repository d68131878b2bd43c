//! One run per output directory: `dapo train` and `dapo sft` hold an exclusive `flock` on
//! `<dir>/.dapo.lock` while they run, so a second run into the same directory is refused
//! instead of interleaving its log and checkpoints with the first. The kernel drops the lock
//! when the process ends, however it ends.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".dapo.lock";

/// A held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist). Errors when another process holds it, naming its pid.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock(2) on a descriptor this function owns for the lock's lifetime.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r != 0 {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
                return Err(Error::Invalid(format!(
                    "{} is in use by another dapo run{who}; wait for it to finish or choose another --output-dir",
                    dir.display()
                )));
            }
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in this process
        // conflicts just as another process would.
        let e = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use") && e.contains(&std::process::id().to_string()), "{e}");
        drop(a);
        DirLock::acquire(dir.path()).unwrap();
    }
}
