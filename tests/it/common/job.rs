//! `TestJob`: a job folder in a temporary directory (job file, inputs, outputs, state), and the built
//! `batchrun` binary run against it with test credentials and no AWS configuration of the machine's.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// A job folder.
pub struct TestJob {
    dir: TempDir,
    env: RefCell<Vec<(String, Option<String>)>>,
}

impl TestJob {
    /// An empty job folder.
    pub fn new() -> Self {
        let t = TestJob {
            dir: tempfile::tempdir().unwrap(),
            env: RefCell::new(Vec::new()),
        };
        // Empty AWS configuration files: the machine's own profiles must not leak into tests.
        t.write(".aws/config", "").write(".aws/credentials", "");
        t
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the binary, after the defaults.
    pub fn env(&self, key: &str, value: Option<&str>) -> &Self {
        self.env
            .borrow_mut()
            .push((key.to_string(), value.map(str::to_string)));
        self
    }

    /// Points the binary's S3 client at `endpoint` (`AWS_ENDPOINT_URL_S3`).
    pub fn s3_endpoint(&self, endpoint: &str) -> &Self {
        self.env("AWS_ENDPOINT_URL_S3", Some(endpoint))
    }

    /// Writes a file (creating folders) relative to the job folder.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }

    /// Writes `job.toml`: the given tables after a `[job]` named `test`, and an `[endpoint]` at `endpoint`
    /// with a 5 s call timeout.
    pub fn job(&self, body: &str, endpoint: &str) -> &Self {
        self.job_with_timeout(body, endpoint, 5.0)
    }

    /// As [`TestJob::job`], with the given call timeout.
    pub fn job_with_timeout(&self, body: &str, endpoint: &str, timeout_secs: f64) -> &Self {
        self.write(
            "job.toml",
            format!(
                "[job]\nname = \"test\"\n{body}\n[endpoint]\nurl = \"{endpoint}\"\ntimeout-secs = {timeout_secs}\n"
            ),
        )
    }

    /// The binary with the arguments, run in the job folder with isolated AWS settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchrun"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("AWS_BEARER_TOKEN_BEDROCK")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("RUST_LOG")
            .env_remove("BATCHRUN_MODELS")
            .env_remove("BATCHRUN_PRICES")
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.dir.path().join(".aws/config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join(".aws/credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in self.env.borrow().iter() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Runs `batchrun submit job.toml` plus `extra` to the end.
    pub async fn submit(&self, extra: &[&str]) -> Run {
        let mut args = vec!["submit", "job.toml", "--progress", "off"];
        args.extend_from_slice(extra);
        Run::from(self.command(&args).output().await.unwrap())
    }

    /// Starts `batchrun submit job.toml` without waiting.
    pub fn spawn_submit(&self) -> Child {
        self.command(&["submit", "job.toml", "--progress", "off"])
            .spawn()
            .unwrap()
    }

    /// `(done, pending)` records of job `test` in the job folder's state database.
    pub async fn done_in_state(&self) -> (u64, u64) {
        let store = batchrun::checkpoint::Store::open(&self.path().join(".batchrun/state.db"))
            .await
            .unwrap();
        let c = store.counts("test").await.unwrap();
        store.close().await;
        (c.done, c.pending())
    }

    /// Every line of every published part in `out` (relative), in part order.
    pub fn output_lines(&self, out: &str) -> Vec<Value> {
        self.part_files(out)
            .iter()
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{} is cut short",
                    p.display()
                );
                text.lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l)
                            .unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The JSONL part files in `out` (relative), in part order.
    pub fn part_files(&self, out: &str) -> Vec<PathBuf> {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join(out))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("part-") && name.ends_with(".jsonl")
            })
            .collect();
        parts.sort();
        parts
    }

    /// Output lines by record id, failing on any id that appears twice.
    pub fn output_by_id(&self, out: &str) -> BTreeMap<String, Value> {
        let mut by_id = BTreeMap::new();
        for line in self.output_lines(out) {
            let id = line["recordId"].as_str().unwrap().to_string();
            assert!(
                by_id.insert(id.clone(), line).is_none(),
                "record {id} is in the output twice"
            );
        }
        by_id
    }
}

/// A finished run of the binary.
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The reply text of an output line (Converse shape).
pub fn output_text(line: &Value) -> &str {
    line["modelOutput"]["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply text in {line}"))
}
