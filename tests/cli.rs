//! The `slicetest` binary end to end: ingest and query real files; every kind of bad
//! input gives a clear message and leaves no partial version; a killed ingest leaves
//! the previous version intact.

mod common;

use std::process::{Command, Stdio};

use common::{fails, ok, setup, slicetest, sql_csv, version_entries, version_file};
use slicetest_test_support::{image_bytes, write_image};

#[test]
fn ingest_then_query_in_every_output_format() {
    let s = setup();
    write_image(&s.src.join("train/cat/a.png"), 4, 3, 1);
    write_image(&s.src.join("test/dog/b.jpg"), 5, 6, 2);
    let out = ok(&s.ws, &["ingest", "--dataset", "pets", s.src.to_str().unwrap()]);
    assert!(out.contains("pets: version 1 published with 2 images"), "{out}");

    let csv = sql_csv(&s.ws, "SELECT image_id, split, label, width, height, format FROM images ORDER BY image_id");
    assert_eq!(
        csv,
        "image_id,split,label,width,height,format\ntest/dog/b.jpg,test,dog,5,6,jpeg\ntrain/cat/a.png,train,cat,4,3,png\n"
    );
    let json = ok(&s.ws, &["sql", "--format", "json", "SELECT label FROM images ORDER BY label"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, serde_json::json!([{"label": "cat"}, {"label": "dog"}]));
    let table = ok(&s.ws, &["sql", "SELECT count(*) AS n FROM images"]);
    assert!(table.contains("| n |") && table.contains("| 2 |"), "{table}");
    let out_file = s.src.join("out.parquet");
    ok(&s.ws, &["sql", "--format", "parquet", "--output", out_file.to_str().unwrap(), "SELECT * FROM images"]);
    assert_eq!(&std::fs::read(&out_file).unwrap()[..4], b"PAR1");
    let arrow = slicetest(&s.ws, &["sql", "--format", "arrow", "SELECT 1 AS x"]).stdout;
    assert_eq!(&arrow[..4], &[0xff, 0xff, 0xff, 0xff], "IPC stream continuation marker");

    let list = ok(&s.ws, &["datasets"]);
    assert!(list.contains("pets (default)"), "{list}");
    let describe = ok(&s.ws, &["describe", "pets"]);
    assert!(describe.contains("images        2") && describe.contains("| sha256"), "{describe}");
}

#[test]
fn reingest_is_idempotent_and_new_files_make_a_new_version() {
    let s = setup();
    write_image(&s.src.join("a.png"), 4, 3, 1);
    let path = s.src.to_str().unwrap();
    ok(&s.ws, &["ingest", "-d", "ds", path]);
    let again = ok(&s.ws, &["ingest", "-d", "ds", path]);
    assert!(again.contains("unchanged, still version 1"), "{again}");
    assert_eq!(version_entries(&s.ws, "ds"), ["1"]);

    write_image(&s.src.join("b.png"), 2, 2, 2);
    let more = ok(&s.ws, &["ingest", "-d", "ds", path]);
    assert!(more.contains("version 2 published with 2 images (1 added, 0 changed, 0 kept)"), "{more}");
    assert_eq!(sql_csv(&s.ws, "SELECT count(*) AS n FROM images"), "n\n2\n");
    // Version 1 is still there, unchanged.
    let v1 = ok(&s.ws, &["describe", "ds", "--version", "1"]);
    assert!(v1.contains("images        1"), "{v1}");
}

#[test]
fn a_photo_stored_sideways_is_ingested_upright() {
    // A 192x144 JPEG whose EXIF orientation (6) says it is shown turned a quarter: a
    // phone's portrait photo. Its width and height are the upright image's, in both
    // verification modes, as the reference (PIL's exif_transpose) has them.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/pixels/oriented/dog_192x144_6.jpg");
    let s = setup();
    std::fs::copy(fixture, s.src.join("portrait.jpg")).unwrap();
    let path = s.src.to_str().unwrap();
    ok(&s.ws, &["ingest", "-d", "full", path]);
    ok(&s.ws, &["ingest", "-d", "header", "--verify", "header", path]);
    for dataset in ["full", "header"] {
        let sql = format!("SELECT width, height FROM {dataset}.images");
        assert_eq!(sql_csv(&s.ws, &sql), "width,height\n144,192\n", "{dataset}");
    }
}

#[test]
fn corrupt_files_are_reported_and_the_rest_is_ingested() {
    let s = setup();
    write_image(&s.src.join("good.png"), 4, 4, 1);
    let png = image_bytes(64, 64, 3, image::ImageFormat::Png);
    std::fs::write(s.src.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(s.src.join("text.jpg"), "I am not a JPEG").unwrap();
    let out = slicetest(&s.ws, &["ingest", "-d", "ds", "--quiet", s.src.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("version 1 published with 1 images"), "{stdout}");
    assert!(stderr.contains("2 items rejected"), "{stderr}");
    assert!(
        stderr.contains("truncated.png: truncated image") || stderr.contains("truncated.png: corrupt image"),
        "{stderr}"
    );
    assert!(stderr.contains("text.jpg: not an image"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version_file(&s.ws, "ds", 1, "report_file")).unwrap()).unwrap();
    assert_eq!(report["rejected"].as_array().unwrap().len(), 2);
}

#[test]
fn strict_mode_refuses_a_partial_ingest_and_writes_nothing() {
    let s = setup();
    write_image(&s.src.join("good.png"), 4, 4, 1);
    std::fs::write(s.src.join("text.jpg"), "nope").unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "ds", "--strict", s.src.to_str().unwrap()]);
    assert!(err.contains("--strict: 1 of 2 items were rejected, so nothing was ingested"), "{err}");
    assert!(version_entries(&s.ws, "ds").is_empty());
}

#[test]
fn only_bad_files_is_an_error_with_no_version() {
    let s = setup();
    std::fs::write(s.src.join("text.jpg"), "nope").unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "ds", s.src.to_str().unwrap()]);
    assert!(err.contains("nothing ingested") && err.contains("text.jpg: not an image"), "{err}");
    assert!(version_entries(&s.ws, "ds").is_empty());
}

#[test]
fn an_empty_folder_is_a_clear_error() {
    let s = setup();
    std::fs::create_dir(s.src.join("empty")).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "ds", s.src.join("empty").to_str().unwrap()]);
    assert!(err.contains("no image files found"), "{err}");
    assert!(version_entries(&s.ws, "ds").is_empty());
}

#[test]
fn a_manifest_without_a_path_column_is_a_clear_error() {
    let s = setup();
    std::fs::write(s.src.join("m.csv"), "name,label\na.png,cat\n").unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "ds", s.src.join("m.csv").to_str().unwrap()]);
    assert!(err.contains("m.csv: the manifest has no path column") && err.contains("name, label"), "{err}");
    assert!(version_entries(&s.ws, "ds").is_empty());
}

#[test]
fn manifest_paths_outside_the_folder_are_refused() {
    let s = setup();
    write_image(&s.src.join("outside.png"), 4, 4, 1);
    let inner = s.src.join("inner");
    write_image(&inner.join("ok.png"), 4, 4, 2);
    let csv = "path\nok.png\n../outside.png\n/etc/passwd\n";
    std::fs::write(inner.join("m.csv"), csv).unwrap();
    let out = slicetest(&s.ws, &["ingest", "-d", "ds", "--quiet", inner.join("m.csv").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("row 2 (../outside.png): path") && stderr.contains("is outside the folder"), "{stderr}");
    assert!(stderr.contains("row 3 (/etc/passwd): path /etc/passwd is outside the folder"), "{stderr}");
    assert_eq!(sql_csv(&s.ws, "SELECT image_id FROM images"), "image_id\nok.png\n");

    // With only an outside path there is nothing to ingest: an error and no new version.
    std::fs::write(inner.join("bad.csv"), "path\n../outside.png\n").unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "ds2", inner.join("bad.csv").to_str().unwrap()]);
    assert!(err.contains("is outside the folder"), "{err}");
    assert!(version_entries(&s.ws, "ds2").is_empty());
}

#[test]
fn sql_errors_point_at_the_problem() {
    let s = setup();
    write_image(&s.src.join("cat/a.png"), 4, 4, 1);
    ok(&s.ws, &["ingest", "-d", "pets", s.src.to_str().unwrap()]);
    let err = fails(&s.ws, &["sql", "SELECT lable FROM images"]);
    assert!(err.contains("Did you mean 'images.label'"), "{err}");
    let err = fails(&s.ws, &["sql", "SELECT * FROM imagess"]);
    assert!(err.contains("hint: did you mean the table \"images\"?"), "{err}");
    let err = fails(&s.ws, &["sql", "SELECT * FROM pest.images"]);
    assert!(err.contains("hint: there is no dataset \"pest\"; did you mean \"pets\"?"), "{err}");
    let err = fails(&s.ws, &["sql", "COPY (SELECT 1) TO '/tmp/x.csv'"]);
    assert!(err.contains("not supported"), "{err}");
    let err = fails(&s.ws, &["describe", "petz"]);
    assert!(err.contains("no dataset named \"petz\" in this workspace; did you mean \"pets\"?"), "{err}");
}

#[test]
fn a_workspace_that_does_not_exist_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&dir.path().join("nowhere"), &["sql", "SELECT 1"]);
    assert!(err.contains("is not a slicetest workspace") && err.contains("slicetest init"), "{err}");
}

/// A crash at the worst moment (new version fully written, not yet published) leaves
/// version 1 as it was, and the next ingest cleans up and publishes normally.
#[test]
fn an_ingest_killed_before_publishing_leaves_the_previous_version_intact() {
    let s = setup();
    write_image(&s.src.join("a.png"), 4, 4, 1);
    let path = s.src.to_str().unwrap();
    ok(&s.ws, &["ingest", "-d", "ds", path]);
    let images = version_file(&s.ws, "ds", 1, "images_file");
    let before = std::fs::read(&images).unwrap();

    write_image(&s.src.join("b.png"), 4, 4, 2);
    for failpoint in ["ingest-after-parquet", "ingest-before-publish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_slicetest"))
            .args(["--workspace", s.ws.to_str().unwrap(), "ingest", "-d", "ds", path])
            .env("SLICETEST_FAILPOINT", failpoint)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the failpoint {failpoint} aborts the process");
        assert_eq!(version_entries(&s.ws, "ds"), ["1"], "no version 2 published");
        let staged = std::fs::read_dir(s.ws.join("datasets/ds/versions/2")).unwrap().count();
        assert!(staged > 0, "the killed ingest had written files of version 2, without its manifest");
        assert_eq!(sql_csv(&s.ws, "SELECT count(*) AS n FROM images"), "n\n1\n");
    }
    assert_eq!(std::fs::read(&images).unwrap(), before);

    let out = ok(&s.ws, &["ingest", "-d", "ds", path]);
    assert!(out.contains("version 2 published"), "{out}");
    assert_eq!(version_entries(&s.ws, "ds"), ["1", "2"], "the rerun commits version 2");
}

/// A real SIGKILL at an arbitrary point of a long ingest: whatever happened, the
/// workspace holds only complete versions and the query result is one of them.
#[cfg(unix)]
#[test]
fn an_ingest_killed_with_sigkill_leaves_only_complete_versions() {
    let s = setup();
    write_image(&s.src.join("first/a.png"), 4, 4, 0);
    ok(&s.ws, &["ingest", "-d", "ds", s.src.join("first").to_str().unwrap()]);
    let many = s.src.join("many");
    for i in 0..400u32 {
        write_image(&many.join(format!("{i:04}.png")), 32, 32, i as u8);
    }
    for delay_ms in [20u64, 150, 400] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slicetest"))
            .args(["--workspace", s.ws.to_str().unwrap(), "ingest", "-d", "ds", "--quiet", many.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let n = sql_csv(&s.ws, "SELECT count(*) AS n FROM images");
        assert!(n == "n\n1\n" || n == "n\n401\n", "a half-ingested version is visible: {n}");
    }
}
