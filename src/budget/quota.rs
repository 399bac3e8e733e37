//! Bedrock's quota arithmetic, written once: what a request holds from the TPM quota while it runs, and what it
//! is charged when it ends (research/bedrock.md). The budget, `plan` and `report` all count with these.

use std::ops::{Add, Mul};

/// Tokens a request reserves while it runs: its input plus its output cap (`max_tokens`), whatever it ends up
/// writing.
pub fn reserved<T: Add<Output = T>>(input: T, max_tokens: T) -> T {
    input + max_tokens
}

/// Tokens a request is charged when it ends: its input plus its output times the model's burndown.
pub fn charged<T: Add<Output = T> + Mul<Output = T>>(input: T, output: T, burndown: T) -> T {
    input + output * burndown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_then_charge() {
        assert_eq!(reserved(48u64, 200), 248);
        assert_eq!(charged(48u64, 75, 1), 123);
        assert_eq!(charged(48.0, 75.0, 5.0), 423.0);
    }
}
