//! How fast one quota (requests or tokens per minute) is spent: the rate the bucket refills at, learned from
//! throttles. Pure: time and events come in as arguments.
//!
//! Bedrock's quota is a bucket refilling at the true rate R; ours mirrors it at rate r. A throttle says
//! Bedrock's bucket could not hold the request while ours could, so at that moment its level is below one
//! reservation: we empty ours (level sync). From one sync to the next throttle, ours gained `(r − R)·Δt` on
//! Bedrock's, and that gap reached at most one reservation `c`, so `R ≥ r − c/Δt`: a throttle both resyncs the
//! bucket and yields an estimate of R. The rate is then set just under the estimate.
//!
//! Throttles of requests admitted before the last sync belong to the episode already handled and change
//! nothing: one cut per episode, not one per throttled request. The caller may also pass an upper bound from what
//! Bedrock's bucket gave out since earlier syncs (it was under one request at both ends), which caps the estimate
//! when our bucket was not what held requests back.
//!
//! Recovery: after a hold, while the bucket is the bottleneck (saturated), the rate grows by a few percent a
//! second, so a quota freed by another client is found again; the hold doubles each time the estimate comes
//! out where it was (the quota is stable: probe rarely) and resets when it moves. Without a configured budget
//! (discovery), the rate starts low and grows fast until the first throttle.

use std::time::Duration;

use tokio::time::Instant;

/// The rate is set this far under the estimated quota.
pub const MARGIN: f64 = 0.98;
/// No rate goes below this share of its ceiling (or of its first estimate, in discovery).
pub const FLOOR: f64 = 0.02;
/// Growth per second while probing after a hold.
const PROBE_GROWTH: f64 = 0.02;
/// Growth per second in discovery, before the first throttle.
const DISCOVERY_GROWTH: f64 = 0.25;
/// Probing doubles its pace after this long without a throttle (2 %/s, 4 %, 8 %…, at most 25 %/s). At 10 s, a
/// quota doubled mid-run took 17 s to reach 90 % (goodput 0.80 in `quota-raised-learned`); at 5 s, 13 s (0.96).
const PROBE_DOUBLING: Duration = Duration::from_secs(5);
const MIN_HOLD: Duration = Duration::from_secs(5);
const MAX_HOLD: Duration = Duration::from_secs(60);
/// Estimates within this ratio of the previous one count as "the same quota"...
const STABLE: f64 = 0.05;
/// ... when at least this long after it.
const STABLE_FOR: Duration = Duration::from_secs(10);
/// A first throttle of a guessed rate (discovery, no sync yet to measure from) cuts by this factor only; the next
/// throttle measures.
const FIRST_CUT: f64 = MARGIN;
/// Growth per second back up to the best estimate of the last minute (after the hold).
const RECOVER_GROWTH: f64 = 0.2;
/// An estimate counts as a measurement when the cost term (the level at the sync, which is uncertain) takes less
/// than this share off the rate; a throttle sooner than that says more about the levels than about the rate.
const INFORMATIVE: f64 = 0.85;
/// How long an estimate is remembered as reachable.
const REMEMBER: Duration = Duration::from_secs(60);
/// Recoveries to a remembered estimate throttled one after the other before the higher estimates are forgotten:
/// a quota that was cut for good drew a throttle at every recovery for a minute (issue 14, `quota-cut`), while a
/// neighbour busy ten seconds of every twenty lets one of two tries through.
const RECOVERY_TRIES: u32 = 2;

/// The controller of one quota.
#[derive(Debug, Clone)]
pub struct Limit {
    ceiling: Option<f64>,
    rate: f64,
    floor: f64,
    last_sync: Option<Instant>,
    estimate: Option<f64>,
    /// When `estimate` was made.
    estimated_at: Instant,
    hold: Duration,
    discovering: bool,
    last_change: Instant,
    created: Instant,
    /// ∫ rate dt since the last sync (per minute × seconds): the rate changes while probing, and the estimate
    /// needs the mean rate since the sync, not the latest.
    area: f64,
    area_at: Instant,
    /// Estimates of the last minute: a quota shared with a bursty neighbour comes back to the higher ones.
    recent: std::collections::VecDeque<(Instant, f64)>,
    /// Whether the last cut came from a measured estimate (see [`Reaction::Resync`]).
    measured_cut: bool,
    /// Whether the rate is still a guess (discovery, or a first measurement from what was sent) that no throttle
    /// has measured yet.
    guessed: bool,
    /// Whether the rate is climbing back to a remembered estimate, and how many such climbs in a row a throttle
    /// ended.
    recovering: bool,
    failed_recoveries: u32,
}

/// What a throttle did to a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reaction {
    /// The throttle belonged to an episode already handled.
    Ignored,
    /// The throttle came too soon after a measured cut to measure anything: Bedrock's bucket was further below
    /// ours at that sync than one reservation (a charge above its reservation, settled just before, leaves it in
    /// debt). The caller empties the bucket again; the rate stays.
    Resync,
    /// The rate was cut to `rate`, from an estimate of the quota when one could be made.
    Cut {
        /// The new rate, per minute.
        rate: f64,
        /// The estimated quota, per minute.
        estimate: Option<f64>,
        /// Whether the estimate measured the quota (rather than cutting by the most one episode cuts): the
        /// episode of throttles ends.
        measured: bool,
    },
}

impl Limit {
    /// A limit with a configured budget of `ceiling` per minute, starting at `start` (a rate learned by an
    /// earlier run, or the ceiling).
    pub fn configured(ceiling: f64, start: Option<f64>, now: Instant) -> Limit {
        let floor = ceiling * FLOOR;
        Limit {
            ceiling: Some(ceiling),
            rate: start.unwrap_or(ceiling).clamp(floor, ceiling),
            floor,
            last_sync: None,
            estimate: None,
            estimated_at: now,
            hold: MIN_HOLD,
            discovering: false,
            last_change: now,
            created: now,
            area: 0.0,
            area_at: now,
            recent: std::collections::VecDeque::new(),
            measured_cut: false,
            guessed: false,
            recovering: false,
            failed_recoveries: 0,
        }
    }

    /// A limit with no configured budget: starts at `start` and grows fast until the first throttle.
    pub fn discovery(start: f64, now: Instant) -> Limit {
        Limit {
            ceiling: None,
            rate: start,
            floor: start * FLOOR,
            last_sync: None,
            estimate: None,
            estimated_at: now,
            hold: MIN_HOLD,
            discovering: true,
            last_change: now,
            created: now,
            area: 0.0,
            area_at: now,
            recent: std::collections::VecDeque::new(),
            measured_cut: false,
            guessed: true,
            recovering: false,
            failed_recoveries: 0,
        }
    }

    /// A limit with no configured budget, starting from a rate an earlier run (or measurement) found: it
    /// probes like a configured limit, without the fast growth of discovery.
    pub fn learned(rate: f64, now: Instant) -> Limit {
        Limit {
            discovering: false,
            guessed: false,
            ..Limit::discovery(rate, now)
        }
    }

    /// A limit created from a throttle when no budget was configured for its quota: `measured` is the rate that
    /// was getting through, a rough first guess. The throttle counts as the first sync, and the limit keeps
    /// growing fast (discovery) until the next throttle measures the quota properly.
    pub fn measured(measured: f64, now: Instant) -> Limit {
        Limit {
            rate: (measured * MARGIN).max(1.0),
            floor: (measured * FLOOR).max(1.0),
            last_sync: Some(now),
            ..Limit::discovery(measured, now)
        }
    }

    /// The current rate, per minute.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The configured budget, if any.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// The quota itself changed to `ceiling` (an approved increase, or a cut, read from the account): the rate
    /// keeps its share of the ceiling, so a run uses a raised quota at once instead of probing up to it.
    ///
    /// What was measured against the old quota says nothing about the new one: the first throttle after the change
    /// resyncs like a run's first. Without this, a quota doubled a third into a 60 s run met a throttle just after
    /// the raise (Bedrock's bucket still near empty); the estimate, the mean rate since a sync 19 s earlier, was
    /// the old quota, and the rate went back to it and probed up for 20 s (issue 14, `quota-raised`: 0.846).
    pub fn set_ceiling(&mut self, ceiling: f64, now: Instant) {
        let share = self.ceiling.map_or(1.0, |c| self.rate / c.max(1.0));
        self.ceiling = Some(ceiling);
        self.floor = ceiling * FLOOR;
        self.rate = (ceiling * share).clamp(self.floor, ceiling);
        self.estimate = None;
        self.last_change = now;
        self.last_sync = None;
        self.area = 0.0;
        self.area_at = now;
        self.measured_cut = false;
        self.recovering = false;
        self.failed_recoveries = 0;
        self.recent.clear();
        self.hold = MIN_HOLD;
    }

    /// The share of the ceiling in use (1 without a ceiling): the multiplier saved for a resumed run.
    pub fn multiplier(&self) -> f64 {
        self.ceiling.map_or(1.0, |c| self.rate / c)
    }

    /// Whether this throttle (of a request admitted at `admitted_at`, costing `cost` units of this quota) starts
    /// a new episode; if so the rate is cut and the caller must empty the bucket.
    ///
    /// `bound`, when known, is an upper bound on the quota (per minute) from what Bedrock's bucket gave out since
    /// earlier syncs (see `Quota::bound` in the limiter): it caps the estimate when our bucket was not what held
    /// requests back, and when throttles come too fast for the estimate to measure anything.
    pub fn on_throttle(
        &mut self,
        admitted_at: Instant,
        cost: f64,
        bound: Option<f64>,
        now: Instant,
    ) -> Reaction {
        if let Some(sync) = self.last_sync
            && admitted_at <= sync
        {
            return Reaction::Ignored;
        }
        self.accumulate(now);
        if self.last_sync.is_none() && !self.guessed {
            // The first throttle of a run has nothing to measure from. It most often means the buckets started at
            // different levels (Bedrock's in use elsewhere, ours empty too but later), which the sync corrects; if
            // the rate is too high, the next throttle follows within moments and measures by how much. Cutting
            // by 2 % here cost a rate at the quota half a second of it over the hold and the probing back (issue
            // 14: the first call of every run meets a bucket created empty at the first request).
            return self.resync(now);
        }
        let measured = self.last_sync.map(|sync| {
            let dt = now.saturating_duration_since(sync).as_secs_f64().max(1e-3);
            // At the mean rate since the sync, our bucket gained on Bedrock's what Bedrock had left at the sync
            // (under one request's cost, half on average) in `dt` seconds.
            let mean = if self.area > 0.0 {
                self.area / dt
            } else {
                self.rate
            };
            (mean - cost / 2.0 * 60.0 / dt, mean)
        });
        // An estimate under INFORMATIVE (85 %) of the mean rate says the throttle came so soon after the sync that
        // the cost term dominates: it measures the levels at the sync more than the rate. Right after a measured
        // cut that is an offset, and a resync absorbs it (cutting again took a rate at the quota to half of it
        // within 0.2 s, issue 14); otherwise the rate is far above the quota and one episode cuts by 30 %, the next
        // refining. Against the mean, not the rate reached: a climb back after a hold, throttled six seconds after
        // the sync, measured well but read as uninformative against the top of the climb, and took a second
        // throttle to cut.
        let informative = measured.is_some_and(|(m, mean)| m >= mean * INFORMATIVE);
        if measured.is_some() && !informative && self.measured_cut {
            self.measured_cut = false;
            return self.resync(now);
        }
        let estimate = measured.map(|(m, _)| {
            let clamped = m.max(self.rate * 0.7);
            bound.map_or(clamped, |b| clamped.min(b))
        });
        let target = match estimate {
            Some(e) => e * MARGIN,
            None => self.rate * FIRST_CUT,
        };
        // Never rises on a throttle, never below the floor.
        let rate = target.min(self.rate * MARGIN).max(self.floor);
        self.update_hold(estimate, now);
        // An estimate is where the quota was lately, to come back to after the hold; but one clamped from a guess
        // says only "lower" (from a first guess ten times the quota, the clamped cuts of the first second were
        // remembered, and recovery went back to above the quota).
        if let (Some(e), true) = (estimate, informative || !self.guessed) {
            self.forget_if_recovery_failed(e, informative);
            self.recent.push_back((now, e));
        }
        self.recovering = false;
        self.guessed &= !informative;
        self.measured_cut = informative;
        self.rate = rate;
        self.last_sync = Some(now);
        self.area = 0.0;
        self.discovering = false;
        self.last_change = now;
        Reaction::Cut {
            rate,
            estimate,
            measured: informative,
        }
    }

    /// A throttle measured `estimate`: if it ended a climb back to a remembered estimate, and the one before ended
    /// the same way, the quota is not coming back: the estimates above this one are forgotten.
    fn forget_if_recovery_failed(&mut self, estimate: f64, informative: bool) {
        if !(self.recovering && informative) {
            return;
        }
        self.failed_recoveries += 1;
        if self.failed_recoveries >= RECOVERY_TRIES {
            self.recent.retain(|(_, e)| *e <= estimate * (1.0 + STABLE));
            self.failed_recoveries = 0;
        }
    }

    /// A new estimate (if one was made) against the last: the hold before probing lengthens while they agree.
    fn update_hold(&mut self, estimate: Option<f64>, now: Instant) {
        if let (Some(new), Some(old)) = (estimate, self.estimate) {
            // The same estimate again, at least STABLE_FOR after it: the quota is stable. Sooner says little (a
            // neighbour busy for ten seconds of every twenty gave two equal estimates 7 s apart, and the doubled
            // hold missed the ten seconds it was away, issue 14).
            let apart = now.saturating_duration_since(self.estimated_at);
            if (new / old - 1.0).abs() > STABLE {
                self.hold = MIN_HOLD;
            } else if apart >= STABLE_FOR {
                self.hold = (self.hold * 2).min(MAX_HOLD);
            }
        }
        if estimate.is_some() {
            self.estimated_at = now;
        }
        self.estimate = estimate.or(self.estimate);
    }

    /// The bucket is emptied to match Bedrock's, and the rate stays: measuring starts again from now.
    fn resync(&mut self, now: Instant) -> Reaction {
        self.accumulate(now);
        self.last_sync = Some(now);
        self.area = 0.0;
        Reaction::Resync
    }

    fn accumulate(&mut self, now: Instant) {
        if now > self.area_at {
            self.area += self.rate * now.duration_since(self.area_at).as_secs_f64();
            self.area_at = now;
        }
    }

    /// A throttle that says nothing about the rate (the token estimate is not calibrated yet, so the buckets may
    /// have drifted apart by miscounting): the first trims like any first throttle, later ones resync only (each
    /// trimmed by 2 % before, and the second call of a run whose prompts the local tokenizer counts 12 % short
    /// was throttled, issue 14).
    pub fn on_unmeasured_throttle(&mut self, admitted_at: Instant, now: Instant) -> Reaction {
        match self.last_sync {
            None => self.on_throttle(admitted_at, 0.0, None, now),
            Some(sync) if admitted_at <= sync => Reaction::Ignored,
            Some(_) => self.resync(now),
        }
    }

    /// Time passes: while `saturated` (requests wait on this bucket), the rate grows after the hold, fast in
    /// discovery. Returns whether the rate changed.
    pub fn on_tick(&mut self, now: Instant, saturated: bool) -> bool {
        self.accumulate(now);
        // Growth counts from the later of the last update and the end of the hold.
        // Discovery does not hold: it grows until a throttle says where the quota is.
        let hold_end = self
            .last_sync
            .filter(|_| !self.discovering)
            .map(|s| s + self.hold);
        let from = match hold_end {
            Some(h) if h > self.last_change => h,
            _ => self.last_change,
        };
        self.last_change = self.last_change.max(now);
        if !saturated || now <= from {
            return false;
        }
        let dt = now.saturating_duration_since(from).as_secs_f64();
        // Probing starts slow near the last estimate and doubles its pace every PROBE_DOUBLING without a throttle,
        // so a quota that another client has freed is found again within tens of seconds.
        let probing_for = from
            .saturating_duration_since(hold_end.unwrap_or(self.created))
            .as_secs_f64();
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > REMEMBER)
        {
            self.recent.pop_front();
        }
        let best = self
            .recent
            .iter()
            .map(|(_, e)| *e * MARGIN)
            .fold(0.0, f64::max);
        if !self.discovering && self.rate < best {
            // Back to where the quota was lately, fast; probing beyond it stays careful.
            let new = (self.rate * (1.0 + RECOVER_GROWTH).powf(dt)).min(best);
            let new = self.ceiling.map_or(new, |c| new.min(c));
            let changed = new > self.rate;
            self.rate = new.max(self.rate);
            // Back where it was without a throttle: the climbs that failed before were the quota's ups and downs.
            self.recovering = self.rate < best;
            if !self.recovering {
                self.failed_recoveries = 0;
            }
            return changed;
        }
        let growth = if self.discovering {
            DISCOVERY_GROWTH
        } else {
            (PROBE_GROWTH * 2f64.powf(probing_for / PROBE_DOUBLING.as_secs_f64()))
                .min(DISCOVERY_GROWTH)
        };
        let grown = self.rate * (1.0 + growth).powf(dt);
        let new = match self.ceiling {
            Some(c) => grown.min(c),
            None => grown,
        };
        let changed = new > self.rate;
        self.rate = new.max(self.rate);
        changed
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_new_ceiling_keeps_the_rate_s_share_of_it() {
        let now = Instant::now();
        let mut l = Limit::configured(1000.0, Some(800.0), now);
        l.set_ceiling(5000.0, now);
        assert_eq!((l.ceiling(), l.rate()), (Some(5000.0), 4000.0));
        l.set_ceiling(500.0, now);
        assert_eq!((l.ceiling(), l.rate()), (Some(500.0), 400.0));
    }

    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn a_throttle_just_after_the_quota_changed_resyncs_instead_of_measuring_the_old_quota() {
        let t0 = Instant::now();
        let mut l = Limit::configured(300.0, None, t0);
        // A run at the old quota: its first throttle resynced, a later one measured it.
        l.on_throttle(t0, 1.0, None, t0 + s(0.1));
        l.on_throttle(t0 + s(0.5), 1.0, None, t0 + s(1.0));
        let before = l.rate();
        assert!(before < 300.0, "{before}");
        // Nineteen seconds on, the account says the quota doubled; Bedrock's bucket is still near empty and the
        // next request is throttled.
        let raised = t0 + s(20.0);
        l.set_ceiling(600.0, raised);
        assert_eq!(l.rate(), before * 2.0);
        assert_eq!(
            l.on_throttle(raised + s(0.05), 1.0, None, raised + s(0.1)),
            Reaction::Resync
        );
        assert_eq!(l.rate(), before * 2.0);
        // A rate really above the new quota is measured by the throttle after that, against the new rate only.
        let Reaction::Cut {
            estimate: Some(e), ..
        } = l.on_throttle(raised + s(2.0), 1.0, None, raised + s(5.1))
        else {
            panic!("not cut")
        };
        assert!(e > 500.0 && e < before * 2.0, "{e}");
    }

    #[test]
    fn a_first_throttle_resyncs_and_later_ones_estimate_the_quota() {
        let t0 = Instant::now();
        // Configured 1,200 a minute; the true quota is 600.
        let mut l = Limit::configured(1200.0, None, t0);
        assert_eq!(l.on_throttle(t0, 1.0, None, t0 + s(1.0)), Reaction::Resync);
        assert_eq!(l.rate(), 1200.0);
        // Each later throttle comes when a gap of half a request (what Bedrock is taken to have had left) has
        // built up at the rate's excess over 600; one episode cuts by 30 % at most.
        let mut now = t0 + s(1.0);
        let mut estimates = Vec::new();
        for _ in 0..3 {
            let dt = 30.0 / (l.rate() - 600.0);
            now += s(dt);
            let r = l.on_throttle(now - s(dt / 2.0), 1.0, None, now);
            let Reaction::Cut {
                estimate: Some(e), ..
            } = r
            else {
                panic!("{r:?}")
            };
            estimates.push(e);
            if (e - 600.0).abs() < 1.0 {
                break;
            }
        }
        assert_eq!(estimates.len(), 2, "{estimates:?}");
        assert!((estimates[0] - 840.0).abs() < 0.1, "{estimates:?}");
        assert!((l.rate() - 588.0).abs() < 1.0, "{}", l.rate());
    }

    #[test]
    fn a_throttle_right_after_a_measured_cut_resyncs_without_cutting_again() {
        let t0 = Instant::now();
        let mut l = Limit::configured(1200.0, Some(700.0), t0);
        l.on_throttle(t0, 1.0, None, t0 + s(1.0));
        // Ten seconds later: a measured estimate (the cost term is small next to the rate).
        let Reaction::Cut {
            rate,
            estimate: Some(_),
            measured: true,
        } = l.on_throttle(t0 + s(10.0), 1.0, None, t0 + s(11.0))
        else {
            panic!()
        };
        // 50 ms after it, a request of 40 units is throttled: Bedrock was lower than us at the sync. The rate stays.
        assert_eq!(
            l.on_throttle(t0 + s(11.04), 40.0, None, t0 + s(11.05)),
            Reaction::Resync
        );
        assert_eq!(l.rate(), rate);
        // Another one as soon: now the rate is taken to be too high, and cut by the most one episode cuts.
        let Reaction::Cut { rate: cut, .. } =
            l.on_throttle(t0 + s(11.09), 40.0, None, t0 + s(11.1))
        else {
            panic!()
        };
        assert!((cut - rate * 0.7 * MARGIN).abs() < 1e-6, "{cut} {rate}");
        // After the hold the rate comes back to the measured estimate.
        assert!(l.on_tick(t0 + s(40.0), true));
        assert!((l.rate() - rate).abs() < 1e-6, "{} {rate}", l.rate());
    }

    #[test]
    fn clamped_cuts_are_come_back_to_unless_the_rate_was_a_guess() {
        let t0 = Instant::now();
        // Two throttles 20 ms apart: each estimate is clamped to a 30 % cut.
        let after_two_cuts = |mut l: Limit| {
            l.on_throttle(t0 + s(0.01), 100.0, None, t0 + s(0.02));
            let first = l.rate();
            l.on_throttle(t0 + s(0.03), 100.0, None, t0 + s(0.04));
            l.on_tick(t0 + s(10.0), true);
            (first, l.rate())
        };
        // A configured budget: back to where the first cut put it (a neighbour that left gives it back).
        let mut configured = Limit::configured(10_000.0, None, t0);
        configured.on_throttle(t0, 100.0, None, t0);
        let (first, later) = after_two_cuts(configured);
        assert!((later - first).abs() < 1e-6, "{first} {later}");
        // A first guess from what was sent: the clamped cuts say only "lower", and recovery probes slowly.
        let (first, later) = after_two_cuts(Limit::measured(10_000.0, t0));
        assert!(later < first * 0.8, "{first} {later}");
    }

    #[test]
    fn throttles_of_the_same_episode_are_ignored() {
        let t0 = Instant::now();
        let mut l = Limit::configured(100.0, None, t0);
        assert_eq!(l.on_throttle(t0, 1.0, None, t0), Reaction::Resync);
        assert!(matches!(
            l.on_throttle(t0 + s(0.5), 1.0, None, t0 + s(1.0)),
            Reaction::Cut { .. }
        ));
        let cut = l.rate();
        assert!(cut < 100.0, "{cut}");
        // Admitted before the cut: same overshoot.
        assert_eq!(
            l.on_throttle(t0 + s(0.9), 1.0, None, t0 + s(1.2)),
            Reaction::Ignored
        );
        assert_eq!(l.rate(), cut);
    }

    #[test]
    fn probing_waits_for_the_hold_then_grows_only_when_saturated() {
        let t0 = Instant::now();
        let mut l = Limit::configured(1000.0, Some(500.0), t0);
        l.on_throttle(t0, 1.0, None, t0);
        let cut = l.rate();
        assert!(!l.on_tick(t0 + s(4.0), true), "within the hold");
        assert!(!l.on_tick(t0 + s(6.0), false), "not saturated");
        assert!(l.on_tick(t0 + s(7.0), true));
        let grown = l.rate();
        assert!(grown > cut && grown < cut * 1.03, "{cut} -> {grown}");
        // Never above the ceiling.
        l.on_tick(t0 + s(1000.0), true);
        assert_eq!(l.rate(), 1000.0);
    }

    #[test]
    fn discovery_grows_fast_until_the_first_throttle() {
        let t0 = Instant::now();
        let mut l = Limit::discovery(1000.0, t0);
        for i in 1..=10 {
            l.on_tick(t0 + s(i as f64), true);
        }
        assert!(l.rate() > 9000.0, "{}", l.rate());
        l.on_throttle(t0 + s(10.0), 1.0, None, t0 + s(10.5));
        let after = l.rate();
        l.on_tick(t0 + s(16.0), true);
        l.on_tick(t0 + s(17.0), true);
        assert!(
            l.rate() < after * 1.05,
            "probing after discovery is slow: {after} -> {}",
            l.rate()
        );
    }

    #[test]
    fn a_stable_quota_lengthens_the_hold() {
        let t0 = Instant::now();
        let mut l = Limit::configured(1000.0, None, t0);
        l.on_throttle(t0, 1.0, None, t0);
        // Throttles that keep measuring the same quota, at the same rate each time: a second apart, that says
        // little, and the hold stays; twelve seconds apart, the quota is stable, and the hold doubles.
        let hold_after = |l: &mut Limit, apart: f64, from: Instant| {
            let mut t = from;
            for _ in 0..3 {
                l.rate = 700.0;
                t += s(apart);
                l.on_throttle(t - s(apart / 2.0), 1.0, None, t);
            }
            (l.hold, t)
        };
        let (hold, t) = hold_after(&mut l, 1.0, t0);
        assert_eq!(hold, MIN_HOLD);
        let (hold, _) = hold_after(&mut l, 12.0, t);
        assert!(hold > MIN_HOLD, "{hold:?}");
    }

    #[test]
    fn the_estimate_uses_the_mean_rate_since_the_sync() {
        let t0 = Instant::now();
        let mut l = Limit::configured(1000.0, Some(500.0), t0);
        l.on_throttle(t0, 1.0, None, t0);
        // Probing: 490 for ten seconds, then 700 for one second; one unit of gap built up.
        l.rate = 490.0;
        l.on_tick(t0 + s(10.0), false);
        l.rate = 700.0;
        l.on_tick(t0 + s(11.0), false);
        let r = l.on_throttle(t0 + s(10.5), 1.0, None, t0 + s(11.0));
        let Reaction::Cut {
            estimate: Some(e), ..
        } = r
        else {
            panic!("{r:?}")
        };
        // Mean (4,900 + 700) / 11 = 509.1, less half a unit over 11 s (30 / 11 = 2.7 a minute).
        assert!((e - 506.4).abs() < 0.5, "{e}");
    }

    /// A limit configured at 1,000 a minute that measured the quota at 600 (from 20 s at that rate), then at
    /// `lower` (20 s at it); and when the second measurement was made.
    fn measured_600_then(lower: f64) -> (Limit, Instant) {
        let t0 = Instant::now();
        let mut l = Limit::configured(1000.0, Some(600.0), t0);
        l.on_throttle(t0, 1.0, None, t0);
        let mut t = t0 + s(20.0);
        l.on_tick(t, false);
        l.on_throttle(t - s(1.0), 1.0, None, t);
        assert!(
            (l.estimate.unwrap() - 598.5).abs() < 1.0,
            "{:?}",
            l.estimate
        );
        l.rate = lower;
        t += s(20.0);
        l.on_tick(t, false);
        l.on_throttle(t - s(1.0), 1.0, None, t);
        (l, t)
    }

    #[test]
    fn a_quota_seen_recently_is_recovered_fast() {
        // Two measured episodes: 600 a minute, then (a neighbour arrived) 400.
        let (mut l, t) = measured_600_then(400.0);
        let low = l.rate();
        assert!(low < 400.0, "{low}");
        // The neighbour leaves: after the hold, the rate is back at the earlier quota within 2.5 s (at 2 % a
        // second of probing it would take 20 s), and only probes carefully beyond it.
        let mut u = t + s(5.0);
        l.on_tick(u, true);
        for _ in 0..12 {
            u += s(0.2);
            l.on_tick(u, true);
        }
        assert!(
            l.rate() > 565.0 && l.rate() < 590.0,
            "{low} -> {}",
            l.rate()
        );
    }

    #[test]
    fn a_quota_that_stays_lower_is_not_climbed_back_to_after_two_failed_tries() {
        // A measured episode at 600 a minute; then the quota halves, and another measures about 300.
        let (mut l, mut t) = measured_600_then(300.0);
        let low = l.rate();
        // After each hold the rate climbs back fast toward 600, and is throttled on the way.
        let climb = |l: &mut Limit, from: Instant| {
            let mut u = from + s(5.0);
            l.on_tick(u, true);
            for _ in 0..5 {
                u += s(0.2);
                l.on_tick(u, true);
            }
            u
        };
        for _ in 0..RECOVERY_TRIES {
            let u = climb(&mut l, t);
            assert!(l.rate() > low * 1.15, "{low} -> {}", l.rate());
            t = u + s(0.1);
            l.on_throttle(t - s(0.05), 1.0, None, t);
        }
        // Two climbs in a row failed: 600 is forgotten, and after the hold the rate stays near the 300 measured
        // since (it climbed to 413 in the same second while 600 was remembered).
        let after = l.rate();
        climb(&mut l, t);
        assert!(l.rate() < 310.0, "{after} -> {}", l.rate());
    }

    #[test]
    fn an_unmeasured_throttle_only_resyncs() {
        let t0 = Instant::now();
        let mut l = Limit::configured(1000.0, None, t0);
        assert_eq!(l.on_unmeasured_throttle(t0, t0), Reaction::Resync);
        let r = l.on_unmeasured_throttle(t0 + s(0.1), t0 + s(0.2));
        assert_eq!(r, Reaction::Resync);
        assert_eq!(l.rate(), 1000.0);
        assert_eq!(
            l.on_unmeasured_throttle(t0 + s(0.15), t0 + s(0.3)),
            Reaction::Ignored
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Event {
            Throttle { admitted_back_ms: u64, cost: f64 },
            Tick { saturated: bool },
        }

        fn event() -> impl Strategy<Value = (u64, Event)> {
            (
                1u64..3000,
                prop_oneof![
                    (0u64..5000, 0.1f64..5000.0).prop_map(|(b, c)| Event::Throttle {
                        admitted_back_ms: b,
                        cost: c
                    }),
                    any::<bool>().prop_map(|s| Event::Tick { saturated: s }),
                ],
            )
        }

        proptest! {
            #[test]
            fn the_rate_stays_within_floor_and_ceiling_and_never_rises_on_a_throttle(
                ceiling in 1.0f64..1e7,
                start in 0.0f64..1.5,
                events in proptest::collection::vec(event(), 1..200),
            ) {
                let t0 = Instant::now();
                let mut l = Limit::configured(ceiling, Some(ceiling * start), t0);
                let mut now = t0;
                for (step_ms, e) in events {
                    now += Duration::from_millis(step_ms);
                    let before = l.rate();
                    match e {
                        Event::Throttle { admitted_back_ms, cost } => {
                            let admitted = now.checked_sub(Duration::from_millis(admitted_back_ms)).unwrap_or(t0);
                            l.on_throttle(admitted, cost, None, now);
                            prop_assert!(l.rate() <= before, "rose on a throttle: {} -> {}", before, l.rate());
                        }
                        Event::Tick { saturated } => {
                            l.on_tick(now, saturated);
                        }
                    }
                    prop_assert!(l.rate() >= ceiling * FLOOR - 1e-9);
                    prop_assert!(l.rate() <= ceiling + 1e-9);
                    prop_assert!(l.multiplier() >= FLOOR - 1e-9 && l.multiplier() <= 1.0 + 1e-9);
                }
            }
        }
    }
}
