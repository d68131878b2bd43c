//! Metrics as one wide CSV table: a row per logged step, columns `step,time` and then every
//! metric name seen so far, sorted.
//!
//! The set of names can grow during a run (an evaluation metric first appears at the first
//! evaluation). A row whose names are all known is appended as one write, so a crash leaves
//! at most a torn last line, which [`CsvWriter::resume`] and [`read_table`] drop. A row that
//! brings a new name makes the writer re-read the file and rewrite it whole, atomically
//! (sibling temporary file, sync, rename), under the widened header: earlier rows get empty
//! cells for the new columns. Nothing but the header is held in memory.
//!
//! Values are written in Rust's shortest round-trip form (`{}` or `{:e}`, whichever is
//! shorter), so parsing a cell gives back the exact f64; non-finite values are `NaN`, `inf`
//! and `-inf`, which Python's `float`, pandas and Rust all parse. A missing value is an empty
//! cell. Header names containing a comma, a quote or a line break are quoted as RFC 4180
//! says (`"` doubled inside); numbers never need quoting. Lines end with `\n`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint::tensors::write_atomically;
use crate::error::{Error, Result};

/// The first two columns, before the metrics.
pub const FIXED_COLUMNS: [&str; 2] = ["step", "time"];

/// Writes the metrics table at one path.
#[derive(Debug)]
pub struct CsvWriter {
    path: PathBuf,
    /// The metric columns of the file's header, in its order (sorted when this writer wrote it).
    metrics: Vec<String>,
}

impl CsvWriter {
    /// Starts a new table at `path` holding only the header `step,time`, replacing any file
    /// there.
    pub fn create(path: &Path) -> Result<Self> {
        let w = CsvWriter { path: path.to_path_buf(), metrics: Vec::new() };
        w.rewrite(&Table { header: FIXED_COLUMNS.iter().map(|s| s.to_string()).collect(), rows: Vec::new() })?;
        Ok(w)
    }

    /// Continues the table at `path` after resuming from checkpoint `step`: keeps its rows up
    /// to the first one with a later step (the interrupted run's, logged after its
    /// checkpoint), a torn last line or a malformed row, and drops the rest, rewriting the
    /// file only when something was dropped. A missing file starts a new table.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        if !path.exists() {
            return Self::create(path);
        }
        let (mut table, torn) = parse_file(path)?;
        let n = table.rows.len();
        let width = table.header.len();
        let keep = table
            .rows
            .iter()
            .position(|r| r.len() != width || !matches!(r[0].parse::<u64>(), Ok(s) if s <= step))
            .unwrap_or(n);
        table.rows.truncate(keep);
        let w = CsvWriter { path: path.to_path_buf(), metrics: table.header[2..].to_vec() };
        if keep != n || torn {
            w.rewrite(&table)?;
        }
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metric columns of the header, in file order.
    pub fn metrics(&self) -> &[String] {
        &self.metrics
    }

    /// Adds the row of `step`. A metric named `step` or `time` is refused (it would shadow a
    /// fixed column); metrics already in the header but absent here get empty cells.
    pub fn append(&mut self, step: u64, wall_time: f64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        if let Some(name) = metrics.keys().find(|k| FIXED_COLUMNS.contains(&k.as_str())) {
            return Err(Error::Invalid(format!(
                "{}: a metric may not be called `{name}`: that is one of the fixed columns step,time",
                self.path.display()
            )));
        }
        // A file deleted under the writer is recreated whole, header first.
        if metrics.keys().all(|k| self.metrics.contains(k)) && self.path.exists() {
            let cells: Vec<String> =
                self.metrics.iter().map(|m| metrics.get(m).map_or(String::new(), |&v| format_value(v))).collect();
            let mut line = row_line(step, wall_time, &cells);
            line.push('\n');
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            return f.write_all(line.as_bytes()).map_err(|e| Error::io(&self.path, e));
        }
        self.widen(step, wall_time, metrics)
    }

    /// Rewrites the file under the union of its columns and `metrics`'s names, then with the
    /// new row at the end.
    fn widen(&mut self, step: u64, wall_time: f64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let old = if self.path.exists() {
            let (table, _torn) = parse_file(&self.path)?;
            table
        } else {
            Table { header: FIXED_COLUMNS.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
        };
        let names: BTreeSet<&String> = old.header[2..].iter().chain(metrics.keys()).collect();
        let mut header: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
        header.extend(names.into_iter().cloned());
        // Where each new column was in the old header (None: a new column, empty cells).
        let from: Vec<Option<usize>> = header.iter().map(|h| old.header.iter().position(|o| o == h)).collect();
        let mut rows: Vec<Vec<String>> = old
            .rows
            .iter()
            .map(|r| from.iter().map(|i| i.and_then(|i| r.get(i)).cloned().unwrap_or_default()).collect())
            .collect();
        let mut row = vec![step.to_string(), format_value(wall_time)];
        row.extend(header[2..].iter().map(|m| metrics.get(m).map_or(String::new(), |&v| format_value(v))));
        rows.push(row);
        let table = Table { header, rows };
        self.rewrite(&table)?;
        self.metrics = table.header[2..].to_vec();
        Ok(())
    }

    fn rewrite(&self, table: &Table) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_atomically(&self.path, table.to_csv().as_bytes())
    }
}

/// `value` in its shortest round-trip text: `{}` (`0.25`, `1700000000.5`) unless `{:e}`
/// (`1e-10`) is shorter.
pub fn format_value(value: f64) -> String {
    let plain = format!("{value}");
    let exp = format!("{value:e}");
    if exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

fn row_line(step: u64, wall_time: f64, cells: &[String]) -> String {
    let mut line = format!("{step},{}", format_value(wall_time));
    for c in cells {
        line.push(',');
        line.push_str(c);
    }
    line
}

/// `field` quoted when RFC 4180 requires it.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// A CSV file's header and rows, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The first record: `step`, `time`, then the metric names.
    pub header: Vec<String>,
    /// The other complete records, cells as written (empty where a metric was absent).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as CSV text, every record ending with `\n`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for record in std::iter::once(&self.header).chain(&self.rows) {
            let fields: Vec<String> = record.iter().map(|f| quote(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// The cells of column `name` (None when there is no such column).
    pub fn column(&self, name: &str) -> Option<Vec<&str>> {
        let i = self.header.iter().position(|h| h == name)?;
        Some(self.rows.iter().map(|r| r.get(i).map_or("", String::as_str)).collect())
    }
}

/// Reads a metrics CSV. Only complete records (ending in a line break) count: a torn last
/// line, as a crash mid-append leaves, is dropped. Errors name the file when it cannot be
/// read, is empty or does not begin with the `step,time` header.
pub fn read_table(path: &Path) -> Result<Table> {
    parse_file(path).map(|(table, _torn)| table)
}

/// The table in `path`, and whether a torn last record was dropped.
fn parse_file(path: &Path) -> Result<(Table, bool)> {
    let text = crate::error::read_to_string(path)?;
    let (mut records, torn) = parse_records(&text);
    if records.is_empty() {
        return Err(Error::config(path, "not a metrics CSV: no header line"));
    }
    let header = records.remove(0);
    if header.len() < 2 || header[..2] != FIXED_COLUMNS {
        return Err(Error::config(path, "not a metrics CSV: the header must begin with step,time"));
    }
    Ok((Table { header, rows: records }, torn))
}

/// Splits CSV text into records of fields (RFC 4180: quoted fields may hold commas, line
/// breaks and doubled quotes; `\r\n` and `\n` both end a record). Returns the complete
/// records and whether unterminated text followed them.
fn parse_records(text: &str) -> (Vec<Vec<String>>, bool) {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    let torn = in_quotes || !field.is_empty() || !record.is_empty();
    (records, torn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_use_the_shorter_round_trip_form() {
        for (v, s) in [
            (0.25, "0.25"),
            (1.0, "1"),
            (-3.5, "-3.5"),
            (1e-10, "1e-10"),
            (1.5e300, "1.5e300"),
            (1_700_000_000.125, "1700000000.125"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_value(v), s);
        }
        for v in [0.1, 1.0 / 3.0, 2.5e-8, 123_456_789.123_456_78, f64::MIN_POSITIVE, f64::MAX] {
            assert_eq!(format_value(v).parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v}");
        }
    }

    #[test]
    fn quoted_fields_round_trip() {
        let table = Table {
            header: vec!["step".into(), "time".into(), "a,b".into(), "say \"hi\"".into(), "two\nlines".into()],
            rows: vec![vec!["1".into(), "2".into(), "".into(), "3".into(), "4".into()]],
        };
        let text = table.to_csv();
        assert!(text.starts_with("step,time,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\n"), "{text}");
        let (records, torn) = parse_records(&text);
        assert!(!torn);
        assert_eq!(records[0], table.header);
        assert_eq!(records[1], table.rows[0]);
        let (records, torn) = parse_records("step,time\r\n1,2\r\n3,4");
        assert_eq!(records, [vec!["step", "time"], vec!["1", "2"]]);
        assert!(torn, "an unterminated last line is torn");
    }
}
