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
