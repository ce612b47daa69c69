//! Helpers shared by the notebook-style examples: flags, headed steps, tables, SVG plots and
//! the sunspot data. Each example includes this file with
//! `#[path = "common/mod.rs"] mod common;`, so every example uses only a part of it.
#![allow(dead_code)]

use eddy::tape::Rng;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// The result type of an example's steps: any error, with its message.
pub type AnyResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// Command-line flags: `--name value`, `--name=value` and bare `--name`. Quick mode is
/// `--quick` or the environment variable `EDDY_QUICK=1` (what CI sets or passes).
pub struct Args {
    values: BTreeMap<String, Option<String>>,
    /// Run the small version: seconds instead of minutes, for CI.
    pub quick: bool,
    /// Where the example writes its plots: `--out DIR`, default `out/<example>/`.
    pub out: PathBuf,
    started: Instant,
}

impl Args {
    /// Parses the process's arguments. `--help` prints `usage` (the example's flags) and exits.
    pub fn parse(example: &str, usage: &str) -> Args {
        let mut values = BTreeMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                eprintln!("unexpected argument {arg:?}\n\n{usage}");
                std::process::exit(2);
            };
            if name == "help" {
                println!("{usage}");
                std::process::exit(0);
            }
            match name.split_once('=') {
                Some((k, v)) => values.insert(k.to_string(), Some(v.to_string())),
                None => {
                    let v = it.next_if(|next| !next.starts_with("--"));
                    values.insert(name.to_string(), v)
                }
            };
        }
        let env_quick = std::env::var("EDDY_QUICK").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        let quick = values.contains_key("quick") || env_quick;
        let out = match values.get("out") {
            Some(Some(dir)) => PathBuf::from(dir),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("out").join(example),
        };
        Args {
            values,
            quick,
            out,
            started: Instant::now(),
        }
    }

    /// The value of `--name`, or `default`. Exits with a message if it does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            Some(Some(v)) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{name}: cannot parse {v:?}");
                std::process::exit(2)
            }),
            Some(None) => {
                eprintln!("--{name} needs a value");
                std::process::exit(2)
            }
            None => default,
        }
    }

    /// A comma-separated list `--name a,b,c`, or `default`.
    pub fn list<T: FromStr + Clone>(&self, name: &str, default: &[T]) -> Vec<T> {
        match self.values.get(name) {
            Some(Some(v)) => v
                .split(',')
                .map(|s| {
                    s.trim().parse().unwrap_or_else(|_| {
                        eprintln!("--{name}: cannot parse {s:?}");
                        std::process::exit(2)
                    })
                })
                .collect(),
            _ => default.to_vec(),
        }
    }

    /// Whether the bare flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Creates the output folder and returns the path of `file` in it.
    pub fn out_file(&self, file: &str) -> AnyResult<PathBuf> {
        std::fs::create_dir_all(&self.out)?;
        Ok(self.out.join(file))
    }

    /// The last words of an example: its time and where its plots are.
    pub fn finish(&self) {
        println!(
            "\nDone in {:.1} s. Plots are in {}/ (SVG: open them in a browser).",
            self.started.elapsed().as_secs_f64(),
            self.out.display()
        );
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Prints the heading of a notebook step.
pub fn step(n: usize, title: &str) {
    println!("\n## {n}. {title}\n");
}

/// `Ok(())` when `holds`, else the error `what`: a check a step makes, as
/// `ensure(diff < tol, format!(..))?`. Unlike `return Err(..)`, it also works at a notebook's
/// top level (evcxr runs a cell's statements in a function of its own).
pub fn ensure(holds: bool, what: impl Into<String>) -> AnyResult {
    if holds {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// Whether the code runs in a Jupyter notebook on the evcxr kernel (notebooks/, generated from
/// these examples by tools/notebooks.py), which sets `EVCXR_IS_RUNTIME` in the process that runs
/// the cells.
pub fn in_notebook() -> bool {
    std::env::var_os("EVCXR_IS_RUNTIME").is_some()
}

/// What the notebook cell running now has shown (HTML). evcxr keeps one output per MIME type per
/// cell, the last one sent; so each show sends everything the cell has shown so far, and a cell
/// with two tables and a plot shows all three. evcxr compiles every cell with its own copy of
/// this module, so the buffer starts empty in each cell.
static SHOWN: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Shows the HTML `fragment` inline in a notebook, after what the cell has shown already
/// (evcxr's display protocol); does nothing elsewhere.
pub fn show_in_notebook(fragment: &str) {
    if in_notebook() {
        let mut shown = SHOWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        shown.push_str(fragment);
        println!("EVCXR_BEGIN_CONTENT text/html\n{shown}\nEVCXR_END_CONTENT");
    }
}

/// Shows the SVG file at `path` inline in a notebook; does nothing elsewhere.
pub fn show_svg(path: &Path) -> AnyResult {
    if in_notebook() {
        let svg = std::fs::read_to_string(path)?;
        // An XML declaration is not allowed inside HTML.
        let svg = match svg.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or(rest, |(_, body)| body),
            None => &svg,
        };
        show_in_notebook(&format!("<div>{}</div>", svg.trim()));
    }
    Ok(())
}

/// `text` with the characters HTML gives a meaning escaped.
fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// A table printed as Markdown (so it pastes into docs): a header and rows of cells, columns
/// padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown text, one line per row.
    pub fn markdown(&self) -> String {
        let n = self.header.len();
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .chain([&self.header[c]])
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..n)
                .map(|c| format!("{:<w$}", cells.get(c).map_or("", |s| s.as_str()), w = widths[c]))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out += &format!("|-{}-|\n", rule.join("-|-"));
        for r in &self.rows {
            out += &line(r);
        }
        out
    }

    /// The table as an HTML `<table>` (what a notebook shows).
    pub fn html(&self) -> String {
        let row = |tag: &str, cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| format!("<{tag}>{}</{tag}>", escape_html(c)))
                .collect();
            format!("<tr>{}</tr>\n", cells.concat())
        };
        let mut out = format!("<table>\n<thead>\n{}</thead>\n<tbody>\n", row("th", &self.header));
        for r in &self.rows {
            out += &row("td", r);
        }
        out + "</tbody>\n</table>\n"
    }

    /// Prints the table as Markdown; in a notebook, shows it rendered.
    pub fn print(&self) {
        if in_notebook() {
            show_in_notebook(&self.html());
        } else {
            print!("{}", self.markdown());
        }
    }
}

/// A number with `digits` significant digits, in plain or scientific notation as fits.
pub fn sig(x: f64, digits: usize) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    if (-3..5).contains(&mag) {
        let decimals = (digits as i32 - 1 - mag).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.prec$e}", prec = digits.saturating_sub(1))
    }
}

/// A tick label: whole numbers without decimals, others with up to 3 significant digits.
pub fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v.abs() < 1e7 {
        format!("{}", v.round() as i64)
    } else {
        sig(v, 3)
    }
}

/// `0.0010` → `0.001`, `20.0` → `20`; leaves scientific notation alone.
pub fn trim_zeros(s: String) -> String {
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Mean and (population) standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

// ---------------------------------------------------------------------------------------------
// Plots (SVG through plotters, which lays out text without system fonts)
// ---------------------------------------------------------------------------------------------

/// Ten distinguishable colours (matplotlib's "tab10").
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

/// One line of a [`LinePlot`]; with `band`, each point also gets an error bar `(lo, hi)`.
#[derive(Clone, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64)>>,
    /// Draw dashed (for reference lines such as baselines).
    pub dashed: bool,
    /// Colour index into [`PALETTE`].
    pub color: usize,
}

impl Series {
    pub fn new(label: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            color,
            ..Series::default()
        }
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    pub fn with_band(mut self, band: Vec<(f64, f64)>) -> Series {
        self.band = Some(band);
        self
    }
}

/// A line chart: axes with ticks and labels, a title, one line per series, a legend.
#[derive(Clone, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    /// Label the x axis ticks with these names at x = 0, 1, 2, … (a categorical axis).
    pub x_names: Option<Vec<String>>,
    pub series: Vec<Series>,
    /// Where the legend goes (default: upper right).
    pub legend: Option<SeriesLabelPosition>,
}

impl LinePlot {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> LinePlot {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..LinePlot::default()
        }
    }

    pub fn log_y(mut self) -> LinePlot {
        self.log_y = true;
        self
    }

    pub fn legend_at(mut self, position: SeriesLabelPosition) -> LinePlot {
        self.legend = Some(position);
        self
    }

    pub fn series(mut self, s: Series) -> LinePlot {
        self.series.push(s);
        self
    }

    /// Writes the plot as an SVG file of 900×560 pixels.
    pub fn save(&self, path: &Path) -> AnyResult {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        self.draw(&root)?;
        root.present()?;
        show_svg(path)
    }

    /// Draws into part of a larger figure.
    pub fn draw(&self, area: &DrawingArea<SVGBackend, Shift>) -> AnyResult {
        let finite = |v: &f64| v.is_finite() && (!self.log_y || *v > 0.0);
        let xs = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = self.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flatten().flat_map(|b| [b.0, b.1]))
        });
        let (x0, x1) = bounds(xs.filter(|v| v.is_finite()));
        let (mut y0, mut y1) = bounds(ys.filter(finite));
        if self.log_y {
            (y0, y1) = (y0 / 1.5, y1 * 1.5);
            draw_lines(area, self, x0..x1, LogCoord::from((y0..y1).log_scale()))
        } else {
            let pad = 0.05 * (y1 - y0).max(1e-12);
            draw_lines(area, self, x0..x1, RangedCoordf64::from(y0 - pad..y1 + pad))
        }
    }
}

fn bounds(it: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = it.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

fn draw_lines<Y>(
    area: &DrawingArea<SVGBackend, Shift>,
    plot: &LinePlot,
    x: std::ops::Range<f64>,
    y: Y,
) -> AnyResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x, categorical) = match &plot.x_names {
        Some(names) => (-0.5..names.len() as f64 - 0.5, true),
        None => (x, false),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x, y)?;
    let names = plot.x_names.clone().unwrap_or_default();
    let name_of = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let digits = if plot.log_y { 2 } else { 3 };
    let y_fmt = move |v: &f64| trim_zeros(sig(*v, digits));
    let x_fmt = |v: &f64| tick(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .y_labels(12)
        .y_label_formatter(&y_fmt)
        .light_line_style(WHITE.mix(0.0));
    if categorical {
        mesh.x_labels(names.len() * 2 + 1).x_label_formatter(&name_of);
    } else {
        mesh.x_label_formatter(&x_fmt);
    }
    mesh.draw()?;
    for s in &plot.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?
        };
        anno.label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        if (categorical || s.band.is_some()) && !s.dashed {
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        if let Some(band) = &s.band {
            chart.draw_series(
                s.points
                    .iter()
                    .zip(band)
                    .map(|(p, b)| ErrorBar::new_vertical(p.0, b.0, p.1, b.1, color.stroke_width(2), 12)),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(plot.legend.clone().unwrap_or(SeriesLabelPosition::UpperRight))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// Several line plots side by side (or in a grid) in one SVG file.
pub fn save_panels(path: &Path, title: &str, plots: &[LinePlot], cols: usize) -> AnyResult {
    let cols = cols.max(1);
    let rows = plots.len().div_ceil(cols);
    let root = SVGBackend::new(path, (560 * cols as u32, 420 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    for (area, plot) in root.split_evenly((rows, cols)).iter().zip(plots) {
        plot.draw(area)?;
    }
    root.present()?;
    show_svg(path)
}

/// A colour scale for heat maps.
#[derive(Clone, Copy)]
pub enum Scale {
    /// Sequential, dark blue → yellow (viridis-like), for values in `[lo, hi]`.
    Sequential,
    /// Diverging, blue → white → red, symmetric around 0, for signed values.
    Diverging,
}

impl Scale {
    /// The colour of `t ∈ [0, 1]`.
    pub fn color(self, t: f64) -> RGBColor {
        let t = t.clamp(0.0, 1.0);
        let stops: &[(f64, f64, f64)] = match self {
            Scale::Sequential => &[
                (68.0, 1.0, 84.0),
                (59.0, 82.0, 139.0),
                (33.0, 145.0, 140.0),
                (94.0, 201.0, 98.0),
                (253.0, 231.0, 37.0),
            ],
            Scale::Diverging => &[(33.0, 102.0, 172.0), (247.0, 247.0, 247.0), (178.0, 24.0, 43.0)],
        };
        let pos = t * (stops.len() - 1) as f64;
        let i = (pos.floor() as usize).min(stops.len() - 2);
        let f = pos - i as f64;
        let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
        let (a, b) = (stops[i], stops[i + 1]);
        RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

/// One heat map: `values[row][col]`, rows drawn top to bottom, with a colour bar.
#[derive(Clone)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub values: Vec<Vec<f64>>,
    pub row_names: Vec<String>,
    /// The x value of column 0 and the step between columns (for the tick labels).
    pub x_start: f64,
    pub x_step: f64,
    pub scale: Scale,
    /// The value range of the colour bar; `None`: the data's (symmetric for diverging).
    pub range: Option<(f64, f64)>,
}

impl Heatmap {
    fn range(&self) -> (f64, f64) {
        if let Some(r) = self.range {
            return r;
        }
        let (lo, hi) = bounds(self.values.iter().flatten().copied().filter(|v| v.is_finite()));
        match self.scale {
            Scale::Sequential => (lo, hi),
            Scale::Diverging => {
                let m = lo.abs().max(hi.abs()).max(1e-12);
                (-m, m)
            }
        }
    }

    fn draw(&self, area: &DrawingArea<SVGBackend, Shift>) -> AnyResult {
        let (main, bar) = area.split_horizontally(area.dim_in_pixel().0 as i32 - 110);
        let rows = self.values.len();
        let cols = self.values.first().map_or(0, |r| r.len());
        let (lo, hi) = self.range();
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..cols as f64, 0.0..rows as f64)?;
        let (x_start, x_step) = (self.x_start, self.x_step);
        let x_fmt = move |v: &f64| tick(x_start + v.floor() * x_step);
        let names = self.row_names.clone();
        let y_fmt = move |v: &f64| {
            let i = v.floor();
            // Row 0 at the top: tick k (from the bottom) is row rows − 1 − k.
            if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[names.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 12))
            .x_labels(cols.min(12))
            .x_label_formatter(&x_fmt)
            .y_labels(2 * rows + 1)
            .y_label_formatter(&y_fmt)
            .draw()?;
        let scale = self.scale;
        let norm = move |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        chart.draw_series(self.values.iter().enumerate().flat_map(|(r, row)| {
            let y = (rows - 1 - r) as f64;
            row.iter().enumerate().map(move |(c, &v)| {
                Rectangle::new(
                    [(c as f64, y), (c as f64 + 1.0, y + 1.0)],
                    scale.color(norm(v)).filled(),
                )
            })
        }))?;
        // The colour bar: 60 strips from lo to hi with value ticks.
        let mut legend = ChartBuilder::on(&bar)
            .margin_top(36)
            .margin_bottom(48)
            .margin_right(8)
            .y_label_area_size(62)
            .build_cartesian_2d(0.0..1.0, lo..hi)?;
        let y_fmt = move |v: &f64| sig(if v.abs() < 1e-9 * (hi - lo) { 0.0 } else { *v }, 2);
        legend
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 12))
            .draw()?;
        let n = 60;
        legend.draw_series((0..n).map(|k| {
            let a = lo + (hi - lo) * k as f64 / n as f64;
            let b = lo + (hi - lo) * (k + 1) as f64 / n as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                scale.color(k as f64 / (n - 1) as f64).filled(),
            )
        }))?;
        Ok(())
    }
}

/// Heat maps stacked vertically in one SVG file, each `height` pixels tall.
pub fn save_heatmaps(path: &Path, title: &str, maps: &[Heatmap], height: u32) -> AnyResult {
    let root = SVGBackend::new(path, (1000, height * maps.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    for (area, map) in root.split_evenly((maps.len(), 1)).iter().zip(maps) {
        map.draw(area)?;
    }
    root.present()?;
    show_svg(path)
}

// ---------------------------------------------------------------------------------------------
// Data: the adding problem of Hochreiter & Schmidhuber (1997)
// ---------------------------------------------------------------------------------------------

/// A batch of adding-problem sequences: `x` is `[T, B, 2]` (time-major), `y` is `[B, 1]`.
pub struct Batch {
    pub x: ndarray::ArrayD<f32>,
    pub y: ndarray::ArrayD<f32>,
}

/// Draws `batch` sequences of length `len`: values `U(0, 1)`, one marker in each half.
pub fn adding_batch(rng: &mut Rng, batch: usize, len: usize) -> Batch {
    let mut x = ndarray::ArrayD::zeros(vec![len, batch, 2]);
    let mut y = ndarray::ArrayD::zeros(vec![batch, 1]);
    for b in 0..batch {
        for t in 0..len {
            x[[t, b, 0]] = rng.uniform() as f32;
        }
        let first = rng.below(len / 2);
        let second = len / 2 + rng.below(len - len / 2);
        x[[first, b, 1]] = 1.0;
        x[[second, b, 1]] = 1.0;
        y[[b, 0]] = x[[first, b, 0]] + x[[second, b, 0]];
    }
    Batch { x, y }
}

// ---------------------------------------------------------------------------------------------
// Data: the monthly sunspot series shipped in data/
// ---------------------------------------------------------------------------------------------

/// The monthly mean sunspot numbers, January 1749 to June 2009, from `data/sunspots_monthly.csv`
/// (columns `date,sunspots`).
pub fn sunspots() -> AnyResult<Vec<f64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sunspots_monthly.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let value = line
            .split(',')
            .nth(1)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("{}:{}: expected `date,sunspots`", path.display(), i + 1))?;
        out.push(value);
    }
    Ok(out)
}

/// Sliding windows over a series: inputs `[N, len]` (one row per window) and the value that
/// follows each window, for windows whose target index lies in `targets`.
pub fn windows(series: &[f64], len: usize, targets: std::ops::Range<usize>) -> (Vec<Vec<f64>>, Vec<f64>) {
    let start = targets.start.max(len);
    let xs = (start..targets.end)
        .map(|t| series[t - len..t].to_vec())
        .collect();
    let ys = (start..targets.end).map(|t| series[t]).collect();
    (xs, ys)
}

/// A batch of windows as a time-major `[len, B, 1]` array and targets `[B, 1]`.
pub fn batch_arrays(
    xs: &[Vec<f64>],
    ys: &[f64],
    idx: &[usize],
) -> (ndarray::ArrayD<f32>, ndarray::ArrayD<f32>) {
    let len = xs[idx[0]].len();
    let x = ndarray::ArrayD::from_shape_fn(vec![len, idx.len(), 1], |d| xs[idx[d[1]]][d[0]] as f32);
    let y = ndarray::ArrayD::from_shape_fn(vec![idx.len(), 1], |d| ys[idx[d[0]]] as f32);
    (x, y)
}
