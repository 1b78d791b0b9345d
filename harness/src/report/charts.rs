//! Charts, each written as SVG (inlined in `report.html`) and PNG.
//!
//! - `latency-distribution`: publish latency against percentile on a
//!   log "1/(1-p)" axis, one curve per point, as HdrHistogram's plotter
//!   draws them: the tail gets as much room as the median.
//! - `throughput-vs-p99`: each point's publish rate against its p99.
//! - `rate-over-time` and `p99-over-time`: per-second series per point.
//!
//! Each chart's legend stands in a column right of the plot, never over a
//! curve. The report page draws the same charts interactively
//! ([`interactive`], `plot.rs`); these files are for documents.
//!
//! Text needs a TrueType font: the first of a few common system fonts is
//! loaded at run time; without one, charts are skipped with a note.

use super::plot::{Line, Plot, XAxis};
use crate::measure::hist::Hist;
use crate::run::result::PointResult;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const SIZE: (u32, u32) = (960, 540);
/// Width of the legend column right of the plot, in pixels.
const LEGEND_W: u32 = 240;
/// Characters of a legend label that fit the column at 13 px.
const LEGEND_CHARS: usize = 30;
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
/// Highest `1/(1-p)` drawn: p = 99.999%.
const INVERSE_MAX: f64 = 100_000.0;

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One series: a label and its (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

pub struct Chart {
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// x is log10(1/(1-p)); label ticks as percentiles.
    pub percentile_axis: bool,
    pub points_only: bool,
    /// Units of x (when not a percentile) and y in hover texts.
    pub x_unit: &'static str,
    pub y_unit: &'static str,
}

/// Writes every chart as SVG and PNG.
pub fn write_all(dir: &Path, charts: &[Chart]) -> Result<(), String> {
    if !font_ready() {
        return Err("no TrueType font found (looked in /usr/share/fonts); charts skipped".into());
    }
    for c in charts {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            draw(&root, c).map_err(|e| format!("{}: {e}", c.file))?;
            root.present().map_err(|e| format!("{}: {e}", c.file))?;
        }
        std::fs::write(dir.join(format!("{}.svg", c.file)), &svg).map_err(|e| e.to_string())?;
        let png = dir.join(format!("{}.png", c.file));
        {
            let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            draw(&root, c).map_err(|e| format!("{}: {e}", c.file))?;
            root.present().map_err(|e| format!("{}: {e}", c.file))?;
        }
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_W);
    let (mut x_max, mut y_max) = (1e-9f64, 1e-9f64);
    for (_, pts) in &c.series {
        for &(x, y) in pts {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    if c.percentile_axis {
        x_max = INVERSE_MAX.log10();
    }
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&c.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max * 1.05, 0f64..y_max * 1.1)
        .map_err(e)?;
    let pct = c.percentile_axis;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels(if pct { 6 } else { 10 })
        .x_label_formatter(&|x| {
            if pct {
                super::plot::percentile_tick(x.round() as u32)
            } else {
                format!("{x:.0}")
            }
        })
        .draw()
        .map_err(e)?;
    for (i, (_, pts)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if c.points_only {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(e)?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(e)?;
        }
    }
    legend(&legend_area, c)
}

/// The legend column: a swatch and a label per series, top down, and how
/// many did not fit.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    const ROW: i32 = 18;
    let rows = (SIZE.1 as i32 - 2 * ROW) / ROW;
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, (label, _)) in c.series.iter().enumerate() {
        let y = 2 * ROW + i as i32 * ROW;
        if i as i32 == rows - 1 && c.series.len() as i32 > rows {
            let more = format!("and {} more", c.series.len() - i);
            area.draw(&Text::new(more, (8, y - 7), font.clone()))
                .map_err(e)?;
            break;
        }
        let color = Palette99::pick(i).to_rgba();
        if c.points_only {
            area.draw(&Circle::new((18, y), 4, color.filled()))
                .map_err(e)?;
        } else {
            area.draw(&PathElement::new(
                vec![(8, y), (28, y)],
                color.stroke_width(2),
            ))
            .map_err(e)?;
        }
        let text: String = if label.chars().count() > LEGEND_CHARS {
            label.chars().take(LEGEND_CHARS - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        area.draw(&Text::new(text, (34, y - 7), font.clone()))
            .map_err(e)?;
    }
    Ok(())
}

/// The same chart for the report page: hover and legend clicks work.
pub fn interactive(c: &Chart) -> Plot {
    Plot {
        id: c.file.clone(),
        title: c.title.clone(),
        x_label: c.x_label.clone(),
        y_label: c.y_label.clone(),
        x_axis: if c.percentile_axis {
            XAxis::Percentile
        } else {
            XAxis::Linear(c.x_unit)
        },
        y_unit: c.y_unit.to_string(),
        markers: c.points_only,
        series: c
            .series
            .iter()
            .enumerate()
            .map(|(i, (name, points))| Line {
                name: name.clone(),
                colour: i,
                dash: 0,
                points: points.clone(),
            })
            .collect(),
    }
}

/// x of a point at quantile `q` on the percentile axis: log10(1/(1-q)),
/// 100% drawn at five nines.
pub fn percentile_x(q: f64) -> f64 {
    let inv = if q >= 1.0 {
        INVERSE_MAX
    } else {
        (1.0 / (1.0 - q)).min(INVERSE_MAX)
    };
    inv.log10()
}

/// A latency distribution curve: (log10(1/(1-p)), ms).
pub fn distribution_series(h: &Hist) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let x = percentile_x(v.quantile_iterated_to());
        pts.push((x, v.value_iterated_to() as f64 / 1_000.0));
    }
    pts
}

/// The standard chart set for a run.
pub fn standard(points: &[PointResult], publish_hists: &[Hist]) -> Vec<Chart> {
    let label = |p: &PointResult| {
        if p.repeat > 0 {
            format!("{} (run {})", p.label, p.repeat + 1)
        } else {
            p.label.clone()
        }
    };
    vec![
        Chart {
            file: "latency-distribution".into(),
            title: "Publish latency by percentile".into(),
            x_label: "percentile".into(),
            y_label: "latency (ms)".into(),
            series: points
                .iter()
                .zip(publish_hists)
                .map(|(p, h)| (label(p), distribution_series(h)))
                .collect(),
            percentile_axis: true,
            points_only: false,
            x_unit: "",
            y_unit: "ms",
        },
        Chart {
            file: "throughput-vs-p99".into(),
            title: "Throughput against p99 publish latency".into(),
            x_label: "publish rate (msg/s)".into(),
            y_label: "p99 publish latency (ms)".into(),
            series: points
                .iter()
                .map(|p| {
                    (
                        label(p),
                        vec![(
                            p.publish_rate_msgs,
                            p.publish_latency.p99_us as f64 / 1_000.0,
                        )],
                    )
                })
                .collect(),
            percentile_axis: false,
            points_only: true,
            x_unit: "msg/s",
            y_unit: "ms",
        },
        Chart {
            file: "rate-over-time".into(),
            title: "Publish rate over time".into(),
            x_label: "seconds".into(),
            y_label: "msg/s".into(),
            series: points
                .iter()
                .map(|p| {
                    (
                        label(p),
                        p.intervals
                            .iter()
                            .map(|r| (r.second as f64, r.publish_msgs as f64))
                            .collect(),
                    )
                })
                .collect(),
            percentile_axis: false,
            points_only: false,
            x_unit: "s",
            y_unit: "msg/s",
        },
        Chart {
            file: "p99-over-time".into(),
            title: "p99 publish latency over time (per second)".into(),
            x_label: "seconds".into(),
            y_label: "ms".into(),
            series: points
                .iter()
                .map(|p| {
                    (
                        label(p),
                        p.intervals
                            .iter()
                            .map(|r| (r.second as f64, r.publish_p99_us as f64 / 1_000.0))
                            .collect(),
                    )
                })
                .collect(),
            percentile_axis: false,
            points_only: false,
            x_unit: "s",
            y_unit: "ms",
        },
    ]
}
