//! Bedrock batch inference, as the control plane (`bedrock`, not `bedrock-runtime`) serves it: the four
//! model-invocation-job operations batchrun uses, and a job that reads its staged records from S3, answers them at
//! a set rate with the same replies the runtime gives, and writes its results back.
//!
//! Shapes and paths are the botocore model's (`bedrock` 2023-04-20): `POST /model-invocation-job`
//! (CreateModelInvocationJob), `GET /model-invocation-job/{jobIdentifier}`, `GET /model-invocation-jobs`,
//! `POST /model-invocation-job/{jobIdentifier}/stop`; timestamps are ISO 8601. The results follow the user
//! guide's "View the results of a batch inference job"
//! (<https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html>): one `<input file>.out`
//! per input file, each line `{"recordId", "modelInput", "modelOutput"}` or `{…, "error": {"errorCode",
//! "errorMessage"}}`, in no set order, and a `manifest.json.out` with `totalRecordCount`, `processedRecordCount`,
//! `successRecordCount`, `errorRecordCount`, `inputTokenCount` and `outputTokenCount`, under
//! `<output prefix>/<job id>/`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::config::{BatchProfile, EmulatorConfig};
use super::text::{self, fnv1a, mix64, unit};
use super::wire::{self, ErrorKind, ErrorReply};

/// What the control plane was asked, counted for `/_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    /// CreateModelInvocationJob calls.
    pub create_calls: u64,
    /// Of those, calls that repeated an earlier token and got its job back.
    pub idempotent_creates: u64,
    /// Batch jobs made.
    pub jobs_created: u64,
    /// GetModelInvocationJob calls.
    pub get_calls: u64,
    /// ListModelInvocationJobs calls.
    pub list_calls: u64,
    /// StopModelInvocationJob calls.
    pub stop_calls: u64,
    /// Records answered with a `modelOutput`.
    pub records_succeeded: u64,
    /// Records answered with an `error`.
    pub records_failed: u64,
    /// Records left out of the output.
    pub records_missing: u64,
}

/// The batch jobs the emulator holds, and its counts.
#[derive(Debug, Default)]
pub struct BatchJobs {
    jobs: Mutex<Vec<Arc<Job>>>,
    stats: Mutex<BatchStats>,
    s3: tokio::sync::OnceCell<aws_sdk_s3::Client>,
}

#[derive(Debug)]
struct Job {
    id: String,
    arn: String,
    name: String,
    token: Option<String>,
    model_id: String,
    role_arn: String,
    input_uri: String,
    output_uri: String,
    invocation_type: String,
    timeout_hours: u32,
    submitted: i64,
    state: Mutex<JobState>,
    stop: CancellationToken,
}

#[derive(Debug, Clone)]
struct JobState {
    status: &'static str,
    message: Option<String>,
    total: u64,
    processed: u64,
    succeeded: u64,
    errored: u64,
    modified: i64,
    ended: Option<i64>,
}

const ENDED: [&str; 5] = [
    "Completed",
    "PartiallyCompleted",
    "Failed",
    "Stopped",
    "Expired",
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-11-28T10:00:00Z`, as the control plane writes its timestamps (the emulator shares no code with the
/// runner, whose `status` has its own civil-date arithmetic).
fn iso8601(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A control-plane request, routed: `Some` when the path is one of the batch operations.
pub enum Op {
    /// CreateModelInvocationJob.
    Create,
    /// GetModelInvocationJob.
    Get(String),
    /// ListModelInvocationJobs.
    List,
    /// StopModelInvocationJob.
    Stop(String),
}

/// Which batch operation `method path` is, if any.
pub fn route(method: &hyper::Method, path: &str) -> Option<Op> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    match (method.as_str(), path) {
        ("POST", "/model-invocation-job") => Some(Op::Create),
        ("GET", "/model-invocation-jobs") => Some(Op::List),
        ("POST", p) => {
            let id = p
                .strip_prefix("/model-invocation-job/")?
                .strip_suffix("/stop")?;
            decode(id).map(Op::Stop)
        }
        ("GET", p) => decode(p.strip_prefix("/model-invocation-job/")?).map(Op::Get),
        _ => None,
    }
}

impl BatchJobs {
    /// The counts so far.
    pub fn stats(&self) -> BatchStats {
        lock(&self.stats).clone()
    }

    fn find(&self, identifier: &str) -> Result<Arc<Job>, ErrorReply> {
        lock(&self.jobs)
            .iter()
            .find(|j| j.arn == identifier || j.id == identifier)
            .cloned()
            .ok_or_else(|| {
                ErrorReply::new(
                    ErrorKind::ResourceNotFound,
                    format!("The specified job {identifier} was not found."),
                )
            })
    }

    /// Answers one operation: the JSON body of a 200, or the error.
    pub fn serve(
        self: &Arc<Self>,
        config: &EmulatorConfig,
        op: Op,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Value, ErrorReply> {
        match op {
            Op::Create => self.create(config, body),
            Op::Get(id) => {
                lock(&self.stats).get_calls += 1;
                Ok(self.find(&id)?.describe())
            }
            Op::List => {
                lock(&self.stats).list_calls += 1;
                Ok(self.list(query.unwrap_or("")))
            }
            Op::Stop(id) => {
                lock(&self.stats).stop_calls += 1;
                let job = self.find(&id)?;
                let mut state = lock(&job.state);
                if ENDED.contains(&state.status) {
                    return Err(ErrorReply::new(
                        ErrorKind::Conflict,
                        format!(
                            "The job {} is {} and cannot be stopped.",
                            job.arn, state.status
                        ),
                    ));
                }
                state.status = "Stopping";
                state.modified = unix_now();
                job.stop.cancel();
                Ok(json!({}))
            }
        }
    }

    fn create(self: &Arc<Self>, config: &EmulatorConfig, body: &[u8]) -> Result<Value, ErrorReply> {
        lock(&self.stats).create_calls += 1;
        let req: CreateRequest = serde_json::from_slice(body).map_err(|e| {
            ErrorReply::new(ErrorKind::Validation, format!("Malformed request: {e}"))
        })?;
        req.check(config)?;
        let mut jobs = lock(&self.jobs);
        // A create that repeats a token gets the job that token made (botocore: `idempotencyToken`).
        if let Some(token) = &req.client_request_token
            && let Some(j) = jobs.iter().find(|j| j.token.as_ref() == Some(token))
        {
            lock(&self.stats).idempotent_creates += 1;
            return Ok(json!({ "jobArn": j.arn }));
        }
        let running = jobs
            .iter()
            .filter(|j| j.model_id == req.model_id && !ENDED.contains(&lock(&j.state).status))
            .count() as u64;
        if running >= config.batch.max_jobs_in_flight {
            return Err(ErrorReply::new(
                ErrorKind::ServiceQuotaExceeded,
                format!(
                    "You have reached the limit of {} batch inference jobs in progress or submitted for model {}.",
                    config.batch.max_jobs_in_flight, req.model_id
                ),
            ));
        }
        let job = Arc::new(req.into_job(jobs.len() as u64 ^ config.seed));
        jobs.push(job.clone());
        drop(jobs);
        lock(&self.stats).jobs_created += 1;
        tokio::spawn(run(self.clone(), config.clone(), job.clone()));
        Ok(json!({ "jobArn": job.arn }))
    }

    fn list(&self, query: &str) -> Value {
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        };
        let (status, name) = (param("statusEquals"), param("nameContains"));
        let from: usize = param("nextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let max: usize = param("maxResults")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000);
        let matching: Vec<Value> = lock(&self.jobs)
            .iter()
            .filter(|j| status.as_deref().is_none_or(|s| lock(&j.state).status == s))
            .filter(|j| name.as_deref().is_none_or(|n| j.name.contains(n)))
            .map(|j| j.describe())
            .collect();
        let page: Vec<Value> = matching.iter().skip(from).take(max).cloned().collect();
        let mut out = json!({ "invocationJobSummaries": page });
        if from + max < matching.len() {
            out["nextToken"] = json!((from + max).to_string());
        }
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRequest {
    job_name: String,
    role_arn: String,
    client_request_token: Option<String>,
    model_id: String,
    input_data_config: Value,
    output_data_config: Value,
    timeout_duration_in_hours: Option<u32>,
    model_invocation_type: Option<String>,
}

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::Validation, message)
}

impl CreateRequest {
    fn input_uri(&self) -> Option<&str> {
        self.input_data_config
            .pointer("/s3InputDataConfig/s3Uri")
            .and_then(Value::as_str)
    }

    fn output_uri(&self) -> Option<&str> {
        self.output_data_config
            .pointer("/s3OutputDataConfig/s3Uri")
            .and_then(Value::as_str)
    }

    /// The checks the botocore model's patterns and ranges make.
    fn check(&self, config: &EmulatorConfig) -> Result<(), ErrorReply> {
        let name_ok = !self.job_name.is_empty()
            && self.job_name.len() <= 63
            && self
                .job_name
                .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .job_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c));
        if !name_ok {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'jobName' failed to satisfy constraint",
                self.job_name
            )));
        }
        if !(self.role_arn.starts_with("arn:aws")
            && self.role_arn.contains(":iam::")
            && self.role_arn.contains(":role/"))
        {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'roleArn' failed to satisfy constraint",
                self.role_arn
            )));
        }
        if let Some(t) = &self.client_request_token
            && (t.is_empty()
                || t.len() > 256
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(invalid(
                "Value at 'clientRequestToken' failed to satisfy constraint",
            ));
        }
        if config.profile_for(&self.model_id).is_none() {
            return Err(invalid("The provided model identifier is invalid."));
        }
        if let Some(h) = self.timeout_duration_in_hours
            && !(24..=168).contains(&h)
        {
            return Err(invalid(
                "Value at 'timeoutDurationInHours' failed to satisfy constraint: Member must have value between 24 and 168",
            ));
        }
        for (uri, what) in [
            (self.input_uri(), "inputDataConfig"),
            (self.output_uri(), "outputDataConfig"),
        ] {
            if !uri.is_some_and(|u| u.starts_with("s3://")) {
                return Err(invalid(format!("{what} needs an s3Uri (s3://bucket/key)")));
            }
        }
        match self.model_invocation_type.as_deref() {
            None | Some("InvokeModel" | "Converse") => Ok(()),
            Some(other) => Err(invalid(format!(
                "Value '{other}' at 'modelInvocationType' failed to satisfy constraint: Member must satisfy enum \
                 value set: [InvokeModel, Converse]"
            ))),
        }
    }

    fn into_job(self, n: u64) -> Job {
        let id: String = {
            let mut z = mix64(n ^ 0x6a09_e667_f3bc_c908);
            (0..12)
                .map(|_| {
                    z = mix64(z);
                    b"abcdefghijklmnopqrstuvwxyz0123456789"[(z % 36) as usize] as char
                })
                .collect()
        };
        let now = unix_now();
        Job {
            arn: format!("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{id}"),
            id,
            input_uri: self.input_uri().unwrap_or_default().to_string(),
            output_uri: self.output_uri().unwrap_or_default().to_string(),
            name: self.job_name,
            token: self.client_request_token,
            model_id: self.model_id,
            role_arn: self.role_arn,
            invocation_type: self
                .model_invocation_type
                .unwrap_or_else(|| "InvokeModel".into()),
            timeout_hours: self.timeout_duration_in_hours.unwrap_or(24),
            submitted: now,
            state: Mutex::new(JobState {
                status: "Submitted",
                message: None,
                total: 0,
                processed: 0,
                succeeded: 0,
                errored: 0,
                modified: now,
                ended: None,
            }),
            stop: CancellationToken::new(),
        }
    }
}

impl Job {
    /// GetModelInvocationJob's answer (and a summary in List's).
    fn describe(&self) -> Value {
        let s = lock(&self.state).clone();
        let mut v = json!({
            "jobArn": self.arn,
            "jobName": self.name,
            "modelId": self.model_id,
            "roleArn": self.role_arn,
            "status": s.status,
            "submitTime": iso8601(self.submitted),
            "lastModifiedTime": iso8601(s.modified),
            "inputDataConfig": { "s3InputDataConfig": { "s3InputFormat": "JSONL", "s3Uri": self.input_uri } },
            "outputDataConfig": { "s3OutputDataConfig": { "s3Uri": self.output_uri } },
            "timeoutDurationInHours": self.timeout_hours,
            "jobExpirationTime": iso8601(self.submitted + i64::from(self.timeout_hours) * 3600),
            "modelInvocationType": self.invocation_type,
            "totalRecordCount": s.total,
            "processedRecordCount": s.processed,
            "successRecordCount": s.succeeded,
            "errorRecordCount": s.errored,
        });
        if let Some(t) = &self.token {
            v["clientRequestToken"] = json!(t);
        }
        if let Some(m) = &s.message {
            v["message"] = json!(m);
        }
        if let Some(e) = s.ended {
            v["endTime"] = json!(iso8601(e));
        }
        v
    }

    fn set(&self, f: impl FnOnce(&mut JobState)) {
        let mut s = lock(&self.state);
        f(&mut s);
        s.modified = unix_now();
    }

    fn end(&self, status: &'static str, message: Option<String>) {
        self.set(|s| {
            s.status = status;
            s.message = message;
            s.ended = Some(unix_now());
        });
    }
}

/// `s3://bucket/key` as its bucket and key.
fn split_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://")?
        .split_once('/')
        .or_else(|| Some((uri.strip_prefix("s3://")?, "")))
}

/// The S3 client batch jobs read and write with: the profile's endpoint and key, else the standard AWS
/// configuration's.
async fn s3_client(b: &BatchProfile) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(
        aws_config::Region::new(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
    );
    if let Some(url) = &b.s3_endpoint {
        loader = loader.endpoint_url(url);
    }
    if let (Some(id), Some(secret)) = (&b.s3_access_key_id, &b.s3_secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "emulator-batch",
        ));
    }
    let sdk = loader.load().await;
    // S3-compatible stores on a custom endpoint take path-style addresses.
    let custom = b.s3_endpoint.is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(custom)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One staged record, read.
struct Staged {
    record_id: String,
    input: Value,
}

/// The staged records: the file the input URI names, or every `.jsonl` under it as a prefix.
async fn read_input(
    s3: &aws_sdk_s3::Client,
    uri: &str,
) -> Result<Vec<(String, Vec<Staged>)>, String> {
    let (bucket, key) = split_uri(uri).ok_or_else(|| format!("{uri} is not an S3 URI"))?;
    let keys = if key.ends_with(".jsonl") {
        vec![key.to_string()]
    } else {
        let listed = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Unable to list {uri}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter(|k| k.ends_with(".jsonl"))
            .map(str::to_string)
            .collect()
    };
    let mut files = Vec::new();
    for key in keys {
        let object = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Unable to read s3://{bucket}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| format!("Unable to read s3://{bucket}/{key}: {e}"))?
            .into_bytes();
        let mut records = Vec::new();
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("s3://{bucket}/{key} line {}: not JSON ({e})", i + 1))?;
            let record_id = v["recordId"]
                .as_str()
                .map_or_else(|| format!("{:011}", i + 1), str::to_string);
            records.push(Staged {
                record_id,
                input: v["modelInput"].clone(),
            });
        }
        let name = key.rsplit('/').next().unwrap_or(&key).to_string();
        files.push((name, records));
    }
    Ok(files)
}

/// What one record came to.
enum Answer {
    Output(Value, u64, u64),
    Error(Value),
    Missing,
}

/// The answer to one staged record: the reply the runtime would give its model input, or a drawn failure.
fn answer(config: &EmulatorConfig, job: &Job, r: &Staged) -> Answer {
    let b = &config.batch;
    let draw = unit(mix64(fnv1a(r.record_id.as_bytes()) ^ config.seed));
    if draw < b.missing_share {
        return Answer::Missing;
    }
    if draw < b.missing_share + b.failure_share {
        return Answer::Error(
            json!({ "errorCode": 500, "errorMessage": "Internal server error while processing the record." }),
        );
    }
    let body = serde_json::to_vec(&r.input).unwrap_or_default();
    let parsed = if job.invocation_type == "Converse" {
        wire::parse_converse(&body)
    } else {
        wire::parse_invoke(&body)
    };
    let call = match parsed {
        Ok(c) => c,
        Err(e) => return Answer::Error(json!({ "errorCode": 400, "errorMessage": e.message })),
    };
    let profile = config
        .profile_for(&job.model_id)
        .expect("checked at create");
    let max_tokens = call
        .max_tokens
        .map_or(profile.max_output_tokens, |m| m.max(1) as u64);
    let reply = if call.shape.generates() {
        text::reply(&call.prompt, profile.output_tokens, max_tokens)
    } else {
        text::Reply {
            text: String::new(),
            output_tokens: 0,
            stop: text::Stop::EndTurn,
        }
    };
    let outcome = wire::Outcome {
        model_id: &job.model_id,
        request_id: &r.record_id,
        input_tokens: call.input_tokens,
        cached: None,
        reply: &reply,
        latency_ms: 0,
        dimensions: profile.embedding_dimensions,
    };
    Answer::Output(
        wire::reply_body(&call.shape, &call.prompt, &outcome),
        call.input_tokens,
        reply.output_tokens,
    )
}

/// A batch job from Submitted to its end: validation, the records at the profile's rate, the results.
async fn run(jobs: Arc<BatchJobs>, config: EmulatorConfig, job: Arc<Job>) {
    let b = config.batch.clone();
    tokio::time::sleep(Duration::from_secs_f64(b.start_delay_s / 2.0)).await;
    job.set(|s| s.status = "Validating");
    tokio::time::sleep(Duration::from_secs_f64(b.start_delay_s / 2.0)).await;
    let s3 = jobs.s3.get_or_init(|| s3_client(&b)).await;
    let files = match read_input(s3, &job.input_uri).await {
        Ok(f) => f,
        Err(message) => return job.end("Failed", Some(message)),
    };
    let total: u64 = files.iter().map(|(_, r)| r.len() as u64).sum();
    if let Some(m) = too_few_or_many(&b, total) {
        return job.end("Failed", Some(m));
    }
    job.set(|s| {
        s.status = "InProgress";
        s.total = total;
    });
    let (results, tokens, stopped) = process(&jobs, &config, &job, &files).await;
    let written = write_results(s3, &job, results, tokens).await;
    match (written, stopped) {
        (Err(message), _) => job.end("Failed", Some(message)),
        (Ok(()), true) => job.end("Stopped", None),
        (Ok(()), false) => job.end("Completed", None),
    }
}

fn too_few_or_many(b: &BatchProfile, total: u64) -> Option<String> {
    if total < b.min_records {
        return Some(format!(
            "The input has {total} records, fewer than the minimum of {} for a batch inference job.",
            b.min_records
        ));
    }
    (total > b.max_records).then(|| {
        format!(
            "The input has {total} records, more than the maximum of {} for a batch inference job.",
            b.max_records
        )
    })
}

type Results = Vec<(String, Vec<Value>)>;

/// Answers the records at the profile's rate until done or stopped: the output lines of each file, the input
/// and output tokens, and whether the job was stopped.
async fn process(
    jobs: &BatchJobs,
    config: &EmulatorConfig,
    job: &Job,
    files: &[(String, Vec<Staged>)],
) -> (Results, (u64, u64), bool) {
    let started = Instant::now();
    let (mut done, mut tokens) = (0u64, (0u64, 0u64));
    let mut results = Vec::new();
    for (name, records) in files {
        let mut lines = Vec::new();
        for r in records {
            let due =
                started + Duration::from_secs_f64(done as f64 / config.batch.records_per_second);
            tokio::select! {
                _ = job.stop.cancelled() => { results.push((name.clone(), lines)); return (results, tokens, true); }
                _ = tokio::time::sleep_until(due.into()) => {}
            }
            done += 1;
            let line = match answer(config, job, r) {
                Answer::Output(out, i, o) => {
                    tokens = (tokens.0 + i, tokens.1 + o);
                    lock(&jobs.stats).records_succeeded += 1;
                    job.set(|s| s.succeeded += 1);
                    Some(
                        json!({ "recordId": r.record_id, "modelInput": r.input, "modelOutput": out }),
                    )
                }
                Answer::Error(e) => {
                    lock(&jobs.stats).records_failed += 1;
                    job.set(|s| s.errored += 1);
                    Some(json!({ "recordId": r.record_id, "modelInput": r.input, "error": e }))
                }
                Answer::Missing => {
                    lock(&jobs.stats).records_missing += 1;
                    None
                }
            };
            job.set(|s| s.processed += 1);
            lines.extend(line);
        }
        results.push((name.clone(), lines));
    }
    (results, tokens, false)
}

/// Writes each file's `.out` (lines in an order unrelated to the input's, as Bedrock does not keep it) and the
/// manifest under `<output>/<job id>/`.
async fn write_results(
    s3: &aws_sdk_s3::Client,
    job: &Job,
    results: Results,
    (input_tokens, output_tokens): (u64, u64),
) -> Result<(), String> {
    let out = job.output_uri.trim_end_matches('/');
    let (bucket, prefix) = split_uri(out).ok_or_else(|| format!("{out} is not an S3 URI"))?;
    let dir = if prefix.is_empty() {
        job.id.clone()
    } else {
        format!("{prefix}/{}", job.id)
    };
    let put = |key: String, body: Vec<u8>| async move {
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "Unable to write s3://{bucket}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })
    };
    for (name, mut lines) in results {
        lines.sort_by_key(|l| mix64(fnv1a(l["recordId"].as_str().unwrap_or("").as_bytes())));
        let mut body = Vec::new();
        for l in lines {
            body.extend(serde_json::to_vec(&l).expect("a line serializes"));
            body.push(b'\n');
        }
        put(format!("{dir}/{name}.out"), body).await?;
    }
    let s = lock(&job.state).clone();
    let manifest = json!({
        "totalRecordCount": s.total,
        "processedRecordCount": s.processed,
        "successRecordCount": s.succeeded,
        "errorRecordCount": s.errored,
        "inputTokenCount": input_tokens,
        "outputTokenCount": output_tokens,
    });
    put(
        format!("{dir}/manifest.json.out"),
        manifest.to_string().into_bytes(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_four_operations() {
        use hyper::Method;
        assert!(matches!(
            route(&Method::POST, "/model-invocation-job"),
            Some(Op::Create)
        ));
        assert!(matches!(
            route(&Method::GET, "/model-invocation-jobs"),
            Some(Op::List)
        ));
        let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc";
        match route(&Method::GET, &format!("/model-invocation-job/{arn}")) {
            Some(Op::Get(id)) => assert_eq!(
                id,
                "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc"
            ),
            _ => panic!("not a get"),
        }
        assert!(
            matches!(route(&Method::POST, "/model-invocation-job/abc/stop"), Some(Op::Stop(id)) if id == "abc")
        );
        assert!(route(&Method::DELETE, "/model-invocation-job/abc").is_none());
    }

    #[test]
    fn timestamps_are_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_860_000), "2026-11-28T10:00:00Z");
    }
}
