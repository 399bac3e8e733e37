//! Every error shape the emulator sends arrives through the real SDK as the matching typed error, with its
//! message; transport faults arrive as the SDK's transport errors.

use std::time::Duration;

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;

use batchrun::emulator::EmulatorHandle;

use crate::common::{client, client_with_timeout, emulator, max_tokens, user};

const PROFILE: &str = r#"
[models.ok]
context-window = 50
max-output-tokens = 1000
[models.throttled]
tpm = 100
[models.unavailable]
faults = { service-unavailable = 1.0 }
[models.internal]
faults = { internal = 1.0 }
[models.timeout]
faults = { model-timeout = 1.0 }
[models.model-error]
faults = { model-error = 1.0 }
[models.not-ready]
faults = { model-not-ready = 1.0 }
[models.denied]
access-denied = true
[models.reset]
faults = { connection-reset = 1.0 }
[models.hang]
faults = { hang = 1.0, hang-ms = 3000 }
[models.malformed]
faults = { malformed = 1.0 }
"#;

async fn converse_error(
    emu: &EmulatorHandle,
    model: &str,
    prompt: &str,
    max: i32,
) -> SdkError<ConverseError> {
    client(emu)
        .converse()
        .model_id(model)
        .messages(user(prompt))
        .inference_config(max_tokens(max))
        .send()
        .await
        .expect_err("the call should fail")
}

#[tokio::test]
async fn every_error_shape_arrives_typed_with_its_message() {
    let emu = emulator(PROFILE).await;
    let long_prompt = "word ".repeat(100);
    type Check = fn(&ConverseError) -> bool;
    let cases: [(&str, &str, i32, u16, Check, &str); 9] = [
        (
            "throttled",
            "hi",
            500,
            429,
            ConverseError::is_throttling_exception,
            "Too many tokens",
        ),
        (
            "not-ready",
            "hi",
            10,
            429,
            ConverseError::is_model_not_ready_exception,
            "not ready",
        ),
        (
            "unavailable",
            "hi",
            10,
            503,
            ConverseError::is_service_unavailable_exception,
            "Too many connections",
        ),
        (
            "internal",
            "hi",
            10,
            500,
            ConverseError::is_internal_server_exception,
            "internal error",
        ),
        (
            "timeout",
            "hi",
            10,
            408,
            ConverseError::is_model_timeout_exception,
            "timed out",
        ),
        (
            "model-error",
            "hi",
            10,
            424,
            ConverseError::is_model_error_exception,
            "failed to process",
        ),
        (
            "denied",
            "hi",
            10,
            403,
            ConverseError::is_access_denied_exception,
            "don't have access",
        ),
        (
            "no-such-model",
            "hi",
            10,
            404,
            ConverseError::is_resource_not_found_exception,
            "model identifier is invalid",
        ),
        (
            "ok",
            "hi",
            5000,
            400,
            ConverseError::is_validation_exception,
            "exceeds the model limit of 1000",
        ),
    ];
    for (model, prompt, max, status, is_expected, message) in cases {
        let err = converse_error(&emu, model, prompt, max).await;
        assert_eq!(
            err.raw_response().map(|r| r.status().as_u16()),
            Some(status),
            "{model}"
        );
        let err = err.into_service_error();
        assert!(is_expected(&err), "{model}: got {err:?}");
        let text = err.message().unwrap_or_default();
        assert!(
            text.contains(message),
            "{model}: message {text:?} lacks {message:?}"
        );
    }

    // Input over the context window is a validation error too.
    let err = converse_error(&emu, "ok", &long_prompt, 10)
        .await
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert!(
        err.message().unwrap().contains("Input is too long"),
        "{err:?}"
    );
}

#[tokio::test]
async fn invoke_model_errors_are_typed_too() {
    let emu = emulator(PROFILE).await;
    let c = client(&emu);
    let malformed = c
        .invoke_model()
        .model_id("ok")
        .body(Blob::new("{not json"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(malformed, InvokeModelError::ValidationException(_)),
        "{malformed:?}"
    );
    assert!(
        malformed
            .message()
            .unwrap()
            .contains("Malformed input request")
    );

    let throttled = c
        .invoke_model()
        .model_id("throttled")
        .body(Blob::new(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":500,"messages":[{"role":"user","content":"x"}]}"#))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(throttled.is_throttling_exception(), "{throttled:?}");
    assert_eq!(throttled.code(), Some("ThrottlingException"));
}

#[tokio::test]
async fn connection_reset_is_a_transport_failure() {
    let emu = emulator(PROFILE).await;
    let err = converse_error(&emu, "reset", "hi", 10).await;
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert_eq!(
        emu.stats().models["reset"].faults_by_kind["connection-reset"],
        1
    );
}

#[tokio::test]
async fn a_hanging_reply_outlasts_the_client_timeout() {
    let emu = emulator(PROFILE).await;
    let err = client_with_timeout(&emu, Duration::from_millis(300))
        .converse()
        .model_id("hang")
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
}

#[tokio::test]
async fn a_malformed_body_fails_to_parse() {
    let emu = emulator(PROFILE).await;
    let err = converse_error(&emu, "malformed", "hi", 10).await;
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(200), "{err:?}");
    assert!(
        matches!(&err, SdkError::ResponseError(_))
            || matches!(&err, SdkError::ServiceError(s) if s.err().meta().code().is_none()),
        "{err:?}"
    );
    // The model did run: the call is charged, but not counted as a success.
    let m = &emu.stats().models["malformed"];
    assert_eq!(m.totals.succeeded, 0);
    assert!(m.totals.charged_tokens > 0);
}

#[tokio::test]
async fn faults_are_seeded_and_reproducible() {
    let profile =
        |seed: u64| format!("seed = {seed}\n[models.\"*\"]\nfaults = {{ internal = 0.5 }}\n");
    let mut patterns = Vec::new();
    for seed in [7, 7, 8] {
        let emu = emulator(&profile(seed)).await;
        let c = client(&emu);
        let mut pattern = Vec::new();
        for i in 0..48 {
            let ok = c
                .converse()
                .model_id("m")
                .messages(user(&format!("p{i}")))
                .send()
                .await
                .is_ok();
            pattern.push(ok);
        }
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1], "same seed, same faults");
    assert_ne!(patterns[0], patterns[2], "another seed, other faults");
    let failures = patterns[0].iter().filter(|ok| !**ok).count();
    assert!(
        (12..=36).contains(&failures),
        "{failures} of 48 at rate 0.5"
    );
}
