//! Bedrock Runtime's restJson1 wire format, as the emulator reads and writes it.
//!
//! Requests are normalized into a [`Call`]: the prompt text the reply is derived from, the input tokens, the
//! requested `maxTokens` and the body's shape. Replies are built back in the shape the request came in.
//! Errors are framed as Bedrock frames them: the status code, an `x-amzn-ErrorType` header naming the shape and
//! a `{"message": …}` body.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::text::{self, Reply, Stop};

/// An error reply, named as in the Bedrock Runtime model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429, a quota ran out.
    Throttling,
    /// 429, the model is not ready to serve.
    ModelNotReady,
    /// 503, the service (or the emulator's concurrency cap) is overloaded.
    ServiceUnavailable,
    /// 408, the model took too long.
    ModelTimeout,
    /// 424, the model failed to process the request.
    ModelError,
    /// 400, the request is malformed or out of range.
    Validation,
    /// 403, the account may not use the model.
    AccessDenied,
    /// 404, no such model.
    ResourceNotFound,
    /// 500, the service failed.
    InternalServer,
    /// 404, no such operation (unknown path).
    UnknownOperation,
    /// 400, the control plane's: too many batch jobs in flight.
    ServiceQuotaExceeded,
    /// 400, the control plane's: the resource is not in a state that allows it.
    Conflict,
}

impl ErrorKind {
    /// The HTTP status Bedrock answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Throttling | ErrorKind::ModelNotReady => 429,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::ModelTimeout => 408,
            ErrorKind::ModelError => 424,
            ErrorKind::Validation | ErrorKind::ServiceQuotaExceeded | ErrorKind::Conflict => 400,
            ErrorKind::AccessDenied => 403,
            ErrorKind::ResourceNotFound | ErrorKind::UnknownOperation => 404,
            ErrorKind::InternalServer => 500,
        }
    }

    /// The error shape's name, sent in `x-amzn-ErrorType`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::ModelNotReady => "ModelNotReadyException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::ModelTimeout => "ModelTimeoutException",
            ErrorKind::ModelError => "ModelErrorException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::InternalServer => "InternalServerException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            ErrorKind::Conflict => "ConflictException",
        }
    }
}

/// An error to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// Which error.
    pub kind: ErrorKind,
    /// The `message` member of the body.
    pub message: String,
}

impl ErrorReply {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }

    /// The `x-amzn-ErrorType` header value. Real Bedrock appends a `:` and a namespace URL, which clients strip;
    /// sending it too keeps clients honest about that.
    pub fn error_type_header(&self) -> String {
        format!(
            "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            self.kind.name()
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "message": self.message })).expect("a JSON object serializes")
    }
}

fn malformed() -> ErrorReply {
    ErrorReply::new(
        ErrorKind::Validation,
        "Malformed input request, please reformat your input and try again.",
    )
}

/// The operations the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /model/{modelId}/converse`.
    Converse,
    /// `POST /model/{modelId}/invoke`.
    Invoke,
    /// `POST /model/{modelId}/count-tokens`.
    CountTokens,
}

/// Splits `/model/{modelId}/{operation}` and percent-decodes the model id.
pub fn route(path: &str) -> Option<(String, Operation)> {
    let rest = path.strip_prefix("/model/")?;
    let (raw_id, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" => Operation::Converse,
        "invoke" => Operation::Invoke,
        "count-tokens" => Operation::CountTokens,
        _ => return None,
    };
    let id = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .ok()?
        .into_owned();
    if id.is_empty() {
        return None;
    }
    Some((id, op))
}

/// The body shapes the emulator understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A Converse request.
    Converse,
    /// An InvokeModel body in the Anthropic messages format.
    AnthropicMessages,
    /// An InvokeModel body with a single `prompt` (Llama, Mistral style).
    Prompt,
    /// A Titan text embeddings body (`inputText`).
    TitanEmbedding {
        /// Requested vector length.
        dimensions: Option<usize>,
    },
    /// A Cohere embed body (`texts`).
    CohereEmbedding {
        /// The texts to embed.
        texts: Vec<String>,
        /// `output_dimension` (Embed v4).
        dimensions: Option<usize>,
        /// `embedding_types` was given: the reply's `embeddings` is a map by type.
        by_type: bool,
    },
}

impl Shape {
    /// Whether the call generates text (and so reserves output tokens) or only embeds.
    pub fn generates(&self) -> bool {
        !matches!(
            self,
            Shape::TitanEmbedding { .. } | Shape::CohereEmbedding { .. }
        )
    }
}

/// A request reduced to what the emulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The prompt text: every system and message text, each followed by a newline. The reply is derived from it.
    pub prompt: String,
    /// Input tokens, by the emulator's counting rule (plus 3 per message for the role markers).
    pub input_tokens: u64,
    /// The `maxTokens` the request set, if any.
    pub max_tokens: Option<i64>,
    /// The sampling temperature the request set, if any.
    pub temperature: Option<f64>,
    /// The request's shape, which decides the reply's shape.
    pub shape: Shape,
    /// The service tier asked for: Converse's `serviceTier.type`, InvokeModel's `X-Amzn-Bedrock-Service-Tier`
    /// header (set by the server, which reads headers).
    pub tier: Option<String>,
    /// The prompt before the request's last Converse `cachePoint`, if it has one.
    pub cache: Option<CachePrefix>,
}

/// The part of a prompt before a cache point: what the cache is keyed on, and how long an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePrefix {
    /// FNV-1a of the prompt text up to the cache point.
    pub hash: u64,
    /// Its input tokens.
    pub tokens: u64,
    /// The entry's time to live: 5 minutes, or an hour when the cache point says `"ttl": "1h"`.
    pub ttl_s: u64,
}

const TOKENS_PER_MESSAGE: u64 = 3;

/// Builds the prompt and counts it, from the system texts and each message's texts.
#[derive(Default)]
struct PromptBuilder {
    prompt: String,
    tokens: u64,
    cache: Option<CachePrefix>,
}

impl PromptBuilder {
    fn text(&mut self, text: &str) {
        self.prompt.push_str(text);
        self.prompt.push('\n');
        self.tokens += text::count_tokens(text);
    }

    fn message(&mut self) {
        self.tokens += TOKENS_PER_MESSAGE;
    }

    /// A cache point: everything so far is the cacheable prefix (the last cache point of a request wins).
    fn cache_point(&mut self, ttl: Option<&str>) {
        self.cache = Some(CachePrefix {
            hash: text::fnv1a(self.prompt.as_bytes()),
            tokens: self.tokens,
            ttl_s: if ttl == Some("1h") { 3600 } else { 300 },
        });
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseBody {
    #[serde(default)]
    messages: Vec<ConverseMessage>,
    #[serde(default)]
    system: Vec<TextBlock>,
    inference_config: Option<InferenceConfig>,
    service_tier: Option<TierBody>,
}

/// Converse's `serviceTier`: `{"type": "flex"}`.
#[derive(Deserialize)]
struct TierBody {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ConverseMessage {
    #[allow(dead_code)]
    role: String,
    content: Vec<TextBlock>,
}

// A Converse content block is a union; only its `text` and `cachePoint` members matter here, the others are
// accepted and count no tokens.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TextBlock {
    text: Option<String>,
    cache_point: Option<CachePointBody>,
}

/// `{"cachePoint": {"type": "default", "ttl": "1h"}}`.
#[derive(Deserialize)]
struct CachePointBody {
    ttl: Option<String>,
}

impl TextBlock {
    fn add_to(&self, p: &mut PromptBuilder) {
        if let Some(t) = &self.text {
            p.text(t);
        }
        if let Some(c) = &self.cache_point {
            p.cache_point(c.ttl.as_deref());
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    max_tokens: Option<i64>,
    temperature: Option<f64>,
}

/// Reads a Converse request body.
pub fn parse_converse(body: &[u8]) -> Result<Call, ErrorReply> {
    let req: ConverseBody = serde_json::from_slice(body).map_err(|_| malformed())?;
    converse_call(req)
}

fn converse_call(req: ConverseBody) -> Result<Call, ErrorReply> {
    if req.messages.is_empty() {
        return Err(ErrorReply::new(
            ErrorKind::Validation,
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let mut p = PromptBuilder::default();
    for block in &req.system {
        block.add_to(&mut p);
    }
    for message in &req.messages {
        p.message();
        for block in &message.content {
            block.add_to(&mut p);
        }
    }
    let config = req.inference_config;
    Ok(Call {
        prompt: p.prompt,
        input_tokens: p.tokens,
        max_tokens: config.as_ref().and_then(|c| c.max_tokens),
        temperature: config.and_then(|c| c.temperature),
        shape: Shape::Converse,
        tier: req.service_tier.map(|t| t.kind),
        cache: p.cache,
    })
}

/// Reads an InvokeModel body, recognizing the model family by its keys.
pub fn parse_invoke(body: &[u8]) -> Result<Call, ErrorReply> {
    let value: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
    let obj = value.as_object().ok_or_else(malformed)?;
    let mut p = PromptBuilder::default();
    if obj.contains_key("anthropic_version") || obj.contains_key("messages") {
        let max_tokens = obj.get("max_tokens").ok_or_else(|| {
            ErrorReply::new(
                ErrorKind::Validation,
                "Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again.",
            )
        })?;
        let max_tokens = max_tokens.as_i64().ok_or_else(malformed)?;
        for t in anthropic_texts(obj.get("system"))? {
            p.text(t);
        }
        let messages = obj
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(malformed)?;
        if messages.is_empty() {
            return Err(malformed());
        }
        for m in messages {
            p.message();
            for t in anthropic_texts(m.get("content"))? {
                p.text(t);
            }
        }
        return Ok(Call {
            prompt: p.prompt,
            input_tokens: p.tokens,
            max_tokens: Some(max_tokens),
            temperature: obj.get("temperature").and_then(Value::as_f64),
            shape: Shape::AnthropicMessages,
            tier: None,
            cache: None,
        });
    }
    if obj.contains_key("inputText") || obj.contains_key("texts") {
        return parse_embedding(obj, p);
    }
    if let Some(prompt) = obj.get("prompt") {
        p.text(prompt.as_str().ok_or_else(malformed)?);
        let max_tokens = match obj.get("max_gen_len").or_else(|| obj.get("max_tokens")) {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(malformed)?),
        };
        return Ok(Call {
            prompt: p.prompt,
            input_tokens: p.tokens,
            max_tokens,
            temperature: obj.get("temperature").and_then(Value::as_f64),
            shape: Shape::Prompt,
            tier: None,
            cache: None,
        });
    }
    Err(malformed())
}

/// A Titan (`inputText`) or Cohere (`texts`) embeddings body.
fn parse_embedding(
    obj: &serde_json::Map<String, Value>,
    mut p: PromptBuilder,
) -> Result<Call, ErrorReply> {
    if let Some(text) = obj.get("inputText") {
        p.text(text.as_str().ok_or_else(malformed)?);
        let dimensions = dimensions(obj.get("dimensions"), &TITAN_DIMENSIONS)?;
        return Ok(embedding_call(p, Shape::TitanEmbedding { dimensions }));
    }
    let texts = obj.get("texts").ok_or_else(malformed)?;
    let texts: Vec<String> = serde_json::from_value(texts.clone()).map_err(|_| malformed())?;
    if texts.is_empty() {
        return Err(malformed());
    }
    if texts.len() > COHERE_MAX_TEXTS {
        return Err(ErrorReply::new(
            ErrorKind::Validation,
            format!(
                "Malformed input request: expected maxItems: {COHERE_MAX_TEXTS}, actual: {}, please reformat your input and try again.",
                texts.len()
            ),
        ));
    }
    for t in &texts {
        p.text(t);
    }
    let dimensions = dimensions(obj.get("output_dimension"), &COHERE_V4_DIMENSIONS)?;
    let by_type = obj.get("embedding_types").is_some();
    Ok(embedding_call(
        p,
        Shape::CohereEmbedding {
            texts,
            dimensions,
            by_type,
        },
    ))
}

// Vector lengths and limits as AWS documents them: Titan Text Embeddings V2 takes `dimensions` 256, 512 or
// 1024 (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html); Cohere Embed
// takes up to 96 `texts` a call, and v4 an `output_dimension` of 256, 512, 1024 or 1536
// (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed.html).
const TITAN_DIMENSIONS: [u64; 3] = [256, 512, 1024];
const COHERE_V4_DIMENSIONS: [u64; 4] = [256, 512, 1024, 1536];
const COHERE_MAX_TEXTS: usize = 96;

/// A requested vector length, if any, that must be one of `allowed`.
fn dimensions(value: Option<&Value>, allowed: &[u64]) -> Result<Option<usize>, ErrorReply> {
    let Some(v) = value else { return Ok(None) };
    let d = v.as_u64().ok_or_else(malformed)?;
    if !allowed.contains(&d) {
        let list: Vec<String> = allowed.iter().map(u64::to_string).collect();
        return Err(ErrorReply::new(
            ErrorKind::Validation,
            format!(
                "Malformed input request: #/dimensions: {d} is not a valid enum value ({}), please reformat your input and try again.",
                list.join(", ")
            ),
        ));
    }
    Ok(Some(d as usize))
}

fn embedding_call(p: PromptBuilder, shape: Shape) -> Call {
    Call {
        prompt: p.prompt,
        input_tokens: p.tokens,
        max_tokens: None,
        temperature: None,
        shape,
        tier: None,
        cache: None,
    }
}

/// The texts of an Anthropic `system` or `content` member: a string, or a list of `{"type": "text", "text"}`.
fn anthropic_texts(value: Option<&Value>) -> Result<Vec<&str>, ErrorReply> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(blocks)) => Ok(blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect()),
        Some(_) => Err(malformed()),
    }
}

/// Reads a CountTokens body: `{"input": {"converse": {…}}}` or `{"input": {"invokeModel": {"body": base64}}}`.
pub fn parse_count_tokens(body: &[u8]) -> Result<Call, ErrorReply> {
    let value: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
    let input = value.get("input").ok_or_else(malformed)?;
    if let Some(converse) = input.get("converse") {
        let req: ConverseBody =
            serde_json::from_value(converse.clone()).map_err(|_| malformed())?;
        return converse_call(req);
    }
    if let Some(encoded) = input
        .get("invokeModel")
        .and_then(|i| i.get("body"))
        .and_then(Value::as_str)
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| malformed())?;
        return parse_invoke(&raw);
    }
    Err(malformed())
}

/// A finished call's figures, for the reply body and headers.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// The model id, echoed by some native bodies.
    pub model_id: &'a str,
    /// The request id.
    pub request_id: &'a str,
    /// Input tokens, those read from or written to the cache left out (as Bedrock counts them).
    pub input_tokens: u64,
    /// Input tokens read from the cache, and written to it: `Some` when the request had a cache point.
    pub cached: Option<(u64, u64)>,
    /// The generated reply (empty for embeddings).
    pub reply: &'a Reply,
    /// Latency reported in `metrics.latencyMs`.
    pub latency_ms: u64,
    /// Vector length for embeddings.
    pub dimensions: usize,
}

fn stop_reason_converse(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "end_turn",
        Stop::MaxTokens => "max_tokens",
    }
}

/// Converse's `usage`: with the cache's counts when the request had a cache point (`totalTokens` counts every
/// input token, cached or not).
fn usage(o: &Outcome<'_>, output: u64) -> Value {
    let (read, write) = o.cached.unwrap_or((0, 0));
    let mut u = json!({
        "inputTokens": o.input_tokens,
        "outputTokens": output,
        "totalTokens": o.input_tokens + read + write + output,
    });
    if o.cached.is_some() {
        u["cacheReadInputTokens"] = json!(read);
        u["cacheWriteInputTokens"] = json!(write);
    }
    u
}

/// The success body for a call of `shape`.
pub fn reply_body(shape: &Shape, call_prompt: &str, o: &Outcome<'_>) -> Value {
    let output = o.reply.output_tokens;
    match shape {
        Shape::Converse => json!({
            "output": { "message": { "role": "assistant", "content": [ { "text": o.reply.text } ] } },
            "stopReason": stop_reason_converse(o.reply.stop),
            "usage": usage(o, output),
            "metrics": { "latencyMs": o.latency_ms },
        }),
        Shape::AnthropicMessages => json!({
            "id": format!("msg_bdrk_{}", o.request_id.replace('-', "")),
            "type": "message",
            "role": "assistant",
            "model": o.model_id,
            "content": [ { "type": "text", "text": o.reply.text } ],
            "stop_reason": stop_reason_converse(o.reply.stop),
            "stop_sequence": null,
            "usage": { "input_tokens": o.input_tokens, "output_tokens": output },
        }),
        Shape::Prompt => json!({
            "generation": o.reply.text,
            "prompt_token_count": o.input_tokens,
            "generation_token_count": output,
            "stop_reason": match o.reply.stop { Stop::EndTurn => "stop", Stop::MaxTokens => "length" },
        }),
        Shape::TitanEmbedding { dimensions } => {
            // V2 also gives the vector by type ("float" unless other types were asked for).
            let vector = text::embedding(call_prompt, dimensions.unwrap_or(o.dimensions));
            json!({
                "embedding": vector,
                "inputTextTokenCount": o.input_tokens,
                "embeddingsByType": { "float": vector },
            })
        }
        Shape::CohereEmbedding {
            texts,
            dimensions,
            by_type,
        } => {
            let vectors: Vec<Vec<f32>> = texts
                .iter()
                .map(|t| text::embedding(t, dimensions.unwrap_or(o.dimensions)))
                .collect();
            let (kind, embeddings) = if *by_type {
                ("embeddings_by_type", json!({ "float": vectors }))
            } else {
                ("embeddings_floats", json!(vectors))
            };
            json!({
                "id": o.request_id,
                "response_type": kind,
                "embeddings": embeddings,
                "texts": texts,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_the_model_id() {
        assert_eq!(
            route("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            Some((
                "anthropic.claude-3-haiku-20240307-v1:0".into(),
                Operation::Converse
            ))
        );
        assert_eq!(
            route("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x/invoke"),
            Some((
                "arn:aws:bedrock:us-east-1:123:inference-profile/us.x".into(),
                Operation::Invoke
            ))
        );
        assert_eq!(
            route("/model/m/count-tokens"),
            Some(("m".into(), Operation::CountTokens))
        );
        assert_eq!(route("/model/m/converse-stream"), None);
        assert_eq!(route("/model//converse"), None);
        assert_eq!(route("/other/m/converse"), None);
    }

    #[test]
    fn converse_prompt_and_tokens() {
        let call = parse_converse(
            br#"{"system":[{"text":"Be terse."}],
                 "messages":[{"role":"user","content":[{"text":"Hello there"},{"image":{}}]}],
                 "inferenceConfig":{"maxTokens":64,"temperature":0.5}}"#,
        )
        .unwrap();
        assert_eq!(call.prompt, "Be terse.\nHello there\n");
        // "Be terse." = 3 tokens, "Hello there" = 2, one message = 3.
        assert_eq!(call.input_tokens, 8);
        assert_eq!(call.max_tokens, Some(64));
        assert_eq!(call.temperature, Some(0.5));
    }

    #[test]
    fn converse_without_messages_is_a_validation_error() {
        let err = parse_converse(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            parse_converse(b"{not json").unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn invoke_bodies_by_family() {
        let anthropic = parse_invoke(
            br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"system":"Sys",
                 "messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#,
        )
        .unwrap();
        assert_eq!(anthropic.shape, Shape::AnthropicMessages);
        assert_eq!(anthropic.prompt, "Sys\nHi\n");
        assert_eq!(anthropic.max_tokens, Some(100));

        let titan = parse_invoke(br#"{"inputText":"a b c","dimensions":256}"#).unwrap();
        assert_eq!(
            titan.shape,
            Shape::TitanEmbedding {
                dimensions: Some(256)
            }
        );
        assert_eq!(titan.input_tokens, 3);
        assert!(!titan.shape.generates());

        let cohere =
            parse_invoke(br#"{"texts":["x","y"],"input_type":"search_document"}"#).unwrap();
        assert!(
            matches!(cohere.shape, Shape::CohereEmbedding { ref texts, .. } if texts.len() == 2)
        );

        let llama = parse_invoke(br#"{"prompt":"Tell me","max_gen_len":20}"#).unwrap();
        assert_eq!(llama.shape, Shape::Prompt);
        assert_eq!(llama.max_tokens, Some(20));

        let missing = parse_invoke(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(
            missing.message.contains("max_tokens"),
            "{}",
            missing.message
        );
        assert_eq!(
            parse_invoke(br#"{"foo":1}"#).unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn count_tokens_matches_the_call_it_counts() {
        let converse =
            br#"{"messages":[{"role":"user","content":[{"text":"Count me, please."}]}]}"#;
        let wrapped = format!(
            r#"{{"input":{{"converse":{}}}}}"#,
            std::str::from_utf8(converse).unwrap()
        );
        assert_eq!(
            parse_count_tokens(wrapped.as_bytes()).unwrap().input_tokens,
            parse_converse(converse).unwrap().input_tokens
        );
        let native = br#"{"anthropic_version":"x","max_tokens":5,"messages":[{"role":"user","content":"Count me"}]}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(native);
        let wrapped = format!(r#"{{"input":{{"invokeModel":{{"body":"{b64}"}}}}}}"#);
        assert_eq!(
            parse_count_tokens(wrapped.as_bytes()).unwrap().input_tokens,
            parse_invoke(native).unwrap().input_tokens
        );
    }

    #[test]
    fn error_framing() {
        let e = ErrorReply::new(ErrorKind::Throttling, "Too many tokens");
        assert_eq!(e.kind.status(), 429);
        assert!(e.error_type_header().starts_with("ThrottlingException:"));
        assert_eq!(e.body(), br#"{"message":"Too many tokens"}"#);
    }
}
