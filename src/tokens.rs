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

/// Builds the encoder on a thread of its own, so that a run's first record does not wait for it (it takes
/// about 50 ms, more on a busy machine): the run opens its state and connects meanwhile.
pub fn prepare() {
    std::thread::spawn(encoder);
}

// Text is counted in pieces of about this many bytes, cut at whitespace where there is some: BPE's time and
// memory grow faster than the length of one run of text (a 30 MB line took 1.6 GB), and a cut costs at most a
// token of accuracy per piece.
const PIECE: usize = 16 * 1024;

/// Estimated tokens of `text`.
pub fn estimate(text: &str) -> u64 {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let cut = piece_end(rest);
        total += count(&rest[..cut]);
        rest = &rest[cut..];
    }
    total
}

/// The byte offset where each token of `text` starts, in order, counted in the same pieces as [`estimate`].
pub fn starts(text: &str) -> Vec<usize> {
    let mut out = Vec::with_capacity(text.len() / 4);
    let mut piece_at = 0;
    while piece_at < text.len() {
        let cut = piece_end(&text[piece_at..]);
        let mut at = piece_at;
        for token in encoder().encode_ordinary(&text[piece_at..piece_at + cut]) {
            out.push(at);
            // Byte-level tokens: their bytes add up to the piece (one may end inside a character).
            at += token_len(token);
        }
        piece_at += cut;
    }
    out
}

/// The length in bytes of token `rank`, from a table of every token's length built once (a lookup, where
/// decoding each token would allocate).
fn token_len(rank: tiktoken_rs::Rank) -> usize {
    static LENGTHS: OnceLock<Vec<u16>> = OnceLock::new();
    let lengths = LENGTHS.get_or_init(|| {
        (0..)
            .map_while(|r| encoder().decode_bytes(&[r]).ok())
            .map(|bytes| bytes.len() as u16)
            .collect()
    });
    match lengths.get(rank as usize) {
        Some(&n) => usize::from(n),
        None => encoder().decode_bytes(&[rank]).map_or(1, |b| b.len()),
    }
}

/// Where the first piece of `rest` ends: all of it when short, else near [`PIECE`] bytes, at whitespace if
/// there is some in the second half.
fn piece_end(rest: &str) -> usize {
    if rest.len() <= PIECE {
        return rest.len();
    }
    let mut cut = rest.floor_char_boundary(PIECE);
    if let Some(space) = rest[..cut].rfind(char::is_whitespace)
        && space > PIECE / 2
    {
        cut = space;
    }
    cut
}

fn count(text: &str) -> u64 {
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

    #[test]
    fn long_text_is_counted_in_pieces_within_a_token_per_piece() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(5_000);
        let whole = encoder().encode_ordinary(&text).len() as u64;
        let pieces = text.len().div_ceil(PIECE) as u64;
        let got = estimate(&text);
        assert!(got.abs_diff(whole) <= pieces, "{got} against {whole}");
        // One run with no whitespace and multi-byte characters: cut on character boundaries.
        let run = "é".repeat(40_000);
        assert!(estimate(&run) > 0);
    }
}
