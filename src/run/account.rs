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

/// The quotas a run took from the account: `rpm`, `tpm`.
pub type Sourced = Vec<&'static str>;

/// `job` with `budget.rpm` and `budget.tpm`, where the job file leaves them out, set to the account's applied
/// quotas for the job's model in the scope it is called in; and which ones were.
pub async fn with_account_quotas(
    job: &Job,
    connection: &Connection,
    store: &Store,
) -> Result<(Job, Sourced), Error> {
    if job.budget.rpm.is_some() && job.budget.tpm.is_some() {
        return Ok((job.clone(), Vec::new()));
    }
    let (client, region) = account::client(
        job.model.region.as_deref(),
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await;
    let id = &job.model.id;
    let (quotas, source) = match tokio::time::timeout(
        READ_TIMEOUT,
        account::read(&client, &region, false),
    )
    .await
    {
        Ok(Ok(all)) => {
            let own = own_quotas(&all, id);
            store.cache_quotas(&region, id, &own).await?;
            (own, "applied".to_string())
        }
        Ok(Err(QuotasError::AccessDenied { .. })) => {
            crate::say!(
                "warning: no permission to read Service Quotas in {region} (servicequotas:ListServiceQuotas): \
                 quotas not set in [budget] are learned from throttles"
            );
            return Ok((job.clone(), Vec::new()));
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!(
                    "Service Quotas did not answer within {}s",
                    READ_TIMEOUT.as_secs()
                ),
            };
            let cached = store.cached_quotas(&region, id).await?;
            if cached.is_empty() {
                crate::say!(
                    "warning: {why}; quotas not set in [budget] are learned from throttles"
                );
                return Ok((job.clone(), Vec::new()));
            }
            let at = crate::report::status::utc(cached[0].read_at);
            crate::say!("warning: {why}; using the quotas read at {at}");
            (cached, format!("cached, read {at}"))
        }
    };
    let mut out = job.clone();
    let mut sourced = Vec::new();
    for q in &quotas {
        let (slot, key) = match q.measure.as_str() {
            "rpm" => (&mut out.budget.rpm, "rpm"),
            "tpm" => (&mut out.budget.tpm, "tpm"),
            _ => continue,
        };
        if slot.is_none() {
            sourced.push(key);
            *slot = Some(q.value.round() as u64);
            crate::say!(
                "{} {} from Service Quotas {}, {source} ({})",
                q.measure.to_uppercase(),
                int(q.value.round() as u64),
                q.code,
                q.name
            );
        }
    }
    Ok((out, sourced))
}

/// While the run sends, reads the quotas in `sourced` again every `every` and moves the budget's ceilings to
/// what the account has now (an increase approved mid-run is used within one period), until `stop`.
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
    let mut known: Vec<(&'static str, Option<u64>)> = sourced
        .iter()
        .map(|&m| {
            (
                m,
                if m == "rpm" {
                    job.budget.rpm
                } else {
                    job.budget.tpm
                },
            )
        })
        .collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // A failed read changes nothing: the next one may succeed.
        let Ok(Ok(all)) =
            tokio::time::timeout(READ_TIMEOUT, account::read(&client, &region, false)).await
        else {
            continue;
        };
        for q in own_quotas(&all, &job.model.id) {
            let Some((measure, value)) = known.iter_mut().find(|(m, _)| *m == q.measure) else {
                continue;
            };
            let now = q.value.round() as u64;
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
                "{} {} from Service Quotas {}, applied (was {}: the account's quota changed)",
                measure.to_uppercase(),
                int(now),
                q.code,
                value.map_or("not set".to_string(), int)
            );
            *value = Some(now);
        }
    }
}

/// The quotas of `all` that the calls of `model_id` count against: its own scope, no variant.
fn own_quotas(all: &[AccountQuota], model_id: &str) -> Vec<CachedQuota> {
    let scope = Scope::of(model_id);
    account::for_model(all, model_id)
        .into_iter()
        .filter(|q| q.read.scope == scope && q.read.variant.is_none())
        .map(|q| CachedQuota {
            measure: measure_key(q.read.measure).to_string(),
            code: q.code.clone(),
            name: q.name.clone(),
            value: q.value,
            read_at: 0,
        })
        .collect()
}
