//! The metric writers of `--report-to`: TensorBoard event files read back record by record
//! (both CRCs, every field), every single-bit corruption detected, the CSV table widening
//! mid-run and cut back on resume, and `--report-to` parsing.
//!
//! With `DAPO_KEEP_TB=<dir>` set, `reporters_resume_keeps_steps_up_to_the_checkpoint` also
//! copies its TensorBoard directory to `<dir>/runs` and writes `<dir>/expect.json` (what
//! TensorBoard should show after the resume), for `tools/golden/verify_tensorboard.py`.

use std::collections::BTreeMap;
use std::path::Path;

use gepa_dapo_grn::report::csv::{read_table, CsvWriter};
use gepa_dapo_grn::report::reporters::{CSV_FILE, TENSORBOARD_DIR};
use gepa_dapo_grn::report::tensorboard::{
    event_files, read_events, read_records, EventWriter, What, FILE_PREFIX, FILE_VERSION, SESSION_START,
};
use gepa_dapo_grn::report::{ReportTo, Reporters};
use gepa_dapo_grn::Error;

/// CRC32C bit by bit, straight from the definition (reflected Castagnoli polynomial), so
/// the library's table-driven version is checked against an independent one.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn masked(data: &[u8]) -> u32 {
    // The format's mask, ((c >> 15) | (c << 17)) + 0xa282ead8, i.e. a rotation.
    crc32c_bitwise(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

fn only_event_file(dir: &Path) -> std::path::PathBuf {
    let files = event_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// Three steps of two or three scalars, written with explicit wall times.
fn write_three_steps(dir: &Path) -> std::path::PathBuf {
    let mut w = EventWriter::create(dir).unwrap();
    w.write_scalars(1, 1_700_000_001.25, &[("train/loss", 2.5), ("train/kl", 0.125)]).unwrap();
    w.write_scalars(2, 1_700_000_002.5, &[("train/loss".to_string(), 1.75), ("train/kl".to_string(), 0.0625)]).unwrap();
    w.write_scalars(3, 1_700_000_003.75, &[("train/loss", 0.1), ("eval/accuracy", 0.875), ("train/kl", -1e-3)])
        .unwrap();
    w.flush().unwrap();
    w.path().to_path_buf()
}

#[test]
fn event_file_round_trips_steps_wall_times_tags_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_three_steps(tmp.path());
    assert_eq!(path, only_event_file(tmp.path()));
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with(FILE_PREFIX), "{name}");
    assert_eq!(name.split('.').count(), 7, "events.out.tfevents.<secs>.<host>.<pid>.<n>: {name}");

    let events = read_events(&path).unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].what, What::FileVersion(FILE_VERSION.to_string()));
    assert_eq!(FILE_VERSION, "brain.Event:2");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((events[0].wall_time - now).abs() < 600.0, "the version event carries the creation time");

    type Step<'a> = (i64, f64, Vec<(&'a str, f64)>);
    let want: [Step; 3] = [
        (1, 1_700_000_001.25, vec![("train/loss", 2.5), ("train/kl", 0.125)]),
        (2, 1_700_000_002.5, vec![("train/loss", 1.75), ("train/kl", 0.0625)]),
        (3, 1_700_000_003.75, vec![("train/loss", 0.1), ("eval/accuracy", 0.875), ("train/kl", -1e-3)]),
    ];
    for (ev, (step, wall, scalars)) in events[1..].iter().zip(want) {
        assert_eq!(ev.step, step);
        assert_eq!(ev.wall_time.to_bits(), wall.to_bits(), "wall_time is a double, kept exactly");
        let What::Scalars(got) = &ev.what else { panic!("step {step}: {:?}", ev.what) };
        let want: Vec<(String, f32)> = scalars.iter().map(|&(t, v)| (t.to_string(), v as f32)).collect();
        assert_eq!(got, &want, "step {step}: one event holds every value, in order, as f32");
    }
}

#[test]
fn every_record_carries_both_crcs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_three_steps(tmp.path());
    let bytes = std::fs::read(&path).unwrap();
    // Walk the framing by hand, checking each CRC with the bitwise reference.
    let (mut at, mut n) = (0, 0);
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(len_crc, masked(len_bytes), "record {n}: length CRC");
        let data = &bytes[at + 12..at + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked(data), "record {n}: data CRC");
        at += 16 + len;
        n += 1;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(n, read_records(&path).unwrap().len());
    assert_eq!(n, 4);
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283, "the reference itself");
}

#[test]
fn every_flipped_bit_is_reported_as_a_crc_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_three_steps(tmp.path());
    let good = std::fs::read(&path).unwrap();
    let bad = tmp.path().join("corrupt.tfevents");
    for i in 0..good.len() {
        for bit in [0, 7] {
            let mut bytes = good.clone();
            bytes[i] ^= 1 << bit;
            std::fs::write(&bad, &bytes).unwrap();
            let err = read_events(&bad).expect_err(&format!("byte {i} bit {bit} flipped"));
            let Error::Io { path, source } = &err else { panic!("{err}") };
            assert_eq!(path, &bad);
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
            // A length byte is checked by its own CRC before it is used, so even a flip there
            // is a CRC error rather than a truncation.
            assert!(err.to_string().contains("CRC32C mismatch"), "byte {i}: {err}");
        }
    }
    // One flip in the second record's data, named precisely.
    let first_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut bytes = good.clone();
    bytes[16 + first_len + 12 + 3] ^= 0x10;
    std::fs::write(&bad, &bytes).unwrap();
    let msg = read_events(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("record 1") && msg.contains("data CRC32C mismatch") && msg.contains("corrupt.tfevents"),
        "{msg}"
    );
}

#[test]
fn a_truncated_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_three_steps(tmp.path());
    let good = std::fs::read(&path).unwrap();
    let bad = tmp.path().join("cut.tfevents");
    for cut in [good.len() - 1, good.len() - 5, 20] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let msg = read_events(&bad).unwrap_err().to_string();
        assert!(msg.contains("truncated"), "cut at {cut}: {msg}");
    }
}

#[test]
fn non_finite_values_are_written_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(tmp.path()).unwrap();
    w.write_scalars(-1, 0.0, &[("nan", f64::NAN), ("inf", f64::INFINITY), ("big", 1e300), ("neg", -f64::INFINITY)])
        .unwrap();
    w.write_scalars::<&str>(5, 0.0, &[]).unwrap();
    w.flush().unwrap();
    let events = read_events(w.path()).unwrap();
    assert_eq!(events.len(), 2, "an empty scalar list writes no event");
    assert_eq!(events[1].step, -1, "negative steps survive the int64 varint");
    let What::Scalars(v) = &events[1].what else { panic!() };
    assert!(v[0].1.is_nan());
    assert_eq!(v[1].1, f32::INFINITY);
    assert_eq!(v[2].1, f32::INFINITY, "beyond f32's range rounds to inf");
    assert_eq!(v[3].1, f32::NEG_INFINITY);
}

#[test]
fn two_writers_in_one_directory_get_distinct_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = EventWriter::create(tmp.path()).unwrap();
    let b = EventWriter::create(tmp.path()).unwrap();
    assert_ne!(a.path(), b.path());
    assert_eq!(event_files(tmp.path()).unwrap(), vec![a.path().to_path_buf(), b.path().to_path_buf()]);
}

#[test]
fn csv_widens_its_header_when_a_metric_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metrics.csv");
    let mut w = CsvWriter::create(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "step,time\n");
    let third = 1.0 / 3.0;
    w.append(1, 1_700_000_001.5, &metrics(&[("train/loss", third), ("train/kl", 1e-12)])).unwrap();
    w.append(2, 1_700_000_002.5, &metrics(&[("train/loss", 0.1)])).unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        before, "step,time,train/kl,train/loss\n1,1700000001.5,1e-12,0.3333333333333333\n2,1700000002.5,,0.1\n",
        "sorted columns, an empty cell for a metric a row lacks"
    );
    // A new name mid-run, one that needs quoting, and one sorting before the others.
    w.append(3, 1_700_000_003.5, &metrics(&[("train/loss", 2.0), ("eval/acc, %", 87.5), ("a\"b", f64::NAN)])).unwrap();
    w.append(4, 1_700_000_004.5, &metrics(&[("train/kl", -0.0)])).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "step,time,\"a\"\"b\",\"eval/acc, %\",train/kl,train/loss\n\
         1,1700000001.5,,,1e-12,0.3333333333333333\n\
         2,1700000002.5,,,,0.1\n\
         3,1700000003.5,NaN,87.5,,2\n\
         4,1700000004.5,,,-0,\n"
    );
    assert_eq!(w.metrics(), ["a\"b", "eval/acc, %", "train/kl", "train/loss"]);
    let table = read_table(&path).unwrap();
    assert_eq!(table.header[2], "a\"b");
    assert_eq!(table.header[3], "eval/acc, %");
    let loss: Vec<f64> = table.column("train/loss").unwrap()[..3].iter().map(|c| c.parse().unwrap()).collect();
    assert_eq!(loss.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), [third, 0.1, 2.0].map(f64::to_bits));
    assert_eq!(table.column("time").unwrap()[0].parse::<f64>().unwrap(), 1_700_000_001.5);
    assert!(table.column("a\"b").unwrap()[2].parse::<f64>().unwrap().is_nan());
    assert_eq!(table.to_csv(), text, "the reader and the writer agree");
    assert!(
        !std::fs::read_dir(tmp.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")),
        "the atomic rewrite leaves no temporary file"
    );
}

#[test]
fn csv_refuses_names_that_shadow_its_fixed_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = CsvWriter::create(&tmp.path().join("m.csv")).unwrap();
    let msg = w.append(1, 0.0, &metrics(&[("step", 1.0)])).unwrap_err().to_string();
    assert!(msg.contains("`step`") && msg.contains("m.csv"), "{msg}");
}

#[test]
fn csv_resume_cuts_later_rows_and_a_torn_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metrics.csv");
    let mut w = CsvWriter::create(&path).unwrap();
    for step in 1..=5 {
        w.append(step, step as f64, &metrics(&[("loss", step as f64 / 4.0)])).unwrap();
    }
    // A crash in the middle of the next append.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("6,6,1.");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_table(&path).unwrap().rows.len(), 5, "the torn line is not a row");

    let mut w = CsvWriter::resume(&path, 3).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "step,time,loss\n1,1,0.25\n2,2,0.5\n3,3,0.75\n");
    w.append(4, 40.0, &metrics(&[("loss", 9.0)])).unwrap();
    assert_eq!(read_table(&path).unwrap().column("loss").unwrap(), ["0.25", "0.5", "0.75", "9"]);

    // Resuming past the end keeps everything (and rewrites nothing); a missing file starts over.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    CsvWriter::resume(&path, 100).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
    let fresh = tmp.path().join("new.csv");
    CsvWriter::resume(&fresh, 3).unwrap();
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "step,time\n");

    std::fs::write(&path, "epoch,loss\n1,2\n").unwrap();
    let msg = CsvWriter::resume(&path, 1).unwrap_err().to_string();
    assert!(msg.contains("metrics.csv") && msg.contains("step,time"), "{msg}");
}

#[test]
fn report_to_parses_lists_and_refuses_unknown_names() {
    let p = |s: &str| s.parse::<ReportTo>();
    let tb_csv = ReportTo { tensorboard: true, csv: true, jsonl: false };
    assert_eq!(p("tensorboard,csv").unwrap(), tb_csv);
    assert_eq!(p(" csv , TensorBoard,csv ").unwrap(), tb_csv, "trimmed, case-insensitive, duplicates ok");
    assert_eq!(p("none").unwrap(), ReportTo::NONE);
    assert_eq!(p("none,none").unwrap(), ReportTo::NONE);
    assert_eq!(p("all").unwrap(), ReportTo::ALL);
    assert_eq!(p("jsonl,all").unwrap(), ReportTo::ALL);
    assert!(p("none").unwrap().is_none());
    for r in [ReportTo::NONE, ReportTo::ALL, tb_csv, ReportTo { jsonl: true, ..ReportTo::NONE }] {
        assert_eq!(p(&r.to_string()).unwrap(), r, "Display parses back: {r}");
    }
    assert_eq!(tb_csv.to_string(), "tensorboard,csv");
    assert_eq!(ReportTo::NONE.to_string(), "none");

    let e = p("tensorboard,wandb").unwrap_err();
    assert!(e.contains("`wandb`"), "names the bad value: {e}");
    for name in ["tensorboard", "csv", "jsonl", "all", "none"] {
        assert!(e.contains(name), "lists `{name}`: {e}");
    }
    assert!(p("none,csv").unwrap_err().contains("cannot be combined"));
    assert!(p("").unwrap_err().contains("empty"));
    assert!(p("csv,,jsonl").unwrap_err().contains("empty"));

    // Config files: the string, or transformers' list form.
    let from_json = |s: &str| serde_json::from_str::<ReportTo>(s);
    assert_eq!(from_json("\"csv,tensorboard\"").unwrap(), tb_csv);
    assert_eq!(from_json("[\"tensorboard\", \"csv\"]").unwrap(), tb_csv);
    assert_eq!(from_json("[]").unwrap(), ReportTo::NONE);
    assert!(from_json("[\"mlflow\"]").unwrap_err().to_string().contains("`mlflow`"));
    assert_eq!(serde_json::to_string(&tb_csv).unwrap(), "\"tensorboard,csv\"");
}

#[test]
fn reporters_write_only_what_is_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut r = Reporters::open(&out, &"jsonl".parse().unwrap(), None).unwrap();
    assert!(r.jsonl() && r.tensorboard_file().is_none() && r.csv_file().is_none());
    r.log(1, 1.0, &metrics(&[("loss", 1.0)])).unwrap();
    assert!(!out.join(TENSORBOARD_DIR).exists() && !out.join(CSV_FILE).exists());

    let mut r = Reporters::open(&out, &"csv".parse().unwrap(), None).unwrap();
    assert!(!r.jsonl());
    assert_eq!(r.csv_file(), Some(out.join(CSV_FILE).as_path()));
    r.log(1, 1.0, &BTreeMap::new()).unwrap();
    assert_eq!(std::fs::read_to_string(out.join(CSV_FILE)).unwrap(), "step,time\n", "empty metrics: no row");
    assert!(!out.join(TENSORBOARD_DIR).exists());
}

/// What a run that was interrupted after step 5, resumed from its step-3 checkpoint and run
/// to step 6 leaves, and what the CSV and (per `SessionLog.START`) TensorBoard show.
#[test]
fn reporters_resume_keeps_steps_up_to_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let both = ReportTo { tensorboard: true, csv: true, jsonl: false };
    let first = |step: u64| metrics(&[("train/loss", 1.0 / step as f64), ("train/reward_mean", step as f64 * 0.25)]);
    let second = |step: u64| metrics(&[("train/loss", 10.0 + step as f64), ("train/reward_mean", -(step as f64))]);
    let wall = |step: u64| 1_700_000_000.0 + step as f64;
    {
        let mut r = Reporters::open(out, &both, None).unwrap();
        for step in 1..=5 {
            let mut m = first(step);
            if step == 3 {
                m.insert("eval/accuracy".into(), 0.5);
            }
            r.log(step, wall(step), &m).unwrap();
        }
    }
    let mut r = Reporters::open(out, &both, Some(3)).unwrap();
    for step in 4..=6 {
        r.log(step, wall(step) + 100.0, &second(step)).unwrap();
    }
    r.flush().unwrap();

    // CSV: steps 1-3 of the first run, 4-6 of the second.
    let table = read_table(&out.join(CSV_FILE)).unwrap();
    assert_eq!(table.header, ["step", "time", "eval/accuracy", "train/loss", "train/reward_mean"]);
    assert_eq!(table.column("step").unwrap(), ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(table.column("eval/accuracy").unwrap(), ["", "", "0.5", "", "", ""]);
    assert_eq!(table.column("train/loss").unwrap()[3..], ["14", "15", "16"]);

    // TensorBoard: two files, each opening with the version and a START.
    let files = event_files(&out.join(TENSORBOARD_DIR)).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(Some(files[1].as_path()), r.tensorboard_file());
    let runs: Vec<_> = files.iter().map(|f| read_events(f).unwrap()).collect();
    for (events, start, steps) in [(&runs[0], 0, 1..=5), (&runs[1], 4, 4..=6)] {
        assert_eq!(events[0].what, What::FileVersion(FILE_VERSION.into()));
        assert_eq!((&events[1].what, events[1].step), (&What::SessionLog(SESSION_START), start));
        assert_eq!(events[2..].iter().map(|e| e.step as u64).collect::<Vec<_>>(), steps.collect::<Vec<_>>());
    }
    let step4 = &runs[1][2];
    assert_eq!(step4.wall_time, wall(4) + 100.0);
    assert_eq!(step4.what, What::Scalars(vec![("train/loss".into(), 14.0), ("train/reward_mean".into(), -4.0)]));

    if let Some(keep) = std::env::var_os("DAPO_KEEP_TB") {
        // What TensorBoard should show: each tag's (step, wall_time, value as f32) after the
        // START of the resumed file purged steps >= 4 of the first.
        let keep = Path::new(&keep);
        let runs_dir = keep.join(TENSORBOARD_DIR);
        std::fs::create_dir_all(&runs_dir).unwrap();
        for f in &files {
            std::fs::copy(f, runs_dir.join(f.file_name().unwrap())).unwrap();
        }
        let mut expect: BTreeMap<String, Vec<(u64, f64, f64)>> = BTreeMap::new();
        for step in 1..=6 {
            let (m, w) = if step <= 3 { (first(step), wall(step)) } else { (second(step), wall(step) + 100.0) };
            for (k, v) in m {
                expect.entry(k).or_default().push((step, w, v as f32 as f64));
            }
        }
        expect.insert("eval/accuracy".into(), vec![(3, wall(3), 0.5)]);
        std::fs::write(keep.join("expect.json"), serde_json::to_string_pretty(&expect).unwrap()).unwrap();
        std::fs::copy(out.join(CSV_FILE), keep.join(CSV_FILE)).unwrap();
        eprintln!("kept {} event files and expect.json in {}", files.len(), keep.display());
    }
}
