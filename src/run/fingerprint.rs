//! What makes a job the same job: its request- and output-shaping settings and its inputs' identities. A resume
//! compares fingerprints and, when they differ, says what changed.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::job::Job;
use crate::source::InputFile;

/// A job's identity, and the JSON it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 over the two JSON texts, hex.
    pub hash: String,
    /// The settings, JSON.
    pub settings: String,
    /// The input identities, JSON.
    pub inputs: String,
}

impl Fingerprint {
    /// The fingerprint of `job` reading `files`.
    pub fn of(job: &Job, files: &[InputFile]) -> Fingerprint {
        let settings = serde_json::to_string(&job.settings()).expect("settings serialize");
        let inputs = serde_json::to_string(files).expect("input identities serialize");
        Fingerprint::hashed(settings, inputs)
    }

    /// Whether `stored` (as the state database keeps it) names the same job as `self`: the same hash, or the
    /// same once the keys that earlier versions of batchrun put in the settings and this one leaves out are
    /// taken from them (`model.output_burndown`, which shapes the budget, not the requests).
    pub fn matches(&self, stored: &Fingerprint) -> bool {
        if stored.hash == self.hash {
            return true;
        }
        let key = ",\"output_burndown\":";
        let Some(at) = stored.settings.find(key) else {
            return false;
        };
        let digits = stored.settings[at + key.len()..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let mut settings = stored.settings.clone();
        settings.replace_range(at..at + key.len() + digits, "");
        Fingerprint::hashed(settings, stored.inputs.clone()).hash == self.hash
    }

    fn hashed(settings: String, inputs: String) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(settings.as_bytes());
        h.update([0]);
        h.update(inputs.as_bytes());
        let hash = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Fingerprint {
            hash,
            settings,
            inputs,
        }
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.replace('_', "-")
                } else {
                    format!("{prefix}.{}", k.replace('_', "-"))
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// An input's identity as the fingerprint stores it ([`InputFile`]'s serialized form).
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Identity {
    rel: String,
    size: u64,
    modified_ns: Option<u128>,
    etag: Option<String>,
    uri: Option<String>,
}

/// Lines saying how `now` differs from `before` (settings first, then input files), at most a dozen.
pub fn describe_changes(before: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    let mut lines = Vec::new();
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &parse(&before.settings), &mut a);
    flatten("", &parse(&now.settings), &mut b);
    for (key, old) in &a {
        match b.iter().find(|(k, _)| k == key) {
            Some((_, new)) if new != old => lines.push(format!("{key}: {old} → {new}")),
            None => lines.push(format!("{key}: {old} → (unset)")),
            _ => {}
        }
    }
    for (key, new) in &b {
        if !a.iter().any(|(k, _)| k == key) {
            lines.push(format!("{key}: (unset) → {new}"));
        }
    }
    // Keyed by relative path, so that a million files compare in linear time.
    let files = |s: &str| serde_json::from_str::<Vec<Identity>>(s).unwrap_or_default();
    let (old_files, new_files) = (files(&before.inputs), files(&now.inputs));
    let old_by_rel: HashMap<&str, &Identity> =
        old_files.iter().map(|f| (f.rel.as_str(), f)).collect();
    let new_by_rel: HashMap<&str, &Identity> =
        new_files.iter().map(|f| (f.rel.as_str(), f)).collect();
    for old in &old_files {
        let rel = &old.rel;
        match new_by_rel.get(rel.as_str()) {
            None => lines.push(format!("input file removed: {rel}")),
            Some(new) if *new != old => lines.push(match (&old.etag, &new.etag) {
                (Some(a), Some(b)) => format!(
                    "input object changed: {} (ETag {a} → {b}, size {} → {})",
                    new.uri.as_deref().unwrap_or(rel),
                    old.size,
                    new.size
                ),
                _ => format!("input file changed: {rel} (size or modification time)"),
            }),
            _ => {}
        }
    }
    for new in &new_files {
        if !old_by_rel.contains_key(new.rel.as_str()) {
            lines.push(format!("input file added: {}", new.rel));
        }
    }
    let more = lines.len().saturating_sub(12);
    lines.truncate(12);
    if more > 0 {
        lines.push(format!("… and {more} more"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_from_before_burndown_left_it_still_matches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.jsonl"), "").unwrap();
        let job = Job::parse(
            "[job]\nname = \"t\"\n[model]\nid = \"m\"\nmax-tokens = 10\n[input]\npath = \"in.jsonl\"\n\
             format = \"jsonl\"\n[output]\npath = \"out/\"\n",
            &dir.path().join("t.toml"),
        )
        .unwrap();
        let now = Fingerprint::of(&job, &[]);
        assert!(!now.settings.contains("burndown"), "{}", now.settings);
        // As batchrun wrote it before: the burndown after the system prompt.
        let legacy = |b: &str| {
            let settings = now.settings.replacen(
                "\"system\":null",
                &format!("\"system\":null,\"output_burndown\":{b}"),
                1,
            );
            assert_ne!(settings, now.settings);
            Fingerprint::hashed(settings, now.inputs.clone())
        };
        assert!(now.matches(&legacy("1")));
        assert!(now.matches(&legacy("15")));
        // Anything else that differs still differs.
        let mut other = legacy("1");
        other.settings = other
            .settings
            .replace("\"max_tokens\":10", "\"max_tokens\":11");
        other.hash = Fingerprint::hashed(other.settings.clone(), other.inputs.clone()).hash;
        assert!(!now.matches(&other));
    }

    #[test]
    fn changes_are_named() {
        let before = Fingerprint {
            hash: "a".into(),
            settings: r#"{"model":{"max_tokens":512,"id":"m"}}"#.into(),
            inputs: r#"[{"rel":"a.md","size":1},{"rel":"b.md","size":2}]"#.into(),
        };
        let now = Fingerprint {
            hash: "b".into(),
            settings: r#"{"model":{"max_tokens":1024,"id":"m"}}"#.into(),
            inputs: r#"[{"rel":"a.md","size":5},{"rel":"c.md","size":2}]"#.into(),
        };
        let s3_before = Fingerprint {
            inputs: r#"[{"uri":"s3://b/in/a.md","rel":"a.md","size":1,"etag":"e1"}]"#.into(),
            ..before.clone()
        };
        let s3_now = Fingerprint {
            inputs: r#"[{"uri":"s3://b/in/a.md","rel":"a.md","size":3,"etag":"e2"}]"#.into(),
            ..before.clone()
        };
        assert_eq!(
            describe_changes(&s3_before, &s3_now),
            ["input object changed: s3://b/in/a.md (ETag e1 → e2, size 1 → 3)"]
        );
        assert_eq!(
            describe_changes(&before, &now),
            [
                "model.max-tokens: 512 → 1024",
                "input file changed: a.md (size or modification time)",
                "input file removed: b.md",
                "input file added: c.md",
            ]
        );
    }

    #[test]
    fn changes_among_many_files_are_listed_in_linear_time() {
        let list = |n: usize, changed: usize| {
            let files: Vec<String> = (0..n)
                .map(|i| {
                    let size = if i == changed { 2 } else { 1 };
                    format!(r#"{{"rel":"docs/{i:07}.md","size":{size}}}"#)
                })
                .collect();
            format!("[{}]", files.join(","))
        };
        let before = Fingerprint {
            hash: "a".into(),
            settings: "{}".into(),
            inputs: list(100_000, usize::MAX),
        };
        let now = Fingerprint {
            inputs: list(100_000, 99_999),
            ..before.clone()
        };
        // Quadratic matching took minutes here; the assertion is on the result, the time is the benchmark's.
        assert_eq!(
            describe_changes(&before, &now),
            ["input file changed: docs/0099999.md (size or modification time)"]
        );
    }
}
