//! The demo corpus (jobs/data/tickets.jsonl, 300 tickets, the demo's model and quota) run both ways: on demand,
//! and through Bedrock batch inference. The built binary talks to the emulator (in this process, with the demo's
//! quota profile) and stages on a loopback S3-compatible server (s3s-fs, in this process).
//!
//! ```text
//! cargo bench --bench batch [-- --rate 100]
//! ```
//!
//! Prints `plan`'s comparison of the two for the corpus, then for each path: wall time, exit code, records in the
//! output, and the calls the emulator saw — runtime calls (Converse) with their throttles, and control-plane
//! calls (Create/Get/List/StopModelInvocationJob) with the records batch jobs answered. `--rate` is how many
//! records a second the emulator's batch jobs answer (Bedrock gives no such figure; a batch job takes up to 24 h).

#[path = "../tests/it/common/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::path::Path;
use std::time::Instant;

use batchrun::emulator::{self, EmulatorConfig, EmulatorHandle};

/// `batchrun ARGS` in `dir`, signing as the S3 server expects and reading no AWS configuration of the machine's.
fn batchrun(dir: &Path, args: &[&str], s3: &s3::S3Server) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_batchrun"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_ENDPOINT_URL_S3", &s3.endpoint);
    tokio::process::Command::from(cmd)
}

/// The demo's emulator profile with batch jobs that answer `rate` records a second on `s3`.
async fn demo_emulator(s3: &s3::S3Server, rate: f64) -> EmulatorHandle {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = std::fs::read_to_string(root.join("jobs/emulator/demo-quota.toml")).unwrap();
    let text = format!(
        "{profile}\n[batch]\nrecords-per-second = {rate}\nstart-delay-s = 1\ns3-endpoint = \"{}\"\n\
         s3-access-key-id = \"{}\"\ns3-secret-access-key = \"{}\"\n",
        s3.endpoint,
        s3::ACCESS_KEY,
        s3::SECRET_KEY
    );
    let config = EmulatorConfig::from_toml(&text, Path::new("demo-quota.toml")).unwrap();
    emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The demo job in a new folder, at `emu`, in `mode`, staging under `s3://stage/demo/`.
fn demo_job(dir: &Path, emu: &EmulatorHandle, mode: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        root.join("jobs/data/tickets.jsonl"),
        dir.join("data/tickets.jsonl"),
    )
    .unwrap();
    let demo = std::fs::read_to_string(root.join("jobs/demo.toml")).unwrap();
    let job = demo
        .replace(
            "name = \"demo\"",
            &format!("name = \"demo\"\nmode = \"{mode}\""),
        )
        .replace("path = \"../out/demo/\"", "path = \"out\"")
        .replace(
            "url = \"emulator\"",
            &format!("url = \"{}\"", emu.endpoint()),
        )
        .replace("emulator-profile = \"emulator/demo-quota.toml\"\n", "");
    std::fs::write(
        dir.join("job.toml"),
        format!(
            "{job}\n[batch]\nrole-arn = \"arn:aws:iam::123456789012:role/BedrockBatch\"\n\
             staging = \"s3://stage/demo/\"\npoll-secs = 0.5\npoll-max-secs = 2\n"
        ),
    )
    .unwrap();
}

fn output_records(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("out"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
                .sum()
        })
        .unwrap_or(0)
}

async fn run_path(mode: &str, rate: f64) {
    let s3 = s3::s3_server(&["stage"]).await;
    let emu = demo_emulator(&s3, rate).await;
    let dir = tempfile::tempdir().unwrap();
    demo_job(dir.path(), &emu, mode);
    let started = Instant::now();
    let out = batchrun(
        dir.path(),
        &["submit", "job.toml", "--progress", "off"],
        &s3,
    )
    .output()
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stats = emu.stats();
    let (mut calls, mut ok, mut throttled, mut other) = (0, 0, 0, 0);
    for m in stats.models.values() {
        let c = &m.totals;
        calls += c.requests;
        ok += c.succeeded;
        throttled += c.throttled_rpm + c.throttled_tpm + c.throttled_tpd;
        other += c.busy + c.faults + c.rejected;
    }
    let b = &stats.batch;
    println!(
        "{mode:<9}  {seconds:>6.1} s  exit {:?}  {} records in the output  runtime: {calls} calls ({ok} answered, \
         {throttled} throttled, {other} faults or refusals)  control plane: {} create, {} get, {} list, {} stop; {} batch jobs answered {} \
         records ({} failed, {} left out)",
        out.status.code(),
        output_records(dir.path()),
        b.create_calls,
        b.get_calls,
        b.list_calls,
        b.stop_calls,
        b.jobs_created,
        b.records_succeeded,
        b.records_failed,
        b.records_missing
    );
    if out.status.code() != Some(0) {
        println!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: f64 = args
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| args.get(i + 1))
        .map_or(100.0, |r| r.parse().expect("--rate takes a number"));
    // plan, for the corpus as the demo job describes it.
    let s3 = s3::s3_server(&["stage"]).await;
    let emu = demo_emulator(&s3, rate).await;
    let dir = tempfile::tempdir().unwrap();
    demo_job(dir.path(), &emu, "auto");
    let plan = batchrun(dir.path(), &["plan", "job.toml"], &s3)
        .output()
        .await
        .unwrap();
    println!("plan (jobs/demo.toml's corpus and model, mode = \"auto\"):");
    for line in String::from_utf8_lossy(&plan.stdout).lines() {
        println!("  {line}");
    }
    drop((emu, s3));
    println!(
        "\nbatch jobs answer {rate} records/s here; the runtime quota is the demo's (jobs/emulator/demo-quota.toml)"
    );
    run_path("on-demand", rate).await;
    run_path("batch", rate).await;
}
