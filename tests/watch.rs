//! `slicetest watch` through the binary: a folder that fills up is ingested, embedded and
//! tagged as it grows, each slice's change is printed and posted to a real webhook
//! receiver on a loopback port.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{fails, ok, setup};

const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/tiny-clip");
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/photos");

/// A webhook receiver: every POST body, parsed, arrives on the channel.
fn receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut length) = (String::new(), 0usize);
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
            if send.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, receive)
}

/// A dataset `photos` of two photos, tagged with `pixels`, embedded, with two slices.
fn workspace() -> common::Setup {
    let s = setup();
    for name in ["dog.jpg", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), s.src.join(name)).unwrap();
    }
    ok(&s.ws, &["ingest", "--quiet", "--dataset", "photos", s.src.to_str().unwrap()]);
    ok(&s.ws, &["tag", "--tagger", "pixels", "--quiet"]);
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--device", "cpu", "--quiet"]);
    ok(&s.ws, &["slice", "create", "tagged", "SELECT image_id FROM images WHERE brightness IS NOT NULL"]);
    ok(&s.ws, &["slice", "create", "generated", "SELECT image_id FROM images WHERE image_id LIKE 'gen-%'"]);
    ok(&s.ws, &["slice", "create", "photos_only", "SELECT image_id FROM images WHERE image_id NOT LIKE 'gen-%'"]);
    s
}

fn add_generated(src: &Path, from: u8, to: u8) {
    for i in from..to {
        slicetest_test_support::write_image(&src.join(format!("gen-{i:02}.png")), 32 + u32::from(i), 24, i);
    }
}

#[test]
fn one_look_ingests_embeds_tags_and_posts_each_slice_change() {
    let s = workspace();
    let (url, hooks) = receiver();
    add_generated(&s.src, 0, 3);
    let watch = ["watch", s.src.to_str().unwrap(), "--dataset", "photos", "--once", "--quiet", "--webhook", &url];
    let out = ok(&s.ws, &watch);
    assert!(out.contains("photos v2: 3 new, 0 changed, 0 rejected (5 images; read 5 of 5 files)"), "{out}");
    assert!(out.contains("embedded 3 images (tiny-clip); pixels tagged 3"), "{out}");
    assert!(out.contains("slice generated: 0 → 3 (+3, −0)"), "{out}");
    assert!(out.contains("slice tagged: 2 → 5 (+3, −0)"), "{out}");
    assert!(out.contains("1 slices unchanged"), "{out}");

    let message = hooks.recv_timeout(Duration::from_secs(10)).expect("the webhook was called");
    assert_eq!(message["event"], "slicetest.intake");
    assert_eq!((message["dataset"].as_str(), message["version"].as_u64()), (Some("photos"), Some(2)));
    assert_eq!(message["embeddings"][0]["embedded"], 3);
    assert_eq!(message["taggers"][0]["tagger"], "pixels");
    let generated = &message["slices"][0];
    assert_eq!(generated["slice"], "generated");
    assert_eq!(generated["added_ids"], serde_json::json!(["gen-00.png", "gen-01.png", "gen-02.png"]));
    assert_eq!((generated["before"].as_u64(), generated["after"].as_u64()), (Some(0), Some(3)));
    // The new images are in SQL with their tags and vectors.
    let counts =
        common::sql_csv(&s.ws, "SELECT count(brightness) AS t, (SELECT count(*) FROM embeddings) AS e FROM images");
    assert_eq!(counts, "t,e\n5,5\n");

    // Nothing new: said, and no message.
    let out = ok(&s.ws, &watch);
    assert!(out.contains("photos: nothing new (v2, 5 images; read 5 of 5 files)"), "{out}");
    assert!(hooks.recv_timeout(Duration::from_millis(500)).is_err(), "no message without a new version");

    // A member whose bytes changed stays in its slices, but their frozen versions test its
    // old content: each slice says so, and the message names it.
    std::fs::copy(Path::new(PHOTOS).join("scream.jpg"), s.src.join("dog.jpg")).unwrap();
    let out = ok(&s.ws, &watch);
    assert!(out.contains("photos v3: 0 new, 1 changed, 0 rejected"), "{out}");
    assert!(out.contains("slice photos_only: 2 → 2 (+0, −0, 1 member changed content)"), "{out}");
    assert!(out.contains("slice tagged: 5 → 5 (+0, −0, 1 member changed content)"), "{out}");
    assert!(out.contains("1 slices unchanged"), "{out}");
    let message = hooks.recv_timeout(Duration::from_secs(10)).expect("the change was posted");
    let photos_only = &message["slices"][0];
    assert_eq!(photos_only["slice"], "photos_only");
    assert_eq!((photos_only["changed"].as_u64(), photos_only["added"].as_u64()), (Some(1), Some(0)));
    assert_eq!(photos_only["changed_ids"], serde_json::json!(["dog.jpg"]));

    // A file deleted from the source: the dataset keeps the image, and the look says so.
    std::fs::remove_file(s.src.join("gen-00.png")).unwrap();
    let out = ok(&s.ws, &watch);
    let note = format!("1 image of photos not in {}; the dataset keeps them", s.src.display());
    assert!(out.contains("photos: nothing new (v3, 5 images") && out.contains(&note), "{out}");

    // A file that is not an image is named with its reason, as `ingest` names it, even in
    // a look that finds nothing else.
    std::fs::write(s.src.join("broken.png"), b"half a copy").unwrap();
    let look = common::slicetest(&s.ws, &watch);
    assert!(look.status.success());
    let err = String::from_utf8_lossy(&look.stderr);
    assert!(err.contains("rejected broken.png: not an image"), "{err}");
    std::fs::remove_file(s.src.join("broken.png")).unwrap();

    // With --once there is no next look to post again: a receiver that is down fails it.
    add_generated(&s.src, 3, 4);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = format!("http://{closed}/hook");
    let once = ["watch", s.src.to_str().unwrap(), "--dataset", "photos", "--once", "--quiet", "--no-embed"];
    let err = fails(&s.ws, &[&once[..], &["--webhook", &dead]].concat());
    assert!(err.contains(&format!("webhook {dead}")), "{err}");
}

#[test]
fn a_running_watch_picks_up_new_files_and_a_dead_webhook_does_not_stop_it() {
    let s = workspace();
    let (url, hooks) = receiver();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .arg("--workspace")
        .arg(&s.ws)
        .args(["watch", s.src.to_str().unwrap(), "--dataset", "photos", "--every", "1s", "--quiet", "--no-embed"])
        .args(["--webhook", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("photos: nothing new (v1, 2 images; read 2 of 2 files)"), "{first}");
    add_generated(&s.src, 0, 2);
    let message = hooks.recv_timeout(Duration::from_secs(60)).expect("the new files were reported");
    // That look read only what was new: the two files of v1 were known from the first.
    let look = lines.map(Result::unwrap).find(|l| l.contains("photos v2:")).unwrap();
    let read = look.split("; read ").nth(1).unwrap().trim_end_matches(" files)");
    let (read, of) = read.split_once(" of ").unwrap();
    let (read, of): (usize, usize) = (read.parse().unwrap(), of.parse().unwrap());
    assert!(read + 2 <= of && of >= 3, "{look}");
    assert_eq!((message["version"].as_u64(), message["added"].as_u64()), (Some(2), Some(2)));
    assert_eq!(message["embeddings"], serde_json::json!([]), "--no-embed");
    assert_eq!(message["taggers"][0]["tagged"], 2);
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn bad_sources_intervals_and_webhooks_are_refused_up_front() {
    let s = setup();
    let missing = s.src.join("nope");
    let err = fails(&s.ws, &["watch", missing.to_str().unwrap(), "--once"]);
    assert!(err.contains("no such folder or file to watch"), "{err}");
    let err = fails(&s.ws, &["watch", s.src.to_str().unwrap(), "--every", "5d"]);
    assert!(err.contains("give seconds, or a number with s, m or h"), "{err}");
    let err = fails(&s.ws, &["watch", s.src.to_str().unwrap(), "--webhook", "ftp://x"]);
    assert!(err.contains("http:// or https:// URL"), "{err}");
}
