//! Memory of a run over one large input object: `batchrun submit` (the built binary) reading a JSONL object
//! from a loopback S3-compatible server (s3s-fs, in this process), side by side with the same bytes read from a
//! local file, at several sizes. If inputs are streamed, peak memory stays flat as the input grows.
//!
//! ```text
//! cargo bench --bench s3_stream [-- --mb 20,200]
//! ```
//!
//! Prints, per size and source: records, wall time, and the child's peak resident memory (`ru_maxrss` from
//! `wait4`), and the ratio of each peak to the smallest input's. The emulator answers at once (no latency, no
//! quota) and output goes to a local folder, so the figures are about reading and writing, not Bedrock.

#[path = "../tests/it/common/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use batchrun::emulator::{self, EmulatorConfig};

const LINE: usize = 10_000;

/// Writes `n` JSONL lines of about `LINE` bytes to `path`, streaming: the bench process must stay small, because
/// a child's peak RSS counts what it shares with its parent between fork and exec.
fn write_lines(path: &Path, n: usize) -> u64 {
    use std::io::Write;
    let filler = "lorem ipsum dolor sit amet ".repeat(LINE / 27 + 1);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(
            out,
            "{{\"id\": \"r{i:06}\", \"prompt\": \"{i} {}\"}}",
            &filler[..LINE]
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

struct Measured {
    records: usize,
    seconds: f64,
    max_rss_mb: f64,
}

/// Runs the binary to the end in `dir` and returns its wall time and peak RSS.
fn run(dir: &Path, env: &[(&str, &str)]) -> (f64, f64) {
    let started = Instant::now();
    let mut cmd = s3::submit_command(dir);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Reaped by wait4 below, which also reports the peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; the pid is our own child, waited for once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the run failed (status {status}) in {}",
        dir.display()
    );
    // Linux reports ru_maxrss in KiB.
    (
        started.elapsed().as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

fn main() {
    let mut sizes_mb = vec![20usize, 200];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mb" => {
                sizes_mb = args
                    .next()
                    .expect("--mb SIZES")
                    .split(',')
                    .map(|s| s.parse().expect("sizes in MB"))
                    .collect()
            }
            "--bench" => {}
            other => panic!("unknown argument {other}; use --mb 20,200"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, emu) = runtime.block_on(async {
        let server = s3::s3_server(&["data"]).await;
        let config = EmulatorConfig::from_toml(
            "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n",
            Path::new("bench.toml"),
        )
        .unwrap();
        let emu = emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        (server, emu)
    });
    println!(
        "one JSONL input of {LINE}-byte lines, output to a local folder, emulator without latency or quota\n"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>9} {:>12} {:>10}",
        "input", "source", "records", "seconds", "peak RSS MB", "vs first"
    );
    let mut first: [Option<f64>; 2] = [None, None];
    for mb in sizes_mb {
        let n = mb * 1_000_000 / (LINE + 30);
        // Seeded into the server's storage and into a local file; the run reads through the server.
        let size = write_lines(&server.root.path().join("data/big.jsonl"), n);
        for (i, source) in ["local", "s3"].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let input = if source == "s3" {
                "s3://data/big.jsonl".to_string()
            } else {
                write_lines(&dir.path().join("big.jsonl"), n);
                "big.jsonl".to_string()
            };
            std::fs::write(
                dir.path().join("job.toml"),
                format!(
                    "[job]\nname = \"bench\"\n[model]\nid = \"m\"\nmax-tokens = 16\n\
                     [input]\npath = \"{input}\"\nformat = \"jsonl\"\n[budget]\nmax-concurrency = 64\n\
                     [output]\npath = \"out\"\n[endpoint]\nurl = \"{}\"\n",
                    emu.endpoint()
                ),
            )
            .unwrap();
            let (seconds, max_rss_mb) =
                run(dir.path(), &[("AWS_ENDPOINT_URL_S3", &server.endpoint)]);
            let m = Measured {
                records: n,
                seconds,
                max_rss_mb,
            };
            let base = *first[i].get_or_insert(m.max_rss_mb);
            println!(
                "{:>6}MB {:>8} {:>8} {:>9.1} {:>12.1} {:>9.2}×",
                size / 1_000_000,
                source,
                m.records,
                m.seconds,
                m.max_rss_mb,
                m.max_rss_mb / base
            );
        }
    }
    drop(server);
}
