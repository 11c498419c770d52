//! Embedding discovery's PCA and Gaussian mixture equal scikit-learn's on shared inputs:
//! `PCA(svd_solver="full")`, and `GaussianMixture(covariance_type="diag")` run for a fixed
//! number of EM steps from a given start (with no label or prediction weight, the
//! error-aware mixture is exactly that model). The reference is produced by
//! `tests/fixtures/discovery/make_mixture_reference.py` and committed as JSON.

use slicetest_engine::discovery::embedding::{Mixture, MixtureData, MixtureSettings, Pca, run_em};

fn reference() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/discovery/mixture_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn matrix(value: &serde_json::Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect()
}

fn close(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance * want.abs().max(1.0)
}

#[test]
fn pca_equals_scikit_learn() {
    let case = &reference()["pca"];
    let rows: Vec<Vec<f32>> = matrix(&case["rows"]).iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let pca = Pca::fit(&refs, case["n_components"].as_u64().unwrap() as usize);
    let variance: Vec<f64> =
        case["explained_variance"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(pca.len(), variance.len());
    for (got, want) in pca.explained_variance.iter().zip(&variance) {
        assert!(close(*got, *want, 1e-9), "explained variance {got} vs {want}");
    }
    // Components agree up to sign (sklearn fixes signs from the SVD's U, we from V).
    let dim = rows[0].len();
    for (c, want) in matrix(&case["components"]).iter().enumerate() {
        let got = &pca.components[c * dim..][..dim];
        let sign = if got.iter().zip(want).map(|(a, b)| a * b).sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
        for (g, w) in got.iter().zip(want) {
            assert!((g * sign - w).abs() < 1e-8, "component {c}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn em_equals_scikit_learns_diagonal_gaussian_mixture() {
    let case = &reference()["mixture"];
    let points: Vec<f64> = matrix(&case["points"]).concat();
    let d = 3;
    let n = points.len() / d;
    let (labels, predictions) = (vec![0u32; n], vec![0u32; n]);
    let wrong = vec![false; n];
    let data =
        MixtureData { points: &points, d, labels: &labels, predictions: &predictions, classes: 1, wrong: &wrong };
    let weights: Vec<f64> = case["initial_weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let k = weights.len();
    let initial = Mixture {
        weights,
        means: matrix(&case["initial_means"]).concat(),
        variances: matrix(&case["initial_variances"]).concat(),
        label_probs: vec![1.0; k],
        prediction_probs: vec![1.0; k],
        d,
        classes: 1,
        iterations: 0,
        converged: false,
        lower_bound: f64::NEG_INFINITY,
    };
    let settings = MixtureSettings {
        components: k,
        label_weight: 0.0,
        prediction_weight: 0.0,
        max_iter: case["max_iter"].as_u64().unwrap() as usize,
        tol: 0.0,
        reg_covar: 1e-6,
        seed: 0,
    };
    let fitted = run_em(&data, initial, &settings);
    assert_eq!(fitted.iterations as u64, case["n_iter"].as_u64().unwrap());
    let want_weights: Vec<f64> = case["weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (got, want) in fitted.weights.iter().zip(&want_weights) {
        assert!(close(*got, *want, 1e-9), "weights {:?} vs {want_weights:?}", fitted.weights);
    }
    for (got, want) in fitted.means.iter().zip(matrix(&case["means"]).concat()) {
        assert!(close(*got, want, 1e-9), "means {:?}", fitted.means);
    }
    for (got, want) in fitted.variances.iter().zip(matrix(&case["variances"]).concat()) {
        assert!(close(*got, want, 1e-9), "variances {:?}", fitted.variances);
    }
    let lower_bound = case["lower_bound"].as_f64().unwrap();
    assert!(close(fitted.lower_bound, lower_bound, 1e-9), "{} vs {lower_bound}", fitted.lower_bound);
}
