//! Reading the account's Bedrock quotas from Service Quotas (`aws-sdk-servicequotas`, service code `bedrock`,
//! every page), and picking those that apply to a model.

use aws_sdk_servicequotas::Client;

use super::names::{self, QuotaName, Scope};

/// One per-model quota as the account has it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountQuota {
    /// `L-…`.
    pub code: String,
    /// The name as Service Quotas gives it.
    pub name: String,
    /// The name, read.
    pub read: QuotaName,
    /// The applied value.
    pub value: f64,
    /// AWS's default, when it could be read.
    pub default: Option<f64>,
    /// Whether an increase can be requested through Service Quotas.
    pub adjustable: bool,
}

/// Reading the quotas failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotasError {
    /// The credentials may not read Service Quotas.
    #[error("no permission to read Service Quotas in {region}: {message}")]
    AccessDenied {
        /// The Region asked.
        region: String,
        /// The service's message.
        message: String,
    },
    /// Any other failure.
    #[error("could not read Service Quotas in {region}: {message}")]
    Other {
        /// The Region asked.
        region: String,
        /// What went wrong.
        message: String,
    },
}

/// A Service Quotas client in `region` (or the AWS configuration's), at `endpoint_url` when given (an emulator;
/// `static_credentials` signs with fixed test credentials, as for the embedded one). The standard
/// `AWS_ENDPOINT_URL_SERVICE_QUOTAS` works too.
pub async fn client(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    static_credentials: bool,
) -> (Client, String) {
    let sdk = crate::invoke::sdk_config(region, endpoint_url, static_credentials).await;
    let region = sdk
        .region()
        .map_or_else(|| "(no region)".to_string(), ToString::to_string);
    (Client::new(&sdk), region)
}

/// An error and its causes, each said once (`dispatch failure: … no credentials found in chain`), without the
/// debug dumps the SDK's own context printer adds.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The applied value of the Bedrock quota `code` (one `GetServiceQuota` call: what a running job reads again).
pub async fn value(client: &Client, region: &str, code: &str) -> Result<f64, QuotasError> {
    let out = client
        .get_service_quota()
        .service_code("bedrock")
        .quota_code(code)
        .send()
        .await
        .map_err(|e| QuotasError::Other {
            region: region.to_string(),
            message: chain(&e),
        })?;
    out.quota()
        .and_then(|q| q.value())
        .ok_or_else(|| QuotasError::Other {
            region: region.to_string(),
            message: format!("Service Quotas gave no value for {code}"),
        })
}

/// Every per-model inference quota of Bedrock in the client's Region; with `defaults`, AWS's defaults too
/// (another listing), where they can be read.
pub async fn read(
    client: &Client,
    region: &str,
    defaults: bool,
) -> Result<Vec<AccountQuota>, QuotasError> {
    let failed = |e: aws_sdk_servicequotas::error::SdkError<_, _>| -> QuotasError {
        let denied = matches!(
            &e,
            aws_sdk_servicequotas::error::SdkError::ServiceError(s)
                if matches!(s.err(), aws_sdk_servicequotas::operation::list_service_quotas::ListServiceQuotasError::AccessDeniedException(_))
        );
        let message = chain(&e);
        if denied {
            QuotasError::AccessDenied {
                region: region.to_string(),
                message,
            }
        } else {
            QuotasError::Other {
                region: region.to_string(),
                message,
            }
        }
    };
    let mut pages = client
        .list_service_quotas()
        .service_code("bedrock")
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        for q in page.map_err(failed)?.quotas() {
            let (Some(name), Some(code)) = (q.quota_name(), q.quota_code()) else {
                continue;
            };
            let Some(read) = names::parse(name) else {
                continue;
            };
            out.push(AccountQuota {
                code: code.to_string(),
                name: name.to_string(),
                read,
                value: q.value().unwrap_or(0.0),
                default: None,
                adjustable: q.adjustable(),
            });
        }
    }
    if !defaults {
        return Ok(out);
    }
    // AWS's defaults, where the account may read them; without them the table shows none.
    let mut defaults = client
        .list_aws_default_service_quotas()
        .service_code("bedrock")
        .into_paginator()
        .send();
    while let Some(Ok(page)) = defaults.next().await {
        for d in page.quotas() {
            if let Some(q) = out
                .iter_mut()
                .find(|q| Some(q.code.as_str()) == d.quota_code())
            {
                q.default = d.value();
            }
        }
    }
    Ok(out)
}

/// The quotas of `quotas` that name `model_id`'s model, in every scope, the closest name first within each
/// measure and scope; a variant (`1M Context Length`) after the plain quota.
pub fn for_model<'a>(quotas: &'a [AccountQuota], model_id: &str) -> Vec<&'a AccountQuota> {
    let mut picked: Vec<(&AccountQuota, usize)> = quotas
        .iter()
        .filter_map(|q| names::matches(model_id, &q.read.model).map(|score| (q, score)))
        .collect();
    // Only the best-matching display name counts (a v2 id matches "… V2", never also "…").
    let best = picked.iter().map(|(_, s)| *s).max().unwrap_or(0);
    picked.retain(|(_, s)| *s == best);
    let mut out: Vec<&AccountQuota> = picked.into_iter().map(|(q, _)| q).collect();
    out.sort_by_key(|q| {
        (
            scope_rank(q.read.scope, model_id),
            q.read.measure,
            q.read.variant.is_some(),
        )
    });
    out
}

/// The job's own scope first.
fn scope_rank(scope: Scope, model_id: &str) -> (bool, Scope) {
    (scope != Scope::of(model_id), scope)
}

/// An increase request as Service Quotas has it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncreaseRequest {
    /// The request id.
    pub id: String,
    /// The quota's code.
    pub code: String,
    /// The value asked for.
    pub desired: f64,
    /// `PENDING`, `CASE_OPENED`, `APPROVED`, `DENIED`, ….
    pub status: String,
    /// When it was made, Unix seconds.
    pub created: Option<i64>,
}

fn request_of(r: &aws_sdk_servicequotas::types::RequestedServiceQuotaChange) -> IncreaseRequest {
    IncreaseRequest {
        id: r.id().unwrap_or_default().to_string(),
        code: r.quota_code().unwrap_or_default().to_string(),
        desired: r.desired_value().unwrap_or(0.0),
        status: r
            .status()
            .map_or("UNKNOWN".to_string(), |s| s.as_str().to_string()),
        created: r.created().map(|t| t.secs()),
    }
}

fn other(region: &str, e: &(dyn std::error::Error + 'static)) -> QuotasError {
    QuotasError::Other {
        region: region.to_string(),
        message: chain(e),
    }
}

/// The increase requests made for the quotas with `codes`, newest first.
pub async fn requests(
    client: &Client,
    region: &str,
    codes: &[&str],
) -> Result<Vec<IncreaseRequest>, QuotasError> {
    let mut pages = client
        .list_requested_service_quota_change_history()
        .service_code("bedrock")
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| other(region, &e))?;
        out.extend(
            page.requested_quotas()
                .iter()
                .map(request_of)
                .filter(|r| codes.contains(&r.code.as_str())),
        );
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.created));
    Ok(out)
}

/// Asks Service Quotas to raise quota `code` to `desired`.
pub async fn request_increase(
    client: &Client,
    region: &str,
    code: &str,
    desired: f64,
) -> Result<IncreaseRequest, QuotasError> {
    let out = client
        .request_service_quota_increase()
        .service_code("bedrock")
        .quota_code(code)
        .desired_value(desired)
        .send()
        .await
        .map_err(|e| other(region, &e))?;
    out.requested_quota()
        .map(request_of)
        .ok_or_else(|| QuotasError::Other {
            region: region.to_string(),
            message: "Service Quotas answered without the request".into(),
        })
}
