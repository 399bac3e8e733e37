//! Every job file in `tests/fixtures/jobs/invalid/` is refused before anything runs, with exit code 2 and an
//! error that names the key (line, column, caret) and says what to do. The error text is snapshot-tested.

use std::path::Path;

use crate::common::job::Run;

#[tokio::test]
async fn invalid_job_files_are_refused_with_a_clear_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jobs/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    for name in names {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchrun"))
            .args(["submit", &name, "--state", "/nonexistent/never-opened.db"])
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        let run = Run::from(output);
        assert_eq!(run.code, Some(2), "{name}: {}", run.stderr);
        let snapshot = name.trim_end_matches(".toml").to_string();
        insta::assert_snapshot!(snapshot, run.stderr);
    }
    // Nothing was created for a refused job.
    assert!(!dir.join(".batchrun").exists());
    assert!(!dir.join("out").exists());
}

#[test]
fn every_example_job_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // models.toml is the model table, not a job.
        if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("models.toml") {
            batchrun::job::Job::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example jobs");
}
