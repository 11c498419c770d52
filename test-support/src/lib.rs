//! slicetest's test fixtures, apart from the libraries (a dev-dependency only): small
//! synthetic inputs for tests and benchmarks — real PNG/JPEG files written to disk, a
//! ready-made two-dataset workspace used by the SQL and API tests, and a planted failure
//! for slice discovery.

use std::io::Cursor;
use std::path::Path;

use slicetest_datasets::import::{ImportOptions, SourceFormat};
use slicetest_datasets::ingest::{IngestOptions, ingest};
use slicetest_datasets::{Result, Workspace};

/// Encodes a `w`×`h` RGB gradient seeded by `seed` in `format`.
pub fn image_bytes(w: u32, h: u32, seed: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(17) ^ seed, (y as u8).wrapping_mul(29), seed.wrapping_add(x as u8)])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encoding to memory");
    out.into_inner()
}

/// Writes an image file at `path` (creating parent folders), format from the extension.
pub fn write_image(path: &Path, w: u32, h: u32, seed: u8) {
    let format = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Png);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create fixture folder");
    std::fs::write(path, image_bytes(w, h, seed, format)).expect("write fixture image");
}

/// Writes an 8-bit grayscale PNG label map (a class id per pixel, row-major).
pub fn write_label_map(path: &Path, w: u32, h: u32, labels: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create mask folder");
    let map = image::GrayImage::from_raw(w, h, labels.to_vec()).expect("w × h labels");
    map.save_with_format(path, image::ImageFormat::Png).expect("write label map");
}

/// Writes `n` small images under `dir/img/` with a manifest `dir/manifest.csv` (path,
/// label, weather, time) and returns predictions (CSV: image_id, predicted) that are wrong
/// on 70% of the rainy nights and on 8% of the other images: a planted failure for slice
/// discovery to find. Deterministic (a multiplicative hash of the row, no generator).
pub fn planted_failure(dir: &Path, n: u64) -> String {
    use std::fmt::Write as _;
    let mut manifest = String::from("path,label,weather,time\n");
    let mut predictions = String::from("image_id,predicted\n");
    for i in 0..n {
        let path = format!("img/{i:04}.png");
        write_image(&dir.join(&path), 4, 4, (i % 251) as u8);
        // Independent pseudo-random draws per image.
        let draw = |salt: u64, m: u64| ((i + salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % m;
        let weather = ["sunny", "rain", "fog", "snow"][draw(1, 4) as usize];
        let time = if draw(2, 2) == 0 { "day" } else { "night" };
        let label = if i % 2 == 0 { "car" } else { "person" };
        writeln!(manifest, "{path},{label},{weather},{time}").expect("writing to a String");
        let wrong = if weather == "rain" && time == "night" { draw(3, 10) < 7 } else { draw(3, 100) < 8 };
        let predicted = if wrong { if label == "car" { "person" } else { "car" } } else { label };
        writeln!(predictions, "{path},{predicted}").expect("writing to a String");
    }
    std::fs::write(dir.join("manifest.csv"), manifest).expect("write fixture manifest");
    predictions
}

/// The `photos` folder: (relative path, width, height).
pub const PHOTOS: &[(&str, u32, u32)] = &[
    ("train/cat/c1.png", 8, 6),
    ("train/cat/c2.png", 16, 16),
    ("train/dog/d1.png", 10, 10),
    ("val/cat/c3.png", 4, 4),
    ("test/dog/d2.jpg", 20, 10),
    ("test/bird/b1.png", 12, 8),
    ("loose.png", 3, 5),
];

/// The `street` manifest: five images with extra columns, NULLs and non-ASCII text.
pub const STREET_CSV: &str = "path,label,split,weather,num_people,brightness,caption\n\
s1.png,car,train,sunny,3,0.8,A red car\n\
s2.png,car,test,rain,0,0.2,\n\
s3.png,person,train,,7,0.5,\"Crowd, at night\"\n\
s4.png,person,test,fog,,0.1,naïve café\n\
s5.png,,val,sunny,1,,x\n";

/// A COCO file for dataset `traffic`: three 40×30 images with boxes, one a crowd, one
/// with its own (mask) area, and an image without annotations.
const TRAFFIC_COCO: &str = r#"{"images": [{"id": 7, "file_name": "t1.png"}, {"id": 3, "file_name": "t2.png"},
  {"id": 5, "file_name": "t3.png"}],
 "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 10, "name": "traffic light"}],
 "annotations": [
  {"id": 11, "image_id": 7, "category_id": 1, "bbox": [1.5, 2.25, 4, 8], "area": 24.5, "iscrowd": 0},
  {"id": 12, "image_id": 7, "category_id": 3, "bbox": [10, 5, 25, 20], "iscrowd": 0},
  {"id": 13, "image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 30], "area": 400, "iscrowd": 1},
  {"id": 14, "image_id": 3, "category_id": 10, "bbox": [30, 1, 3, 9], "area": 20, "iscrowd": 0}]}"#;

/// Builds a workspace in `dir` with datasets `photos` (a folder, the default), `street`
/// (a CSV manifest) and `traffic` (a COCO file with boxes), all ingested through the real
/// importers.
pub async fn fixture_workspace(dir: &Path) -> Result<Workspace> {
    let src = dir.join("src");
    for (i, (rel, w, h)) in PHOTOS.iter().enumerate() {
        write_image(&src.join("photos").join(rel), *w, *h, i as u8);
    }
    for i in 1..=5u32 {
        write_image(&src.join("street").join(format!("s{i}.png")), 4 * i, 3 + i, 100 + i as u8);
    }
    std::fs::write(src.join("street/manifest.csv"), STREET_CSV).expect("write manifest");
    for i in 1..=3u32 {
        write_image(&src.join("traffic").join(format!("t{i}.png")), 40, 30, 200 + i as u8);
    }
    std::fs::write(src.join("traffic/instances.json"), TRAFFIC_COCO).expect("write COCO file");
    let mut ws = Workspace::init(dir.join("ws"))?;
    let quiet =
        |name: &str, format| IngestOptions { format, import: ImportOptions::default(), ..IngestOptions::new(name) };
    ingest(&mut ws, &src.join("photos"), &quiet("photos", SourceFormat::Folder)).await?;
    ingest(&mut ws, &src.join("street/manifest.csv"), &quiet("street", SourceFormat::Manifest)).await?;
    ingest(&mut ws, &src.join("traffic/instances.json"), &quiet("traffic", SourceFormat::Coco)).await?;
    Workspace::open(dir.join("ws"))
}
