//! The emulator's "model": how it counts tokens and what it replies.
//!
//! Counting: text is split into pieces; a run of letters and digits counts one token per started six
//! characters, and every other visible character (punctuation, symbols) counts one token. Whitespace is free.
//! English prose comes out near 1.3 tokens per word, close to real tokenizers but deliberately not equal to the
//! runner's tiktoken estimate, so that the runner has something to calibrate against.
//!
//! Replies are deterministic: the prompt's 64-bit FNV-1a hash seeds both the reply's length (uniform in the
//! profile's `output-tokens` range, capped by `maxTokens`) and its words. Each word is one output token. A test
//! that knows the prompt can compute the exact reply with [`reply`] and check that the right result reached the
//! right record.

use super::config::OutputLength;

/// Tokens in `text`, by the emulator's counting rule.
pub fn count_tokens(text: &str) -> u64 {
    let mut tokens = 0u64;
    let mut run = 0u64;
    for c in text.chars() {
        if c.is_alphanumeric() {
            run += 1;
        } else {
            tokens += run.div_ceil(6);
            run = 0;
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
    }
    tokens + run.div_ceil(6)
}

/// 64-bit FNV-1a: a stable hash (unlike std's `DefaultHasher`) so replies do not change between builds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Scrambles a 64-bit value (the SplitMix64 finalizer); used to derive independent draws from one seed.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `0..1` from a scrambled value.
pub fn unit(z: u64) -> f64 {
    (mix64(z) >> 11) as f64 / (1u64 << 53) as f64
}

// Every word is six characters or fewer, so each counts as exactly one token when the reply is counted again.
const WORDS: [&str; 32] = [
    "alpha", "bravo", "cedar", "delta", "ember", "fable", "grove", "harbor", "iris", "jade",
    "kelp", "lumen", "maple", "nectar", "onyx", "pearl", "quartz", "raven", "sage", "tundra",
    "umber", "violet", "willow", "xenon", "yarrow", "zephyr", "amber", "basil", "coral", "dune",
    "fern", "glade",
];

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The reply reached its natural length.
    EndTurn,
    /// `maxTokens` cut the reply short.
    MaxTokens,
}

/// A generated reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply text: `output_tokens` words separated by spaces.
    pub text: String,
    /// Tokens generated.
    pub output_tokens: u64,
    /// Why generation stopped.
    pub stop: Stop,
}

/// The reply to `prompt`: its natural length drawn from `length`, capped at `max_tokens`.
pub fn reply(prompt: &str, length: OutputLength, max_tokens: u64) -> Reply {
    let seed = fnv1a(prompt.as_bytes());
    let span = length.max - length.min + 1;
    let natural = length.min + mix64(seed) % span;
    let (output_tokens, stop) = if natural > max_tokens {
        (max_tokens, Stop::MaxTokens)
    } else {
        (natural, Stop::EndTurn)
    };
    let mut text = String::with_capacity(output_tokens as usize * 7);
    for i in 0..output_tokens {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[(mix64(seed ^ (i + 1)) % WORDS.len() as u64) as usize]);
    }
    Reply {
        text,
        output_tokens,
        stop,
    }
}

/// A unit-length embedding of `text` with `dimensions` components, derived from its hash.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let seed = fnv1a(text.as_bytes());
    let raw: Vec<f64> = (0..dimensions as u64)
        .map(|i| unit(seed ^ i.wrapping_mul(0x9e37_79b9)) * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_rule() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello"), 1);
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens("Hello, world!"), 4);
        // Twelve letters are two tokens, thirteen are three.
        assert_eq!(count_tokens("abcdefghijkl"), 2);
        assert_eq!(count_tokens("abcdefghijklm"), 3);
        assert_eq!(count_tokens("  \n\t "), 0);
    }

    #[test]
    fn replies_are_deterministic_and_sized_by_the_range() {
        let len = OutputLength { min: 5, max: 40 };
        let a = reply("Summarize this.", len, 1000);
        assert_eq!(a, reply("Summarize this.", len, 1000));
        assert!((5..=40).contains(&a.output_tokens));
        assert_eq!(a.stop, Stop::EndTurn);
        assert_eq!(a.text.split(' ').count() as u64, a.output_tokens);
        assert_eq!(count_tokens(&a.text), a.output_tokens);
        assert_ne!(a.text, reply("Summarize that.", len, 1000).text);
    }

    #[test]
    fn max_tokens_caps_the_reply() {
        let len = OutputLength { min: 50, max: 50 };
        let r = reply("p", len, 7);
        assert_eq!(r.output_tokens, 7);
        assert_eq!(r.stop, Stop::MaxTokens);
        // The capped reply is a prefix of the full one.
        assert!(reply("p", len, 1000).text.starts_with(&r.text));
    }

    #[test]
    fn lengths_cover_the_range() {
        let len = OutputLength { min: 1, max: 4 };
        let mut seen = [false; 5];
        for i in 0..200 {
            seen[reply(&format!("prompt {i}"), len, 100).output_tokens as usize] = true;
        }
        assert_eq!(seen, [false, true, true, true, true]);
    }

    #[test]
    fn embeddings_are_unit_length_and_stable() {
        let e = embedding("doc", 256);
        assert_eq!(e.len(), 256);
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(e, embedding("doc", 256));
        assert_ne!(e, embedding("other doc", 256));
    }
}
