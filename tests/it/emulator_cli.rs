//! `batchrun emulator` as a user runs it: the built binary, its first line, a request, Ctrl-C, and a bad profile.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{client_for_endpoint, user};

fn batchrun() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchrun"));
    cmd.env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env_remove("RUST_LOG");
    cmd
}

#[tokio::test]
async fn emulator_prints_its_address_serves_and_stops_on_ctrl_c() {
    let mut child = batchrun()
        .args([
            "emulator",
            "--port",
            "0",
            "--tpm",
            "100000",
            "--output-tokens",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let endpoint = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    let out = client_for_endpoint(&endpoint)
        .converse()
        .model_id("anthropic.claude-3-haiku-20240307-v1:0")
        .messages(user("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.usage().unwrap().output_tokens(), 4);

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("serving any model id: tpm 100000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("emulator stopped: 1 requests served, 0 throttled"),
        "{stderr}"
    );
}

#[test]
fn a_bad_profile_names_the_file_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.toml");
    std::fs::write(&path, "[models.\"*\"]\ntpm = 1000\nburndwon = 5\n").unwrap();
    let output = batchrun()
        .args(["emulator", "--port", "0", "--profile"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("profile.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("burndwon"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_bad_fault_flag_is_a_usage_error() {
    let output = batchrun()
        .args(["emulator", "--fault", "gremlins=0.5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown fault `gremlins`"), "{stderr}");
}

#[test]
fn fault_rates_above_one_are_refused() {
    let output = batchrun()
        .args([
            "emulator",
            "--port",
            "0",
            "--fault",
            "internal=0.8",
            "--fault",
            "hang=0.5",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add up to 1.3"), "{stderr}");
}
