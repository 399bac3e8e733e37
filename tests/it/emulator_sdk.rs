//! Round trips through the real `aws-sdk-bedrockruntime` client: Converse, InvokeModel, CountTokens, model ids,
//! latency, and the stats endpoint.

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ConverseTokensRequest, CountTokensInput, InvokeModelTokensRequest, StopReason,
    SystemContentBlock,
};
use batchrun::emulator::OutputLength;
use batchrun::emulator::text;
use serde_json::Value;

use crate::common::{client, emulator, header, http, max_tokens, reply_text, user};

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

#[tokio::test]
async fn converse_round_trip_returns_the_deterministic_reply() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 10, max = 30 }\n").await;
    let out = client(&emu)
        .converse()
        .model_id(HAIKU)
        .system(SystemContentBlock::Text("Be brief.".into()))
        .messages(user("Summarize the water cycle."))
        .inference_config(max_tokens(512))
        .send()
        .await
        .unwrap();

    let expected = text::reply(
        "Be brief.\nSummarize the water cycle.\n",
        OutputLength { min: 10, max: 30 },
        512,
    );
    assert_eq!(reply_text(&out), expected.text);
    assert_eq!(out.stop_reason(), &StopReason::EndTurn);
    let usage = out.usage().unwrap();
    // "Be brief." = 3, "Summarize the water cycle." = 6 (summarize is two pieces), one message = 3.
    assert_eq!(usage.input_tokens(), 12);
    assert_eq!(usage.output_tokens() as u64, expected.output_tokens);
    assert_eq!(
        usage.total_tokens(),
        usage.input_tokens() + usage.output_tokens()
    );
    assert!(out.metrics().is_some());

    let stats = emu.stats();
    let m = &stats.models[HAIKU];
    assert_eq!((m.totals.requests, m.totals.succeeded), (1, 1));
    assert_eq!(m.totals.charged_tokens, 12 + expected.output_tokens);
}

#[tokio::test]
async fn converse_is_cut_at_max_tokens() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 50, max = 50 }\n").await;
    let out = client(&emu)
        .converse()
        .model_id(HAIKU)
        .messages(user("Write a long essay."))
        .inference_config(max_tokens(8))
        .send()
        .await
        .unwrap();
    assert_eq!(out.stop_reason(), &StopReason::MaxTokens);
    assert_eq!(out.usage().unwrap().output_tokens(), 8);
}

#[tokio::test]
async fn invoke_model_anthropic_body() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 5, max = 5 }\n").await;
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,
        "messages":[{"role":"user","content":[{"type":"text","text":"Name a color."}]}]}"#;
    let out = client(&emu)
        .invoke_model()
        .model_id(HAIKU)
        .content_type("application/json")
        .body(Blob::new(body))
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), "application/json");
    let reply: Value = serde_json::from_slice(out.body().as_ref()).unwrap();
    let expected = text::reply("Name a color.\n", OutputLength { min: 5, max: 5 }, 100);
    assert_eq!(reply["content"][0]["text"], expected.text.as_str());
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["usage"]["output_tokens"], 5);
    assert_eq!(reply["model"], HAIKU);
}

#[tokio::test]
async fn invoke_model_sends_the_token_count_headers() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 7, max = 7 }\n").await;
    let body = r#"{"prompt":"Hello there","max_gen_len":50}"#;
    let (status, headers, reply) = http(
        emu.addr(),
        "POST",
        "/model/meta.llama3-8b-instruct-v1%3A0/invoke",
        body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        header(&headers, "x-amzn-bedrock-input-token-count"),
        Some("2")
    );
    assert_eq!(
        header(&headers, "x-amzn-bedrock-output-token-count"),
        Some("7")
    );
    assert!(header(&headers, "x-amzn-bedrock-invocation-latency").is_some());
    assert!(header(&headers, "x-amzn-requestid").is_some());
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["generation_token_count"], 7);
    assert_eq!(reply["stop_reason"], "stop");
}

#[tokio::test]
async fn invoke_model_embeddings() {
    let emu = emulator("[models.\"*\"]\nembedding-dimensions = 384\n").await;
    let c = client(&emu);

    let titan = c
        .invoke_model()
        .model_id("amazon.titan-embed-text-v2:0")
        .body(Blob::new(
            r#"{"inputText":"a short document","dimensions":256}"#,
        ))
        .send()
        .await
        .unwrap();
    let titan: Value = serde_json::from_slice(titan.body().as_ref()).unwrap();
    let vector = titan["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 256);
    let norm: f64 = vector
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    // "a" and "short" are one token each; "document" is eight letters, two tokens.
    assert_eq!(titan["inputTextTokenCount"], 4);

    let cohere = c
        .invoke_model()
        .model_id("cohere.embed-english-v3")
        .body(Blob::new(
            r#"{"texts":["one","two","three"],"input_type":"search_document"}"#,
        ))
        .send()
        .await
        .unwrap();
    let cohere: Value = serde_json::from_slice(cohere.body().as_ref()).unwrap();
    let vectors = cohere["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].as_array().unwrap().len(), 384);
    assert_ne!(vectors[0], vectors[1]);

    // Embeddings generate nothing: no output tokens are charged.
    let stats = emu.stats();
    assert_eq!(
        stats.models["amazon.titan-embed-text-v2:0"]
            .totals
            .output_tokens,
        0
    );
}

#[tokio::test]
async fn count_tokens_agrees_with_converse_usage() {
    let emu = emulator("[models.\"*\"]\n").await;
    let c = client(&emu);
    let prompt = "How many tokens is this sentence, exactly?";
    let counted = c
        .count_tokens()
        .model_id(HAIKU)
        .input(CountTokensInput::Converse(
            ConverseTokensRequest::builder()
                .messages(user(prompt))
                .build(),
        ))
        .send()
        .await
        .unwrap();
    let used = c
        .converse()
        .model_id(HAIKU)
        .messages(user(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.input_tokens(), used.usage().unwrap().input_tokens());

    let native = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":"How many tokens is this sentence, exactly?"}]}"#;
    let counted_native = c
        .count_tokens()
        .model_id(HAIKU)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(Blob::new(native))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(counted_native.input_tokens(), counted.input_tokens());

    // CountTokens is free: it is counted apart and charges nothing.
    let stats = emu.stats();
    assert_eq!(stats.count_tokens_requests, 2);
    assert_eq!(stats.models[HAIKU].totals.requests, 1);
}

#[tokio::test]
async fn model_ids_with_colons_and_slashes_round_trip() {
    let emu = emulator("[models.\"*\"]\n").await;
    let c = client(&emu);
    let ids = [
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    ];
    for id in ids {
        c.converse()
            .model_id(id)
            .messages(user("hi"))
            .send()
            .await
            .unwrap();
    }
    let stats = emu.stats();
    for id in ids {
        assert_eq!(
            stats.models[id].totals.succeeded, 1,
            "{id} not seen as sent"
        );
    }
}

#[tokio::test]
async fn profiles_are_per_model_id() {
    let emu = emulator(
        r#"
        [models."anthropic.claude-3-haiku-20240307-v1:0"]
        output-tokens = { min = 3, max = 3 }
        [models."us.meta.llama3-1-8b-instruct-v1:0"]
        output-tokens = { min = 9, max = 9 }
        "#,
    )
    .await;
    let c = client(&emu);
    let haiku = c
        .converse()
        .model_id(HAIKU)
        .messages(user("x"))
        .send()
        .await
        .unwrap();
    let llama = c
        .converse()
        .model_id("us.meta.llama3-1-8b-instruct-v1:0")
        .messages(user("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(haiku.usage().unwrap().output_tokens(), 3);
    assert_eq!(llama.usage().unwrap().output_tokens(), 9);
}

#[tokio::test]
async fn latency_model_delays_replies() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 10, max = 10 }\nlatency = { first-token-ms = 150, per-token-ms = 10 }\n",
    )
    .await;
    let started = Instant::now();
    let out = client(&emu)
        .converse()
        .model_id(HAIKU)
        .messages(user("slow"))
        .send()
        .await
        .unwrap();
    // 150 ms + 10 × 10 ms; only the lower bound is certain on a busy machine.
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(out.metrics().unwrap().latency_ms() >= 250);
}

#[tokio::test]
async fn stats_endpoint_serves_totals_and_series() {
    let emu = emulator("[models.\"*\"]\ntpm = 1000\n").await;
    let c = client(&emu);
    for _ in 0..3 {
        c.converse()
            .model_id(HAIKU)
            .messages(user("count me"))
            .inference_config(max_tokens(50))
            .send()
            .await
            .unwrap();
    }
    // Reserves 5 + 2000 > 1000: throttled.
    let _ = c
        .converse()
        .model_id(HAIKU)
        .messages(user("too big"))
        .inference_config(max_tokens(2000))
        .send()
        .await;

    let (status, _, body) = http(emu.addr(), "GET", "/_emulator/stats", "").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    let m = &stats["models"][HAIKU];
    for field in [
        "requests",
        "succeeded",
        "throttled_rpm",
        "throttled_tpm",
        "faults",
        "input_tokens",
        "output_tokens",
        "charged_tokens",
        "in_flight",
    ] {
        assert!(m.get(field).is_some(), "missing {field} in {m}");
    }
    assert_eq!(m["requests"], 4);
    assert_eq!(m["succeeded"], 3);
    assert_eq!(m["throttled_tpm"], 1);
    assert_eq!(m["in_flight"], 0);
    let series = m["series"].as_array().unwrap();
    let requests: u64 = series.iter().map(|s| s["requests"].as_u64().unwrap()).sum();
    assert_eq!(requests, 4);
    assert!(series[0].get("second").is_some());
}

#[tokio::test]
async fn replies_do_not_depend_on_the_request_order_or_instance() {
    // Two emulators with different seeds, prompts sent in opposite orders: every prompt gets the reply that
    // `text::reply` computes from the prompt alone.
    let a = emulator("[models.\"*\"]\n").await;
    let b = emulator("seed = 99\n[models.\"*\"]\n").await;
    let prompts: Vec<String> = (0..5).map(|i| format!("prompt number {i}")).collect();
    for (emu, reversed) in [(&a, false), (&b, true)] {
        let mut order: Vec<&String> = prompts.iter().collect();
        if reversed {
            order.reverse();
        }
        for p in order {
            let out = client(emu)
                .converse()
                .model_id(HAIKU)
                .messages(user(p))
                .send()
                .await
                .unwrap();
            let expected = text::reply(&format!("{p}\n"), OutputLength { min: 20, max: 200 }, 4096);
            assert_eq!(reply_text(&out), expected.text, "{p}");
        }
    }
}
