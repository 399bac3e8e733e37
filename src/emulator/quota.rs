//! The emulator's quota model: how Bedrock admits and charges one model's requests.
//!
//! Bedrock reserves `input + maxTokens` from the tokens-per-minute quota when a request starts and settles the
//! charge to `input + output × burndown` when it ends, giving back the difference. A request whose reservation
//! does not fit is throttled at once. An optional requests-per-minute quota and an optional tokens-per-day quota
//! apply alongside. Each quota is a bucket holding one window's worth (a minute, or a day) that refills
//! continuously.
//!
//! This module is pure: time comes in as an argument, so tests drive it with made-up instants. It is written
//! apart from the runner's `budget/` on purpose (DESIGN.md): a mistake in one shows up as a disagreement with
//! the other instead of cancelling out.

use std::time::{Duration, Instant};

use super::config::{ModelProfile, Neighbour};

/// A bucket of quota units that refills continuously to one window's worth.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    level: f64,
    per_second: f64,
    last: Instant,
    created: Instant,
    neighbour: Option<Neighbour>,
}

impl Bucket {
    /// A bucket of `per_window` units that refills over `window`, starting `fill` full (0 to 1).
    pub fn new(per_window: u64, window: Duration, fill: f64, now: Instant) -> Self {
        let capacity = per_window as f64;
        Bucket {
            capacity,
            level: capacity * fill.clamp(0.0, 1.0),
            per_second: capacity / window.as_secs_f64(),
            last: now,
            created: now,
            neighbour: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        // Instants from concurrent requests can arrive slightly out of order; never refill backwards.
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            // A neighbour takes its share of the refill (sampled at the end of the step; steps are short).
            let taken = self.neighbour.map_or(0.0, |n| {
                n.share(now.duration_since(self.created).as_secs_f64())
            });
            self.level =
                (self.level + elapsed * self.per_second * (1.0 - taken)).min(self.capacity);
            self.last = now;
        }
    }

    /// Units available at `now` (negative while the bucket is in debt from a charge above its reservation).
    pub fn level(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.level
    }

    /// The bucket's size: one window's worth of units.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    fn fits(&mut self, units: u64, now: Instant) -> bool {
        self.level(now) >= units as f64
    }

    fn take(&mut self, units: u64) {
        self.level -= units as f64;
    }

    /// Gives back `units` (a settlement below the reservation), or takes more when negative.
    fn adjust(&mut self, units: i64) {
        self.level = (self.level + units as f64).min(self.capacity);
    }
}

/// Which quota turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Tokens per day.
    TokensPerDay,
}

impl Throttle {
    /// The message Bedrock sends with the `ThrottlingException`.
    pub fn message(self) -> &'static str {
        match self {
            Throttle::Requests => "Too many requests, please wait before trying again.",
            Throttle::Tokens => "Too many tokens, please wait before trying again.",
            Throttle::TokensPerDay => "Too many tokens per day, please wait before trying again.",
        }
    }
}

/// Tokens held for an admitted request until it settles.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    tokens: u64,
}

impl Reservation {
    /// The tokens reserved at admission.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// One model's quotas.
#[derive(Debug, Clone)]
pub struct Quota {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    tpd: Option<Bucket>,
    burndown: u64,
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the profile's day lasts.
fn day(profile: &ModelProfile) -> Duration {
    profile.day_secs.map_or(DAY, Duration::from_secs_f64)
}

impl Quota {
    /// Buckets for the quotas the profile sets, filled as far as its `initial-fill` says.
    pub fn new(profile: &ModelProfile, now: Instant) -> Self {
        let fill = profile.initial_fill;
        let bucket = |n: u64, window: Duration| Bucket {
            neighbour: profile.neighbour,
            ..Bucket::new(n, window, fill, now)
        };
        Quota {
            rpm: profile.rpm.map(|n| bucket(n, MINUTE)),
            tpm: profile.tpm.map(|n| bucket(n, MINUTE)),
            tpd: profile.tpd.map(|n| bucket(n, day(profile))),
            burndown: u64::from(profile.burndown),
        }
    }

    /// Admits a request that reserves `input_tokens + max_tokens`, or names the quota that turns it away.
    /// Nothing is taken from any bucket unless every bucket has room.
    pub fn admit(
        &mut self,
        input_tokens: u64,
        max_tokens: u64,
        now: Instant,
    ) -> Result<Reservation, Throttle> {
        let tokens = input_tokens + max_tokens;
        let checks = [
            (&mut self.rpm, 1, Throttle::Requests),
            (&mut self.tpm, tokens, Throttle::Tokens),
            (&mut self.tpd, tokens, Throttle::TokensPerDay),
        ];
        for (bucket, units, throttle) in checks {
            if let Some(b) = bucket
                && !b.fits(units, now)
            {
                return Err(throttle);
            }
        }
        if let Some(rpm) = &mut self.rpm {
            rpm.take(1);
        }
        for bucket in [&mut self.tpm, &mut self.tpd].into_iter().flatten() {
            bucket.take(tokens);
        }
        Ok(Reservation { tokens })
    }

    /// The tokens a finished request is charged: `input + output × burndown`.
    pub fn charge(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        input_tokens + output_tokens * self.burndown
    }

    /// Settles a finished request to its charge, giving back the rest of the reservation (or taking more when
    /// the charge is above it). Returns the charge.
    pub fn settle(
        &mut self,
        reservation: Reservation,
        input_tokens: u64,
        output_tokens: u64,
        now: Instant,
    ) -> u64 {
        let charged = self.charge(input_tokens, output_tokens);
        let refund = reservation.tokens as i64 - charged as i64;
        for bucket in [&mut self.tpm, &mut self.tpd].into_iter().flatten() {
            bucket.refill(now);
            bucket.adjust(refund);
        }
        charged
    }

    /// Gives a whole reservation back: the request failed before the model produced anything.
    pub fn release(&mut self, reservation: Reservation, now: Instant) {
        for bucket in [&mut self.tpm, &mut self.tpd].into_iter().flatten() {
            bucket.refill(now);
            bucket.adjust(reservation.tokens as i64);
        }
    }

    /// Makes each bucket the size `profile` gives it now (after an approved quota increase or a scheduled
    /// change), holding what it held (no more than its new size): a change moves the refill rate and the
    /// ceiling, it does not hand out or take away units already there.
    pub fn conform(&mut self, profile: &ModelProfile, now: Instant) {
        let resized = |bucket: &mut Option<Bucket>, want: Option<u64>, window: Duration| match (
            bucket.as_mut(),
            want,
        ) {
            (Some(b), Some(n)) if b.capacity != n as f64 => {
                let level = b.level(now);
                *b = Bucket {
                    neighbour: b.neighbour,
                    created: b.created,
                    ..Bucket::new(n, window, 0.0, now)
                };
                b.level = level.min(b.capacity);
            }
            (None, Some(n)) => *bucket = Some(Bucket::new(n, window, 1.0, now)),
            _ => {}
        };
        resized(&mut self.rpm, profile.rpm, MINUTE);
        resized(&mut self.tpm, profile.tpm, MINUTE);
        resized(&mut self.tpd, profile.tpd, day(profile));
    }

    /// Tokens available in the per-minute bucket at `now`, if there is one.
    pub fn tpm_level(&mut self, now: Instant) -> Option<f64> {
        self.tpm.as_mut().map(|b| b.level(now))
    }

    /// Requests available in the per-minute bucket at `now`, if there is one.
    pub fn rpm_level(&mut self, now: Instant) -> Option<f64> {
        self.rpm.as_mut().map(|b| b.level(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(
        rpm: Option<u64>,
        tpm: Option<u64>,
        tpd: Option<u64>,
        burndown: u32,
    ) -> ModelProfile {
        ModelProfile {
            rpm,
            tpm,
            tpd,
            burndown,
            ..ModelProfile::default()
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn reservation_is_input_plus_max_tokens() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(1000), None, 1), t0);
        let r = q.admit(100, 400, t0).unwrap();
        assert_eq!(r.tokens(), 500);
        assert_eq!(q.tpm_level(t0), Some(500.0));
        // A second identical request fits exactly; a third does not.
        let r2 = q.admit(100, 400, t0).unwrap();
        assert_eq!(q.admit(100, 400, t0), Err(Throttle::Tokens));
        q.release(r, t0);
        q.release(r2, t0);
        assert_eq!(q.tpm_level(t0), Some(1000.0));
    }

    #[test]
    fn settlement_gives_back_the_unused_reservation() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(1000), None, 1), t0);
        let r = q.admit(100, 800, t0).unwrap();
        assert_eq!(q.admit(100, 800, t0), Err(Throttle::Tokens));
        let charged = q.settle(r, 100, 50, t0);
        assert_eq!(charged, 150);
        assert_eq!(q.tpm_level(t0), Some(850.0));
        assert!(q.admit(100, 700, t0).is_ok());
    }

    #[test]
    fn a_changed_quota_keeps_what_the_bucket_held_and_refills_at_the_new_rate() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(Some(60), None, None, 1), t0);
        for _ in 0..50 {
            let _ = q.admit(1, 0, t0).unwrap();
        }
        assert_eq!(q.rpm_level(t0), Some(10.0));
        // Raised: the 10 held stay 10, and it refills 120 a minute from then on.
        q.conform(&profile(Some(120), None, None, 1), t0);
        assert_eq!(q.rpm_level(t0), Some(10.0));
        assert_eq!(q.rpm_level(t0 + secs(1.0)), Some(12.0));
        // Cut below what it holds: it holds its new size.
        q.conform(&profile(Some(5), None, None, 1), t0 + secs(1.0));
        assert_eq!(q.rpm_level(t0 + secs(1.0)), Some(5.0));
    }

    #[test]
    fn burndown_multiplies_output_tokens() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(10_000), None, 5), t0);
        let r = q.admit(100, 1000, t0).unwrap();
        assert_eq!(q.settle(r, 100, 200, t0), 100 + 200 * 5);
        assert_eq!(q.tpm_level(t0), Some(10_000.0 - 1100.0));
    }

    #[test]
    fn a_charge_above_the_reservation_leaves_the_bucket_in_debt() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(1000), None, 5), t0);
        let r = q.admit(0, 1000, t0).unwrap();
        // 1000 reserved, 5 × 1000 charged: the bucket owes 4000 and refills at 1000 per minute.
        assert_eq!(q.settle(r, 0, 1000, t0), 5000);
        assert_eq!(q.tpm_level(t0), Some(-4000.0));
        assert_eq!(q.admit(1, 0, t0 + secs(239.0)), Err(Throttle::Tokens));
        assert!(q.admit(1, 0, t0 + secs(241.0)).is_ok());
    }

    #[test]
    fn refill_is_continuous_and_capped_at_one_minute() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(6000), None, 1), t0);
        let r = q.admit(0, 6000, t0).unwrap();
        q.settle(r, 0, 6000, t0);
        assert_eq!(q.tpm_level(t0), Some(0.0));
        // 6000 per minute is 100 per second.
        let level = q.tpm_level(t0 + secs(1.5)).unwrap();
        assert!((level - 150.0).abs() < 1e-6, "{level}");
        assert_eq!(q.tpm_level(t0 + secs(600.0)), Some(6000.0));
    }

    #[test]
    fn reservation_larger_than_the_quota_never_fits() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(1000), None, 1), t0);
        for minutes in [0.0, 1.0, 10.0, 1000.0] {
            assert_eq!(
                q.admit(1, 1000, t0 + secs(minutes * 60.0)),
                Err(Throttle::Tokens)
            );
        }
    }

    #[test]
    fn rpm_counts_requests_and_is_checked_first() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(Some(2), Some(100), None, 1), t0);
        let a = q.admit(10, 10, t0).unwrap();
        let b = q.admit(10, 10, t0).unwrap();
        assert_eq!(q.admit(10, 10, t0), Err(Throttle::Requests));
        // Settling gives tokens back but not requests.
        q.settle(a, 10, 1, t0);
        q.settle(b, 10, 1, t0);
        assert_eq!(q.admit(10, 10, t0), Err(Throttle::Requests));
        // Two per minute: one request comes back after 30 s.
        assert!(q.admit(10, 10, t0 + secs(30.5)).is_ok());
    }

    #[test]
    fn a_throttled_request_takes_nothing() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(Some(10), Some(100), None, 1), t0);
        assert_eq!(q.admit(50, 100, t0), Err(Throttle::Tokens));
        assert_eq!(q.rpm_level(t0), Some(10.0));
        assert_eq!(q.tpm_level(t0), Some(100.0));
    }

    #[test]
    fn tokens_per_day_throttle_after_the_minute_quota_allows() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, Some(1000), Some(1500), 1), t0);
        let r = q.admit(0, 1000, t0).unwrap();
        q.settle(r, 0, 1000, t0);
        // The minute bucket refills in a minute; the day bucket has only 500 left.
        assert_eq!(
            q.admit(0, 1000, t0 + secs(61.0)),
            Err(Throttle::TokensPerDay)
        );
        assert!(q.admit(0, 500, t0 + secs(61.0)).is_ok());
    }

    #[test]
    fn initial_fill_starts_the_buckets_part_used() {
        let t0 = Instant::now();
        let p = ModelProfile {
            rpm: Some(600),
            initial_fill: 0.1,
            ..ModelProfile::default()
        };
        let mut q = Quota::new(&p, t0);
        assert_eq!(q.rpm_level(t0), Some(60.0));
    }

    #[test]
    fn a_neighbour_takes_its_share_of_the_refill() {
        let t0 = Instant::now();
        let p = ModelProfile {
            rpm: Some(600),
            initial_fill: 0.0,
            neighbour: Some(Neighbour {
                low: 0.25,
                high: 0.75,
                period_s: 20.0,
            }),
            ..ModelProfile::default()
        };
        let mut q = Quota::new(&p, t0);
        // Busy half: 10 a second, of which the neighbour takes 75 %.
        let mut now = t0;
        for _ in 0..40 {
            now += Duration::from_millis(100);
            q.rpm_level(now);
        }
        assert!((q.rpm_level(now).unwrap() - 10.0).abs() < 1e-6);
        // Six more busy seconds (2.5 a second), then four quiet ones (7.5 a second).
        for _ in 0..100 {
            now += Duration::from_millis(100);
            q.rpm_level(now);
        }
        assert!(
            (q.rpm_level(now).unwrap() - (10.0 + 15.0 + 30.0)).abs() < 1.0,
            "{:?}",
            q.rpm_level(now)
        );
    }

    #[test]
    fn no_quota_admits_everything() {
        let t0 = Instant::now();
        let mut q = Quota::new(&profile(None, None, None, 1), t0);
        for _ in 0..10_000 {
            let r = q.admit(100_000, 100_000, t0).unwrap();
            q.settle(r, 100_000, 1, t0);
        }
    }

    #[test]
    fn admitted_charge_over_a_window_matches_the_quota() {
        // Greedy client: one request every 10 ms for 5 minutes, each reserving 500 and charged 100.
        // What is charged in total can exceed neither a full bucket plus the refill over the run (a reservation's
        // worth of slack aside), nor fall far below it.
        let t0 = Instant::now();
        let tpm = 30_000u64;
        let mut q = Quota::new(&profile(None, Some(tpm), None, 1), t0);
        let mut charged = 0;
        let steps = 30_000;
        for i in 0..steps {
            let now = t0 + Duration::from_millis(10 * i);
            if let Ok(r) = q.admit(50, 450, now) {
                charged += q.settle(r, 50, 50, now);
            }
        }
        let elapsed_min = (steps * 10) as f64 / 60_000.0;
        let bound = tpm as f64 * (1.0 + elapsed_min);
        assert!(charged as f64 <= bound, "{charged} > {bound}");
        // The bucket ends the run holding less than one reservation plus one step's refill.
        assert!(
            charged as f64 >= bound - 505.0,
            "{charged} well below {bound}"
        );
    }
}
