//! A scorer that runs as a separate program, in any language, speaking JSON lines over its
//! standard input and output. `docs/external_scorer.md` has the same protocol with a complete
//! Python example.
//!
//! # Protocol
//!
//! The command (a program and its arguments, e.g. `python3 my_scorer.py`) is started on the
//! first batch and kept running across batches, so a scorer may load a model once.
//!
//! * **Requests.** For each completion of a batch, one line on the scorer's stdin holding a
//!   JSON object
//!   `{"prompt": "12+34=", "completion": "46", "metadata": {...}, "index": 0, "batch_size": 8}`:
//!   `metadata` is the task's dataset record (`null` when there is none), `index` the
//!   0-based position in the batch, `batch_size` the number of completions in the batch (so a
//!   scorer that wants the whole batch at once knows when it has it). Strings are JSON
//!   escaped, so a request is always exactly one line.
//! * **Responses.** For each request, in order, one line on stdout holding a JSON object that
//!   maps metric names to numbers, e.g. `{"correctness": 1.0, "length": 12}`. `null` is read
//!   as NaN (a metric the scorer could not compute; the mixer's `nan` policy decides what it
//!   costs). Blank lines are skipped. Anything else (a non-object, a string value, a line of
//!   debugging output) is an error naming the scorer, the stdout line number and the
//!   offending text, so **debugging output must go to stderr**. The scorer must flush stdout
//!   after each batch (in Python: `print(..., flush=True)`).
//! * **Timeout.** The responses of one batch must all arrive within the timeout (default
//!   60 s, [`ExternalScorer::with_timeout`]), counted from the moment the batch is sent
//!   (including start-up for the first batch). Past it the process is killed and the batch
//!   fails.
//! * **Failures.** A process that exits or closes stdout before answering every request
//!   fails the batch with its exit status and the last lines of its stderr (kept in a ring of
//!   [`ExternalScorer::with_stderr_lines`] lines, default 20). A response line left over
//!   from an earlier batch (the scorer answered more requests than it got) fails the next
//!   batch, since it would otherwise shift every later result by one.
//! * **Restart.** After any failure the process is killed; the next batch starts a fresh one.
//!   Dropping the scorer kills the process.
//!
//! The process runs in its own process group: a terminal's Ctrl-C (SIGINT to the foreground
//! group) reaches the trainer alone, which finishes its step and checkpoints while the scorer
//! keeps answering. Whenever the scorer is stopped (a timeout, a failure, the trainer exiting)
//! the whole group is killed, so a shell wrapper's children die with it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::scorer::{Metrics, ScoreInput, Scorer};
use crate::error::{Error, Result};

/// The default time one batch may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default number of stderr lines kept for error messages.
pub const DEFAULT_STDERR_LINES: usize = 20;
/// Offending text and stderr lines are cut to this many characters in error messages.
const MAX_QUOTED_CHARS: usize = 300;
/// How long a process whose stdout closed gets to exit before it is killed, and how long its
/// stderr gets to drain, when reporting a crash.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What the stdout reader thread reports.
enum StdoutEvent {
    Line(String),
    Eof,
    Failed(String),
}

/// A running scorer process and the threads that serve its pipes.
struct Running {
    child: Child,
    /// Request payloads for the writer thread. Writing happens off the calling thread so a
    /// scorer that stops reading stdin (a hang with a full pipe) cannot block past the timeout.
    requests: Sender<Vec<u8>>,
    responses: Receiver<StdoutEvent>,
    stderr_done: Receiver<()>,
    /// stdout lines read so far, for 1-based line numbers in errors.
    line_no: usize,
}

/// A [`Scorer`] that runs an external command and talks JSON lines with it; see the
/// [module docs](self) for the protocol.
pub struct ExternalScorer {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    current_dir: Option<PathBuf>,
    timeout: Duration,
    metric_names: Option<Vec<String>>,
    stderr_cap: usize,
    stderr: Arc<Mutex<VecDeque<String>>>,
    running: Option<Running>,
    starts: usize,
}

impl ExternalScorer {
    /// A scorer running `program` with `args`. Nothing is started until the first batch. Its
    /// name (for errors and logs) is the command line; see [`with_name`](Self::with_name).
    pub fn new<P, I, A>(program: P, args: I) -> Self
    where
        P: Into<OsString>,
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        let program = program.into();
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let name = std::iter::once(&program).chain(&args).map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(" ");
        ExternalScorer {
            name,
            program,
            args,
            current_dir: None,
            timeout: DEFAULT_TIMEOUT,
            metric_names: None,
            stderr_cap: DEFAULT_STDERR_LINES,
            stderr: Arc::new(Mutex::new(VecDeque::new())),
            running: None,
            starts: 0,
        }
    }

    /// A scorer from a command line such as `python3 "my scorer.py" --x 1`, split into words
    /// by POSIX shell rules (quotes and backslash escapes; no variables, globs or pipes, since
    /// no shell runs it). An empty line or an unterminated quote is an error.
    pub fn from_command_line(line: &str) -> Result<Self> {
        let words = shlex::split(line).ok_or_else(|| {
            Error::Invalid(format!("external scorer: cannot split `{line}` into words (an unterminated quote?)"))
        })?;
        let mut words = words.into_iter();
        let program = words.next().ok_or_else(|| Error::Invalid("external scorer: the command is empty".into()))?;
        Ok(Self::new(program, words))
    }

    /// Renames the scorer in errors and logs.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The time one batch may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the command in `dir` instead of the current directory.
    pub fn with_current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Declares the metric names the command produces (see [`Scorer::metric_names`]). They
    /// are not checked against its responses.
    pub fn with_metric_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.metric_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// How many of the last stderr lines are kept for error messages (default
    /// [`DEFAULT_STDERR_LINES`]).
    pub fn with_stderr_lines(mut self, lines: usize) -> Self {
        self.stderr_cap = lines;
        self
    }

    /// The batch timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many times the process has been started (1 after the first batch, +1 for each
    /// restart after a failure).
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// Whether a process is running now.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The last stderr lines of the current (or last) process, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    /// Kills the process, if one is running; the next batch starts a fresh one.
    pub fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            kill_group(&mut r.child);
            let _ = r.child.wait();
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Invalid(format!("external scorer `{}`: {msg}", self.name))
    }

    fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group (group id = its pid), away from the terminal's signals.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        let mut child =
            cmd.spawn().map_err(|e| self.err(format!("cannot start `{}`: {e}", self.program.to_string_lossy())))?;
        self.starts += 1;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (requests, request_rx) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || write_requests(stdin, request_rx));
        let (response_tx, responses) = mpsc::channel();
        thread::spawn(move || read_stdout(stdout, response_tx));
        // A fresh ring per process, so a crash report shows this process's stderr only.
        self.stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (ring, cap) = (Arc::clone(&self.stderr), self.stderr_cap);
        let (done_tx, stderr_done) = mpsc::channel();
        thread::spawn(move || {
            read_stderr(stderr, &ring, cap);
            let _ = done_tx.send(());
        });
        self.running = Some(Running { child, requests, responses, stderr_done, line_no: 0 });
        Ok(())
    }

    /// The last stderr lines, formatted for an error message.
    fn stderr_report(&self) -> String {
        let tail = self.stderr_tail();
        if tail.is_empty() {
            "; its stderr was empty".to_string()
        } else {
            format!(
                "; last lines of its stderr:\n{}",
                tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
            )
        }
    }

    /// Kills the process after a failure and returns the error `msg` (with the stderr tail).
    fn fail(&mut self, msg: String) -> Error {
        if let Some(mut r) = self.running.take() {
            kill_group(&mut r.child);
            let _ = r.child.wait();
            // The stderr pipe closes with the process; wait briefly so its last lines are in.
            let _ = r.stderr_done.recv_timeout(EXIT_GRACE);
        }
        self.err(format!("{msg}{}", self.stderr_report()))
    }

    /// The process's exit status once its stdout has closed, killing it if it does not exit
    /// within [`EXIT_GRACE`].
    fn reap(&mut self) -> Option<ExitStatus> {
        let r = self.running.as_mut()?;
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match r.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    kill_group(&mut r.child);
                    break r.child.wait().ok();
                }
            }
        };
        let _ = r.stderr_done.recv_timeout(EXIT_GRACE);
        status
    }

    fn run_batch(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        let n = batch.len();
        let mut payload = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            let req = json!({
                "prompt": item.prompt,
                "completion": item.completion,
                "metadata": item.metadata,
                "index": i,
                "batch_size": n,
            });
            serde_json::to_writer(&mut payload, &req).expect("a JSON value always serialises");
            payload.push(b'\n');
        }
        let r = self.running.as_mut().expect("started by the caller");
        // Anything already waiting on stdout was printed before this batch was sent: the
        // scorer answered more requests than it got last time.
        // End of stdout (or nothing) stops the drain; an end is reported below with the
        // process's exit status.
        while let Ok(StdoutEvent::Line(l)) = r.responses.try_recv() {
            r.line_no += 1;
            if !l.trim().is_empty() {
                let msg = format!(
                    "stdout line {}: a response left over from the previous batch (more responses than \
                     requests): {}",
                    r.line_no,
                    quote(&l)
                );
                return Err(self.fail(msg));
            }
        }
        // A send error means the writer thread has stopped because stdin is closed; the
        // reason (usually an exit) shows up on stdout below.
        let _ = r.requests.send(payload);

        // `None` for a timeout too large to add to the clock: wait without a limit.
        let deadline = Instant::now().checked_add(self.timeout);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let r = self.running.as_mut().expect("started by the caller");
            let wait = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            let event = match r.responses.recv_timeout(wait) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    let msg = format!(
                        "timed out after {:?} with {} of {n} responses received (waiting for completion {}); the \
                         process was killed",
                        self.timeout,
                        out.len(),
                        out.len()
                    );
                    return Err(self.fail(msg));
                }
                Err(RecvTimeoutError::Disconnected) => StdoutEvent::Eof,
            };
            match event {
                StdoutEvent::Line(line) => {
                    r.line_no += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match parse_response(&line) {
                        Ok(m) => out.push(m),
                        Err(why) => {
                            let msg = format!(
                                "stdout line {} (response to completion {} of {n}): {why}; got {}",
                                r.line_no,
                                out.len(),
                                quote(&line)
                            );
                            return Err(self.fail(msg));
                        }
                    }
                }
                StdoutEvent::Eof | StdoutEvent::Failed(_) => {
                    let read_error = match event {
                        StdoutEvent::Failed(e) => format!(" (reading stdout failed: {e})"),
                        _ => String::new(),
                    };
                    let status = match self.reap() {
                        Some(s) => format!("exited with {s}"),
                        None => "closed its stdout".to_string(),
                    };
                    let msg = format!("the process {status}{read_error} after {} of {n} responses", out.len());
                    return Err(self.fail(msg));
                }
            }
        }
        Ok(out)
    }
}

/// One response line: a JSON object of numbers (`null` = NaN), or why not.
fn parse_response(line: &str) -> std::result::Result<Metrics, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(obj) = v else {
        return Err("expected a JSON object mapping metric names to numbers".into());
    };
    obj.into_iter()
        .map(|(k, v)| match v {
            Value::Number(x) => Ok((k, x.as_f64().unwrap_or(f64::NAN))),
            Value::Null => Ok((k, f64::NAN)),
            other => Err(format!("metric `{k}` is {other}, not a number")),
        })
        .collect()
}

/// `s` in quotes, cut to [`MAX_QUOTED_CHARS`] characters.
fn quote(s: &str) -> String {
    let s = s.trim_end_matches(['\n', '\r']);
    if s.chars().count() > MAX_QUOTED_CHARS {
        format!("{:?}…", s.chars().take(MAX_QUOTED_CHARS).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// The writer thread: writes each payload to stdin and flushes, until stdin breaks or the
/// scorer is dropped.
fn write_requests(mut stdin: ChildStdin, requests: Receiver<Vec<u8>>) {
    for payload in requests {
        if stdin.write_all(&payload).and_then(|_| stdin.flush()).is_err() {
            return;
        }
    }
}

/// The stdout reader thread: forwards each line (lossily decoded, so a stray byte is reported
/// as text rather than lost), then the end.
fn read_stdout(stdout: impl Read, tx: Sender<StdoutEvent>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let event = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => StdoutEvent::Eof,
            Ok(_) => StdoutEvent::Line(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) => StdoutEvent::Failed(e.to_string()),
        };
        let last = !matches!(event, StdoutEvent::Line(_));
        if tx.send(event).is_err() || last {
            return;
        }
    }
}

/// The stderr reader thread: keeps the last `cap` lines, each cut to a readable length.
fn read_stderr(stderr: impl Read, ring: &Mutex<VecDeque<String>>, cap: usize) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buf) {
        if n == 0 {
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let line = if line.chars().count() > MAX_QUOTED_CHARS {
            format!("{}…", line.chars().take(MAX_QUOTED_CHARS).collect::<String>())
        } else {
            line.to_string()
        };
        if let Ok(mut ring) = ring.lock() {
            ring.push_back(line);
            while ring.len() > cap {
                ring.pop_front();
            }
        }
        buf.clear();
    }
}

impl Scorer for ExternalScorer {
    fn name(&self) -> &str {
        &self.name
    }

    fn metric_names(&self) -> Option<Vec<String>> {
        self.metric_names.clone()
    }

    fn score(&mut self, batch: &[ScoreInput<'_>]) -> Result<Vec<Metrics>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if self.running.is_none() {
            self.start()?;
        }
        self.run_batch(batch)
    }
}

/// Kills the scorer's whole process group (it leads its own), then the child itself in case
/// the group is already gone.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group whose id is the
        // child's pid, which `process_group(0)` made; it touches no memory of this process.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
}

impl Drop for ExternalScorer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ExternalScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalScorer")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("running", &self.running.is_some())
            .field("starts", &self.starts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_numbers_and_null() {
        let m = parse_response(r#"{"a": 1, "b": 0.5, "c": null}"#).unwrap();
        assert_eq!((m["a"], m["b"]), (1.0, 0.5));
        assert!(m["c"].is_nan());
        assert!(parse_response("[1]").unwrap_err().contains("object"));
        assert!(parse_response(r#"{"a": "1"}"#).unwrap_err().contains("`a`"));
        assert!(parse_response("hello").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn command_line_and_names() {
        let s = ExternalScorer::from_command_line("  python3 x.py --k 1 ").unwrap();
        assert_eq!(s.name(), "python3 x.py --k 1");
        assert!(ExternalScorer::from_command_line("  ").is_err());
        // Shell quoting: a path with a space stays one argument; an open quote is an error.
        let q = ExternalScorer::from_command_line(r#"python3 "/tmp/my scorer.py" --tag 'a b' c\ d"#).unwrap();
        assert_eq!(q.program, OsString::from("python3"));
        assert_eq!(q.args, ["/tmp/my scorer.py", "--tag", "a b", "c d"].map(OsString::from));
        let e = ExternalScorer::from_command_line(r#"python3 "x.py"#).map(|_| ()).expect_err("refused").to_string();
        assert!(e.contains("quote"), "{e}");
        assert_eq!(s.with_name("mine").name(), "mine");
        let long = "x".repeat(1000);
        assert!(quote(&long).chars().count() < 400);
    }

    #[test]
    fn a_missing_program_is_a_named_error() {
        let meta = Value::Null;
        let batch = [ScoreInput { prompt: "p", completion: "c", metadata: &meta }];
        let mut s = ExternalScorer::new("/nonexistent/scorer-program", ["a"]);
        let e = s.score(&batch).unwrap_err().to_string();
        assert!(e.contains("cannot start") && e.contains("/nonexistent/scorer-program"), "{e}");
        assert!(s.score(&[]).unwrap().is_empty());
    }
}
