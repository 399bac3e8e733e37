//! No number makes batchrun panic: every numeric key of a job file and of an emulator profile, and every
//! numeric flag, is tried with values from the edges (zero, negatives, the integer limits, huge and tiny
//! floats, infinities, NaN) and at random, through the built binary. Each run must end with an exit code of
//! its own (0, 1, 2, …), never 101 (a panic) nor a signal.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use batchrun::emulator::EmulatorHandle;

/// Keys of a job file that hold numbers, with the table they are in.
const JOB_KEYS: &[(&str, &str)] = &[
    ("model", "max-tokens"),
    ("model", "temperature"),
    ("model", "top-p"),
    ("model", "output-burndown"),
    ("budget", "rpm"),
    ("budget", "tpm"),
    ("budget", "max-concurrency"),
    ("budget", "quota-refresh-secs"),
    ("retry", "base-delay-ms"),
    ("retry", "max-delay-ms"),
    ("retry", "max-attempts"),
    ("output", "records-per-part"),
    ("endpoint", "timeout-secs"),
    ("chunk", "tokens"),
    ("chunk", "overlap"),
    ("model", "dimensions"),
    ("target", "rpm"),
    ("target", "tpm"),
];

/// Keys of an emulator profile's model table that hold numbers.
const PROFILE_KEYS: &[&str] = &[
    "rpm",
    "tpm",
    "tpd",
    "initial-fill",
    "burndown",
    "context-window",
    "max-output-tokens",
    "output-tokens.min",
    "output-tokens.max",
    "latency.first-token-ms",
    "latency.per-token-ms",
    "latency.jitter",
    "max-concurrency",
    "embedding-dimensions",
    "faults.service-unavailable",
    "faults.hang-ms",
    "flex-latency",
    "priority-latency",
    "cache-min-tokens",
];

/// Numeric flags, with the command that takes them.
const FLAGS: &[(&str, &str)] = &[
    ("submit", "--grace"),
    ("plan", "--deadline"),
    ("plan", "--latency"),
    ("plan", "--output-tokens"),
    ("report", "--deadline"),
];

/// A number as TOML writes it: the edges, and random integers and floats.
fn number() -> impl Strategy<Value = String> {
    let edges = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "2147483647",
        "2147483648",
        "4294967295",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "0.0",
        "-0.0",
        "0.5",
        "1.5",
        "1e-300",
        "1e300",
        "1.7976931348623157e308",
        "inf",
        "-inf",
        "nan",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        3 => edges,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(toml_float),
    ]
}

fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:e}")
    }
}

/// A flag's value: the same numbers, and durations with units.
fn flag_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => number(),
        1 => (number(), prop::sample::select(vec!["ms", "s", "m", "h", "d"]))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
    ]
}

/// A fast emulator for the runs that send, started once in a runtime of its own.
fn emulator() -> &'static EmulatorHandle {
    static EMU: OnceLock<(tokio::runtime::Runtime, EmulatorHandle)> = OnceLock::new();
    &EMU.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let emu = rt.block_on(crate::common::emulator(
            "[models.\"*\"]\noutput-tokens = { min = 2, max = 4 }\n",
        ));
        (rt, emu)
    })
    .1
}

/// A job file with `[table] key = value` set (the other keys ordinary), reading one record.
fn job_file(dir: &Path, table: &str, key: &str, value: &str, endpoint: &str) {
    let mut tables = vec![
        ("model", "id = \"m\"\nmax-tokens = 20\n".to_string()),
        (
            "input",
            "path = \"in.jsonl\"\nformat = \"jsonl\"\n".to_string(),
        ),
        ("budget", String::new()),
        ("retry", "base-delay-ms = 10\n".to_string()),
        ("output", "path = \"out\"\n".to_string()),
        ("endpoint", format!("url = \"{endpoint}\"\n")),
    ];
    if table == "chunk" {
        // Chunks are of documents: the same one record, as a document.
        tables[1].1 = "path = \"docs\"\nformat = \"documents\"\n".to_string();
        tables.push(("chunk", "tokens = 64\n".to_string()));
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(dir.join("docs/a.md"), "One.\n").unwrap();
    }
    if table == "target" {
        tables.push(("target", String::new()));
    }
    for (name, body) in &mut tables {
        if *name == table {
            // The key replaces an ordinary line of the same name.
            *body = body
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + &format!("{key} = {value}\n");
        }
    }
    let mut text = "[job]\nname = \"numbers\"\n".to_string();
    for (name, body) in tables {
        // Targets are an array of tables.
        match name {
            "target" => text.push_str(&format!("[[target]]\n{body}")),
            _ => text.push_str(&format!("[{name}]\n{body}")),
        }
    }
    std::fs::write(dir.join("job.toml"), text).unwrap();
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n",
    )
    .unwrap();
}

/// Runs the binary in `dir`, killed after 20 s (a run with a huge but valid number may wait that long; what
/// matters is that it did not panic).
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchrun"))
        .args(args)
        .current_dir(dir)
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let timed_out = child.try_wait().unwrap().is_none();
    if timed_out {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if !timed_out {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.signal().is_none(),
            "`batchrun {}` died of signal {:?}: {}",
            args.join(" "),
            out.status.signal(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn assert_no_panic(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "{what}: exit {:?}\n{stderr}",
        out.status.code()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_number_in_a_job_file_makes_plan_or_submit_panic(
        key in prop::sample::select(JOB_KEYS),
        value in number(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        job_file(dir.path(), key.0, key.1, &value, &emulator().endpoint());
        let what = format!("[{}] {} = {value}", key.0, key.1);
        assert_no_panic(&run(dir.path(), &["plan", "job.toml"]), &what);
        assert_no_panic(&run(dir.path(), &["submit", "job.toml", "--progress", "off"]), &what);
    }

    #[test]
    fn no_number_in_an_emulator_profile_makes_plan_or_the_emulator_panic(
        key in prop::sample::select(PROFILE_KEYS),
        value in number(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        job_file(dir.path(), "endpoint", "emulator-profile", "\"p.toml\"", "emulator");
        let (table, field) = match key.split_once('.') {
            Some((t, f)) => (format!("[models.\"*\".{t}]\n"), f),
            None => (String::new(), key),
        };
        std::fs::write(
            dir.path().join("p.toml"),
            format!("[models.\"*\"]\n{table}{field} = {value}\n"),
        )
        .unwrap();
        let what = format!("profile {key} = {value}");
        assert_no_panic(&run(dir.path(), &["plan", "job.toml"]), &what);
        assert_no_panic(&run(dir.path(), &["submit", "job.toml", "--progress", "off"]), &what);
    }

    #[test]
    fn no_number_given_to_a_flag_makes_batchrun_panic(
        flag in prop::sample::select(FLAGS),
        value in flag_value(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        job_file(dir.path(), "budget", "rpm", "6000", &emulator().endpoint());
        let (command, name) = flag;
        let flag = format!("{name}={value}");
        let mut args = vec![command, "job.toml", flag.as_str()];
        if command == "submit" {
            args.extend(["--progress", "off"]);
        }
        if command == "report" {
            assert_no_panic(&run(dir.path(), &["submit", "job.toml", "--progress", "off"]), "submit");
        }
        assert_no_panic(&run(dir.path(), &args), &format!("{command} {flag}"));
    }
}

/// The numbers that once ended batchrun with a panic (issue 10), each refused now with exit 2 and its key.
#[test]
fn the_numbers_that_once_panicked_are_refused_with_exit_2_naming_the_key() {
    let cases: &[(&str, &str, &str, &[&str], &str)] = &[
        // (table, key, value, command, what the error names)
        (
            "budget",
            "rpm",
            "600",
            &["submit", "job.toml", "--grace", "inf"],
            "--grace",
        ),
        (
            "budget",
            "rpm",
            "600",
            &["plan", "job.toml", "--deadline", "1e300"],
            "--deadline",
        ),
        (
            "endpoint",
            "timeout-secs",
            "1e300",
            &["submit", "job.toml"],
            "endpoint.timeout-secs",
        ),
        (
            "model",
            "max-tokens",
            "2147483648",
            &["submit", "job.toml"],
            "model.max-tokens",
        ),
        (
            "budget",
            "tpm",
            "9223372036854775807",
            &["plan", "job.toml"],
            "budget.tpm",
        ),
    ];
    for (table, key, value, args, names) in cases {
        let dir = tempfile::tempdir().unwrap();
        job_file(dir.path(), table, key, value, &emulator().endpoint());
        let out = run(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} with {key} = {value}: {stderr}"
        );
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
    // An emulator profile with an infinite latency.
    let dir = tempfile::tempdir().unwrap();
    job_file(
        dir.path(),
        "endpoint",
        "emulator-profile",
        "\"p.toml\"",
        "emulator",
    );
    std::fs::write(
        dir.path().join("p.toml"),
        "[models.\"*\"]\nlatency = { first-token-ms = inf }\n",
    )
    .unwrap();
    let out = run(dir.path(), &["submit", "job.toml", "--progress", "off"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("latency"), "{stderr}");
}
