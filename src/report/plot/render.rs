//! Charts of [`RunLog`]s: a page of small multiples per run and a page overlaying runs, each
//! drawn once into an RGB buffer (encoded as PNG) and once as SVG.
//!
//! A page is first laid out as plain data ([`Page`]: panels of lines, already smoothed and
//! thinned) and then drawn by one generic function, so the PNG and the SVG are the same chart.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::series::{RunLog, Series};
use crate::error::{Error, Result};

/// The font every chart is drawn with: DejaVu Sans cut down to Latin, Greek and a few signs
/// (assets/fonts/NOTICE says how; its licence is assets/fonts/LICENSE-DejaVu.txt). Built in
/// so that charts render the same on a machine without fonts or fontconfig.
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");
/// The family name the font is registered under and every text style asks for.
const FAMILY: &str = "sans-serif";

/// Colours of lines, in order (Tableau 10: distinct, and readable on white).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One panel's size in pixels; pages are a grid of these, [`COLUMNS`] wide.
pub const PANEL_SIZE: (u32, u32) = (600, 360);
/// Panels per row (fewer when a page has fewer panels).
pub const COLUMNS: usize = 3;
/// Runs of more records than this are smoothed under [`Smoothing::Auto`] (`dapo plot
/// --smooth`'s help names the number).
pub const AUTO_SMOOTH_ABOVE: usize = 200;
/// Most points drawn per line: more cannot be told apart at [`PANEL_SIZE`] and only grow the SVG.
const MAX_POINTS: usize = 1200;
/// Height of the page title and subtitle.
const HEADER_H: u32 = 72;
/// Font size of the page legend (plotters' sizes are 1.24 × the em size).
const LEGEND_FONT: u32 = 20;
/// Height of one row of the run legend on the comparison page.
const LEGEND_ROW_H: u32 = 30;

/// How step series are smoothed (evaluations never are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Smoothing {
    /// A centred moving average over about 1% of the records for runs longer than
    /// [`AUTO_SMOOTH_ABOVE`] records, the raw series drawn faintly behind it; shorter runs as-is.
    #[default]
    Auto,
    /// Every series as logged.
    Off,
    /// A centred moving average over this many records, with the raw series behind it.
    Window(usize),
}

impl Smoothing {
    /// The moving-average window for a series of `n` records (1: none).
    fn window(self, n: usize) -> usize {
        match self {
            Smoothing::Off => 1,
            Smoothing::Window(w) => w.max(1),
            Smoothing::Auto if n > AUTO_SMOOTH_ABOVE => (n / 100).max(5) | 1,
            Smoothing::Auto => 1,
        }
    }
}

/// A shaded band around a line.
enum Band {
    /// mean ± the named std metric.
    Std(&'static str),
    /// From the first named metric to the second.
    MinMax(&'static str, &'static str),
}

/// Where a line's values come from.
#[derive(Clone, Copy)]
enum Source {
    /// Step records.
    Steps,
    /// Evaluation records (drawn with markers: there are few).
    Evals,
}

/// One line of a panel, before it meets a run's data.
struct LineDef {
    /// The series key in [`RunLog::steps`] or [`RunLog::evals`].
    key: String,
    /// The legend label inside its panel.
    label: String,
    /// The title of the line's own panel on the comparison page.
    title: String,
    source: Source,
    band: Option<Band>,
}

/// One panel, before it meets a run's data.
struct PanelDef {
    title: String,
    lines: Vec<LineDef>,
}

impl LineDef {
    fn steps(key: &str, label: &str, title: &str) -> Self {
        LineDef { key: key.into(), label: label.into(), title: title.into(), source: Source::Steps, band: None }
    }

    fn with_band(mut self, band: Band) -> Self {
        self.band = Some(band);
        self
    }
}

/// The panels a set of runs can fill, in page order; a panel none of them has data for is
/// dropped later, when it meets the data.
fn panel_defs(runs: &[RunLog]) -> Vec<PanelDef> {
    let step_keys: std::collections::BTreeSet<&str> =
        runs.iter().flat_map(|r| r.steps.keys().map(String::as_str)).collect();
    let eval_keys: std::collections::BTreeSet<&str> =
        runs.iter().flat_map(|r| r.evals.keys().map(String::as_str)).collect();
    // `rewards/<key>/mean` and `tags/<key>/mean`: one line per key.
    let per_key = |prefix: &str, title: &str| -> Vec<LineDef> {
        step_keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix).and_then(|r| r.strip_suffix("/mean")))
            .map(|key| LineDef::steps(&format!("{prefix}{key}/mean"), key, &format!("{title}: {key}")))
            .collect()
    };
    let panel = |title: &str, lines: Vec<LineDef>| PanelDef { title: title.into(), lines };
    let mut held_out = vec![LineDef {
        key: "accuracy".into(),
        label: "accuracy".into(),
        title: "held-out accuracy".into(),
        source: Source::Evals,
        band: None,
    }];
    // A scorer without `correctness` evaluates no accuracy: show what it did evaluate.
    let held_out_title = if eval_keys.contains("accuracy") {
        "held-out accuracy"
    } else {
        held_out = eval_keys
            .iter()
            .filter_map(|k| k.strip_prefix("metrics/"))
            .map(|m| LineDef {
                key: format!("metrics/{m}"),
                label: m.into(),
                title: format!("held-out {m}"),
                source: Source::Evals,
                band: None,
            })
            .collect();
        "held-out metrics"
    };
    vec![
        panel("reward", vec![LineDef::steps("reward", "reward", "reward").with_band(Band::Std("reward_std"))]),
        panel("reward by key", per_key("rewards/", "reward")),
        panel("tags", per_key("tags/", "tag")),
        panel(held_out_title, held_out),
        panel("KL and β", vec![LineDef::steps("kl", "KL", "KL"), LineDef::steps("beta", "β", "β (KL coefficient)")]),
        panel("entropy", vec![LineDef::steps("entropy", "entropy", "entropy")]),
        panel(
            "completion length (tokens)",
            vec![
                LineDef::steps("completions/mean_length", "mean (band: min–max)", "mean completion length")
                    .with_band(Band::MinMax("completions/min_length", "completions/max_length")),
                LineDef::steps(
                    "completions/mean_terminated_length",
                    "mean of terminated",
                    "mean terminated completion length",
                ),
            ],
        ),
        panel(
            "clip fraction",
            vec![
                LineDef::steps("clip_ratio/low_mean", "low", "clip fraction (low)"),
                LineDef::steps("clip_ratio/high_mean", "high", "clip fraction (high)"),
                LineDef::steps("clip_ratio/region_mean", "region", "clip fraction (region)"),
            ],
        ),
        panel("tokens/s", vec![LineDef::steps("tokens_per_second", "tokens/s", "tokens/s")]),
        panel(
            "groups with zero reward std",
            vec![LineDef::steps("frac_reward_zero_std", "fraction", "groups with zero reward std")],
        ),
        panel("grad norm", vec![LineDef::steps("grad_norm", "grad norm", "grad norm")]),
        panel("learning rate", vec![LineDef::steps("learning_rate", "learning rate", "learning rate")]),
    ]
}

/// A line ready to draw: smoothed, thinned, coloured.
#[derive(Clone, Debug)]
struct Line {
    label: String,
    color: RGBColor,
    /// The line itself (smoothed when `raw` is set).
    points: Vec<(f64, f64)>,
    /// The unsmoothed series, drawn faintly behind a smoothed line.
    raw: Option<Vec<(f64, f64)>>,
    /// A shaded band: (step, low, high).
    band: Vec<(f64, f64, f64)>,
    /// Draw a marker at every point.
    markers: bool,
}

/// A panel ready to draw.
#[derive(Clone, Debug)]
struct Panel {
    title: String,
    lines: Vec<Line>,
    /// Label the lines inside the panel (the comparison page has one legend for the page).
    legend: bool,
}

/// A page ready to draw.
#[derive(Clone, Debug)]
struct Page {
    title: String,
    subtitle: String,
    /// The page legend: (run, colour), on the comparison page.
    legend: Vec<(String, RGBColor)>,
    panels: Vec<Panel>,
}

/// `def` of `run` as a drawable [`Line`], or `None` when the run has no data for it. Without
/// `min_max`, a min–max band is left out (on the comparison page, overlapping ones hide the lines).
fn make_line(
    run: &RunLog,
    def: &LineDef,
    label: &str,
    color: RGBColor,
    smoothing: Smoothing,
    min_max: bool,
) -> Option<Line> {
    let (series, markers) = match def.source {
        Source::Steps => (run.steps.get(&def.key)?, false),
        Source::Evals => (run.evals.get(&def.key)?, true),
    };
    if series.is_empty() {
        return None;
    }
    let window = if markers { 1 } else { smoothing.window(series.len()) };
    let band = match &def.band {
        Some(Band::Std(std)) => join(series, run.steps.get(*std), |m, s| (m - s, m + s)),
        Some(Band::MinMax(lo, hi)) if min_max => match run.steps.get(*lo) {
            Some(lo) => join(lo, run.steps.get(*hi), |l, h| (l, h)),
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    let band = if window > 1 {
        let lo = moving_average(&band.iter().map(|&(s, l, _)| (s, l)).collect::<Vec<_>>(), window);
        let hi = moving_average(&band.iter().map(|&(s, _, h)| (s, h)).collect::<Vec<_>>(), window);
        lo.iter().zip(&hi).map(|(&(s, l), &(_, h))| (s, l, h)).collect()
    } else {
        band
    };
    let raw: Vec<(f64, f64)> = series.iter().map(|&(s, v)| (s as f64, v)).collect();
    let (points, raw) =
        if window > 1 { (thin(&moving_average(&raw, window)), Some(envelope(&raw))) } else { (thin(&raw), None) };
    Some(Line {
        label: label.to_string(),
        color,
        points,
        raw,
        band: thin(&band),
        markers: markers || series.len() == 1,
    })
}

/// `(step, lo, hi)` where `a` and `b` both have the step (`b`'s last value for a step).
fn join(a: &Series, b: Option<&Series>, f: impl Fn(f64, f64) -> (f64, f64)) -> Vec<(f64, f64, f64)> {
    let Some(b) = b else { return Vec::new() };
    let b: std::collections::BTreeMap<u64, f64> = b.iter().copied().collect();
    a.iter()
        .filter_map(|&(s, x)| b.get(&s).map(|&y| (s, f(x, y))))
        .map(|(s, (lo, hi))| (s as f64, lo.min(hi), lo.max(hi)))
        .collect()
}

/// Centred moving average over `window` records, the window cut short at the ends.
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, v) in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// At most [`MAX_POINTS`] of `points`, evenly spaced, the last one kept.
fn thin<T: Copy>(points: &[T]) -> Vec<T> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<T> = points.iter().step_by(stride).copied().collect();
    if (points.len() - 1) % stride != 0 {
        out.push(points[points.len() - 1]);
    }
    out
}

/// At most about [`MAX_POINTS`] of `points`: each bucket of neighbours becomes its lowest and
/// highest point, in step order, so a thinned raw series keeps its spikes.
fn envelope(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let bucket = points.len().div_ceil(MAX_POINTS / 2);
    let mut out = Vec::with_capacity(MAX_POINTS + 2);
    for chunk in points.chunks(bucket) {
        let lo = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied();
        let hi = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo.0 <= hi.0 {
                out.extend([lo, hi]);
            } else {
                out.extend([hi, lo]);
            }
        }
    }
    out
}

/// The page of one run: every panel it has data for, lines coloured by [`PALETTE`] in order.
fn run_page(run: &RunLog, smoothing: Smoothing) -> Page {
    let panels = panel_defs(std::slice::from_ref(run))
        .into_iter()
        .filter_map(|p| {
            let lines: Vec<Line> = p
                .lines
                .iter()
                .enumerate()
                .filter_map(|(i, d)| make_line(run, d, &d.label, PALETTE[i % PALETTE.len()], smoothing, true))
                .collect();
            let legend = lines.len() > 1;
            (!lines.is_empty()).then_some(Panel { title: p.title, lines, legend })
        })
        .collect();
    let evals = match run.eval_records {
        0 => String::new(),
        1 => ", 1 evaluation".into(),
        n => format!(", {n} evaluations"),
    };
    Page {
        title: run.name.clone(),
        subtitle: format!("{}: {} steps{evals}", run.path.display(), run.step_records),
        legend: Vec::new(),
        panels,
    }
}

/// The comparison page: one panel per metric (per reward key, ...), a line per run in the
/// run's colour, one legend for the page.
fn compare_page(runs: &[RunLog], smoothing: Smoothing) -> Page {
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let panels = panel_defs(runs)
        .into_iter()
        .flat_map(|p| p.lines)
        .filter_map(|d| {
            let lines: Vec<Line> = runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| make_line(r, &d, &r.name, color(i), smoothing, false))
                .collect();
            (!lines.is_empty()).then_some(Panel { title: d.title, lines, legend: false })
        })
        .collect();
    Page {
        title: format!("{} runs compared", runs.len()),
        subtitle: runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" · "),
        legend: runs.iter().enumerate().map(|(i, r)| (r.name.clone(), color(i))).collect(),
        panels,
    }
}

/// Writes `dir/<stem>.png` and `dir/<stem>.svg`: the run's page. Returns the files written.
pub fn render_run(run: &RunLog, smoothing: Smoothing, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    write_page(&run_page(run, smoothing), dir, stem)
}

/// Writes `dir/<stem>.png` and `dir/<stem>.svg`: the runs overlaid, one colour per run.
/// Returns the files written.
pub fn render_compare(runs: &[RunLog], smoothing: Smoothing, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    write_page(&compare_page(runs, smoothing), dir, stem)
}

/// Registers [`FONT`] with plotters, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(Error::Invalid("the built-in chart font does not parse".into()))
    }
}

/// The page legend's rows: each entry's (row, x) position.
fn legend_layout(legend: &[(String, RGBColor)], width: u32) -> Vec<(u32, u32)> {
    let font = (FAMILY, LEGEND_FONT).into_font();
    let (mut row, mut x) = (0u32, 16u32);
    legend
        .iter()
        .map(|(name, _)| {
            let w = 24 + font.box_size(name).map(|(w, _)| w).unwrap_or(8 * name.len() as u32) + 28;
            if x > 16 && x + w > width {
                row += 1;
                x = 16;
            }
            let at = (row, x);
            x += w;
            at
        })
        .collect()
}

/// Draws `page` as `dir/<stem>.png` and `dir/<stem>.svg`.
fn write_page(page: &Page, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_font()?;
    let n = page.panels.len().max(1);
    let cols = n.min(COLUMNS);
    let rows = n.div_ceil(cols);
    let width = PANEL_SIZE.0 * cols as u32;
    let legend = legend_layout(&page.legend, width);
    let legend_h = legend.last().map_or(0, |&(row, _)| (row + 1) * LEGEND_ROW_H + 8);
    let header = HEADER_H + legend_h;
    let size = (width, header + PANEL_SIZE.1 * rows as u32);

    let png_path = dir.join(format!("{stem}.png"));
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw_page(&root, page, &legend, header, cols).map_err(|e| drawing_error(&png_path, e))?;
        root.present().map_err(|e| drawing_error(&png_path, e))?;
    }
    write_png(&png_path, &rgb, size)?;

    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_page(&root, page, &legend, header, cols).map_err(|e| drawing_error(&svg_path, e))?;
        root.present().map_err(|e| drawing_error(&svg_path, e))?;
    }
    std::fs::write(&svg_path, svg).map_err(|e| Error::io(&svg_path, e))?;
    Ok(vec![png_path, svg_path])
}

fn drawing_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: drawing the chart failed: {e}", path.display()))
}

/// Encodes an RGB8 buffer as PNG.
fn write_png(path: &Path, rgb: &[u8], (w, h): (u32, u32)) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => Error::io(path, e),
        e => Error::Invalid(format!("{}: encoding the PNG failed: {e}", path.display())),
    };
    let mut writer = enc.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws the page: title, subtitle, the page legend, then the panels in a `cols`-wide grid.
fn draw_page<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    page: &Page,
    legend: &[(u32, u32)],
    header: u32,
    cols: usize,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(header);
    top.draw(&Text::new(page.title.clone(), (16, 10), (FAMILY, 36).into_font().color(&BLACK)))?;
    top.draw(&Text::new(page.subtitle.clone(), (16, 46), (FAMILY, 19).into_font().color(&RGBColor(90, 90, 90))))?;
    for ((name, color), &(row, x)) in page.legend.iter().zip(legend) {
        let y = (HEADER_H + row * LEGEND_ROW_H + LEGEND_ROW_H / 2) as i32;
        let x = x as i32;
        top.draw(&Rectangle::new([(x, y - 3), (x + 18, y + 3)], color.filled()))?;
        let style = (FAMILY, LEGEND_FONT).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        top.draw(&Text::new(name.clone(), (x + 24, y), style))?;
    }
    // One step axis for the whole page, so panels line up when read against each other
    // (evaluations start at step 0, step records at 1; runs on one page differ in length).
    let xs = page.panels.iter().flat_map(|p| &p.lines).flat_map(|l| l.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let steps = if x1 > x0 { (x0, x1) } else { (x0 - 1.0, x1 + 1.0) };
    let rows = page.panels.len().max(1).div_ceil(cols);
    for (area, panel) in body.split_evenly((rows, cols)).iter().zip(&page.panels) {
        draw_panel(area, panel, steps)?;
    }
    Ok(())
}

/// Axis range of `lo..hi`, widened a little so lines do not sit on the frame, and to a
/// visible range when every value is equal (to float rounding: a constant learning rate
/// logged as f32 wobbles in its 8th digit).
fn padded(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    if hi - lo > 1e-6 * lo.abs().max(hi.abs()) {
        let d = (hi - lo) * pad;
        (lo - d, hi + d)
    } else {
        let mid = 0.5 * (lo + hi);
        let d = if mid == 0.0 { 1.0 } else { mid.abs() * 0.1 };
        (mid - d, mid + d)
    }
}

/// Tick labels of a value axis spanning `lo..hi`: one style for the whole axis, scientific
/// for very small or large magnitudes, else as many decimals as the span needs.
fn tick_label(v: f64, lo: f64, hi: f64) -> String {
    let magnitude = lo.abs().max(hi.abs());
    if v == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&magnitude) {
        format!("{v:.1e}")
    } else {
        let decimals = (1.0 - (hi - lo).log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Where the panel legend goes: a corner of the plot that no line (or band edge) crosses,
/// or, when every corner is taken, the upper right with the value axis raised to `y1'` so the
/// data stays below the legend. `legend` is the legend's size as fractions of the plot.
fn legend_placement(
    lines: &[Line],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (fw, fh): (f64, f64),
) -> (SeriesLabelPosition, f64) {
    // Lines are sampled between their points, so a corner crossed by a long straight segment
    // counts as taken even where no point falls into it.
    let mut taken = [false; 4];
    let mut mark = |x: f64, y: f64| {
        let (u, v) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        let (left, right, top, bottom) = (u < fw, u > 1.0 - fw, v > 1.0 - fh, v < fh);
        for (i, hit) in [top && right, top && left, bottom && right, bottom && left].into_iter().enumerate() {
            taken[i] |= hit;
        }
    };
    let edges = lines.iter().flat_map(|l| {
        let lo: Vec<(f64, f64)> = l.band.iter().map(|&(s, lo, _)| (s, lo)).collect();
        let hi: Vec<(f64, f64)> = l.band.iter().map(|&(s, _, hi)| (s, hi)).collect();
        [l.points.clone(), lo, hi]
    });
    for path in edges {
        for w in path.windows(2) {
            let ((xa, ya), (xb, yb)) = (w[0], w[1]);
            for k in 0..=16 {
                let t = f64::from(k) / 16.0;
                mark(xa + t * (xb - xa), ya + t * (yb - ya));
            }
        }
        if let [(x, y)] = path[..] {
            mark(x, y);
        }
    }
    let corners = [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ];
    match taken.iter().position(|t| !t) {
        Some(i) => (corners.into_iter().nth(i).unwrap_or(SeriesLabelPosition::UpperRight), y1),
        // The data keeps the lower 1 - fh of the raised range.
        None => (SeriesLabelPosition::UpperRight, y0 + (y1 - y0) / (1.0 - fh).max(0.3)),
    }
}

/// Draws one panel: caption, axes (x = step over `x0..x1`), bands, faint raw lines, lines,
/// markers, legend.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    (x0, x1): (f64, f64),
) -> DrawResult<DB> {
    let ys = panel.lines.iter().flat_map(|l| {
        let raw = l.raw.iter().flat_map(|r| r.iter().map(|p| p.1));
        l.points.iter().map(|p| p.1).chain(raw).chain(l.band.iter().flat_map(|b| [b.1, b.2]))
    });
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let (y0, y1) = padded(y0, y1, 0.06);

    // The caption first, so the plot's size in pixels is known before its range is: the
    // legend may need room above the data.
    let area = area.titled(&panel.title, (FAMILY, 26).into_font().color(&BLACK))?;
    let (margin, label_x, label_y) = ((8, 18, 6, 6), 48, 76);
    let (aw, ah) = area.dim_in_pixel();
    let plot_w = f64::from(aw.saturating_sub(margin.0 + margin.1 + label_y).max(1));
    let plot_h = f64::from(ah.saturating_sub(margin.2 + margin.3 + label_x).max(1));
    let legend_font = (FAMILY, 17).into_font();
    let (position, y1) = if panel.legend {
        let widest = panel.lines.iter().map(|l| legend_font.box_size(&l.label).map_or(100, |(w, _)| w)).max();
        let line_h = legend_font.box_size("Ag").map_or(20, |(_, h)| h);
        // plotters' legend box: 30 px of swatch, 5 px margins, the labels.
        let size = (f64::from(widest.unwrap_or(0) + 50), f64::from(line_h) * panel.lines.len() as f64 + 20.0);
        legend_placement(&panel.lines, (x0, x1), (y0, y1), (size.0 / plot_w, size.1 / plot_h))
    } else {
        (SeriesLabelPosition::UpperRight, y1)
    };
    let mut chart = ChartBuilder::on(&area)
        .margin_left(margin.0)
        .margin_right(margin.1)
        .margin_top(margin.2)
        .margin_bottom(margin.3)
        .x_label_area_size(label_x)
        .y_label_area_size(label_y)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let y_label = |v: &f64| tick_label(*v, y0, y1);
    let x_label = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("step")
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FAMILY, 17).into_font().color(&RGBColor(60, 60, 60)))
        .axis_desc_style((FAMILY, 17).into_font().color(&RGBColor(60, 60, 60)))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .axis_style(RGBColor(120, 120, 120))
        .draw()?;

    for line in &panel.lines {
        if line.band.len() > 1 {
            let outline: Vec<(f64, f64)> = line
                .band
                .iter()
                .map(|&(s, lo, _)| (s, lo))
                .chain(line.band.iter().rev().map(|&(s, _, hi)| (s, hi)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, line.color.mix(0.18).filled())))?;
        }
    }
    for line in &panel.lines {
        if let Some(raw) = &line.raw {
            chart.draw_series(LineSeries::new(raw.iter().copied(), line.color.mix(0.25).stroke_width(1)))?;
        }
    }
    for line in &panel.lines {
        let color = line.color;
        let drawn = chart.draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?;
        if panel.legend {
            drawn
                .label(line.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        if line.markers {
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    if panel.legend {
        chart
            .configure_series_labels()
            .position(position)
            .label_font(legend_font.color(&BLACK))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_centred_and_cut_at_the_ends() {
        let p: Vec<(f64, f64)> = [0.0, 3.0, 6.0, 9.0].iter().enumerate().map(|(i, &v)| (i as f64, v)).collect();
        let s = moving_average(&p, 3);
        assert_eq!(s, vec![(0.0, 1.5), (1.0, 3.0), (2.0, 6.0), (3.0, 7.5)]);
        assert_eq!(moving_average(&p, 1), p);
    }

    #[test]
    fn thinning_keeps_the_ends_and_the_spikes() {
        let p: Vec<(f64, f64)> = (0..5000).map(|i| (i as f64, if i == 2345 { 100.0 } else { 0.0 })).collect();
        let t = thin(&p);
        assert!(t.len() <= MAX_POINTS + 1 && t[0] == p[0] && t[t.len() - 1] == p[4999]);
        let e = envelope(&p);
        assert!(e.len() <= MAX_POINTS + 2);
        assert!(e.contains(&(2345.0, 100.0)), "the spike survives thinning");
        assert!(e.windows(2).all(|w| w[0].0 <= w[1].0), "in step order");
    }

    #[test]
    fn auto_smoothing_only_for_long_runs() {
        assert_eq!(Smoothing::Auto.window(AUTO_SMOOTH_ABOVE), 1);
        assert_eq!(Smoothing::Auto.window(1500), 15);
        assert_eq!(Smoothing::Off.window(100_000), 1);
        assert_eq!(Smoothing::Window(0).window(10), 1);
    }

    #[test]
    fn the_legend_takes_a_free_corner_or_raises_the_axis() {
        let line = |points: Vec<(f64, f64)>| Line {
            label: String::new(),
            color: PALETTE[0],
            points,
            raw: None,
            band: Vec::new(),
            markers: false,
        };
        // A rising diagonal crosses the lower left and upper right corners only.
        let rising = [line(vec![(0.0, 0.0), (10.0, 1.0)])];
        let (pos, y1) = legend_placement(&rising, (0.0, 10.0), (0.0, 1.0), (0.3, 0.3));
        assert!(matches!(pos, SeriesLabelPosition::UpperLeft) && y1 == 1.0);
        // Two flat lines along the top and the bottom (β over KL) take every corner: the axis
        // grows so that the data keeps the lower 70%.
        let flat = [line(vec![(0.0, 0.95), (10.0, 0.95)]), line(vec![(0.0, 0.05), (10.0, 0.1)])];
        let (pos, y1) = legend_placement(&flat, (0.0, 10.0), (0.0, 1.0), (0.3, 0.3));
        assert!(matches!(pos, SeriesLabelPosition::UpperRight));
        assert!((y1 - 1.0 / 0.7).abs() < 1e-12, "{y1}");
    }

    #[test]
    fn tick_labels_share_one_style_per_axis() {
        assert_eq!(tick_label(0.4, 0.0, 1.0), "0.4");
        assert_eq!(tick_label(0.04, 0.0, 0.1), "0.04");
        assert_eq!(tick_label(3e-4, 0.0, 5e-4), "3.0e-4");
        assert_eq!(tick_label(1500.0, 0.0, 3000.0), "1500");
        assert_eq!(tick_label(0.0, 0.0, 5e-4), "0");
    }
}
