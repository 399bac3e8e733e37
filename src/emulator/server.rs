//! The HTTP server: routing, the per-request flow (faults, admission, latency, settlement) and the handle
//! that tests and the CLI hold.
//!
//! A request goes through, in order: route and model lookup (404), access (403), body and limits (400),
//! a fault drawn before admission (503, 500, 429 not-ready, reset), the concurrency cap (503), quota admission
//! (429), the simulated latency, a fault drawn after admission (hang, 408, 424, malformed), settlement, reply.
//! A request whose client goes away while it is in flight is still settled, as Bedrock still charges it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::{self, BatchJobs};
use super::config::{ConfigError, EmulatorConfig, Fault, ModelProfile};
use super::quota::{Quota, Reservation, Throttle};
use super::servicequotas::{self, ServiceQuotas};
use super::stats::{Counters, ModelStats, Stats};
use super::text::{self, Reply, mix64, unit};
use super::wire::{self, Call, ErrorKind, ErrorReply, Operation, Outcome, Shape};

/// The path of the stats endpoint.
pub const STATS_PATH: &str = "/_emulator/stats";

// InvokeModel accepts bodies up to 25,000,000 bytes.
const MAX_BODY: usize = 25_000_000;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// A running emulator. Dropping the handle stops it.
#[derive(Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL to give an SDK client, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An SDK client configuration aimed at this emulator: region `us-east-1`, fixed test credentials (the
    /// emulator accepts any signature) and the SDK's own retries off, so that every error reaches the caller.
    /// Add timeouts or other settings to the builder before `build()`.
    pub fn sdk_config(&self) -> aws_sdk_bedrockruntime::config::Builder {
        use aws_sdk_bedrockruntime::config::{
            BehaviorVersion, Credentials, Region, retry::RetryConfig,
        };
        aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDEMULATOR",
                "emulator-secret",
                None,
                None,
                "batchrun-emulator",
            ))
            .endpoint_url(self.endpoint())
            .retry_config(RetryConfig::disabled())
    }

    /// A snapshot of the counts.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting, closes every connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts an emulator on `addr` (port 0 picks a free port) on the current Tokio runtime.
pub async fn start(
    config: EmulatorConfig,
    addr: SocketAddr,
) -> Result<EmulatorHandle, EmulatorError> {
    config.validate()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| EmulatorError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind { addr, source })?;
    let shared = Arc::new(Shared::new(config));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, shared.clone(), cancel.clone()));
    Ok(EmulatorHandle {
        addr,
        shared,
        cancel,
        task: Some(task),
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Abort {}

/// Any HTTP reply the emulator sends: a model's answer, stats, or an error in Bedrock's framing.
type HttpReply = Response<Full<Bytes>>;

#[derive(Debug)]
struct Shared {
    config: EmulatorConfig,
    started: Instant,
    models: Mutex<BTreeMap<String, ModelState>>,
    next_request: AtomicU64,
    count_tokens_requests: AtomicU64,
    /// The Service Quotas API's state: increase requests and the values they raised.
    service_quotas: ServiceQuotas,
    /// The batch inference jobs made.
    batch: Arc<BatchJobs>,
}

#[derive(Debug)]
struct ModelState {
    quota: Quota,
    /// Requests seen, numbering the fault and jitter draws.
    seq: u64,
    stats: ModelStats,
    /// Cached prompt prefixes, by hash: when each entry expires (a read starts its time to live again).
    cache: std::collections::HashMap<u64, Instant>,
}

impl ModelState {
    /// Input tokens the request reads from the prompt cache and writes to it: its prefix is read when an entry
    /// for it lives, else written (and kept for its time to live); a model without caching, or a prefix under the
    /// model's minimum, does neither.
    fn cached(
        &mut self,
        p: &ModelProfile,
        prefix: Option<wire::CachePrefix>,
        now: Instant,
    ) -> (u64, u64) {
        let Some(prefix) = prefix.filter(|c| p.prompt_caching && c.tokens >= p.cache_min_tokens)
        else {
            return (0, 0);
        };
        let expires = now + Duration::from_secs(prefix.ttl_s);
        let hit = self.cache.get(&prefix.hash).is_some_and(|t| *t > now);
        self.cache.retain(|_, t| *t > now);
        self.cache.insert(prefix.hash, expires);
        if hit {
            (prefix.tokens, 0)
        } else {
            (0, prefix.tokens)
        }
    }
}

impl ModelState {
    /// A fault drawn for a request, counted in this second and by kind.
    fn count_fault(&mut self, second: u64, f: Fault) {
        self.stats.bump(second, |c| c.faults += 1);
        *self
            .stats
            .faults_by_kind
            .entry(f.name().to_string())
            .or_default() += 1;
    }
}

impl Shared {
    fn new(config: EmulatorConfig) -> Self {
        Shared {
            config,
            started: Instant::now(),
            models: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(0),
            count_tokens_requests: AtomicU64::new(0),
            service_quotas: ServiceQuotas::default(),
            batch: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ModelState>> {
        // A panic while holding the lock leaves counts that are still worth serving.
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the emulator started (what its scheduled quota changes count from).
    fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let a = mix64(n ^ self.config.seed);
        let b = mix64(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn stats(&self) -> Stats {
        let models = self.lock();
        Stats {
            uptime_s: self.uptime_s(),
            count_tokens_requests: self.count_tokens_requests.load(Ordering::Relaxed),
            models: models
                .iter()
                .map(|(id, m)| (id.clone(), m.stats.clone()))
                .collect(),
            batch: self.batch.stats(),
        }
    }

    /// Runs `f` on the state of `model_id`, creating it on first use.
    fn with_model<T>(
        &self,
        model_id: &str,
        profile: &ModelProfile,
        now: Instant,
        f: impl FnOnce(&mut ModelState, u64) -> T,
    ) -> T {
        let second = self.second(now);
        let mut models = self.lock();
        if !models.contains_key(model_id) {
            models.insert(
                model_id.to_string(),
                ModelState {
                    quota: Quota::new(profile, now),
                    seq: 0,
                    cache: std::collections::HashMap::new(),
                    stats: ModelStats {
                        first_request_ms: now.saturating_duration_since(self.started).as_millis()
                            as u64,
                        ..ModelStats::default()
                    },
                },
            );
        }
        let state = models.get_mut(model_id).expect("inserted above");
        // An approved quota increase takes effect on the next request.
        state.quota.conform(profile, now);
        f(state, second)
    }
}

fn json_response(status: u16, request_id: &str, body: Vec<u8>) -> HttpReply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-amzn-RequestId",
        HeaderValue::from_str(request_id).expect("hex request id"),
    );
    resp
}

fn error_response(err: &ErrorReply, request_id: &str) -> HttpReply {
    let mut resp = json_response(err.kind.status(), request_id, err.body());
    resp.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_str(&err.error_type_header()).expect("ascii error type"),
    );
    resp
}

/// A Service Quotas operation (AWS JSON 1.1), answered from the profile's quotas and the requests made.
async fn service_quotas(
    shared: &Shared,
    operation: &str,
    req: Request<Incoming>,
    request_id: &str,
) -> HttpReply {
    // The Region is the one the client signed for (`Credential=AKID/date/REGION/servicequotas/…`).
    let region = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("us-east-1")
        .to_string();
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let seen: Vec<String> = shared.lock().keys().cloned().collect();
    let (status, body) = match shared.service_quotas.serve(
        &shared.config,
        &seen,
        operation,
        &body,
        &region,
        shared.uptime_s(),
    ) {
        Ok(out) => (200, out),
        Err((status, kind, message)) => (status, json!({ "__type": kind, "message": message })),
    };
    let mut resp = json_response(status, request_id, body.to_string().into_bytes());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    resp
}

/// A batch inference control-plane operation (restJson1, as Bedrock's control plane frames it).
async fn batch_operation(
    shared: &Shared,
    op: batch::Op,
    req: Request<Incoming>,
    request_id: &str,
) -> HttpReply {
    let query = req.uri().query().map(str::to_string);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match shared
        .batch
        .serve(&shared.config, op, query.as_deref(), &body)
    {
        Ok(v) => json_response(200, request_id, v.to_string().into_bytes()),
        Err(err) => error_response(&err, request_id),
    }
}

/// A model call's service tier header (InvokeModel names its tier there; Converse in its body) and its body.
async fn read_request(req: Request<Incoming>) -> Result<(Option<String>, Bytes), ErrorReply> {
    let tier_header = req
        .headers()
        .get("x-amzn-bedrock-service-tier")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok((tier_header, collected.to_bytes())),
        Err(_) => Err(ErrorReply::new(
            ErrorKind::Validation,
            "The request body could not be read or is larger than 25,000,000 bytes.",
        )),
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<HttpReply, Abort> {
    let request_id = shared.request_id();
    if req.uri().path() == STATS_PATH {
        if req.method() != Method::GET {
            let err = ErrorReply::new(ErrorKind::UnknownOperation, "use GET for emulator stats");
            return Ok(error_response(&err, &request_id));
        }
        let body = serde_json::to_vec_pretty(&shared.stats()).expect("stats serialize");
        return Ok(json_response(200, &request_id, body));
    }
    if let Some(operation) = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(servicequotas::TARGET_PREFIX))
        .map(str::to_string)
    {
        return Ok(service_quotas(&shared, &operation, req, &request_id).await);
    }
    if let Some(op) = batch::route(req.method(), req.uri().path()) {
        return Ok(batch_operation(&shared, op, req, &request_id).await);
    }
    let Some((model_id, op)) =
        wire::route(req.uri().path()).filter(|_| req.method() == Method::POST)
    else {
        let err = ErrorReply::new(
            ErrorKind::UnknownOperation,
            format!(
                "{} {} is not an operation this emulator serves",
                req.method(),
                req.uri().path()
            ),
        );
        return Ok(error_response(&err, &request_id));
    };
    let Some(profile) = shared.config.profile_for(&model_id).cloned() else {
        let err = ErrorReply::new(
            ErrorKind::ResourceNotFound,
            "The provided model identifier is invalid.",
        );
        return Ok(error_response(&err, &request_id));
    };
    let profile =
        shared
            .service_quotas
            .live_profile(&shared.config, &model_id, profile, shared.uptime_s());
    let (tier_header, body) = match read_request(req).await {
        Ok(read) => read,
        Err(err) => return Ok(error_response(&err, &request_id)),
    };
    let parsed = match op {
        Operation::CountTokens => {
            shared.count_tokens_requests.fetch_add(1, Ordering::Relaxed);
            return Ok(match wire::parse_count_tokens(&body) {
                Ok(call) => {
                    let body = json!({ "inputTokens": call.input_tokens }).to_string();
                    json_response(200, &request_id, body.into_bytes())
                }
                Err(err) => error_response(&err, &request_id),
            });
        }
        Operation::Converse => wire::parse_converse(&body),
        Operation::Invoke => wire::parse_invoke(&body).map(|call| wire::Call {
            tier: tier_header,
            ..call
        }),
    };
    let request = Routed {
        shared,
        model_id,
        profile,
        request_id,
        op,
    };
    match parsed {
        Ok(call) => request.serve(call).await,
        Err(err) => Ok(request.reject(err)),
    }
}

/// A routed, parsed request on its way through the quota and latency model.
struct Routed {
    shared: Arc<Shared>,
    model_id: String,
    profile: ModelProfile,
    request_id: String,
    op: Operation,
}

/// What happens to a request once it is past the checks that need the lock.
enum Verdict {
    Refuse(ErrorReply),
    Drop,
    Admitted {
        reservation: Reservation,
        after: Option<Fault>,
        jitter_draw: f64,
        /// Input tokens read from the prompt cache, and written to it.
        cached: (u64, u64),
    },
}

impl Routed {
    fn reject(&self, err: ErrorReply) -> HttpReply {
        let now = Instant::now();
        self.shared
            .with_model(&self.model_id, &self.profile, now, |m, second| {
                m.stats.bump(second, |c| {
                    c.requests += 1;
                    c.rejected += 1;
                });
            });
        error_response(&err, &self.request_id)
    }

    fn check_limits(&self, call: &Call) -> Result<u64, ErrorReply> {
        let p = &self.profile;
        if p.access_denied {
            return Err(ErrorReply::new(
                ErrorKind::AccessDenied,
                "You don't have access to the model with the specified model ID.",
            ));
        }
        // Bedrock's exact wording for a tier the model lacks is not documented; this one names the tier.
        if let Some(tier) = call.tier.as_deref().filter(|t| !p.offers(t)) {
            return Err(ErrorReply::new(
                ErrorKind::Validation,
                format!(
                    "The model {} does not support the {tier} service tier. Try again with the default service tier.",
                    self.model_id
                ),
            ));
        }
        let max_tokens = if call.shape.generates() {
            match call.max_tokens {
                None => p.max_output_tokens,
                Some(n) if n < 1 => {
                    return Err(ErrorReply::new(
                        ErrorKind::Validation,
                        format!("The value of maxTokens must be at least 1, got {n}."),
                    ));
                }
                Some(n) if n as u64 > p.max_output_tokens => {
                    return Err(ErrorReply::new(
                        ErrorKind::Validation,
                        format!(
                            "The maximum tokens you requested exceeds the model limit of {max}. Try again with a maximum tokens value that is lower than {max}.",
                            max = p.max_output_tokens
                        ),
                    ));
                }
                Some(n) => n as u64,
            }
        } else {
            0
        };
        if let Some(t) = call.temperature
            && !(0.0..=1.0).contains(&t)
        {
            return Err(ErrorReply::new(
                ErrorKind::Validation,
                format!("The value of temperature must be between 0 and 1, got {t}."),
            ));
        }
        // Cohere Embed's limit is on each text (512 tokens for v3), whatever the number of texts in the call;
        // other models' is on the whole input.
        let longest = match &call.shape {
            Shape::CohereEmbedding { texts, .. } => texts
                .iter()
                .map(|t| text::count_tokens(t))
                .max()
                .unwrap_or(0),
            _ => call.input_tokens,
        };
        if longest > p.context_window {
            return Err(ErrorReply::new(
                ErrorKind::Validation,
                format!(
                    "Input is too long for requested model. The input is {longest} tokens; the model accepts at most {}.",
                    p.context_window
                ),
            ));
        }
        Ok(max_tokens)
    }

    /// The decisions that need the model's state: fault draw, concurrency cap, quota admission.
    fn decide(&self, call: &Call, max_tokens: u64, now: Instant) -> Verdict {
        let seed = self.shared.config.seed ^ text::fnv1a(self.model_id.as_bytes());
        let p = &self.profile;
        self.shared.with_model(&self.model_id, p, now, |m, second| {
            m.stats.bump(second, |c| c.requests += 1);
            let seq = m.seq;
            m.seq += 1;
            let fault = p.faults.pick(unit(seed ^ mix64(seq)));
            let before = match fault {
                Some(
                    f @ (Fault::ServiceUnavailable
                    | Fault::Internal
                    | Fault::ModelNotReady
                    | Fault::ConnectionReset),
                ) => Some(f),
                _ => None,
            };
            if let Some(f) = before {
                m.count_fault(second, f);
                return match f {
                    Fault::ServiceUnavailable => Verdict::Refuse(ErrorReply::new(
                        ErrorKind::ServiceUnavailable,
                        "Too many connections, please wait before trying again.",
                    )),
                    Fault::Internal => Verdict::Refuse(ErrorReply::new(
                        ErrorKind::InternalServer,
                        "The server encountered an internal error while processing the request.",
                    )),
                    Fault::ModelNotReady => Verdict::Refuse(ErrorReply::new(
                        ErrorKind::ModelNotReady,
                        "Model is not ready to serve inference requests. Please try again later.",
                    )),
                    _ => Verdict::Drop,
                };
            }
            if let Some(cap) = p.max_concurrency
                && m.stats.in_flight >= u64::from(cap)
            {
                m.stats.bump(second, |c| c.busy += 1);
                return Verdict::Refuse(ErrorReply::new(
                    ErrorKind::ServiceUnavailable,
                    "Too many connections, please wait before trying again.",
                ));
            }
            match m.quota.admit(call.input_tokens, max_tokens, now) {
                Err(throttle) => {
                    m.stats.bump(second, |c| match throttle {
                        Throttle::Requests => c.throttled_rpm += 1,
                        Throttle::Tokens => c.throttled_tpm += 1,
                        Throttle::TokensPerDay => c.throttled_tpd += 1,
                    });
                    Verdict::Refuse(ErrorReply::new(ErrorKind::Throttling, throttle.message()))
                }
                Ok(reservation) => {
                    m.stats.enter(second);
                    Verdict::Admitted {
                        reservation,
                        after: fault,
                        jitter_draw: unit(seed ^ mix64(seq) ^ 0x5eed),
                        cached: m.cached(p, call.cache, now),
                    }
                }
            }
        })
    }

    async fn serve(self, call: Call) -> Result<HttpReply, Abort> {
        let started = Instant::now();
        let max_tokens = match self.check_limits(&call) {
            Ok(n) => n,
            Err(err) => return Ok(self.reject(err)),
        };
        let (reservation, after, jitter_draw, cached) =
            match self.decide(&call, max_tokens, started) {
                Verdict::Refuse(err) => return Ok(error_response(&err, &self.request_id)),
                Verdict::Drop => return Err(Abort),
                Verdict::Admitted {
                    reservation,
                    after,
                    jitter_draw,
                    cached,
                } => (reservation, after, jitter_draw, cached),
            };
        let reply = self.generate(&call, max_tokens);
        // From here on the request holds a reservation; the guard settles it even if the client goes away and
        // this future is dropped mid-sleep.
        let mut flight = InFlight {
            shared: self.shared.clone(),
            model_id: self.model_id.clone(),
            reservation: Some(reservation),
            input_tokens: call.input_tokens,
            cached,
            output_tokens: reply.output_tokens,
            items: match &call.shape {
                Shape::CohereEmbedding { texts, .. } => texts.len() as u64,
                _ => 1,
            },
            tier: call.tier.clone(),
            charge_on_drop: true,
        };
        if let Some(f) = after {
            self.shared
                .with_model(&self.model_id, &self.profile, started, |m, second| {
                    m.count_fault(second, f)
                });
        }
        if after == Some(Fault::Hang) {
            flight.charge_on_drop = false;
            tokio::time::sleep(Duration::from_millis(self.profile.faults.hang_ms)).await;
            return Err(Abort);
        }
        let l = &self.profile.latency;
        let base = (l.first_token_ms + l.per_token_ms * reply.output_tokens as f64)
            * self.profile.tier_latency(call.tier.as_deref());
        let delay_ms = base * (1.0 + l.jitter * (2.0 * jitter_draw - 1.0));
        if delay_ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
        }
        if let Some(err) = after.and_then(failure_after_latency) {
            flight.charge_on_drop = false;
            drop(flight);
            return Ok(error_response(&err, &self.request_id));
        }
        let malformed = after == Some(Fault::Malformed);
        flight.finish(!malformed);
        Ok(self.answer(&call, (&reply, cached), started, malformed))
    }

    /// The model's output: text for the generating APIs, nothing for embeddings.
    fn generate(&self, call: &Call, max_tokens: u64) -> Reply {
        if call.shape.generates() {
            text::reply(&call.prompt, self.profile.output_tokens, max_tokens)
        } else {
            Reply {
                text: String::new(),
                output_tokens: 0,
                stop: text::Stop::EndTurn,
            }
        }
    }

    /// The 200 reply in the call's shape, with InvokeModel's token and latency headers; cut in half when the
    /// `malformed` fault was drawn.
    fn answer(
        &self,
        call: &Call,
        (reply, (read, write)): (&Reply, (u64, u64)),
        started: Instant,
        malformed: bool,
    ) -> HttpReply {
        let latency_ms = started.elapsed().as_millis() as u64;
        let outcome = Outcome {
            model_id: &self.model_id,
            request_id: &self.request_id,
            input_tokens: call.input_tokens - read - write,
            cached: call.cache.map(|_| (read, write)),
            reply,
            latency_ms,
            dimensions: self.profile.embedding_dimensions,
        };
        let mut value = wire::reply_body(&call.shape, &call.prompt, &outcome);
        // The tier that served the call, when one was asked for: Converse in its body, InvokeModel in a header.
        if let (Some(tier), Operation::Converse) = (&call.tier, self.op) {
            value["serviceTier"] = json!({ "type": tier });
        }
        let mut body = serde_json::to_vec(&value).expect("reply serializes");
        if malformed {
            body.truncate(body.len() / 2);
        }
        let mut resp = json_response(200, &self.request_id, body);
        if self.op == Operation::Invoke {
            let headers = resp.headers_mut();
            headers.insert(
                "x-amzn-bedrock-input-token-count",
                HeaderValue::from(call.input_tokens),
            );
            headers.insert(
                "x-amzn-bedrock-output-token-count",
                HeaderValue::from(reply.output_tokens),
            );
            headers.insert(
                "x-amzn-bedrock-invocation-latency",
                HeaderValue::from(latency_ms),
            );
            if let Some(tier) = call
                .tier
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                headers.insert("x-amzn-bedrock-service-tier", tier);
            }
        }
        resp
    }
}

/// The error a fault drawn to strike after the model's latency answers with, if it is one that answers.
fn failure_after_latency(f: Fault) -> Option<ErrorReply> {
    match f {
        Fault::ModelTimeout => Some(ErrorReply::new(
            ErrorKind::ModelTimeout,
            "Model has timed out in processing the request. Try your request again.",
        )),
        Fault::ModelError => Some(ErrorReply::new(
            ErrorKind::ModelError,
            "The model failed to process the request.",
        )),
        _ => None,
    }
}

/// An admitted request's hold on the quota. Settled (charged) when the model finished, released when it
/// failed before producing output; dropping it unfinished settles or releases per `charge_on_drop`.
struct InFlight {
    shared: Arc<Shared>,
    model_id: String,
    reservation: Option<Reservation>,
    /// Every input token of the request, cached or not.
    input_tokens: u64,
    /// Of those, read from the prompt cache and written to it.
    cached: (u64, u64),
    output_tokens: u64,
    /// Texts embedded (a Cohere call carries up to 96), else 1.
    items: u64,
    /// The service tier asked for.
    tier: Option<String>,
    charge_on_drop: bool,
}

impl InFlight {
    fn finish(mut self, succeeded: bool) {
        self.close(true, succeeded);
    }

    fn close(&mut self, charge: bool, succeeded: bool) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let now = Instant::now();
        let second = self.shared.second(now);
        let mut models = self.shared.lock();
        let m = models
            .get_mut(&self.model_id)
            .expect("an admitted model has state");
        m.stats.leave();
        if charge {
            // Tokens read from the cache are reserved with the rest of the input and given back at settlement;
            // tokens written to it are charged like any input. The settlement AWS documents in its quota
            // dashboard sample ("InputTokenCount + CacheWriteInputTokens + OutputTokenCount × BurndownRate", the
            // first without the cache's tokens; the user guide's quotas-token-burndown page names the metrics
            // but not the sum): https://repost.aws/articles/ARfUsSkaWeSLiWZbv0OVSG1Q
            let (read, write) = self.cached;
            let charged = m.quota.settle(
                reservation,
                self.input_tokens - read,
                self.output_tokens,
                now,
            );
            let (input, output, items) = (
                self.input_tokens - read - write,
                self.output_tokens,
                self.items,
            );
            m.stats.bump(second, |c: &mut Counters| {
                c.input_tokens += input;
                c.cache_read_tokens += read;
                c.cache_write_tokens += write;
                c.output_tokens += output;
                c.charged_tokens += charged;
                c.succeeded += u64::from(succeeded);
                c.succeeded_items += if succeeded { items } else { 0 };
            });
            if let (true, Some(tier)) = (succeeded, self.tier.take()) {
                *m.stats.answered_by_tier.entry(tier).or_default() += 1;
            }
        } else {
            m.quota.release(reservation, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let charge = self.charge_on_drop;
        self.close(charge, false);
    }
}
