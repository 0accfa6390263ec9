//! House rules that no compiler checks: every source file opens with a `//!` paragraph on
//! what it owns; no floats where money is computed; no leftover `dbg!` or `todo!`; every
//! SQLite migration has a PostgreSQL twin once PostgreSQL migrations exist.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn crate_sources(crate_name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    rust_files(
        &workspace_root().join("crates").join(crate_name).join("src"),
        &mut found,
    );
    found
}

fn all_crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("crates"))
        .expect("crates directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_module_opens_with_a_doc_paragraph() {
    let mut missing = Vec::new();
    for crate_name in all_crates() {
        for file in crate_sources(&crate_name) {
            // Unit-test files are named tests.rs and describe themselves in their tests.
            if file.file_name().is_some_and(|name| name == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("readable");
            let first = text
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or_default();
            if !first.starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "files without a `//!` header: {missing:#?}");
}

#[test]
fn no_floats_where_money_is_computed() {
    let mut offenders = Vec::new();
    for crate_name in ["tollgate-core", "tollgate-store", "tollgate-service"] {
        for file in crate_sources(crate_name) {
            let text = std::fs::read_to_string(&file).expect("readable");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if code.contains("f32") || code.contains("f64") {
                    offenders.push(format!("{}:{}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "floats in money code: {offenders:#?}");
}

#[test]
fn no_leftover_debugging() {
    let mut offenders = Vec::new();
    for crate_name in all_crates() {
        for file in crate_sources(&crate_name) {
            let text = std::fs::read_to_string(&file).expect("readable");
            for (number, line) in text.lines().enumerate() {
                if line.contains(concat!("dbg", "!(")) || line.contains(concat!("todo", "!(")) {
                    offenders.push(format!("{}:{}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "leftover debugging: {offenders:#?}");
}

#[test]
fn migrations_come_in_backend_pairs() {
    let migrations = workspace_root().join("crates/tollgate-store/migrations");
    let names = |backend: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(migrations.join(backend))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty(), "SQLite migrations exist");
    assert_eq!(
        sqlite,
        names("postgres"),
        "every migration exists for both backends"
    );
}
