//! Backoff between attempts: full jitter (a uniform draw below an exponentially growing ceiling), as the AWS
//! SDKs do, so that many throttled workers do not come back in step.

use std::time::Duration;

/// The ceiling for retry number `retry` (0 for the first retry): `base × 2^retry`, at most `cap`.
pub fn ceiling(retry: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(30));
    base.saturating_mul(factor).min(cap)
}

/// A wait drawn uniformly in `[0, ceiling(retry))`.
pub fn backoff(retry: u32, base: Duration, cap: Duration) -> Duration {
    ceiling(retry, base, cap).mul_f64(rand::random_range(0.0..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let got: Vec<_> = (0..7).map(|r| ceiling(r, base, cap).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(ceiling(u32::MAX, base, cap), cap);
        for r in 0..10 {
            assert!(backoff(r, base, cap) < ceiling(r, base, cap));
        }
    }
}
