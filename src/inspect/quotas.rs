//! `batchrun quotas JOB`: the account's quotas for the job's model, read from Service Quotas in the job's
//! Region (or from the emulator the job names), beside what the job file sets.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Error;
use crate::job::Job;
use crate::quotas::account::{self, AccountQuota};
use crate::quotas::names::{Measure, Scope};
use crate::report::format::int;
use crate::run::Endpoints;

/// What `batchrun quotas` is asked.
#[derive(Debug, Clone)]
pub struct QuotasOptions {
    /// The job file.
    pub job_file: PathBuf,
    /// How to reach the job's endpoint (an emulator serves Service Quotas too).
    pub endpoints: Arc<dyn Endpoints>,
}

/// The table of the job's model's quotas.
pub async fn quotas(opts: &QuotasOptions) -> Result<String, Error> {
    let job = Job::load(&opts.job_file)?;
    let connection = opts.endpoints.connect(&job).await?;
    let (client, region) = account::client(
        job.model.region.as_deref(),
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await;
    let all = account::read(&client, &region).await?;
    let mine = account::for_model(&all, &job.model.id);
    Ok(render(&job, &region, &mine))
}

fn measure(m: Measure) -> &'static str {
    match m {
        Measure::Rpm => "RPM",
        Measure::Tpm => "TPM",
        Measure::Tpd => "tokens/day",
    }
}

/// The table: one line a quota, the scope the job's calls count against first (marked `*`).
fn render(job: &Job, region: &str, quotas: &[&AccountQuota]) -> String {
    let id = &job.model.id;
    let own = Scope::of(id);
    let mut t = format!("Bedrock quotas for {id} in {region} (Service Quotas, applied values):\n");
    if quotas.is_empty() {
        t.push_str(
            "  none found: Service Quotas lists no per-model quota whose name matches this model id; \
             batchrun will learn the quota from throttles\n",
        );
    } else {
        t.push_str(&format!(
            "  {:<14} {:<11} {:>14} {:>14}  {:<10}  {:<10}  {}\n",
            "scope", "quota", "applied", "AWS default", "adjustable", "code", "name"
        ));
        for q in quotas {
            let mark = if q.read.scope == own { '*' } else { ' ' };
            t.push_str(&format!(
                "{mark} {:<14} {:<11} {:>14} {:>14}  {:<10}  {:<10}  {}\n",
                q.read.scope.label(),
                measure(q.read.measure),
                int(q.value.round() as u64),
                q.default.map_or("-".to_string(), |d| int(d.round() as u64)),
                if q.adjustable { "yes" } else { "no" },
                q.code,
                q.name
            ));
        }
        t.push_str(&format!(
            "  * the quotas this job's calls count against ({} use of {id})\n",
            own.label()
        ));
    }
    let setting = |v: Option<u64>| v.map_or("not set".to_string(), int);
    t.push_str(&format!(
        "the job file: budget.rpm {}, budget.tpm {}\n",
        setting(job.budget.rpm),
        setting(job.budget.tpm)
    ));
    t
}
