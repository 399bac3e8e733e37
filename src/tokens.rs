//! Token estimates for admission: how many input tokens a request will be charged before Bedrock says.
//!
//! The estimate counts with tiktoken's `cl100k_base`, built once per process (about 50 ms). Bedrock's models use
//! their own tokenizers, so the estimate is only close; the budget settles on the counts Bedrock reports.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

fn encoder() -> &'static CoreBPE {
    static ENCODER: OnceLock<CoreBPE> = OnceLock::new();
    ENCODER
        .get_or_init(|| tiktoken_rs::cl100k_base().expect("the cl100k_base tables are compiled in"))
}

/// Estimated tokens of `text`.
pub fn estimate(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoder().encode_ordinary(text).len() as u64
}

/// Estimated input tokens of a JSON request body: every string value counted, keys and structure not, plus a
/// few tokens of framing per message.
pub fn estimate_body(body: &serde_json::Value) -> u64 {
    fn walk(v: &serde_json::Value, total: &mut u64) {
        match v {
            serde_json::Value::String(s) => *total += estimate(s),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, total)),
            serde_json::Value::Object(map) => {
                if map.contains_key("role") {
                    *total += 3;
                }
                map.values().for_each(|i| walk(i, total));
            }
            _ => {}
        }
    }
    let mut total = 0;
    walk(body, &mut total);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_words() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("hello world"), 2);
        let body = serde_json::json!({"messages": [{"role": "user", "content": [{"text": "hello world"}]}],
                                      "inferenceConfig": {"maxTokens": 10}});
        assert_eq!(estimate_body(&body), 2 + 3 + 1);
    }
}
