//! Which files a job reads: `input.path` as a file, a folder or a glob, listed in a stable (sorted) order with
//! each file's identity (size and modification time) for the job's fingerprint.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::SourceError;
use crate::job::InputFormat;
use crate::s3::{ObjectInfo, S3Uri};

/// Where an input's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk.
    File(PathBuf),
    /// An S3 object.
    S3(S3Uri),
}

/// One input file or object. Its serialized form (relative path, size, and modification time or ETag) is its
/// identity in the job's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputFile {
    /// Where to read it.
    #[serde(skip)]
    pub origin: Origin,
    /// The object's URI (S3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Its path relative to the input root (the folder or prefix, the glob's fixed prefix, or the file's
    /// folder); also the id of a document.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (local files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u128>,
    /// The object's ETag (S3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl InputFile {
    /// How errors and warnings name it: the path on disk or the S3 URI.
    pub fn name(&self) -> String {
        match &self.origin {
            Origin::File(p) => p.display().to_string(),
            Origin::S3(u) => u.to_string(),
        }
    }

    /// The identity of S3 object `object` listed for `uri`.
    pub fn from_s3(uri: &S3Uri, object: ObjectInfo) -> InputFile {
        // Relative to the listed prefix (or the object's "folder"), as a local folder's files are.
        let root = match uri.selection() {
            Ok(crate::s3::Selection::Prefix(p))
            | Ok(crate::s3::Selection::Pattern { prefix: p, .. }) => p,
            _ if object.key == uri.key => match uri.key.rfind('/') {
                Some(i) => uri.key[..=i].to_string(),
                None => String::new(),
            },
            _ => format!("{}/", uri.key),
        };
        let rel = object
            .key
            .strip_prefix(&root)
            .unwrap_or(&object.key)
            .to_string();
        let at = uri.with_key(object.key);
        InputFile {
            uri: Some(at.to_string()),
            origin: Origin::S3(at),
            rel,
            size: object.size,
            modified_ns: None,
            etag: Some(object.etag),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        name: path.display().to_string(),
        source,
    }
}

fn identity(path: &Path, root: &Path) -> Result<InputFile, SourceError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/");
    Ok(InputFile {
        origin: Origin::File(path.to_path_buf()),
        uri: None,
        rel,
        size: meta.len(),
        modified_ns: Some(modified_ns),
        etag: None,
    })
}

/// Whether a file or object named `path` is an input of `format`: hidden names are skipped, JSONL and CSV
/// inputs by extension.
pub(super) fn wanted(path: &Path, format: InputFormat) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    if hidden {
        return false;
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match format {
        InputFormat::Jsonl => ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("json"),
        InputFormat::Csv => ext.eq_ignore_ascii_case("csv"),
        InputFormat::Documents => true,
    }
}

fn walk(dir: &Path, format: InputFormat, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let is_hidden = entry.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() {
            // Documents folders are read recursively; JSONL and CSV folders at their top level only.
            if format == InputFormat::Documents && !is_hidden {
                walk(&path, format, out)?;
            }
        } else if wanted(&path, format) {
            out.push(path);
        }
    }
    Ok(())
}

/// Lists the input files of `path` (resolved) for `format`, sorted by relative path.
pub fn list_local(path: &Path, format: InputFormat) -> Result<Vec<InputFile>, SourceError> {
    let pattern = path.to_string_lossy().to_string();
    let (root, paths) = if pattern.contains(['*', '?', '[']) {
        // The root is the part of the pattern before the first component holding a glob character.
        let mut root = PathBuf::new();
        for component in path.components() {
            if component
                .as_os_str()
                .to_string_lossy()
                .contains(['*', '?', '['])
            {
                break;
            }
            root.push(component);
        }
        let matches = glob::glob(&pattern).map_err(|e| SourceError::BadPattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        let mut paths = Vec::new();
        for m in matches {
            let p = m.map_err(|e| SourceError::Io {
                name: e.path().display().to_string(),
                source: e.into(),
            })?;
            if p.is_file() {
                paths.push(p);
            }
        }
        (root, paths)
    } else if path.is_dir() {
        let mut paths = Vec::new();
        walk(path, format, &mut paths)?;
        (path.to_path_buf(), paths)
    } else {
        let root = path.parent().unwrap_or(Path::new("")).to_path_buf();
        (root, vec![path.to_path_buf()])
    };
    let mut files = paths
        .iter()
        .map(|p| identity(p, &root))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    if files.is_empty() {
        return Err(SourceError::NoInputs { pattern });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_folders_globs_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/sub")).unwrap();
        std::fs::write(root.join("docs/b.md"), "b").unwrap();
        std::fs::write(root.join("docs/a.txt"), "a").unwrap();
        std::fs::write(root.join("docs/.hidden"), "h").unwrap();
        std::fs::write(root.join("docs/sub/c.md"), "c").unwrap();
        std::fs::write(root.join("x.jsonl"), "{}").unwrap();

        let docs = list_local(&root.join("docs"), InputFormat::Documents).unwrap();
        let rels: Vec<_> = docs.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.txt", "b.md", "sub/c.md"]);
        assert_eq!(docs[0].size, 1);

        let md = list_local(&root.join("docs/*.md"), InputFormat::Documents).unwrap();
        let rels: Vec<_> = md.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["b.md"]);

        let one = list_local(&root.join("x.jsonl"), InputFormat::Jsonl).unwrap();
        assert_eq!(one[0].rel, "x.jsonl");

        let none = list_local(&root.join("docs/*.pdf"), InputFormat::Documents).unwrap_err();
        assert!(
            none.to_string().contains("matches no input files"),
            "{none}"
        );
        assert!(list_local(&root.join("docs"), InputFormat::Csv).is_err());
    }
}
