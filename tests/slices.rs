//! Slices through the binary: freezing is atomic, deterministic and serialised; frozen
//! files are tamper-evident; diff, export and hold-out export work on real workspaces.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{fails, ok, setup, sql_csv};
use slicetest_test_support::write_image;

/// A workspace with dataset `pets`: 6 cats (4 train, 2 test) and 2 dogs.
fn pets() -> common::Setup {
    let s = setup();
    for i in 0..4 {
        write_image(&s.src.join(format!("train/cat/c{i}.png")), 4, 4, i);
    }
    for i in 4..6 {
        write_image(&s.src.join(format!("test/cat/c{i}.png")), 4, 4, i);
    }
    write_image(&s.src.join("train/dog/d0.png"), 4, 4, 10);
    write_image(&s.src.join("test/dog/d1.png"), 4, 4, 11);
    ok(&s.ws, &["ingest", "-d", "pets", "--quiet", s.src.to_str().unwrap()]);
    ok(&s.ws, &["slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'"]);
    s
}

fn slice_files(ws: &Path, slice: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ws.join("slices").join(slice))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The members file a frozen version's manifest names (`v<k>-<key>.parquet`).
fn members_name(ws: &Path, slice: &str, version: u64) -> String {
    let manifest = std::fs::read(ws.join("slices").join(slice).join(format!("v{version}.json"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let name = manifest["members_file"].as_str().unwrap().to_string();
    assert!(name.starts_with(&format!("v{version}-")) && name.ends_with(".parquet"), "{name}");
    name
}

fn members_file(ws: &Path, slice: &str, version: u64) -> std::path::PathBuf {
    ws.join("slices").join(slice).join(members_name(ws, slice, version))
}

#[test]
fn freezing_twice_without_changes_gives_byte_identical_members() {
    let (a, b) = (pets(), pets());
    for s in [&a, &b] {
        ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    }
    let file = |s: &common::Setup| std::fs::read(members_file(&s.ws, "cats", 1)).unwrap();
    assert_eq!(file(&a), file(&b), "two workspaces, same data: same bytes");

    let again = ok(&a.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    assert!(again.contains("false"), "no new version when nothing changed: {again}");
    assert_eq!(slice_files(&a.ws, "cats"), [members_name(&a.ws, "cats", 1).as_str(), "v1.json"]);

    ok(&a.ws, &["slice", "drop", "cats"]);
    ok(&a.ws, &["slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'"]);
    ok(&a.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    assert_eq!(file(&a), file(&b), "re-created and re-frozen: same bytes");
}

#[test]
fn a_tampered_frozen_file_is_detected_on_read() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats"]);
    let path = members_file(&s.ws, "cats", 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = fails(&s.ws, &["sql", "SELECT count(*) FROM slice('cats')"]);
    assert!(err.contains("altered") && err.contains(&members_name(&s.ws, "cats", 1)), "{err}");
    let err = fails(&s.ws, &["slice", "export", "cats", "-f", "csv"]);
    assert!(err.contains("altered"), "{err}");
    // The breakdown decodes only two columns of the file, and still hashes all of it.
    let err = fails(&s.ws, &["slices"]);
    assert!(err.contains("altered"), "{err}");
}

#[test]
fn a_freeze_killed_before_its_manifest_leaves_no_version() {
    let s = pets();
    let out = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .args(["--workspace", s.ws.to_str().unwrap(), "slice", "freeze", "cats"])
        .env("SLICETEST_FAILPOINT", "freeze-before-manifest")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = fails(&s.ws, &["sql", "SELECT * FROM slice('cats')"]);
    assert!(err.contains("no frozen version yet"), "{err}");
    let show = ok(&s.ws, &["sql", "--format", "csv", "SHOW SLICES"]);
    assert!(show.contains("cats,pets,0,"), "{show}");

    let out = ok(&s.ws, &["slice", "freeze", "cats"]);
    assert!(out.contains("| cats  | 1       | 6       |"), "{out}");
    assert_eq!(slice_files(&s.ws, "cats"), [members_name(&s.ws, "cats", 1).as_str(), "v1.json"]);
}

#[test]
fn concurrent_freezes_are_serialised_into_whole_versions() {
    let s = pets();
    let spawn = |seed: &str| {
        Command::new(env!("CARGO_BIN_EXE_slicetest"))
            .args(["--workspace", s.ws.to_str().unwrap(), "slice", "freeze", "cats", "--holdout", "0.5", "--seed"])
            .arg(seed)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = ["1", "2", "1"].into_iter().map(spawn).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Seeds 1 and 2 differ, so 2 or 3 versions exist depending on the order; each is whole.
    let files = slice_files(&s.ws, "cats");
    assert!(files.iter().all(|f| !f.starts_with(".tmp")), "{files:?}");
    let versions = files.iter().filter(|f| f.ends_with(".json")).count();
    assert!((2..=3).contains(&versions), "{files:?}");
    for v in 1..=versions {
        let n = sql_csv(&s.ws, &format!("SELECT count(*) AS n FROM slice('cats', {v})"));
        assert_eq!(n, "n\n6\n");
    }
}

#[test]
fn diff_shows_new_matches_and_freezing_again_makes_the_next_version() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats"]);
    write_image(&s.src.join("train/cat/c9.png"), 4, 4, 99);
    std::fs::remove_file(s.src.join("train/dog/d0.png")).unwrap();
    ok(&s.ws, &["ingest", "-d", "pets", "--quiet", s.src.to_str().unwrap()]);
    let diff = ok(&s.ws, &["slice", "diff", "cats"]);
    assert!(diff.contains("added") && diff.contains("train/cat/c9.png"), "{diff}");
    assert!(!diff.contains("removed"), "{diff}");

    let out = ok(&s.ws, &["slice", "freeze", "cats"]);
    assert!(out.contains("| cats  | 2       | 7       |"), "{out}");
    assert!(ok(&s.ws, &["slice", "diff", "cats"]).contains("no rows"));
    assert_eq!(sql_csv(&s.ws, "SELECT count(*) AS n FROM slice('cats', 1)"), "n\n6\n", "v1 is unchanged");
}

#[test]
fn export_writes_members_with_uri_label_split_and_holdout() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "1"]);
    let csv = ok(&s.ws, &["slice", "export", "cats", "-f", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "image_id,uri,label,split,holdout,sha256,width,height,format,bytes");
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!((first[0], first[2], first[3], first[4]), ("test/cat/c4.png", "cat", "test", "true"));
    assert!(first[1].ends_with("/src/test/cat/c4.png"), "{first:?}");
    assert_eq!(csv.lines().count(), 7);

    let coco: serde_json::Value = serde_json::from_str(&ok(&s.ws, &["slice", "export", "cats", "-f", "coco"])).unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 6);
    assert_eq!(coco["categories"], serde_json::json!([{"id": 1, "name": "cat"}]));
    assert_eq!(coco["images"][0]["width"], 4);

    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("cats.parquet");
    ok(&s.ws, &["slice", "export", "cats", "-o", parquet.to_str().unwrap()]);
    assert!(std::fs::read(&parquet).unwrap().starts_with(b"PAR1"));
}

#[test]
fn holdout_export_never_puts_a_held_out_image_in_the_training_set() {
    let s = pets();
    // "cats" holds out everything; "all" holds out nothing, yet keeps the cats in it.
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "1"]);
    ok(&s.ws, &["slice", "create", "all", "SELECT image_id FROM images"]);
    ok(&s.ws, &["slice", "freeze", "all"]);
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&s.ws, &["holdout", "export", "-o", dir.path().to_str().unwrap(), "-f", "csv"]);
    assert!(out.contains("holdout: 6 images") && out.contains("train: 1 images"), "{out}");
    let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
    assert!(!train.contains("cat/"), "{train}");
    assert!(train.contains("train/dog/d0.png"), "{train}");
}

#[test]
fn the_breakdown_flags_slices_with_too_few_test_samples() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats"]);
    ok(&s.ws, &["slice", "create", "dogs", "SELECT image_id FROM images WHERE label = 'dog'"]);
    let out = ok(&s.ws, &["slices", "--min-test", "2"]);
    assert!(
        out.contains("| cats  | v1      | 6       | 4 (67%) | 0 (0%) | 2 (33%) | 0 (0%)  | 75.00%   | ok "),
        "{out}"
    );
    assert!(out.contains("not frozen"), "{out}");
    let out = ok(&s.ws, &["slices", "--min-test", "3"]);
    assert!(out.contains("only 2 test+holdout (< 3)") && out.contains("1 slice(s) have too few"), "{out}");
}

#[test]
fn bad_slice_names_and_queries_are_refused() {
    let s = pets();
    let err = fails(&s.ws, &["slice", "create", "../../etc", "SELECT image_id FROM images"]);
    assert!(err.contains("invalid name \"../../etc\""), "{err}");
    let err = fails(&s.ws, &["slice", "create", "x", "SELECT label FROM images"]);
    assert!(err.contains("must return an image_id column"), "{err}");
    let err = fails(&s.ws, &["slice", "create", "x", "DROP TABLE images"]);
    assert!(err.contains("not supported"), "{err}");
    let err = fails(&s.ws, &["slice", "freeze", "cast"]);
    assert!(err.contains("did you mean \"cats\""), "{err}");
    assert!(!s.ws.join("slices/x.toml").exists());
}

#[test]
fn describe_lists_every_frozen_version_with_its_manifest() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats"]);
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "3"]);
    let csv = sql_csv(&s.ws, "DESCRIBE SLICE cats");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "slice,version,members,holdout_members,holdout_share,seed,dataset_versions,member_hash,frozen_at"
    );
    assert!(lines[1].starts_with("cats,1,6,0,0.0,0,pets@1,"), "{csv}");
    assert!(lines[2].starts_with("cats,2,6,"), "{csv}");
    assert_eq!(lines.len(), 3);
    let jsonl = ok(&s.ws, &["slice", "export", "cats", "--version", "1", "-f", "jsonl"]);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["image_id"], "test/cat/c4.png");
    assert_eq!(first["holdout"], false);
}
