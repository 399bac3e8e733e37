//! The design's dependency rules, checked against the code: every `crate::…` path in a module of `src/` must
//! be an edge this table allows, and some modules must not touch some libraries (the budget is pure: no SDK, no
//! SQLite; the emulator shares nothing with the runner). A new back-edge fails here with its file and line.

use std::path::{Path, PathBuf};

/// Which modules each module may use (`crate::X`). `say` (the stderr macro) is open to all.
const ALLOWED: &[(&str, &[&str])] = &[
    ("say", &[]),
    ("tokens", &[]),
    ("s3", &[]),
    ("catalogue", &[]),
    ("emulator", &[]),
    ("job", &["catalogue", "s3"]),
    ("budget", &["job"]),
    ("invoke", &["job"]),
    ("quotas", &["catalogue", "invoke"]),
    ("checkpoint", &["budget"]),
    ("source", &["job", "s3", "tokens"]),
    ("sink", &["checkpoint", "job", "s3"]),
    ("report", &["budget", "catalogue", "checkpoint", "job"]),
    ("batch", &["checkpoint", "invoke", "job", "s3"]),
    (
        "error",
        &[
            "batch",
            "catalogue",
            "checkpoint",
            "emulator",
            "invoke",
            "job",
            "quotas",
            "report",
            "s3",
            "sink",
            "source",
        ],
    ),
    (
        "run",
        &[
            "batch",
            "budget",
            "checkpoint",
            "error",
            "invoke",
            "job",
            "quotas",
            "report",
            "s3",
            "sink",
            "source",
        ],
    ),
    (
        "inspect",
        &[
            "batch",
            "budget",
            "catalogue",
            "checkpoint",
            "error",
            "invoke",
            "job",
            "quotas",
            "report",
            "run",
            "source",
        ],
    ),
    (
        "cli",
        &["emulator", "error", "inspect", "job", "report", "run"],
    ),
    ("main", &[]),
];

/// Libraries a module must not use.
const FORBIDDEN_CRATES: &[(&str, &[&str])] = &[
    (
        "budget",
        &["sqlx", "aws_sdk_bedrockruntime", "aws_sdk_s3", "hyper"],
    ),
    ("report", &["sqlx", "aws_sdk_bedrockruntime", "aws_sdk_s3"]),
    ("job", &["sqlx", "aws_sdk_bedrockruntime", "aws_sdk_s3"]),
];

/// The `.rs` files of module `name`: `src/name.rs` or everything under `src/name/`.
fn files_of(src: &Path, name: &str) -> Vec<PathBuf> {
    let single = src.join(format!("{name}.rs"));
    if single.is_file() {
        return vec![single];
    }
    rust_files(&src.join(name))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()]
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every `crate::X` named in code (not in comments) of `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::say!` is the macro; `crate::{a, b}` lists several.
            if let Some(list) = after.strip_prefix('{') {
                for item in list.split('}').next().unwrap_or("").split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").to_string();
                    if !item.is_empty() {
                        out.push((n + 1, item));
                    }
                }
            } else if !name.is_empty() && !after[name.len()..].starts_with('!') {
                out.push((n + 1, name));
            }
            rest = &rest[i + "crate::".len()..];
        }
    }
    out
}

fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (module, allowed) in ALLOWED {
        for file in files_of(src, module) {
            let text = std::fs::read_to_string(&file).unwrap();
            // Test modules may reach anywhere.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (line, used) in crate_paths(text) {
                if used != *module && used != "say" && !allowed.contains(&used.as_str()) {
                    found.push(format!(
                        "{}:{line}: `{module}` uses `crate::{used}`, which the design does not allow",
                        file.strip_prefix(src.parent().unwrap()).unwrap().display()
                    ));
                }
            }
            if let Some((_, crates)) = FORBIDDEN_CRATES.iter().find(|(m, _)| m == module) {
                for (n, l) in text.lines().enumerate() {
                    let code = l.split("//").next().unwrap_or("");
                    for c in *crates {
                        if code.contains(&format!("{c}::")) {
                            found.push(format!(
                                "{}:{}: `{module}` uses `{c}`, which it must not touch",
                                file.strip_prefix(src.parent().unwrap()).unwrap().display(),
                                n + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn modules_depend_only_as_the_design_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Every module of the crate has a row: a new one must say what it may use.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                ALLOWED.iter().any(|(m, _)| *m == name),
                "module `{name}` has no row in ALLOWED"
            );
        }
    }
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "dependency rules broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_back_edge_is_caught_with_its_file_and_line() {
    // A copy of the tree with one forbidden edge added: the budget reaching for the checkpoint's store.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("budget")).unwrap();
    std::fs::write(
        src.join("budget/mod.rs"),
        "//! crate::checkpoint in a comment is fine.\nuse crate::job::Job;\nuse crate::checkpoint::Store;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("budget/sql.rs"),
        "fn f() { let _ = sqlx::query(\"\"); }\n",
    )
    .unwrap();
    let found = violations(&src);
    assert_eq!(
        found,
        [
            "src/budget/mod.rs:3: `budget` uses `crate::checkpoint`, which the design does not allow",
            "src/budget/sql.rs:1: `budget` uses `sqlx`, which it must not touch",
        ]
    );
}

/// The longest a function outside tests may be, in lines from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// Functions of `text` (formatted by rustfmt, tests cut off): name, first line, length in lines. A function
/// ends at the first line that is its own indentation and a lone `}`.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let mut words = code.split_whitespace().peekable();
        while let Some(w) = words.peek() {
            if w.starts_with("pub") || ["async", "const", "unsafe", "extern"].contains(w) {
                words.next();
            } else {
                break;
            }
        }
        if words.next() != Some("fn") {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        // A declaration without a body (in a trait) ends with `;` before any `{`.
        let body = lines[i..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'))
            .filter(|&j| lines[i + j].trim_end().ends_with('{'));
        let Some(open) = body else { continue };
        if lines[i + open].trim_end().ends_with("{}") {
            continue;
        }
        if let Some(end) = lines[i + open..].iter().position(|l| *l == closing) {
            out.push((name, i + 1, open + end + 1));
        }
    }
    out
}

/// Functions of `src` longer than [`MAX_FUNCTION_LINES`], as `file:line name (n lines)`.
fn long_functions(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for path in rust_files(src) {
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.split("#[cfg(test)]\nmod").next().unwrap_or("");
        for (name, line, n) in functions(text) {
            if n > MAX_FUNCTION_LINES {
                let file = path.strip_prefix(src.parent().unwrap()).unwrap();
                found.push(format!("{}:{line} {name} ({n} lines)", file.display()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = long_functions(&src);
    assert!(
        found.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines; split them along their seams:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_long_function_is_found_and_short_ones_and_declarations_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let body = "        let x = 1;\n".repeat(MAX_FUNCTION_LINES - 1);
    let text = format!(
        "trait T {{\n    fn declared(&self) -> u8;\n}}\n\nfn empty() {{}}\n\nfn short() {{\n    1;\n}}\n\n\
         impl S {{\n    pub async fn long(\n        &self,\n    ) -> u8 {{\n{body}    }}\n}}\n\n\
         #[cfg(test)]\nmod tests {{\n    fn also_long() {{\n{body}{body}    }}\n}}\n"
    );
    std::fs::write(src.join("lib.rs"), text).unwrap();
    // `long` spans its signature (3 lines), the body and its closing brace: 3 + 79 + 1 = 83 lines.
    assert_eq!(long_functions(&src), vec!["src/lib.rs:12 long (83 lines)"]);
}

/// Statements built with `QueryBuilder` in `src/`, by file and line, that are not marked `persistent(false)`
/// within the few lines after they are built.
fn cached_built_statements(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let builds = [".build()", ".build_query_as", ".build_query_scalar"]
                .iter()
                .any(|b| line.contains(b));
            let after = lines[i..lines.len().min(i + 3)].join("\n");
            if builds && text.contains("QueryBuilder") && !after.contains(".persistent(false)") {
                out.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    out
}

#[test]
fn multi_row_statements_stay_out_of_the_statement_cache() {
    // Their text changes with the number of rows: each size kept in sqlx's cache held a prepared statement of
    // hundreds of placeholders, most of a large job's memory (src/checkpoint/mod.rs).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = cached_built_statements(&src);
    assert!(
        found.is_empty(),
        "QueryBuilder statements without .persistent(false):\n{}",
        found.join("\n")
    );
}
