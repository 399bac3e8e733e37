//! A real S3-compatible server for the tests: `s3s-fs` (objects as files under a temporary folder) behind the
//! `s3s` protocol layer, which checks SigV4 signatures, served in-process on `127.0.0.1:0`. One access rule is
//! added, as a bucket policy would: bucket `locked` refuses everyone.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The credentials the server accepts; the same as [`super::job::TestJob`] gives the binary.
pub const ACCESS_KEY: &str = "AKIDTEST";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "test-secret";
/// `batchrun submit job.toml` in `dir`, signing with [`ACCESS_KEY`] and reading no AWS configuration of this
/// machine (profile, files, instance metadata, bearer token): the benchmarks that talk to [`S3Server`] run it so.
#[allow(dead_code)] // Used by the benchmarks that include this file.
pub fn submit_command(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_batchrun"));
    cmd.args(["submit", "job.toml", "--progress", "off"])
        .current_dir(dir)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    cmd
}

/// A bucket that denies every request.
pub const LOCKED: &str = "locked";

struct DenyLocked {
    deny_deletes: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl S3Access for DenyLocked {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature required"));
        }
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
            S3Path::Root => None,
        };
        if bucket == Some(LOCKED) {
            return Err(s3s::s3_error!(AccessDenied, "Access Denied"));
        }
        // As a policy without s3:DeleteObject would.
        if cx.method() == Method::DELETE
            && cx.s3_path().as_object().is_some()
            && !cx.uri().query().is_some_and(|q| q.contains("uploadId="))
            && self.deny_deletes.load(Ordering::SeqCst)
        {
            return Err(s3s::s3_error!(AccessDenied, "Access Denied"));
        }
        Ok(())
    }
}

/// A running server; it stops when dropped.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The folder holding the buckets (`root/bucket/key`) and the server's bookkeeping files.
    pub root: TempDir,
    /// A client with the accepted credentials.
    pub client: Client,
    /// While set, deleting an object is denied (as without `s3:DeleteObject`); aborting uploads still works.
    pub deny_deletes: Arc<AtomicBool>,
    /// The path (`/bucket/key`) of every object read (GetObject), in order.
    pub reads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server with the given buckets.
pub async fn s3_server(buckets: &[&str]) -> S3Server {
    s3_server_with_slow_uploads(buckets, Duration::ZERO).await
}

/// As [`s3_server`], with each multipart piece (UploadPart) held for `delay` before the server takes it, as a
/// slow link would: a window to interrupt an upload in.
pub async fn s3_server_with_slow_uploads(buckets: &[&str], delay: Duration) -> S3Server {
    let root = tempfile::tempdir().unwrap();
    for b in buckets.iter().chain([&LOCKED]) {
        std::fs::create_dir_all(root.path().join(b)).unwrap();
    }
    let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let deny_deletes = Arc::new(AtomicBool::new(false));
    builder.set_access(DenyLocked {
        deny_deletes: deny_deletes.clone(),
    });
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = reads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            let seen = seen.clone();
            let slow = service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                let piece = req.method() == Method::PUT
                    && req.uri().query().is_some_and(|q| q.contains("uploadId="));
                // An object's path has a key after the bucket; a listing is a GET of the bucket.
                let path = req.uri().path().to_string();
                if req.method() == Method::GET && path.trim_start_matches('/').contains('/') {
                    seen.lock().unwrap().push(path);
                }
                async move {
                    if piece {
                        tokio::time::sleep(delay).await;
                    }
                    Service::call(&service, req).await
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), slow)
                    .await;
            });
        }
    });
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "tests",
        ))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .build();
    S3Server {
        endpoint,
        root,
        client: Client::from_conf(config),
        deny_deletes,
        reads,
        task,
    }
}

impl S3Server {
    /// Writes an object.
    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
    }

    /// Deletes an object.
    #[allow(dead_code)] // Not every includer deletes.
    pub async fn delete(&self, bucket: &str, key: &str) {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete s3://{bucket}/{key}: {e:?}"));
    }

    /// Reads an object.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"));
        out.body.collect().await.unwrap().to_vec()
    }

    /// Every key below `prefix`, through ListObjectsV2 (all pages).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        }
        keys
    }

    /// The objects read below `/bucket/prefix` since the server started, in order.
    #[allow(dead_code)] // Not every includer counts reads.
    pub fn reads_below(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let below = format!("/{bucket}/{prefix}");
        let reads = self.reads.lock().unwrap();
        reads
            .iter()
            .filter(|p| p.starts_with(&below))
            .cloned()
            .collect()
    }

    /// Multipart uploads the server holds open (its `.upload-ID.json` files).
    pub fn open_uploads(&self) -> Vec<String> {
        upload_files(self.root.path())
    }
}

fn upload_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            (name.starts_with(".upload-") && name.ends_with(".json")).then_some(name)
        })
        .collect()
}
