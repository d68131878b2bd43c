//! TensorBoard event files, written and read without TensorFlow or a protobuf crate.
//!
//! # Format
//!
//! An event file is a sequence of TFRecords, each
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC32C of those 8 bytes | data | u32 masked CRC32C of data
//! ```
//!
//! where CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78) and the mask is
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping. Each record's data is one `Event`
//! protobuf (tensorboard/compat/proto/event.proto), of which this module writes
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2;
//!              oneof { string file_version = 3; Summary summary = 5; SessionLog session_log = 7; } }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; }          // START = 1
//! ```
//!
//! The first event of every file carries `file_version = "brain.Event:2"`; version 2 is what
//! tells TensorBoard to trust `SessionLog.START` (below) instead of guessing restarts from
//! out-of-order steps.
//!
//! # Choices
//!
//! - Values are stored as `simple_value`, an f32: what TensorBoard's scalar dashboard reads.
//!   An f64 metric is rounded to the nearest f32 (beyond f32's range it becomes ±inf).
//! - Non-finite values (NaN, ±inf) are written, not skipped: TensorBoard accepts and plots
//!   them, and a loss that went NaN is exactly what a curve should show.
//! - [`EventWriter::write_session_start`] writes a `SessionLog.START` event. TensorBoard's
//!   loader, on reading one at step `s`, forgets every event it has seen with a step `>= s`
//!   (in the files of the same directory read so far, which it reads in file-name order).
//!   A run resumed from checkpoint `s` starts a new file beginning with START at `s + 1`, so
//!   the steps the interrupted run logged after its checkpoint disappear from the curves,
//!   as they do from the CSV and JSONL logs; earlier files are never modified.
//! - File names are `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n>`, `n` the first
//!   count from 0 that no file in the directory has, so two writers never share a file.
//!   TensorBoard reads every file whose name contains `tfevents`, in name order, which is
//!   creation order unless two processes start files in the same second.
//!
//! The reader ([`read_events`]) is strict: any CRC mismatch, truncated record or malformed
//! protobuf is an error naming the record and its byte offset (TensorBoard itself stops
//! quietly at a bad record, since it may be watching a file still being written).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The `file_version` of the first event of each file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// What every event file's name starts with.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// `SessionLog.SessionStatus.START`.
pub const SESSION_START: u64 = 1;

/// The CRC32C (Castagnoli) lookup table for the reflected polynomial, built at compile time:
/// entry `i` is the CRC register after shifting byte `i` through eight rounds.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC32C (Castagnoli) of `data`: initial value and final xor `0xFFFFFFFF`, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The TFRecord checksum of `data`: its CRC32C rotated and offset, because a CRC computed
/// over bytes that themselves embed CRCs is weak (TFRecord's own rationale).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    // `(crc >> 15) | (crc << 17)` in the format's own words.
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// Protobuf wire types used here.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_len(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// An `Event` with `wall_time` and `step` followed by one `oneof what` field (already
/// encoded, key included). Both numbers are always written, zero or not: proto3 readers
/// accept explicit defaults.
fn event(wall_time: f64, step: i64, what: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20 + what.len());
    put_key(&mut buf, 1, FIXED64);
    buf.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut buf, 2, VARINT);
    // int64 is encoded as the two's-complement u64 (ten bytes when negative).
    put_varint(&mut buf, step as u64);
    buf.extend_from_slice(what);
    buf
}

/// The encoded `Event` holding the file version.
fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut what = Vec::new();
    put_len(&mut what, 3, FILE_VERSION.as_bytes());
    event(wall_time, 0, &what)
}

/// The encoded `Event` holding a `Summary` of one `simple_value` per scalar.
fn scalars_event<S: AsRef<str>>(wall_time: f64, step: i64, scalars: &[(S, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    let mut value = Vec::new();
    for (tag, v) in scalars {
        value.clear();
        put_len(&mut value, 1, tag.as_ref().as_bytes());
        put_key(&mut value, 2, FIXED32);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        put_len(&mut summary, 1, &value);
    }
    let mut what = Vec::new();
    put_len(&mut what, 5, &summary);
    event(wall_time, step, &what)
}

/// The encoded `Event` holding `SessionLog { status: START }`.
fn session_start_event(wall_time: f64, step: i64) -> Vec<u8> {
    let mut log = Vec::new();
    put_key(&mut log, 1, VARINT);
    put_varint(&mut log, SESSION_START);
    let mut what = Vec::new();
    put_len(&mut what, 7, &log);
    event(wall_time, step, &what)
}

/// `data` framed as one TFRecord.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut rec = Vec::with_capacity(16 + data.len());
    rec.extend_from_slice(&len);
    rec.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    rec.extend_from_slice(data);
    rec.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    rec
}

/// The host name for file names: `/etc/hostname`, else `$HOSTNAME`, else `localhost`, with
/// anything but ASCII letters, digits, `-` and `_` replaced by `_` (a `/` would make a
/// path, a `.` would blur the name's dot-separated fields).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string());
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Seconds since the Unix epoch, as event files record time.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Appends events to one new event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, beginning with the file-version
    /// event. Never opens an existing file.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = unix_time();
        let stem = format!("{FILE_PREFIX}{}.{}.{}", now as u64, hostname(), std::process::id());
        // Another writer of this process in this second holds `.0`: take the next count, so
        // names stay unique and (below ten a second) sort in creation order.
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!("{stem}.{n}"));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut w = EventWriter { path, file: std::io::BufWriter::new(file) };
        w.write_record(&file_version_event(now))?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event at `step` holding every `(tag, value)` of `scalars` (values rounded
    /// to f32; NaN and ±inf written as they are). Buffered until [`EventWriter::flush`] or
    /// drop; an empty `scalars` writes nothing.
    pub fn write_scalars<S: AsRef<str>>(&mut self, step: i64, wall_time: f64, scalars: &[(S, f64)]) -> Result<()> {
        if scalars.is_empty() {
            return Ok(());
        }
        self.write_record(&scalars_event(wall_time, step, scalars))
    }

    /// Writes `SessionLog.START` at `step`: TensorBoard drops every event with a step
    /// `>= step` that it read before this one (see the module docs).
    pub fn write_session_start(&mut self, step: i64, wall_time: f64) -> Result<()> {
        self.write_record(&session_start_event(wall_time, step))
    }

    /// Hands buffered events to the operating system, so TensorBoard sees them.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        // Records go out whole and in order, so a crash leaves a prefix of the stream: at
        // most the last record torn, which TensorBoard treats as not yet written.
        self.file.write_all(&frame_record(data)).map_err(|e| Error::io(&self.path, e))
    }
}

/// A decoded event: the fields this module writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The training step.
    pub step: i64,
    /// Which `oneof what` field the event holds.
    pub what: What,
}

/// The payload of an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// `file_version`.
    FileVersion(String),
    /// A `Summary`: its `(tag, simple_value)` pairs in order (values of other kinds skipped).
    Scalars(Vec<(String, f32)>),
    /// A `SessionLog` with this status ([`SESSION_START`] = 1).
    SessionLog(u64),
    /// None of the above (a field this module does not decode, or no payload).
    Other,
}

/// The data of every record in an event file, both CRCs of each checked.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = crate::error::read_file(path)?;
    split_records(&bytes).map(|recs| recs.into_iter().map(<[u8]>::to_vec).collect()).map_err(|e| invalid(path, e))
}

/// Every event of an event file, decoded; errors on any CRC mismatch, truncation or
/// malformed protobuf, naming the record.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = crate::error::read_file(path)?;
    let records = split_records(&bytes).map_err(|e| invalid(path, e))?;
    records
        .iter()
        .enumerate()
        .map(|(i, r)| decode_event(r).map_err(|e| invalid(path, format!("record {i}: {e}"))))
        .collect()
}

/// The event files in `dir`, in the order TensorBoard reads them (by name).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().contains("tfevents") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn invalid(path: &Path, msg: String) -> Error {
    Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

/// Splits a whole event file into record payloads, checking both CRCs of each.
fn split_records(bytes: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let i = out.len();
        let rest = &bytes[at..];
        if rest.len() < 12 {
            return Err(format!("record {i} (byte {at}): truncated header ({} bytes)", rest.len()));
        }
        let len_bytes = &rest[..8];
        let stored = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        let computed = masked_crc32c(len_bytes);
        if stored != computed {
            return Err(format!(
                "record {i} (byte {at}): length CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let end = usize::try_from(len).ok().and_then(|n| n.checked_add(16)).filter(|&n| n <= rest.len());
        let Some(end) = end else {
            return Err(format!(
                "record {i} (byte {at}): truncated: {len} data bytes declared, {} left",
                rest.len() - 12
            ));
        };
        let data = &rest[12..end - 4];
        let stored = u32::from_le_bytes(rest[end - 4..end].try_into().expect("4 bytes"));
        let computed = masked_crc32c(data);
        if stored != computed {
            return Err(format!(
                "record {i} (byte {at}): data CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        out.push(data);
        at += end;
    }
    Ok(out)
}

/// A protobuf field as read from the wire.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Reads `(field number, value)` pairs off a message's bytes.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("varint runs past the end")?;
            self.at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than ten bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("field runs past the end")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn next_field(&mut self) -> Option<std::result::Result<(u64, Field<'a>), String>> {
        (self.at < self.bytes.len()).then(|| self.read_field())
    }

    fn read_field(&mut self) -> std::result::Result<(u64, Field<'a>), String> {
        let key = self.varint()?;
        let field = match (key & 7) as u8 {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => Field::Fixed64(self.take(8)?.try_into().expect("8 bytes")),
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Field::Len(self.take(n)?)
            }
            FIXED32 => Field::Fixed32(self.take(4)?.try_into().expect("4 bytes")),
            w => return Err(format!("unsupported wire type {w} (field {})", key >> 3)),
        };
        Ok((key >> 3, field))
    }
}

/// Decodes one `Event` (unknown fields skipped).
pub fn decode_event(data: &[u8]) -> std::result::Result<Event, String> {
    let mut ev = Event { wall_time: 0.0, step: 0, what: What::Other };
    let mut fields = Fields::new(data);
    while let Some(f) = fields.next_field() {
        match f? {
            (1, Field::Fixed64(b)) => ev.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => ev.step = v as i64,
            (3, Field::Len(s)) => {
                ev.what = What::FileVersion(String::from_utf8(s.to_vec()).map_err(|_| "file_version is not UTF-8")?)
            }
            (5, Field::Len(s)) => ev.what = What::Scalars(decode_summary(s)?),
            (7, Field::Len(s)) => {
                let mut status = 0;
                let mut log = Fields::new(s);
                while let Some(f) = log.next_field() {
                    if let (1, Field::Varint(v)) = f? {
                        status = v;
                    }
                }
                ev.what = What::SessionLog(status);
            }
            (1 | 2 | 3 | 5 | 7, _) => return Err("an Event field has the wrong wire type".into()),
            _ => {}
        }
    }
    Ok(ev)
}

fn decode_summary(data: &[u8]) -> std::result::Result<Vec<(String, f32)>, String> {
    let mut out = Vec::new();
    let mut values = Fields::new(data);
    while let Some(f) = values.next_field() {
        let (1, Field::Len(value)) = f? else { continue };
        let (mut tag, mut simple) = (None, None);
        let mut fields = Fields::new(value);
        while let Some(f) = fields.next_field() {
            match f? {
                (1, Field::Len(s)) => tag = Some(String::from_utf8(s.to_vec()).map_err(|_| "a tag is not UTF-8")?),
                (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                _ => {}
            }
        }
        if let (Some(tag), Some(v)) = (tag, simple) {
            out.push((tag, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        // The CRC catalogue's check value, and RFC 3720 (iSCSI) B.4's 32-byte patterns.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    #[test]
    fn mask_matches_tensorboards() {
        // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(b"123456789").
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varints_round_trip_including_negative_steps() {
        for v in [0i64, 1, 127, 128, 300, i64::MAX, -1, i64::MIN] {
            let ev = event(1.5, v, &[]);
            let back = decode_event(&ev).unwrap();
            assert_eq!((back.step, back.wall_time), (v, 1.5));
        }
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xAC, 0x02]);
    }

    #[test]
    fn malformed_protobuf_is_an_error_not_a_panic() {
        let ev = scalars_event(2.0, 3, &[("a", 1.0)]);
        for cut in 1..ev.len() {
            // Every strict prefix either fails or decodes to fewer fields; none panics.
            let _ = decode_event(&ev[..cut]);
        }
        assert!(decode_event(&[0x0B]).is_err(), "wire type 3 (groups) is refused");
        assert!(decode_event(&[0x2A, 0x05, 0x00]).is_err(), "length past the end");
    }
}
