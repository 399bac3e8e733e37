//! Publishing to a local folder: write a hidden temporary file, flush it to disk, rename it into place, then
//! flush the folder, so a part is either absent or whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Published;

/// Output that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("failed to write output {}", path.display())]
pub struct OutputError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A local output folder.
#[derive(Debug, Clone)]
pub struct LocalSink {
    dir: PathBuf,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError {
        path: path.to_path_buf(),
        source,
    }
}

impl LocalSink {
    /// The sink for `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<LocalSink, OutputError> {
        fs::create_dir_all(dir).map_err(err(dir))?;
        Ok(LocalSink {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes `bytes` as `name` atomically, replacing a file of that name.
    pub fn publish(&self, name: &str, bytes: &[u8]) -> Result<Published, OutputError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let target = self.dir.join(name);
        {
            let mut f = fs::File::create(&tmp).map_err(err(&tmp))?;
            f.write_all(bytes).map_err(err(&tmp))?;
            f.sync_all().map_err(err(&tmp))?;
        }
        fs::rename(&tmp, &target).map_err(err(&target))?;
        // The rename is durable once the folder's entry is.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Published::of(bytes))
    }

    /// Removes what a run of batchrun writes here (parts, manifest, temporary files), for a fresh start.
    pub fn clear(&self) -> Result<(), OutputError> {
        for entry in fs::read_dir(&self.dir).map_err(err(&self.dir))? {
            let entry = entry.map_err(err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let ours = super::is_ours(&name);
            if ours {
                fs::remove_file(entry.path()).map_err(err(&entry.path()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_atomically_and_clear_removes_only_ours() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(&dir.path().join("out")).unwrap();
        let p = sink.publish("part-00001.jsonl", b"abc\n").unwrap();
        assert_eq!(p.bytes, 4);
        assert_eq!(p.sha256.len(), 64);
        sink.publish("part-00001.jsonl", b"abcd\n").unwrap();
        assert_eq!(
            fs::read(sink.dir().join("part-00001.jsonl")).unwrap(),
            b"abcd\n"
        );
        fs::write(sink.dir().join("notes.txt"), "keep").unwrap();
        fs::write(sink.dir().join(".part-00002.jsonl.tmp"), "half").unwrap();
        sink.clear().unwrap();
        let left: Vec<_> = fs::read_dir(sink.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
    }
}
