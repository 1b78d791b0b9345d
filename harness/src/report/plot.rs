//! Interactive charts for the HTML reports: inline SVG drawn here, plus one
//! small inline script ([`SCRIPT`]) that shows the nearest point's exact
//! value and label on hover and hides a series when its legend entry is
//! clicked. Nothing is loaded from the network, so a report opens offline
//! from the file.
//!
//! ```text
//! <figure class="plot" id=...>
//!   <figcaption>title</figcaption>
//!   <div class="plot-body">
//!     <svg viewBox="0 0 W H">  axes, grid, ticks,
//!       <g class="series" data-i="k"> polyline or circles </g> ...
//!     </svg>
//!     <ul class="legend"> <li data-i="k"> swatch, name </li> ... </ul>
//!   </div>
//!   <div class="tip"></div>
//!   <script type="application/json" class="plot-data">
//!     {"series":[{"name":..,"points":[[px,py,"x text","y text"],..]},..]}
//!   </script>
//! </figure>
//! ```
//!
//! The legend is a list beside the SVG, never drawn over the plot area.
//! Pixel positions are computed here, so the script only finds the nearest
//! point; the value texts are formatted here too, so hover shows the same
//! figures as the tables.

use serde::Serialize;
use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 72.0;
/// Room for the last x tick's label (`99.999%`) to end inside the SVG.
const RIGHT: f64 = 36.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 52.0;
/// Highest `1/(1-p)` on a percentile axis, as the PNG charts: p = 99.999%.
pub const PERCENTILE_NINES_MAX: f64 = 5.0;

/// Tableau 10: distinct for up to ten points, then reused.
const COLOURS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Run A solid, B dashed, C dotted, then dash-dot and long dashes.
const DASHES: &[&str] = &["", "9 5", "2 4", "9 4 2 4", "16 5", "4 2"];

/// What the x axis shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum XAxis {
    /// x is log10(1/(1-p)); ticks are labelled 0%, 90%, 99%, 99.9%, ...
    Percentile,
    /// A plain linear axis with this unit in hover texts.
    Linear(&'static str),
}

/// One series: its name, colour and dash indexes and its (x, y) points.
#[derive(Clone, Debug)]
pub struct Line {
    pub name: String,
    pub colour: usize,
    pub dash: usize,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct Plot {
    /// Unique within the page; used as the figure's `id`.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    /// Unit of y in hover texts (`ms`, `msg/s`).
    pub y_unit: String,
    /// Circles at the points instead of lines.
    pub markers: bool,
    pub series: Vec<Line>,
}

#[derive(Serialize)]
struct Data<'a> {
    series: Vec<SeriesData<'a>>,
}

#[derive(Serialize)]
struct SeriesData<'a> {
    name: &'a str,
    points: Vec<(f64, f64, String, String)>,
}

pub fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

pub fn dash(i: usize) -> &'static str {
    DASHES[i % DASHES.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `0%`, `90%`, `99%`, `99.9%`, ... for `nines` nines.
pub fn percentile_tick(nines: u32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

/// The percentile at x = log10(1/(1-p)), with as many decimals as the
/// tail needs to be told apart: `99.902%` at x = 3. The axis ends at five
/// nines, where everything beyond (the maximum included) is drawn, so
/// there it reads `≥ 99.999%`.
pub fn percentile_text(x: f64) -> String {
    if x >= PERCENTILE_NINES_MAX {
        return format!("≥ {}", percentile_tick(PERCENTILE_NINES_MAX as u32));
    }
    let q = 1.0 - 10f64.powf(-x);
    let decimals = (x.floor().max(1.0) as usize).min(6);
    format!("{:.*}%", decimals, q * 100.0)
}

/// A figure's value with three significant decimals at most.
pub fn value_text(v: f64, unit: &str) -> String {
    let body = if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if unit.is_empty() {
        body
    } else {
        format!("{body} {unit}")
    }
}

/// A tick's label with the decimals its step needs: `0`, `5`, `10`, or
/// `0.2`, `0.4`.
fn tick_text(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n`
/// ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The axis ranges: x from 0 (percentile: 0 to five nines), y from 0 to
/// a nice value above the largest y.
fn ranges(p: &Plot) -> ((f64, f64), (f64, f64), f64, f64) {
    let all = p.series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    let mut x_min = f64::INFINITY;
    for &(x, y) in all {
        if x.is_finite() && y.is_finite() {
            x_max = x_max.max(x);
            x_min = x_min.min(x);
            y_max = y_max.max(y);
        }
    }
    let x_min = if p.x_axis == XAxis::Percentile || !x_min.is_finite() {
        0.0
    } else {
        x_min.min(0.0)
    };
    let x_max = match p.x_axis {
        XAxis::Percentile => PERCENTILE_NINES_MAX,
        XAxis::Linear(_) if x_max <= x_min => x_min + 1.0,
        XAxis::Linear(_) => x_max * 1.03,
    };
    let y_max = if y_max > 0.0 { y_max * 1.08 } else { 1.0 };
    let y_step = nice_step(y_max, 6.0);
    let y_max = (y_max / y_step).ceil() * y_step;
    let x_step = match p.x_axis {
        XAxis::Percentile => 1.0,
        XAxis::Linear(_) => nice_step(x_max - x_min, 8.0),
    };
    ((x_min, x_max), (0.0, y_max), x_step, y_step)
}

/// The figure as HTML (SVG, legend, hover box and its data).
pub fn render(p: &Plot) -> String {
    let ((x0, x1), (y0, y1), x_step, y_step) = ranges(p);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x.clamp(x0, x1) - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y.clamp(y0, y1) - y0) / (y1 - y0) * ph;
    let mut h = String::new();
    let _ = write!(
        h,
        "<figure class=\"plot\" id=\"{}\"><figcaption>{}</figcaption><div class=\"plot-body\">\
<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">\
<rect class=\"area\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>",
        esc(&p.id),
        esc(&p.title)
    );
    axes(&mut h, p, (x0, x1, x_step), (y0, y1, y_step), &sx, &sy);
    let mut data = Data { series: Vec::new() };
    for (i, s) in p.series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| ((sx(x) * 10.0).round() / 10.0, (sy(y) * 10.0).round() / 10.0))
            .collect();
        let _ = write!(h, "<g class=\"series\" data-i=\"{i}\">");
        if p.markers {
            for (x, y) in &pts {
                let _ = write!(
                    h,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"{}\"/>",
                    colour(s.colour)
                );
            }
        } else {
            let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x},{y}")).collect();
            let _ = write!(
                h,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" points=\"{}\"/>",
                colour(s.colour),
                dash(s.dash),
                coords.join(" ")
            );
        }
        h.push_str("</g>");
        data.series.push(SeriesData {
            name: &s.name,
            points: s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .zip(&pts)
                .map(|(&(x, y), &(px, py))| (px, py, x_text(p.x_axis, x), value_text(y, &p.y_unit)))
                .collect(),
        });
    }
    h.push_str("<circle class=\"hover-dot\" r=\"5\" fill=\"none\" stroke=\"#000\" stroke-width=\"2\" visibility=\"hidden\"/></svg><ul class=\"legend\">");
    for (i, s) in p.series.iter().enumerate() {
        let _ = write!(
            h,
            "<li data-i=\"{i}\" title=\"click to hide or show\"><svg width=\"34\" height=\"12\">{}</svg>{}</li>",
            swatch(p.markers, s),
            esc(&s.name)
        );
    }
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{\"series\":[]}".into());
    let _ = write!(
        h,
        "</ul></div><div class=\"tip\" hidden></div><script type=\"application/json\" class=\"plot-data\">{}</script></figure>",
        json.replace("</", "<\\/")
    );
    h
}

fn x_text(axis: XAxis, x: f64) -> String {
    match axis {
        XAxis::Percentile => percentile_text(x),
        XAxis::Linear(unit) => value_text(x, unit),
    }
}

fn swatch(markers: bool, s: &Line) -> String {
    if markers {
        format!(
            "<circle cx=\"17\" cy=\"6\" r=\"5\" fill=\"{}\"/>",
            colour(s.colour)
        )
    } else {
        format!(
            "<line x1=\"1\" y1=\"6\" x2=\"33\" y2=\"6\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/>",
            colour(s.colour),
            dash(s.dash)
        )
    }
}

/// Grid lines, tick labels and axis titles.
fn axes(
    h: &mut String,
    p: &Plot,
    (x0, x1, xs): (f64, f64, f64),
    (y0, y1, ys): (f64, f64, f64),
    sx: &dyn Fn(f64) -> f64,
    sy: &dyn Fn(f64) -> f64,
) {
    let mut y = y0;
    while y <= y1 + ys * 1e-6 {
        let py = sy(y);
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#e4e4e4\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            tick_text(y, ys)
        );
        y += ys;
    }
    let mut x = (x0 / xs).ceil() * xs;
    while x <= x1 + xs * 1e-6 {
        let px = sx(x);
        let label = match p.x_axis {
            XAxis::Percentile => percentile_tick(x.round() as u32),
            XAxis::Linear(_) => tick_text(x, xs),
        };
        let _ = write!(
            h,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#e4e4e4\"/>\
<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0,
            esc(&label)
        );
        x += xs;
    }
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\
<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">{}</text>",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 10.0,
        esc(&p.x_label),
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        esc(&p.y_label)
    );
}

/// Page styles for the figures.
pub const STYLE: &str = "figure.plot{margin:1.5em 0;position:relative}\
figure.plot figcaption{font-weight:bold;margin-bottom:.3em}\
.plot-body{display:flex;align-items:flex-start;gap:12px}\
.plot-body>svg{flex:none;max-width:100%;height:auto;font-family:sans-serif}\
ul.legend{list-style:none;margin:0;padding:0;font-size:12px;max-height:420px;overflow-y:auto;min-width:12em}\
ul.legend li{cursor:pointer;white-space:nowrap;padding:1px 0;user-select:none}\
ul.legend li svg{vertical-align:middle;margin-right:4px}\
ul.legend li.off{opacity:.35;text-decoration:line-through}\
.tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #555;padding:3px 6px;font-size:12px;white-space:nowrap;z-index:2}";

/// Hover and legend behaviour for every `figure.plot` on the page.
pub const SCRIPT: &str = r#"(function () {
  "use strict";
  function setup(fig) {
    var data = JSON.parse(fig.querySelector("script.plot-data").textContent);
    var svg = fig.querySelector(".plot-body > svg");
    var tip = fig.querySelector(".tip");
    var dot = svg.querySelector(".hover-dot");
    var hidden = {};
    fig.querySelectorAll("ul.legend li").forEach(function (li) {
      li.addEventListener("click", function () {
        var i = li.getAttribute("data-i");
        hidden[i] = !hidden[i];
        li.classList.toggle("off", hidden[i]);
        svg.querySelector('g.series[data-i="' + i + '"]').style.display = hidden[i] ? "none" : "";
        hide();
      });
    });
    function hide() {
      tip.hidden = true;
      dot.setAttribute("visibility", "hidden");
    }
    svg.addEventListener("mouseleave", hide);
    svg.addEventListener("mousemove", function (ev) {
      var m = svg.getScreenCTM();
      if (!m) { return; }
      var p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
      var best = null, bestD = 400;
      data.series.forEach(function (s, i) {
        if (hidden[i]) { return; }
        s.points.forEach(function (q) {
          var dx = q[0] - p.x, dy = q[1] - p.y, d = dx * dx + dy * dy;
          if (d < bestD) { bestD = d; best = [s, q]; }
        });
      });
      if (!best) { hide(); return; }
      dot.setAttribute("cx", best[1][0]);
      dot.setAttribute("cy", best[1][1]);
      dot.setAttribute("visibility", "visible");
      tip.textContent = best[0].name + ": " + best[1][2] + ", " + best[1][3];
      var box = fig.getBoundingClientRect();
      tip.style.left = (ev.clientX - box.left + 14) + "px";
      tip.style.top = (ev.clientY - box.top + 14) + "px";
      tip.hidden = false;
    });
  }
  document.querySelectorAll("figure.plot").forEach(setup);
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn plot() -> Plot {
        Plot {
            id: "p".into(),
            title: "t <1>".into(),
            x_label: "percentile".into(),
            y_label: "ms".into(),
            x_axis: XAxis::Percentile,
            y_unit: "ms".into(),
            markers: false,
            series: vec![Line {
                name: "a</script>".into(),
                colour: 0,
                dash: 1,
                points: vec![(0.0, 1.0), (3.0, 2.5), (f64::NAN, 3.0)],
            }],
        }
    }

    #[test]
    fn figures_carry_their_data_and_escape_text() {
        let h = render(&plot());
        assert!(h.contains("t &lt;1&gt;"), "{h}");
        assert!(!h.contains("a</script>"), "{h}");
        assert!(h.contains("stroke-dasharray=\"9 5\""), "{h}");
        let start = h.find("class=\"plot-data\">").unwrap() + "class=\"plot-data\">".len();
        let end = start + h[start..].find("</script>").unwrap();
        let v: serde_json::Value = serde_json::from_str(&h[start..end]).unwrap();
        let pts = v["series"][0]["points"].as_array().unwrap();
        assert_eq!(pts.len(), 2, "the NaN point is left out");
        assert_eq!(pts[1][2], "99.900%");
        assert_eq!(pts[1][3], "2.500 ms");
        // Pixel positions lie inside the plot area.
        for p in pts {
            let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
        }
    }

    #[test]
    fn percentile_texts_and_ticks() {
        assert_eq!(percentile_tick(0), "0%");
        assert_eq!(percentile_tick(4), "99.99%");
        assert_eq!(percentile_text(0.0), "0.0%");
        assert_eq!(percentile_text(2.0), "99.00%");
        assert_eq!(percentile_text(5.0), "≥ 99.999%");
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.7, 6.0), 0.2);
        assert_eq!(tick_text(15.0, 5.0), "15");
        assert_eq!(tick_text(0.4, 0.2), "0.4");
        assert_eq!(tick_text(2000.0, 500.0), "2000");
    }
}
