//! Service tiers: the emulator serves them as Bedrock does (Converse's `serviceTier`, InvokeModel's header, one
//! quota for all tiers, ValidationException for a tier the model lacks), and a job names one.

use std::time::Instant;

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{ServiceTier, ServiceTierType};
use batchrun::emulator::EmulatorHandle;

use crate::common::job::TestJob;
use crate::common::{client, emulator, max_tokens, user};

const FLEXIBLE: &str = "openai.gpt-oss-120b-1:0";
const PLAIN: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// One model that offers Flex and Priority (Flex replies take three times as long), one that offers neither.
async fn tiers_emulator(extra: &str) -> EmulatorHandle {
    emulator(&format!(
        "[models.\"{FLEXIBLE}\"]\nservice-tiers = [\"flex\", \"priority\"]\nflex-latency = 3.0\n\
         output-tokens = {{ min = 5, max = 5 }}\nlatency = {{ first-token-ms = 40, jitter = 0.0 }}\n{extra}\n\
         [models.\"{PLAIN}\"]\noutput-tokens = {{ min = 5, max = 5 }}\nlatency = {{ first-token-ms = 40 }}\n"
    ))
    .await
}

fn tier(t: ServiceTierType) -> ServiceTier {
    ServiceTier::builder().r#type(t).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_serves_the_tiers_a_model_offers_and_refuses_the_others() {
    let emu = tiers_emulator("").await;
    let c = client(&emu);
    let ask = |model: &'static str, t: Option<ServiceTierType>| {
        c.converse()
            .model_id(model)
            .messages(user("Hello."))
            .inference_config(max_tokens(20))
            .set_service_tier(t.map(tier))
            .send()
    };
    let started = Instant::now();
    ask(FLEXIBLE, None).await.unwrap();
    let default_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let flex = ask(FLEXIBLE, Some(ServiceTierType::Flex)).await.unwrap();
    let flex_ms = started.elapsed().as_millis();
    assert_eq!(
        flex.service_tier().map(|t| t.r#type()),
        Some(&ServiceTierType::Flex)
    );
    assert!(
        flex_ms >= 110 && flex_ms > default_ms,
        "flex {flex_ms} ms, default {default_ms} ms"
    );
    let refused = ask(PLAIN, Some(ServiceTierType::Flex)).await.unwrap_err();
    let e = refused.into_service_error();
    assert!(e.is_validation_exception(), "{e:?}");
    assert!(
        e.to_string()
            .contains("does not support the flex service tier"),
        "{e}"
    );
    // InvokeModel names its tier in a header, and the reply names the tier that served it.
    let out = c
        .invoke_model()
        .model_id(FLEXIBLE)
        .content_type("application/json")
        .body(Blob::new(
            br#"{"messages":[{"role":"user","content":"Hi."}],"max_tokens":20,"anthropic_version":"x"}"#.to_vec(),
        ))
        .service_tier(ServiceTierType::Priority)
        .send()
        .await
        .unwrap();
    assert_eq!(out.service_tier(), Some(&ServiceTierType::Priority));
    let stats = emu.stats();
    let served = &stats.models[FLEXIBLE].answered_by_tier;
    assert_eq!(
        (served.get("flex"), served.get("priority")),
        (Some(&1), Some(&1)),
        "{served:?}"
    );
}

/// A job of `n` records on `model` with `[model]` lines `tier_lines`.
fn tier_job(emu: &EmulatorHandle, model: &str, n: usize, tier_lines: &str) -> TestJob {
    let t = TestJob::new();
    let lines: String = (0..n)
        .map(|i| format!("{{\"recordId\":\"r{i:03}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    t.write("in.jsonl", lines).job(
        &format!(
            "[model]\nid = \"{model}\"\nmax-tokens = 50\noutput-burndown = 1\n{tier_lines}\n[input]\npath = \"in.jsonl\"\n\
             format = \"jsonl\"\n[output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flex_job_is_served_in_flex_and_each_line_says_so() {
    let emu = tiers_emulator("").await;
    let t = tier_job(&emu, FLEXIBLE, 12, "service-tier = \"flex\"");
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = t.output_lines("out");
    assert_eq!(lines.len(), 12);
    assert!(
        lines.iter().all(|l| l["serviceTier"] == "flex"),
        "{lines:?}"
    );
    assert_eq!(
        emu.stats().models[FLEXIBLE].answered_by_tier.get("flex"),
        Some(&12)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_the_model_lacks_falls_back_to_the_default_tier_once_with_a_warning() {
    let emu = tiers_emulator("").await;
    let t = tier_job(&emu, PLAIN, 12, "service-tier = \"priority\"");
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let warnings = run
        .stderr
        .matches("does not offer the priority service tier")
        .count();
    assert_eq!(warnings, 1, "{}", run.stderr);
    let lines = t.output_lines("out");
    assert_eq!(lines.len(), 12);
    assert!(
        lines
            .iter()
            .all(|l| l.get("modelOutput").is_some() && l.get("serviceTier").is_none())
    );
    // The calls sent before the first refusal came back were refused too; none after it.
    let m = &emu.stats().models[PLAIN];
    assert!(
        m.totals.rejected >= 1 && m.totals.rejected <= 16,
        "{:?}",
        m.totals
    );
    assert_eq!(m.totals.succeeded, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_the_model_lacks_stops_the_run_resumably_when_the_job_says_stop() {
    let emu = tiers_emulator("").await;
    let t = tier_job(
        &emu,
        PLAIN,
        12,
        "service-tier = \"flex\"\nunsupported-tier = \"stop\"",
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("does not support the flex service tier")
            && run.stderr.contains("model.unsupported-tier = \"stop\""),
        "{}",
        run.stderr
    );
    assert_eq!(t.done_in_state().await, (0, 12));
    // Without the tier, the same job resumes and finishes.
    let text = std::fs::read_to_string(t.path().join("job.toml"))
        .unwrap()
        .replace("service-tier = \"flex\"\n", "");
    t.write("job.toml", text);
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(t.output_lines("out").len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_report_price_a_flex_job_against_the_default_tier() {
    let emu = tiers_emulator("").await;
    let t = tier_job(&emu, FLEXIBLE, 10, "service-tier = \"flex\"");
    // Prices per million tokens: 1.00 / 4.00 in the default tier, half that in Flex.
    t.write(
        "models.toml",
        format!(
            "[models.\"{FLEXIBLE}\"]\ninput = 1.0\noutput = 4.0\nflex-input = 0.5\nflex-output = 2.0\n"
        ),
    )
    .env("BATCHRUN_MODELS", Some("models.toml"));
    let out = t.command(&["plan", "job.toml"]).output().await.unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{plan}");
    let line = plan
        .lines()
        .find(|l| l.starts_with("in flex"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        line.contains("saves") && line.contains("against the default tier's"),
        "{line}"
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.command(&["report", "job.toml"]).output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("tier flex"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains(" 10 records, median latency "), "{line}");
    // Half the default price: what was saved equals what was paid.
    let amounts = crate::common::dollar_amounts(line);
    assert_eq!(amounts.len(), 2, "{line}");
    assert_eq!(amounts[0], amounts[1], "{line}");
}
