//! Slice discovery: the populations where a run fails, found instead of guessed.
//!
//! `Engine::discover` joins a run's predictions to its dataset's `images` (manifest
//! columns, every tag, split, label), turns the columns into predicates
//! ([`predicates`]), and searches conjunctions of them with SliceLine ([`sliceline`]) for
//! the slices with the most errors for their size.
//!
//! Searching many slices finds some that look bad by chance. So the images are split in
//! two halves by a seeded hash of their id: the search sees only the *discovery* half, and
//! every slice it returns is re-tested on the *confirmation* half, whose rows it never
//! saw: a one-sided test that the slice's error rate is above the rest's (Fisher's exact
//! test for 0/1 errors, Welch's t-test for a loss), then Benjamini–Hochberg over all the
//! slices tested. Only slices confirmed at the false-discovery rate `q` are reported by
//! default. Membership is defined by `images` columns only, never by the prediction, so a
//! confirmed slice is a query that can be saved and frozen as a test.

pub mod predicates;
pub mod sliceline;
pub mod stats;
pub mod table_function;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slicetest_datasets::run::{Task, read_predictions};

use self::predicates::quote_column;
use self::sliceline::{Bitmap, Errors, Predicate, SearchSettings, bitmap_from};
use crate::error::{EngineError, Result};
use crate::metrics::wilson;
use crate::{Engine, RunManifest};

/// What `slicetest discover` should do.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoverOptions {
    /// How many slices to report.
    pub k: usize,
    /// Most predicates in a slice.
    pub max_level: usize,
    /// Fewest images a slice must have in the discovery half.
    pub min_support: u64,
    /// SliceLine's α: weight of the error rate against the size penalty, in (0, 1].
    pub alpha: f64,
    /// Only these columns of `images` (default: all that are usable).
    pub columns: Option<Vec<String>>,
    /// Seeds the split into discovery and confirmation halves.
    pub seed: u64,
    /// The false-discovery rate of the confirmation (Benjamini–Hochberg).
    pub fdr: f64,
    /// Also report slices that the confirmation half did not confirm.
    pub include_unconfirmed: bool,
    /// Regression mode: an image's error is "wrong now, right in this baseline run"
    /// (images the baseline did not predict are left out).
    pub baseline: Option<String>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            k: 10,
            max_level: 3,
            min_support: 30,
            alpha: 0.95,
            columns: None,
            seed: 7,
            fdr: 0.05,
            include_unconfirmed: false,
            baseline: None,
        }
    }
}

/// A slice's numbers on one half of the images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HalfStats {
    /// Images of the slice in this half.
    pub size: u64,
    /// Their summed error (the number of errors, for 0/1 errors).
    pub errors: f64,
    /// Mean error in the slice.
    pub error_rate: f64,
    /// 95% interval of the error rate (Wilson for 0/1 errors, normal for a loss).
    pub interval: [f64; 2],
    /// Mean error of the half's other images.
    pub rest_rate: f64,
    /// `error_rate / rest_rate` (infinite when the rest has no error).
    pub lift: f64,
}

/// A discovered slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredSlice {
    /// Its predicates, for people: `["label = 'Shirt'", "brightness < 0.21"]`.
    pub predicates: Vec<String>,
    /// The query selecting it: `SELECT image_id FROM images WHERE … AND …`.
    pub query: String,
    /// SliceLine's score on the discovery half.
    pub score: f64,
    /// Numbers on the discovery half (what the search saw).
    pub discovery: HalfStats,
    /// Numbers on the confirmation half (what the test used).
    pub confirmation: HalfStats,
    /// One-sided p-value of the confirmation test.
    pub p_value: f64,
    /// Benjamini–Hochberg adjusted p-value over every tested slice.
    pub adjusted_p: f64,
    /// Whether `adjusted_p <= fdr`.
    pub confirmed: bool,
}

/// What a discovery run found, and what it looked at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovery {
    /// The run.
    pub run: String,
    /// Its dataset.
    pub dataset: String,
    /// `misclassification` (0/1), `loss` (the run's per-image loss) or `regression`
    /// (wrong now, right in the baseline).
    pub error: String,
    /// The baseline run of regression mode.
    pub baseline: Option<String>,
    /// Scored images (with a prediction and a label or loss).
    pub images: u64,
    /// Images in the discovery / confirmation halves.
    pub halves: [u64; 2],
    /// Mean error over all scored images.
    pub mean_error: f64,
    /// The columns turned into predicates.
    pub columns: Vec<String>,
    /// Columns not used, and why.
    pub skipped: Vec<(String, String)>,
    /// Slices the search returned and the confirmation tested.
    pub tested: usize,
    /// The slices reported: confirmed ones (all tested ones with `include_unconfirmed`),
    /// best score first.
    pub slices: Vec<DiscoveredSlice>,
    /// The settings used.
    pub k: usize,
    /// The settings used.
    pub max_level: usize,
    /// The settings used.
    pub min_support: u64,
    /// The settings used.
    pub alpha: f64,
    /// The settings used.
    pub fdr: f64,
    /// The settings used.
    pub seed: u64,
}

/// Which half an image is in: a hash of the seed and its id, so the split does not depend
/// on row order and a rerun splits the same way.
fn in_discovery_half(seed: u64, image_id: &str) -> bool {
    let digest = Sha256::new().chain_update(seed.to_le_bytes()).chain_update(image_id.as_bytes()).finalize();
    digest[0] & 1 == 0
}

/// The rows of `bitmap` that are also in `subset` (ascending row indices), renumbered
/// 0, 1, 2, … in `subset`'s order.
fn restrict(bitmap: &Bitmap, subset: &[usize]) -> Bitmap {
    bitmap_from(subset.iter().map(|&r| bitmap[r / 64] >> (r % 64) & 1 == 1))
}

impl Engine {
    /// Finds the slices of `images` where run `run` errs most, confirmed on held-apart
    /// images (see the module docs).
    pub async fn discover(&self, run: &str, options: &DiscoverOptions) -> Result<Discovery> {
        let bad = |message: String| EngineError::InvalidArgument(message);
        if !(options.alpha > 0.0 && options.alpha <= 1.0) {
            return Err(bad(format!("--alpha must be in (0, 1], not {}", options.alpha)));
        }
        if !(options.fdr > 0.0 && options.fdr < 1.0) {
            return Err(bad(format!("--fdr must be between 0 and 1, not {}", options.fdr)));
        }
        if options.k == 0 || options.max_level == 0 {
            return Err(bad("-k and --max-level must be at least 1".into()));
        }
        let manifest = self.run(run)?;
        let baseline = match &options.baseline {
            Some(name) => {
                let baseline = self.run(name)?;
                if baseline.dataset != manifest.dataset {
                    return Err(bad(format!(
                        "--baseline {name} is a run on dataset {}, and {run} on {}: regressions compare runs on the \
                         same images",
                        baseline.dataset, manifest.dataset
                    )));
                }
                Some(baseline)
            }
            None => None,
        };
        let (ids, columns, errors, error_kind) =
            self.scored_table(&manifest, baseline.as_ref(), options.columns.as_deref()).await?;
        let mut result = discover_in_table(&ids, &columns, &errors, options).map_err(|e| match e {
            TableError::NoColumns(skipped) => {
                bad(format!("no column of {}.images can describe a slice (skipped: {skipped})", manifest.dataset))
            }
            TableError::Engine(e) => e,
        })?;
        // A query on another dataset than the default names its schema, so that it
        // selects the same images wherever it is run.
        if self.workspace.config().default_dataset.as_deref() != Some(manifest.dataset.as_str()) {
            let table = format!("FROM {}.images WHERE", quote_column(&manifest.dataset));
            for slice in &mut result.slices {
                slice.query = slice.query.replacen("FROM images WHERE", &table, 1);
            }
        }
        result.run = manifest.run.clone();
        result.dataset = manifest.dataset.clone();
        result.error = error_kind.into();
        Ok(result)
    }

    /// The run's scored images: their ids, the chosen `images` columns taken in the same
    /// order, each image's error, and what the error is.
    async fn scored_table(
        &self,
        manifest: &RunManifest,
        baseline: Option<&RunManifest>,
        only: Option<&[String]>,
    ) -> Result<(Vec<String>, Vec<(String, ArrayRef)>, Vec<f64>, &'static str)> {
        let bad = |message: String| EngineError::InvalidArgument(message);
        let query = format!("SELECT * FROM {}.images", quote_column(&manifest.dataset));
        let batches = self.sql(&query).await?.collect().await?;
        let Some(first) = batches.first() else {
            return Err(bad(format!("dataset {} has no images", manifest.dataset)));
        };
        let images: RecordBatch = concat_batches(&first.schema(), &batches)?;
        let schema = images.schema();
        if let Some(only) = only {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            if let Some(unknown) = only.iter().find(|c| !names.contains(&c.as_str())) {
                return Err(bad(format!(
                    "--columns: {}.images has no column {unknown:?}; it has {}",
                    manifest.dataset,
                    names.join(", ")
                )));
            }
        }
        let image_ids = cast(images.column_by_name("image_id").expect("core column"), &DataType::Utf8)?;
        let image_ids = image_ids.as_string::<i32>();
        let labels = cast(images.column_by_name("label").expect("core column"), &DataType::Utf8)?;
        let labels = labels.as_string::<i32>();
        let row_of: HashMap<&str, u32> =
            image_ids.iter().enumerate().filter_map(|(r, id)| Some((id?, r as u32))).collect();

        let use_loss = manifest.has_loss && baseline.is_none();
        let (ids, rows, errors) = if manifest.task != Task::Classification {
            if baseline.is_some() {
                return Err(bad("--baseline: discovery against a baseline is for classification runs only".into()));
            }
            if manifest.task == Task::Detection {
                detection_errors(self, manifest, &row_of)?
            } else {
                segmentation_errors(self, manifest, &row_of)?
            }
        } else {
            let predictions = read_predictions(&self.workspace, manifest)?;
            let predicted_ids = predictions.column(0).as_string::<i32>();
            let predicted = predictions.column(1).as_string::<i32>();
            let loss = predictions.column(4).as_primitive::<Float64Type>();
            // Regression mode: the baseline's prediction of each image.
            let baseline_batch = baseline.map(|b| read_predictions(&self.workspace, b)).transpose()?;
            let baseline_predicted: Option<HashMap<&str, Option<&str>>> = baseline_batch.as_ref().map(|batch| {
                let ids = batch.column(0).as_string::<i32>();
                let predicted = batch.column(1).as_string::<i32>();
                (0..batch.num_rows())
                    .map(|r| (ids.value(r), predicted.is_valid(r).then(|| predicted.value(r))))
                    .collect()
            });
            let (mut ids, mut rows, mut errors) = (Vec::new(), Vec::new(), Vec::new());
            for p in 0..predictions.num_rows() {
                let Some(&row) = row_of.get(predicted_ids.value(p)) else { continue };
                let error = if let Some(base) = &baseline_predicted {
                    let Some(Some(base)) = base.get(predicted_ids.value(p)) else { continue };
                    if labels.is_null(row as usize) || predicted.is_null(p) {
                        continue;
                    }
                    let truth = labels.value(row as usize);
                    f64::from(u8::from(predicted.value(p) != truth && *base == truth))
                } else if use_loss {
                    if loss.is_null(p) {
                        continue;
                    }
                    loss.value(p)
                } else {
                    if labels.is_null(row as usize) || predicted.is_null(p) {
                        continue;
                    }
                    f64::from(u8::from(labels.value(row as usize) != predicted.value(p)))
                };
                ids.push(predicted_ids.value(p).to_string());
                rows.push(row);
                errors.push(error);
            }
            (ids, rows, errors)
        };
        if ids.is_empty() {
            return Err(bad(format!(
                "run {} has no scorable predictions: none is for an image of {} with a {}{}",
                manifest.run,
                manifest.dataset,
                if use_loss { "loss" } else { "label" },
                if baseline.is_some() { " and a baseline prediction" } else { "" }
            )));
        }
        if errors.iter().any(|e| !e.is_finite() || *e < 0.0) {
            return Err(bad(format!("run {}: discovery needs non-negative finite losses", manifest.run)));
        }
        let indices = UInt32Array::from(rows);
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if only.is_some_and(|only| !only.iter().any(|c| c == field.name())) {
                continue;
            }
            columns.push((field.name().clone(), Arc::new(take(images.column(i), &indices, None)?) as ArrayRef));
        }
        let kind = match (baseline.is_some(), use_loss) {
            _ if manifest.task == Task::Detection => "detection",
            _ if manifest.task == Task::Segmentation => "pixel error",
            (true, _) => "regression",
            (false, true) => "loss",
            (false, false) => "misclassification",
        };
        Ok((ids, columns, errors, kind))
    }
}

/// A detection run's error per image: 1 when the image has a missed object or a false
/// detection at the run's operating point (IoU 0.5, the run's score threshold), else 0.
fn detection_errors(
    engine: &Engine,
    manifest: &RunManifest,
    row_of: &HashMap<&str, u32>,
) -> Result<(Vec<String>, Vec<u32>, Vec<f64>)> {
    let evaluation = engine.evaluations.get(&engine.workspace, manifest)?;
    let (mut ids, mut rows, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (id, counts) in evaluation.per_image() {
        let Some(&row) = row_of.get(id) else { continue };
        ids.push(id.to_string());
        rows.push(row);
        errors.push(f64::from(u8::from(counts.fp + counts.fn_ > 0)));
    }
    Ok((ids, rows, errors))
}

/// A segmentation run's per-image error: the share of the image's labelled pixels given
/// the wrong class (images without labelled pixels are left out).
fn segmentation_errors(
    engine: &Engine,
    manifest: &RunManifest,
    row_of: &HashMap<&str, u32>,
) -> Result<(Vec<String>, Vec<u32>, Vec<f64>)> {
    let evaluation = engine.segmentation_evaluation(manifest)?;
    let (mut ids, mut rows, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (id, pixel_error) in evaluation.per_image_error() {
        let (Some(&row), Some(error)) = (row_of.get(id), pixel_error) else { continue };
        ids.push(id.to_string());
        rows.push(row);
        errors.push(error);
    }
    Ok((ids, rows, errors))
}

/// Why a table could not be searched.
enum TableError {
    /// No column makes a predicate; the skipped columns and reasons.
    NoColumns(String),
    /// Anything else.
    Engine(EngineError),
}

impl From<datafusion::error::DataFusionError> for TableError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        TableError::Engine(e.into())
    }
}

/// Discovery over an in-memory table: image ids, the columns to describe slices with
/// (aligned with `ids`), and each image's error. `run`, `dataset` and `error` of the
/// result are left empty for the caller.
fn discover_in_table(
    ids: &[String],
    columns: &[(String, ArrayRef)],
    errors: &[f64],
    options: &DiscoverOptions,
) -> std::result::Result<Discovery, TableError> {
    let bad = |message: String| TableError::Engine(EngineError::InvalidArgument(message));
    let n = ids.len();
    let built = predicates::build(columns)?;
    if built.predicates.is_empty() {
        let skipped: Vec<String> = built.skipped.iter().map(|(c, why)| format!("{c}: {why}")).collect();
        return Err(TableError::NoColumns(skipped.join("; ")));
    }
    let total: f64 = errors.iter().sum();
    let discovery_rows: Vec<usize> = (0..n).filter(|&r| in_discovery_half(options.seed, &ids[r])).collect();
    let confirmation_rows: Vec<usize> = (0..n).filter(|&r| !in_discovery_half(options.seed, &ids[r])).collect();
    if (discovery_rows.len() as u64) < options.min_support {
        return Err(bad(format!(
            "--min-support {} is more than the {} images of the discovery half ({n} scored images, split in two); \
             lower it",
            options.min_support,
            discovery_rows.len()
        )));
    }
    let mut result = Discovery {
        run: String::new(),
        dataset: String::new(),
        error: String::new(),
        baseline: options.baseline.clone(),
        images: n as u64,
        halves: [discovery_rows.len() as u64, confirmation_rows.len() as u64],
        mean_error: total / n as f64,
        columns: built.columns.clone(),
        skipped: built.skipped.clone(),
        tested: 0,
        slices: Vec::new(),
        k: options.k,
        max_level: options.max_level,
        min_support: options.min_support,
        alpha: options.alpha,
        fdr: options.fdr,
        seed: options.seed,
    };
    if total == 0.0 || errors.iter().all(|&e| e == errors[0]) {
        // No error, or the same error everywhere: no slice can be worse than the rest.
        return Ok(result);
    }

    // Search the discovery half; ask for more than k so that dropping refinements
    // and unconfirmed slices still leaves k.
    let search_predicates: Vec<Predicate> = built
        .predicates
        .iter()
        .enumerate()
        .map(|(i, p)| Predicate { column: built.column_of(i), rows: restrict(&p.rows, &discovery_rows) })
        .collect();
    let discovery_errors = Errors::new(discovery_rows.iter().map(|&r| errors[r]).collect());
    let settings = SearchSettings {
        k: options.k * 4,
        max_level: options.max_level,
        min_support: options.min_support,
        alpha: options.alpha,
    };
    let (found, _) = sliceline::search(&search_predicates, &discovery_errors, settings);
    let found = drop_refinements(found, &search_predicates, &discovery_errors);

    // Test each on the confirmation half, then control the false-discovery rate.
    let binary = errors.iter().all(|&e| e == 0.0 || e == 1.0);
    let confirmation_errors: Vec<f64> = confirmation_rows.iter().map(|&r| errors[r]).collect();
    let discovery_errors_all = discovery_errors.values();
    let mut slices: Vec<DiscoveredSlice> = found
        .iter()
        .map(|f| {
            let rows_all: Bitmap = f
                .predicates
                .iter()
                .map(|&p| &built.predicates[p].rows)
                .fold(None::<Bitmap>, |acc, rows| {
                    Some(match acc {
                        None => rows.clone(),
                        Some(a) => a.iter().zip(rows).map(|(x, y)| x & y).collect(),
                    })
                })
                .expect("a slice has a predicate");
            let in_discovery = restrict(&rows_all, &discovery_rows);
            let in_confirmation = restrict(&rows_all, &confirmation_rows);
            let discovery = half_stats(&in_discovery, discovery_errors_all, binary);
            let confirmation = half_stats(&in_confirmation, &confirmation_errors, binary);
            let p_value = stats::excess_error_p_value(&in_confirmation, &confirmation_errors, binary);
            let descriptions: Vec<String> =
                f.predicates.iter().map(|&p| built.predicates[p].description.clone()).collect();
            let conditions: Vec<String> = f
                .predicates
                .iter()
                .map(|&p| {
                    let sql = &built.predicates[p].sql;
                    if sql.contains(" AND ") { format!("({sql})") } else { sql.clone() }
                })
                .collect();
            DiscoveredSlice {
                predicates: descriptions,
                query: format!("SELECT image_id FROM images WHERE {}", conditions.join(" AND ")),
                score: f.score,
                discovery,
                confirmation,
                p_value,
                adjusted_p: 1.0,
                confirmed: false,
            }
        })
        .collect();
    let adjusted = stats::benjamini_hochberg(&slices.iter().map(|s| s.p_value).collect::<Vec<_>>());
    for (slice, adjusted_p) in slices.iter_mut().zip(adjusted) {
        slice.adjusted_p = adjusted_p;
        slice.confirmed = adjusted_p <= options.fdr;
    }
    result.tested = slices.len();
    slices.retain(|s| s.confirmed || options.include_unconfirmed);
    slices.truncate(options.k);
    result.slices = slices;
    Ok(result)
}

/// Drops a slice when a slice made of a subset of its predicates is also in the list and
/// the extra predicates do not make it significantly worse (its rows' error rate is not
/// above the rest of the coarser slice's, one-sided p < 0.05): "label = 'Shirt'" and ten
/// refinements of it that say nothing new become one entry.
fn drop_refinements(found: Vec<sliceline::Found>, predicates: &[Predicate], errors: &Errors) -> Vec<sliceline::Found> {
    let rows_of = |f: &sliceline::Found| -> Bitmap {
        f.predicates.iter().skip(1).fold(predicates[f.predicates[0]].rows.clone(), |acc, &p| {
            acc.iter().zip(&predicates[p].rows).map(|(x, y)| x & y).collect()
        })
    };
    let binary = errors.values().iter().all(|&e| e == 0.0 || e == 1.0);
    let keep: Vec<bool> = found
        .iter()
        .map(|fine| {
            found.iter().all(|coarse| {
                let subset = coarse.predicates.len() < fine.predicates.len()
                    && coarse.predicates.iter().all(|p| fine.predicates.contains(p));
                if !subset {
                    return true;
                }
                // Within the coarse slice, is the refinement worse than the rest of it?
                let coarse_rows = rows_of(coarse);
                let fine_rows = rows_of(fine);
                let members: Vec<usize> =
                    (0..errors.len()).filter(|&r| coarse_rows[r / 64] >> (r % 64) & 1 == 1).collect();
                let within = restrict(&fine_rows, &members);
                let values: Vec<f64> = members.iter().map(|&r| errors.values()[r]).collect();
                stats::excess_error_p_value(&within, &values, binary) < 0.05
            })
        })
        .collect();
    found.into_iter().zip(keep).filter_map(|(f, k)| k.then_some(f)).collect()
}

/// A slice's numbers within one half: `rows` marks the slice among the half's `errors`.
fn half_stats(rows: &Bitmap, errors: &[f64], binary: bool) -> HalfStats {
    let (mut size, mut sum, mut sum_sq) = (0u64, 0.0, 0.0);
    for (r, &e) in errors.iter().enumerate() {
        if rows[r / 64] >> (r % 64) & 1 == 1 {
            size += 1;
            sum += e;
            sum_sq += e * e;
        }
    }
    let total: f64 = errors.iter().sum();
    let rest_n = errors.len() as u64 - size;
    let rate = if size > 0 { sum / size as f64 } else { f64::NAN };
    let rest_rate = if rest_n > 0 { (total - sum) / rest_n as f64 } else { f64::NAN };
    let interval = if binary {
        let w = wilson(sum.round() as u64, size);
        [w.low, w.high]
    } else if size > 1 {
        let variance = (sum_sq - sum * sum / size as f64) / (size - 1) as f64;
        let half = crate::metrics::Z95 * (variance.max(0.0) / size as f64).sqrt();
        [rate - half, rate + half]
    } else {
        [f64::NAN, f64::NAN]
    };
    HalfStats {
        size,
        errors: sum,
        error_rate: rate,
        interval,
        rest_rate,
        lift: if rest_rate > 0.0 { rate / rest_rate } else { f64::INFINITY },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halves_are_seeded_and_even() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("img_{i}.png")).collect();
        let first = ids.iter().filter(|id| in_discovery_half(7, id)).count();
        assert!((4_800..5_200).contains(&first), "{first}");
        let again = ids.iter().filter(|id| in_discovery_half(7, id)).count();
        assert_eq!(first, again);
        let other: Vec<bool> = ids.iter().map(|id| in_discovery_half(8, id)).collect();
        assert_ne!(other, ids.iter().map(|id| in_discovery_half(7, id)).collect::<Vec<_>>());
    }

    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    /// A table of `n` images with weather, time of day, a person count and a brightness;
    /// errors at `base` everywhere and at `planted` where `plant(row)` holds.
    fn table(
        n: usize,
        seed: u64,
        base: f64,
        planted: f64,
        plant: impl Fn(&str, &str, i64, f64) -> bool,
    ) -> (Vec<String>, Vec<(String, ArrayRef)>, Vec<f64>) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut weather, mut time, mut people, mut brightness, mut errors) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let w = ["sunny", "rain", "fog", "snow"][(uniform() * 4.0) as usize];
            let t = if uniform() < 0.5 { "day" } else { "night" };
            let p = (uniform() * 8.0) as i64;
            let b = uniform();
            let rate = if plant(w, t, p, b) { planted } else { base };
            errors.push(if uniform() < rate { 1.0 } else { 0.0 });
            weather.push(w);
            time.push(t);
            people.push(p);
            brightness.push(b);
        }
        let ids = (0..n).map(|i| format!("img_{seed}_{i}")).collect();
        let columns: Vec<(String, ArrayRef)> = vec![
            ("weather".into(), Arc::new(StringArray::from(weather))),
            ("time".into(), Arc::new(StringArray::from(time))),
            ("num_people".into(), Arc::new(Int64Array::from(people))),
            ("brightness".into(), Arc::new(Float64Array::from(brightness))),
        ];
        (ids, columns, errors)
    }

    fn run(table: &(Vec<String>, Vec<(String, ArrayRef)>, Vec<f64>), options: &DiscoverOptions) -> Discovery {
        match discover_in_table(&table.0, &table.1, &table.2, options) {
            Ok(d) => d,
            Err(_) => panic!("discovery failed"),
        }
    }

    #[test]
    fn a_planted_conjunction_is_found_first_and_confirmed() {
        let t = table(20_000, 1, 0.08, 0.6, |w, time, _, _| w == "rain" && time == "night");
        let d = run(&t, &DiscoverOptions::default());
        let first = &d.slices[0];
        assert_eq!(first.predicates, ["weather = 'rain'", "time = 'night'"], "{:#?}", d.slices);
        assert!(first.confirmed && first.adjusted_p < 1e-10);
        assert_eq!(first.query, "SELECT image_id FROM images WHERE weather = 'rain' AND time = 'night'");
        assert!((first.confirmation.error_rate - 0.6).abs() < 0.05, "{:?}", first.confirmation);
        assert!(first.discovery.size + first.confirmation.size > 2_200);
        // Its coarser parents are not listed as refinements of each other, and no listed
        // slice repeats the planted one with a useless extra predicate.
        let repeats = d.slices.iter().filter(|s| s.predicates.len() == 3 && s.predicates[..2] == first.predicates[..]);
        assert_eq!(repeats.count(), 0, "{:#?}", d.slices);
    }

    #[test]
    fn a_small_severe_three_predicate_slice_is_found() {
        // 0.6% of the rows (snow, three people, the brightest fifth) with 70% errors
        // against 8%: SliceLine's score at a low α would never rank it; at 0.95 it leads.
        let t = table(40_000, 2, 0.08, 0.7, |w, _, p, b| w == "snow" && p == 3 && b >= 0.8);
        let d = run(&t, &DiscoverOptions { min_support: 20, ..Default::default() });
        let top = &d.slices[0];
        assert_eq!(top.predicates, ["weather = 'snow'", "num_people = 3", "brightness >= 0.8"], "{:#?}", d.slices);
        assert!(top.confirmed);
    }

    #[test]
    fn independent_errors_are_rarely_confirmed() {
        // No slice is planted: a confirmed slice would be a false discovery.
        let tables_with_a_discovery = (0..40)
            .filter(|&seed| {
                let t = table(4_000, 100 + seed, 0.1, 0.1, |_, _, _, _| false);
                let d = run(&t, &DiscoverOptions { seed, ..Default::default() });
                !d.slices.is_empty()
            })
            .count();
        assert!(tables_with_a_discovery <= 4, "{tables_with_a_discovery} of 40 null tables had a confirmed slice");
    }

    #[test]
    fn bad_settings_and_tables_without_errors() {
        let t = table(200, 3, 0.1, 0.1, |_, _, _, _| false);
        let too_big = discover_in_table(&t.0, &t.1, &t.2, &DiscoverOptions { min_support: 150, ..Default::default() });
        assert!(
            matches!(too_big, Err(TableError::Engine(EngineError::InvalidArgument(m))) if m.contains("--min-support 150"))
        );
        let no_errors = discover_in_table(&t.0, &t.1, &vec![0.0; 200], &DiscoverOptions::default());
        assert!(no_errors.is_ok_and(|d| d.slices.is_empty() && d.tested == 0));
        let constant: Vec<(String, ArrayRef)> = vec![("width".into(), Arc::new(Int64Array::from(vec![7; 200])))];
        let useless = discover_in_table(&t.0, &constant, &t.2, &DiscoverOptions::default());
        assert!(matches!(useless, Err(TableError::NoColumns(m)) if m.contains("width: has one value only")));
    }

    #[test]
    fn restrict_renumbers_the_subset() {
        let bitmap = bitmap_from([true, false, true, true, false]);
        assert_eq!(restrict(&bitmap, &[1, 2, 4]), bitmap_from([false, true, false]));
    }
}
