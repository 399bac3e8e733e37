//! S3 for inputs and outputs: the client (standard AWS configuration, path-style addressing for S3-compatible
//! stores), listing with pagination, streaming reads, single and multipart uploads, and errors that name the
//! URI and say what to do.

mod uri;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedMultipartUpload;

pub use aws_sdk_s3::types::CompletedPart;
pub use uri::{S3Uri, Selection, key_matches};

/// `[s3]` of the job file, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The region of the buckets; `None` for the standard AWS configuration, then `model.region`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); `None` for automatic: on with a custom endpoint.
    pub force_path_style: Option<bool>,
}

/// The size of a multipart upload's pieces, except the last (S3 wants at least 5 MiB); output larger than one
/// piece goes up as a multipart upload.
pub const MULTIPART_CHUNK: usize = 8 * 1024 * 1024;

/// What went wrong, in the terms a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The bucket does not exist.
    NoSuchBucket,
    /// The object (or prefix) does not exist.
    NoSuchKey,
    /// The credentials may not do this.
    AccessDenied,
    /// No credentials were found, or they were refused as unknown or badly signed.
    NoCredentials,
    /// No region is configured.
    NoRegion,
    /// The bucket is in another region than the one configured.
    WrongRegion,
    /// The object changed while it was read.
    Changed,
    /// Anything else (network, server errors after retries).
    Other,
}

/// An S3 request that failed, with the URI it was about.
#[derive(Debug, thiserror::Error)]
#[error("{uri}: {}{}", self.summary(), if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
pub struct S3Error {
    /// The object, prefix or bucket.
    pub uri: String,
    /// What kind of failure.
    pub kind: S3ErrorKind,
    /// The service's code and message, or the client's.
    pub detail: String,
}

impl S3Error {
    fn new(uri: impl ToString, kind: S3ErrorKind, detail: impl Into<String>) -> S3Error {
        S3Error {
            uri: uri.to_string(),
            kind,
            detail: detail.into(),
        }
    }

    fn summary(&self) -> &'static str {
        match self.kind {
            S3ErrorKind::NoSuchBucket => "the bucket does not exist",
            S3ErrorKind::NoSuchKey => "no such object, and no objects below it",
            S3ErrorKind::AccessDenied => "access denied",
            S3ErrorKind::NoCredentials => "no usable AWS credentials for S3",
            S3ErrorKind::NoRegion => "no AWS region for S3",
            S3ErrorKind::WrongRegion => "the bucket is in another region",
            S3ErrorKind::Changed => "the object changed while it was being read",
            S3ErrorKind::Other => "S3 request failed",
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self.kind {
            S3ErrorKind::NoSuchBucket => "check the bucket name in the job file, and that the endpoint and region \
                 (AWS_ENDPOINT_URL_S3, [s3] region) are the ones that hold it"
                .into(),
            S3ErrorKind::NoSuchKey => "check input.path; to read every object under a prefix, end it with `/` \
                 (s3://bucket/prefix/), or use a pattern such as s3://bucket/docs/*.md"
                .into(),
            S3ErrorKind::AccessDenied => "the credentials need s3:ListBucket and s3:GetObject for inputs, and \
                 s3:ListBucket, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload for outputs; check \
                 AWS_PROFILE and the bucket policy"
                .into(),
            S3ErrorKind::NoCredentials => "set AWS_PROFILE (for SSO, run `aws sso login` first) or \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and check that they belong to this endpoint"
                .into(),
            S3ErrorKind::NoRegion => {
                "set `region = \"us-east-1\"` (for example) under [s3], or AWS_REGION".into()
            }
            S3ErrorKind::WrongRegion => {
                "set [s3] region to the bucket's region (see the detail above)".into()
            }
            S3ErrorKind::Changed => {
                "the object was replaced during the run; run the job again to read it from the start".into()
            }
            S3ErrorKind::Other => {
                "check the network and the endpoint; nothing was lost, run the job again to go on".into()
            }
        }
    }
}

/// Joins an error and its sources into one line.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        next = e.source();
    }
    text
}

/// Classifies a failed S3 call about `uri`.
fn classify<E, R>(uri: &dyn ToString, err: SdkError<E, R>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let uri = uri.to_string();
    let status = err.raw_response().map(HasStatus::status);
    let code = err.code().map(str::to_string);
    let message = err.message().map(str::to_string);
    let detail = match (&code, &message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => match status {
            Some(s) => format!("HTTP {s}"),
            None => causes(&err),
        },
    };
    let kind = match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => S3ErrorKind::NoSuchBucket,
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => S3ErrorKind::NoSuchKey,
        (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) => {
            S3ErrorKind::AccessDenied
        }
        (
            Some(
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired",
            ),
            _,
        ) => S3ErrorKind::NoCredentials,
        (Some("PermanentRedirect" | "AuthorizationHeaderMalformed"), _) | (None, Some(301)) => {
            S3ErrorKind::WrongRegion
        }
        (Some("PreconditionFailed"), _) | (None, Some(412)) => S3ErrorKind::Changed,
        (_, Some(403)) => S3ErrorKind::AccessDenied,
        (None, None) if detail.contains("credentials") => S3ErrorKind::NoCredentials,
        _ => S3ErrorKind::Other,
    };
    S3Error::new(uri, kind, detail)
}

/// The HTTP status of a raw response.
pub trait HasStatus {
    /// The status code.
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// One object an input URI selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Its ETag, quotes removed.
    pub etag: String,
}

/// An S3 client.
#[derive(Debug, Clone)]
pub struct S3 {
    client: Client,
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// An object as a listing describes it.
fn listed(object: &aws_sdk_s3::types::Object) -> ObjectInfo {
    ObjectInfo {
        key: object.key().unwrap_or_default().to_string(),
        size: object.size().unwrap_or(0).max(0) as u64,
        etag: object.e_tag().map(unquote).unwrap_or_default(),
    }
}

impl S3 {
    /// A client from the standard AWS configuration (profiles, environment, `AWS_ENDPOINT_URL_S3`), with the
    /// job's `[s3]` overrides. `model_region` is the fallback region. `about` names the first S3 location, for
    /// errors.
    pub async fn connect(
        settings: &S3Settings,
        model_region: Option<&str>,
        about: &S3Uri,
    ) -> Result<S3, S3Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            match model_region {
                Some(r) => builder = builder.region(Region::new(r.to_string())),
                None => return Err(S3Error::new(about, S3ErrorKind::NoRegion, "")),
            }
        }
        // S3-compatible stores (MinIO, Ceph, s3s, localstack) rarely resolve bucket subdomains: a custom endpoint
        // means path-style unless the job says otherwise.
        let custom_endpoint = sdk
            .service_config()
            .and_then(|c| {
                c.load_config(
                    aws_types::service_config::ServiceConfigKey::builder()
                        .service_id("S3")
                        .env("AWS_ENDPOINT_URL")
                        .profile("endpoint_url")
                        .build()
                        .expect("the key is complete"),
                )
            })
            .is_some()
            || sdk.endpoint_url().is_some();
        let config = builder
            .force_path_style(settings.force_path_style.unwrap_or(custom_endpoint))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .build();
        Ok(S3 {
            client: Client::from_conf(config),
        })
    }

    /// The objects `uri` selects, sorted by key, each with its size and ETag.
    pub async fn list(&self, uri: &S3Uri) -> Result<Vec<ObjectInfo>, S3Error> {
        let selection = uri
            .selection()
            .map_err(|m| S3Error::new(uri, S3ErrorKind::Other, m))?;
        let objects = match selection {
            Selection::Key(key) => {
                // The first key at or after `key` says whether the object exists (one request, and no HEAD on
                // what some S3-compatible stores hold as a directory). A key without its trailing slash may
                // still name a "folder".
                let first = self
                    .client
                    .list_objects_v2()
                    .bucket(&uri.bucket)
                    .prefix(&key)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| classify(uri, e))?;
                let found: Vec<ObjectInfo> = first
                    .contents()
                    .first()
                    .filter(|o| o.key() == Some(key.as_str()))
                    .map(listed)
                    .into_iter()
                    .collect();
                if !found.is_empty() {
                    self.with_etags(uri, found).await?
                } else {
                    let below = self.list_prefix(uri, &format!("{key}/"), None).await?;
                    if below.is_empty() {
                        return Err(S3Error::new(uri, S3ErrorKind::NoSuchKey, ""));
                    }
                    below
                }
            }
            Selection::Prefix(prefix) => self.list_prefix(uri, &prefix, None).await?,
            Selection::Pattern { prefix, pattern } => {
                self.list_prefix(uri, &prefix, Some(&pattern)).await?
            }
        };
        Ok(objects)
    }

    async fn head(&self, uri: &S3Uri) -> Result<ObjectInfo, S3Error> {
        let head = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        Ok(ObjectInfo {
            key: uri.key.clone(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head.e_tag().map(unquote).unwrap_or_default(),
        })
    }

    /// Every object below `prefix` (matching `pattern` if given), all pages, folder markers left out.
    async fn list_prefix(
        &self,
        uri: &S3Uri,
        prefix: &str,
        pattern: Option<&glob::Pattern>,
    ) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&uri.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(uri, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if key.ends_with('/') || pattern.is_some_and(|p| !key_matches(p, key)) {
                    continue;
                }
                out.push(listed(object));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        self.with_etags(uri, out).await
    }

    /// Fills in the ETags a listing left out (some S3-compatible stores list without them) by asking each object.
    async fn with_etags(
        &self,
        uri: &S3Uri,
        mut objects: Vec<ObjectInfo>,
    ) -> Result<Vec<ObjectInfo>, S3Error> {
        for object in objects.iter_mut().filter(|o| o.etag.is_empty()) {
            object.etag = self.head(&uri.with_key(object.key.clone())).await?.etag;
        }
        Ok(objects)
    }

    /// Starts reading an object, refusing it if its ETag is no longer `etag`.
    pub async fn get(&self, uri: &S3Uri, etag: &str) -> Result<ByteStream, S3Error> {
        let mut request = self.client.get_object().bucket(&uri.bucket).key(&uri.key);
        if !etag.is_empty() {
            request = request.if_match(format!("\"{etag}\""));
        }
        let object = request.send().await.map_err(|e| classify(uri, e))?;
        Ok(object.body)
    }

    /// Fails unless the bucket of `uri` exists and these credentials can reach it.
    pub async fn check_bucket(&self, uri: &S3Uri) -> Result<(), S3Error> {
        match self.client.head_bucket().bucket(&uri.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut e = classify(uri, e);
                // HeadBucket has no body: a 404 is the bucket's.
                if e.kind == S3ErrorKind::NoSuchKey {
                    e.kind = S3ErrorKind::NoSuchBucket;
                }
                Err(e)
            }
        }
    }

    /// Keys directly below `prefix` in the bucket of `uri`.
    pub async fn keys(&self, uri: &S3Uri, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&uri.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(uri, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }

    /// Writes `bytes` as one object in one request.
    pub async fn put(
        &self,
        uri: &S3Uri,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        Ok(())
    }

    /// Starts a multipart upload; the object stays invisible until [`S3::complete_upload`].
    pub async fn create_upload(&self, uri: &S3Uri, content_type: &str) -> Result<String, S3Error> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| S3Error::new(uri, S3ErrorKind::Other, "no upload id in the reply"))
    }

    /// Sends piece `number` (from 1) of the upload `upload_id`; every piece but the last must be at least
    /// 5 MiB.
    pub async fn upload_piece(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> Result<CompletedPart, S3Error> {
        let out = self
            .client
            .upload_part()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    /// Completes the upload from its pieces: the object appears whole.
    pub async fn complete_upload(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        pieces: Vec<CompletedPart>,
    ) -> Result<(), S3Error> {
        self.client
            .complete_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(pieces))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        Ok(())
    }

    /// Abandons a multipart upload and frees its pieces. An upload that is already gone is fine.
    pub async fn abort_upload(&self, uri: &S3Uri, upload_id: &str) -> Result<(), S3Error> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("NoSuchUpload")) => Ok(()),
            Err(e) => {
                let e = classify(uri, e);
                if e.kind == S3ErrorKind::NoSuchKey {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes an object.
    pub async fn delete(&self, uri: &S3Uri) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| classify(uri, e))?;
        Ok(())
    }
}
