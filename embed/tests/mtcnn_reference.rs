//! The candle MTCNN against facenet-pytorch 2.6.0 on real photos.
//!
//! `tests/fixtures/faces/reference.json` holds what `MTCNN(keep_all=True, device='cpu')`
//! returns for each photo (made by `tests/fixtures/faces/make_mtcnn_fixtures.py`). Every
//! photo must give the same number of faces, each box within 2 px (all four corners) and
//! each score within 1e-3 of its reference, landmarks within 2 px.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use slicetest_embed::faces::{Face, FaceDetector, MTCNN_VERSION};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn detector() -> FaceDetector {
    FaceDetector::new(&candle_core::Device::Cpu).expect("embedded weights load")
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// Pairs each reference face with the closest detected one (largest-score first, greedy on
/// the summed corner distance), then checks the tolerances.
#[allow(clippy::print_stderr)] // the test shows how close each face is
fn compare(name: &str, expected: &[serde_json::Value], got: &[Face]) -> Vec<String> {
    let mut problems = Vec::new();
    if expected.len() != got.len() {
        problems.push(format!("{name}: {} faces, reference {}: {got:?}", got.len(), expected.len()));
        return problems;
    }
    let mut used = vec![false; got.len()];
    for face in expected {
        let want = f32s(&face["box"]);
        let corners = |f: &Face| [f.bbox.x0, f.bbox.y0, f.bbox.x1, f.bbox.y1];
        let dist = |f: &Face| corners(f).iter().zip(&want).map(|(a, b)| (a - b).abs()).sum::<f32>();
        let best = (0..got.len())
            .filter(|&i| !used[i])
            .min_by(|&a, &b| dist(&got[a]).total_cmp(&dist(&got[b])))
            .expect("as many faces as the reference");
        used[best] = true;
        let g = &got[best];
        let prob = face["prob"].as_f64().unwrap() as f32;
        let max_box = corners(g).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let lm_want = face["landmarks"].as_array().unwrap().iter().flat_map(f32s).collect::<Vec<_>>();
        let lm_got = g.landmarks.iter().flatten().copied().collect::<Vec<_>>();
        let max_lm = lm_got.iter().zip(&lm_want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!(
            "{name}: box {:?} vs {want:?} (max {max_box:.4} px), score {} vs {prob} (diff {:.2e}), landmarks max {max_lm:.4} px",
            corners(g),
            g.bbox.score,
            (g.bbox.score - prob).abs()
        );
        if max_box > 2.0 || (g.bbox.score - prob).abs() > 1e-3 || max_lm > 2.0 {
            problems.push(format!("{name}: {g:?} vs reference {face}"));
        }
    }
    problems
}

#[test]
fn matches_facenet_pytorch_on_photos() {
    let reference = reference();
    assert_eq!(reference["model"].as_str(), Some(MTCNN_VERSION));
    let photos = reference["photos"].as_array().expect("photos");
    assert!(photos.len() >= 7);
    let detector = detector();
    let mut problems = Vec::new();
    let mut total_faces = 0;
    for photo in photos {
        let name = photo["file"].as_str().unwrap();
        let path = fixtures().join(name);
        let bytes = std::fs::read(&path).expect("photo");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), photo["sha256"].as_str().unwrap(), "{name} changed");
        // PIL's convert("RGB") replicates a grayscale channel; so does to_rgb8.
        let rgb = slicetest_embed::open_image(&path).expect("decodes").to_rgb8();
        assert_eq!(
            (rgb.width() as u64, rgb.height() as u64),
            (photo["width"].as_u64().unwrap(), photo["height"].as_u64().unwrap())
        );
        // JPEG decoders may differ from PIL's libjpeg-turbo by a level; say so when they do
        // (the tolerances below absorb it on these photos).
        let same_pixels = hex::encode(Sha256::digest(rgb.as_raw())) == photo["decoded_rgb_sha256"].as_str().unwrap();
        eprintln!("{name}: decoded pixels identical to PIL's: {same_pixels}");
        if photo["format"] != "JPEG" {
            assert!(same_pixels, "{name}: lossless decoding must be exact");
        }
        let faces = detector.detect_faces(&rgb).expect("detects");
        assert!(faces.windows(2).all(|w| w[0].bbox.score >= w[1].bbox.score), "sorted by score");
        let boxes = detector.detect(&rgb).expect("detects");
        assert_eq!(boxes, faces.iter().map(|f| f.bbox).collect::<Vec<_>>());
        let expected = photo["faces"].as_array().unwrap();
        total_faces += expected.len();
        problems.extend(compare(name, expected, &faces));
    }
    assert!(total_faces >= 9, "the fixtures hold faces to compare");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn batch_gives_the_same_as_one_by_one() {
    let detector = detector();
    let images: Vec<image::RgbImage> = ["tom_hanks.png", "camera.png", "person.jpg"]
        .iter()
        .map(|n| slicetest_embed::open_image(&fixtures().join(n)).unwrap().to_rgb8())
        .collect();
    let batch = detector.detect_batch(&images).unwrap();
    for (image, got) in images.iter().zip(batch) {
        assert_eq!(got, detector.detect(image).unwrap());
    }
}

#[test]
fn degenerate_images_give_no_faces() {
    let detector = detector();
    // 1×1, 0×0 and images smaller than the 20 px minimum face: no pyramid level at all
    // (facenet-pytorch raises on these; here they are simply faceless).
    for (w, h) in [(1, 1), (0, 0), (0, 40), (19, 300), (33, 1)] {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([128, 64, 200]));
        assert!(detector.detect(&img).unwrap().is_empty(), "{w}x{h}");
    }
    // All black and a flat grey image (grayscale content, replicated channels).
    let black = image::RgbImage::new(640, 480);
    assert!(detector.detect(&black).unwrap().is_empty());
    let grey = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(300, 200, image::Luma([90]))).to_rgb8();
    assert!(detector.detect(&grey).unwrap().is_empty());
    // Smallest size that has one pyramid level.
    let small = image::RgbImage::from_pixel(20, 20, image::Rgb([255, 255, 255]));
    assert!(detector.detect(&small).unwrap().is_empty());
}

#[test]
fn grayscale_photo_is_detected_like_pil_rgb() {
    // camera.png is an 8-bit grayscale PNG; decoded as Luma, replicated to RGB.
    let img = slicetest_embed::open_image(&fixtures().join("camera.png")).unwrap();
    assert!(matches!(img, image::DynamicImage::ImageLuma8(_)));
    let faces = detector().detect(&img.to_rgb8()).unwrap();
    assert_eq!(faces.len(), 1);
}
