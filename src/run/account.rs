//! A job without a budget for a quota starts from the account's applied value, read from Service Quotas (or,
//! when it cannot be read for a reason other than a denial, from what the state database cached last time), and
//! says where each number came from. No permission is a warning: the run learns the quota from throttles.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connect::Connection;
use crate::budget::{Budget, ThrottleKind};
use crate::checkpoint::{CachedQuota, Store};
use crate::error::Error;
use crate::job::Job;
use crate::quotas::QuotasError;
use crate::quotas::account::{self, AccountQuota};
use crate::quotas::names::{Measure, Scope};
use crate::report::format::int;

/// Service Quotas answers in well under a second; a run does not wait longer than this for it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn measure_key(m: Measure) -> &'static str {
    match m {
        Measure::Rpm => "rpm",
        Measure::Tpm => "tpm",
        Measure::Tpd => "tpd",
    }
}

/// The quotas a run took from the account: `rpm` or `tpm`, and the quota's code.
pub type Sourced = Vec<(&'static str, String)>;

/// `job` with `budget.rpm` and `budget.tpm`, where the job file leaves them out, set to the account's applied
/// quotas for the job's model in the scope it is called in; and which ones were. What it says begins with
/// `label` (the target's name, in a job with several).
pub async fn with_account_quotas(
    job: &Job,
    (connection, label): (&Connection, Option<&str>),
    store: &Store,
) -> Result<(Job, Sourced), Error> {
    let lead = label.map_or(String::new(), |l| format!("target {l}: "));
    if job.budget.rpm.is_some() && job.budget.tpm.is_some() {
        return Ok((job.clone(), Vec::new()));
    }
    let id = &job.model.id;
    let (region, read) = read_own(job, connection).await;
    let (quotas, source) = match read {
        Ok(own) => {
            store.cache_quotas(&region, id, &own).await?;
            (own, "applied".to_string())
        }
        Err(Unread::Denied) => {
            crate::say!(
                "warning: {lead}no permission to read Service Quotas in {region} (servicequotas:ListServiceQuotas): \
                 quotas not set in [budget] are learned from throttles"
            );
            return Ok((job.clone(), Vec::new()));
        }
        Err(Unread::Failed(why)) => {
            let cached = store.cached_quotas(&region, id).await?;
            if cached.is_empty() {
                crate::say!(
                    "warning: {lead}{why}; quotas not set in [budget] are learned from throttles"
                );
                return Ok((job.clone(), Vec::new()));
            }
            let at = crate::report::status::utc(cached[0].read_at);
            crate::say!("warning: {lead}{why}; using the quotas read at {at}");
            (cached, format!("cached, read {at}"))
        }
    };
    let mut out = job.clone();
    let mut sourced = Vec::new();
    for (key, line) in fill_budget(&mut out, &quotas, &source) {
        // fill_budget fills a key from the quota of that measure, whose code the run reads again.
        if let Some(q) = quotas.iter().find(|q| q.measure == key) {
            sourced.push((key, q.code.clone()));
        }
        crate::say!("{lead}{line}");
    }
    Ok((out, sourced))
}

/// Sets the `budget.rpm` and `budget.tpm` that `job` leaves out to the applied values in `quotas`; for each one
/// set, its key and the line that says where it came from (`source`: "applied", or the cache's time).
pub fn fill_budget(
    job: &mut Job,
    quotas: &[CachedQuota],
    source: &str,
) -> Vec<(&'static str, String)> {
    let mut filled = Vec::new();
    for q in quotas {
        let (slot, key) = match q.measure.as_str() {
            "rpm" => (&mut job.budget.rpm, "rpm"),
            "tpm" => (&mut job.budget.tpm, "tpm"),
            _ => continue,
        };
        if slot.is_none() {
            let value = q.value.round() as u64;
            *slot = Some(value);
            let line = format!(
                "{} {} from Service Quotas {}, {source} ({})",
                q.measure.to_uppercase(),
                int(value),
                q.code,
                q.name
            );
            filled.push((key, line));
        }
    }
    filled
}

/// Why the account's quotas could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// No permission.
    Denied,
    /// Anything else, said.
    Failed(String),
}

/// The region whose quotas apply to `job`, and the applied quotas its calls count against
/// ([`own_quotas`]), read from Service Quotas within a few seconds.
pub async fn read_own(
    job: &Job,
    connection: &Connection,
) -> (String, Result<Vec<CachedQuota>, Unread>) {
    let (client, region) = account::client(
        job.model.region.as_deref(),
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await;
    let read =
        match tokio::time::timeout(READ_TIMEOUT, account::read(&client, &region, false)).await {
            Ok(Ok(all)) => Ok(own_quotas(&all, &job.model.id)),
            Ok(Err(QuotasError::AccessDenied { .. })) => Err(Unread::Denied),
            Ok(Err(e)) => Err(Unread::Failed(e.to_string())),
            Err(_) => Err(Unread::Failed(format!(
                "Service Quotas did not answer within {}s",
                READ_TIMEOUT.as_secs()
            ))),
        };
    (region, read)
}

/// While the run sends, reads the quotas in `sourced` again every `every` (one `GetServiceQuota` each) and
/// moves the budget's ceilings to what the account has now (an increase approved mid-run is used within one
/// period), until `stop`.
pub async fn refresh(
    budget: Arc<Budget>,
    job: Job,
    (url, static_credentials): (Option<String>, bool),
    sourced: Sourced,
    every: Duration,
    stop: CancellationToken,
) {
    let (client, region) = account::client(
        job.model.region.as_deref(),
        url.as_deref(),
        static_credentials,
    )
    .await;
    let mut known: Vec<(&'static str, String, Option<u64>)> = sourced
        .into_iter()
        .map(|(m, code)| {
            let value = if m == "rpm" {
                job.budget.rpm
            } else {
                job.budget.tpm
            };
            (m, code, value)
        })
        .collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (measure, code, value) in &mut known {
            // A failed read changes nothing: the next one may succeed.
            let Ok(Ok(now)) =
                tokio::time::timeout(READ_TIMEOUT, account::value(&client, &region, code)).await
            else {
                continue;
            };
            let now = now.round() as u64;
            if *value == Some(now) {
                continue;
            }
            let kind = if *measure == "rpm" {
                ThrottleKind::Rpm
            } else {
                ThrottleKind::Tpm
            };
            budget.set_ceiling(kind, now);
            crate::say!(
                "{} {} from Service Quotas {code}, applied (was {}: the account's quota changed)",
                measure.to_uppercase(),
                int(now),
                value.map_or("not set".to_string(), int)
            );
            *value = Some(now);
        }
    }
}

/// The quotas of `all` that the calls of `model_id` count against: its own scope, no variant. The daily quota
/// is named without a scope ("Model invocation max tokens per day for …") and counts every call of the model:
/// one of the call's own scope is taken first, else any.
pub fn own_quotas(all: &[AccountQuota], model_id: &str) -> Vec<CachedQuota> {
    let scope = Scope::of(model_id);
    let quotas = account::for_model(all, model_id);
    let plain: Vec<_> = quotas.iter().filter(|q| q.read.variant.is_none()).collect();
    let daily_in_scope = plain
        .iter()
        .any(|q| q.read.measure == Measure::Tpd && q.read.scope == scope);
    let mut daily_taken = false;
    plain
        .into_iter()
        .filter(|q| {
            if q.read.measure != Measure::Tpd {
                return q.read.scope == scope;
            }
            let take = (q.read.scope == scope || !daily_in_scope) && !daily_taken;
            daily_taken |= take;
            take
        })
        .map(|q| CachedQuota {
            measure: measure_key(q.read.measure).to_string(),
            code: q.code.clone(),
            name: q.name.clone(),
            value: q.value,
            read_at: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quotas::names;

    fn quota(code: &str, name: &str, value: f64) -> AccountQuota {
        AccountQuota {
            code: code.into(),
            name: name.into(),
            read: names::parse(name).unwrap(),
            value,
            default: None,
            adjustable: true,
        }
    }

    #[test]
    fn the_daily_quota_counts_for_every_scope() {
        let all = [
            quota(
                "L-1",
                "On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Haiku",
                1.0,
            ),
            quota(
                "L-2",
                "Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Haiku",
                2.0,
            ),
            quota(
                "L-3",
                "Model invocation max tokens per day for Anthropic Claude 3.5 Haiku",
                3.0,
            ),
        ];
        let codes = |id: &str| -> Vec<String> {
            own_quotas(&all, id)
                .into_iter()
                .map(|q| format!("{} {}", q.measure, q.code))
                .collect()
        };
        assert_eq!(
            codes("us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            ["tpm L-2", "tpd L-3"]
        );
        assert_eq!(
            codes("anthropic.claude-3-5-haiku-20241022-v1:0"),
            ["tpm L-1", "tpd L-3"]
        );
    }
}
