//! The library's error type: every failure that input (files, data, flags) can cause is an
//! `Error` that names the file and the tensor, line or field at fault. Panics are reserved for
//! bugs.

use std::path::{Path, PathBuf};

/// Everything that can go wrong when loading, training or saving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Standard output was closed by its reader (`dapo selftest | head`): the command stops
    /// quietly, with success.
    #[error("standard output was closed")]
    BrokenPipe,
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration file (`config.json`, a mixer file, ...) is malformed or incomplete.
    #[error("{}: {msg}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A tensor in a safetensors file is missing, misshapen, of the wrong dtype or unreadable.
    #[error("{}: tensor `{name}`: {msg}", path.display())]
    Tensor {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor's name as stored (or as expected) in the file.
        name: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A safetensors file that cannot be parsed at all (truncated, bad header).
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        msg: String,
    },
    /// A bad line in a data file (JSONL or text); `line` is 1-based.
    #[error("{}:{line}: {msg}", path.display())]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },
    /// A tokenizer that cannot be loaded or cannot encode/decode the input.
    #[error("tokenizer {}: {msg}", path.display())]
    Tokenizer {
        /// Where the tokenizer came from (a `tokenizer.json`, or `<built-in>`).
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Invalid arguments to a library call: shapes that do not match, token ids out of range,
    /// an empty batch.
    #[error("{0}")]
    Invalid(String),
    /// The run was stopped by a signal (SIGINT, SIGTERM) after writing a checkpoint.
    #[error("{msg}")]
    Interrupted {
        /// What happened and how to resume.
        msg: String,
        /// The exit code: 128 + the signal number.
        code: i32,
    },
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// An [`Error::Config`] for `path`.
    pub fn config(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Config { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }

    /// An [`Error::Tensor`] for tensor `name` in `path`.
    pub fn tensor(path: impl AsRef<Path>, name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.as_ref().to_path_buf(), name: name.into(), msg: msg.into() }
    }

    /// An [`Error::Data`] for 1-based `line` of `path`.
    pub fn data(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().to_path_buf(), line, msg: msg.into() }
    }

    /// An [`Error::Tokenizer`] for the tokenizer at `path`.
    pub fn tokenizer(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Tokenizer { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
}

/// Reads a whole file, naming it in the error. Only regular files are read: a FIFO or a
/// device would block or never end, so it is refused before it is opened.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    check_regular(path.as_ref())?;
    std::fs::read(path.as_ref()).map_err(|e| Error::io(path, e))
}

/// Reads a whole UTF-8 file (regular files only, see [`read_file`]), naming it in the error.
pub fn read_to_string(path: impl AsRef<Path>) -> Result<String> {
    check_regular(path.as_ref())?;
    std::fs::read_to_string(path.as_ref()).map_err(|e| Error::io(path, e))
}

/// Errors unless `path` is a regular file (symlinks are followed).
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
    Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}; expected a file"))))
}
