//! `batchrun quotas JOB`: the account's quotas for the job's model, read from Service Quotas in the job's
//! Region (or from the emulator the job names), beside what the job file sets.

use std::path::PathBuf;
use std::sync::Arc;

use super::plan::PlanOptions;
use crate::catalogue::Catalogue;
use crate::error::Error;
use crate::job::Job;
use crate::quotas::account::{self, AccountQuota};
use crate::quotas::names::{Measure, Scope};
use crate::report::format::int;
use crate::run::{Connection, Endpoints};

/// What `batchrun quotas` is asked.
#[derive(Debug, Clone)]
pub struct QuotasOptions {
    /// The job file.
    pub job_file: PathBuf,
    /// How to reach the job's endpoint (an emulator serves Service Quotas too).
    pub endpoints: Arc<dyn Endpoints>,
}

/// `batchrun quotas request`: the increase wanted, per quota.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Send the request (otherwise only print it).
    pub submit: bool,
}

/// The job, a Service Quotas client for it and its Region (the connection keeps an embedded emulator alive).
async fn open(
    opts: &QuotasOptions,
) -> Result<
    (
        Job,
        aws_sdk_servicequotas::Client,
        String,
        crate::run::Connection,
    ),
    Error,
> {
    let job = Job::load(&opts.job_file)?;
    let connection = opts.endpoints.connect(&job).await?;
    let (client, region) = account::client(
        job.model.region.as_deref(),
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await;
    Ok((job, client, region, connection))
}

/// The table of the job's model's quotas, and the increase requests made for them.
pub async fn quotas(opts: &QuotasOptions) -> Result<String, Error> {
    let (job, client, region, connection) = open(opts).await?;
    let all = account::read(&client, &region, true).await?;
    let mine = account::for_model(&all, &job.model.id);
    let codes: Vec<&str> = mine.iter().map(|q| q.code.as_str()).collect();
    let requests = account::requests(&client, &region, &codes).await?;
    let mut text = render(&job, &region, &mine);
    // The plan reads every input; a job whose inputs cannot be read still gets its quotas.
    match needs(opts, &connection).await {
        Ok(lines) => text.push_str(&lines),
        Err(e) => text.push_str(&format!("the job's plan could not be made: {e}\n")),
    }
    text.push_str(&model_lines(
        &Catalogue::chosen(None)?,
        &job.model.id,
        &mine,
    ));
    for r in &requests {
        text.push_str(&format!(
            "increase request {} for {}: {} ({}){}\n",
            r.id,
            r.code,
            r.status,
            int(r.desired.round() as u64),
            r.created.map_or(String::new(), |t| format!(
                ", made {}",
                crate::report::status::utc(t)
            ))
        ));
    }
    Ok(text)
}

/// The quotas of `model_id` in `region` (or the AWS configuration's), without a job: from Service Quotas by
/// the standard AWS configuration (`AWS_ENDPOINT_URL_SERVICE_QUOTAS` reaches an emulator).
pub async fn of_model(model_id: &str, region: Option<&str>) -> Result<String, Error> {
    let (client, region) = account::client(region, None, false).await;
    let all = account::read(&client, &region, true).await?;
    let mine = account::for_model(&all, model_id);
    let mut text = table(model_id, &region, &mine);
    text.push_str(&model_lines(&Catalogue::chosen(None)?, model_id, &mine));
    Ok(text)
}

/// The request for the quotas the job's calls count against: printed with the AWS CLI command that makes it,
/// and made when `wanted.submit`.
pub async fn request(opts: &QuotasOptions, wanted: Wanted) -> Result<String, Error> {
    let (job, client, region, _connection) = open(opts).await?;
    let all = account::read(&client, &region, true).await?;
    let id = &job.model.id;
    let own = Scope::of(id);
    let mut text = String::new();
    for (m, desired) in [(Measure::Rpm, wanted.rpm), (Measure::Tpm, wanted.tpm)] {
        let Some(desired) = desired else { continue };
        let quota = account::for_model(&all, id)
            .into_iter()
            .find(|q| q.read.scope == own && q.read.measure == m && q.read.variant.is_none())
            .ok_or_else(|| Error::QuotaRequest {
                message: format!(
                    "Service Quotas in {region} lists no {} {} quota for {id}",
                    own.label(),
                    measure(m)
                ),
            })?;
        if desired as f64 <= quota.value {
            return Err(Error::QuotaRequest {
                message: format!(
                    "{} {} is already {} ({}): ask for more than that",
                    quota.code,
                    measure(m),
                    int(quota.value.round() as u64),
                    quota.name
                ),
            });
        }
        text.push_str(&format!(
            "{} {}: {} → {} ({})\n  aws service-quotas request-service-quota-increase --service-code bedrock \
             --quota-code {} --desired-value {desired} --region {region}\n",
            measure(m),
            quota.code,
            int(quota.value.round() as u64),
            int(desired),
            quota.name,
            quota.code
        ));
        if !quota.adjustable {
            text.push_str(
                "  this quota is not adjustable through Service Quotas: ask through the Bedrock limit increase form\n",
            );
            continue;
        }
        if wanted.submit {
            let r =
                account::request_increase(&client, &region, &quota.code, desired as f64).await?;
            text.push_str(&format!("  requested: id {}, status {}\n", r.id, r.status));
        }
    }
    if !wanted.submit && !text.is_empty() {
        text.push_str("nothing was requested: add --submit to send the request\n");
    }
    Ok(text)
}

fn measure(m: Measure) -> &'static str {
    match m {
        Measure::Rpm => "RPM",
        Measure::Tpm => "TPM",
        Measure::Tpd => "tokens/day",
    }
}

/// What the job's plan needs of the quotas (its inputs read as `plan` reads them), in two lines.
async fn needs(opts: &QuotasOptions, connection: &Connection) -> Result<String, Error> {
    let (f, p) = super::plan::planned_on(
        &PlanOptions {
            job_file: opts.job_file.clone(),
            state: None,
            exact: false,
            deadline: None,
            models: None,
            output_tokens: None,
            latency: None,
            endpoints: opts.endpoints.clone(),
        },
        Some(connection),
    )
    .await?;
    Ok(format!(
        "the job's plan: {} request{}, each reserving about {} tokens of TPM while it runs and charged about {}; \
         {} tokens in all\n  as submit would run it: {} at {} requests/min, {}\n",
        int(p.sendable),
        if p.sendable == 1 { "" } else { "s" },
        int(p.reservation.round() as u64),
        int(p.charge.round() as u64),
        int((p.charge * p.sendable as f64).round() as u64),
        crate::report::format::duration(p.wall),
        int(p.rate.round() as u64),
        p.bound.describe()
    ) + &f.tpd.map_or(String::new(), |(tpd, _)| {
        let days = p.charge * p.sendable as f64 / tpd.max(1) as f64;
        format!(
            "  the daily quota: {:.0} % of a day's tokens\n",
            days * 100.0
        )
    }))
}

/// What the model table says about `id`, beside the account's quotas.
fn model_lines(catalogue: &Catalogue, id: &str, quotas: &[&AccountQuota]) -> String {
    let (f, listed) = catalogue.facts(id);
    if !listed {
        return format!(
            "model table: {id} is not listed: output burndown {} assumed, no price known (add it with \
             BATCHRUN_MODELS=FILE, format: jobs/models.toml)\n",
            f.burndown.unwrap_or(1)
        );
    }
    let mut facts = vec![format!("output burndown {}", f.burndown.unwrap_or(1))];
    if let Some(c) = f.context {
        facts.push(format!("context window {} tokens", int(c)));
    }
    if let Some(m) = f.max_output {
        facts.push(format!("max-tokens up to {}", int(m)));
    }
    let cur = &catalogue.currency;
    let price = |p: Option<crate::catalogue::Price>, what: &str| {
        p.map(|p| {
            format!(
                "{what} {} / {}",
                unit_price(p.input, cur),
                unit_price(p.output, cur)
            )
        })
    };
    let prices: Vec<String> = [
        price(catalogue.price(id), "on-demand"),
        price(catalogue.batch_price(id), "batch"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !prices.is_empty() {
        facts.push(format!(
            "{} per million tokens in / out (as of {})",
            prices.join(", "),
            catalogue.as_of
        ));
    }
    let mut t = format!(
        "model table: {}: {}\n",
        f.name.as_deref().unwrap_or(id),
        facts.join("; ")
    );
    let own = Scope::of(id);
    let lists_rpm = quotas
        .iter()
        .any(|q| q.read.measure == Measure::Rpm && q.read.scope == own);
    if f.rpm_quota == Some(false) && lists_rpm {
        t.push_str(
            "  AWS no longer enforces requests-per-minute quotas on bedrock-runtime (model table); this account \
             still lists one, and batchrun keeps to it\n",
        );
    }
    t
}

/// A price per million tokens with as many decimals as it has, two to four: `$0.125`, `$3.00`.
fn unit_price(v: f64, currency: &str) -> String {
    let places = (2..=4)
        .find(|&d| {
            format!("{v:.d$}")
                .parse::<f64>()
                .is_ok_and(|r| (r - v).abs() < 1e-9)
        })
        .unwrap_or(4);
    match currency {
        "USD" => format!("${v:.places$}"),
        other => format!("{v:.places$} {other}"),
    }
}

/// The table, and what the job file sets.
fn render(job: &Job, region: &str, quotas: &[&AccountQuota]) -> String {
    let mut t = table(&job.model.id, region, quotas);
    let setting = |v: Option<u64>| v.map_or("not set".to_string(), int);
    t.push_str(&format!(
        "the job file: budget.rpm {}, budget.tpm {}\n",
        setting(job.budget.rpm),
        setting(job.budget.tpm)
    ));
    t
}

/// The table: one line a quota, the scope the calls of `id` count against first (marked `*`).
fn table(id: &str, region: &str, quotas: &[&AccountQuota]) -> String {
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
            "  * the quotas these calls count against ({} use of {id})\n",
            own.label()
        ));
    }
    t
}
