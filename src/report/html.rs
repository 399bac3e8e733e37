//! `batchrun report --html`: one self-contained page (no scripts, no external files) with the text report and
//! charts drawn as inline SVG from the per-second series: throughput against the quota, the tokens reserved
//! against those charged, concurrency and the rate multiplier, and throttles over time. The markup is
//! well-formed XML, so any XML parser can check it.

use std::fmt::Write;

use super::diagnose::{Diagnosis, ReportFacts};

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

fn label(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
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
    let x_max = x_max.max(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="{LEFT}" y="16" font-size="13" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 3.0,
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
        x_max
    );
    let bar_w = (plot_w / x_max).max(1.0) / lines.len().max(1) as f64;
    for (k, line) in lines.iter().enumerate() {
        if bars {
            for &(px, py) in line.points.iter().filter(|p| p.1 > 0.0) {
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"##,
                    x(px) + k as f64 * bar_w,
                    y(py),
                    bar_w,
                    TOP + plot_h - y(py),
                    line.color
                );
            }
        } else if !line.points.is_empty() {
            let path: Vec<String> = line
                .points
                .iter()
                .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
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
    let first = f.series.first().map_or(0, |s| s.at_s);
    let xs: Vec<f64> = f.series.iter().map(|s| (s.at_s - first) as f64).collect();
    let x_max = xs.last().copied().unwrap_or(1.0);
    let pts = |v: &dyn Fn(&crate::checkpoint::SeriesRow) -> f64| -> Vec<(f64, f64)> {
        f.series.iter().zip(&xs).map(|(s, x)| (*x, v(s))).collect()
    };
    let opt_pts = |v: &dyn Fn(&crate::checkpoint::SeriesRow) -> Option<f64>| -> Vec<(f64, f64)> {
        f.series
            .iter()
            .zip(&xs)
            .filter_map(|(s, x)| v(s).map(|y| (*x, y)))
            .collect()
    };
    let last = f.runs.last();
    let budget_rpm = last.and_then(|r| r.budget_rpm).map(|b| b as f64);
    let budget_tpm = last.and_then(|r| r.budget_tpm).map(|b| b as f64);
    let flat = |v: Option<f64>| match v {
        Some(b) if !xs.is_empty() => vec![(0.0, b), (x_max, b)],
        _ => Vec::new(),
    };
    let mut charts = Vec::new();
    charts.push(chart(
        "Requests per minute against the RPM quota",
        "req/min",
        &[
            Line {
                name: "admitted (5 s window)",
                color: "#1f77b4",
                dashed: false,
                points: per_minute(&pts(&|s| s.admitted as f64), 5),
            },
            Line {
                name: "rate in force",
                color: "#2ca02c",
                dashed: false,
                points: opt_pts(&|s| s.rpm_rate),
            },
            Line {
                name: "configured budget",
                color: "#7f7f7f",
                dashed: true,
                points: flat(budget_rpm),
            },
        ],
        false,
        x_max,
    ));
    charts.push(chart(
        "Tokens per minute: reserved (input + max-tokens) and charged, against the TPM quota",
        "tokens/min",
        &[
            Line {
                name: "reserved (5 s window)",
                color: "#ff7f0e",
                dashed: false,
                points: per_minute(&pts(&|s| s.reserved_tokens as f64), 5),
            },
            Line {
                name: "charged (5 s window)",
                color: "#1f77b4",
                dashed: false,
                points: per_minute(&pts(&|s| s.settled_tokens as f64), 5),
            },
            Line {
                name: "rate in force",
                color: "#2ca02c",
                dashed: false,
                points: opt_pts(&|s| s.tpm_rate),
            },
            Line {
                name: "configured budget",
                color: "#7f7f7f",
                dashed: true,
                points: flat(budget_tpm),
            },
        ],
        false,
        x_max,
    ));
    charts.push(chart(
        "Concurrency: requests in flight and the cap",
        "requests",
        &[
            Line {
                name: "most in flight",
                color: "#1f77b4",
                dashed: false,
                points: pts(&|s| s.in_flight as f64),
            },
            Line {
                name: "cap",
                color: "#9467bd",
                dashed: true,
                points: pts(&|s| s.concurrency_cap as f64),
            },
        ],
        false,
        x_max,
    ));
    let multiplier = |rate: fn(&crate::checkpoint::SeriesRow) -> Option<f64>,
                      budget: Option<f64>| {
        budget.map_or(Vec::new(), |b| {
            opt_pts(&|s| rate(s).map(|r| r / b.max(1.0)))
        })
    };
    charts.push(chart(
        "Rate multiplier: the rate in force over the configured budget",
        "×",
        &[
            Line {
                name: "RPM",
                color: "#1f77b4",
                dashed: false,
                points: multiplier(|s| s.rpm_rate, budget_rpm),
            },
            Line {
                name: "TPM",
                color: "#ff7f0e",
                dashed: false,
                points: multiplier(|s| s.tpm_rate, budget_tpm),
            },
        ],
        false,
        x_max,
    ));
    charts.push(chart(
        "Throttles per second",
        "throttles",
        &[
            Line {
                name: "RPM",
                color: "#d62728",
                dashed: false,
                points: pts(&|s| s.throttled_rpm as f64),
            },
            Line {
                name: "TPM",
                color: "#ff7f0e",
                dashed: false,
                points: pts(&|s| s.throttled_tpm as f64),
            },
        ],
        true,
        x_max,
    ));
    let recommendations: String = d
        .recommendations
        .iter()
        .map(|r| format!("<li>{}</li>", escape(r)))
        .collect();
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
        job = escape(&f.job),
        verdict = escape(&d.verdict),
        recommendations = if recommendations.is_empty() {
            "<li>none</li>".to_string()
        } else {
            recommendations
        },
        charts = charts.join("\n"),
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
