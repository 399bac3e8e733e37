//! The quota model seen through the SDK: tokens and requests throttles, the max_tokens trap, settlement giving
//! room back, and the concurrency cap.

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;

use crate::common::{client, emulator, max_tokens, user};

#[tokio::test]
async fn a_burst_past_tpm_is_throttled_with_the_tokens_message() {
    // Replies take 400 ms, so reservations of 10 concurrent calls are all held at once: 4 × 204 fit in 1000.
    let emu = emulator("[models.\"*\"]\ntpm = 1000\nlatency = { first-token-ms = 400 }\n").await;
    let c = client(&emu);
    let calls = (0..10).map(|_| {
        let c = c.clone();
        tokio::spawn(async move {
            c.converse()
                .model_id("m")
                .messages(user("hi"))
                .inference_config(max_tokens(200))
                .send()
                .await
        })
    });
    let mut ok = 0;
    let mut throttled = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_throttling_exception(), "{e:?}");
                assert_eq!(
                    e.message(),
                    Some("Too many tokens, please wait before trying again.")
                );
                throttled += 1;
            }
        }
    }
    // "hi" is 1 token + 3 for the message: each call reserves 204.
    assert_eq!((ok, throttled), (4, 6));
    assert_eq!(emu.stats().models["m"].totals.throttled_tpm, 6);
}

#[tokio::test]
async fn a_burst_past_rpm_is_throttled_with_the_requests_message() {
    let emu = emulator("[models.\"*\"]\nrpm = 5\n").await;
    let c = client(&emu);
    for _ in 0..5 {
        c.converse()
            .model_id("m")
            .messages(user("hi"))
            .send()
            .await
            .unwrap();
    }
    let e = c
        .converse()
        .model_id("m")
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_throttling_exception(), "{e:?}");
    assert_eq!(
        e.message(),
        Some("Too many requests, please wait before trying again.")
    );
    let m = &emu.stats().models["m"];
    assert_eq!((m.totals.throttled_rpm, m.totals.throttled_tpm), (1, 0));
}

#[tokio::test]
async fn max_tokens_alone_above_tpm_is_always_throttled() {
    let emu = emulator("[models.\"*\"]\ntpm = 1000\n").await;
    let c = client(&emu);
    // The bucket is full, yet 4 + 1000 can never fit in 1000; a smaller request still goes through.
    for _ in 0..3 {
        let e = c
            .converse()
            .model_id("m")
            .messages(user("hi"))
            .inference_config(max_tokens(1000))
            .send()
            .await;
        assert!(
            e.unwrap_err()
                .into_service_error()
                .is_throttling_exception()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.converse()
        .model_id("m")
        .messages(user("hi"))
        .inference_config(max_tokens(996))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn settled_reservations_free_room_and_the_rate_matches_the_quota() {
    // 12,000 TPM refills 200 tokens a second. Each call reserves 4 + 20 = 24 and settles to 4 + 5 = 9.
    let emu = emulator("[models.\"*\"]\ntpm = 12000\noutput-tokens = { min = 5, max = 5 }\n").await;
    let c = client(&emu);
    let call = |c: aws_sdk_bedrockruntime::Client| async move {
        c.converse()
            .model_id("m")
            .messages(user("hi"))
            .inference_config(max_tokens(20))
            .send()
            .await
    };
    // Drain the full bucket first. Without settlement 12,000 / 24 = 500 calls would empty it; with it each call
    // keeps only 9, so about 1,330 calls go through, plus what refills while they run.
    let drain_started = Instant::now();
    let mut drained = 0u64;
    while call(c.clone()).await.is_ok() {
        drained += 1;
        assert!(drained < 20_000, "the bucket never ran dry");
    }
    let drain_refill = 200.0 * drain_started.elapsed().as_secs_f64();
    let kept = (drained * 9) as f64;
    assert!(
        kept >= 12_000.0 - 24.0,
        "{drained} calls before the first throttle"
    );
    assert!(
        kept <= 12_000.0 + drain_refill + 9.0,
        "{drained} calls before the first throttle"
    );

    // Then hammer for two seconds from four tasks: what is charged must match the refill rate.
    let before = emu.stats().models["m"].totals.charged_tokens;
    let started = Instant::now();
    let window = Duration::from_secs(2);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                while started.elapsed() < window {
                    let _ = call(c.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let charged = (emu.stats().models["m"].totals.charged_tokens - before) as f64;
    let refill = 200.0 * elapsed;
    // At most what refilled plus the less-than-one-reservation left at the start; at least the refill less what
    // may stay in the bucket at the end (under one reservation) and a 10 % allowance for gaps between calls.
    assert!(
        charged <= refill + 24.0,
        "charged {charged} in {elapsed:.2}s, refill {refill}"
    );
    assert!(
        charged >= refill * 0.9 - 24.0,
        "charged {charged} in {elapsed:.2}s, refill {refill}"
    );
}

#[tokio::test]
async fn the_concurrency_cap_answers_503() {
    let emu =
        emulator("[models.\"*\"]\nmax-concurrency = 2\nlatency = { first-token-ms = 300 }\n").await;
    let c = client(&emu);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(
                async move { c.converse().model_id("m").messages(user("hi")).send().await },
            )
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.into_service_error().is_service_unavailable_exception()),
        }
    }
    assert_eq!(ok, 2);
    let m = &emu.stats().models["m"];
    assert_eq!((m.totals.busy, m.max_in_flight), (3, 2));
}
