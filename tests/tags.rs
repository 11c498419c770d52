//! `slicetest tag` and `slicetest tag import` through the binary, on real photos (the
//! embed crate's fixtures) and on bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fails, ok, setup, sql_csv};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/photos");
const FACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/faces");
const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/tiny-clip");

fn copy_images(from: &str, to: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ["png", "jpg", "jpeg", "webp"].contains(&ext) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&path, to.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    names
}

/// The rows of a one-column CSV result.
fn column(csv: &str) -> Vec<String> {
    csv.lines().skip(1).map(str::to_string).collect()
}

/// Every file under the dataset's tags/ and detections/ (all generations), with its bytes.
fn tag_files(ws: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["tags", "detections"] {
        walk(&ws.join("datasets/src").join(dir), &mut files);
    }
    files.sort();
    files
}

#[test]
fn faces_found_in_sql_are_the_faces_facenet_pytorch_finds() {
    let s = setup();
    copy_images(FACES, &s.src);
    copy_images(PHOTOS, &s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let out = ok(&s.ws, &["tag", "--tagger", "faces", "--quiet"]);
    assert!(out.contains("faces tagged"), "{out}");

    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(FACES).join("reference.json")).unwrap()).unwrap();
    let mut expected: Vec<(String, usize)> = reference["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let file = Path::new(p["file"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (file, p["faces"].as_array().unwrap().len())
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    expected.sort();
    let with_faces = column(&sql_csv(&s.ws, "SELECT image_id FROM images WHERE num_faces >= 1 ORDER BY image_id"));
    let names: Vec<&String> = expected.iter().map(|(f, _)| f).collect();
    assert_eq!(with_faces.iter().collect::<Vec<_>>(), names);
    assert!(
        with_faces.iter().any(|f| f.starts_with("astronaut")) && with_faces.iter().any(|f| f.starts_with("camera"))
    );
    // The photos without people have none.
    for none in ["coins.png", "dog.jpg", "microaneurysms.png", "scream.jpg"] {
        assert!(!with_faces.contains(&none.to_string()), "{none}");
    }
    // Boxes are in `detections`, as many per image as facenet-pytorch found.
    let counts = column(&sql_csv(
        &s.ws,
        "SELECT image_id || ':' || count(*) FROM detections WHERE label = 'face' GROUP BY image_id ORDER BY image_id",
    ));
    let want: Vec<String> = expected.iter().map(|(f, n)| format!("{f}:{n}")).collect();
    assert_eq!(counts, want);
    let consistent = sql_csv(
        &s.ws,
        "SELECT count(*) FROM images WHERE num_faces <> (SELECT count(*) FROM detections d WHERE d.image_id = images.image_id)",
    );
    assert_eq!(column(&consistent), ["0"]);
}

#[test]
fn tagging_resumes_skips_what_is_done_and_retags_changed_images() {
    let s = setup();
    for name in ["coins.png", "dog.jpg", "microaneurysms.png", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), s.src.join(name)).unwrap();
    }
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let pixels = ["tag", "--tagger", "pixels", "--quiet", "--chunk-size", "1", "--checkpoint-secs", "0"];

    // Killed right after its first save: one image stored, the rest not.
    let killed = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .arg("--workspace")
        .arg(&s.ws)
        .args(pixels)
        .env("SLICETEST_FAILPOINT", "tag-after-publish")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert_eq!(column(&sql_csv(&s.ws, "SELECT count(brightness) FROM images")), ["1"]);

    let out = ok(&s.ws, &pixels);
    assert!(out.contains("pixels tagged 3 images") && out.contains("1 already tagged"), "{out}");
    let out = ok(&s.ws, &pixels);
    assert!(out.contains("pixels tagged 0 images") && out.contains("4 already tagged"), "{out}");
    let before = column(&sql_csv(&s.ws, "SELECT brightness FROM images WHERE image_id = 'dog.jpg'"));
    // The tagged images were written as one table: a tag filter reads it without a join,
    // and answers what the join answers.
    let wide = s.ws.join("datasets/src/wide");
    let wide_files = || std::fs::read_dir(&wide).map_or(0, |d| d.count());
    assert_eq!(wide_files(), 1);
    let filter = "SELECT image_id, brightness FROM images WHERE brightness > 0.3 ORDER BY image_id";
    let plan = sql_csv(&s.ws, &format!("EXPLAIN {filter}"));
    assert!(!plan.contains("HashJoinExec") && plan.contains("wide"), "{plan}");
    let materialised = sql_csv(&s.ws, filter);
    let file = std::fs::read_dir(&wide).unwrap().next().unwrap().unwrap().path();
    let kept = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(sql_csv(&s.ws, &format!("EXPLAIN {filter}")).contains("HashJoinExec"), "without it, the join");
    assert_eq!(sql_csv(&s.ws, filter), materialised);
    std::fs::write(&file, kept).unwrap();

    // dog.jpg now holds another photo: after the re-ingest its old tags no longer apply
    // (the table written for the old version is not read) ...
    std::fs::copy(Path::new(PHOTOS).join("scream.jpg"), s.src.join("dog.jpg")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    assert_eq!(column(&sql_csv(&s.ws, "SELECT count(brightness) FROM images")), ["3"]);
    // ... and the next run tags it alone, as it is now, and writes the table again.
    let out = ok(&s.ws, &pixels);
    assert!(out.contains("pixels tagged 1 images") && out.contains("3 already tagged"), "{out}");
    assert_eq!(wide_files(), 1, "the old version's table is removed");
    assert_eq!(column(&sql_csv(&s.ws, "SELECT count(brightness) FROM images")), ["4"]);
    let after = column(&sql_csv(&s.ws, "SELECT brightness FROM images WHERE image_id = 'dog.jpg'"));
    let scream = column(&sql_csv(&s.ws, "SELECT brightness FROM images WHERE image_id = 'scream.jpg'"));
    assert_ne!(before, after);
    assert_eq!(after, scream);
    // Provenance is listed.
    let list = ok(&s.ws, &["tag", "list"]);
    assert!(list.contains("pixels") && list.contains("brightness"), "{list}");
}

#[test]
fn odd_images_get_tags_and_undecodable_ones_are_reported_as_null() {
    let s = setup();
    image::GrayImage::from_pixel(1, 1, image::Luma([7])).save(s.src.join("one.png")).unwrap();
    image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y) as u8])).save(s.src.join("gray.png")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10])).save(s.src.join("huge.png")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    // After ingest the file is replaced by a PNG header claiming 20000×20000 pixels: not
    // the bytes ingested, so no tag is computed from it.
    let ingested = std::fs::read(s.src.join("huge.png")).unwrap();
    let mut bytes = ingested.clone();
    bytes[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    std::fs::write(s.src.join("huge.png"), bytes).unwrap();

    let out = ok(&s.ws, &["tag", "--tagger", "pixels,faces", "--quiet"]);
    assert!(out.contains("not tagged huge.png") && out.contains("changed since it was ingested"), "{out}");
    let rows =
        sql_csv(&s.ws, "SELECT image_id, brightness IS NULL, is_grayscale, num_faces FROM images ORDER BY image_id");
    assert_eq!(column(&rows), ["gray.png,false,true,0", "huge.png,true,,", "one.png,false,true,0"]);
    // A failure is not remembered: with the file back, the next run tags it.
    std::fs::write(s.src.join("huge.png"), ingested).unwrap();
    let out = ok(&s.ws, &["tag", "--tagger", "pixels", "--quiet"]);
    assert!(out.contains("pixels tagged 1 images") && out.contains("2 already tagged"), "{out}");
    let rows = sql_csv(&s.ws, "SELECT brightness IS NULL, is_grayscale FROM images WHERE image_id = 'huge.png'");
    assert_eq!(column(&rows), ["false,false"]);
    let one =
        sql_csv(&s.ws, "SELECT round(brightness * 255), contrast, sharpness FROM images WHERE image_id = 'one.png'");
    assert_eq!(column(&one), ["7.0,0.0,0.0"]);
}

#[test]
fn imports_validate_ids_and_types_and_a_failed_one_changes_nothing() {
    let s = setup();
    for name in ["coins.png", "dog.jpg", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), s.src.join(name)).unwrap();
    }
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    ok(&s.ws, &["tag", "--tagger", "pixels", "--quiet"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };

    // A per-image CSV and a per-object JSON-lines file.
    let team = write("team.csv", "image_id,Weather,num_people,night\ndog.jpg,sunny,0,false\nscream.jpg,dusk,1,true\n");
    let out = ok(&s.ws, &["tag", "import", &team]);
    assert!(out.contains("imported team (2 images) as columns weather, num_people, night"), "{out}");
    let boxes = write(
        "yolo.jsonl",
        "{\"image_id\":\"scream.jpg\",\"label\":\"person\",\"score\":0.9,\"x0\":10,\"y0\":20,\"x1\":100,\"y1\":300}\n\
         {\"image_id\":\"dog.jpg\",\"label\":\"dog\",\"score\":0.8,\"x0\":1,\"y0\":2,\"x1\":3,\"y1\":4}\n",
    );
    let out = ok(&s.ws, &["tag", "import", &boxes]);
    assert!(out.contains("2 boxes") && out.contains("num_dog, num_person"), "{out}");
    let rows = sql_csv(&s.ws, "SELECT image_id, weather, num_people, night, num_person FROM images ORDER BY image_id");
    assert_eq!(column(&rows), ["coins.png,,,,0", "dog.jpg,sunny,0,false,0", "scream.jpg,dusk,1,true,1"]);

    let before = tag_files(&s.ws);
    for (name, text, expect) in [
        (
            "unknown.csv",
            "image_id,x\ndog.jpg,1\nnope.jpg,2\n",
            "1 image_id(s) are not images of dataset src (version 1): \"nope.jpg\" (row 2)",
        ),
        ("twice.csv", "image_id,x\ndog.jpg,1\ndog.jpg,2\n", "image_id \"dog.jpg\" appears twice (rows 1 and 2)"),
        ("noid.csv", "id,x\ndog.jpg,1\n", "no image_id column (columns: id, x)"),
        ("nested.jsonl", "{\"image_id\":\"dog.jpg\",\"boxes\":[1,2]}\n", "column \"boxes\" has type"),
        ("coords.csv", "image_id,label,x0,y0,x1,y1\ndog.jpg,dog,left,2,3,4\n", "column \"x0\" must be a number"),
        ("flipped.csv", "image_id,label,x0,y0,x1,y1\ndog.jpg,dog,5,2,3,4\n", "row 1: box (5, 2, 3, 4)"),
        (
            "clash.csv",
            "image_id,brightness\ndog.jpg,1\n",
            "column \"brightness\" already exists in the images table (from tagger pixels)",
        ),
        (
            "label.csv",
            "image_id,label\ndog.jpg,cat\n",
            "column \"label\" already exists in the images table (from dataset src)",
        ),
        ("empty.csv", "image_id,x\n", "no rows"),
        ("pixels.csv", "image_id,x\ndog.jpg,1\n", "built-in tagger"),
    ] {
        let err = fails(&s.ws, &["tag", "import", &write(name, text)]);
        assert!(err.contains(expect) && err.contains(name), "{name}: {err}");
    }
    assert!(tag_files(&s.ws) == before, "a failed import changed the stored tags");
    // Re-importing replaces; removing drops the columns.
    let team = write("team.csv", "image_id,weather\ndog.jpg,rain\n");
    ok(&s.ws, &["tag", "import", &team]);
    assert_eq!(column(&sql_csv(&s.ws, "SELECT weather FROM images WHERE image_id = 'dog.jpg'")), ["rain"]);
    ok(&s.ws, &["tag", "remove", "team"]);
    let err = fails(&s.ws, &["sql", "SELECT weather FROM images"]);
    assert!(err.contains("weather"), "{err}");
}

#[test]
fn zero_shot_vocabularies_are_checked_and_tag_from_stored_vectors() {
    let s = setup();
    for name in ["coins.png", "dog.jpg", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), s.src.join(name)).unwrap();
    }
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let err = fails(&s.ws, &["tag", "--tagger", "clip"]);
    assert!(err.contains("slicetest embed"), "{err}");
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"]);

    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("animals.toml");
    std::fs::write(&vocab, "[animal]\ncat = []\ndog = [\"a photo of a dog\"]\n").unwrap();
    let err = fails(&s.ws, &["tag", "--vocab", vocab.to_str().unwrap()]);
    assert!(err.contains("animals.toml") && err.contains("animal.cat has an empty prompt list"), "{err}");

    std::fs::write(&vocab, "[animal]\ncat = [\"a photo of a cat\"]\ndog = [\"a photo of a dog\", \"a dog\"]\n")
        .unwrap();
    let out = ok(&s.ws, &["tag", "--vocab", vocab.to_str().unwrap(), "--quiet"]);
    assert!(out.contains("clip-animals tagged 3 images") && out.contains("animal, animal_score"), "{out}");
    let out = ok(&s.ws, &["tag", "--quiet"]);
    assert!(out.contains("clip tagged 3 images") && out.contains("pixels tagged 3"), "{out}");
    let rows = sql_csv(
        &s.ws,
        "SELECT count(*) FROM images WHERE animal IN ('cat', 'dog') AND animal_score >= 0.5 AND weather IS NOT NULL",
    );
    assert_eq!(column(&rows), ["3"]);
    // A changed vocabulary rebuilds its tagger's tags; the default vocabulary's stay.
    std::fs::write(&vocab, "[animal]\ncat = [\"a cat\"]\nbird = [\"a bird\"]\n").unwrap();
    let out = ok(&s.ws, &["tag", "--vocab", vocab.to_str().unwrap(), "--quiet"]);
    assert!(out.contains("tagged 3 images") && out.contains("rebuilt"), "{out}");
    let out = ok(&s.ws, &["tag", "--tagger", "clip", "--quiet"]);
    assert!(out.contains("clip tagged 0 images") && out.contains("3 already tagged"), "{out}");
}
