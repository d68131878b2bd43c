//! `dapo plot` end to end: known logs in, PNG and SVG out, checked by decoding the PNG and
//! reading the SVG; and bad logs that must end in an error naming the file (and line).

mod common;

use common::cli::{dapo, fails_with};
use gepa_dapo_grn::report::plot::{PALETTE, PANEL_SIZE};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A log of `steps` step records with TRL metrics (two reward keys with std, the
/// reward std for the band, lengths, clip fractions, throughput) and evaluations at 0, 3, 6.
fn metrics_log(dir: &Path, steps: u64, offset: f64) -> PathBuf {
    let mut lines = vec![json!({"step": 0, "eval": {"accuracy": 0.2, "metrics": {"correctness": 0.2}, "n": 8}})];
    for s in 1..=steps {
        let x = s as f64 / steps as f64;
        lines.push(json!({
            "step": s,
            "time": 1_700_000_000.0 + s as f64,
            "metrics": {
                "reward": offset + 0.6 * x,
                "reward_std": 0.1,
                "rewards/correctness/mean": offset + 0.5 * x,
                "rewards/correctness/std": 0.3,
                "rewards/brevity/mean": 0.9 - 0.1 * x,
                "rewards/brevity/std": 0.05,
                "kl": 0.01 * x,
                "beta": 0.04,
                "entropy": 1.0 - 0.5 * x,
                "completions/mean_length": 10.0 + s as f64,
                "completions/min_length": 4.0,
                "completions/max_length": 20.0 + s as f64,
                "clip_ratio/low_mean": 0.01,
                "clip_ratio/high_mean": 0.02 * x,
                "clip_ratio/region_mean": 0.01 + 0.02 * x,
                "tokens_per_second": 1000.0 + 10.0 * s as f64,
            },
            "reward_mean": offset + 0.6 * x,
        }));
        if s % 3 == 0 {
            lines.push(json!({"step": s, "eval": {"accuracy": 0.2 + 0.1 * x, "metrics": {}, "n": 8}}));
        }
    }
    write_lines(dir, &lines.iter().map(|v| v.to_string()).collect::<Vec<_>>())
}

/// Writes `dir/dapo_log.jsonl` (creating `dir`).
fn write_lines(dir: &Path, lines: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("dapo_log.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn plot(logs: &[&Path], out: &Path) -> std::process::Output {
    let mut args: Vec<&str> = vec!["plot"];
    args.extend(logs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    dapo(&args)
}

/// The PNG's size and RGB pixels.
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Pixels of exactly `color` inside the rectangle `x0..x1` × `y0..y1`.
fn count_color(png: &(u32, u32, Vec<u8>), color: [u8; 3], (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    let (w, _, px) = png;
    (y0..y1).flat_map(|y| (x0..x1).map(move |x| ((y * w + x) * 3) as usize)).filter(|&i| px[i..i + 3] == color).count()
}

fn rgb(c: plotters::style::RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

/// The texts of an SVG file's `<text>` elements, trimmed.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
        .collect()
}

/// Asserts that the SVG has a text element reading exactly each of `present` and none of `absent`.
fn assert_texts(path: &Path, present: &[&str], absent: &[&str]) {
    let texts = svg_texts(path);
    for t in present {
        assert!(texts.iter().any(|x| x == t), "{} lacks the text {t:?}; it has {texts:?}", path.display());
    }
    for t in absent {
        assert!(!texts.iter().any(|x| x == t), "{} has the text {t:?}", path.display());
    }
}

#[test]
fn one_log_gives_a_page_of_panels_as_png_and_svg() {
    let tmp = tempfile::tempdir().unwrap();
    let log = metrics_log(&tmp.path().join("run-a"), 6, 0.0);
    let out_dir = tmp.path().join("charts");
    let out = plot(&[&log], &out_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run-a.png") && stdout.contains("run-a.svg"), "{stdout}");
    assert!(!out_dir.join("compare.png").exists(), "one log, no comparison page");

    // 8 panels (reward, reward by key, held-out accuracy, KL and β, entropy, completion
    // length, clip fraction, tokens/s) in 3 columns: 3 rows under a 72-pixel header.
    let png = decode_png(&out_dir.join("run-a.png"));
    let top = 72;
    assert_eq!((png.0, png.1), (3 * PANEL_SIZE.0, top + 3 * PANEL_SIZE.1));
    // The reward line (the first colour, drawn opaque) is in the first panel: background,
    // axes and text alone have none of that colour.
    let (pw, ph) = PANEL_SIZE;
    let first = count_color(&png, rgb(PALETTE[0]), (0, pw), (top, top + ph));
    assert!(first > 300, "reward line pixels in the first panel: {first}");
    // The second colour: the second reward key, KL's partner β, the high clip fraction...
    let second = count_color(&png, rgb(PALETTE[1]), (pw, 2 * pw), (top, top + ph));
    assert!(second > 300, "second reward key's line in the second panel: {second}");
    // The band (reward ± std) is a blend of the first colour over white: lighter pixels.
    let nonwhite = png.2.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(nonwhite > 20_000, "{nonwhite} non-white pixels");

    // Every panel's title, the reward keys' legend, the run's name; no panel without data.
    assert_texts(
        &out_dir.join("run-a.svg"),
        &[
            "run-a",
            "reward",
            "reward by key",
            "held-out accuracy",
            "KL and β",
            "entropy",
            "completion length (tokens)",
            "clip fraction",
            "tokens/s",
            "correctness",
            "brevity",
            "step",
        ],
        &["tags", "grad norm", "learning rate", "held-out metrics"],
    );
}

#[test]
fn several_logs_also_give_a_comparison_with_a_legend() {
    let tmp = tempfile::tempdir().unwrap();
    let a = metrics_log(&tmp.path().join("grn-off/s0"), 6, 0.0);
    let b = metrics_log(&tmp.path().join("grn-on/s0"), 9, 0.2);
    let out_dir = tmp.path().join("charts");
    let out = plot(&[&a, &b], &out_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Both logs live in `s0/`: the names take one more directory to differ.
    for f in ["grn-off_s0.png", "grn-off_s0.svg", "grn-on_s0.png", "grn-on_s0.svg", "compare.png", "compare.svg"] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // The legend names the runs; a panel per metric (per reward key).
    let present =
        ["grn-off/s0", "grn-on/s0", "reward", "reward: correctness", "reward: brevity", "held-out accuracy", "KL"];
    assert_texts(&out_dir.join("compare.svg"), &present, &["reward by key"]);
    // 12 panels (reward, one per reward key, held-out accuracy, KL, β, entropy, mean length,
    // three clip fractions, tokens/s) in 4 rows under the header and one legend row (110 px).
    let png = decode_png(&out_dir.join("compare.png"));
    let (pw, ph) = PANEL_SIZE;
    let top = 110;
    assert_eq!((png.0, png.1), (3 * pw, top + 4 * ph));
    // Each run's reward line in its own colour, in the first panel (below the legend's swatches).
    for (i, c) in PALETTE[..2].iter().enumerate() {
        let n = count_color(&png, rgb(*c), (0, pw), (top, top + ph));
        assert!(n > 300, "run {i}'s reward line: {n} pixels");
    }
    assert_eq!(count_color(&png, rgb(PALETTE[2]), (0, 3 * pw), (0, png.1)), 0, "two runs, two colours");
}

#[test]
fn logs_without_the_metrics_map_plot_from_the_older_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=4)
        .map(|s| {
            json!({
                "step": s,
                "gepa": [
                    {"prompt_id": 1, "completion_id": 0, "task_id": "t", "rewards": {"correctness": 1.0, "brevity": 0.5}, "tags": {}},
                    {"prompt_id": 1, "completion_id": 1, "task_id": "t", "rewards": {"correctness": 0.0, "brevity": 1.0}, "tags": {}}
                ],
                "rl": {"loss": 0.1, "kl": 0.001 * s as f64, "kl_coef": 0.05, "entropy": 0.6, "clip_frac_low": 0.0,
                       "clip_frac_high": 0.01, "clip_frac_dual": 0.0, "lr": 3e-4, "grad_norm": 1.3},
                "reward_mean": 0.25 * s as f64,
                "accuracy": 0.5,
                "generation": {"completion_len": 3.5, "completion_len_max": 4, "completion_len_min": 2},
                "timing": {"rollout_s": 0.02, "update_s": 0.06},
                "tokens": 800,
            })
            .to_string()
        })
        .collect();
    let log = write_lines(&tmp.path().join("old"), &lines);
    let out_dir = tmp.path().join("charts");
    let out = plot(&[&log], &out_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Per-key rewards from `gepa`, KL and β from `rl`, throughput from `tokens` and `timing`;
    // no evaluations in this log, no reward std.
    let present =
        ["reward", "reward by key", "correctness", "brevity", "KL and β", "tokens/s", "grad norm", "learning rate"];
    assert_texts(&out_dir.join("old.svg"), &present, &["held-out accuracy", "held-out metrics"]);
}

#[test]
fn a_malformed_line_is_named_by_file_and_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let good = metrics_log(&tmp.path().join("good"), 3, 0.0);
    let bad = write_lines(
        &tmp.path().join("bad"),
        &[json!({"step": 1, "reward_mean": 0.5}).to_string(), String::new(), "{\"step\": 2, \"reward_me".into()],
    );
    let out_dir = tmp.path().join("charts");
    let out = plot(&[&good, &bad], &out_dir);
    fails_with(&out, &[&format!("{}:3: not valid JSON", bad.display())]);
    assert!(!out_dir.exists(), "a bad log leaves no partial output");
}

#[test]
fn a_missing_file_or_a_log_without_steps_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope/dapo_log.jsonl");
    fails_with(&plot(&[&missing], &tmp.path().join("charts")), &[&missing.display().to_string()]);
    let evals_only = write_lines(
        &tmp.path().join("evals"),
        &[json!({"step": 0, "eval": {"accuracy": 0.5, "metrics": {}, "n": 1}}).to_string()],
    );
    fails_with(
        &plot(&[&evals_only], &tmp.path().join("charts")),
        &[&evals_only.display().to_string(), "no step records"],
    );
    // A directory, not a log.
    fails_with(&plot(&[tmp.path()], &tmp.path().join("charts")), &[&tmp.path().display().to_string(), "a directory"]);
    // No log at all is a usage error.
    let out = dapo(&["plot", "--out", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
