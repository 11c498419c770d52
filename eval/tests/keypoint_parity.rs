//! Keypoint AP parity: OKS and COCOeval(iouType='keypoints') against pycocotools on the
//! files in `fixtures/coco_keypoints/`, made by its `make_reference.py` (pycocotools
//! 2.0.11, numpy 2.4): the 10 statistics bit for bit and the whole precision / recall /
//! scores arrays, for results with boxes and without (boxed by their keypoints' extent),
//! over every image and over a slice of them; every OKS value to 1e-15.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use slicetest_eval::coco::{Accumulated, Detection, GroundTruth, KEYPOINT_STAT_NAMES, Params, evaluate_with};
use slicetest_eval::keypoints::{KeypointOverlap, TruthKeypoints, keypoint_extent, oks};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco_keypoints").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn digest(values: &[f64]) -> String {
    let mut hash = Sha256::new();
    values.iter().for_each(|v| hash.update(v.to_le_bytes()));
    hex::encode(hash.finalize())
}

fn check(what: &str, got: &Accumulated, expected: &Value) {
    let stats = got.keypoint_stats();
    for (i, bits) in expected["stats_bits"].as_array().unwrap().iter().enumerate() {
        let want = f64::from_bits(u64::from_str_radix(bits.as_str().unwrap(), 16).unwrap());
        assert_eq!(
            stats[i].to_bits(),
            want.to_bits(),
            "{what}: {} is {:.17} but pycocotools gives {want:.17}",
            KEYPOINT_STAT_NAMES[i],
            stats[i]
        );
    }
    assert_eq!(digest(&got.precision), expected["precision_sha256"], "{what}: the precision array differs");
    assert_eq!(digest(&got.recall), expected["recall_sha256"], "{what}: the recall array differs");
    assert_eq!(digest(&got.scores), expected["scores_sha256"], "{what}: the scores array differs");
}

/// The fixture read as pycocotools reads it: images by ascending id, one category.
struct Inputs {
    image_ids: Vec<i64>,
    ground_truth: Vec<GroundTruth>,
    truth_points: Vec<Vec<f64>>,
    labelled: Vec<u32>,
    detections: Vec<Detection>,
    detected_points: Vec<Vec<f64>>,
}

fn inputs(with_boxes: bool) -> Inputs {
    let (instances, results) = (fixture("instances.json"), fixture("results.json"));
    let mut image_ids: Vec<i64> =
        instances["images"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    image_ids.sort_unstable();
    let index: HashMap<i64, u32> = image_ids.iter().enumerate().map(|(n, &id)| (id, n as u32)).collect();
    let image = |v: &Value| index[&v["image_id"].as_i64().unwrap()];
    let bbox = |v: &Value| <[f64; 4]>::try_from(numbers(&v["bbox"])).unwrap();
    let annotations = instances["annotations"].as_array().unwrap();
    let ground_truth = annotations
        .iter()
        .map(|a| GroundTruth {
            image: image(a),
            category: 0,
            bbox: bbox(a),
            area: a["area"].as_f64().unwrap(),
            iscrowd: a["iscrowd"].as_u64().unwrap() != 0,
        })
        .collect();
    let results = results.as_array().unwrap();
    let detected_points: Vec<Vec<f64>> = results.iter().map(|r| numbers(&r["keypoints"])).collect();
    let detections = results
        .iter()
        .zip(&detected_points)
        .map(|(r, points)| Detection {
            image: image(r),
            category: 0,
            bbox: if with_boxes { bbox(r) } else { keypoint_extent(points).unwrap() },
            score: r["score"].as_f64().unwrap(),
        })
        .collect();
    Inputs {
        image_ids,
        ground_truth,
        truth_points: annotations.iter().map(|a| numbers(&a["keypoints"])).collect(),
        labelled: annotations.iter().map(|a| a["num_keypoints"].as_u64().unwrap() as u32).collect(),
        detections,
        detected_points,
    }
}

#[test]
fn keypoint_ap_matches_pycocotools() {
    let expected = fixture("expected.json");
    for (variant, with_boxes) in [("with_boxes", true), ("keypoints_only", false)] {
        let inputs = inputs(with_boxes);
        let overlap = KeypointOverlap {
            ground_truth: &inputs.ground_truth,
            truth: (inputs.truth_points.iter().zip(&inputs.labelled))
                .map(|(points, &labelled)| TruthKeypoints { points, labelled })
                .collect(),
            detections: &inputs.detections,
            detected: inputs.detected_points.iter().map(Vec::as_slice).collect(),
        };
        let images = inputs.image_ids.len() as u32;
        let params = Params::keypoints();
        let matching = evaluate_with(images, 1, &inputs.ground_truth, &inputs.detections, &params, &overlap);
        check(&format!("{variant}, every image"), &matching.accumulate(), &expected[variant]["all"]);
        let slice: Vec<bool> = inputs.image_ids.iter().map(|id| id % 3 == 0).collect();
        check(
            &format!("{variant}, images with id % 3 == 0"),
            &matching.accumulate_images(&slice),
            &expected[variant]["ids_divisible_by_3"],
        );
    }
}

#[test]
fn every_oks_matches_pycocotools() {
    let inputs = inputs(true);
    let annotations = fixture("instances.json")["annotations"].as_array().unwrap().clone();
    let by_id: HashMap<i64, usize> =
        annotations.iter().enumerate().map(|(n, a)| (a["id"].as_i64().unwrap(), n)).collect();
    let pairs = fixture("expected.json")["oks"].as_array().unwrap().clone();
    assert!(pairs.len() > 1000, "the fixture compares many pairs");
    let (mut exact, mut unlabelled) = (0, 0);
    for pair in &pairs {
        let (d, g, want) =
            (pair[0].as_u64().unwrap() as usize, by_id[&pair[1].as_i64().unwrap()], pair[2].as_f64().unwrap());
        let truth = &inputs.ground_truth[g];
        let got = oks(&inputs.detected_points[d], &inputs.truth_points[g], &truth.bbox, truth.area);
        assert!((got - want).abs() <= 1e-15, "result #{d} vs annotation {}: {got:.17} vs {want:.17}", pair[1]);
        exact += (got == want) as usize;
        unlabelled += (inputs.labelled[g] == 0) as usize;
    }
    assert!(exact * 2 > pairs.len(), "most OKS values agree to the bit ({exact} of {})", pairs.len());
    assert!(unlabelled > 20, "people without labelled keypoints are compared by the box distance");
}
