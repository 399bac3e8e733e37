//! Bedrock's quota names, read. Service Quotas names each per-model quota in English, and the wording has
//! changed over the years, so a quota is recognised by what its name says rather than by one pattern:
//!
//! - `On-demand InvokeModel tokens per minute for ${model}` and `Cross-Region InvokeModel tokens per minute for
//!   ${model}` (the wording of the user guide's "Quotas for the bedrock-runtime endpoint" page, 2026);
//! - `On-demand model inference tokens per minute for Anthropic Claude 3.5 Sonnet`, `Cross-region model
//!   inference tokens per minute for Anthropic Claude Sonnet 4.5 V1 1M Context Length` (names as accounts list
//!   them);
//! - `Global cross-Region model inference tokens per minute for …`;
//! - `… requests per minute for …` (requests-per-minute quotas, no longer enforced on bedrock-runtime since
//!   2026 but still listed by older accounts);
//! - `Model invocation max tokens per day for ${model}` (by default the per-minute quota × 1,440).
//!
//! `${model}` is a display name ("Anthropic Claude 3.5 Sonnet V2"), not a model id, so [`matches`] compares
//! the words and numbers of both.

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Tokens per day.
    Tpd,
}

/// Which calls a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A model id in one Region.
    OnDemand,
    /// A geographic cross-Region inference profile (`us.`, `eu.`, `apac.`, … ids).
    CrossRegion,
    /// A global cross-Region inference profile (`global.` ids).
    Global,
}

impl Scope {
    /// The scope a model id is called in: by its inference-profile prefix.
    pub fn of(model_id: &str) -> Scope {
        match crate::catalogue::profile_prefix(model_id) {
            Some("global") => Scope::Global,
            Some(_) => Scope::CrossRegion,
            None => Scope::OnDemand,
        }
    }

    /// How a table names it.
    pub fn label(self) -> &'static str {
        match self {
            Scope::OnDemand => "on-demand",
            Scope::CrossRegion => "cross-region",
            Scope::Global => "global",
        }
    }
}

/// A quota name, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaName {
    /// What it limits.
    pub measure: Measure,
    /// Which calls it counts.
    pub scope: Scope,
    /// The model's display name, without the variant.
    pub model: String,
    /// A variant of the model's quota (`1M Context Length`), if the name has one.
    pub variant: Option<String>,
}

/// Reads a per-model inference quota's name; `None` for any other quota (batch, provisioned throughput, …).
pub fn parse(name: &str) -> Option<QuotaName> {
    let lower = name.to_ascii_lowercase();
    let measure = if lower.contains("requests per minute") {
        Measure::Rpm
    } else if lower.contains("tokens per minute") {
        Measure::Tpm
    } else if lower.contains("tokens per day") {
        Measure::Tpd
    } else {
        return None;
    };
    let inference = lower.contains("invokemodel")
        || lower.contains("model inference")
        || lower.contains("model invocation")
        || lower.starts_with("tokens per")
        || lower.starts_with("requests per");
    if !inference || lower.contains("batch") || lower.contains("provisioned") {
        return None;
    }
    let scope = if lower.starts_with("global") {
        Scope::Global
    } else if lower.contains("cross-region") || lower.contains("cross region") {
        Scope::CrossRegion
    } else {
        Scope::OnDemand
    };
    let at = lower.find(" for ")? + " for ".len();
    // "(doubled for cross-region calls)" and the like are notes, not the model.
    let mut model = name[at..].trim();
    if let Some(i) = model.find(" (") {
        model = model[..i].trim();
    }
    let (model, variant) = match model.to_ascii_lowercase().find(" context length") {
        Some(end) => {
            let start = model[..end].rfind(' ').unwrap_or(0);
            (
                model[..start].trim().to_string(),
                Some(model[start..].trim().to_string()),
            )
        }
        None => (model.to_string(), None),
    };
    Some(QuotaName {
        measure,
        scope,
        model,
        variant,
    })
}

/// Words and numbers, lower case: letters and digits split apart (`llama3` → `llama`, `3`).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut digit = false;
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if !cur.is_empty() && c.is_ascii_digit() != digit {
            out.push(std::mem::take(&mut cur));
        }
        digit = c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A model id's words and numbers without its profile prefix, release date and version (`…-20241022-v2:0`),
/// with the version (2 for `-v2:0`; 1 when there is none) and whether it is an API version (`:0` follows it),
/// which a display name must repeat, or a generation (`cohere.embed-english-v3`), which it may leave out.
fn id_tokens(model_id: &str) -> (Vec<String>, u32, bool) {
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    let id = match Scope::of(id) {
        Scope::OnDemand => id,
        _ => id.split_once('.').map_or(id, |(_, rest)| rest),
    };
    let mut parts = tokens(id);
    let (mut version, mut strict) = (1, false);
    // `v`, `2` (and `0` after the colon) at the end are the version.
    if let Some(v) = parts.iter().rposition(|t| t == "v")
        && v + 1 < parts.len()
        && parts[v + 1..]
            .iter()
            .all(|t| t.chars().all(|c| c.is_ascii_digit()))
    {
        version = parts[v + 1].parse().unwrap_or(1);
        strict = id.contains(':');
        parts.truncate(v);
    }
    // A release date (eight digits) says nothing the display name does.
    parts.retain(|t| !(t.len() == 8 && t.chars().all(|c| c.is_ascii_digit())));
    (parts, version, strict)
}

/// Whether two words name the same thing: equal, or one the start of the other (`embed`, `embeddings`).
fn same_word(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short == long
        || (short.len() >= 4
            && long.starts_with(short)
            && !short.chars().all(|c| c.is_ascii_digit()))
}

/// How well `display` (a quota name's model) names `model_id`: `None` when it does not, else a score (higher
/// is closer). Every word and number of the display name must be in the id, the id may add at most one word
/// (the provider, which a display name may leave out) and no number, and a display name's `V2` must match the
/// id's `-v2:0` (an id's API version must be matched; a generation like Cohere's `-v3` may be left out).
pub fn matches(model_id: &str, display: &str) -> Option<usize> {
    let (id, version, strict) = id_tokens(model_id);
    let mut shown = tokens(display);
    let mut shown_version = None;
    if shown.len() >= 2 && shown[shown.len() - 2] == "v" {
        shown_version = shown[shown.len() - 1].parse::<u32>().ok();
        shown.truncate(shown.len() - 2);
    }
    match shown_version {
        Some(v) if v != version => return None,
        None if strict && version != 1 => return None,
        _ => {}
    }
    let mut left = id.clone();
    for t in &shown {
        let i = left.iter().position(|x| same_word(x, t))?;
        left.remove(i);
    }
    if left.iter().any(|t| t.chars().all(|c| c.is_ascii_digit())) || left.len() > 1 {
        return None;
    }
    Some(shown.len() * 2 - left.len() + usize::from(shown_version.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_published_are_read() {
        let read = |n: &str| parse(n).unwrap();
        let q = read("On-demand InvokeModel tokens per minute for Anthropic Claude 3 Haiku");
        assert_eq!(
            (q.measure, q.scope, q.model.as_str(), q.variant),
            (
                Measure::Tpm,
                Scope::OnDemand,
                "Anthropic Claude 3 Haiku",
                None
            )
        );
        let q = read(
            "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1 1M Context Length",
        );
        assert_eq!((q.measure, q.scope), (Measure::Tpm, Scope::CrossRegion));
        assert_eq!(q.model, "Anthropic Claude Sonnet 4.5 V1");
        assert_eq!(q.variant.as_deref(), Some("1M Context Length"));
        let q = read(
            "Global cross-Region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        );
        assert_eq!(q.scope, Scope::Global);
        let q =
            read("On-demand model inference requests per minute for Meta Llama 3.1 70B Instruct");
        assert_eq!((q.measure, q.scope), (Measure::Rpm, Scope::OnDemand));
        let q = read(
            "Model invocation max tokens per day for Anthropic Claude 3.5 Sonnet V2 (doubled for cross-region calls)",
        );
        assert_eq!(
            (q.measure, q.model.as_str()),
            (Measure::Tpd, "Anthropic Claude 3.5 Sonnet V2")
        );
        let q = read("Cross-Region InvokeModel requests per minute for Amazon Nova Pro");
        assert_eq!((q.measure, q.scope), (Measure::Rpm, Scope::CrossRegion));
        // Not per-model inference quotas.
        assert_eq!(parse("Batch inference job size (in GB)"), None);
        assert_eq!(
            parse("Records per batch inference job for Claude 3 Haiku"),
            None
        );
        assert_eq!(
            parse("Model units per provisioned model for Anthropic Claude 3 Haiku"),
            None
        );
    }

    #[test]
    fn model_ids_find_their_display_names() {
        let cases = [
            (
                "anthropic.claude-3-haiku-20240307-v1:0",
                "Anthropic Claude 3 Haiku",
                true,
            ),
            (
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "Anthropic Claude 3.5 Sonnet",
                true,
            ),
            (
                "anthropic.claude-3-5-sonnet-20241022-v2:0",
                "Anthropic Claude 3.5 Sonnet V2",
                true,
            ),
            (
                "anthropic.claude-3-5-sonnet-20241022-v2:0",
                "Anthropic Claude 3.5 Sonnet",
                false,
            ),
            (
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "Anthropic Claude 3.5 Sonnet V2",
                false,
            ),
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "Anthropic Claude Sonnet 4.5 V1",
                true,
            ),
            (
                "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "Anthropic Claude Sonnet 4.5",
                true,
            ),
            (
                "anthropic.claude-sonnet-4-5-20250929-v1:0",
                "Anthropic Claude Sonnet 4",
                false,
            ),
            (
                "anthropic.claude-sonnet-4-20250514-v1:0",
                "Anthropic Claude Sonnet 4.5",
                false,
            ),
            (
                "anthropic.claude-haiku-4-5-20251001-v1:0",
                "Anthropic Claude Haiku 4.5",
                true,
            ),
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "Anthropic Claude Haiku 4.5",
                false,
            ),
            (
                "meta.llama3-1-70b-instruct-v1:0",
                "Meta Llama 3.1 70B Instruct",
                true,
            ),
            (
                "meta.llama3-1-8b-instruct-v1:0",
                "Meta Llama 3.1 70B Instruct",
                false,
            ),
            ("amazon.nova-pro-v1:0", "Amazon Nova Pro", true),
            ("amazon.nova-pro-v1:0", "Nova Pro", true),
            ("amazon.nova-lite-v1:0", "Amazon Nova Pro", false),
            (
                "amazon.titan-embed-text-v2:0",
                "Amazon Titan Text Embeddings V2",
                true,
            ),
            (
                "amazon.titan-embed-text-v2:0",
                "Amazon Titan Text Embeddings",
                false,
            ),
            (
                "cohere.embed-english-v3",
                "Cohere Embed Multilingual",
                false,
            ),
            ("cohere.embed-english-v3", "Cohere Embed English", true),
        ];
        for (id, display, expected) in cases {
            assert_eq!(matches(id, display).is_some(), expected, "{id} ~ {display}");
        }
        // The closer name wins: the id adds nothing to the full name.
        assert!(
            matches("amazon.nova-pro-v1:0", "Amazon Nova Pro").unwrap()
                > matches("amazon.nova-pro-v1:0", "Nova Pro").unwrap()
        );
    }

    #[test]
    fn scopes_come_from_profile_prefixes() {
        assert_eq!(
            Scope::of("anthropic.claude-3-haiku-20240307-v1:0"),
            Scope::OnDemand
        );
        assert_eq!(
            Scope::of("eu.anthropic.claude-3-haiku-20240307-v1:0"),
            Scope::CrossRegion
        );
        assert_eq!(Scope::of("apac.amazon.nova-pro-v1:0"), Scope::CrossRegion);
        assert_eq!(
            Scope::of("global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Scope::Global
        );
        assert_eq!(
            Scope::of("arn:aws:bedrock:us-east-1:1:inference-profile/us.amazon.nova-pro-v1:0"),
            Scope::CrossRegion
        );
    }
}
