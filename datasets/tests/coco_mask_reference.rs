//! COCO polygons and RLEs decode to exactly the pixels pycocotools gives (reference values
//! from `fixtures/coco_masks/make_reference.py`).

use slicetest_datasets::coco_mask::{self, BinaryMask, Counts, Segmentation};

fn fixture() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/coco_masks/polygons.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn size(case: &serde_json::Value) -> (u32, u32) {
    (case["height"].as_u64().unwrap() as u32, case["width"].as_u64().unwrap() as u32)
}

#[test]
fn polygons_rasterise_as_pycocotools_does() {
    let cases = fixture()["polygons"].as_array().unwrap().clone();
    assert!(cases.len() > 200);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (h, w) = size(case);
        let segmentation: Segmentation = serde_json::from_value(case["segmentation"].clone()).unwrap();
        let mask = segmentation.to_mask(h, w).unwrap();
        let expected = case["counts"].as_str().unwrap();
        if coco_mask::encode_counts(&mask.counts()) != expected || mask.area() != case["area"].as_u64().unwrap() {
            failures.push(format!("case {i} ({}, {w}×{h}): area {} vs {}", case["kind"], mask.area(), case["area"]));
        }
        // The reference's text decodes to the same mask.
        let decoded = BinaryMask::from_counts(&coco_mask::decode_counts(expected).unwrap(), h, w).unwrap();
        assert_eq!(decoded.area(), case["area"].as_u64().unwrap(), "case {i}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ from pycocotools:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn uncompressed_and_compressed_rles_are_the_same_masks_as_in_pycocotools() {
    for (i, case) in fixture()["rle"].as_array().unwrap().iter().enumerate() {
        let (h, w) = size(case);
        let plain: Vec<u64> = serde_json::from_value(case["uncompressed"].clone()).unwrap();
        let from_plain = Segmentation::Rle { counts: Counts::Uncompressed(plain), size: [h, w] }.to_mask(h, w).unwrap();
        let text = case["counts"].as_str().unwrap().to_string();
        let from_text =
            Segmentation::Rle { counts: Counts::Compressed(text.clone()), size: [h, w] }.to_mask(h, w).unwrap();
        assert_eq!(from_plain, from_text, "case {i}");
        assert_eq!(from_plain.area(), case["area"].as_u64().unwrap(), "case {i}");
        assert_eq!(coco_mask::encode_counts(&from_plain.counts()), text, "case {i}");
    }
}

#[test]
fn bad_segmentations_say_what_is_wrong() {
    let rle = |counts: Counts, size| Segmentation::Rle { counts, size }.to_mask(4, 5).unwrap_err();
    assert!(rle(Counts::Uncompressed(vec![3, 4]), [4, 5]).contains("cover 7 pixels"));
    assert!(rle(Counts::Uncompressed(vec![20]), [5, 4]).contains("is 4×5 but the image is 5×4"));
    assert!(rle(Counts::Compressed("0\u{1}".into()), [4, 5]).contains("invalid character"));
    let odd = Segmentation::Polygons(vec![vec![1.0, 2.0, 3.0]]).to_mask(4, 5).unwrap_err();
    assert!(odd.contains("odd number of coordinates"), "{odd}");
    // Fewer than three points cover nothing (pycocotools would read four numbers as a box).
    assert_eq!(Segmentation::Polygons(vec![vec![1.0, 1.0, 3.0, 3.0]]).to_mask(4, 5).unwrap().area(), 0);
}
