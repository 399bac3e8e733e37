//! The model table: what batchrun knows about a model that the account does not say — output-token burndown,
//! whether an RPM quota is enforced, context window, largest `max-tokens`, prices. Built in from
//! `jobs/models.toml` (whose comments cite the sources), with the user's file laid over it model by model and
//! key by key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const BUILT_IN: &str = include_str!("../jobs/models.toml");

/// Inference-profile prefixes stripped before a lookup.
const PROFILE_PREFIXES: [&str; 8] = [
    "us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.",
];

/// The most quota tokens one output token has been charged; a larger value is a typo.
pub const MAX_BURNDOWN: u32 = 20;

/// What the table says about one model; every key may be left out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelFacts {
    /// A display name.
    pub name: Option<String>,
    /// Quota tokens charged per output token.
    pub burndown: Option<u32>,
    /// Whether Bedrock enforces a requests-per-minute quota for it.
    pub rpm_quota: Option<bool>,
    /// Context window, tokens (input and output together).
    pub context: Option<u64>,
    /// The largest `max-tokens` it takes.
    pub max_output: Option<u64>,
    /// On-demand price per million input tokens.
    pub input: Option<f64>,
    /// On-demand price per million output tokens.
    pub output: Option<f64>,
    /// Batch-inference price per million input tokens.
    pub batch_input: Option<f64>,
    /// Batch-inference price per million output tokens.
    pub batch_output: Option<f64>,
    /// Flex-tier price per million input tokens.
    pub flex_input: Option<f64>,
    /// Flex-tier price per million output tokens.
    pub flex_output: Option<f64>,
    /// Priority-tier price per million input tokens.
    pub priority_input: Option<f64>,
    /// Priority-tier price per million output tokens.
    pub priority_output: Option<f64>,
    /// Price per million input tokens read from the prompt cache.
    pub cache_read_input: Option<f64>,
    /// Price per million input tokens written to the prompt cache.
    pub cache_write_input: Option<f64>,
}

impl ModelFacts {
    /// `self` with every key `over` gives replaced.
    fn overlaid(mut self, over: &ModelFacts) -> ModelFacts {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        take!(
            name,
            burndown,
            rpm_quota,
            context,
            max_output,
            input,
            output,
            batch_input,
            batch_output,
            flex_input,
            flex_output,
            priority_input,
            priority_output,
            cache_read_input,
            cache_write_input
        );
        self
    }

    fn without_prices(mut self) -> ModelFacts {
        (self.input, self.output, self.batch_input, self.batch_output) = (None, None, None, None);
        (self.flex_input, self.flex_output) = (None, None);
        (self.priority_input, self.priority_output) = (None, None);
        (self.cache_read_input, self.cache_write_input) = (None, None);
        self
    }
}

/// A model's price, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

/// The file as written: every key optional, so a user's file may say one thing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Table {
    as_of: Option<String>,
    currency: Option<String>,
    #[serde(default)]
    defaults: ModelFacts,
    #[serde(default)]
    models: BTreeMap<String, ModelFacts>,
}

/// The model table in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    /// When its prices were read.
    pub as_of: String,
    /// Their currency.
    pub currency: String,
    /// For models the table does not list.
    pub defaults: ModelFacts,
    /// By model id, without an inference-profile prefix.
    pub models: BTreeMap<String, ModelFacts>,
    /// The user's file laid over the built-in table, if any.
    pub file: Option<PathBuf>,
}

/// A model table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("model table {path}: {message}")]
pub struct CatalogueError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Catalogue {
    /// The built-in table.
    pub fn built_in() -> Catalogue {
        let t: Table = toml::from_str(BUILT_IN).expect("the built-in model table parses");
        Catalogue {
            as_of: t.as_of.expect("the built-in table has as-of"),
            currency: t.currency.expect("the built-in table has a currency"),
            defaults: t.defaults,
            models: t.models,
            file: None,
        }
    }

    /// The built-in table with `path` laid over it.
    pub fn load(path: Option<&Path>) -> Result<Catalogue, CatalogueError> {
        let mut cat = Catalogue::built_in();
        let Some(p) = path else { return Ok(cat) };
        let err = |message: String| CatalogueError {
            path: p.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
        let user: Table =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        for (id, facts) in std::iter::once(("[defaults]", &user.defaults))
            .chain(user.models.iter().map(|(k, v)| (k.as_str(), v)))
        {
            check(id, facts).map_err(err)?;
        }
        // Prices in another currency replace the built-in ones rather than mix with them.
        if let Some(currency) = &user.currency
            && *currency != cat.currency
        {
            cat.models = std::mem::take(&mut cat.models)
                .into_iter()
                .map(|(k, v)| (k, v.without_prices()))
                .collect();
            cat.currency = currency.clone();
        }
        if let Some(as_of) = user.as_of {
            cat.as_of = as_of;
        }
        cat.defaults = cat.defaults.overlaid(&user.defaults);
        for (id, facts) in user.models {
            let merged = cat.models.remove(&id).unwrap_or_default().overlaid(&facts);
            cat.models.insert(id, merged);
        }
        cat.file = Some(p.to_path_buf());
        Ok(cat)
    }

    /// The table the user chose: `path`, else `BATCHRUN_MODELS`, else `BATCHRUN_PRICES` (the older name), laid
    /// over the built-in one.
    pub fn chosen(path: Option<&Path>) -> Result<Catalogue, CatalogueError> {
        let from_env = ["BATCHRUN_MODELS", "BATCHRUN_PRICES"]
            .iter()
            .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()))
            .map(PathBuf::from);
        Catalogue::load(path.or(from_env.as_deref()))
    }

    /// What the table lists for `model_id` (a model id, inference-profile id or ARN), or `None`.
    pub fn of(&self, model_id: &str) -> Option<&ModelFacts> {
        self.models.get(base_id(model_id))
    }

    /// `model_id`'s facts with the defaults filling what it leaves out, and whether it is listed.
    pub fn facts(&self, model_id: &str) -> (ModelFacts, bool) {
        match self.of(model_id) {
            Some(f) => (self.defaults.clone().overlaid(f), true),
            None => (self.defaults.clone(), false),
        }
    }

    /// The on-demand price of `model_id`.
    pub fn price(&self, model_id: &str) -> Option<Price> {
        let f = self.of(model_id)?;
        Some(Price {
            input: f.input?,
            output: f.output?,
        })
    }

    /// The price of `model_id` in service tier `tier` (`default`: the on-demand price); `None` when the table
    /// does not give it.
    pub fn tier_price(&self, model_id: &str, tier: &str) -> Option<Price> {
        let f = self.of(model_id)?;
        let (input, output) = match tier {
            "flex" => (f.flex_input, f.flex_output),
            "priority" => (f.priority_input, f.priority_output),
            _ => (f.input, f.output),
        };
        Some(Price {
            input: input?,
            output: output?,
        })
    }

    /// The prices of `model_id`'s input tokens read from the prompt cache and written to it, per million.
    pub fn cache_prices(&self, model_id: &str) -> Option<(f64, f64)> {
        let f = self.of(model_id)?;
        Some((f.cache_read_input?, f.cache_write_input?))
    }

    /// The batch-inference price of `model_id`.
    pub fn batch_price(&self, model_id: &str) -> Option<Price> {
        let f = self.of(model_id)?;
        Some(Price {
            input: f.batch_input?,
            output: f.batch_output?,
        })
    }

    /// Where the table came from, for messages.
    pub fn source(&self) -> String {
        match &self.file {
            Some(p) => format!("the built-in model table with {} over it", p.display()),
            None => "the built-in model table".to_string(),
        }
    }
}

/// `model_id` without an inference-profile prefix; an ARN by its last path segment.
pub fn base_id(model_id: &str) -> &str {
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    profile_prefix(id).map_or(id, |p| &id[p.len() + 1..])
}

/// The inference-profile prefix of `model_id` (`us`, `eu`, `global` …), if it is a profile id; an ARN by its
/// last path segment.
pub fn profile_prefix(model_id: &str) -> Option<&'static str> {
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    PROFILE_PREFIXES
        .iter()
        .find(|p| id.starts_with(**p))
        .map(|p| p.trim_end_matches('.'))
}

/// A user's entry, checked: numbers in range.
fn check(id: &str, f: &ModelFacts) -> Result<(), String> {
    if let Some(b) = f.burndown
        && !(1..=MAX_BURNDOWN).contains(&b)
    {
        return Err(format!(
            "{id}: burndown = {b}: expected 1 to {MAX_BURNDOWN} quota tokens per output token (5 for the Claude \
             models AWS lists, 1 elsewhere)"
        ));
    }
    for (key, v) in [
        ("input", f.input),
        ("output", f.output),
        ("batch-input", f.batch_input),
        ("batch-output", f.batch_output),
        ("flex-input", f.flex_input),
        ("flex-output", f.flex_output),
        ("priority-input", f.priority_input),
        ("priority-output", f.priority_output),
        ("cache-read-input", f.cache_read_input),
        ("cache-write-input", f.cache_write_input),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(format!(
                "{id}: {key} = {v}: expected a price per million tokens, 0 or more"
            ));
        }
    }
    for (key, v) in [("context", f.context), ("max-output", f.max_output)] {
        if v == Some(0) {
            return Err(format!("{id}: {key} = 0: expected a number of tokens"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn built_in_table_lookups() {
        let c = Catalogue::built_in();
        assert_eq!(c.currency, "USD");
        let haiku = c
            .price("us.anthropic.claude-3-5-haiku-20241022-v1:0")
            .unwrap();
        assert_eq!((haiku.input, haiku.output), (0.80, 4.00));
        assert_eq!(
            c.price("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"),
            Some(haiku)
        );
        let (sonnet, known) = c.facts("global.anthropic.claude-sonnet-4-5-20250929-v1:0");
        assert!(known);
        assert_eq!(sonnet.burndown, Some(5));
        assert_eq!(sonnet.rpm_quota, Some(false), "from [defaults]");
        let (unknown, known) = c.facts("m");
        assert!(!known);
        assert_eq!(unknown.burndown, Some(1));
        assert_eq!(c.price("m"), None);
        // Every listed model has a burndown and a name.
        for (id, f) in &c.models {
            assert!(f.burndown.is_some() && f.name.is_some(), "{id}");
            check(id, f).unwrap();
        }
    }

    #[test]
    fn a_user_file_is_laid_over_key_by_key() {
        let (_d, p) = write(
            "as-of = \"2026-12\"\n\
             [models.\"anthropic.claude-3-5-haiku-20241022-v1:0\"]\ninput = 0.70\n\
             [models.\"my.model\"]\nburndown = 3\ninput = 1.0\noutput = 2.0\n",
        );
        let c = Catalogue::load(Some(&p)).unwrap();
        let haiku = c.of("anthropic.claude-3-5-haiku-20241022-v1:0").unwrap();
        assert_eq!((haiku.input, haiku.output), (Some(0.70), Some(4.00)));
        assert_eq!(haiku.max_output, Some(8192));
        assert_eq!(c.facts("eu.my.model").0.burndown, Some(3));
        assert_eq!(c.as_of, "2026-12");
        assert!(c.source().contains("models.toml"));
    }

    #[test]
    fn the_older_price_table_format_still_loads() {
        let (_d, p) = write(
            "as-of = \"2025-11\"\ncurrency = \"USD\"\n[models.\"m\"]\ninput = 0.5\noutput = 1.5\n",
        );
        let c = Catalogue::load(Some(&p)).unwrap();
        assert_eq!(
            c.price("m"),
            Some(Price {
                input: 0.5,
                output: 1.5
            })
        );
    }

    #[test]
    fn another_currency_replaces_every_price() {
        let (_d, p) = write("currency = \"EUR\"\n[models.\"m\"]\ninput = 0.5\noutput = 1.5\n");
        let c = Catalogue::load(Some(&p)).unwrap();
        assert_eq!(c.currency, "EUR");
        assert!(c.price("m").is_some());
        assert_eq!(c.price("anthropic.claude-3-5-haiku-20241022-v1:0"), None);
        assert_eq!(
            c.facts("anthropic.claude-sonnet-4-20250514-v1:0")
                .0
                .burndown,
            Some(5),
            "facts other than prices stay"
        );
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let (_d, p) = write("[models.\"m\"]\nburndown = 0\n");
        let e = Catalogue::load(Some(&p)).unwrap_err().to_string();
        assert!(
            e.contains("models.toml") && e.contains("m: burndown = 0"),
            "{e}"
        );
        let (_d, p) = write("[models.\"m\"]\nprice = 3\n");
        let e = Catalogue::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown field `price`"), "{e}");
        let (_d, p) = write("[models.\"m\"]\ninput = -1.0\n");
        let e = Catalogue::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("m: input = -1"), "{e}");
    }
}
