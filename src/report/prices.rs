//! The price table for cost estimates: `jobs/prices.toml`, built in, or the user's own file in the same format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

const BUILT_IN: &str = include_str!("../../jobs/prices.toml");

/// A model's on-demand price, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

/// A price table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Prices {
    /// When the prices were read.
    pub as_of: String,
    /// Their currency.
    pub currency: String,
    /// By model id (no cross-region prefix).
    pub models: BTreeMap<String, Price>,
}

/// A price table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("price table {path}: {message}")]
pub struct PricesError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Prices {
    /// The table from `path`, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Prices, PricesError> {
        match path {
            None => Ok(toml::from_str(BUILT_IN).expect("the built-in price table parses")),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| PricesError {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| PricesError {
                    path: p.display().to_string(),
                    message: e.to_string().trim_end().to_string(),
                })
            }
        }
    }

    /// The table the user chose: `path`, else the file in `BATCHRUN_PRICES`, else the built-in one.
    pub fn chosen(path: Option<&Path>) -> Result<Prices, PricesError> {
        let from_env = std::env::var_os("BATCHRUN_PRICES").map(std::path::PathBuf::from);
        Prices::load(path.or(from_env.as_deref()))
    }

    /// The price of `model_id`, looked up without a cross-region prefix; ARNs by their last path segment.
    pub fn of(&self, model_id: &str) -> Option<Price> {
        let id = model_id.rsplit('/').next().unwrap_or(model_id);
        let base = [
            "us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.",
        ]
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id);
        self.models.get(base).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_and_lookup() {
        let p = Prices::load(None).unwrap();
        assert_eq!(p.currency, "USD");
        let haiku = p.of("us.anthropic.claude-3-5-haiku-20241022-v1:0").unwrap();
        assert_eq!((haiku.input, haiku.output), (0.80, 4.00));
        assert_eq!(
            p.of("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"),
            Some(haiku)
        );
        assert_eq!(p.of("m"), None);
    }
}
