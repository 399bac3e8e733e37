//! Which files a job reads: `input.path` as a file, a folder or a glob, listed in a stable (sorted) order with
//! each file's identity (size and modification time) for the job's fingerprint.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::SourceError;
use crate::job::InputFormat;

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputFile {
    /// Its path on disk.
    #[serde(skip)]
    pub path: PathBuf,
    /// Its path relative to the input root (the folder, the glob's fixed prefix, or the file's folder); also
    /// the id of a document.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u128,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_path_buf(),
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
        path: path.to_path_buf(),
        rel,
        size: meta.len(),
        modified_ns,
    })
}

fn wanted(path: &Path, format: InputFormat) -> bool {
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
pub fn list(path: &Path, format: InputFormat) -> Result<Vec<InputFile>, SourceError> {
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
                path: e.path().to_path_buf(),
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

        let docs = list(&root.join("docs"), InputFormat::Documents).unwrap();
        let rels: Vec<_> = docs.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.txt", "b.md", "sub/c.md"]);
        assert_eq!(docs[0].size, 1);

        let md = list(&root.join("docs/*.md"), InputFormat::Documents).unwrap();
        let rels: Vec<_> = md.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["b.md"]);

        let one = list(&root.join("x.jsonl"), InputFormat::Jsonl).unwrap();
        assert_eq!(one[0].rel, "x.jsonl");

        let none = list(&root.join("docs/*.pdf"), InputFormat::Documents).unwrap_err();
        assert!(
            none.to_string().contains("matches no input files"),
            "{none}"
        );
        assert!(list(&root.join("docs"), InputFormat::Csv).is_err());
    }
}
