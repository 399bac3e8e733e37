//! First contact: start the emulator in-process with the demo profile, send Converse requests through the real
//! AWS SDK, and watch the simulated quota throttle a burst.
//!
//! Run it with `cargo run --example first_request`. No AWS account or network is needed.

use std::path::Path;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use batchrun::emulator::{self, EmulatorConfig};

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/emulator/claude-like.toml");
    let emu = emulator::start(EmulatorConfig::load(&profile)?, "127.0.0.1:0".parse()?).await?;
    println!(
        "emulator listening on {} (profile {})",
        emu.endpoint(),
        profile.display()
    );

    // The emulator's SDK config turns the SDK's own retries off: batchrun owns retries, so every throttle
    // is seen and none is hidden.
    let client = aws_sdk_bedrockruntime::Client::from_conf(emu.sdk_config().build());

    let ask = |prompt: String, max_tokens: i32| {
        let client = client.clone();
        async move {
            let message = Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(prompt))
                .build()?;
            let out = client
                .converse()
                .model_id(MODEL)
                .messages(message)
                .inference_config(
                    InferenceConfiguration::builder()
                        .max_tokens(max_tokens)
                        .build(),
                )
                .send()
                .await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        }
    };

    let out = ask("Summarize the water cycle in one line.".into(), 512).await??;
    let text = out
        .output()
        .and_then(|o| o.as_message().ok())
        .and_then(|m| m.content()[0].as_text().ok());
    let usage = out.usage().expect("usage is always present");
    println!(
        "\none request: {} input + {} output tokens, stop reason {:?}\n  reply: {}",
        usage.input_tokens(),
        usage.output_tokens(),
        out.stop_reason(),
        text.map(|t| t.chars().take(70).collect::<String>() + "…")
            .unwrap_or_default()
    );

    // A burst of 12 concurrent requests with max_tokens 4096: each reserves about 4,100 of the 20,000 TPM
    // quota while it runs, so only four fit at once and the rest are throttled, although their replies would be
    // short. This is the max_tokens trap that batchrun's budget is built to avoid.
    println!("\na burst of 12 requests with max_tokens = 4096 against a 20,000 TPM quota:");
    let burst: Vec<_> = (0..12)
        .map(|i| tokio::spawn(ask(format!("Document {i}: say something."), 4096)))
        .collect();
    for (i, call) in burst.into_iter().enumerate() {
        match call.await?? {
            Ok(out) => println!(
                "  #{i:<2} ok, {} output tokens",
                out.usage().map_or(0, |u| u.output_tokens())
            ),
            Err(e) => {
                let e = e.into_service_error();
                println!(
                    "  #{i:<2} {}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or("")
                );
            }
        }
    }

    let stats = emu.stats();
    let m = &stats.models[MODEL];
    println!(
        "\nemulator stats for {MODEL}:\n  requests {}, succeeded {}, throttled (tpm) {}, throttled (rpm) {}, charged tokens {}",
        m.totals.requests,
        m.totals.succeeded,
        m.totals.throttled_tpm,
        m.totals.throttled_rpm,
        m.totals.charged_tokens
    );
    Ok(())
}
