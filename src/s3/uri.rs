//! `s3://bucket/key` locations as written in a job file.

use std::fmt;

/// A bucket and a key (or key prefix, or key pattern).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    /// The bucket.
    pub bucket: String,
    /// The key, the prefix (ending in `/`, or empty for the whole bucket) or a pattern.
    pub key: String,
}

/// How an input URI selects objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One object, or, when no object has this key, every object below `key/`.
    Key(String),
    /// Every object whose key starts with the prefix.
    Prefix(String),
    /// Every object below `prefix` whose key matches `pattern` (glob syntax; `*` stays within one `/` level).
    Pattern {
        /// The part of the key before the first component holding a glob character.
        prefix: String,
        /// The whole key pattern.
        pattern: glob::Pattern,
    },
}

impl S3Uri {
    /// Parses `s3://bucket[/key]`. The message says what is wrong.
    pub fn parse(text: &str) -> Result<S3Uri, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an S3 URI (expected s3://bucket/key)"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "`{text}` names no bucket (expected s3://bucket/key)"
            ));
        }
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid {
            return Err(format!(
                "`{bucket}` is not a valid bucket name (3 to 63 lowercase letters, digits, `-` and `.`)"
            ));
        }
        if key.starts_with('/') {
            return Err(format!(
                "`{text}` has a key starting with `/`; write s3://{bucket}/{}",
                key.trim_start_matches('/')
            ));
        }
        Ok(S3Uri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The URI of `key` in the same bucket.
    pub fn with_key(&self, key: impl Into<String>) -> S3Uri {
        S3Uri {
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }

    /// How this URI, used as an input, selects objects.
    pub fn selection(&self) -> Result<Selection, String> {
        let key = &self.key;
        if key.is_empty() || key.ends_with('/') {
            return Ok(Selection::Prefix(key.clone()));
        }
        let Some(first) = key.find(['*', '?', '[']) else {
            return Ok(Selection::Key(key.clone()));
        };
        let prefix = match key[..first].rfind('/') {
            Some(slash) => key[..=slash].to_string(),
            None => String::new(),
        };
        let pattern =
            glob::Pattern::new(key).map_err(|e| format!("`{self}` is not a valid pattern: {e}"))?;
        Ok(Selection::Pattern { prefix, pattern })
    }

    /// The key of `name` below this URI taken as a folder (`prefix/` + name).
    pub fn child(&self, name: &str) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            format!("{}{name}", self.key)
        } else {
            format!("{}/{name}", self.key)
        }
    }
}

/// Whether `key` matches `pattern`, with `*` and `?` not crossing a `/` (as a local glob does not cross folders).
pub fn key_matches(pattern: &glob::Pattern, key: &str) -> bool {
    pattern.matches_with(
        key,
        glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        },
    )
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        let u = S3Uri::parse("s3://my-bucket/docs/a.md").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("my-bucket", "docs/a.md")
        );
        assert_eq!(u.selection().unwrap(), Selection::Key("docs/a.md".into()));
        assert_eq!(u.to_string(), "s3://my-bucket/docs/a.md");

        let p = S3Uri::parse("s3://my-bucket/docs/").unwrap();
        assert_eq!(p.selection().unwrap(), Selection::Prefix("docs/".into()));
        assert_eq!(p.child("part-00001.jsonl"), "docs/part-00001.jsonl");
        let whole = S3Uri::parse("s3://my-bucket").unwrap();
        assert_eq!(whole.selection().unwrap(), Selection::Prefix(String::new()));
        assert_eq!(whole.child("m.json"), "m.json");
        assert_eq!(
            S3Uri::parse("s3://b12/out").unwrap().child("m.json"),
            "out/m.json"
        );

        let Selection::Pattern { prefix, pattern } = S3Uri::parse("s3://my-bucket/docs/2026/*.md")
            .unwrap()
            .selection()
            .unwrap()
        else {
            panic!("a pattern")
        };
        assert_eq!(prefix, "docs/2026/");
        assert!(key_matches(&pattern, "docs/2026/a.md"));
        assert!(!key_matches(&pattern, "docs/2026/a.txt"));
        assert!(!key_matches(&pattern, "docs/2026/sub/a.md"));

        for bad in [
            "my-bucket/x",
            "s3://",
            "s3://Upper/x",
            "s3://ab/x",
            "s3://b-x//k",
        ] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
