//! COCOeval parity: every statistic and the whole precision / recall / scores arrays
//! agree bit for bit with pycocotools on the files in `fixtures/coco/`, made by
//! `fixtures/coco/make_reference.py` (pycocotools 2.0.11, numpy 2.4).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use slicetest_eval::coco::{Accumulated, Params, evaluate};
use slicetest_eval::coco_files;
use slicetest_eval::synthetic::{Spec, generate};

#[derive(Deserialize)]
struct Expected {
    stats: Vec<f64>,
    stats_bits: Vec<String>,
    precision_sha256: String,
    recall_sha256: String,
    scores_sha256: String,
    #[serde(default)]
    recall: Vec<f64>,
    shape: Vec<usize>,
}

#[derive(Deserialize)]
struct MicroCase {
    name: String,
    instances: serde_json::Value,
    results: serde_json::Value,
    max_dets: Vec<usize>,
    expected: Expected,
}

#[derive(Deserialize)]
struct SyntheticReference {
    images: u32,
    seeds: std::collections::BTreeMap<u64, SeedReference>,
}

#[derive(Deserialize)]
struct SeedReference {
    all: Expected,
    ids_divisible_by_3: Expected,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco")
}

fn digest(values: &[f64]) -> String {
    let mut hash = Sha256::new();
    for v in values {
        hash.update(v.to_le_bytes());
    }
    hex::encode(hash.finalize())
}

/// Compares everything; the message says which part differs and, for recall, where.
fn check(what: &str, got: &Accumulated, expected: &Expected, params: &Params, categories: usize) {
    let shape = [
        params.iou_thresholds.len(),
        params.recall_thresholds.len(),
        categories,
        params.area_ranges.len(),
        params.max_dets.len(),
    ];
    assert_eq!(expected.shape, shape, "{what}: shape");
    let stats = got.stats();
    for (i, (bits, value)) in expected.stats_bits.iter().zip(&expected.stats).enumerate() {
        let want = u64::from_str_radix(bits, 16).unwrap();
        assert_eq!(
            stats[i].to_bits(),
            want,
            "{what}: stats[{i}] ({}) is {:.17} but pycocotools gives {value:.17}",
            slicetest_eval::coco::STAT_NAMES[i],
            stats[i]
        );
    }
    if !expected.recall.is_empty() {
        for (i, (g, w)) in got.recall.iter().zip(&expected.recall).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: recall entry {i} is {g} but pycocotools gives {w}");
        }
    }
    assert_eq!(digest(&got.recall), expected.recall_sha256, "{what}: the recall array differs");
    assert_eq!(digest(&got.precision), expected.precision_sha256, "{what}: the precision array differs");
    assert_eq!(digest(&got.scores), expected.scores_sha256, "{what}: the scores array differs");
}

#[test]
fn every_rule_matches_pycocotools() {
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures().join("micro")).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let case: MicroCase = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let inputs = coco_files::read(&case.instances.to_string(), &case.results.to_string()).unwrap();
        let params = Params { max_dets: case.max_dets.clone(), ..Params::default() };
        let matching = evaluate(
            inputs.image_ids.len() as u32,
            inputs.category_ids.len() as u32,
            &inputs.ground_truth,
            &inputs.detections,
            &params,
        );
        check(&case.name, &matching.accumulate(), &case.expected, &params, inputs.category_ids.len());
        seen += 1;
    }
    assert_eq!(seen, 9, "one fixture per rule");
}

#[test]
fn generated_runs_and_slices_of_them_match_pycocotools() {
    let reference: SyntheticReference =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("synthetic.json")).unwrap()).unwrap();
    assert_eq!(reference.seeds.len(), 5);
    let params = Params::default();
    for (seed, expected) in &reference.seeds {
        let inputs = generate(Spec::coco_like(*seed, reference.images)).inputs();
        let categories = inputs.category_ids.len();
        let matching = evaluate(
            inputs.image_ids.len() as u32,
            categories as u32,
            &inputs.ground_truth,
            &inputs.detections,
            &params,
        );
        check(&format!("seed {seed}"), &matching.accumulate(), &expected.all, &params, categories);
        // A slice is the same matching accumulated over its images only.
        let ids = &inputs.image_ids;
        let mask: Vec<bool> = ids.iter().map(|id| id % 3 == 0).collect();
        let slice = matching.accumulate_images(&mask);
        check(
            &format!("seed {seed}, images with id % 3 == 0"),
            &slice,
            &expected.ids_divisible_by_3,
            &params,
            categories,
        );
    }
}
