//! Emulator capacity: requests per second it serves on loopback with zero latency and no quota.
//!
//! `cargo bench --bench emulator [-- --seconds N --concurrency N]`
//!
//! Two clients run one after the other against the same in-process emulator, on the same two-worker runtime
//! (so the client's own cost is included and the figures are lower bounds on the server's capacity):
//! - `raw-http`: keep-alive HTTP/1.1 connections writing a Converse request and reading the reply, the least
//!   a client can do;
//! - `aws-sdk`: the real `aws-sdk-bedrockruntime` client (SigV4 signing, serialization, parsing), as the runner
//!   will call it.
//!
//! The emulator must serve far more than any quota under test; the bar set for it is 5,000 requests/s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use batchrun::emulator::{self, EmulatorConfig, ModelProfile, OutputLength};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TARGET_RPS: f64 = 5000.0;
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Summarize the water cycle."}]}],"inferenceConfig":{"maxTokens":64}}"#;

struct Args {
    seconds: f64,
    concurrency: usize,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 5.0,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N")
            }
            "--concurrency" => {
                args.concurrency = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--concurrency N")
            }
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    args
}

async fn raw_client(addr: SocketAddr, deadline: Instant, done: Arc<AtomicU64>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let request = format!(
        "POST /model/anthropic.claude-3-haiku-20240307-v1%3A0/converse HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < deadline {
        write.write_all(request.as_bytes()).await.unwrap();
        let mut length = 0usize;
        let mut status_ok = false;
        loop {
            line.clear();
            read.read_line(&mut line).await.unwrap();
            if line.starts_with("HTTP/1.1 ") {
                status_ok = line.starts_with("HTTP/1.1 200");
            } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            } else if line == "\r\n" {
                break;
            }
        }
        body.resize(length, 0);
        read.read_exact(&mut body).await.unwrap();
        assert!(
            status_ok,
            "unexpected reply: {}",
            String::from_utf8_lossy(&body)
        );
        done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn sdk_client(
    client: aws_sdk_bedrockruntime::Client,
    deadline: Instant,
    done: Arc<AtomicU64>,
) {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Summarize the water cycle.".into()))
        .build()
        .unwrap();
    while Instant::now() < deadline {
        client
            .converse()
            .model_id("anthropic.claude-3-haiku-20240307-v1:0")
            .messages(message.clone())
            .inference_config(InferenceConfiguration::builder().max_tokens(64).build())
            .send()
            .await
            .expect("converse succeeds");
        done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn measure<F, Fut>(name: &str, args: &Args, spawn_one: F) -> f64
where
    F: Fn(Instant, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // One second of warm-up (connections, allocator) that is not counted.
    let warm = Arc::new(AtomicU64::new(0));
    let warm_deadline = Instant::now() + Duration::from_secs(1);
    let warmers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(spawn_one(warm_deadline, warm.clone())))
        .collect();
    for w in warmers {
        w.await.unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(spawn_one(deadline, done.clone())))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let rps = n as f64 / secs;
    println!(
        "{name:<9} {:>11} {:>9} {:>7.2} {:>10.0} {:>13.1}",
        args.concurrency,
        n,
        secs,
        rps,
        rps / TARGET_RPS
    );
    rps
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let profile = ModelProfile {
            output_tokens: OutputLength { min: 20, max: 60 },
            ..ModelProfile::default()
        };
        let emu = emulator::start(
            EmulatorConfig::any_model(profile, 0),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let addr = emu.addr();
        println!(
            "emulator capacity, zero latency, no quota, {} cores, {:.0} s per client\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.seconds
        );
        println!(
            "{:<9} {:>11} {:>9} {:>7} {:>10} {:>13}",
            "client", "concurrency", "requests", "secs", "req/s", "vs 5,000/s"
        );
        measure("raw-http", &args, |deadline, done| {
            raw_client(addr, deadline, done)
        })
        .await;
        // The emulator's SDK config turns the SDK's own retries off: batchrun owns retries, so every throttle
        // is seen and none is hidden.
        let client = aws_sdk_bedrockruntime::Client::from_conf(emu.sdk_config().build());
        measure("aws-sdk", &args, |deadline, done| {
            sdk_client(client.clone(), deadline, done)
        })
        .await;
        let stats = emu.stats();
        let served: u64 = stats.models.values().map(|m| m.totals.succeeded).sum();
        let errors: u64 = stats
            .models
            .values()
            .map(|m| m.totals.requests - m.totals.succeeded)
            .sum();
        println!("\nemulator counted {served} successful replies and {errors} others");
    });
}
