//! Writers without a lock, as separate processes on one local workspace: ingests and
//! freezes at once each use a number once and lose nothing, and a writer that loses a
//! number to another (held at the failpoint while the other commits) merges again and
//! takes the next one.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{ok, setup, sql_csv, version_entries};
use slicetest_test_support::write_image;

fn spawn(ws: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("slicetest starts")
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn eight_writer_processes_use_each_number_once_and_lose_nothing() {
    let s = setup();
    write_image(&s.src.join("base/b.png"), 4, 4, 200);
    ok(&s.ws, &["ingest", "-d", "ds", "--quiet", s.src.join("base").to_str().unwrap()]);
    ok(&s.ws, &["slice", "create", "all", "SELECT image_id FROM images"]);
    for w in 0..4u8 {
        for i in 0..3u8 {
            write_image(&s.src.join(format!("w{w}/img_{w}_{i}.png")), 4, 4, w * 10 + i);
        }
    }
    let mut children = Vec::new();
    for w in 0..4 {
        let folder = s.src.join(format!("w{w}"));
        children.push((
            format!("ingest {w}"),
            spawn(&s.ws, &["ingest", "-d", "ds", "--quiet", folder.to_str().unwrap()], &[]),
        ));
        children.push((format!("freeze {w}"), spawn(&s.ws, &["slice", "freeze", "all"], &[])));
    }
    for (what, child) in children {
        finish(child, &what);
    }
    assert_eq!(version_entries(&s.ws, "ds"), ["1", "2", "3", "4", "5"], "each number once");
    assert_eq!(sql_csv(&s.ws, "SELECT count(*) AS n FROM images"), "n\n13\n", "no ingest's images lost");
    // Every frozen version is whole: its members read back (hash-checked) and number one
    // of the dataset's version sizes.
    let frozen = ok(&s.ws, &["slice", "show", "all"]);
    let latest = sql_csv(&s.ws, "SELECT max(version) AS v FROM slice('all')");
    let latest: u64 = latest.lines().nth(1).unwrap().parse().unwrap();
    assert!((1..=4).contains(&latest), "{frozen}");
    for v in 1..=latest {
        let n = sql_csv(&s.ws, &format!("SELECT count(*) AS n FROM slice('all', {v})"));
        let n: u64 = n.lines().nth(1).unwrap().parse().unwrap();
        assert!([1, 4, 7, 10, 13].contains(&n), "version {v} has {n} members: {frozen}");
    }
}

#[test]
fn an_ingest_that_loses_its_number_merges_again_and_takes_the_next() {
    let s = setup();
    write_image(&s.src.join("a/one.png"), 4, 4, 1);
    write_image(&s.src.join("b/two.png"), 4, 4, 2);
    write_image(&s.src.join("c/three.png"), 4, 4, 3);
    ok(&s.ws, &["ingest", "-d", "ds", "--quiet", s.src.join("a").to_str().unwrap()]);
    // The first writer stops just before committing version 2 …
    let hold = s.src.join("hold");
    let held = spawn(
        &s.ws,
        &["ingest", "-d", "ds", "--quiet", s.src.join("b").to_str().unwrap()],
        &[("SLICETEST_FAILPOINT", "ingest-before-publish"), ("SLICETEST_FAILPOINT_HOLD", hold.to_str().unwrap())],
    );
    let reached = s.src.join("hold.reached");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reached.exists() {
        assert!(std::time::Instant::now() < deadline, "the held writer never reached its failpoint");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // … while another commits version 2 …
    let out = ok(&s.ws, &["ingest", "-d", "ds", s.src.join("c").to_str().unwrap()]);
    assert!(out.contains("version 2 published"), "{out}");
    // … then it goes on, finds 2 taken, merges onto it and publishes 3 with all three images.
    std::fs::write(&hold, b"").unwrap();
    let out = finish(held, "the held ingest");
    assert_eq!(version_entries(&s.ws, "ds"), ["1", "2", "3"]);
    let ids = sql_csv(&s.ws, "SELECT image_id FROM images ORDER BY image_id");
    assert_eq!(ids, "image_id\none.png\nthree.png\ntwo.png\n", "{out}");
}
