//! slicetest's SliceLine equals PyPI `sliceline` 0.3.0 on shared tables: the same top-k
//! slices with the same sizes, error sums and scores. The reference is produced by
//! `tests/fixtures/discovery/make_sliceline_reference.py` and committed as JSON.

use std::collections::BTreeSet;

use slicetest_engine::discovery::sliceline::{Errors, Predicate, SearchSettings, bitmap_from, search};

/// A reference slice: its (column, value) predicates, size, error sum and score.
type ReferenceSlice = (BTreeSet<(usize, u64)>, f64, f64, f64);

#[test]
fn top_slices_equal_the_sliceline_package() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/discovery/sliceline_reference.json");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let columns: Vec<Vec<u64>> = case["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect())
            .collect();
        let errors: Vec<f64> = case["errors"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        // One predicate per (column, value), as sliceline's one-hot encoding.
        let (mut predicates, mut meaning) = (Vec::new(), Vec::new());
        for (c, values) in columns.iter().enumerate() {
            let distinct: BTreeSet<u64> = values.iter().copied().collect();
            for v in distinct {
                predicates.push(Predicate { column: c, rows: bitmap_from(values.iter().map(|&x| x == v)) });
                meaning.push((c, v));
            }
        }
        let settings = SearchSettings {
            k: case["k"].as_u64().unwrap() as usize,
            max_level: case["max_level"].as_u64().unwrap() as usize,
            min_support: case["min_support"].as_u64().unwrap(),
            alpha: case["alpha"].as_f64().unwrap(),
        };
        let (found, _) = search(&predicates, &Errors::new(errors), settings);

        let expected: Vec<ReferenceSlice> = case["slices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["statistics"].as_array().unwrap())
            .map(|(row, stats)| {
                let key =
                    row.as_array().unwrap().iter().enumerate().filter_map(|(c, v)| Some((c, v.as_u64()?))).collect();
                let stat = |k: &str| stats[k].as_f64().unwrap();
                (key, stat("slice_size"), stat("sum_slice_error"), stat("slice_score"))
            })
            .collect();
        assert_eq!(found.len(), expected.len(), "{name}: number of slices");
        for (i, (f, (key, size, errors, score))) in found.iter().zip(&expected).enumerate() {
            let ours: BTreeSet<(usize, u64)> = f.predicates.iter().map(|&p| meaning[p]).collect();
            assert_eq!(&ours, key, "{name}: slice {i}");
            assert_eq!(f.stats.size as f64, *size, "{name}: size of slice {i}");
            assert!((f.stats.errors - errors).abs() < 1e-9, "{name}: errors of slice {i}");
            assert!(
                (f.score - score).abs() < 1e-9 * score.abs().max(1.0),
                "{name}: score of slice {i}: {} vs {score}",
                f.score
            );
        }
    }
}
