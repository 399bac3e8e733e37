//! The emulator's Service Quotas API through the real `aws-sdk-servicequotas` client: quotas listed under
//! Bedrock's names for on-demand, cross-region and global ids, every page; an increase requested, approved after
//! the profile's delay, and the higher ceiling in force for the next Bedrock call; access denied.

use std::time::Duration;

use aws_sdk_servicequotas::Client;
use aws_sdk_servicequotas::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_servicequotas::types::RequestStatus;
use batchrun::emulator::EmulatorHandle;
use batchrun::quotas::names::{self, Measure, Scope};

use crate::common::{client, emulator, max_tokens, user};

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

fn quotas_client(emu: &EmulatorHandle) -> Client {
    let conf = aws_sdk_servicequotas::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "test-secret",
            None,
            None,
            "tests",
        ))
        .endpoint_url(emu.endpoint())
        .build();
    Client::from_conf(conf)
}

const PROFILE: &str = "[service-quotas]\napprove-after-s = 0.5\n\
    [models.\"anthropic.claude-3-haiku-20240307-v1:0\"]\ntpm = 1000\nrpm = 50\ntpd = 1440000\n\
    output-tokens = { min = 5, max = 5 }\n\
    [models.\"us.anthropic.claude-3-5-sonnet-20241022-v2:0\"]\ntpm = 2000\n\
    [models.\"global.anthropic.claude-sonnet-4-5-20250929-v1:0\"]\ntpm = 3000\n\
    display-name = \"Anthropic Claude Sonnet 4.5 V1\"\n";

#[tokio::test]
async fn quotas_are_listed_under_bedrock_names_for_every_scope() {
    let emu = emulator(PROFILE).await;
    let sq = quotas_client(&emu);
    // Two to a page: every page is read.
    let mut pages = sq
        .list_service_quotas()
        .service_code("bedrock")
        .max_results(2)
        .into_paginator()
        .send();
    let mut quotas = Vec::new();
    while let Some(page) = pages.next().await {
        quotas.extend(page.unwrap().quotas().to_vec());
    }
    assert_eq!(quotas.len(), 5, "{quotas:#?}");
    let read: Vec<(String, names::QuotaName, f64)> = quotas
        .iter()
        .map(|q| {
            let name = q.quota_name().unwrap();
            (
                q.quota_code().unwrap().to_string(),
                names::parse(name).unwrap_or_else(|| panic!("unread: {name}")),
                q.value().unwrap(),
            )
        })
        .collect();
    let find = |id: &str, measure: Measure| {
        read.iter()
            .filter(|(_, n, _)| n.measure == measure && n.scope == Scope::of(id))
            .find(|(_, n, _)| names::matches(id, &n.model).is_some())
            .unwrap_or_else(|| panic!("no {measure:?} quota for {id}: {read:#?}"))
    };
    assert_eq!(find(HAIKU, Measure::Tpm).2, 1000.0);
    assert_eq!(find(HAIKU, Measure::Rpm).2, 50.0);
    assert_eq!(find(HAIKU, Measure::Tpd).2, 1_440_000.0);
    assert_eq!(
        find("us.anthropic.claude-3-5-sonnet-20241022-v2:0", Measure::Tpm).2,
        2000.0
    );
    assert_eq!(
        find(
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            Measure::Tpm
        )
        .2,
        3000.0
    );
    // A v2 id does not take the quota of another model, and codes are stable and in the signed Region.
    assert!(
        names::matches(
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            &find("us.anthropic.claude-3-5-sonnet-20241022-v2:0", Measure::Tpm)
                .1
                .model
        )
        .is_none()
    );
    let again = emulator(PROFILE).await;
    let code = find(HAIKU, Measure::Tpm).0.clone();
    let got = quotas_client(&again)
        .get_service_quota()
        .service_code("bedrock")
        .quota_code(&code)
        .send()
        .await
        .unwrap();
    let q = got.quota().unwrap();
    assert_eq!(q.value(), Some(1000.0));
    assert!(
        q.quota_arn()
            .unwrap()
            .starts_with("arn:aws:servicequotas:eu-west-1:"),
        "{q:?}"
    );
    assert!(q.adjustable());
    // An unknown code is the SDK's typed error.
    let err = sq
        .get_service_quota()
        .service_code("bedrock")
        .quota_code("L-00000000")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_no_such_resource_exception());
}

#[tokio::test]
async fn an_approved_increase_raises_the_live_quota() {
    let emu = emulator(PROFILE).await;
    let sq = quotas_client(&emu);
    let tpm = sq
        .list_service_quotas()
        .service_code("bedrock")
        .send()
        .await
        .unwrap()
        .quotas()
        .iter()
        .find(|q| {
            let n = names::parse(q.quota_name().unwrap()).unwrap();
            n.measure == Measure::Tpm && names::matches(HAIKU, &n.model).is_some()
        })
        .unwrap()
        .clone();
    // A call reserving 1,200 tokens does not fit a 1,000-token quota.
    let bedrock = client(&emu);
    let call = || {
        bedrock
            .converse()
            .model_id(HAIKU)
            .messages(user("Hello."))
            .inference_config(max_tokens(1200))
            .send()
    };
    let refused = call().await.unwrap_err();
    assert!(refused.into_service_error().is_throttling_exception());

    let requested = sq
        .request_service_quota_increase()
        .service_code("bedrock")
        .quota_code(tpm.quota_code().unwrap())
        .desired_value(5000.0)
        .send()
        .await
        .unwrap();
    let r = requested.requested_quota().unwrap();
    assert_eq!(r.status(), Some(&RequestStatus::Pending));
    // A second request while one is pending is refused; so is a value not above the current one.
    let twice = sq
        .request_service_quota_increase()
        .service_code("bedrock")
        .quota_code(tpm.quota_code().unwrap())
        .desired_value(6000.0)
        .send()
        .await
        .unwrap_err();
    assert!(
        twice
            .into_service_error()
            .is_resource_already_exists_exception()
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    let history = sq
        .list_requested_service_quota_change_history_by_quota()
        .service_code("bedrock")
        .quota_code(tpm.quota_code().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        history.requested_quotas()[0].status(),
        Some(&RequestStatus::Approved)
    );
    let now = sq
        .get_service_quota()
        .service_code("bedrock")
        .quota_code(tpm.quota_code().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(now.quota().unwrap().value(), Some(5000.0));
    let default = sq
        .get_aws_default_service_quota()
        .service_code("bedrock")
        .quota_code(tpm.quota_code().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(default.quota().unwrap().value(), Some(1000.0));
    // The live quota is the new one: the same call now fits (the bucket grows at the new rate, so give it a
    // moment to hold 1,200 tokens).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answered = false;
    for _ in 0..30 {
        if call().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "the raised quota never admitted the call");
}

#[tokio::test]
async fn a_role_without_service_quotas_access_is_denied() {
    let emu =
        emulator("[service-quotas]\naccess-denied = true\n[models.\"*\"]\ntpm = 1000\n").await;
    let err = quotas_client(&emu)
        .list_service_quotas()
        .service_code("bedrock")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_access_denied_exception());
}

#[tokio::test]
async fn batchrun_quotas_shows_the_job_model_s_quotas_or_says_why_not() {
    let emu = emulator(PROFILE).await;
    let t = crate::common::job::TestJob::new();
    t.write("in.jsonl", "{\"recordId\":\"a\",\"prompt\":\"Hi.\"}\n").job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [budget]\nrpm = 40\n[output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    let out = t.command(&["quotas", "job.toml"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |what: &str| {
        text.lines()
            .find(|l| l.starts_with("* on-demand") && l.contains(what))
            .unwrap_or_else(|| panic!("no {what} line: {text}"))
            .to_string()
    };
    assert!(line(" TPM ").contains("1,000"), "{text}");
    assert!(line(" RPM ").contains("50"), "{text}");
    assert!(line("tokens/day").contains("1,440,000"), "{text}");
    assert!(
        line(" TPM ")
            .contains("On-demand InvokeModel tokens per minute for Anthropic Claude 3 Haiku")
    );
    // Another model's quotas are not the job's.
    assert!(!text.contains("Sonnet"), "{text}");
    assert!(
        text.contains("the job file: budget.rpm 40, budget.tpm not set"),
        "{text}"
    );
    // What the job's plan needs of them.
    assert!(
        text.contains("the job's plan: 1 request, each reserving about")
            && text.contains("as submit would run it:"),
        "{text}"
    );
    // What the model table adds: the burndown, limits and prices, and that AWS no longer enforces RPM.
    assert!(
        text.contains(
            "model table: Claude 3 Haiku: output burndown 1; context window 200,000 tokens; max-tokens up to 4,096; \
             on-demand $0.25 / $1.25, batch $0.125 / $0.625 per million tokens in / out"
        ),
        "{text}"
    );
    assert!(
        text.contains("AWS no longer enforces requests-per-minute quotas"),
        "{text}"
    );

    let denied =
        emulator("[service-quotas]\naccess-denied = true\n[models.\"*\"]\ntpm = 1000\n").await;
    t.job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [output]\npath = \"out\"\n"
        ),
        &denied.endpoint(),
    );
    let out = t.command(&["quotas", "job.toml"]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no permission to read Service Quotas in us-east-1"),
        "{err}"
    );
    assert!(err.contains("servicequotas:ListServiceQuotas"), "{err}");
}

/// A job of 30 short records without a `[budget]`, against an emulator with 6,000 TPM that others already use
/// (5 % left at the start), its Service Quotas readable or not: `(exit code, stderr)`.
async fn unbudgeted_run(service_quotas: &str) -> (Option<i32>, String) {
    let emu = emulator(&format!(
        "{service_quotas}[models.\"{HAIKU}\"]\ntpm = 6000\ninitial-fill = 0.05\n\
         output-tokens = {{ min = 2, max = 4 }}\nlatency = {{ first-token-ms = 100 }}\n"
    ))
    .await;
    let t = crate::common::job::TestJob::new();
    let lines: String = (0..30)
        .map(|i| format!("{{\"recordId\":\"r{i}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    t.write("in.jsonl", lines).job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 100\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    (run.code, run.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_budget_starts_at_the_service_quotas_value() {
    let (code, known) = unbudgeted_run("").await;
    assert_eq!(code, Some(0), "{known}");
    let said = known
        .lines()
        .find(|l| l.starts_with("TPM 6,000 from Service Quotas L-"))
        .unwrap_or_else(|| panic!("no source line: {known}"));
    assert!(
        said.ends_with(
            ", applied (On-demand InvokeModel tokens per minute for Anthropic Claude 3 Haiku)"
        ),
        "{said}"
    );
    assert!(
        known.contains(" 0 throttled calls"),
        "no throttling phase: {known}"
    );

    // The same job where Service Quotas may not be read: a warning, and the quota is learned from throttles.
    let (code, learned) = unbudgeted_run("[service-quotas]\naccess-denied = true\n").await;
    assert_eq!(code, Some(0), "{learned}");
    assert!(
        learned.contains("warning: no permission to read Service Quotas in us-east-1"),
        "{learned}"
    );
    assert!(!learned.contains("from Service Quotas"), "{learned}");
    assert!(
        !learned.contains(" 0 throttled calls"),
        "learning throttles: {learned}"
    );
    let finished = |stderr: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with("finished:"))
            .unwrap_or_default()
            .to_string()
    };
    println!(
        "from Service Quotas: {}\nlearned from throttles: {}",
        finished(&known),
        finished(&learned)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_read_before_are_used_when_service_quotas_is_down() {
    let body = format!(
        "[model]\nid = \"{HAIKU}\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"out\"\n"
    );
    let t = crate::common::job::TestJob::new();
    t.write("in.jsonl", "{\"recordId\":\"a\",\"prompt\":\"Hi.\"}\n");
    let profile = |sq: &str| format!("{sq}[models.\"{HAIKU}\"]\ntpm = 7000\n");
    // With nothing read before, an outage is a warning and the quota is learned.
    let down = emulator(&profile("[service-quotas]\nunavailable = true\n")).await;
    t.job(&body, &down.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: could not read Service Quotas in us-east-1: service error")
            && run.stderr.contains("learned from throttles"),
        "{}",
        run.stderr
    );
    // Read once...
    let up = emulator(&profile("")).await;
    t.job(&body, &up.endpoint());
    let run = t.submit(&["--fresh"]).await;
    assert!(
        run.stderr.contains("TPM 7,000 from Service Quotas L-"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(", applied ("), "{}", run.stderr);
    // ...then down: the cached value, with the time it was read.
    t.job(&body, &down.endpoint());
    let run = t.submit(&["--fresh"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("using the quotas read at 20"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("TPM 7,000 from Service Quotas L-"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(", cached, read 20"), "{}", run.stderr);
}

#[tokio::test]
async fn an_increase_is_printed_then_requested_then_listed_until_approved() {
    let emu = emulator(&format!(
        "[service-quotas]\napprove-after-s = 0.5\n[models.\"{HAIKU}\"]\ntpm = 1000\n"
    ))
    .await;
    let t = crate::common::job::TestJob::new();
    t.write("in.jsonl", "{\"recordId\":\"a\",\"prompt\":\"Hi.\"}\n").job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    let run = |args: &'static [&'static str]| {
        let t = &t;
        async move {
            let out = t.command(args).output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    // Printed, not sent.
    let (code, out, err) = run(&["quotas", "request", "job.toml", "--tpm", "5000"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("TPM L-")
            && out.contains(": 1,000 → 5,000 (On-demand InvokeModel tokens per minute"),
        "{out}"
    );
    assert!(out.contains("aws service-quotas request-service-quota-increase --service-code bedrock --quota-code L-"), "{out}");
    assert!(
        out.contains("--desired-value 5000 --region us-east-1"),
        "{out}"
    );
    assert!(out.contains("nothing was requested"), "{out}");
    // Not above the current value: refused, exit 2.
    let (code, _, err) = run(&["quotas", "request", "job.toml", "--tpm", "900"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is already 1,000"), "{err}");
    // Sent, listed as pending, then approved and in force.
    let (code, out, err) =
        run(&["quotas", "request", "job.toml", "--tpm", "5000", "--submit"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("requested: id ") && out.contains("status PENDING"),
        "{out}"
    );
    let (_, out, _) = run(&["quotas", "job.toml"]).await;
    assert!(out.contains(": PENDING (5,000), made 20"), "{out}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, out, _) = run(&["quotas", "job.toml"]).await;
    assert!(out.contains(": APPROVED (5,000)"), "{out}");
    let tpm = out.lines().find(|l| l.contains(" TPM ")).unwrap();
    assert!(
        tpm.contains("5,000") && tpm.contains("1,000"),
        "applied and default: {tpm}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increase_approved_mid_run_is_picked_up_by_the_run() {
    let emu = emulator(&format!(
        "[service-quotas]\napprove-after-s = 0.5\n\
         [models.\"{HAIKU}\"]\ntpm = 3000\noutput-tokens = {{ min = 2, max = 4 }}\nlatency = {{ first-token-ms = 50 }}\n"
    ))
    .await;
    let t = crate::common::job::TestJob::new();
    let lines: String = (0..80)
        .map(|i| format!("{{\"recordId\":\"r{i}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    t.write("in.jsonl", lines).job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 100\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [budget]\nquota-refresh-secs = 0.3\n[output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    let child = t.spawn_submit();
    // Once the run is sending at the 3,000 TPM quota, ask for ten times as much.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while emu
        .stats()
        .models
        .get(HAIKU)
        .is_none_or(|m| m.totals.succeeded < 5)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = t
        .command(&[
            "quotas", "request", "job.toml", "--tpm", "30000", "--submit",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered_at_request = emu.stats().models[HAIKU].totals.succeeded;
    let ended = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("TPM 3,000 from Service Quotas L-"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TPM 30,000 from Service Quotas L-")
            && stderr.contains("applied (was 3,000: the account's quota changed)"),
        "{stderr}"
    );
    assert!(
        answered_at_request < 80,
        "the run ended before the request: {stderr}"
    );
    assert!(stderr.contains(" 0 throttled calls"), "{stderr}");
    // The report says where the budget came from.
    let out = t.command(&["report", "job.toml"]).output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("TPM 3,000 from Service Quotas"), "{report}");
}

#[tokio::test]
async fn quotas_of_a_model_without_a_job_come_the_standard_way() {
    let emu = emulator(PROFILE).await;
    let t = crate::common::job::TestJob::new();
    let out = t
        .command(&[
            "quotas",
            "--model",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "--region",
            "eu-west-1",
        ])
        .env("AWS_ENDPOINT_URL_SERVICE_QUOTAS", emu.endpoint())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(
            "Bedrock quotas for us.anthropic.claude-3-5-sonnet-20241022-v2:0 in eu-west-1"
        ),
        "{text}"
    );
    let tpm = text
        .lines()
        .find(|l| l.starts_with("* cross-region"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        tpm.contains("2,000") && tpm.contains("Anthropic Claude 3.5 Sonnet V2"),
        "{tpm}"
    );
    assert!(!text.contains("Haiku"), "{text}");
}

/// The job's output holds `n` lines, each record once.
fn assert_each_once(t: &crate::common::job::TestJob, n: usize) {
    let out = t.output_lines("out");
    let mut ids: Vec<&str> = out
        .iter()
        .map(|l| l["recordId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((out.len(), ids.len()), (n, n));
}

/// An account whose Service Quotas cannot be read, with 1,500 tokens a day for Haiku and 50-token replies.
fn daily_profile(extra: &str) -> String {
    format!(
        "[service-quotas]\naccess-denied = true\n\
         [models.\"{HAIKU}\"]\ntpd = 1500\n{extra}output-tokens = {{ min = 50, max = 50 }}\n\
         latency = {{ first-token-ms = 20 }}\n"
    )
}

/// `n` short records in `in.jsonl`, and the body of a job over them with 4 calls at once and `budget` lines.
fn daily_job(t: &crate::common::job::TestJob, n: usize, budget: &str) -> String {
    let lines: String = (0..n)
        .map(|i| format!("{{\"recordId\":\"r{i}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    t.write("in.jsonl", lines);
    format!(
        "[model]\nid = \"{HAIKU}\"\nmax-tokens = 60\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nmax-concurrency = 4\n{budget}[output]\npath = \"out\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_token_quota_stops_the_run_resumably_with_its_own_exit_code() {
    // 1,500 tokens a day, about 56 charged a record: the day's quota runs out after some 26 of 60 records.
    let profile = daily_profile("");
    let emu = emulator(&profile).await;
    let t = crate::common::job::TestJob::new();
    let body = daily_job(&t, 60, "");
    t.job(&body, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the daily token quota of anthropic.claude-3-haiku-20240307-v1:0 is used up"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: nothing was lost"),
        "{}",
        run.stderr
    );
    let (done, pending) = t.done_in_state().await;
    assert!(
        done > 0 && pending > 0 && done + pending == 60,
        "{done} done, {pending} pending"
    );
    // Not retried for seconds on end: each call in flight met the daily throttle once at most.
    let m = &emu.stats().models[HAIKU].totals;
    assert!(
        m.throttled_tpd >= 1 && m.throttled_tpd <= 4,
        "{} daily throttles",
        m.throttled_tpd
    );

    // The next day (a fresh quota), the run resumes and finishes: every record once.
    let next_day = emulator(&profile.replace("tpd = 1500", "tpd = 100000")).await;
    t.job(&body, &next_day.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_each_once(&t, 60);
    assert_eq!(next_day.stats().models[HAIKU].totals.succeeded, pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_daily_quota_wait_the_run_waits_for_the_daily_quota_and_finishes() {
    // 1,500 tokens a day, but a day of 20 s: the bucket refills 75 tokens a second. 30 records charge some
    // 1,700 tokens, so the day's quota runs out before the end and comes back while the run waits.
    let emu = emulator(&daily_profile("day-secs = 20\n")).await;
    let t = crate::common::job::TestJob::new();
    let body = daily_job(&t, 30, "on-daily-quota = \"wait\"\ndaily-retry-secs = 4\n");
    t.job(&body, &emu.endpoint());
    let child = t
        .command(&["submit", "job.toml", "--progress", "off"])
        .spawn()
        .unwrap();
    // While it waits, `status` says so and when the next try goes.
    let mut seen = None;
    for _ in 0..300 {
        let out = t.command(&["status", "job.toml"]).output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("waiting for the daily token quota") {
            seen = Some(text);
            break;
        }
        if text.contains(": finished") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let seen =
        seen.unwrap_or_else(|| panic!("status never showed the wait; the run said:\n{stderr}"));
    assert!(
        seen.contains(
            "paused    waiting for the daily token quota: no calls until the next try at"
        ) && seen.contains("Too many tokens per day")
            && seen.contains("eta ? (waiting for the daily quota)"),
        "{seen}"
    );
    assert!(
        stderr.contains("is used up") && stderr.contains("has room again: sending resumes"),
        "{stderr}"
    );
    // Every record once; the daily throttles were few: at each closing the 4 calls in flight at most, and a
    // probe that found no room.
    assert_each_once(&t, 30);
    let m = &emu.stats().models[HAIKU].totals;
    assert_eq!(m.succeeded, 30);
    let closings = stderr.matches("is used up").count() as u64;
    assert!(
        closings >= 1 && m.throttled_tpd <= closings * 5,
        "{} daily throttles over {closings} waits",
        m.throttled_tpd
    );
    // Once done, status no longer shows a wait.
    let after = t.command(&["status", "job.toml"]).output().await.unwrap();
    assert!(!String::from_utf8_lossy(&after.stdout).contains("waiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_says_how_many_days_the_daily_quota_makes_a_job_take() {
    let profile = |tpd: u64| {
        format!(
            "[models.\"{HAIKU}\"]\ntpm = 100000\ntpd = {tpd}\noutput-tokens = {{ min = 50, max = 50 }}\n\
             latency = {{ first-token-ms = 20 }}\n"
        )
    };
    let t = crate::common::job::TestJob::new();
    let lines: String = (0..60)
        .map(|i| format!("{{\"recordId\":\"r{i}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    let body = format!(
        "[model]\nid = \"{HAIKU}\"\nmax-tokens = 60\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"out\"\n"
    );
    let plan = async |emu: &EmulatorHandle| {
        t.write("in.jsonl", &lines).job(&body, &emu.endpoint());
        let out = t.command(&["plan", "job.toml"]).output().await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let small = emulator(&profile(1500)).await;
    let text = plan(&small).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("daily quota"))
        .unwrap_or_else(|| panic!("{text}"));
    // The days follow from the tokens the plan says the job charges.
    let charged: f64 = line
        .split("charges about ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(charged > 1500.0, "{line}");
    let days = (charged / 1500.0).ceil() as u64;
    assert!(
        line.contains(&format!("it takes at least {days} days"))
            && line.contains("Service Quotas L-"),
        "{line}"
    );
    assert!(text.contains("TPM 100,000 from Service Quotas"), "{text}");

    let ample = emulator(&profile(1_000_000)).await;
    let text = plan(&ample).await;
    let line = text.lines().find(|l| l.starts_with("daily quota")).unwrap();
    assert!(
        line.contains("1,000,000 tokens a day") && line.contains("% of it"),
        "{line}"
    );
}
