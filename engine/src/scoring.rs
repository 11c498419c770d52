//! Scoring a model run on every slice: metrics with intervals, the slice test verdict, and
//! regressions against a baseline run.
//!
//! A slice is scored on the members of its latest frozen version that have a prediction
//! and a true label; "overall" is every prediction with a true label. Truth is the
//! `label` of the run's dataset (latest version).

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float64Type;
use serde::Serialize;
use slicetest_datasets::run::{RunManifest, UploadOptions, read_predictions, read_run, run_names, upload};
use slicetest_datasets::slice::{self, SliceDefinition};
use slicetest_datasets::version::read_image_columns;

use crate::Engine;
use crate::curation::DEFAULT_MIN_TEST_SAMPLES;
use crate::error::Result;
use crate::metrics::{self, Classification, Estimate};

/// Default significance level of the regression test.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Seed of the bootstrap intervals (fixed: reports are reproducible).
pub const BOOTSTRAP_SEED: u64 = 7;

/// The outcome of one slice test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Enough samples and accuracy at or above the threshold.
    Pass,
    /// Enough samples and accuracy below the threshold.
    Fail,
    /// Fewer scored samples than the slice's minimum.
    NotEnoughData,
    /// The slice has no accuracy threshold (reported, never failing).
    NoThreshold,
}

/// A significant-or-not change of accuracy against the baseline run.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    /// The baseline's accuracy on the same slice.
    pub baseline_accuracy: Estimate,
    /// This run's accuracy minus the baseline's.
    pub delta: f64,
    /// One-sided two-proportion test p-value for "this run is worse".
    pub p_value: f64,
    /// Whether the drop is significant at the chosen level.
    pub significant: bool,
}

/// A run's scores on one slice (or overall).
#[derive(Debug, Clone, Serialize)]
pub struct SliceScore {
    /// The slice's name, or `(all)` for every prediction.
    pub slice: String,
    /// The frozen version scored (None for `(all)` and never-frozen slices).
    pub version: Option<u64>,
    /// Members of the frozen version.
    pub members: u64,
    /// Members with a prediction and a true label.
    pub scored: u64,
    /// Classification metrics (when the run predicts labels).
    pub classification: Option<Classification>,
    /// Log-loss (when the run has probabilities).
    pub log_loss: Option<f64>,
    /// Expected calibration error (when the run has probabilities).
    pub ece: Option<f64>,
    /// Mean of the per-sample score, with a bootstrap interval.
    pub mean_score: Option<Estimate>,
    /// Mean of the per-sample loss, with a bootstrap interval.
    pub mean_loss: Option<Estimate>,
    /// The slice test's threshold.
    pub min_accuracy: Option<f64>,
    /// The slice test's minimum sample count.
    pub min_samples: u64,
    /// The slice test's outcome.
    pub verdict: Verdict,
    /// Against the baseline run, when one was given.
    pub regression: Option<Regression>,
    /// Image ids of wrong predictions (up to 50), for failure galleries.
    pub failures: Vec<String>,
}

impl SliceScore {
    /// Accuracy, when the run predicts labels and something was scored.
    pub fn accuracy(&self) -> Option<Estimate> {
        self.classification.as_ref().map(|c| c.accuracy).filter(|a| a.n > 0)
    }

    /// Whether this slice fails the build: a failed test or a significant regression.
    pub fn is_failure(&self) -> bool {
        self.verdict == Verdict::Fail || self.regression.as_ref().is_some_and(|r| r.significant)
    }
}

/// A run scored on every slice.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's manifest.
    pub run: RunManifest,
    /// The baseline run's name, when one was given.
    pub baseline: Option<String>,
    /// Significance level of the regression test.
    pub alpha: f64,
    /// Every prediction.
    pub overall: SliceScore,
    /// Every slice of the run's dataset, worst accuracy first.
    pub slices: Vec<SliceScore>,
}

impl RunReport {
    /// Slices that fail the build.
    pub fn failures(&self) -> impl Iterator<Item = &SliceScore> {
        self.slices.iter().filter(|s| s.is_failure())
    }
}

/// A run's predictions indexed for scoring.
struct Scorable {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    predicted: Vec<Option<String>>,
    probs: Vec<Option<Vec<f64>>>,
    score: Vec<Option<f64>>,
    loss: Vec<Option<f64>>,
    classes: Vec<String>,
}

impl Scorable {
    fn new(manifest: &RunManifest, batch: &RecordBatch) -> Self {
        let ids = batch.column(0).as_string::<i32>();
        let predicted = batch.column(1).as_string::<i32>();
        let probs = batch.column(2).as_list::<i32>();
        let floats = |i: usize| {
            let c = batch.column(i).as_primitive::<Float64Type>();
            (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r))).collect::<Vec<_>>()
        };
        let n = batch.num_rows();
        let ids: Vec<String> = (0..n).map(|r| ids.value(r).to_string()).collect();
        Scorable {
            index: ids.iter().enumerate().map(|(r, id)| (id.clone(), r)).collect(),
            ids,
            predicted: (0..n).map(|r| predicted.is_valid(r).then(|| predicted.value(r).to_string())).collect(),
            probs: (0..n)
                .map(|r| probs.is_valid(r).then(|| probs.value(r).as_primitive::<Float64Type>().values().to_vec()))
                .collect(),
            score: floats(3),
            loss: floats(4),
            classes: manifest.classes.clone(),
        }
    }

    /// Scores the predictions of `rows` (prediction row numbers) against `truth`.
    fn score(&self, name: &str, rows: &[(usize, &str)], min_accuracy: Option<f64>, min_samples: u64) -> SliceScore {
        let labelled: Vec<(usize, &str)> = rows.iter().filter(|(r, _)| self.predicted[*r].is_some()).copied().collect();
        let classification = (!labelled.is_empty() || self.predicted.iter().any(Option::is_some)).then(|| {
            let truth: Vec<&str> = labelled.iter().map(|(_, t)| *t).collect();
            let predicted: Vec<&str> =
                labelled.iter().map(|(r, _)| self.predicted[*r].as_deref().expect("filtered")).collect();
            metrics::classify(&truth, &predicted)
        });
        let with_probs: Vec<(usize, &str)> = rows.iter().filter(|(r, _)| self.probs[*r].is_some()).copied().collect();
        let (log_loss, ece) = if with_probs.is_empty() {
            (None, None)
        } else {
            let probs: Vec<Vec<f64>> =
                with_probs.iter().map(|(r, _)| self.probs[*r].clone().expect("filtered")).collect();
            let truth_index: Vec<Option<usize>> =
                with_probs.iter().map(|(_, t)| self.classes.iter().position(|c| c == t)).collect();
            let confidence: Vec<f64> = probs.iter().map(|p| p.iter().copied().fold(0.0, f64::max)).collect();
            let correct: Vec<bool> =
                with_probs.iter().map(|(r, t)| self.predicted[*r].as_deref() == Some(*t)).collect();
            (
                Some(metrics::log_loss(&probs, &truth_index)),
                Some(metrics::expected_calibration_error(&confidence, &correct)),
            )
        };
        let mean = |values: &[Option<f64>]| {
            let v: Vec<f64> = rows.iter().filter_map(|(r, _)| values[*r]).collect();
            (!v.is_empty()).then(|| metrics::mean_with_bootstrap(&v, BOOTSTRAP_SEED))
        };
        let scored = rows.len() as u64;
        let accuracy = classification.as_ref().map(|c| c.accuracy.value);
        let verdict = match (scored < min_samples, min_accuracy, accuracy) {
            (true, _, _) => Verdict::NotEnoughData,
            (false, Some(min), Some(acc)) if acc < min => Verdict::Fail,
            (false, Some(_), Some(_)) => Verdict::Pass,
            _ => Verdict::NoThreshold,
        };
        let failures = labelled
            .iter()
            .filter(|(r, t)| self.predicted[*r].as_deref() != Some(*t))
            .take(50)
            .map(|(r, _)| self.ids[*r].clone())
            .collect();
        SliceScore {
            slice: name.to_string(),
            version: None,
            members: rows.len() as u64,
            scored,
            classification,
            log_loss,
            ece,
            mean_score: mean(&self.score),
            mean_loss: mean(&self.loss),
            min_accuracy,
            min_samples,
            verdict,
            regression: None,
            failures,
        }
    }
}

impl Engine {
    /// Validates and stores a model run (see [`slicetest_datasets::run::upload`]).
    pub async fn upload_run(&self, path: &std::path::Path, options: &UploadOptions) -> Result<RunManifest> {
        Ok(upload(&self.workspace, path, options).await?)
    }

    /// Every run's manifest, by name.
    pub fn runs(&self) -> Result<Vec<RunManifest>> {
        Ok(run_names(&self.workspace)?.iter().map(|r| read_run(&self.workspace, r)).collect::<Result<_, _>>()?)
    }

    /// Scores run `run` on every slice of its dataset; with a baseline, flags significant
    /// accuracy drops at level `alpha`.
    pub fn score_run(&self, run: &str, baseline: Option<&str>, alpha: f64) -> Result<RunReport> {
        let manifest = read_run(&self.workspace, run)?;
        let current = self.scored_slices(&manifest)?;
        let mut slices = current.1;
        if let Some(base) = baseline {
            let base_manifest = read_run(&self.workspace, base)?;
            let (base_overall, base_slices) = self.scored_slices(&base_manifest)?;
            let by_name: HashMap<&str, &SliceScore> = base_slices.iter().map(|s| (s.slice.as_str(), s)).collect();
            for s in &mut slices {
                s.regression = by_name.get(s.slice.as_str()).and_then(|b| regression(b, s, alpha));
            }
            let mut overall = current.0;
            overall.regression = regression(&base_overall, &overall, alpha);
            return Ok(self.report(manifest, Some(base.to_string()), alpha, overall, slices));
        }
        Ok(self.report(manifest, None, alpha, current.0, slices))
    }

    fn report(
        &self,
        run: RunManifest,
        baseline: Option<String>,
        alpha: f64,
        overall: SliceScore,
        mut slices: Vec<SliceScore>,
    ) -> RunReport {
        slices.sort_by(|a, b| {
            let key = |s: &SliceScore| s.accuracy().map_or(f64::INFINITY, |a| a.value);
            (!a.is_failure()).cmp(&!b.is_failure()).then(key(a).total_cmp(&key(b))).then(a.slice.cmp(&b.slice))
        });
        RunReport { run, baseline, alpha, overall, slices }
    }

    /// The overall score and every slice's score of one run.
    fn scored_slices(&self, manifest: &RunManifest) -> Result<(SliceScore, Vec<SliceScore>)> {
        let layout = self.workspace.layout();
        let predictions = read_predictions(&self.workspace, manifest)?;
        let scorable = Scorable::new(manifest, &predictions);
        let info = self.workspace.dataset(&manifest.dataset)?;
        let images =
            read_image_columns(layout, info.latest().expect("listed datasets have a version"), &["image_id", "label"])?;
        let ids = datafusion::arrow::compute::cast(
            images.column_by_name("image_id").expect("core column"),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let labels = datafusion::arrow::compute::cast(
            images.column_by_name("label").expect("core column"),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let (ids, labels) = (ids.as_string::<i32>(), labels.as_string::<i32>());
        let truth: HashMap<&str, &str> =
            (0..ids.len()).filter(|&i| labels.is_valid(i)).map(|i| (ids.value(i), labels.value(i))).collect();

        let all_rows: Vec<(usize, &str)> =
            scorable.ids.iter().enumerate().filter_map(|(r, id)| truth.get(id.as_str()).map(|t| (r, *t))).collect();
        let overall = scorable.score("(all)", &all_rows, None, 0);

        let mut slices = Vec::new();
        for name in slice::slice_names(layout)? {
            let definition: SliceDefinition = slice::read_definition(layout, &name)?;
            if definition.dataset != manifest.dataset {
                continue;
            }
            let min_samples = definition.min_samples.unwrap_or(DEFAULT_MIN_TEST_SAMPLES);
            if slice::frozen_versions(layout, &name)?.is_empty() {
                let mut s = scorable.score(&name, &[], definition.min_accuracy, min_samples);
                s.verdict = Verdict::NotEnoughData;
                slices.push(s);
                continue;
            }
            let frozen = slice::read_frozen(layout, &name, None)?;
            let members = slice::read_members(layout, &frozen)?;
            let member_ids = members.column(0).as_string::<i32>();
            let rows: Vec<(usize, &str)> = (0..member_ids.len())
                .filter_map(|i| {
                    let id = member_ids.value(i);
                    Some((*scorable.index.get(id)?, *truth.get(id)?))
                })
                .collect();
            let mut s = scorable.score(&name, &rows, definition.min_accuracy, min_samples);
            s.version = Some(frozen.version);
            s.members = frozen.members;
            slices.push(s);
        }
        Ok((overall, slices))
    }
}

fn regression(base: &SliceScore, new: &SliceScore, alpha: f64) -> Option<Regression> {
    let (b, n) = (base.accuracy()?, new.accuracy()?);
    let hits = |e: Estimate| (e.value * e.n as f64).round() as u64;
    let p_value = metrics::drop_p_value(hits(b), b.n, hits(n), n.n);
    Some(Regression { baseline_accuracy: b, delta: n.value - b.value, p_value, significant: p_value < alpha })
}
