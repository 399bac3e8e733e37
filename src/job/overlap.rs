//! Input and output must not overlap: parts written into the input folder would be read as input by the next
//! run (refused as changed input, forever), and a `--fresh` that removes batchrun's own files there could
//! remove an input named like a part. Local paths are compared after resolving symlinks of the parts that
//! exist; S3 locations by bucket and key prefix.

use std::path::{Path, PathBuf};

use super::location::Location;
use crate::s3::{S3Uri, Selection};

/// How `input` and `output` overlap (as words that follow "output.path"), or `None` when they are apart.
pub fn overlap(input: &Location, output: &Location) -> Option<&'static str> {
    match (input, output) {
        (Location::Local(i), Location::Local(o)) => {
            let (i, o) = (real(&glob_root(i)), real(o));
            if i == o {
                Some("is the input folder")
            } else if i.starts_with(&o) {
                Some("holds the input")
            } else if o.starts_with(&i) {
                Some("is inside the input folder")
            } else {
                None
            }
        }
        (Location::S3(i), Location::S3(o)) if i.bucket == o.bucket => {
            let root = s3_root(i);
            let out = as_prefix(&o.key);
            if root.starts_with(&out) {
                Some("holds the input")
            } else if out.starts_with(&as_prefix(&root)) {
                Some("is inside the input prefix")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The fixed part of a path before its first component holding a glob character.
fn glob_root(path: &Path) -> PathBuf {
    let mut root = PathBuf::new();
    for c in path.components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        root.push(c);
    }
    root
}

/// `path` with the symlinks of its longest existing ancestor resolved (the rest may not exist yet).
fn real(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The key prefix an S3 input reads below.
fn s3_root(uri: &S3Uri) -> String {
    match uri.selection() {
        Ok(Selection::Prefix(p)) | Ok(Selection::Pattern { prefix: p, .. }) => p,
        Ok(Selection::Key(k)) => k,
        Err(_) => uri.key.clone(),
    }
}

fn as_prefix(key: &str) -> String {
    if key.is_empty() || key.ends_with('/') {
        key.to_string()
    } else {
        format!("{key}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &Path) -> Location {
        Location::Local(p.to_path_buf())
    }

    fn s3(u: &str) -> Location {
        Location::S3(S3Uri::parse(u).unwrap())
    }

    #[test]
    fn local_paths_overlap_when_one_holds_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("docs/sub")).unwrap();
        std::fs::write(d.join("in.jsonl"), "").unwrap();
        std::fs::create_dir_all(d.join("other")).unwrap();
        std::os::unix::fs::symlink(d.join("docs"), d.join("alias")).unwrap();
        // Same folder, output below input (existing or not yet), input below output, through a symlink.
        assert!(overlap(&local(&d.join("docs")), &local(&d.join("docs"))).is_some());
        assert!(overlap(&local(&d.join("docs")), &local(&d.join("docs/out"))).is_some());
        assert!(overlap(&local(&d.join("docs/sub")), &local(&d.join("docs"))).is_some());
        assert!(overlap(&local(&d.join("docs")), &local(&d.join("alias/new/out"))).is_some());
        assert!(overlap(&local(&d.join("docs/*.md")), &local(&d.join("docs/out"))).is_some());
        assert!(overlap(&local(&d.join("in.jsonl")), &local(d)).is_some());
        // Apart: siblings, and a folder whose name merely starts like the other's.
        assert_eq!(
            overlap(&local(&d.join("docs")), &local(&d.join("other/out"))),
            None
        );
        assert_eq!(
            overlap(&local(&d.join("docs")), &local(&d.join("docs2"))),
            None
        );
        assert_eq!(
            overlap(&local(&d.join("in.jsonl")), &local(&d.join("out"))),
            None
        );
    }

    #[test]
    fn s3_locations_overlap_by_bucket_and_prefix() {
        assert!(overlap(&s3("s3://bkt/docs/"), &s3("s3://bkt/docs/out/")).is_some());
        assert!(overlap(&s3("s3://bkt/docs/*.md"), &s3("s3://bkt/docs/")).is_some());
        assert!(overlap(&s3("s3://bkt/docs/in.jsonl"), &s3("s3://bkt/docs/")).is_some());
        assert!(overlap(&s3("s3://bkt/docs"), &s3("s3://bkt/docs/out/")).is_some());
        assert!(overlap(&s3("s3://bkt/"), &s3("s3://bkt/out/")).is_some());
        assert_eq!(
            overlap(&s3("s3://bkt/docs/"), &s3("s3://bkt/docs-out/")),
            None
        );
        assert_eq!(
            overlap(&s3("s3://bkt/docs/"), &s3("s3://other/docs/")),
            None
        );
        assert_eq!(
            overlap(&s3("s3://bkt/in.jsonl"), &s3("s3://bkt/out/")),
            None
        );
    }
}
