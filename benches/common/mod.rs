//! What the benchmarks that run the binary share.

use std::path::Path;
use std::time::Duration;

/// Runs `batchrun submit job.toml` in `dir` against test credentials and no AWS configuration of the machine's,
/// and sends it Ctrl-C at `deadline` if it has not ended. Returns its exit code and what it said on stderr.
pub async fn submit(dir: &Path, deadline: Duration) -> (Option<i32>, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchrun"))
        .args(["submit", "job.toml", "--progress", "off", "--grace", "10"])
        .current_dir(dir)
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let _ = tokio::io::BufReader::new(stderr)
            .read_to_string(&mut text)
            .await;
        text
    });
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status();
            child.wait().await.unwrap()
        }
    };
    (status.code(), log.await.unwrap())
}
