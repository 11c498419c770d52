//! `embed --shard i/n` and `tag --shard i/n` through the binary: n processes at once over
//! one workspace, one of them killed and run again, give what one unsharded run gives;
//! and a shard run twice at once (a retried shard whose first try still runs) stores no
//! image twice.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{ok, setup, sql_csv};

const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/tiny-clip");
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/photos");
const IMAGES: usize = 16;

/// Four photos and twelve generated images.
fn images(src: &Path) {
    for name in ["coins.png", "dog.jpg", "microaneurysms.png", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), src.join(name)).unwrap();
    }
    for i in 0..12u8 {
        slicetest_test_support::write_image(&src.join(format!("gen-{i:02}.png")), 40 + u32::from(i), 32, i);
    }
}

fn ingested() -> common::Setup {
    let s = setup();
    images(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    s
}

fn spawn(ws: &Path, args: &[&str], failpoint: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slicetest"));
    command.arg("--workspace").arg(ws).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(name) = failpoint {
        command.env("SLICETEST_FAILPOINT", name);
    }
    command.spawn().unwrap()
}

/// Runs the `n` shards of `args` at once, shard `killed` dying at `failpoint`; returns
/// each shard's (success, stdout + stderr).
fn shards_at_once(ws: &Path, args: &[&str], n: usize, killed: usize, failpoint: &str) -> Vec<(bool, String)> {
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let shard = format!("{i}/{n}");
            let mut all = args.to_vec();
            all.extend(["--shard", &shard]);
            spawn(ws, &all, (i == killed).then_some(failpoint))
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        })
        .collect()
}

fn count(csv: &str) -> usize {
    csv.lines().nth(1).unwrap().parse().unwrap()
}

/// The embedding parts of model tiny-clip.
fn embed_parts(ws: &Path) -> usize {
    let dir = std::fs::read_dir(ws.join("datasets/src/embeddings/tiny-clip")).unwrap();
    dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("part-")).count()
}

const VECTORS: &str = "SELECT image_id, array_to_string(vector, ' ') AS v FROM embeddings ORDER BY image_id";

#[test]
fn three_embed_shards_one_killed_and_rerun_store_the_vectors_of_one_run() {
    let embed = ["embed", "--model", TINY_CLIP, "--device", "cpu", "--chunk-size", "2", "--quiet"];
    let one = ingested();
    ok(&one.ws, &embed);
    let expected = sql_csv(&one.ws, VECTORS);
    assert_eq!(expected.lines().count(), IMAGES + 1);

    let sharded = ingested();
    // Shard 2 holds 7 of the 16 ids; it dies after its first part of two images.
    let runs = shards_at_once(&sharded.ws, &embed, 3, 2, "embed-after-part");
    assert!(runs[0].0 && runs[1].0, "{runs:?}");
    assert!(!runs[2].0, "shard 2 was killed: {}", runs[2].1);
    assert_eq!(count(&sql_csv(&sharded.ws, "SELECT count(*) FROM embeddings")), IMAGES - 5);

    let mut rerun = embed.to_vec();
    rerun.extend(["--shard", "2/3"]);
    let out = ok(&sharded.ws, &rerun);
    assert!(out.contains("(shard 2/3): embedded 5 images") && out.contains("2 already embedded"), "{out}");
    assert_eq!(sql_csv(&sharded.ws, VECTORS), expected, "the union of the shards is the unsharded run");
    // Shards never share an image: the same shard again has nothing to do.
    let out = ok(&sharded.ws, &rerun);
    assert!(out.contains("embedded 0 images") && out.contains("7 already embedded"), "{out}");

    // Shards leave their parts of two images each; the unsharded run after the job embeds
    // nothing and merges them into one part, which reads the same.
    let shard_parts = embed_parts(&sharded.ws);
    assert!(shard_parts >= 8, "{shard_parts}");
    let out = ok(&sharded.ws, &embed);
    assert!(out.contains("embedded 0 images") && out.contains(&format!("{IMAGES} already embedded")), "{out}");
    assert!(out.contains(&format!("parts: merged {shard_parts} into 1")), "{out}");
    assert_eq!(embed_parts(&sharded.ws), 1);
    assert_eq!(sql_csv(&sharded.ws, VECTORS), expected);
    let out = ok(&sharded.ws, &embed);
    assert!(!out.contains("parts: merged"), "nothing more to merge: {out}");
    // The unsharded run merged its own parts too.
    assert_eq!(embed_parts(&one.ws), 1);

    // A shard of another job size or an unknown version is refused up front.
    let bad = common::fails(&sharded.ws, &["embed", "--model", TINY_CLIP, "--shard", "3/3"]);
    assert!(bad.contains("expected i/n with 0 <= i < n"), "{bad}");
    let bad = common::fails(&sharded.ws, &["embed", "--model", TINY_CLIP, "--version", "9"]);
    assert!(bad.contains("has no version 9; its versions are 1"), "{bad}");
}

#[test]
fn the_same_embed_twice_at_once_stores_each_image_once() {
    let s = ingested();
    let embed = ["embed", "--model", TINY_CLIP, "--device", "cpu", "--chunk-size", "1", "--quiet"];
    let runs: Vec<Child> = (0..2).map(|_| spawn(&s.ws, &embed, None)).collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Both runs may have embedded an image; search reads it once. Both merged the parts
    // they found when they finished, one possibly removing parts the other was reading.
    let hits = sql_csv(&s.ws, "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM image_search('dog.jpg', 100)");
    assert_eq!(hits, format!("n,d\n{IMAGES},{IMAGES}\n"));
    let rows = sql_csv(&s.ws, "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM embeddings");
    assert_eq!(rows, format!("n,d\n{IMAGES},{IMAGES}\n"));
    assert!(embed_parts(&s.ws) <= 2, "{}", embed_parts(&s.ws));
}

const PIXEL_TAGS: &str = "SELECT image_id, brightness, contrast, saturation, colorfulness, sharpness, entropy, \
                          is_grayscale, aspect_ratio, dominant_color FROM images ORDER BY image_id";

#[test]
fn three_tag_shards_one_killed_and_rerun_store_the_tags_of_one_run() {
    let tag = ["tag", "--tagger", "pixels", "--quiet", "--chunk-size", "1", "--checkpoint-secs", "0"];
    let one = ingested();
    ok(&one.ws, &tag);
    let expected = sql_csv(&one.ws, PIXEL_TAGS);

    let sharded = ingested();
    let runs = shards_at_once(&sharded.ws, &tag, 3, 2, "tag-after-publish");
    assert!(runs[0].0 && runs[1].0 && !runs[2].0, "{runs:?}");
    assert_eq!(count(&sql_csv(&sharded.ws, "SELECT count(brightness) FROM images")), IMAGES - 6);

    let mut rerun = tag.to_vec();
    rerun.extend(["--shard", "2/3"]);
    let out = ok(&sharded.ws, &rerun);
    assert!(out.contains("pixels tagged 6 images") && out.contains("1 already tagged"), "{out}");
    assert_eq!(sql_csv(&sharded.ws, PIXEL_TAGS), expected, "the union of the shards is the unsharded run");
    let list = ok(&sharded.ws, &["tag", "list"]);
    let pixels = list.lines().find(|l| l.contains("pixels")).unwrap_or_default();
    assert!(pixels.split(['|', ' ', '│']).any(|w| w == IMAGES.to_string()), "one row per image: {list}");

    // Compacted into one part: the same tags; a second compaction has nothing to do.
    let parts = |ws: &Path| {
        let dirs = std::fs::read_dir(ws.join("datasets/src/tags/pixels")).unwrap();
        let is_part = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().starts_with("part-");
        dirs.map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().flatten().filter(is_part).count())
            .collect::<Vec<_>>()
    };
    assert!(parts(&sharded.ws)[0] > 3, "{:?}", parts(&sharded.ws));
    let out = ok(&sharded.ws, &["tag", "compact"]);
    // A part per image (--chunk-size 1 --checkpoint-secs 0), the killed shard's included.
    assert!(out.contains(&format!("pixels: {IMAGES} parts → 1 ({IMAGES} rows)")), "{out}");
    assert_eq!(parts(&sharded.ws), [1], "one generation of one part");
    assert_eq!(sql_csv(&sharded.ws, PIXEL_TAGS), expected);
    let out = ok(&sharded.ws, &["tag", "compact"]);
    assert!(out.contains("nothing to compact"), "{out}");
    let err = common::fails(&sharded.ws, &["tag", "compact", "--tagger", "faces"]);
    assert!(err.contains("has no tags named \"faces\"; stored: pixels"), "{err}");
}

#[test]
fn the_same_tag_run_twice_at_once_keeps_one_row_per_image() {
    let one = ingested();
    let tag = ["tag", "--tagger", "pixels", "--quiet", "--chunk-size", "1", "--checkpoint-secs", "0"];
    ok(&one.ws, &tag);
    let expected = sql_csv(&one.ws, PIXEL_TAGS);

    let s = ingested();
    let runs: Vec<Child> = (0..2).map(|_| spawn(&s.ws, &tag, None)).collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(sql_csv(&s.ws, PIXEL_TAGS), expected, "no image twice, the same tags");
    let out = ok(&s.ws, &tag);
    assert!(out.contains("pixels tagged 0 images") && out.contains(&format!("{IMAGES} already tagged")), "{out}");
}
