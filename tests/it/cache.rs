//! Prompt caching: a job marks the prefix its records share, the emulator caches it per model as Bedrock does,
//! and the quota is charged only for what was not read from the cache.

use batchrun::emulator::{Counters, EmulatorHandle};

use crate::common::emulator;
use crate::common::job::TestJob;

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

async fn caching_emulator() -> EmulatorHandle {
    emulator(&format!(
        "[models.\"{HAIKU}\"]\nprompt-caching = true\ncache-min-tokens = 1024\n\
         output-tokens = {{ min = 5, max = 5 }}\nlatency = {{ first-token-ms = 20 }}\n"
    ))
    .await
}

/// A job asking `n` questions about one long document; `{{ cache_point }}` after the document when `cached`.
fn questions(emu: &EmulatorHandle, n: usize, cached: bool) -> TestJob {
    let t = TestJob::new();
    let document =
        "The quarterly report covers revenue, churn, hiring and the plans for the next year. "
            .repeat(120);
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\":\"q{i:02}\",\"q\":\"What does section {i} say?\"}}\n"))
        .collect();
    let mark = if cached { "{{ cache_point }}" } else { "" };
    t.write("in.jsonl", lines).write("doc.txt", &document).job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 50\nsystem = \"Answer from the document.\"\n[input]\n\
             path = \"in.jsonl\"\nformat = \"jsonl\"\ntemplate = '''{document}{mark}\nQuestion: {{{{ q }}}}'''\n\
             [budget]\nmax-concurrency = 1\n[output]\npath = \"out\"\n"
        ),
        &emu.endpoint(),
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prefix_is_charged_once_and_the_report_says_what_the_cache_took_off() {
    let (plain_emu, cached_emu) = (caching_emulator().await, caching_emulator().await);
    let plain = questions(&plain_emu, 10, false);
    let cached = questions(&cached_emu, 10, true);
    for t in [&plain, &cached] {
        let run = t.submit(&[]).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(t.output_lines("out").len(), 10);
    }
    let totals = |emu: &EmulatorHandle| emu.stats().models[HAIKU].totals.clone();
    let (p, c) = (totals(&plain_emu), totals(&cached_emu));
    assert_eq!((p.cache_read_tokens, p.cache_write_tokens), (0, 0));
    // One call wrote the prefix (one at a time, so exactly the first), nine read it.
    let prefix = c.cache_write_tokens;
    assert!(prefix > 1024, "{c:?}");
    assert_eq!(c.cache_read_tokens, 9 * prefix, "{c:?}");
    // Every input token was sent both times; the quota was charged for the cached prefix once.
    assert_eq!(
        p.input_tokens,
        c.input_tokens + c.cache_read_tokens + c.cache_write_tokens
    );
    let charged_input = |t: &Counters| t.charged_tokens - t.output_tokens;
    assert_eq!(charged_input(&c), c.input_tokens + c.cache_write_tokens);
    assert!(
        charged_input(&c) * 4 < charged_input(&p),
        "{c:?} against {p:?}"
    );
    // The report counts as the emulator did.
    let out = cached
        .command(&["report", "job.toml"])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("cache "))
        .unwrap_or_else(|| panic!("{report}"));
    let n = batchrun::report::format::int;
    assert!(
        line.contains(&format!(
            "{} input tokens read from the prompt cache, {} written",
            n(c.cache_read_tokens),
            n(prefix)
        )) && line.contains(&format!(
            "charged {} of the {} input tokens sent",
            n(charged_input(&c)),
            n(p.input_tokens)
        )),
        "{line}\n{c:?}"
    );
    // Each line's reply carries Bedrock's usage with the cache's counts.
    let lines = cached.output_by_id("out");
    assert_eq!(
        lines["q00"]["modelOutput"]["usage"]["cacheWriteInputTokens"],
        prefix
    );
    assert_eq!(
        lines["q09"]["modelOutput"]["usage"]["cacheReadInputTokens"],
        prefix
    );
}
