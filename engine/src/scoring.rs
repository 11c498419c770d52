//! Scoring a model run on every slice: metrics with intervals, the slice test verdict, and
//! regressions against a baseline run.
//!
//! A slice is scored on the members of its latest frozen version that have a prediction
//! and a true label; "overall" is every prediction with a true label. Truth is the
//! `label` of the run's dataset (latest version).

use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use rayon::prelude::*;
use serde::Serialize;
use slicetest_datasets::run::{RunManifest, Task, UploadOptions, read_predictions, read_run, read_runs, upload_from};
use slicetest_datasets::slice::{self, SliceDefinition};
use slicetest_datasets::version::read_image_columns;

use crate::Engine;
use crate::curation::DEFAULT_MIN_TEST_SAMPLES;
use crate::detection::{DetectionMetrics, DetectionRegression, RunEvaluation};
use crate::error::Result;
use crate::metrics::{self, Classification, Estimate};
use crate::segmentation::{SegmentationEvaluation, SegmentationMetrics, SegmentationRegression};

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

/// One wrong prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The image.
    pub image_id: String,
    /// Its true label.
    pub truth: String,
    /// What the model said.
    pub predicted: String,
}

/// A number a classification run's slice score carries besides accuracy, shown as a
/// column of the terminal table (`slicetest report`) and of the HTML report's slice table,
/// which both read [`SLICE_METRICS`]. To add one: compute it where `SliceScore` is built
/// (a field, so the JSON report, `SliceScore`'s serde form, has it) and add its entry to
/// [`SLICE_METRICS`]; neither front end changes.
pub struct SliceMetric {
    /// The column's header.
    pub header: &'static str,
    /// What it measures, for a person (the HTML header's tooltip).
    pub description: &'static str,
    /// Its value on a slice score, when the run has what it needs.
    pub value: fn(&SliceScore) -> Option<Estimate>,
}

/// The metrics of a classification slice, in column order (after n and accuracy).
pub const SLICE_METRICS: &[SliceMetric] = &[
    SliceMetric {
        header: "macro-F1",
        description: "mean F1 over the classes present in the slice's true labels",
        value: |s| s.classification.as_ref().map(|c| c.macro_f1),
    },
    SliceMetric {
        header: "log-loss",
        description: "mean negative log-probability of the true label (runs with probabilities)",
        value: |s| s.log_loss,
    },
    SliceMetric {
        header: "ECE",
        description: "expected calibration error over 15 confidence bins (runs with probabilities)",
        value: |s| s.ece,
    },
];

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
    /// Log-loss, with a bootstrap interval (when the run has probabilities).
    pub log_loss: Option<Estimate>,
    /// Expected calibration error, with a bootstrap interval (when the run has probabilities).
    pub ece: Option<Estimate>,
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
    /// Wrong predictions (up to 50), for failure galleries.
    pub failures: Vec<Failure>,
    /// Detection metrics (when the run is a detection run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectionMetrics>,
    /// Against a baseline detection run, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_regression: Option<DetectionRegression>,
    /// Segmentation metrics (when the run is a segmentation run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationMetrics>,
    /// Against a baseline segmentation run, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segmentation_regression: Option<SegmentationRegression>,
    /// The slice test's thresholds other than accuracy (detection and segmentation runs), each checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// One threshold of a slice test and how the run did against it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is tested: `mAP`, `AP50`, `recall`, `recall.<category>`; for segmentation
    /// `mIoU`, `pixel_accuracy`, `IoU.<class>`.
    pub metric: String,
    /// The run's value on the slice; None when the slice has nothing to measure it on
    /// (no ground truth of that category): the test then has not enough data.
    pub value: Option<f64>,
    /// The threshold (met at equality).
    pub threshold: f64,
    /// Whether the value is at or above the threshold (false without a value).
    pub passed: bool,
    /// Why the check cannot be made at all: it names a class the run's dataset does not
    /// have (a typo in the slice's thresholds), said with the classes it has. Such a check
    /// fails the test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A slice's change against the baseline run ([`SliceScore::baseline_change`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineChange {
    /// The metric compared: `accuracy`, `mAP`, `mask mAP` or `mIoU`.
    pub metric: &'static str,
    /// The baseline's value on the slice.
    pub baseline: Option<f64>,
    /// This run's value minus the baseline's.
    pub delta: Option<f64>,
    /// The test's p-value.
    pub p_value: f64,
    /// Whether the drop is significant at the chosen level.
    pub significant: bool,
}

impl Check {
    /// The check as the terminal and the HTTP answer write it: `recall.person 0.410 <
    /// 0.500` (`>=` when it passed, `n/a` without a value), then its problem after a colon.
    pub fn text(&self) -> String {
        let value = self.value.map_or("n/a".into(), |v| format!("{v:.3}"));
        let op = if self.passed { ">=" } else { "<" };
        let problem = self.problem.as_ref().map_or(String::new(), |p| format!(": {p}"));
        format!("{} {value} {op} {:.3}{problem}", self.metric, self.threshold)
    }
}

impl SliceScore {
    /// Why a [`Verdict::NotEnoughData`] slice has not enough data: too few scored images
    /// (`< 30 images`), or, with enough of them, checks with nothing to measure on the slice
    /// (`nothing to measure for recall.car`: no ground truth of that class in it).
    pub fn not_enough_data_reason(&self) -> String {
        let unmeasured: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.value.is_none() && c.problem.is_none())
            .map(|c| c.metric.as_str())
            .collect();
        if self.scored >= self.min_samples && !unmeasured.is_empty() {
            format!("nothing to measure for {}", unmeasured.join(", "))
        } else {
            format!("< {} images", self.min_samples)
        }
    }

    /// Accuracy, when the run predicts labels and something was scored.
    pub fn accuracy(&self) -> Option<Estimate> {
        self.classification.as_ref().map(|c| c.accuracy).filter(|a| a.n > 0)
    }

    /// The number slices are ranked by: accuracy, a detection run's mAP, or a
    /// segmentation run's mIoU.
    pub fn headline(&self) -> Option<f64> {
        self.accuracy()
            .map(|a| a.value)
            .or_else(|| self.detection.as_ref().and_then(|d| d.coco.ap))
            .or_else(|| self.segmentation.as_ref().and_then(|s| s.scores.mean_iou))
    }

    /// The slice's change against the baseline run in its task's headline metric, one
    /// shape for every task; None without a baseline.
    pub fn baseline_change(&self) -> Option<BaselineChange> {
        if let Some(r) = &self.regression {
            let (baseline, delta) = (Some(r.baseline_accuracy.value), Some(r.delta));
            return Some(BaselineChange {
                metric: "accuracy",
                baseline,
                delta,
                p_value: r.p_value,
                significant: r.significant,
            });
        }
        if let Some(r) = &self.detection_regression {
            return Some(baseline_change_of("mAP", &r.boxes));
        }
        self.segmentation_regression.as_ref().map(|r| BaselineChange {
            metric: "mIoU",
            baseline: Some(r.baseline_miou),
            delta: Some(r.delta),
            p_value: r.p_value,
            significant: r.significant,
        })
    }

    /// A detection run's change in instance-mask mAP (`metric` `mask mAP`) against the
    /// baseline run, when both runs were scored with masks.
    pub fn mask_baseline_change(&self) -> Option<BaselineChange> {
        self.detection_regression.and_then(|r| r.mask).map(|m| baseline_change_of("mask mAP", &m))
    }

    /// A detection run's change in keypoint AP (`metric` `keypoint AP`) against the
    /// baseline run, when both runs were scored with poses.
    pub fn keypoint_baseline_change(&self) -> Option<BaselineChange> {
        self.detection_regression.and_then(|r| r.keypoints).map(|k| baseline_change_of("keypoint AP", &k))
    }

    /// Every change against the baseline run: the headline metric's
    /// ([`SliceScore::baseline_change`]), then [`SliceScore::mask_baseline_change`] and
    /// [`SliceScore::keypoint_baseline_change`].
    pub fn baseline_changes(&self) -> Vec<BaselineChange> {
        let extra = self.mask_baseline_change().into_iter().chain(self.keypoint_baseline_change());
        self.baseline_change().into_iter().chain(extra).collect()
    }

    /// Whether any metric regressed significantly against the baseline run.
    pub fn regressed(&self) -> bool {
        self.baseline_changes().iter().any(|c| c.significant)
    }

    /// Whether this slice fails the build: a failed test or a significant regression.
    pub fn is_failure(&self) -> bool {
        self.verdict == Verdict::Fail || self.regressed()
    }
}

/// A detection run's mAP change, as the change of `metric`.
fn baseline_change_of(metric: &'static str, change: &crate::detection::MapChange) -> BaselineChange {
    BaselineChange {
        metric,
        baseline: change.baseline_map,
        delta: change.delta,
        p_value: change.p_value,
        significant: change.significant,
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
    /// The dataset version whose ground truth (labels, boxes, masks) the run was scored
    /// against: the latest, which may be newer than the one it was uploaded against
    /// (`run.dataset_version`), so that a corrected label changes every run alike.
    pub truth_version: Option<u64>,
}

impl RunReport {
    /// Slices that fail the build, then `(all)` when the whole run regressed against the
    /// baseline (significant over every image, even where no one slice's drop is).
    pub fn failures(&self) -> impl Iterator<Item = &SliceScore> {
        self.slices.iter().chain([&self.overall]).filter(|s| s.is_failure())
    }
}

/// Hash maps keyed by image id: foldhash instead of SipHash, since scoring hashes every id
/// of a run (millions) and the keys are not attacker-chosen collisions worth defending.
type IdMap<'a, V> = HashMap<&'a str, V, foldhash::fast::RandomState>;

/// A run's predictions, with labels interned as indices into one sorted dictionary so that
/// scoring a slice touches no strings.
struct Scorable<'a> {
    ids: &'a StringArray,
    /// Sorted: the dataset's labels and every predicted label.
    labels: Vec<String>,
    predicted: Vec<Option<u32>>,
    truth: Vec<Option<u32>>,
    probs: Vec<Option<Vec<f64>>>,
    /// For each label index, its column in `probs` (None: the run gave no probability for it).
    prob_column: Vec<Option<usize>>,
    score: Vec<Option<f64>>,
    loss: Vec<Option<f64>>,
    has_predicted: bool,
}

impl<'a> Scorable<'a> {
    fn new(manifest: &RunManifest, batch: &'a RecordBatch, truth: &IdMap<'_, &str>) -> Self {
        let ids = batch.column(0).as_string::<i32>();
        let predicted = batch.column(1).as_string::<i32>();
        let probs = batch.column(2).as_list::<i32>();
        let floats = |i: usize| {
            let c = batch.column(i).as_primitive::<Float64Type>();
            (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r))).collect::<Vec<_>>()
        };
        let n = batch.num_rows();
        // Few distinct labels, millions of samples: dedupe with a hash set, then sort.
        let mut distinct: HashSet<&str, foldhash::fast::RandomState> = HashSet::default();
        distinct.extend(truth.values().copied());
        distinct.extend(predicted.iter().flatten());
        let mut labels: Vec<String> = distinct.into_iter().map(str::to_string).collect();
        labels.sort();
        let mut index: IdMap<u32> = IdMap::default();
        index.extend(labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)));
        Scorable {
            ids,
            predicted: (0..n).map(|r| predicted.is_valid(r).then(|| index[predicted.value(r)])).collect(),
            truth: (0..n).map(|r| truth.get(ids.value(r)).map(|t| index[t])).collect(),
            probs: (0..n)
                .map(|r| probs.is_valid(r).then(|| probs.value(r).as_primitive::<Float64Type>().values().to_vec()))
                .collect(),
            prob_column: labels.iter().map(|l| manifest.classes.iter().position(|c| c == l)).collect(),
            labels,
            score: floats(3),
            loss: floats(4),
            has_predicted: predicted.null_count() < n,
        }
    }

    /// Scores prediction rows `rows` (each has a true label).
    fn score(&self, name: &str, rows: &[u32], min_accuracy: Option<f64>, min_samples: u64) -> SliceScore {
        let pairs: Vec<(u32, u32)> =
            rows.iter().filter_map(|&r| Some((self.truth[r as usize]?, self.predicted[r as usize]?))).collect();
        let classification =
            self.has_predicted.then(|| metrics::classify_indexed(&pairs, &self.labels, BOOTSTRAP_SEED));
        let with_probs: Vec<u32> = rows.iter().copied().filter(|&r| self.probs[r as usize].is_some()).collect();
        let (log_loss, ece) = if with_probs.is_empty() {
            (None, None)
        } else {
            let probs: Vec<Vec<f64>> =
                with_probs.iter().map(|&r| self.probs[r as usize].clone().expect("filtered")).collect();
            let truth_index: Vec<Option<usize>> =
                with_probs.iter().map(|&r| self.truth[r as usize].and_then(|t| self.prob_column[t as usize])).collect();
            let confidence: Vec<f64> = probs.iter().map(|p| p.iter().copied().fold(0.0, f64::max)).collect();
            let correct: Vec<bool> =
                with_probs.iter().map(|&r| self.predicted[r as usize] == self.truth[r as usize]).collect();
            let losses = metrics::sample_log_losses(&probs, &truth_index);
            let (log_loss, ece) = metrics::probability_scores(&losses, &confidence, &correct, BOOTSTRAP_SEED);
            (Some(log_loss), Some(ece))
        };
        let mean = |values: &[Option<f64>]| {
            let v: Vec<f64> = rows.iter().filter_map(|&r| values[r as usize]).collect();
            (!v.is_empty()).then(|| metrics::mean_with_bootstrap(&v, BOOTSTRAP_SEED))
        };
        let scored = rows.len() as u64;
        let accuracy = classification.as_ref().map(|c| c.accuracy.value);
        let verdict = verdict(scored, min_samples, min_accuracy, accuracy);
        let failures = rows
            .iter()
            .filter(|&&r| self.predicted[r as usize].is_some() && self.predicted[r as usize] != self.truth[r as usize])
            .take(50)
            .map(|&r| {
                let label = |l: Option<u32>| l.map_or(String::new(), |l| self.labels[l as usize].clone());
                Failure {
                    image_id: self.ids.value(r as usize).to_string(),
                    truth: label(self.truth[r as usize]),
                    predicted: label(self.predicted[r as usize]),
                }
            })
            .collect();
        SliceScore {
            slice: name.to_string(),
            version: None,
            members: scored,
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
            detection: None,
            detection_regression: None,
            segmentation: None,
            segmentation_regression: None,
            checks: Vec::new(),
        }
    }
}

impl Engine {
    /// Validates and stores a model run (see [`slicetest_datasets::run::upload`]); a
    /// folder is a segmentation run's predicted masks (see [`Engine::upload_segmentation_run`])
    /// unless it holds YOLO label files, and so is a file of per-class COCO RLE masks (see
    /// [`slicetest_datasets::run::mask_results`]): an image's class masks must not overlap
    /// and must cover it, except in a mask set made from COCO annotations, whose background
    /// class takes the pixels no mask covers.
    pub async fn upload_run(&self, path: &std::path::Path, options: &UploadOptions) -> Result<RunManifest> {
        self.upload_run_from(path, &path.display().to_string(), options, None).await
    }

    /// Like [`Engine::upload_run`], recording `source` in `run.json` as where the
    /// predictions came from (the API records the uploaded file's name, or `upload`, not
    /// the temporary file it spooled the body to); with `mask_source`, the file is
    /// per-class RLE masks scored against that mask set.
    pub async fn upload_run_from(
        &self,
        path: &std::path::Path,
        source: &str,
        options: &UploadOptions,
        mask_source: Option<&str>,
    ) -> Result<RunManifest> {
        use slicetest_datasets::run::{archive, mask_results};
        // A .zip is the folder (or the one file) it was made from: how a folder of YOLO
        // labels or PNG masks travels over HTTP.
        if archive::is_zip(path) {
            let unpacked = archive::unpack_zip(path)?;
            if archive::is_zip(unpacked.root()) {
                return Err(crate::error::EngineError::InvalidArgument(format!(
                    "{}: holds only another ZIP archive; unpack it and send that one",
                    path.display()
                )));
            }
            let uploaded = Box::pin(self.upload_run_from(unpacked.root(), source, options, mask_source)).await;
            return uploaded.map_err(|e| crate::error::EngineError::Reworded {
                message: unpacked.describe(&e.to_string(), path),
                original: Box::new(e),
            });
        }
        if options.instances && (mask_source.is_some() || path.is_dir()) {
            return Err(crate::error::EngineError::InvalidArgument(
                "--instances reads instance masks as detections; --mask-source and a folder of PNG masks are a \
                 segmentation run's per-class masks: give one or the other"
                    .into(),
            ));
        }
        // A folder is a segmentation run's PNG masks, unless it holds YOLO label files.
        let yolo_labels = || slicetest_datasets::run::detections::yolo_labels_dir(path).is_some();
        if path.is_dir() && (mask_source.is_some() || !yolo_labels()) {
            return self.upload_segmentation(path, source, options, mask_source, None);
        }
        if !options.instances && (mask_source.is_some() || mask_results::is_mask_results(path).await?) {
            let results = mask_results::read_mask_results(path).await?;
            return self.upload_segmentation(path, source, options, mask_source, Some(results));
        }
        Ok(upload_from(&self.workspace, path, source, options).await?)
    }

    /// One run's manifest.
    pub fn run(&self, name: &str) -> Result<RunManifest> {
        Ok(read_run(&self.workspace, name)?)
    }

    /// Every run's manifest, by name.
    pub fn runs(&self) -> Result<Vec<RunManifest>> {
        Ok(read_runs(&self.workspace)?)
    }

    /// Scores run `run` on every slice of its dataset; with a baseline, flags significant
    /// accuracy drops at level `alpha`.
    pub fn score_run(&self, run: &str, baseline: Option<&str>, alpha: f64) -> Result<RunReport> {
        let manifest = read_run(&self.workspace, run)?;
        if manifest.task != Task::Classification {
            let base = baseline.map(|b| read_run(&self.workspace, b)).transpose()?;
            let (overall, slices) = if manifest.task == Task::Detection {
                self.scored_detection_slices(&manifest, base.as_ref(), alpha)?
            } else {
                self.scored_segmentation_slices(&manifest, base.as_ref(), alpha)?
            };
            return Ok(self.report(manifest, baseline.map(str::to_string), alpha, overall, slices));
        }
        let (mut overall, mut slices) = self.scored_slices(&manifest)?;
        if let Some(base) = baseline {
            let (base_overall, base_slices) = self.scored_slices(&read_run(&self.workspace, base)?)?;
            let by_name: HashMap<&str, &SliceScore> = base_slices.iter().map(|s| (s.slice.as_str(), s)).collect();
            for s in &mut slices {
                s.regression = by_name.get(s.slice.as_str()).and_then(|b| regression(b, s, alpha));
            }
            overall.regression = regression(&base_overall, &overall, alpha);
        }
        Ok(self.report(manifest, baseline.map(str::to_string), alpha, overall, slices))
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
            let key = |s: &SliceScore| s.headline().unwrap_or(f64::INFINITY);
            (!a.is_failure()).cmp(&!b.is_failure()).then(key(a).total_cmp(&key(b))).then(a.slice.cmp(&b.slice))
        });
        let truth_version = self.workspace.latest(&run.dataset).ok().map(|v| v.version);
        RunReport { run, baseline, alpha, overall, slices, truth_version }
    }

    /// The overall score and every slice's score of one run.
    fn scored_slices(&self, manifest: &RunManifest) -> Result<(SliceScore, Vec<SliceScore>)> {
        match manifest.task {
            Task::Detection => return self.scored_detection_slices(manifest, None, DEFAULT_ALPHA),
            Task::Segmentation => return self.scored_segmentation_slices(manifest, None, DEFAULT_ALPHA),
            Task::Classification => {}
        }
        let layout = self.workspace.layout();
        let predictions = read_predictions(&self.workspace, manifest)?;
        let latest = self.workspace.latest(&manifest.dataset)?;
        let images = read_image_columns(layout, &latest, &["image_id", "label"])?;
        let ids = cast(images.column_by_name("image_id").expect("core column"), &DataType::Utf8)?;
        let labels = cast(images.column_by_name("label").expect("core column"), &DataType::Utf8)?;
        let (ids, labels) = (ids.as_string::<i32>(), labels.as_string::<i32>());
        let mut truth: IdMap<&str> = IdMap::with_capacity_and_hasher(ids.len(), Default::default());
        truth.extend((0..ids.len()).filter(|&i| labels.is_valid(i)).map(|i| (ids.value(i), labels.value(i))));

        let scorable = Scorable::new(manifest, &predictions, &truth);
        let mut row_of: IdMap<u32> = IdMap::with_capacity_and_hasher(scorable.ids.len(), Default::default());
        row_of.extend(scorable.ids.iter().enumerate().filter_map(|(r, id)| Some((id?, r as u32))));
        let all_rows: Vec<u32> =
            (0..scorable.ids.len() as u32).filter(|&r| scorable.truth[r as usize].is_some()).collect();
        let overall = scorable.score("(all)", &all_rows, None, 0);

        let slices = self.score_every_slice(&manifest.dataset, |name, definition, min_samples, members| {
            let rows: Vec<u32> = members
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|id| row_of.get(id).copied())
                .filter(|&r| scorable.truth[r as usize].is_some())
                .collect();
            scorable.score(name, &rows, definition.min_accuracy, min_samples)
        })?;
        Ok((overall, slices))
    }

    /// Every slice of `dataset`, scored in parallel (each reads and hash-checks its own
    /// frozen members) by `score(name, definition, min_samples, members)`, with the member
    /// ids of its latest frozen version, or None for a slice never frozen, whose verdict is
    /// then "not enough data". The frozen version and its member count are filled in here.
    fn score_every_slice(
        &self,
        dataset: &str,
        score: impl Fn(&str, &SliceDefinition, u64, Option<&StringArray>) -> SliceScore + Sync,
    ) -> Result<Vec<SliceScore>> {
        let layout = self.workspace.layout();
        let slices: Vec<Option<SliceScore>> = slice::slice_names(layout)?
            .par_iter()
            .map(|name| -> Result<Option<SliceScore>> {
                let definition: SliceDefinition = slice::read_definition(layout, name)?;
                if definition.dataset != dataset {
                    return Ok(None);
                }
                let min_samples = definition.min_samples.unwrap_or(DEFAULT_MIN_TEST_SAMPLES);
                let Some(frozen) = slice::latest_frozen(layout, name)? else {
                    let mut s = score(name, &definition, min_samples, None);
                    s.verdict = Verdict::NotEnoughData;
                    return Ok(Some(s));
                };
                let members = slice::read_members(layout, &frozen)?;
                let mut s = score(name, &definition, min_samples, Some(members.column(0).as_string::<i32>()));
                s.version = Some(frozen.version);
                s.members = frozen.members;
                Ok(Some(s))
            })
            .collect::<Result<_>>()?;
        Ok(slices.into_iter().flatten().collect())
    }
}

impl Engine {
    /// A detection run on all images and on every slice: matched once, each slice
    /// re-accumulated over its members; with a baseline detection run, a paired bootstrap
    /// test of each slice's mAP drop at level `alpha`.
    fn scored_detection_slices(
        &self,
        manifest: &RunManifest,
        baseline: Option<&RunManifest>,
        alpha: f64,
    ) -> Result<(SliceScore, Vec<SliceScore>)> {
        let evaluate = |run: &RunManifest| -> Result<std::sync::Arc<RunEvaluation>> {
            if run.task != Task::Detection || run.dataset != manifest.dataset {
                return Err(crate::error::EngineError::InvalidArgument(format!(
                    "baseline {} is not a detection run on dataset {}",
                    run.run, manifest.dataset
                )));
            }
            self.evaluations.get(&self.workspace, run)
        };
        let evaluation = evaluate(manifest)?;
        let base = baseline.map(evaluate).transpose()?;
        let score = |include: &[bool], curves: bool| evaluation.score(include, base.as_deref(), alpha, curves);
        let all = evaluation.everything();
        let (metrics, regression) = score(&all, true);
        let mut overall = detection_score("(all)", metrics, None, 0);
        overall.detection_regression = regression;
        let slices = self.score_every_slice(&manifest.dataset, |name, definition, min_samples, members| {
            let Some(members) = members else {
                return detection_score(name, evaluation.slice([]), Some(definition), min_samples);
            };
            let (metrics, regression) = score(&evaluation.membership(members.iter().flatten()), false);
            let mut s = detection_score(name, metrics, Some(definition), min_samples);
            s.detection_regression = regression;
            s
        })?;
        Ok((overall, slices))
    }
}

impl Engine {
    /// A segmentation run on all its images and on every slice: each slice sums its
    /// members' confusion matrices; with a baseline segmentation run, a paired bootstrap
    /// test of each slice's mIoU drop at level `alpha`.
    fn scored_segmentation_slices(
        &self,
        manifest: &RunManifest,
        baseline: Option<&RunManifest>,
        alpha: f64,
    ) -> Result<(SliceScore, Vec<SliceScore>)> {
        let evaluate = |run: &RunManifest| -> Result<SegmentationEvaluation> {
            if run.task != Task::Segmentation || run.dataset != manifest.dataset {
                return Err(crate::error::EngineError::InvalidArgument(format!(
                    "baseline {} is not a segmentation run on dataset {}",
                    run.run, manifest.dataset
                )));
            }
            self.segmentation_evaluation(run)
        };
        let evaluation = evaluate(manifest)?;
        let base = baseline.map(evaluate).transpose()?;
        let (metrics, regression) = evaluation.score(&evaluation.everything(), base.as_ref(), alpha);
        let mut overall = segmentation_score("(all)", metrics, None, 0);
        overall.segmentation_regression = regression;
        let slices = self.score_every_slice(&manifest.dataset, |name, definition, min_samples, members| {
            let rows = evaluation.membership(members.into_iter().flatten().flatten());
            let (metrics, regression) = evaluation.score(&rows, base.as_ref(), alpha);
            let mut s = segmentation_score(name, metrics, Some(definition), min_samples);
            s.segmentation_regression = regression;
            s
        })?;
        Ok((overall, slices))
    }
}

/// The checks of a slice test: each threshold that is set, against its value (an absent
/// value, nothing to measure on the slice, is not passed).
fn checks(thresholds: impl IntoIterator<Item = (String, Option<f64>, Option<f64>)>) -> Vec<Check> {
    thresholds
        .into_iter()
        .filter_map(|(metric, value, threshold)| {
            threshold.map(|threshold| Check {
                metric,
                value,
                threshold,
                passed: value.is_some_and(|v| v >= threshold),
                problem: None,
            })
        })
        .collect()
}

/// The checks of per-class thresholds (`recall.<category>`, `IoU.<class>`): each against
/// `value(class)` when `class` is one of `known` (the run's classes), else a failed check
/// whose problem names the class, the closest known one and all of them — a threshold on
/// a class the dataset does not have never passes unnoticed.
fn class_checks<'a>(
    metric: &str,
    (kind, kinds): (&str, &str),
    thresholds: impl IntoIterator<Item = (&'a String, &'a f64)>,
    known: &[String],
    value: impl Fn(&str) -> Option<f64>,
) -> Vec<Check> {
    thresholds
        .into_iter()
        .map(|(class, &threshold)| {
            let metric = format!("{metric}.{class}");
            if known.contains(class) {
                let value = value(class);
                return Check {
                    metric,
                    value,
                    threshold,
                    passed: value.is_some_and(|v| v >= threshold),
                    problem: None,
                };
            }
            let problem = unknown_class(class, (kind, kinds), "the run's dataset", known);
            Check { metric, value: None, threshold, passed: false, problem: Some(problem) }
        })
        .collect()
}

/// What is wrong with a threshold on `class`, which is not one of `known` (the classes of
/// `of`): the closest known one and all of them. `slice create` says the same.
pub(crate) fn unknown_class(class: &str, (kind, kinds): (&str, &str), of: &str, known: &[String]) -> String {
    let hint = slicetest_datasets::closest(class, known).map_or(String::new(), |c| format!("did you mean {c:?}? "));
    format!(
        "{class:?} is not a {kind} of {of}; {hint}its {kinds} are: {}",
        known.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
    )
}

/// The verdict of a slice test made of checks: a check that cannot be made (an unknown
/// class) fails it whatever the data; then too few images is not enough data, a missed
/// threshold fails, and a check with nothing to measure on the slice (no ground truth of
/// its class) is not enough data rather than a pass.
fn checks_verdict(scored: u64, min_samples: u64, checks: &[Check]) -> Verdict {
    if checks.iter().any(|c| c.problem.is_some()) {
        return Verdict::Fail;
    }
    if scored < min_samples {
        return Verdict::NotEnoughData;
    }
    if checks.is_empty() {
        return Verdict::NoThreshold;
    }
    if checks.iter().any(|c| c.value.is_some() && !c.passed) {
        return Verdict::Fail;
    }
    if checks.iter().any(|c| c.value.is_none()) {
        return Verdict::NotEnoughData;
    }
    Verdict::Pass
}

/// A segmentation run's score on one slice, tested against the slice's segmentation thresholds.
fn segmentation_score(
    name: &str,
    metrics: SegmentationMetrics,
    definition: Option<&SliceDefinition>,
    min_samples: u64,
) -> SliceScore {
    let checks = match definition {
        None => Vec::new(),
        Some(d) => {
            let class_iou = |class: &str| metrics.classes.iter().find(|c| c.class == class).and_then(|c| c.iou);
            let known: Vec<String> = metrics.classes.iter().map(|c| c.class.clone()).collect();
            let mut checks = checks([
                ("mIoU".to_string(), metrics.scores.mean_iou, d.min_miou),
                ("pixel_accuracy".to_string(), metrics.scores.pixel_accuracy, d.min_pixel_accuracy),
            ]);
            checks.extend(class_checks("IoU", ("class", "classes"), &d.min_class_iou, &known, class_iou));
            checks
        }
    };
    SliceScore {
        slice: name.to_string(),
        version: None,
        members: metrics.images,
        scored: metrics.images,
        classification: None,
        log_loss: None,
        ece: None,
        mean_score: None,
        mean_loss: None,
        min_accuracy: definition.and_then(|d| d.min_accuracy),
        min_samples,
        verdict: checks_verdict(metrics.images, min_samples, &checks),
        regression: None,
        failures: Vec::new(),
        detection: None,
        detection_regression: None,
        segmentation: Some(metrics),
        segmentation_regression: None,
        checks,
    }
}

/// A detection run's score on one slice, tested against the slice's detection thresholds.
fn detection_score(
    name: &str,
    metrics: DetectionMetrics,
    definition: Option<&SliceDefinition>,
    min_samples: u64,
) -> SliceScore {
    let checks = match definition {
        None => Vec::new(),
        Some(d) => {
            let class_recall =
                |category: &str| metrics.classes.iter().find(|c| c.category == category).and_then(|c| c.counts.recall);
            let known: Vec<String> = metrics.classes.iter().map(|c| c.category.clone()).collect();
            let mut checks = checks([
                ("mAP".to_string(), metrics.coco.ap, d.min_map),
                ("AP50".to_string(), metrics.coco.ap50, d.min_ap50),
                ("mask mAP".to_string(), metrics.mask.and_then(|m| m.ap), d.min_mask_map),
                ("keypoint AP".to_string(), metrics.keypoints.and_then(|k| k.ap), d.min_keypoint_map),
                ("recall".to_string(), metrics.counts.recall, d.min_recall),
            ]);
            // A mask threshold on a run scored without masks fails with the reason, never
            // as "nothing to measure on this slice".
            if metrics.mask.is_none()
                && let Some(check) = checks.iter_mut().find(|c| c.metric == "mask mAP")
            {
                check.problem = Some(metrics.mask_note.clone().unwrap_or_else(|| {
                    "the run has no instance masks (a \"segmentation\" on every detection) to score".to_string()
                }));
            }
            if metrics.keypoints.is_none()
                && let Some(check) = checks.iter_mut().find(|c| c.metric == "keypoint AP")
            {
                check.problem = Some(
                    metrics
                        .keypoint_note
                        .clone()
                        .unwrap_or_else(|| "the run has no poses (COCO results' \"keypoints\") to score".to_string()),
                );
            }
            checks.extend(class_checks(
                "recall",
                ("category", "categories"),
                &d.min_class_recall,
                &known,
                class_recall,
            ));
            checks
        }
    };
    let verdict = checks_verdict(metrics.images, min_samples, &checks);
    SliceScore {
        slice: name.to_string(),
        version: None,
        members: metrics.images,
        scored: metrics.images,
        classification: None,
        log_loss: None,
        ece: None,
        mean_score: None,
        mean_loss: None,
        min_accuracy: definition.and_then(|d| d.min_accuracy),
        min_samples,
        verdict,
        regression: None,
        failures: Vec::new(),
        detection: Some(metrics),
        detection_regression: None,
        segmentation: None,
        segmentation_regression: None,
        checks,
    }
}

/// The slice test's outcome: too few scored samples first, then the threshold (met at
/// equality), else no threshold to test (also when the run predicts no labels).
fn verdict(scored: u64, min_samples: u64, min_accuracy: Option<f64>, accuracy: Option<f64>) -> Verdict {
    match (scored < min_samples, min_accuracy, accuracy) {
        (true, _, _) => Verdict::NotEnoughData,
        (false, Some(min), Some(acc)) if acc < min => Verdict::Fail,
        (false, Some(_), Some(_)) => Verdict::Pass,
        _ => Verdict::NoThreshold,
    }
}

fn regression(base: &SliceScore, new: &SliceScore, alpha: f64) -> Option<Regression> {
    let (b, n) = (base.accuracy()?, new.accuracy()?);
    let hits = |e: Estimate| (e.value * e.n as f64).round() as u64;
    let p_value = metrics::drop_p_value(hits(b), b.n, hits(n), n.n);
    Some(Regression { baseline_accuracy: b, delta: n.value - b.value, p_value, significant: p_value < alpha })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_at_their_boundaries() {
        assert_eq!(verdict(30, 30, Some(0.9), Some(0.9)), Verdict::Pass, "the threshold is met at equality");
        assert_eq!(verdict(30, 30, Some(0.9), Some(0.899)), Verdict::Fail);
        assert_eq!(verdict(29, 30, Some(0.9), Some(1.0)), Verdict::NotEnoughData, "too few samples wins");
        assert_eq!(verdict(29, 30, None, None), Verdict::NotEnoughData);
        assert_eq!(verdict(100, 30, None, Some(0.1)), Verdict::NoThreshold);
        assert_eq!(verdict(100, 30, Some(0.9), None), Verdict::NoThreshold, "no labels predicted: nothing to test");
        assert_eq!(verdict(0, 0, Some(0.5), Some(0.0)), Verdict::Fail);
    }

    #[test]
    fn a_threshold_on_an_unknown_class_fails_and_one_with_nothing_to_measure_is_not_enough_data() {
        let known = vec!["person".to_string(), "traffic light".to_string()];
        let recall = |c: &str| (c == "person").then_some(0.8);
        let checks_of = |thresholds: &[(&str, f64)]| {
            let thresholds: std::collections::BTreeMap<String, f64> =
                thresholds.iter().map(|(c, t)| (c.to_string(), *t)).collect();
            class_checks("recall", ("category", "categories"), &thresholds, &known, recall)
        };

        let typo = checks_of(&[("trafic_light", 0.99)]);
        assert_eq!((typo[0].metric.as_str(), typo[0].value, typo[0].passed), ("recall.trafic_light", None, false));
        assert_eq!(
            typo[0].problem.as_deref(),
            Some(
                "\"trafic_light\" is not a category of the run's dataset; did you mean \"traffic light\"? its \
                 categories are: \"person\", \"traffic light\""
            )
        );
        assert_eq!(checks_verdict(100, 30, &typo), Verdict::Fail);
        assert_eq!(checks_verdict(0, 30, &typo), Verdict::Fail, "a broken test fails whatever the data");
        let far = checks_of(&[("zebra", 0.5)]);
        assert!(
            far[0].problem.as_deref().unwrap().starts_with("\"zebra\" is not a category of the run's dataset; its")
        );

        // A known category the slice has no object of: nothing to measure, not a pass.
        let absent = checks_of(&[("traffic light", 0.5)]);
        assert_eq!((absent[0].value, absent[0].passed, absent[0].problem.is_none()), (None, false, true));
        assert_eq!(checks_verdict(100, 30, &absent), Verdict::NotEnoughData);
        assert_eq!(checks_verdict(100, 30, &checks_of(&[("person", 0.8)])), Verdict::Pass, "met at equality");
        assert_eq!(checks_verdict(100, 30, &checks_of(&[("person", 0.9)])), Verdict::Fail);
        assert_eq!(
            checks_verdict(100, 30, &checks_of(&[("person", 0.9), ("traffic light", 0.5)])),
            Verdict::Fail,
            "a missed threshold fails beside one with nothing to measure"
        );
        assert_eq!(checks_verdict(10, 30, &checks_of(&[("person", 0.5)])), Verdict::NotEnoughData);
        assert_eq!(checks_verdict(100, 30, &[]), Verdict::NoThreshold);
        let unmeasured = checks([("mAP".to_string(), None, Some(0.3)), ("AP50".to_string(), Some(0.9), None)]);
        assert_eq!(unmeasured.len(), 1, "only set thresholds are checks");
        assert_eq!(checks_verdict(100, 30, &unmeasured), Verdict::NotEnoughData);
    }
}
