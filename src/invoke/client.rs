//! The Bedrock Runtime client and one call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{Credentials, Region};
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, CacheTtl, ContentBlock, ConversationRole,
    ConverseOutput as OutputUnion, ConverseTokensRequest, CountTokensInput, InferenceConfiguration,
    InvokeModelTokensRequest, Message, ServiceTier as SdkServiceTier, ServiceTierType,
    SystemContentBlock,
};
use serde_json::{Value, json};

use super::classify::{CallError, Class, classify};
use crate::job::{Api, Job, ServiceTier};

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No region from the job or the AWS configuration.
    #[error("no AWS region for model {model}: set model.region in the job file, or AWS_REGION")]
    NoRegion {
        /// The model id.
        model: String,
    },
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The reply as JSON (the output's `modelOutput`): the Converse response, or the InvokeModel body.
    pub output: String,
    /// Input tokens Bedrock reported (or the estimate when the reply does not say).
    pub input_tokens: u64,
    /// Output tokens Bedrock reported.
    pub output_tokens: u64,
    /// Wall time of the call.
    pub latency_ms: u64,
    /// The service tier that served the call, when the reply says (it does when one was asked for).
    pub tier: Option<String>,
    /// Input tokens read from the prompt cache (not in `input_tokens`).
    pub cache_read: u64,
    /// Input tokens written to the prompt cache (not in `input_tokens`).
    pub cache_write: u64,
}

/// Sends one job's requests.
#[derive(Debug, Clone)]
pub struct Invoker {
    client: Client,
    model_id: String,
    api: Api,
    /// The service tier the job names for its calls.
    tier: Option<ServiceTier>,
    /// Whether calls stopped naming it (the model does not offer it); shared by clones, so that it holds for
    /// every call from then on.
    tier_dropped: Arc<AtomicBool>,
}

// Connecting to a regional endpoint takes milliseconds; a connect that hangs is a network problem to retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AWS configuration a client of batchrun's is built from: the standard chain (environment, profiles, SSO,
/// instance roles), in `region` when given, at `endpoint_url` when given. `static_credentials` signs with fixed
/// test credentials instead (an embedded emulator checks none), in us-east-1 unless a region is given.
pub async fn sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    static_credentials: bool,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            "AKIDEMULATOR",
            "emulator-secret",
            None,
            None,
            "batchrun-emulator",
        ));
        if region.is_none() {
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    loader.load().await
}

impl Invoker {
    /// A client for `job` against `endpoint_url` (None: the standard AWS endpoint). `static_credentials`
    /// gives fixed test credentials (for the embedded emulator, which checks none) instead of the standard AWS
    /// credential chain.
    pub async fn connect(
        job: &Job,
        endpoint_url: Option<&str>,
        static_credentials: bool,
    ) -> Result<Invoker, InvokeError> {
        let sdk = sdk_config(
            job.model.region.as_deref(),
            endpoint_url,
            static_credentials,
        )
        .await;
        if sdk.region().is_none() {
            return Err(InvokeError::NoRegion {
                model: job.model.id.clone(),
            });
        }
        // batchrun owns retries: the SDK's would hide throttles from the budget and run dry after about a
        // hundred of them (research/bedrock.md §3).
        let config = aws_sdk_bedrockruntime::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(job.timeout)
                    .operation_timeout(job.timeout)
                    .build(),
            )
            .build();
        Ok(Invoker {
            client: Client::from_conf(config),
            model_id: job.model.id.clone(),
            api: job.model.api,
            tier: job.model.service_tier,
            tier_dropped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The service tier calls name, if any.
    pub fn tier(&self) -> Option<ServiceTier> {
        self.tier
            .filter(|_| !self.tier_dropped.load(Ordering::Relaxed))
    }

    /// Calls name no service tier from now on (Bedrock serves the default). Returns whether they named one.
    pub fn drop_tier(&self) -> bool {
        self.tier.is_some() && !self.tier_dropped.swap(true, Ordering::Relaxed)
    }

    /// Sends one request body (as stored in the checkpoint) and returns the reply or the classified error.
    pub async fn call(&self, request: &str, est_tokens: u64) -> Result<Reply, CallError> {
        let started = Instant::now();
        match self.api {
            Api::Converse => {
                let body: Value = serde_json::from_str(request)
                    .map_err(|e| permanent(format!("stored request is not JSON: {e}")))?;
                let (messages, system, config) = converse_parts(&body)?;
                let tier = self.tier().map(|t| {
                    SdkServiceTier::builder()
                        .r#type(ServiceTierType::from(t.as_str()))
                        .build()
                        .expect("a tier has its type")
                });
                let out = self
                    .client
                    .converse()
                    .model_id(&self.model_id)
                    .set_messages(Some(messages))
                    .set_system(system)
                    .inference_config(config)
                    .set_service_tier(tier)
                    .send()
                    .await
                    .map_err(classify)?;
                Ok(converse_reply(&out, started.elapsed()))
            }
            Api::Invoke | Api::Embed => {
                let out = self
                    .client
                    .invoke_model()
                    .model_id(&self.model_id)
                    .content_type("application/json")
                    .accept("application/json")
                    .body(Blob::new(request.as_bytes().to_vec()))
                    .set_service_tier(self.tier().map(|t| ServiceTierType::from(t.as_str())))
                    .send()
                    .await
                    .map_err(classify)?;
                let raw = out.body().as_ref();
                let parsed: Value = serde_json::from_slice(raw)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()));
                let (input, output) = usage_of(&parsed).unwrap_or((est_tokens, 0));
                Ok(Reply {
                    output: parsed.to_string(),
                    input_tokens: input,
                    output_tokens: output,
                    latency_ms: started.elapsed().as_millis() as u64,
                    tier: out.service_tier().map(|t| t.as_str().to_string()),
                    cache_read: 0,
                    cache_write: 0,
                })
            }
        }
    }
}

impl Invoker {
    /// Asks Bedrock's CountTokens how many input tokens a stored request body has; no model call is made and
    /// nothing is charged.
    pub async fn count_tokens(&self, request: &str) -> Result<u64, CallError> {
        let input = match self.api {
            Api::Converse => {
                let body: Value = serde_json::from_str(request)
                    .map_err(|e| permanent(format!("stored request is not JSON: {e}")))?;
                let (messages, system, _) = converse_parts(&body)?;
                CountTokensInput::Converse(
                    ConverseTokensRequest::builder()
                        .set_messages(Some(messages))
                        .set_system(system)
                        .build(),
                )
            }
            Api::Invoke | Api::Embed => CountTokensInput::InvokeModel(
                InvokeModelTokensRequest::builder()
                    .body(Blob::new(request.as_bytes().to_vec()))
                    .build()
                    .map_err(|e| permanent(e.to_string()))?,
            ),
        };
        let out = self
            .client
            .count_tokens()
            .model_id(&self.model_id)
            .input(input)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.input_tokens().max(0) as u64)
    }
}

fn permanent(message: String) -> CallError {
    CallError {
        class: Class::Permanent,
        code: "InvalidRequest".into(),
        message,
    }
}

type ConverseParts = (
    Vec<Message>,
    Option<Vec<SystemContentBlock>>,
    InferenceConfiguration,
);

/// The SDK request of a stored Converse body (`messages`, `system`, `inferenceConfig`), text blocks only.
fn converse_parts(body: &Value) -> Result<ConverseParts, CallError> {
    let mut messages = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        let role = match m["role"].as_str() {
            Some("assistant") => ConversationRole::Assistant,
            _ => ConversationRole::User,
        };
        let mut builder = Message::builder().role(role);
        for block in m["content"].as_array().into_iter().flatten() {
            match (block["text"].as_str(), cache_point(block)?) {
                (Some(t), _) => builder = builder.content(ContentBlock::Text(t.to_string())),
                (None, Some(c)) => builder = builder.content(ContentBlock::CachePoint(c)),
                (None, None) => {
                    return Err(permanent(format!(
                        "only text and cache point content blocks are supported, got {block}"
                    )));
                }
            }
        }
        messages.push(builder.build().map_err(|e| permanent(e.to_string()))?);
    }
    let system = match body["system"].as_array() {
        None => None,
        Some(blocks) => {
            let mut out = Vec::with_capacity(blocks.len());
            for b in blocks {
                if let Some(t) = b["text"].as_str() {
                    out.push(SystemContentBlock::Text(t.to_string()));
                } else if let Some(c) = cache_point(b)? {
                    out.push(SystemContentBlock::CachePoint(c));
                }
            }
            Some(out)
        }
    };
    let c = &body["inferenceConfig"];
    let config = InferenceConfiguration::builder()
        .set_max_tokens(c["maxTokens"].as_i64().map(|n| n as i32))
        .set_temperature(c["temperature"].as_f64().map(|t| t as f32))
        .set_top_p(c["topP"].as_f64().map(|t| t as f32))
        .build();
    Ok((messages, system, config))
}

/// A stored `{"cachePoint": {"type": "default", "ttl": "1h"}}` block as the SDK's, if `block` is one.
fn cache_point(block: &Value) -> Result<Option<CachePointBlock>, CallError> {
    let Some(c) = block.get("cachePoint") else {
        return Ok(None);
    };
    let mut b = CachePointBlock::builder().r#type(CachePointType::Default);
    if let Some(ttl) = c["ttl"].as_str() {
        b = b.ttl(CacheTtl::from(ttl));
    }
    b.build().map(Some).map_err(|e| permanent(e.to_string()))
}

/// The Converse response as JSON, shaped as Bedrock's wire format.
fn converse_reply(out: &ConverseOutput, elapsed: Duration) -> Reply {
    let content: Vec<Value> = match out.output() {
        Some(OutputUnion::Message(m)) => m
            .content()
            .iter()
            .filter_map(|b| b.as_text().ok())
            .map(|t| json!({ "text": t }))
            .collect(),
        _ => Vec::new(),
    };
    let usage = out.usage();
    let input = usage.map_or(0, |u| u.input_tokens().max(0) as u64);
    let output = usage.map_or(0, |u| u.output_tokens().max(0) as u64);
    let read = usage.and_then(|u| u.cache_read_input_tokens());
    let write = usage.and_then(|u| u.cache_write_input_tokens());
    let latency = out
        .metrics()
        .map_or(elapsed.as_millis() as i64, |m| m.latency_ms());
    let (cache_read, cache_write) = (
        read.map_or(0, |n| n.max(0) as u64),
        write.map_or(0, |n| n.max(0) as u64),
    );
    let mut usage_body = json!({
        "inputTokens": input,
        "outputTokens": output,
        "totalTokens": usage.map_or(input + output, |u| u.total_tokens().max(0) as u64),
    });
    if read.is_some() || write.is_some() {
        usage_body["cacheReadInputTokens"] = json!(cache_read);
        usage_body["cacheWriteInputTokens"] = json!(cache_write);
    }
    let body = json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": out.stop_reason().as_str(),
        "usage": usage_body,
        "metrics": { "latencyMs": latency },
    });
    Reply {
        output: body.to_string(),
        input_tokens: input,
        output_tokens: output,
        latency_ms: elapsed.as_millis() as u64,
        tier: out.service_tier().map(|t| t.r#type().as_str().to_string()),
        cache_read,
        cache_write,
    }
}

/// Input and output tokens from a reply body: Converse's `usage`, or the native bodies of the common model
/// families.
pub fn usage_of(body: &Value) -> Option<(u64, u64)> {
    let n = |p: &str| body.pointer(p).and_then(Value::as_u64);
    if let (Some(i), Some(o)) = (n("/usage/input_tokens"), n("/usage/output_tokens")) {
        return Some((i, o));
    }
    if let (Some(i), Some(o)) = (n("/usage/inputTokens"), n("/usage/outputTokens")) {
        return Some((i, o));
    }
    if let (Some(i), Some(o)) = (n("/prompt_token_count"), n("/generation_token_count")) {
        return Some((i, o));
    }
    n("/inputTextTokenCount").map(|i| (i, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_converse_bodies_become_sdk_requests() {
        let body = json!({
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "sys"}],
            "inferenceConfig": {"maxTokens": 50, "temperature": 0.5}
        });
        let (messages, system, config) = converse_parts(&body).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(system.unwrap().len(), 1);
        assert_eq!(config.max_tokens(), Some(50));
        assert_eq!(config.temperature(), Some(0.5));
        let image = json!({"messages": [{"role": "user", "content": [{"image": {}}]}]});
        assert_eq!(converse_parts(&image).unwrap_err().class, Class::Permanent);
    }

    #[test]
    fn usage_from_native_bodies() {
        assert_eq!(
            usage_of(&json!({"usage": {"input_tokens": 3, "output_tokens": 4}})),
            Some((3, 4))
        );
        assert_eq!(
            usage_of(&json!({"prompt_token_count": 5, "generation_token_count": 6})),
            Some((5, 6))
        );
        assert_eq!(
            usage_of(&json!({"embedding": [], "inputTextTokenCount": 7})),
            Some((7, 0))
        );
        assert_eq!(usage_of(&json!({"embeddings": []})), None);
    }
}
