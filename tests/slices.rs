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
    // Without --format the output's name picks it; a .json name does not say which JSON.
    let named = dir.path().join("cats.CSV");
    ok(&s.ws, &["slice", "export", "cats", "-o", named.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&named).unwrap(), csv);
    let lines = dir.path().join("cats.jsonl");
    ok(&s.ws, &["slice", "export", "cats", "-o", lines.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&lines).unwrap().lines().count(), 6);
    let json = dir.path().join("cats.json");
    let err = fails(&s.ws, &["slice", "export", "cats", "-o", json.to_str().unwrap()]);
    assert!(err.contains("say --format coco (a COCO document) or --format jsonl"), "{err}");
    assert!(!json.exists());
    ok(&s.ws, &["slice", "export", "cats", "-f", "coco", "-o", json.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&json).unwrap().trim(), serde_json::to_string_pretty(&coco).unwrap());
    // The same for sql.
    let counts = dir.path().join("counts.csv");
    ok(
        &s.ws,
        &[
            "sql",
            "SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label",
            "-o",
            counts.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&counts).unwrap(), "label,n\ncat,6\ndog,2\n");
}

#[test]
fn a_dataset_column_named_holdout_does_not_clash_with_the_export_flag() {
    let s = setup();
    let mut manifest = String::from("path,label,holdout\n");
    for i in 0..4 {
        write_image(&s.src.join(format!("i{i}.png")), 4, 4, i);
        manifest += &format!("i{i}.png,cat,{}\n", i % 2 == 0);
    }
    std::fs::write(s.src.join("m.csv"), manifest).unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("m.csv").to_str().unwrap()]);
    ok(&s.ws, &["slice", "create", "all", "SELECT image_id FROM images"]);
    ok(&s.ws, &["slice", "freeze", "all", "--holdout", "1"]);
    let csv = ok(&s.ws, &["slice", "export", "all", "-f", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "image_id,uri,label,split,holdout,sha256,width,height,format,bytes,images_holdout"
    );
    let flags: Vec<(&str, &str)> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[4], cells[10])
        })
        .collect();
    assert_eq!(flags, [("true", "true"), ("true", "false"), ("true", "true"), ("true", "false")]);
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

    // A query that selects no image of the dataset makes an empty test: frozen, and said.
    ok(&s.ws, &["slice", "create", "birds", "SELECT image_id FROM images WHERE label = 'bird'"]);
    let freeze = common::slicetest(&s.ws, &["slice", "freeze", "birds"]);
    assert!(freeze.status.success());
    let err = String::from_utf8_lossy(&freeze.stderr);
    assert!(err.contains("WARNING: birds v1 has no members: its query selects no image of dataset pets"), "{err}");
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

/// The image ids `slice('cats', v)` holds out.
fn held_out(ws: &Path, version: u64) -> Vec<String> {
    let csv = sql_csv(ws, &format!("SELECT image_id FROM slice('cats', {version}) WHERE holdout ORDER BY 1"));
    csv.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn a_plain_refreeze_keeps_the_holdout_and_a_changed_one_is_reported() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    let before = held_out(&s.ws, 1);
    assert!(!before.is_empty() && before.len() < 6, "{before:?}");

    // Nothing changed: the latest version's share and seed, so no new version.
    let out = ok(&s.ws, &["slice", "freeze", "cats"]);
    assert!(out.contains("| cats  | 1       | 6       |") && out.contains("false"), "{out}");
    assert!(out.contains("hold-out 0.5 and seed 7 as in v1"), "{out}");

    // A new cat: version 2 with the same share and seed holds out the same old members.
    write_image(&s.src.join("train/cat/c9.png"), 4, 4, 99);
    ok(&s.ws, &["ingest", "-d", "pets", "--quiet", s.src.to_str().unwrap()]);
    let out = ok(&s.ws, &["slice", "freeze", "cats"]);
    assert!(out.contains("| cats  | 2       | 7       |") && !out.contains("changed"), "{out}");
    let v2 = held_out(&s.ws, 2);
    assert!(before.iter().all(|id| v2.contains(id)), "{before:?} {v2:?}");
    let describe = sql_csv(&s.ws, "DESCRIBE SLICE cats");
    assert!(describe.lines().nth(2).unwrap().contains(",0.5,7,"), "{describe}");

    // The training export never gets them.
    let dir = tempfile::tempdir().unwrap();
    ok(&s.ws, &["holdout", "export", "-o", dir.path().to_str().unwrap(), "-f", "csv"]);
    let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
    assert!(v2.iter().all(|id| !train.contains(id.as_str())), "{train}");

    // A smaller share is allowed, said, and warned about with the number released.
    let run = common::slicetest(&s.ws, &["slice", "freeze", "cats", "--holdout", "0"]);
    assert!(run.status.success());
    let (out, err) = (String::from_utf8(run.stdout).unwrap(), String::from_utf8(run.stderr).unwrap());
    assert!(out.contains("hold-out changed from 0.5 (seed 7) in v2 to 0 (seed 7) in v3"), "{out}");
    assert!(out.contains("seed 7 as in v2"), "{out}");
    let released = format!("WARNING: {} images held out by cats v2 are no longer held out in v3", v2.len());
    assert!(err.contains(&released) && err.contains("hold-out 0.5 and seed 7"), "{err}");
    assert!(held_out(&s.ws, 3).is_empty());

    // And back: the same images held out again (the rule is share, seed and id only).
    let out = ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5"]);
    assert!(out.contains("hold-out changed from 0 (seed 7) in v3 to 0.5 (seed 7) in v4"), "{out}");
    assert_eq!(held_out(&s.ws, 4), v2);
    // A new seed releases some (the warning) unless it holds out the same ones.
    let run = common::slicetest(&s.ws, &["slice", "freeze", "cats", "--seed", "8"]);
    let out = String::from_utf8(run.stdout).unwrap();
    assert!(out.contains("to 0.5 (seed 8) in v5") && out.contains("hold-out 0.5 as in v4"), "{out}");
    let released = v2.iter().filter(|id| !held_out(&s.ws, 5).contains(id)).count();
    let err = String::from_utf8(run.stderr).unwrap();
    assert_eq!(err.contains("WARNING"), released > 0, "{released}: {err}");
}

#[test]
fn images_held_out_that_leave_the_slice_are_warned_about() {
    // A slice over an imported tag: when a re-import moves a held-out image out of the
    // slice, the same share and seed no longer hold it out, and the training export gets
    // it. The freeze must say so, also when the hold-out settings did not change.
    let s = pets();
    let dir = tempfile::tempdir().unwrap();
    let import = |fluffy: &dyn Fn(&str) -> bool| {
        let ids = sql_csv(&s.ws, "SELECT image_id FROM images ORDER BY 1");
        let rows: String = ids.lines().skip(1).map(|id| format!("{id},{}\n", fluffy(id))).collect();
        let path = dir.path().join("coat.csv");
        std::fs::write(&path, format!("image_id,fluffy\n{rows}")).unwrap();
        ok(&s.ws, &["tag", "import", path.to_str().unwrap()]);
    };
    import(&|_| true);
    ok(&s.ws, &["slice", "create", "fluffy", "SELECT image_id FROM images WHERE fluffy"]);
    ok(&s.ws, &["slice", "freeze", "fluffy", "--holdout", "0.5", "--seed", "7"]);
    let held = sql_csv(&s.ws, "SELECT image_id FROM slice('fluffy', 1) WHERE holdout ORDER BY 1");
    let held: Vec<&str> = held.lines().skip(1).collect();
    assert!(held.len() >= 4, "{held:?}");

    // One held-out training image is no longer fluffy: v2 has the same share and seed.
    let gone = held.iter().find(|id| id.starts_with("train/")).expect("a training image held out").to_string();
    import(&|id| id != gone);
    let run = common::slicetest(&s.ws, &["slice", "freeze", "fluffy"]);
    assert!(run.status.success());
    let (out, err) = (String::from_utf8(run.stdout).unwrap(), String::from_utf8(run.stderr).unwrap());
    assert!(!out.contains("hold-out changed"), "{out}");
    assert!(
        err.contains("WARNING: 1 image held out by fluffy v1 is no longer held out in v2 (it is no longer a member)"),
        "{err}"
    );
    assert!(err.contains("only while another slice holds it out") && !err.contains("freeze again"), "{err}");
    // What the warning says is what happens: the export trains on it.
    ok(&s.ws, &["holdout", "export", "-o", dir.path().to_str().unwrap(), "-f", "csv"]);
    let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
    assert!(train.contains(gone.as_str()), "{train}");

    // Both at once: another one leaves, and a smaller share releases the rest.
    let also = held.iter().find(|id| **id != gone).unwrap().to_string();
    import(&|id| id != gone && id != also);
    let csv = sql_csv(&s.ws, "FREEZE SLICE fluffy WITH (holdout = 0)");
    let released = held.len() - 1;
    assert!(csv.contains(&format!(",{released},")), "{csv}");
    assert!(
        csv.contains(&format!(
            "WARNING: {released} images held out by fluffy v2 are no longer held out in v3 \
             (1 no longer a member, {} still members but not held out)",
            released - 1
        )),
        "{csv}"
    );
    assert!(csv.contains(&format!("To keep the {} still members held out, freeze again", released - 1)), "{csv}");
}

#[test]
fn dropping_a_slice_warns_about_the_holdout_only_it_kept() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    let cats = held_out(&s.ws, 1);
    ok(&s.ws, &["slice", "create", "everything", "SELECT image_id FROM images"]);
    ok(&s.ws, &["slice", "freeze", "everything", "--holdout", "1"]);
    // Another slice holds every one of them out: nothing is released.
    let run = common::slicetest(&s.ws, &["slice", "drop", "cats"]);
    let (out, err) = (String::from_utf8(run.stdout).unwrap(), String::from_utf8(run.stderr).unwrap());
    assert!(run.status.success() && out.contains("slice cats dropped") && !err.contains("WARNING"), "{out}{err}");
    // The other way round, the images only `everything` held out are released.
    ok(&s.ws, &["slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'"]);
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    assert_eq!(held_out(&s.ws, 1), cats, "the same rule, the same images");
    let run = common::slicetest(&s.ws, &["slice", "drop", "everything"]);
    let err = String::from_utf8(run.stderr).unwrap();
    let released = 8 - cats.len();
    let warning = format!("WARNING: {released} images held out by everything v1 are held out by no other slice");
    assert!(run.status.success() && err.contains(&warning), "{err}");
    let dir = tempfile::tempdir().unwrap();
    ok(&s.ws, &["holdout", "export", "-o", dir.path().to_str().unwrap(), "-f", "csv"]);
    let holdout = std::fs::read_to_string(dir.path().join("holdout.csv")).unwrap();
    assert_eq!(holdout.lines().count() - 1, cats.len(), "{holdout}");
}

#[test]
fn the_sql_statement_keeps_the_holdout_too() {
    let s = pets();
    sql_csv(&s.ws, "FREEZE SLICE cats WITH (holdout = 0.5, seed = 7)");
    let csv = sql_csv(&s.ws, "FREEZE SLICE cats");
    assert_eq!(csv.lines().nth(1).unwrap(), format!("cats,1,6,{},false,0.5,7,0,", held_out(&s.ws, 1).len()), "{csv}");
    let csv = sql_csv(&s.ws, "FREEZE SLICE cats WITH (holdout = 0.25)");
    let row = csv.lines().nth(1).unwrap();
    assert!(row.starts_with("cats,2,6,") && row.contains(",true,0.25,7,"), "{csv}");
    assert!(row.contains("hold-out changed from 0.5 (seed 7) in v1 to 0.25 (seed 7) in v2"), "{csv}");
}

#[test]
fn a_frozen_version_exports_the_same_rows_after_a_reingest_with_its_tags() {
    let s = pets();
    ok(&s.ws, &["tag", "--tagger", "pixels", "--quiet"]);
    ok(&s.ws, &["slice", "freeze", "cats", "--holdout", "0.5", "--seed", "7"]);
    let export = |version: &str| ok(&s.ws, &["slice", "export", "cats", "--version", version, "-f", "csv"]);
    let v1 = export("1");
    let header = v1.lines().next().unwrap();
    assert!(header.starts_with("image_id,uri,label,split,holdout,sha256,width,height,format,bytes,"), "{header}");
    assert!(header.contains(",brightness,") && header.contains(",sharpness,"), "{header}");
    let brightness = header.split(',').position(|c| c == "brightness").unwrap();
    assert!(v1.lines().skip(1).all(|l| !l.split(',').nth(brightness).unwrap().is_empty()), "{v1}");
    let frozen_sha = sql_csv(&s.ws, "SELECT sha256 FROM slice('cats', 1) WHERE image_id = 'train/cat/c0.png'");

    // c0 gets other bytes and a larger size; the re-ingest makes dataset version 2.
    write_image(&s.src.join("train/cat/c0.png"), 8, 8, 42);
    ok(&s.ws, &["ingest", "-d", "pets", "--quiet", s.src.to_str().unwrap()]);
    assert_eq!(export("1"), v1, "a frozen version's export never changes with the dataset");
    assert!(v1.contains(frozen_sha.lines().nth(1).unwrap()), "{v1}");
    let diff = ok(&s.ws, &["slice", "diff", "cats"]);
    assert!(diff.contains("changed") && diff.contains("train/cat/c0.png"), "{diff}");

    // Frozen again: version 2 has c0's new bytes, which nobody tagged yet (NULL).
    ok(&s.ws, &["slice", "freeze", "cats"]);
    let v2 = export("2");
    let c0 = v2.lines().find(|l| l.starts_with("train/cat/c0.png,")).unwrap();
    let cells: Vec<&str> = c0.split(',').collect();
    assert_eq!((cells[6], cells[7]), ("8", "8"), "{c0}");
    assert!(cells[brightness].is_empty(), "{c0}");
    assert!(!frozen_sha.contains(cells[5]), "{c0}");
    assert_eq!(export("1"), v1);
}

#[test]
fn queries_ending_in_a_comment_or_semicolon_work_everywhere() {
    let s = pets();
    for (name, query) in [
        ("cmt", "SELECT DISTINCT image_id FROM images WHERE label = 'cat' -- cats only; all of them"),
        ("semi", "SELECT DISTINCT image_id FROM images WHERE label = 'cat';"),
        ("both", "SELECT DISTINCT image_id FROM images WHERE label = 'cat' ; -- cats\n  ;  "),
        ("plain", "SELECT image_id FROM images WHERE label = 'cat' -- the common shape"),
    ] {
        ok(&s.ws, &["slice", "create", name, query]);
        let out = ok(&s.ws, &["slice", "freeze", name, "--holdout", "0.5"]);
        assert!(out.contains("| 1       | 6       |"), "{name}: {out}");
        assert!(ok(&s.ws, &["slice", "diff", name]).contains("no rows"), "{name}");
        let csv = ok(&s.ws, &["slice", "export", name, "-f", "csv"]);
        assert_eq!(csv.lines().count(), 7, "{name}: {csv}");
    }
    sql_csv(&s.ws, "CREATE SLICE cmt2 AS SELECT DISTINCT image_id FROM images WHERE label='dog' -- dogs only");
    let csv = sql_csv(&s.ws, "FREEZE SLICE cmt2");
    assert!(csv.lines().nth(1).unwrap().starts_with("cmt2,1,2,"), "{csv}");
    // Stored without the trailing semicolons; the comment stays as written.
    let show = sql_csv(&s.ws, "SHOW SLICES");
    assert!(show.lines().find(|l| l.starts_with("semi,")).unwrap().ends_with("WHERE label = 'cat'"), "{show}");
    assert!(show.lines().find(|l| l.starts_with("cmt2,")).unwrap().ends_with("-- dogs only"), "{show}");
    // A `--` or `;` inside a string is not a comment or the end.
    ok(&s.ws, &["slice", "create", "dashes", "SELECT image_id FROM images WHERE label <> '--;'"]);
    ok(&s.ws, &["slice", "freeze", "dashes"]);
    assert_eq!(sql_csv(&s.ws, "SELECT count(*) AS n FROM slice('dashes')"), "n\n8\n");
}

#[test]
fn a_query_whose_image_id_is_not_a_string_is_refused_at_create() {
    let s = pets();
    let err = fails(&s.ws, &["slice", "create", "agg", "SELECT count(*) AS image_id FROM images"]);
    assert!(err.contains("must return image_id as a string") && err.contains("its image_id is Int64"), "{err}");
    let err = fails(&s.ws, &["sql", "CREATE SLICE agg AS SELECT width AS image_id FROM images"]);
    assert!(err.contains("its image_id is"), "{err}");
    let err = fails(
        &s.ws,
        &["slice", "create", "two", "SELECT a.image_id, b.image_id FROM images a JOIN images b USING (label)"],
    );
    assert!(err.contains("must return one image_id column, not 2"), "{err}");
    assert!(!s.ws.join("slices/agg.toml").exists() && !s.ws.join("slices/two.toml").exists());
    // A string id of another shape is fine: a dictionary or a view of one.
    ok(&s.ws, &["slice", "create", "cast", "SELECT arrow_cast(image_id, 'Utf8View') AS image_id FROM images"]);
    assert!(ok(&s.ws, &["slice", "freeze", "cast"]).contains("| 8       |"));
}

#[test]
fn a_report_shows_no_nan_for_a_slice_never_frozen() {
    let s = pets();
    ok(&s.ws, &["slice", "freeze", "cats"]);
    ok(&s.ws, &["slice", "create", "dogs", "SELECT image_id FROM images WHERE label = 'dog'"]);
    let truth = sql_csv(&s.ws, "SELECT image_id, label AS predicted FROM images");
    std::fs::write(s.src.join("predictions.csv"), truth).unwrap();
    ok(&s.ws, &["run", "upload", s.src.join("predictions.csv").to_str().unwrap(), "--run", "r", "--model", "m"]);
    let table = ok(&s.ws, &["report", "--run", "r"]);
    assert!(!table.contains("NaN"), "{table}");
    let cells = |line: &str| line.split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>();
    let header = cells(table.lines().find(|l| l.contains("macro-F1")).unwrap());
    let dogs = cells(table.lines().find(|l| l.contains(" dogs ")).unwrap());
    let f1 = header.iter().position(|c| c == "macro-F1").unwrap();
    assert_eq!(dogs[f1], "-", "{table}");
    let json = ok(&s.ws, &["report", "--run", "r", "--format", "json"]);
    assert!(!json.contains("NaN"), "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let dogs = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "dogs").unwrap();
    if let Some(f1) = dogs["classification"].get("macro_f1") {
        assert!(f1["value"].is_null(), "{f1}");
    }
    let html = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "r", "--format", "html", "-o", html.to_str().unwrap()]);
    assert!(!std::fs::read_to_string(&html).unwrap().contains("NaN"));
}
