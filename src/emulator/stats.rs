//! What the emulator counts: per model, totals and a per-second series. Served as JSON at
//! `GET /_emulator/stats` and returned by [`super::EmulatorHandle::stats`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Counts of one model's requests and tokens, over the whole run or over one second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests received (Converse and InvokeModel; CountTokens is counted apart).
    pub requests: u64,
    /// Requests answered 200 with a well-formed reply.
    pub succeeded: u64,
    /// What those requests carried: texts embedded (a Cohere Embed call takes up to 96), one per other request.
    #[serde(default)]
    pub succeeded_items: u64,
    /// Requests throttled because the requests-per-minute quota ran out.
    pub throttled_rpm: u64,
    /// Requests throttled because the tokens-per-minute quota could not hold their reservation.
    pub throttled_tpm: u64,
    /// Requests throttled because the tokens-per-day quota could not hold their reservation.
    pub throttled_tpd: u64,
    /// Requests turned away with 503 because the model's concurrency cap was reached.
    pub busy: u64,
    /// Requests that got an injected fault.
    pub faults: u64,
    /// Requests refused as invalid (400), denied (403) or for an unknown model (404).
    pub rejected: u64,
    /// Input tokens of settled requests, those read from or written to the prompt cache left out.
    pub input_tokens: u64,
    /// Input tokens of settled requests read from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens of settled requests written to the prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Output tokens of settled requests.
    pub output_tokens: u64,
    /// Quota tokens charged at settlement: `input + output × burndown`.
    pub charged_tokens: u64,
}

/// One second in which a model had activity (the emulator's series; the runner's is `budget::Second`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSecond {
    /// Whole seconds since the emulator started.
    pub second: u64,
    /// What happened during that second.
    #[serde(flatten)]
    pub counts: Counters,
    /// The most requests in flight at once during that second.
    pub in_flight: u64,
}

/// Everything counted for one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Totals since the emulator started.
    #[serde(flatten)]
    pub totals: Counters,
    /// Milliseconds after the emulator started when the model's first request came: its quota buckets (and a
    /// neighbour's phase) start then.
    #[serde(default)]
    pub first_request_ms: u64,
    /// Requests in flight now (admitted, not yet answered).
    pub in_flight: u64,
    /// The most requests ever in flight at once.
    pub max_in_flight: u64,
    /// Injected faults by kind.
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Requests answered in a service tier they asked for, by tier (requests that named none are not counted).
    #[serde(default)]
    pub answered_by_tier: BTreeMap<String, u64>,
    /// Per-second counts, one entry per second with activity, oldest first; the last day is kept.
    pub series: VecDeque<ActiveSecond>,
}

/// A snapshot of all the emulator's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the emulator started.
    pub uptime_s: f64,
    /// CountTokens calls (free, and outside every quota, as on Bedrock).
    pub count_tokens_requests: u64,
    /// Per model id, as received.
    pub models: BTreeMap<String, ModelStats>,
    /// The batch inference control plane's calls and records.
    #[serde(default)]
    pub batch: super::batch::BatchStats,
}

const SERIES_LIMIT: usize = 24 * 60 * 60;

impl ModelStats {
    /// Applies `f` to the totals and to the counts of `second`.
    pub fn bump(&mut self, second: u64, f: impl Fn(&mut Counters)) {
        f(&mut self.totals);
        f(&mut self.entry(second).counts);
    }

    /// Records a request entering flight during `second`.
    pub fn enter(&mut self, second: u64) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        let in_flight = self.in_flight;
        let entry = self.entry(second);
        entry.in_flight = entry.in_flight.max(in_flight);
    }

    /// Records a request leaving flight.
    pub fn leave(&mut self) {
        self.in_flight -= 1;
    }

    fn entry(&mut self, second: u64) -> &mut ActiveSecond {
        // Requests finish out of order, so a count may land in a second that already has a successor.
        let pos = self.series.iter().rposition(|s| s.second <= second);
        match pos {
            Some(i) if self.series[i].second == second => &mut self.series[i],
            _ => {
                let at = pos.map_or(0, |i| i + 1);
                self.series.insert(
                    at,
                    ActiveSecond {
                        second,
                        in_flight: self.in_flight,
                        ..ActiveSecond::default()
                    },
                );
                if self.series.len() > SERIES_LIMIT {
                    // Only the last day is kept; a second older than all of it cannot occur in practice.
                    self.series.pop_front();
                    return &mut self.series[at.saturating_sub(1)];
                }
                &mut self.series[at]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_series_agree() {
        let mut s = ModelStats::default();
        s.bump(0, |c| c.requests += 1);
        s.bump(0, |c| c.requests += 1);
        s.bump(2, |c| c.requests += 1);
        // A late count for second 1 lands between 0 and 2.
        s.bump(1, |c| c.succeeded += 1);
        assert_eq!(s.totals.requests, 3);
        assert_eq!(s.totals.succeeded, 1);
        let seconds: Vec<_> = s.series.iter().map(|e| e.second).collect();
        assert_eq!(seconds, [0, 1, 2]);
        assert_eq!(s.series[0].counts.requests, 2);
        assert_eq!(s.series[1].counts.succeeded, 1);
        let sum: u64 = s.series.iter().map(|e| e.counts.requests).sum();
        assert_eq!(sum, s.totals.requests);
    }

    #[test]
    fn in_flight_peaks_are_kept_per_second() {
        let mut s = ModelStats::default();
        s.enter(5);
        s.enter(5);
        s.leave();
        s.enter(6);
        s.leave();
        s.leave();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.max_in_flight, 2);
        assert_eq!(s.series[0].in_flight, 2);
        assert_eq!(s.series[1].in_flight, 2);
    }
}
