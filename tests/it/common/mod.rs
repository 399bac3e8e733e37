//! Shared test harness: an in-process emulator on `127.0.0.1:0`, an SDK client pointed at it, and a raw HTTP
//! helper for what the SDK does not expose (headers, the stats endpoint).

use std::path::Path;
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use batchrun::emulator::{self, EmulatorConfig, EmulatorHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod job;
pub mod s3;

/// Starts an emulator from a TOML profile on a free loopback port.
pub async fn emulator(profile: &str) -> EmulatorHandle {
    let config = EmulatorConfig::from_toml(profile, Path::new("test-profile.toml"))
        .expect("test profile parses");
    emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

/// A real SDK client for `emu`: the emulator's SDK config (test credentials, SDK retries off) and a 10 s
/// operation timeout.
pub fn client(emu: &EmulatorHandle) -> Client {
    client_with_timeout(emu, Duration::from_secs(10))
}

/// As [`client`], with the given operation timeout.
pub fn client_with_timeout(emu: &EmulatorHandle, timeout: Duration) -> Client {
    let conf = emu
        .sdk_config()
        .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
        .build();
    Client::from_conf(conf)
}

/// A real SDK client for an emulator at `endpoint` in another process, configured as [`client`] is.
pub fn client_for_endpoint(endpoint: &str) -> Client {
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "test-secret",
            None,
            None,
            "tests",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// The text of a Converse reply's first content block.
pub fn reply_text(out: &ConverseOutput) -> String {
    let message = out
        .output()
        .and_then(|o| o.as_message().ok())
        .expect("a message reply");
    message.content()[0]
        .as_text()
        .expect("a text block")
        .clone()
}

/// A one-message user conversation.
pub fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_string()))
        .build()
        .unwrap()
}

/// An inference config with `maxTokens` set.
pub fn max_tokens(n: i32) -> InferenceConfiguration {
    InferenceConfiguration::builder().max_tokens(n).build()
}

/// A raw HTTP/1.1 exchange: returns the status, the headers (lower-cased names) and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The value of header `name` (lower case), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Sends signal `name` (`INT`, `HUP`, …) to a running child.
pub fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the child runs").to_string();
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// The dollar amounts in a line of `plan` or `report` (`$0.40 … $0.80`), as written.
pub fn dollar_amounts(line: &str) -> Vec<&str> {
    line.split('$')
        .skip(1)
        .map(|a| a.split([' ', ')']).next().unwrap())
        .collect()
}
