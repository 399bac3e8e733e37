//! `batchrun report --html`: one self-contained page (no scripts, no external files) with the text report and
//! charts drawn as inline SVG from the per-second series: throughput against the quota, the tokens reserved
//! against those charged, concurrency and the rate multiplier, and throttles over time. The markup is
//! well-formed XML, so any XML parser can check it.

use std::fmt::Write;

use super::diagnose::{Diagnosis, ReportFacts};
use super::format::compact;
use crate::budget::Second;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 26.0;

/// One line of a chart.
struct Line {
    name: &'static str,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn solid(name: &'static str, color: &'static str, points: Vec<(f64, f64)>) -> Line {
        Line {
            name,
            color,
            dashed: false,
            points,
        }
    }

    fn dashed(name: &'static str, color: &'static str, points: Vec<(f64, f64)>) -> Line {
        Line {
            dashed: true,
            ..Line::solid(name, color, points)
        }
    }
}

/// `&`, `<`, `>` and quotes escaped for text and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// An axis label: ticks are round numbers, so a fraction is shown only below one unit of the scale.
fn label(v: f64) -> String {
    if v < 999.5 && v.fract() != 0.0 {
        format!("{v:.2}")
    } else {
        compact(v)
    }
}

/// The scales of one chart: data to SVG coordinates.
struct Plot {
    x_max: f64,
    y_max: f64,
}

impl Plot {
    const W: f64 = WIDTH - LEFT - RIGHT;
    const H: f64 = HEIGHT - TOP - BOTTOM;

    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * Self::W
    }

    fn y(&self, v: f64) -> f64 {
        TOP + Self::H - v / self.y_max * Self::H
    }
}

/// A line chart (or bars) with a time axis in seconds.
fn chart(title: &str, unit: &str, lines: &[Line], bars: bool, x_max: f64) -> String {
    let y_max = nice_max(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let p = Plot {
        x_max: x_max.max(1.0),
        y_max,
    };
    let mut s = frame(title, unit, &p);
    let bar_w = (Plot::W / p.x_max).max(1.0) / lines.len().max(1) as f64;
    for (k, line) in lines.iter().enumerate() {
        if bars {
            for &(px, py) in line.points.iter().filter(|p| p.1 > 0.0) {
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"##,
                    p.x(px) + k as f64 * bar_w,
                    p.y(py),
                    bar_w,
                    TOP + Plot::H - p.y(py),
                    line.color
                );
            }
        } else if !line.points.is_empty() {
            let path: Vec<String> = line
                .points
                .iter()
                .map(|&(px, py)| format!("{:.1},{:.1}", p.x(px), p.y(py)))
                .collect();
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{}" stroke-width="1.6"{} points="{}"/>"##,
                line.color,
                if line.dashed {
                    r#" stroke-dasharray="5,4""#
                } else {
                    ""
                },
                path.join(" ")
            );
        }
        let lx = LEFT + 8.0 + 150.0 * k as f64;
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="3" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
            TOP + 2.0,
            line.color,
            lx + 14.0,
            TOP + 6.0,
            escape(line.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// An open `<svg>` with the title, the grid and the axis labels.
fn frame(title: &str, unit: &str, p: &Plot) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="{LEFT}" y="16" font-size="13" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    for i in 0..=4 {
        let v = p.y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            p.y(v),
            p.y(v),
            LEFT - 6.0,
            p.y(v) + 3.0,
            label(v)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text><text x="{LEFT}" y="{:.1}" font-size="10">0 s</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{:.0} s</text>"##,
        LEFT - 6.0,
        TOP - 6.0,
        escape(unit),
        HEIGHT - 8.0,
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        p.x_max
    );
    s
}

/// A `window`-second moving sum, scaled to per minute.
fn per_minute(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let scale = 60.0 / window as f64;
    (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let sum: f64 = points[from..=i].iter().map(|p| p.1).sum();
            (points[i].0, sum * scale)
        })
        .collect()
}

/// The page.
pub fn render(f: &ReportFacts, d: &Diagnosis, text: &str) -> String {
    let axis = Axis::of(&f.series);
    let last = f.runs.last();
    let budget_rpm = last.and_then(|r| r.budget_rpm).map(|b| b as f64);
    let budget_tpm = last.and_then(|r| r.budget_tpm).map(|b| b as f64);
    let charts = [
        requests_chart(&axis, budget_rpm),
        tokens_chart(&axis, budget_tpm),
        concurrency_chart(&axis),
        multiplier_chart(&axis, budget_rpm, budget_tpm),
        throttles_chart(&axis),
    ];
    let recommendations: String = d
        .recommendations
        .iter()
        .map(|r| format!("<li>{}</li>", escape(r)))
        .collect();
    page(
        &f.job,
        &d.verdict,
        &recommendations,
        &charts.join("\n"),
        text,
    )
}

/// The series on a time axis: seconds since its first second.
struct Axis<'a> {
    series: &'a [Second],
    xs: Vec<f64>,
    x_max: f64,
}

impl<'a> Axis<'a> {
    fn of(series: &'a [Second]) -> Axis<'a> {
        let first = series.first().map_or(0, |s| s.at_s);
        let xs: Vec<f64> = series.iter().map(|s| (s.at_s - first) as f64).collect();
        let x_max = xs.last().copied().unwrap_or(1.0);
        Axis { series, xs, x_max }
    }

    /// One point a second.
    fn points(&self, v: impl Fn(&Second) -> f64) -> Vec<(f64, f64)> {
        self.series
            .iter()
            .zip(&self.xs)
            .map(|(s, x)| (*x, v(s)))
            .collect()
    }

    /// One point for each second that has a value.
    fn some_points(&self, v: impl Fn(&Second) -> Option<f64>) -> Vec<(f64, f64)> {
        self.series
            .iter()
            .zip(&self.xs)
            .filter_map(|(s, x)| v(s).map(|y| (*x, y)))
            .collect()
    }

    /// A level line across the chart, when there is a level and a series.
    fn level(&self, v: Option<f64>) -> Vec<(f64, f64)> {
        match v {
            Some(b) if !self.xs.is_empty() => vec![(0.0, b), (self.x_max, b)],
            _ => Vec::new(),
        }
    }

    /// A 5-second moving sum of a per-second count, per minute.
    fn per_minute(&self, v: impl Fn(&Second) -> u64) -> Vec<(f64, f64)> {
        per_minute(&self.points(|s| v(s) as f64), 5)
    }
}

fn requests_chart(a: &Axis<'_>, budget_rpm: Option<f64>) -> String {
    let lines = [
        Line::solid(
            "admitted (5 s window)",
            "#1f77b4",
            a.per_minute(|s| s.admitted),
        ),
        Line::solid("rate in force", "#2ca02c", a.some_points(|s| s.rpm_rate)),
        Line::dashed("configured budget", "#7f7f7f", a.level(budget_rpm)),
    ];
    let title = "Requests per minute against the RPM quota";
    chart(title, "req/min", &lines, false, a.x_max)
}

fn tokens_chart(a: &Axis<'_>, budget_tpm: Option<f64>) -> String {
    let lines = [
        Line::solid(
            "reserved (5 s window)",
            "#ff7f0e",
            a.per_minute(|s| s.reserved_tokens),
        ),
        Line::solid(
            "charged (5 s window)",
            "#1f77b4",
            a.per_minute(|s| s.settled_tokens),
        ),
        Line::solid("rate in force", "#2ca02c", a.some_points(|s| s.tpm_rate)),
        Line::dashed("configured budget", "#7f7f7f", a.level(budget_tpm)),
    ];
    let title =
        "Tokens per minute: reserved (input + max-tokens) and charged, against the TPM quota";
    chart(title, "tokens/min", &lines, false, a.x_max)
}

fn concurrency_chart(a: &Axis<'_>) -> String {
    let lines = [
        Line::solid(
            "most in flight",
            "#1f77b4",
            a.points(|s| s.in_flight as f64),
        ),
        Line::dashed("cap", "#9467bd", a.points(|s| s.concurrency_cap as f64)),
    ];
    let title = "Concurrency: requests in flight and the cap";
    chart(title, "requests", &lines, false, a.x_max)
}

fn multiplier_chart(a: &Axis<'_>, budget_rpm: Option<f64>, budget_tpm: Option<f64>) -> String {
    let multiplier = |rate: fn(&Second) -> Option<f64>, budget: Option<f64>| {
        budget.map_or(Vec::new(), |b| {
            a.some_points(|s| rate(s).map(|r| r / b.max(1.0)))
        })
    };
    let lines = [
        Line::solid("RPM", "#1f77b4", multiplier(|s| s.rpm_rate, budget_rpm)),
        Line::solid("TPM", "#ff7f0e", multiplier(|s| s.tpm_rate, budget_tpm)),
    ];
    let title = "Rate multiplier: the rate in force over the configured budget";
    chart(title, "×", &lines, false, a.x_max)
}

fn throttles_chart(a: &Axis<'_>) -> String {
    let lines = [
        Line::solid("RPM", "#d62728", a.points(|s| s.throttled_rpm as f64)),
        Line::solid("TPM", "#ff7f0e", a.points(|s| s.throttled_tpm as f64)),
    ];
    chart("Throttles per second", "throttles", &lines, true, a.x_max)
}

/// The HTML around the charts.
fn page(job: &str, verdict: &str, recommendations: &str, charts: &str, text: &str) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        r##"<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head>
<meta charset="utf-8"/>
<title>batchrun report: {job}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 800px; }}
h1 {{ font-size: 20px; }}
h2 {{ font-size: 15px; margin-top: 28px; }}
pre {{ background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }}
.verdict {{ background: #fff6e0; border-left: 4px solid #e0a000; padding: 10px 12px; }}
svg {{ display: block; margin: 12px 0; border: 1px solid #eee; }}
</style>
</head>
<body>
<h1>batchrun report: job <code>{job}</code></h1>
<p class="verdict"><strong>Diagnosis:</strong> {verdict}</p>
<h2>Recommendations</h2>
<ul>{recommendations}</ul>
<h2>Charts</h2>
{charts}
<h2>Summary</h2>
<pre>{text}</pre>
</body>
</html>
"##,
        job = escape(job),
        verdict = escape(verdict),
        recommendations = if recommendations.is_empty() {
            "<li>none</li>"
        } else {
            recommendations
        },
        text = escape(text)
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(nice_max(73.0), 100.0);
        assert_eq!(nice_max(1100.0), 2000.0);
        assert_eq!(label(25_000.0), "25k");
        let pm = per_minute(&[(0.0, 1.0), (1.0, 1.0), (2.0, 4.0)], 2);
        assert_eq!(pm, vec![(0.0, 30.0), (1.0, 60.0), (2.0, 150.0)]);
    }
}
