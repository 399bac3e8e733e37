//! A refilling bucket of quota units, pure: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// Units that refill continuously to one minute's worth.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    level: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket of `per_minute` units starting at `start_fraction` of full.
    pub fn per_minute(per_minute: u64, start_fraction: f64, now: Instant) -> Self {
        let capacity = per_minute as f64;
        Bucket {
            capacity,
            level: capacity * start_fraction.clamp(0.0, 1.0),
            per_second: capacity / 60.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.level = (self.level + elapsed * self.per_second).min(self.capacity);
            self.last = now;
        }
    }

    /// Units available now; negative while a settlement above the reservation is being paid back.
    pub fn level(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.level
    }

    /// One minute's worth.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// How long until `units` are available: zero if they are now, `None` if they never can be (more than the
    /// bucket holds).
    pub fn wait_for(&mut self, units: u64, now: Instant) -> Option<Duration> {
        let units = units as f64;
        if units > self.capacity {
            return None;
        }
        let deficit = units - self.level(now);
        if deficit <= 0.0 {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_secs_f64(deficit / self.per_second))
        }
    }

    /// Changes the refill rate (and the capacity, one minute's worth) from `now` on.
    pub fn set_rate(&mut self, per_minute: f64, now: Instant) {
        self.refill(now);
        self.capacity = per_minute;
        self.per_second = per_minute / 60.0;
        self.level = self.level.min(self.capacity);
    }

    /// Empties the bucket (keeping a debt if there is one): what a throttle says about Bedrock's.
    pub fn empty(&mut self, now: Instant) {
        self.refill(now);
        self.level = self.level.min(0.0);
    }

    /// Takes `units` (the caller checked they are there).
    pub fn take(&mut self, units: u64) {
        self.level -= units as f64;
    }

    /// Gives back `units`, or takes more when negative; never above capacity.
    pub fn adjust(&mut self, units: i64, now: Instant) {
        self.refill(now);
        self.level = (self.level + units as f64).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A greedy client taking whatever the bucket allows never gets more than a full bucket plus the refill
        /// over any window, whatever the sizes and timing of its requests.
        #[test]
        fn never_admits_more_than_the_budget_in_any_window(
            per_minute in 60u64..100_000,
            start in 0.0f64..1.0,
            steps in proptest::collection::vec((0u64..2_000, 1u64..5_000, 0u64..100), 1..300),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::per_minute(per_minute, start, t0);
            let mut now = t0;
            let mut taken: Vec<(Instant, u64)> = Vec::new();
            for (dt_ms, units, refund_pct) in steps {
                now += Duration::from_millis(dt_ms);
                if b.wait_for(units, now) == Some(Duration::ZERO) {
                    b.take(units);
                    // Settled below the reservation: part of it comes back, as when a reply is shorter.
                    let refund = units * refund_pct / 100;
                    b.adjust(refund as i64, now);
                    taken.push((now, units - refund));
                }
            }
            let rate = per_minute as f64 / 60.0;
            for (i, (a, _)) in taken.iter().enumerate() {
                let mut sum = 0.0;
                for (t, u) in &taken[i..] {
                    sum += *u as f64;
                    let window = t.duration_since(*a).as_secs_f64();
                    prop_assert!(
                        sum <= per_minute as f64 + rate * window + 1e-6,
                        "{} units in {:.3}s", sum, window
                    );
                }
            }
        }
    }

    #[test]
    fn waits_are_computed_from_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::per_minute(600, 0.0, t0);
        // 600 a minute is 10 a second.
        assert_eq!(b.wait_for(5, t0), Some(Duration::from_millis(500)));
        assert_eq!(b.wait_for(601, t0), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.wait_for(10, t1), Some(Duration::ZERO));
        b.take(10);
        assert_eq!(b.level(t1), 0.0);
        b.adjust(-30, t1);
        assert_eq!(b.level(t1), -30.0);
        assert_eq!(b.wait_for(10, t1), Some(Duration::from_secs(4)));
        b.adjust(10_000, t1);
        assert_eq!(b.level(t1), 600.0);
        b.empty(t1);
        assert_eq!(b.level(t1), 0.0);
        b.set_rate(60.0, t1);
        assert_eq!(b.wait_for(2, t1), Some(Duration::from_secs(2)));
    }
}
