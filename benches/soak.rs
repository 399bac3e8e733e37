//! Kill -9 soak: a job killed with SIGKILL at random moments, again and again, then resumed to the end; once
//! with output to a local folder and once to an S3 prefix (s3s-fs on loopback, in this process). The emulator
//! runs in this process too, so every call any of the runs made is counted in one place.
//!
//! ```text
//! cargo bench --bench soak [-- --records 5000 --kills 50 --s3-kills 20 --seed 1]
//! ```
//!
//! Prints, per output: kills made, records, output lines, duplicates and lost records (both must be 0), calls
//! the emulator answered, and how many answers were paid for twice (answered, but cut off by a kill before the
//! run committed them) against the most a kill can cut off (the calls in flight, `max-concurrency`, per kill).

#[path = "../tests/it/common/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchrun::emulator::{self, EmulatorConfig, EmulatorHandle};

const CONCURRENCY: u64 = 16;

struct Options {
    records: usize,
    kills: usize,
    s3_kills: usize,
    seed: u64,
}

fn options() -> Options {
    let mut o = Options {
        records: 5000,
        kills: 50,
        s3_kills: 20,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} takes a number"))
        };
        match a.as_str() {
            "--records" => o.records = value() as usize,
            "--kills" => o.kills = value() as usize,
            "--s3-kills" => o.s3_kills = value() as usize,
            "--seed" => o.seed = value(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// A small deterministic generator for kill moments (xorshift).
struct Moments(u64);

impl Moments {
    /// The next wait before a kill: 0.2 to 1.5 s.
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(200 + self.0 % 1300)
    }
}

fn command(dir: &Path, s3_endpoint: &str) -> Command {
    let mut cmd = s3::submit_command(dir);
    cmd.env("AWS_ENDPOINT_URL_S3", s3_endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn succeeded(emu: &EmulatorHandle) -> u64 {
    emu.stats()
        .models
        .values()
        .map(|m| m.totals.succeeded)
        .sum()
}

struct Soaked {
    kills: usize,
    lines: usize,
    duplicates: usize,
    lost: usize,
    answered: u64,
    seconds: f64,
}

/// Kills the job `kills` times, then runs it to the end; `read` returns every output line.
fn soak(
    dir: &Path,
    o: &Options,
    kills: usize,
    emu: &EmulatorHandle,
    s3_endpoint: &str,
    read: &dyn Fn() -> Vec<String>,
) -> Soaked {
    let started = Instant::now();
    let before = succeeded(emu);
    let mut moments = Moments(o.seed.max(1));
    let mut done_kills = 0;
    for _ in 0..kills {
        let mut child = command(dir, s3_endpoint).spawn().unwrap();
        std::thread::sleep(moments.next());
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            done_kills += 1;
        }
        child.wait().unwrap();
    }
    let status = command(dir, s3_endpoint).status().unwrap();
    assert!(status.success(), "the final resume failed: {status}");
    let lines = read();
    let mut ids = HashSet::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.insert(v["recordId"].as_str().unwrap().to_string());
    }
    Soaked {
        kills: done_kills,
        lines: lines.len(),
        duplicates: lines.len() - ids.len(),
        lost: o.records - ids.len(),
        answered: succeeded(emu) - before,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn job(dir: &Path, records: usize, emulator: &str, output: &str) {
    let lines: String = (0..records)
        .map(|i| format!("{{\"id\": \"rec-{i:05}\", \"prompt\": \"Soak record number {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("in.jsonl"), lines).unwrap();
    std::fs::write(
        dir.join("job.toml"),
        format!(
            "[job]\nname = \"soak\"\n[model]\nid = \"m\"\nmax-tokens = 20\n\
             [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[budget]\nmax-concurrency = {CONCURRENCY}\n\
             [retry]\nbase-delay-ms = 20\nmax-delay-ms = 500\nmax-attempts = 20\n\
             [output]\npath = \"{output}\"\nrecords-per-part = 100\n[endpoint]\nurl = \"{emulator}\"\n"
        ),
    )
    .unwrap();
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, emu) = runtime.block_on(async {
        let server = s3::s3_server(&["soak"]).await;
        // About 0.3 s a call and a 1 % of 503s: a run is killed with calls in flight and retries pending.
        let config = EmulatorConfig::from_toml(
            "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n\
             latency = { first-token-ms = 250, per-token-ms = 5, jitter = 0.3 }\n\
             faults = { service-unavailable = 0.01 }\n",
            Path::new("soak.toml"),
        )
        .unwrap();
        let emu = emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        (server, emu)
    });

    println!(
        "{} records, {CONCURRENCY} in flight, replies in about 0.3 s, 1 % 503s; kills 0.2 to 1.5 s into each run\n",
        o.records
    );
    println!(
        "{:>6} {:>6} {:>8} {:>7} {:>6} {:>5} {:>9} {:>11} {:>13} {:>8}",
        "output",
        "kills",
        "records",
        "lines",
        "dups",
        "lost",
        "answered",
        "paid twice",
        "at most",
        "seconds"
    );
    let print = |name: &str, s: &Soaked| {
        println!(
            "{:>6} {:>6} {:>8} {:>7} {:>6} {:>5} {:>9} {:>11} {:>13} {:>8.1}",
            name,
            s.kills,
            o.records,
            s.lines,
            s.duplicates,
            s.lost,
            s.answered,
            s.answered.saturating_sub(o.records as u64),
            s.kills as u64 * CONCURRENCY,
            s.seconds
        );
    };

    let local = tempfile::tempdir().unwrap();
    job(local.path(), o.records, &emu.endpoint(), "out");
    let out = local.path().join("out");
    let read_local = || {
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("part-")
            })
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    print(
        "local",
        &soak(
            local.path(),
            &o,
            o.kills,
            &emu,
            &server.endpoint,
            &read_local,
        ),
    );

    let remote = tempfile::tempdir().unwrap();
    job(remote.path(), o.records, &emu.endpoint(), "s3://soak/run/");
    let read_s3 = || {
        runtime.block_on(async {
            let mut lines = Vec::new();
            for key in server.keys("soak", "run/").await {
                if key.ends_with(".jsonl") {
                    let text = String::from_utf8(server.get("soak", &key).await).unwrap();
                    lines.extend(text.lines().map(str::to_string));
                }
            }
            lines
        })
    };
    print(
        "s3",
        &soak(
            remote.path(),
            &o,
            o.s3_kills,
            &emu,
            &server.endpoint,
            &read_s3,
        ),
    );
    println!(
        "\nopen multipart uploads left on the server: {}",
        server.open_uploads().len()
    );
    drop(server);
}
