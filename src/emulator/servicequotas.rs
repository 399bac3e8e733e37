//! The Service Quotas API (AWS JSON 1.1: `POST /` with `X-Amz-Target: ServiceQuotasV20190624.<Operation>`),
//! serving the account's Bedrock quotas as the profile sets them: ListServiceQuotas, GetServiceQuota, their
//! AWS-default forms, RequestServiceQuotaIncrease and the request history. Shapes and names follow the Service
//! Quotas API reference (the `service-quotas` model in botocore, 2019-06-24); quota names follow the wording of
//! the Bedrock user guide's "Quotas for the bedrock-runtime endpoint" page:
//!
//! - `On-demand InvokeModel tokens per minute for ${model}` (a model id), `Cross-Region InvokeModel tokens per
//!   minute for ${model}` (a `us.`, `eu.`, … profile), `Global cross-Region model inference tokens per minute
//!   for ${model}` (a `global.` profile);
//! - `… requests per minute for ${model}` when the profile sets `rpm`;
//! - `Model invocation max tokens per day for ${model}` when it sets `tpd`.
//!
//! Quota codes are stable (`L-` and a hash of the name). An increase request is approved after the profile's
//! `approve-after-s`, and then the live quota is the new value: a running client finds the higher ceiling.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::config::{ANY_MODEL, EmulatorConfig, ModelProfile};
use super::text::fnv1a;

/// The `X-Amz-Target` prefix of Service Quotas operations.
pub const TARGET_PREFIX: &str = "ServiceQuotasV20190624.";

/// Model ids whose quotas a profile with `"*"` lists before any call: on-demand, cross-region and global ids of
/// the models most jobs use.
const WELL_KNOWN_MODELS: [&str; 12] = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "amazon.nova-pro-v1:0",
    "us.amazon.nova-pro-v1:0",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "meta.llama3-1-70b-instruct-v1:0",
];

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Rpm,
    Tpm,
    Tpd,
}

/// One quota as listed.
#[derive(Debug, Clone)]
struct Listed {
    code: String,
    name: String,
    model_id: String,
    measure: Measure,
    default: u64,
    value: u64,
}

/// An increase request.
#[derive(Debug, Clone)]
struct Requested {
    id: String,
    code: String,
    name: String,
    desired: f64,
    created: f64,
    status: &'static str,
}

/// The account's requests and the values they raised quotas to.
#[derive(Debug, Default)]
pub struct ServiceQuotas {
    requests: Mutex<Vec<Requested>>,
    /// Quota code → the value an approved request set.
    raised: Mutex<BTreeMap<String, u64>>,
}

/// An error reply: HTTP status, `__type` and message.
pub type Refusal = (u16, &'static str, String);

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The name a model has in quota names: the profile's, or one made from the id (`anthropic.claude-3-5-haiku-
/// 20241022-v1:0` → `Anthropic Claude 3.5 Haiku`, `-v2:0` → `… V2`).
fn display_name(model_id: &str, profile: &ModelProfile) -> String {
    if let Some(name) = &profile.display_name {
        return name.clone();
    }
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    let id = match id.split_once('.') {
        Some(("us" | "eu" | "apac" | "global" | "jp" | "au" | "ca", rest)) => rest,
        _ => id,
    };
    let (provider, rest) = id.split_once('.').unwrap_or(("", id));
    let mut words: Vec<String> = Vec::new();
    if !provider.is_empty() {
        words.push(capitalize(provider));
    }
    let mut version = None;
    let pieces: Vec<&str> = rest.split(['-', '_']).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let digits = piece.chars().all(|c| c.is_ascii_digit());
        if digits && piece.len() == 8 {
            continue; // a release date
        }
        if i == pieces.len() - 1
            && piece.starts_with('v')
            && piece[1..]
                .split(':')
                .next()
                .is_some_and(|v| v.parse::<u32>().is_ok())
        {
            version = piece[1..]
                .split(':')
                .next()
                .and_then(|v| v.parse::<u32>().ok());
            continue;
        }
        // `3-5` is `3.5`.
        if digits
            && words
                .last()
                .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.'))
            && pieces[i - 1].chars().all(|c| c.is_ascii_digit())
        {
            let last = words.last_mut().expect("checked");
            last.push('.');
            last.push_str(piece);
            continue;
        }
        words.push(
            if piece.ends_with('b') && piece[..piece.len() - 1].chars().all(|c| c.is_ascii_digit())
            {
                piece.to_uppercase()
            } else {
                capitalize(piece)
            },
        );
    }
    if let Some(v) = version.filter(|&v| v > 1) {
        words.push(format!("V{v}"));
    }
    words.join(" ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A stable quota code for a quota name: `L-` and eight hex digits.
fn code_of(name: &str) -> String {
    format!("L-{:08X}", fnv1a(name.as_bytes()) as u32)
}

impl ServiceQuotas {
    /// Approves the requests whose time has come, raising their quotas.
    fn approve_due(&self, config: &EmulatorConfig) {
        let Some(after) = config.service_quotas.approve_after_s else {
            return;
        };
        let now = now_s();
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        for r in requests.iter_mut().filter(|r| r.status == "PENDING") {
            if now >= r.created + after {
                r.status = "APPROVED";
                raised.insert(r.code.clone(), r.desired.round() as u64);
            }
        }
    }

    /// Every Bedrock quota the profile sets, for the models it names (and `seen`, the ids served through
    /// `"*"`), with the values increases raised them to.
    fn quotas(&self, config: &EmulatorConfig, seen: &[String], elapsed: f64) -> Vec<Listed> {
        self.approve_due(config);
        let raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<&str> = config
            .models
            .keys()
            .map(String::as_str)
            .filter(|k| *k != ANY_MODEL)
            .collect();
        ids.extend(seen.iter().map(String::as_str));
        // As in an AWS account, every model has its quotas: under `"*"`, the models most jobs use are listed
        // before any call is made to them.
        if config.models.contains_key(ANY_MODEL) {
            ids.extend(WELL_KNOWN_MODELS);
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            // A scheduled quota change is the account's value from then on.
            let Some(profile) = config.profile_for(id).map(|p| p.clone().at(elapsed)) else {
                continue;
            };
            let model = display_name(id, &profile);
            let scope = match id.split_once('.').map(|(p, _)| p) {
                Some("global") => "Global cross-Region model inference",
                Some("us" | "eu" | "apac" | "jp" | "au" | "ca") => "Cross-Region InvokeModel",
                _ => "On-demand InvokeModel",
            };
            let quotas = [
                (
                    Measure::Tpm,
                    profile.tpm,
                    format!("{scope} tokens per minute for {model}"),
                ),
                (
                    Measure::Rpm,
                    profile.rpm,
                    format!("{scope} requests per minute for {model}"),
                ),
                (
                    Measure::Tpd,
                    profile.tpd,
                    format!("Model invocation max tokens per day for {model}"),
                ),
            ];
            for (measure, default, name) in quotas {
                let Some(default) = default else { continue };
                let code = code_of(&format!("{id}/{name}"));
                out.push(Listed {
                    value: raised.get(&code).copied().unwrap_or(default),
                    code,
                    name,
                    model_id: id.to_string(),
                    measure,
                    default,
                });
            }
        }
        out
    }

    /// `profile` as it stands `elapsed` seconds after the emulator started: its scheduled quota changes applied,
    /// then the quotas approved increases raised for `model_id`.
    pub fn live_profile(
        &self,
        config: &EmulatorConfig,
        model_id: &str,
        profile: ModelProfile,
        elapsed: f64,
    ) -> ModelProfile {
        let mut profile = profile.at(elapsed);
        // No request was ever made: the profile is the account (the path every call takes in a benchmark).
        if self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return profile;
        }
        for q in self.quotas(config, &[model_id.to_string()], elapsed) {
            if q.model_id != model_id {
                continue;
            }
            match q.measure {
                Measure::Rpm => profile.rpm = Some(q.value),
                Measure::Tpm => profile.tpm = Some(q.value),
                Measure::Tpd => profile.tpd = Some(q.value),
            }
        }
        profile
    }

    /// Serves `operation` with request `body`; the reply body, or the refusal.
    pub fn serve(
        &self,
        config: &EmulatorConfig,
        seen: &[String],
        operation: &str,
        body: &[u8],
        region: &str,
        elapsed: f64,
    ) -> Result<Value, Refusal> {
        if config.service_quotas.unavailable {
            return Err((500, "ServiceException", "Something went wrong.".to_string()));
        }
        if config.service_quotas.access_denied {
            return Err((
                400,
                "AccessDeniedException",
                "User is not authorized to perform: servicequotas:".to_string() + operation,
            ));
        }
        let input: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
        let service = text("ServiceCode");
        if service.as_deref().is_some_and(|s| s != "bedrock") {
            return Err((
                400,
                "NoSuchResourceException",
                format!(
                    "The request failed because the specified service {} does not exist.",
                    service.unwrap_or_default()
                ),
            ));
        }
        let quotas = self.quotas(config, seen, elapsed);
        let shape = |q: &Listed, defaults: bool| quota_json(q, defaults, region);
        let find = |code: Option<String>| -> Result<&Listed, Refusal> {
            let code = code.unwrap_or_default();
            quotas.iter().find(|q| q.code == code).ok_or((
                400,
                "NoSuchResourceException",
                format!("The request failed because the specified quota {code} does not exist."),
            ))
        };
        match operation {
            "ListServiceQuotas" | "ListAWSDefaultServiceQuotas" => Ok(list(
                &quotas,
                &input,
                operation == "ListAWSDefaultServiceQuotas",
                region,
            )),
            "GetServiceQuota" => Ok(json!({ "Quota": shape(find(text("QuotaCode"))?, false) })),
            "GetAWSDefaultServiceQuota" => {
                Ok(json!({ "Quota": shape(find(text("QuotaCode"))?, true) }))
            }
            "RequestServiceQuotaIncrease" => {
                let q = find(text("QuotaCode"))?;
                let desired = input
                    .get("DesiredValue")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                self.request(q, desired, region)
            }
            "ListRequestedServiceQuotaChangeHistory"
            | "ListRequestedServiceQuotaChangeHistoryByQuota" => Ok(self.history(&input, region)),
            other => Err((
                400,
                "UnknownOperationException",
                format!("{TARGET_PREFIX}{other} is not an operation this emulator serves"),
            )),
        }
    }

    /// The requests made, filtered by `QuotaCode` and `Status` when the input gives them.
    fn history(&self, input: &Value, region: &str) -> Value {
        let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
        let (code, status) = (text("QuotaCode"), text("Status"));
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let listed: Vec<Value> = requests
            .iter()
            .filter(|r| code.as_ref().is_none_or(|c| &r.code == c))
            .filter(|r| status.as_ref().is_none_or(|s| r.status == s))
            .map(|r| request_json(r, region))
            .collect();
        json!({ "RequestedQuotas": listed })
    }

    /// RequestServiceQuotaIncrease for `q`.
    fn request(&self, q: &Listed, desired: f64, region: &str) -> Result<Value, Refusal> {
        if q.measure == Measure::Tpd {
            return Err((
                400,
                "IllegalArgumentException",
                format!("The quota {} is not adjustable.", q.code),
            ));
        }
        if desired <= q.value as f64 {
            return Err((
                400,
                "IllegalArgumentException",
                format!(
                    "The desired value {desired} must be greater than the current value {}.",
                    q.value
                ),
            ));
        }
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if requests
            .iter()
            .any(|r| r.code == q.code && r.status == "PENDING")
        {
            return Err((
                400,
                "ResourceAlreadyExistsException",
                format!("A request for quota {} is already pending.", q.code),
            ));
        }
        let id = format!(
            "{:032x}",
            fnv1a(format!("{}{}{}", q.code, requests.len(), now_s()).as_bytes()) as u128
        );
        let r = Requested {
            id,
            code: q.code.clone(),
            name: q.name.clone(),
            desired,
            created: now_s(),
            status: "PENDING",
        };
        let out = json!({ "RequestedQuota": request_json(&r, region) });
        requests.push(r);
        Ok(out)
    }
}

/// A page of `quotas` (`MaxResults`, at most 100, from `NextToken`), filtered by `QuotaCode` when given, with
/// their AWS defaults as values when `defaults`.
fn list(quotas: &[Listed], input: &Value, defaults: bool, region: &str) -> Value {
    let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let wanted = text("QuotaCode");
    let listed: Vec<&Listed> = quotas
        .iter()
        .filter(|q| wanted.as_ref().is_none_or(|c| &q.code == c))
        .collect();
    let max = input
        .get("MaxResults")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let start: usize = text("NextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = listed
        .iter()
        .skip(start)
        .take(max)
        .map(|q| quota_json(q, defaults, region))
        .collect();
    let mut out = json!({ "Quotas": page });
    if start + max < listed.len() {
        out["NextToken"] = json!((start + max).to_string());
    }
    out
}

fn quota_json(q: &Listed, defaults: bool, region: &str) -> Value {
    let (period, adjustable) = match q.measure {
        Measure::Tpd => ("DAY", false),
        _ => ("MINUTE", true),
    };
    json!({
        "ServiceCode": "bedrock",
        "ServiceName": "Amazon Bedrock",
        "QuotaArn": format!("arn:aws:servicequotas:{region}:123456789012:bedrock/{}", q.code),
        "QuotaCode": q.code,
        "QuotaName": q.name,
        "Value": if defaults { q.default } else { q.value } as f64,
        "Unit": "None",
        "Adjustable": adjustable,
        "GlobalQuota": false,
        "Period": { "PeriodValue": 1, "PeriodUnit": period },
        "QuotaAppliedAtLevel": "ACCOUNT",
    })
}

fn request_json(r: &Requested, region: &str) -> Value {
    json!({
        "Id": r.id,
        "ServiceCode": "bedrock",
        "ServiceName": "Amazon Bedrock",
        "QuotaCode": r.code,
        "QuotaName": r.name,
        "DesiredValue": r.desired,
        "Status": r.status,
        "Created": r.created,
        "LastUpdated": r.created,
        "QuotaArn": format!("arn:aws:servicequotas:{region}:123456789012:bedrock/{}", r.code),
        "GlobalQuota": false,
        "Unit": "None",
        "QuotaRequestedAtLevel": "ACCOUNT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_made_from_ids() {
        let p = ModelProfile::default();
        assert_eq!(
            display_name("anthropic.claude-3-5-haiku-20241022-v1:0", &p),
            "Anthropic Claude 3.5 Haiku"
        );
        assert_eq!(
            display_name("us.anthropic.claude-3-5-sonnet-20241022-v2:0", &p),
            "Anthropic Claude 3.5 Sonnet V2"
        );
        assert_eq!(
            display_name("global.anthropic.claude-sonnet-4-5-20250929-v1:0", &p),
            "Anthropic Claude Sonnet 4.5"
        );
        assert_eq!(
            display_name("meta.llama3-1-70b-instruct-v1:0", &p),
            "Meta Llama3 1 70B Instruct"
        );
        assert_eq!(display_name("m", &p), "M");
        let named = ModelProfile {
            display_name: Some("Amazon Nova Pro".into()),
            ..p
        };
        assert_eq!(
            display_name("amazon.nova-pro-v1:0", &named),
            "Amazon Nova Pro"
        );
    }

    #[test]
    fn a_scheduled_quota_change_is_the_listed_value_from_its_time_on() {
        let config = EmulatorConfig::from_toml(
            "[models.m]\nrpm = 600\nquota-changes = [{ at-s = 30, rpm = 300 }]\n",
            std::path::Path::new("p.toml"),
        )
        .unwrap();
        let sq = ServiceQuotas::default();
        let rpm = |elapsed: f64| {
            sq.quotas(&config, &[], elapsed)
                .into_iter()
                .find(|q| q.model_id == "m" && q.measure == Measure::Rpm)
                .map(|q| q.value)
        };
        assert_eq!(rpm(29.0), Some(600));
        assert_eq!(rpm(30.0), Some(300));
        let profile = config.profile_for("m").unwrap().clone();
        assert_eq!(sq.live_profile(&config, "m", profile, 31.0).rpm, Some(300));
    }
}
