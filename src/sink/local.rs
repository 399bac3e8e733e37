//! Publishing to a local folder: write a hidden temporary file, flush it to disk, rename it into place, then
//! flush the folder, so a part is either absent or whole.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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

/// A file being written; dropped unfinished (a write failed, the disk is full), its temporary file is removed.
#[derive(Debug)]
pub struct LocalPart {
    file: BufWriter<fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    finished: bool,
}

impl Drop for LocalPart {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl LocalPart {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.file.write_all(bytes).map_err(err(&self.tmp))
    }

    /// Flushes the file to disk and renames it into place.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.file.flush().map_err(err(&self.tmp))?;
        self.file.get_ref().sync_all().map_err(err(&self.tmp))?;
        fs::rename(&self.tmp, &self.target).map_err(err(&self.target))?;
        self.finished = true;
        // The rename is durable once the folder's entry is.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
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
    pub fn publish(&self, name: &str, bytes: &[u8]) -> Result<(), OutputError> {
        let mut part = self.begin(name)?;
        part.write(bytes)?;
        part.finish()
    }

    /// Starts writing `name` into a hidden temporary file; it appears under its name at [`LocalPart::finish`].
    pub fn begin(&self, name: &str) -> Result<LocalPart, OutputError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = fs::File::create(&tmp).map_err(err(&tmp))?;
        Ok(LocalPart {
            file: BufWriter::with_capacity(1 << 20, file),
            target: self.dir.join(name),
            dir: self.dir.clone(),
            tmp,
            finished: false,
        })
    }

    /// Removes what a run of batchrun writes here (parts, manifest, temporary files), for a fresh start. The
    /// manifest goes first, so a removal cut short never leaves a manifest that lists missing parts.
    pub fn clear(&self) -> Result<(), OutputError> {
        let mut ours = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(err(&self.dir))? {
            let entry = entry.map_err(err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if super::is_ours(&name) {
                ours.push(name);
            }
        }
        ours.sort_by_key(|name| name != "manifest.json");
        for name in ours {
            let path = self.dir.join(name);
            fs::remove_file(&path).map_err(err(&path))?;
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
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
        sink.publish("part-00001.jsonl", b"abc\n").unwrap();
        assert_eq!(
            fs::read(sink.dir().join("part-00001.jsonl")).unwrap(),
            b"abc\n"
        );
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
