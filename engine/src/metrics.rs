//! Classification metrics with confidence intervals, defined as scikit-learn defines them
//! (checked against it in `tests/python/test_metrics_parity.py`).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::bootstrap::{bootstrap_counts, bootstrap_indices};

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// A value with its sample size and 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The point estimate.
    pub value: f64,
    /// Samples it is computed from.
    pub n: u64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// A proportion `successes / n` with its Wilson score interval (well-behaved at 0, 1 and small n).
pub fn wilson(successes: u64, n: u64) -> Estimate {
    if n == 0 {
        return Estimate { value: f64::NAN, n: 0, low: 0.0, high: 1.0 };
    }
    let (k, n_f, z2) = (successes as f64, n as f64, Z95 * Z95);
    let p = k / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / (1.0 + z2 / n_f);
    let half = Z95 / (1.0 + z2 / n_f) * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    Estimate { value: p, n, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The mean of `values` with a percentile-bootstrap 95% interval from a seeded generator.
pub fn mean_with_bootstrap(values: &[f64], seed: u64) -> Estimate {
    let mean = |idx: &[u32]| [idx.iter().map(|&i| values[i as usize]).sum::<f64>() / idx.len() as f64];
    let [[low, high]] = bootstrap_indices(values.len(), seed, mean);
    let value = if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
    Estimate { value, n: values.len() as u64, low, high }
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// The class.
    pub label: String,
    /// TP / (TP + FP), 0 when nothing was predicted as the class (scikit-learn's zero_division=0).
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class is absent from the truth.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Samples whose true label is the class.
    pub support: u64,
    /// 95% Wilson interval of the precision (over the samples predicted as the class).
    pub precision_interval: [f64; 2],
    /// 95% Wilson interval of the recall (over the samples of the class).
    pub recall_interval: [f64; 2],
}

/// Classification metrics over one set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Share of samples predicted right, with its Wilson interval.
    pub accuracy: Estimate,
    /// Per class, over the union of true and predicted labels (sorted), as scikit-learn does.
    pub per_class: Vec<ClassScore>,
    /// Unweighted mean of the F1 of the classes that occur in the truth (a class that is
    /// only predicted, never true, in these samples has no recall to average and is left
    /// out; it still shows in `per_class` and `confusion`), with a bootstrap interval.
    pub macro_f1: Estimate,
    /// Confusion counts: `confusion[i][j]` = true `labels[i]` predicted as `labels[j]`.
    pub confusion: Vec<Vec<u64>>,
    /// Row and column labels of `confusion` (= the labels of `per_class`).
    pub labels: Vec<String>,
}

/// Accuracy, per-class precision / recall / F1, macro-F1 and the confusion matrix; the
/// macro-F1 interval comes from a bootstrap seeded with `seed`.
pub fn classify(truth: &[&str], predicted: &[&str], seed: u64) -> Classification {
    assert_eq!(truth.len(), predicted.len(), "one prediction per true label");
    let names: Vec<String> =
        truth.iter().chain(predicted).copied().collect::<BTreeSet<&str>>().into_iter().map(str::to_string).collect();
    let index: HashMap<&str, u32> = names.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
    let pairs: Vec<(u32, u32)> = truth.iter().zip(predicted).map(|(t, p)| (index[t], index[p])).collect();
    classify_indexed(&pairs, &names, seed)
}

/// [`classify`] over (true, predicted) label indices into `names`, which must be sorted;
/// only labels that occur are reported. This is the form scoring uses: no strings per sample.
pub fn classify_indexed(pairs: &[(u32, u32)], names: &[String], seed: u64) -> Classification {
    let mut present = vec![false; names.len()];
    for &(t, p) in pairs {
        present[t as usize] = true;
        present[p as usize] = true;
    }
    let kept: Vec<usize> = (0..names.len()).filter(|&i| present[i]).collect();
    let mut compact = vec![usize::MAX; names.len()];
    for (j, &i) in kept.iter().enumerate() {
        compact[i] = j;
    }
    let k = kept.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for &(t, p) in pairs {
        confusion[compact[t as usize]][compact[p as usize]] += 1;
    }
    let labels: Vec<String> = kept.iter().map(|&i| names[i].clone()).collect();
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassScore> = (0..k)
        .map(|i| {
            let tp = confusion[i][i] as f64;
            let predicted_as: u64 = (0..k).map(|r| confusion[r][i]).sum();
            let support: u64 = confusion[i].iter().sum();
            let precision = if predicted_as == 0 { 0.0 } else { tp / predicted_as as f64 };
            let recall = if support == 0 { 0.0 } else { tp / support as f64 };
            let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            let interval = |e: Estimate| [e.low, e.high];
            ClassScore {
                label: labels[i].clone(),
                precision,
                recall,
                f1,
                support,
                precision_interval: interval(wilson(confusion[i][i], predicted_as)),
                recall_interval: interval(wilson(confusion[i][i], support)),
            }
        })
        .collect();
    let macro_f1 = macro_f1_with_bootstrap(&confusion, seed);
    Classification { accuracy: wilson(correct, pairs.len() as u64), per_class, macro_f1, confusion, labels }
}

/// Macro-F1 of a confusion matrix given as row-major counts over `k` labels: the mean F1
/// of the labels that occur as truth, scikit-learn's
/// `f1_score(y, p, labels=<classes in y>, average="macro", zero_division=0)`. Labels that
/// are only predicted are left out: averaged in with F1 = 0 they would pull a slice's
/// score down for every class it does not contain (a 94%-accurate slice of three shoe
/// classes read 0.47 when the model also predicted four other classes in it). NaN when
/// there are no samples.
fn macro_f1_of_counts(cells: &[u64], k: usize) -> f64 {
    let (mut tp, mut support, mut predicted_as) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
    for (cell, &count) in cells.iter().enumerate() {
        let (t, p) = (cell / k, cell % k);
        support[t] += count;
        predicted_as[p] += count;
        if t == p {
            tp[t] += count;
        }
    }
    let (mut sum, mut present) = (0.0, 0usize);
    for i in (0..k).filter(|&i| support[i] > 0) {
        present += 1;
        // F1 = 2·TP / (support + predicted), the harmonic mean of precision and recall.
        sum += 2.0 * tp[i] as f64 / (support[i] + predicted_as[i]) as f64;
    }
    if present == 0 { f64::NAN } else { sum / present as f64 }
}

fn macro_f1_with_bootstrap(confusion: &[Vec<u64>], seed: u64) -> Estimate {
    let k = confusion.len();
    let cells: Vec<u64> = confusion.iter().flatten().copied().collect();
    let n = cells.iter().sum();
    let [low, high] = bootstrap_counts(&cells, seed, |resampled| macro_f1_of_counts(resampled, k));
    Estimate { value: macro_f1_of_counts(&cells, k), n, low, high }
}

/// Per-sample negative log-likelihood of the true class, probabilities clipped to
/// [ε, 1 − ε] with ε = f64::EPSILON as scikit-learn does. `truth_index[i]` is the
/// column of sample i's true class in `probs[i]`, or None when that class has no
/// probability column (the sample then counts with probability ε).
pub fn sample_log_losses(probs: &[Vec<f64>], truth_index: &[Option<usize>]) -> Vec<f64> {
    let eps = f64::EPSILON;
    probs.iter().zip(truth_index).map(|(p, t)| -t.map_or(eps, |t| p[t].clamp(eps, 1.0 - eps)).ln()).collect()
}

/// Mean of [`sample_log_losses`]: scikit-learn's `log_loss`.
pub fn log_loss(probs: &[Vec<f64>], truth_index: &[Option<usize>]) -> f64 {
    let losses = sample_log_losses(probs, truth_index);
    losses.iter().sum::<f64>() / losses.len() as f64
}

/// The calibration bin of a confidence: bin b holds (b/B, (b+1)/B]; 0 goes to the first.
fn ece_bin(confidence: f64) -> usize {
    ((confidence * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1
}

/// Expected calibration error of the samples `rows` (all samples when None).
fn ece_of(confidence: &[f64], correct: &[bool], rows: Option<&[u32]>) -> f64 {
    let mut bins = [(0usize, 0.0f64); ECE_BINS];
    let mut add = |i: usize| {
        let bin = &mut bins[ece_bin(confidence[i])];
        bin.0 += 1;
        // Per bin, |hits − Σ confidence| / n is that bin's weighted |accuracy − confidence|.
        bin.1 += correct[i] as u8 as f64 - confidence[i];
    };
    let n = match rows {
        Some(rows) => {
            rows.iter().for_each(|&r| add(r as usize));
            rows.len()
        }
        None => {
            (0..confidence.len()).for_each(&mut add);
            confidence.len()
        }
    };
    bins.iter().filter(|(count, _)| *count > 0).map(|(_, gap)| gap.abs()).sum::<f64>() / n as f64
}

/// Expected calibration error: samples binned by confidence (the top probability) into
/// [`ECE_BINS`] equal-width bins; the support-weighted mean |accuracy − confidence|.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool]) -> f64 {
    ece_of(confidence, correct, None)
}

/// Log-loss and expected calibration error of the same samples, each with a bootstrap
/// interval from one shared set of resamples.
pub fn probability_scores(losses: &[f64], confidence: &[f64], correct: &[bool], seed: u64) -> (Estimate, Estimate) {
    let n = losses.len();
    let [[ll_low, ll_high], [ece_low, ece_high]] = bootstrap_indices(n, seed, |rows| {
        let ll = rows.iter().map(|&r| losses[r as usize]).sum::<f64>() / rows.len() as f64;
        [ll, ece_of(confidence, correct, Some(rows))]
    });
    let ll = losses.iter().sum::<f64>() / n as f64;
    (
        Estimate { value: ll, n: n as u64, low: ll_low, high: ll_high },
        Estimate { value: expected_calibration_error(confidence, correct), n: n as u64, low: ece_low, high: ece_high },
    )
}

/// One-sided two-proportion z-test that `p_new` is lower than `p_base`: the p-value.
pub fn drop_p_value(base_hits: u64, base_n: u64, new_hits: u64, new_n: u64) -> f64 {
    if base_n == 0 || new_n == 0 {
        return 1.0;
    }
    let (p1, p2) = (base_hits as f64 / base_n as f64, new_hits as f64 / new_n as f64);
    let pooled = (base_hits + new_hits) as f64 / (base_n + new_n) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / base_n as f64 + 1.0 / new_n as f64)).sqrt();
    if se == 0.0 {
        return if p2 < p1 { 0.0 } else { 1.0 };
    }
    let z = (p1 - p2) / se;
    1.0 - standard_normal_cdf(z)
}

/// Φ(x) via the complementary error function (Abramowitz–Stegun 7.1.26 is too coarse for
/// p-values near a significance level, so this uses erfc's continued-fraction-free series).
pub fn standard_normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// erfc with relative error below 1.2e-7 everywhere (Numerical Recipes' erfcc).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 8 of 10: Wilson 95% interval (0.4902, 0.9433).
        let e = wilson(8, 10);
        assert!((e.low - 0.4902).abs() < 1e-4 && (e.high - 0.9433).abs() < 1e-4, "{e:?}");
        let all = wilson(5, 5);
        assert_eq!(all.value, 1.0);
        assert!(all.high == 1.0 && all.low > 0.5 && all.low < 0.6, "{all:?}");
        let none = wilson(0, 1);
        assert!(none.low == 0.0 && none.high > 0.79, "{none:?}");
        assert!(wilson(0, 0).value.is_nan());
    }

    #[test]
    fn per_class_scores_follow_scikit_learn() {
        // sklearn: precision_recall_fscore_support(["a","a","b","c"], ["a","b","b","b"], zero_division=0)
        // labels a,b,c: precision [1, 1/3, 0], recall [0.5, 1, 0], f1 [2/3, 0.5, 0]
        let c = classify(&["a", "a", "b", "c"], &["a", "b", "b", "b"], 1);
        let p: Vec<f64> = c.per_class.iter().map(|s| s.precision).collect();
        let f: Vec<f64> = c.per_class.iter().map(|s| s.f1).collect();
        assert_eq!(p, [1.0, 1.0 / 3.0, 0.0]);
        assert!((f[0] - 2.0 / 3.0).abs() < 1e-12 && (f[1] - 0.5).abs() < 1e-12 && f[2] == 0.0);
        assert!((c.macro_f1.value - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(c.accuracy.value, 0.5);
        assert_eq!(c.confusion, vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 0]]);
    }

    #[test]
    fn macro_f1_averages_over_the_true_classes_only() {
        // sklearn: f1_score(["a","a","a","b"], ["a","a","c","b"], labels=["a","b"], average="macro")
        // a: P 1, R 2/3, F1 0.8; b: F1 1; c (predicted only) is not averaged: 0.9, not 0.6.
        let c = classify(&["a", "a", "a", "b"], &["a", "a", "c", "b"], 1);
        assert!((c.macro_f1.value - 0.9).abs() < 1e-12, "{:?}", c.macro_f1);
        assert_eq!(c.labels, ["a", "b", "c"], "the predicted-only class stays in the confusion matrix");
        assert_eq!(c.per_class[2].support, 0);
        assert!(c.macro_f1.low <= 0.9 && c.macro_f1.high <= 1.0);
    }

    #[test]
    fn edge_cases_do_not_divide_by_zero() {
        let empty = classify(&[], &[], 1);
        assert!(empty.accuracy.value.is_nan() && empty.per_class.is_empty());
        let one = classify(&["a"], &["b"], 1);
        assert_eq!(one.accuracy.value, 0.0);
        assert_eq!(one.macro_f1.value, 0.0);
        assert!(empty.macro_f1.value.is_nan());
        assert!(mean_with_bootstrap(&[], 1).value.is_nan());
        let m = mean_with_bootstrap(&[2.0], 1);
        assert_eq!((m.value, m.low, m.high), (2.0, 2.0, 2.0));
    }

    #[test]
    fn calibration_and_log_loss_on_known_values() {
        // Perfectly calibrated bins: confidence 0.5 with half right, 1.0 all right.
        let ece = expected_calibration_error(&[0.5, 0.5, 1.0, 1.0], &[true, false, true, true]);
        assert!(ece.abs() < 1e-12, "{ece}");
        let ece = expected_calibration_error(&[0.9, 0.9], &[false, false]);
        assert!((ece - 0.9).abs() < 1e-12);
        let ll = log_loss(&[vec![0.8, 0.2], vec![0.4, 0.6]], &[Some(0), Some(0)]);
        assert!((ll - (-(0.8f64.ln()) - 0.4f64.ln()) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_significant_drop_has_a_small_p_value() {
        assert!(drop_p_value(90, 100, 70, 100) < 0.001);
        assert!(drop_p_value(90, 100, 88, 100) > 0.3);
        assert!(drop_p_value(70, 100, 90, 100) > 0.99);
        assert!((standard_normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-6);
        assert_eq!(drop_p_value(0, 0, 1, 1), 1.0);
    }

    proptest! {
        /// The Wilson interval contains the estimate and stays inside [0, 1].
        #[test]
        fn wilson_contains_the_estimate(n in 1u64..10_000, frac in 0.0f64..=1.0) {
            let k = ((n as f64) * frac).round() as u64;
            let e = wilson(k, n);
            prop_assert!(0.0 <= e.low && e.low <= e.value + 1e-12 && e.value <= e.high + 1e-12 && e.high <= 1.0);
        }

        /// Accuracy equals the trace of the confusion matrix over n; F1 is within [0, 1].
        #[test]
        fn confusion_and_accuracy_agree(pairs in prop::collection::vec((0u8..4, 0u8..4), 1..300)) {
            let names = ["w", "x", "y", "z"];
            let t: Vec<&str> = pairs.iter().map(|(a, _)| names[*a as usize]).collect();
            let p: Vec<&str> = pairs.iter().map(|(_, b)| names[*b as usize]).collect();
            let c = classify(&t, &p, 1);
            let trace: u64 = (0..c.labels.len()).map(|i| c.confusion[i][i]).sum();
            prop_assert!((c.accuracy.value - trace as f64 / pairs.len() as f64).abs() < 1e-12);
            prop_assert!(c.per_class.iter().all(|s| (0.0..=1.0).contains(&s.f1)));
            prop_assert_eq!(c.confusion.iter().flatten().sum::<u64>(), pairs.len() as u64);
            let true_classes: Vec<&ClassScore> = c.per_class.iter().filter(|s| s.support > 0).collect();
            let mean_f1 = true_classes.iter().map(|s| s.f1).sum::<f64>() / true_classes.len() as f64;
            prop_assert!((c.macro_f1.value - mean_f1).abs() < 1e-12);
            prop_assert!(0.0 <= c.macro_f1.low && c.macro_f1.low <= c.macro_f1.high && c.macro_f1.high <= 1.0);
        }

        /// Log-loss and ECE intervals are seeded, ordered, and the log-loss one brackets
        /// values a mean can take.
        #[test]
        fn probability_intervals(samples in prop::collection::vec((0.05f64..1.0, any::<bool>()), 1..200), seed in any::<u64>()) {
            let confidence: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let correct: Vec<bool> = samples.iter().map(|s| s.1).collect();
            let losses: Vec<f64> = confidence.iter().map(|c| -c.ln()).collect();
            let (ll, ece) = probability_scores(&losses, &confidence, &correct, seed);
            prop_assert_eq!((ll, ece), probability_scores(&losses, &confidence, &correct, seed));
            prop_assert!((ece.value - expected_calibration_error(&confidence, &correct)).abs() < 1e-12);
            prop_assert!(ll.low <= ll.high && ece.low <= ece.high && 0.0 <= ece.low && ece.high <= 1.0);
            let max = losses.iter().copied().fold(0.0, f64::max);
            prop_assert!(ll.low >= 0.0 && ll.high <= max + 1e-9);
        }

        /// The bootstrap interval brackets the mean and is reproducible for a seed.
        #[test]
        fn bootstrap_is_seeded_and_brackets_the_mean(values in prop::collection::vec(-100.0f64..100.0, 1..200), seed in any::<u64>()) {
            let a = mean_with_bootstrap(&values, seed);
            prop_assert_eq!(a, mean_with_bootstrap(&values, seed));
            prop_assert!(a.low <= a.high);
            let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            prop_assert!(a.low >= min - 1e-9 && a.high <= max + 1e-9);
        }
    }
}
