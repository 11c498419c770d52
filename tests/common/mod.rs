//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary on workspace `ws`.
pub fn slicetest(ws: &Path, args: &[&str]) -> Output {
    slicetest_with_env(ws, args, &[])
}

/// [`slicetest`] with these environment variables set.
pub fn slicetest_with_env(ws: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("slicetest runs")
}

/// Runs it and expects success; returns stdout.
pub fn ok(ws: &Path, args: &[&str]) -> String {
    ok_with_env(ws, args, &[])
}

/// [`ok`] with these environment variables set.
pub fn ok_with_env(ws: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = slicetest_with_env(ws, args, env);
    assert!(out.status.success(), "slicetest {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs it and expects failure; returns stderr.
pub fn fails(ws: &Path, args: &[&str]) -> String {
    let out = slicetest(ws, args);
    assert!(!out.status.success(), "slicetest {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// A file of a published version named by its manifest (`images_file`, `report_file`).
pub fn version_file(ws: &Path, ds: &str, version: u64, field: &str) -> std::path::PathBuf {
    let dir = ws.join("datasets").join(ds).join("versions").join(version.to_string());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("version.json")).unwrap()).unwrap();
    dir.join(manifest[field].as_str().unwrap())
}

/// The published versions of a dataset (directories holding a `version.json`).
pub fn version_entries(ws: &Path, ds: &str) -> Vec<String> {
    let dir = ws.join("datasets").join(ds).join("versions");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut v: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| dir.join(n).join("version.json").exists())
        .collect();
    v.sort();
    v
}

/// A temporary directory with a fresh workspace `ws/` and an empty source folder `src/`.
pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub ws: PathBuf,
    pub src: PathBuf,
}

/// Creates a [`Setup`].
pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    ok(&ws, &["init"]);
    Setup { _dir: dir, ws, src }
}

/// Runs a query with CSV output.
pub fn sql_csv(ws: &Path, query: &str) -> String {
    ok(ws, &["sql", "--format", "csv", query])
}
