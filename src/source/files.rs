//! Which files a job reads: `input.path` as a file, a folder or a glob, listed in a stable (sorted) order with
//! each file's identity (size and modification time) for the job's fingerprint.

use std::collections::HashSet;
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

/// How a folder walk treats symbolic links, and what it skipped.
struct Walk {
    format: InputFormat,
    /// The input folder, resolved: a link whose target lies outside it is skipped unless `outside` is set.
    root: PathBuf,
    outside: bool,
    /// Folders entered, by device and inode: a link back to one of them (a loop) is not followed again.
    seen: HashSet<(u64, u64)>,
    skipped_outside: Vec<String>,
    skipped_broken: Vec<String>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        if !self.seen.insert(dev_ino(&meta)) {
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let is_hidden = entry.file_name().to_string_lossy().starts_with('.');
            let file_type = entry.file_type().map_err(io(&path))?;
            let is_dir = if file_type.is_symlink() {
                let Some((target, inside)) = self.follow(&path) else {
                    continue;
                };
                // A folder inside the input is read through its own path, not again through a link.
                if target.is_dir() && inside {
                    continue;
                }
                target.is_dir()
            } else {
                file_type.is_dir()
            };
            if is_dir {
                // Documents folders are read recursively; JSONL and CSV folders at their top level only.
                if self.format == InputFormat::Documents && !is_hidden {
                    self.dir(&path, out)?;
                }
            } else if wanted(&path, self.format) {
                out.push(path);
            }
        }
        Ok(())
    }

    fn new(format: InputFormat, root: &Path, outside: bool) -> Result<Walk, SourceError> {
        let root = if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            root
        };
        Ok(Walk {
            format,
            root: std::fs::canonicalize(root).map_err(io(root))?,
            outside,
            seen: HashSet::new(),
            skipped_outside: Vec::new(),
            skipped_broken: Vec::new(),
        })
    }

    /// Where the symbolic link `path` leads and whether that is inside the input folder, or `None` (noted) when
    /// it is not to be followed: it leads nowhere, in a loop, or outside the folder.
    fn follow(&mut self, path: &Path) -> Option<(PathBuf, bool)> {
        let Ok(target) = std::fs::canonicalize(path) else {
            self.skipped_broken.push(path.display().to_string());
            return None;
        };
        let inside = target.starts_with(&self.root);
        if !inside && !self.outside {
            self.skipped_outside
                .push(format!("{} -> {}", path.display(), target.display()));
            return None;
        }
        Some((target, inside))
    }

    /// One warning for each kind of link skipped, with a few examples.
    fn warn(&self) {
        let examples = |v: &[String]| {
            let mut text = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 3 {
                text.push_str(&format!(", and {} more", v.len() - 3));
            }
            text
        };
        if !self.skipped_outside.is_empty() {
            crate::say!(
                "warning: skipped {} symbolic link(s) that lead outside the input folder {} ({}); set \
                 input.follow-links-outside = true to read them",
                self.skipped_outside.len(),
                self.root.display(),
                examples(&self.skipped_outside)
            );
        }
        if !self.skipped_broken.is_empty() {
            crate::say!(
                "warning: skipped {} symbolic link(s) that lead nowhere or in a loop ({})",
                self.skipped_broken.len(),
                examples(&self.skipped_broken)
            );
        }
    }
}

#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Lists the input files of `path` (resolved) for `format`, sorted by relative path.
/// A folder's symbolic links are followed when they lead inside it (a link back into a folder already read is
/// not followed twice); links leading outside it are skipped with a warning unless `follow_outside`.
pub fn list_local(
    path: &Path,
    format: InputFormat,
    follow_outside: bool,
) -> Result<Vec<InputFile>, SourceError> {
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
        let mut walk = Walk::new(format, &root, follow_outside)?;
        for m in matches {
            let p = m.map_err(|e| SourceError::Io {
                name: e.path().display().to_string(),
                source: e.into(),
            })?;
            let is_link = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
            if (!is_link || walk.follow(&p).is_some()) && p.is_file() {
                paths.push(p);
            }
        }
        walk.warn();
        (root, paths)
    } else if path.is_dir() {
        let mut paths = Vec::new();
        let mut walk = Walk::new(format, path, follow_outside)?;
        walk.dir(path, &mut paths)?;
        walk.warn();
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

        let docs = list_local(&root.join("docs"), InputFormat::Documents, false).unwrap();
        let rels: Vec<_> = docs.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.txt", "b.md", "sub/c.md"]);
        assert_eq!(docs[0].size, 1);

        let md = list_local(&root.join("docs/*.md"), InputFormat::Documents, false).unwrap();
        let rels: Vec<_> = md.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["b.md"]);

        let one = list_local(&root.join("x.jsonl"), InputFormat::Jsonl, false).unwrap();
        assert_eq!(one[0].rel, "x.jsonl");

        let none = list_local(&root.join("docs/*.pdf"), InputFormat::Documents, false).unwrap_err();
        assert!(
            none.to_string().contains("matches no input files"),
            "{none}"
        );
        assert!(list_local(&root.join("docs"), InputFormat::Csv, false).is_err());
    }

    #[test]
    fn symbolic_links_neither_loop_nor_leave_the_input_folder() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/sub")).unwrap();
        std::fs::write(root.join("docs/a.md"), "a").unwrap();
        std::fs::write(root.join("docs/sub/b.md"), "b").unwrap();
        std::fs::write(root.join("secret.txt"), "key").unwrap();
        // Two links back to the folder itself, one to itself, one to a file outside, one to a folder and one
        // to a file inside.
        symlink(".", root.join("docs/here")).unwrap();
        symlink("..", root.join("docs/sub/up")).unwrap();
        symlink("self", root.join("docs/self")).unwrap();
        symlink(root.join("secret.txt"), root.join("docs/creds")).unwrap();
        symlink("sub", root.join("docs/alias")).unwrap();
        symlink("sub/b.md", root.join("docs/b-link.md")).unwrap();
        let rels = |files: Vec<InputFile>| files.into_iter().map(|f| f.rel).collect::<Vec<_>>();
        let docs = list_local(&root.join("docs"), InputFormat::Documents, false).unwrap();
        assert_eq!(rels(docs), ["a.md", "b-link.md", "sub/b.md"]);
        // The job may ask for links outside; loops are still read once.
        let docs = list_local(&root.join("docs"), InputFormat::Documents, true).unwrap();
        assert_eq!(rels(docs), ["a.md", "b-link.md", "creds", "sub/b.md"]);
        // A glob's matches obey the same rule.
        let globbed = list_local(&root.join("docs/*"), InputFormat::Documents, false).unwrap();
        assert_eq!(rels(globbed), ["a.md", "b-link.md"]);
    }
}
