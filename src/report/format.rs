//! Numbers and times as the reports write them, shared by every report so that they read alike.

use std::time::Duration;

/// `1.2s`, `3m04s`, `2h05m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// `12,345`.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$1.23`, `$0.0042` (four places below a cent), `1.23 EUR`.
pub fn money(amount: f64, currency: &str) -> String {
    let places = if amount < 0.01 { 4 } else { 2 };
    if currency == "USD" {
        format!("${amount:.places$}")
    } else {
        format!("{amount:.places$} {currency}")
    }
}

/// `950`, `12.3k`, `45k`, `1.2M`: a number in little room, switching unit where the rounded figure would.
pub fn compact(v: f64) -> String {
    if v >= 999_500.0 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 9_999.5 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 999.5 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A round number at or above `n`: 1, 2 or 5 times a power of ten, or a multiple of 64 below 1,024.
pub fn round_up(n: f64) -> u64 {
    let n = n.max(1.0).ceil() as u64;
    if n <= 1024 {
        return n.div_ceil(64) * 64;
    }
    let mut p = 1u64;
    while p * 10 <= n {
        p *= 10;
    }
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= n)
        .unwrap_or(10 * p)
}
