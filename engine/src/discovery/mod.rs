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
//!
//! With stored CLIP vectors, slices are also searched in the embedding space
//! ([`embedding`], after Domino), turned into `cosine_similarity` queries, explained by
//! phrases and by tags, and confirmed in the same family of tests.

pub mod embedding;
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

use slicetest_sql::vectors::{VectorCatalog, VectorSet};

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
    /// Where to look for slices.
    pub method: DiscoverMethod,
    /// The embedding model of `--method embeddings` (default: the dataset's only one).
    pub model: Option<String>,
    /// The order of the reported slices.
    pub rank: DiscoverRank,
    /// A column of `images` whose equal values stay in the same half (near-duplicates,
    /// frames of one video, images of one patient); NULL values split by image.
    pub group: Option<String>,
}

/// Where discovery looks for slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DiscoverMethod {
    /// Conjunctions of `images` columns, and the embeddings too when the dataset has
    /// vectors of one model (or `model` names one).
    #[default]
    Auto,
    /// Conjunctions of `images` columns (SliceLine).
    Tags,
    /// Groups of similar images in the stored vectors (Domino-style).
    Embeddings,
    /// Both.
    Both,
}

/// The order of the reported slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DiscoverRank {
    /// The lower end of the 95% interval of the confirmation error rate: the slices
    /// that are surely worst first, however small.
    #[default]
    Severity,
    /// Errors beyond what the slice's size predicts, on the confirmation half
    /// (`Σe − |S|·ē`): the slices that cost the most errors first.
    Excess,
    /// SliceLine's score on the discovery half (the paper's order; favours large slices
    /// at low `alpha`).
    Sliceline,
}

impl DiscoverRank {
    /// Its name, as the CLI and the HTTP API spell it.
    pub fn name(self) -> &'static str {
        match self {
            DiscoverRank::Severity => "severity",
            DiscoverRank::Excess => "excess",
            DiscoverRank::Sliceline => "sliceline",
        }
    }
}

impl std::str::FromStr for DiscoverRank {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "severity" => Ok(DiscoverRank::Severity),
            "excess" => Ok(DiscoverRank::Excess),
            "sliceline" => Ok(DiscoverRank::Sliceline),
            _ => Err(format!("rank must be severity, excess or sliceline, not {s:?}")),
        }
    }
}

impl std::str::FromStr for DiscoverMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DiscoverMethod::Auto),
            "tags" => Ok(DiscoverMethod::Tags),
            "embeddings" => Ok(DiscoverMethod::Embeddings),
            "both" => Ok(DiscoverMethod::Both),
            _ => Err(format!("method must be auto, tags, embeddings or both, not {s:?}")),
        }
    }
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
            method: DiscoverMethod::Auto,
            model: None,
            rank: DiscoverRank::Severity,
            group: None,
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

/// What an embedding slice looks like, in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The phrases whose CLIP text vectors point most along the slice's mean minus its
    /// label's mean (or the mean of all images), best first, with that cosine.
    pub phrases: Vec<(String, f64)>,
    /// The 1–3 `images` predicates that select the slice best (on the discovery half).
    pub tags: Vec<String>,
    /// How well they do: rows in both / rows in either (Jaccard).
    pub tags_jaccard: f64,
}

/// A discovered slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredSlice {
    /// `tags` (a conjunction of `images` predicates) or `embeddings` (similar vectors).
    pub method: String,
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
    /// Errors beyond what the slice's size predicts on the confirmation half:
    /// `Σe − |S|·ē` (what `--rank excess` orders by).
    pub excess_errors: f64,
    /// An embedding slice's description in phrases and tags.
    pub explanation: Option<Explanation>,
    /// Up to 8 of its images the run gets wrong, the largest errors first (for galleries).
    pub failures: Vec<String>,
}

/// How the embedding search went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingSummary {
    /// The embedding model.
    pub model: String,
    /// Scored images with a vector.
    pub vectors: u64,
    /// Discovery-half rows the PCA and the mixture were fitted on.
    pub sample: u64,
    /// PCA dimensions, and the share of the variance they keep.
    pub pca_components: usize,
    /// See `pca_components`.
    pub explained_variance_ratio: f64,
    /// Mixture components, EM iterations, and whether EM converged.
    pub components: usize,
    /// See `components`.
    pub iterations: usize,
    /// See `components`.
    pub converged: bool,
    /// Candidate slices the embeddings gave.
    pub candidates: usize,
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
    /// Where it looked: `tags`, `embeddings` or `tags+embeddings`.
    pub method: String,
    /// The order of `slices`.
    pub rank: DiscoverRank,
    /// The embedding search, when it ran.
    pub embeddings: Option<EmbeddingSummary>,
    /// Things to know about this result (e.g. why the embeddings were not searched).
    pub notes: Vec<String>,
    /// The column that kept groups of images in one half.
    pub group: Option<String>,
}

impl Discovery {
    /// "1 candidate tested", "12 candidates tested".
    pub fn tested_text(&self) -> String {
        format!("{} candidate{} tested", self.tested, if self.tested == 1 { "" } else { "s" })
    }
}

/// The α of the second SliceLine search, for small severe slices (see `discover_in_table`).
const SMALL_SLICE_ALPHA: f64 = 0.99;

/// The `--group` column `name` of `dataset`'s images as text: equal values keep their
/// images in one half, so a value must be one thing (a string, a number, a date); a
/// nested column (list, struct) is refused, naming the setting and the types that work.
fn group_values(column: &ArrayRef, name: &str, dataset: &str) -> Result<ArrayRef> {
    let refused = || {
        EngineError::InvalidArgument(format!(
            "--group {name}: column {name:?} of {dataset}.images is {}; group by a column of strings, numbers, \
             booleans, dates or timestamps (one value per image, such as a scene or patient id)",
            column.data_type()
        ))
    };
    if column.data_type().is_nested() {
        return Err(refused());
    }
    cast(column, &DataType::Utf8).map_err(|_| refused())
}

/// Which half an image is in: a hash of the seed and its id (or its group's value), so the
/// split does not depend on row order and a rerun splits the same way.
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
        let scored = self
            .scored_table(&manifest, baseline.as_ref(), options.columns.as_deref(), options.group.as_deref())
            .await?;
        let mut notes = Vec::new();
        let embedded = self.discovery_vectors(&manifest.dataset, options, &scored.labels, &mut notes)?;
        let embedding = match &embedded {
            Some((set, phrases)) => {
                let dim = set.dim();
                let mut vectors = vec![0.0f32; scored.ids.len() * dim];
                let mut has_vector = vec![false; scored.ids.len()];
                for (r, id) in scored.ids.iter().enumerate() {
                    if let Some(v) = set.vector(id) {
                        vectors[r * dim..][..dim].copy_from_slice(v);
                        has_vector[r] = true;
                    }
                }
                Some((vectors, dim, has_vector, set.model.name.clone(), phrases))
            }
            None => None,
        };
        let input = embedding.as_ref().map(|(vectors, dim, has_vector, model, phrases)| EmbeddingInput {
            table: embedding::EmbeddingTable {
                vectors,
                dim: *dim,
                has_vector,
                labels: &scored.labels,
                predictions: scored.predictions.as_deref(),
                errors: &scored.errors,
            },
            model: model.as_str(),
            phrases: phrases.as_ref(),
        });
        let groups = scored.groups.as_deref();
        let mut result =
            discover_in_table(&scored.ids, &scored.columns, &scored.errors, groups, input.as_ref(), options).map_err(
                |e| match e {
                    TableError::NoColumns(skipped) => bad(format!(
                        "no column of {}.images can describe a slice (skipped: {skipped}); `--method embeddings` \
                         searches the image vectors instead",
                        manifest.dataset
                    )),
                    TableError::Engine(e) => e,
                },
            )?;
        notes.append(&mut result.notes);
        result.notes = notes;
        // A query on another dataset than the default names its schema, so that it
        // selects the same images wherever it is run.
        if self.workspace.config().default_dataset.as_deref() != Some(manifest.dataset.as_str()) {
            let schema = quote_column(&manifest.dataset);
            for slice in &mut result.slices {
                slice.query =
                    slice.query.replacen("FROM images WHERE", &format!("FROM {schema}.images WHERE"), 1).replacen(
                        "FROM images i JOIN embeddings e",
                        &format!("FROM {schema}.images i JOIN {schema}.embeddings e"),
                        1,
                    );
            }
        }
        result.run = manifest.run.clone();
        result.dataset = manifest.dataset.clone();
        result.error = scored.kind.into();
        Ok(result)
    }

    /// The vectors embedding discovery should use, with the phrase vectors that explain its
    /// slices; None when `options.method` leaves the embeddings out (with a note why, for
    /// `auto`).
    fn discovery_vectors(
        &self,
        dataset: &str,
        options: &DiscoverOptions,
        labels: &[Option<String>],
        notes: &mut Vec<String>,
    ) -> Result<Option<(Arc<VectorSet>, Option<PhraseVectors>)>> {
        let bad = |message: String| EngineError::InvalidArgument(message);
        let models = slicetest_datasets::embeddings::model_names(self.workspace.layout(), dataset)?;
        let model = match (options.method, &options.model) {
            (DiscoverMethod::Tags, _) => return Ok(None),
            (_, Some(model)) if models.contains(model) => model.clone(),
            (_, Some(model)) => {
                return Err(bad(format!(
                    "--model {model}: dataset {dataset} has no embeddings of that model (it has: {})",
                    if models.is_empty() { "none".to_string() } else { models.join(", ") }
                )));
            }
            (_, None) if models.len() == 1 => models[0].clone(),
            (DiscoverMethod::Auto, None) => {
                notes.push(if models.is_empty() {
                    format!("embeddings not searched: dataset {dataset} has no vectors (`slicetest embed` adds them)")
                } else {
                    format!(
                        "embeddings not searched: dataset {dataset} has several models ({}); pick one with --model",
                        models.join(", ")
                    )
                });
                return Ok(None);
            }
            (_, None) if models.is_empty() => {
                return Err(bad(format!(
                    "--method embeddings: dataset {dataset} has no embeddings; run `slicetest embed` first (or \
                     search the tags with --method tags)"
                )));
            }
            (_, None) => {
                return Err(bad(format!(
                    "--method embeddings: dataset {dataset} has embeddings of several models ({}); pick one with --model",
                    models.join(", ")
                )));
            }
        };
        let latest = self.latest_manifest(Some(dataset))?;
        let catalog = VectorCatalog::new(self.vectors().clone(), Some(latest));
        let set = catalog.vectors(Some(&model)).map_err(|e| EngineError::query(e, None))?;
        let phrases = match phrase_vectors(&catalog, &set, labels) {
            Ok(p) => Some(p),
            Err(why) => {
                notes.push(format!("embedding slices are not described in phrases: {why}"));
                None
            }
        };
        Ok(Some((set, phrases)))
    }

    /// The run's scored images (see [`ScoredTable`]).
    async fn scored_table(
        &self,
        manifest: &RunManifest,
        baseline: Option<&RunManifest>,
        only: Option<&[String]>,
        group: Option<&str>,
    ) -> Result<ScoredTable> {
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
        let mut predictions_of_rows = None;
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
            let (mut ids, mut rows, mut errors, mut predicted_labels) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
                predicted_labels.push(predicted.is_valid(p).then(|| predicted.value(p).to_string()));
            }
            predictions_of_rows = Some(predicted_labels);
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
        let groups = match group {
            Some(name) => {
                let Some(column) = images.column_by_name(name) else {
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(bad(format!(
                        "--group: {}.images has no column {name:?}; it has {}",
                        manifest.dataset,
                        names.join(", ")
                    )));
                };
                let values = group_values(column, name, &manifest.dataset)?;
                let values = values.as_string::<i32>();
                Some(
                    rows.iter()
                        .map(|&r| values.is_valid(r as usize).then(|| values.value(r as usize).to_string()))
                        .collect(),
                )
            }
            None => None,
        };
        let row_labels: Vec<Option<String>> =
            rows.iter().map(|&r| labels.is_valid(r as usize).then(|| labels.value(r as usize).to_string())).collect();
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
        Ok(ScoredTable { ids, columns, errors, kind, labels: row_labels, predictions: predictions_of_rows, groups })
    }
}

/// A run's scored images, one row each.
struct ScoredTable {
    /// Image ids.
    ids: Vec<String>,
    /// The chosen `images` columns, in the same row order.
    columns: Vec<(String, ArrayRef)>,
    /// Each image's error.
    errors: Vec<f64>,
    /// What the error is.
    kind: &'static str,
    /// Each image's label.
    labels: Vec<Option<String>>,
    /// Each image's predicted label (classification runs).
    predictions: Option<Vec<Option<String>>>,
    /// Each image's value of the `--group` column.
    groups: Option<Vec<Option<String>>>,
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

/// What embedding discovery needs besides the table: the vectors, the model's name (for
/// the query) and the phrase vectors that explain a slice.
pub struct EmbeddingInput<'a> {
    /// The vectors, labels, predictions and errors of the scored images.
    pub table: embedding::EmbeddingTable<'a>,
    /// The embedding model's name, as the `embeddings` table spells it.
    pub model: &'a str,
    /// Phrases to describe slices with (none: no phrases).
    pub phrases: Option<&'a PhraseVectors>,
}

/// Discovery over an in-memory table, as [`Engine::discover`] runs it once it has read the
/// run: image ids, the `images` columns (aligned with `ids`), each image's error, the
/// value of `options.group` for each image (when grouping) and, for embedding discovery,
/// the vectors. `run`, `dataset` and `error` of the result are
/// left empty. For benches and for programs that hold their table in memory.
pub fn discover_table(
    ids: &[String],
    columns: &[(String, ArrayRef)],
    errors: &[f64],
    groups: Option<&[Option<String>]>,
    embedded: Option<&EmbeddingInput>,
    options: &DiscoverOptions,
) -> Result<Discovery> {
    discover_in_table(ids, columns, errors, groups, embedded, options).map_err(|e| match e {
        TableError::NoColumns(skipped) => {
            EngineError::InvalidArgument(format!("no column can describe a slice (skipped: {skipped})"))
        }
        TableError::Engine(e) => e,
    })
}

/// Phrases and their unit CLIP text vectors.
pub struct PhraseVectors {
    /// The phrases.
    pub texts: Vec<String>,
    /// Their vectors, in the same order.
    pub vectors: Vec<Arc<Vec<f32>>>,
}

/// The phrases shipped for describing embedding slices (`phrases.txt`).
const PHRASES: &str = include_str!("phrases.txt");

/// The vocabulary embedding slices are described with: the shipped phrases, the default
/// zero-shot vocabulary's prompts, and "a photo of a <label>" for every label, encoded
/// once with the model that made `set` (cached by the vector store).
fn phrase_vectors(
    catalog: &VectorCatalog,
    set: &VectorSet,
    labels: &[Option<String>],
) -> std::result::Result<PhraseVectors, String> {
    let mut texts: Vec<String> =
        PHRASES.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    let vocabulary = slicetest_embed::tagging::zero_shot::Vocabulary::default_vocabulary();
    texts.extend(vocabulary.prompts().into_iter().map(str::to_string));
    let mut names: Vec<&str> = labels.iter().flatten().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    texts.extend(names.iter().take(1000).map(|l| format!("a photo of a {l}")));
    texts.sort();
    texts.dedup();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = catalog.text_vectors(set, &refs).map_err(|e| e.to_string())?;
    Ok(PhraseVectors { texts, vectors })
}

/// A slice to test on the confirmation half, from either search.
struct Candidate {
    method: &'static str,
    predicates: Vec<String>,
    query: String,
    /// Members among all scored rows.
    rows: Bitmap,
    explanation: Option<Explanation>,
}

/// Discovery over an in-memory table: image ids, the columns to describe slices with
/// (aligned with `ids`), each image's error and, for embedding discovery, the vectors.
/// `run`, `dataset` and `error` of the result are left empty for the caller.
fn discover_in_table(
    ids: &[String],
    columns: &[(String, ArrayRef)],
    errors: &[f64],
    groups: Option<&[Option<String>]>,
    embedded: Option<&EmbeddingInput>,
    options: &DiscoverOptions,
) -> std::result::Result<Discovery, TableError> {
    let bad = |message: String| TableError::Engine(EngineError::InvalidArgument(message));
    let n = ids.len();
    let built = predicates::build(columns)?;
    let search_tags = options.method != DiscoverMethod::Embeddings;
    if options.method == DiscoverMethod::Embeddings && embedded.is_none() {
        return Err(bad("--method embeddings needs the images' vectors".into()));
    }
    if search_tags && built.predicates.is_empty() && embedded.is_none() {
        let skipped: Vec<String> = built.skipped.iter().map(|(c, why)| format!("{c}: {why}")).collect();
        return Err(TableError::NoColumns(skipped.join("; ")));
    }
    let total: f64 = errors.iter().sum();
    // Grouped images share a half: the hash is of the group's value where there is one.
    let key = |r: usize| groups.and_then(|g| g[r].as_deref()).unwrap_or(&ids[r]);
    let in_discovery: Vec<bool> = (0..n).map(|r| in_discovery_half(options.seed, key(r))).collect();
    let discovery_rows: Vec<usize> = (0..n).filter(|&r| in_discovery[r]).collect();
    let confirmation_rows: Vec<usize> = (0..n).filter(|&r| !in_discovery[r]).collect();
    if let (Some(group), true) = (&options.group, discovery_rows.is_empty() || confirmation_rows.is_empty()) {
        return Err(bad(format!(
            "--group {group}: every image fell into one half (too few distinct values to split by); group by a \
             column with more values, or try another --seed"
        )));
    }
    if (discovery_rows.len() as u64) < options.min_support {
        return Err(bad(format!(
            "min_support {} (the fewest images a slice may have) is more than the {} images of the discovery half \
             ({n} scored images, split in two); lower it: --min-support in the CLI, min_support over HTTP, the fourth \
             argument of discover_slices in SQL",
            options.min_support,
            discovery_rows.len()
        )));
    }
    let method = match (search_tags && !built.predicates.is_empty(), embedded.is_some()) {
        (true, true) => "tags+embeddings",
        (false, true) => "embeddings",
        _ => "tags",
    };
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
        method: method.to_string(),
        rank: options.rank,
        embeddings: None,
        notes: Vec::new(),
        group: options.group.clone(),
    };
    if search_tags && built.predicates.is_empty() {
        result.notes.push("no column of images can describe a slice; only the embeddings were searched".into());
    }
    if total == 0.0 || errors.iter().all(|&e| e == errors[0]) {
        // No error, or the same error everywhere: no slice can be worse than the rest.
        return Ok(result);
    }

    let search_predicates: Vec<Predicate> = built
        .predicates
        .iter()
        .enumerate()
        .map(|(i, p)| Predicate { column: built.column_of(i), rows: restrict(&p.rows, &discovery_rows) })
        .collect();
    let discovery_errors = Errors::new(discovery_rows.iter().map(|&r| errors[r]).collect());
    let mut candidates = Vec::new();
    if search_tags && !built.predicates.is_empty() {
        // Ask for more than k so that dropping refinements and unconfirmed slices still
        // leaves k. SliceLine's size penalty keeps a small severe slice below 0 at the
        // usual α (0.4% of the rows at five times the mean error scores < 0 for α < 0.99),
        // so a second exact search at SMALL_SLICE_ALPHA makes those candidates too; the
        // reported order is `--rank`'s, not the search's.
        let search = |alpha: f64| {
            let settings = SearchSettings {
                k: options.k * 4,
                max_level: options.max_level,
                min_support: options.min_support,
                alpha,
            };
            sliceline::search(&search_predicates, &discovery_errors, settings).0
        };
        let mut found = search(options.alpha);
        if options.alpha < SMALL_SLICE_ALPHA {
            for f in search(SMALL_SLICE_ALPHA) {
                if !found.iter().any(|g| g.predicates == f.predicates) {
                    found.push(f);
                }
            }
        }
        for f in drop_refinements(found, &search_predicates, &discovery_errors) {
            let rows =
                and_all(f.predicates.iter().map(|&p| &built.predicates[p].rows)).expect("a slice has a predicate");
            let conditions: Vec<String> = f
                .predicates
                .iter()
                .map(|&p| {
                    let sql = &built.predicates[p].sql;
                    if sql.contains(" AND ") { format!("({sql})") } else { sql.clone() }
                })
                .collect();
            candidates.push(Candidate {
                method: "tags",
                predicates: f.predicates.iter().map(|&p| built.predicates[p].description.clone()).collect(),
                query: format!("SELECT image_id FROM images WHERE {}", conditions.join(" AND ")),
                rows,
                explanation: None,
            });
        }
    }
    if let Some(input) = embedded {
        let found = embedding::search(&input.table, &discovery_rows, options.k * 2, options.min_support, options.seed);
        let vectors = input.table.has_vector.iter().filter(|&&v| v).count() as u64;
        match found {
            None => result.notes.push(format!(
                "embeddings not searched: only {vectors} of the scored images have a vector of {}",
                input.model
            )),
            Some(found) => {
                let mut accepted = 0;
                let mut label_means = HashMap::new();
                for slice in &found.slices {
                    let in_discovery = restrict(&slice.rows, &discovery_rows);
                    if (popcount(&in_discovery) as u64) < options.min_support {
                        continue;
                    }
                    accepted += 1;
                    candidates.push(embedding_candidate(
                        slice,
                        input,
                        &built,
                        &search_predicates,
                        &discovery_rows,
                        &mut label_means,
                    ));
                }
                result.embeddings = Some(EmbeddingSummary {
                    model: input.model.to_string(),
                    vectors,
                    sample: found.sample as u64,
                    pca_components: found.pca_components,
                    explained_variance_ratio: found.explained_variance_ratio,
                    components: found.components,
                    iterations: found.iterations,
                    converged: found.converged,
                    candidates: accepted,
                });
            }
        }
    }

    // Test each on the confirmation half, then control the false-discovery rate.
    let binary = errors.iter().all(|&e| e == 0.0 || e == 1.0);
    let confirmation_errors: Vec<f64> = confirmation_rows.iter().map(|&r| errors[r]).collect();
    let confirmation_mean = confirmation_errors.iter().sum::<f64>() / confirmation_errors.len().max(1) as f64;
    let discovery_errors_all = discovery_errors.values();
    let discovery_mean = discovery_errors_all.iter().sum::<f64>() / discovery_errors_all.len().max(1) as f64;
    let max_error = discovery_errors_all.iter().copied().fold(0.0, f64::max);
    // Each candidate's rows in the confirmation half: tested now, and used again by the
    // refinement check after the tests.
    let in_confirmation: Vec<Bitmap> = candidates.iter().map(|c| restrict(&c.rows, &confirmation_rows)).collect();
    let mut slices: Vec<DiscoveredSlice> = candidates
        .into_iter()
        .zip(&in_confirmation)
        .map(|(c, in_confirmation)| {
            let in_discovery = restrict(&c.rows, &discovery_rows);
            let discovery = half_stats(&in_discovery, discovery_errors_all, binary);
            let confirmation = half_stats(in_confirmation, &confirmation_errors, binary);
            let p_value = stats::excess_error_p_value(in_confirmation, &confirmation_errors, binary);
            let score = sliceline::score(
                sliceline::Stats { size: discovery.size, errors: discovery.errors, max_error },
                discovery_errors_all.len() as u64,
                discovery_mean,
                options.alpha,
            );
            // Its worst images, for a gallery that shows the failure first.
            let mut failures: Vec<usize> =
                (0..errors.len()).filter(|&r| c.rows[r / 64] >> (r % 64) & 1 == 1 && errors[r] > 0.0).collect();
            failures.sort_by(|&a, &b| errors[b].total_cmp(&errors[a]).then_with(|| ids[a].cmp(&ids[b])));
            let failures = failures.iter().take(8).map(|&r| ids[r].clone()).collect();
            DiscoveredSlice {
                method: c.method.to_string(),
                failures,
                predicates: c.predicates,
                query: c.query,
                score,
                excess_errors: confirmation.errors - confirmation.size as f64 * confirmation_mean,
                discovery,
                confirmation,
                p_value,
                adjusted_p: 1.0,
                confirmed: false,
                explanation: c.explanation,
            }
        })
        .collect();
    let adjusted = stats::benjamini_hochberg(&slices.iter().map(|s| s.p_value).collect::<Vec<_>>());
    for (slice, adjusted_p) in slices.iter_mut().zip(adjusted) {
        slice.adjusted_p = adjusted_p;
        slice.confirmed = adjusted_p <= options.fdr;
    }
    result.tested = slices.len();
    // No refinement without news, on the confirmation half too: the search picked
    // refinements for how bad they looked on the discovery half, so a confirmed slice is
    // not listed when a confirmed coarser one (a subset of its predicates) is, and within
    // that one it is not significantly worse (one-sided p < 0.05). Its test and the
    // Benjamini–Hochberg adjustment are unchanged; it is only not listed.
    let listed_tags = |s: &DiscoveredSlice| s.confirmed && s.method == "tags";
    let redundant: Vec<bool> = (0..slices.len())
        .map(|f| {
            let fine = &slices[f];
            listed_tags(fine)
                && (0..slices.len()).any(|c| {
                    let coarse = &slices[c];
                    if !listed_tags(coarse)
                        || coarse.predicates.len() >= fine.predicates.len()
                        || !coarse.predicates.iter().all(|p| fine.predicates.contains(p))
                    {
                        return false;
                    }
                    let members: Vec<usize> = (0..confirmation_errors.len())
                        .filter(|&r| in_confirmation[c][r / 64] >> (r % 64) & 1 == 1)
                        .collect();
                    let within = restrict(&in_confirmation[f], &members);
                    let values: Vec<f64> = members.iter().map(|&r| confirmation_errors[r]).collect();
                    stats::excess_error_p_value(&within, &values, binary) >= 0.05
                })
        })
        .collect();
    let mut slices: Vec<DiscoveredSlice> = slices
        .into_iter()
        .zip(redundant)
        .filter(|(s, redundant)| !redundant && (s.confirmed || options.include_unconfirmed))
        .map(|(s, _)| s)
        .collect();
    let key = |s: &DiscoveredSlice| {
        let key = match options.rank {
            DiscoverRank::Severity => s.confirmation.interval[0],
            DiscoverRank::Excess => s.excess_errors,
            DiscoverRank::Sliceline => s.score,
        };
        // A slice with no image in the confirmation half has no rate: last.
        if key.is_nan() { f64::NEG_INFINITY } else { key }
    };
    // Stable: equal keys keep the search's order (SliceLine's, then the embeddings').
    slices.sort_by(|a, b| b.confirmed.cmp(&a.confirmed).then(key(b).total_cmp(&key(a))));
    slices.truncate(options.k);
    result.slices = slices;
    Ok(result)
}

/// The AND of bitmaps (None for none).
fn and_all<'a>(bitmaps: impl IntoIterator<Item = &'a Bitmap>) -> Option<Bitmap> {
    bitmaps.into_iter().fold(None, |acc, rows| {
        Some(match acc {
            None => rows.clone(),
            Some(a) => a.iter().zip(rows).map(|(x, y)| x & y).collect(),
        })
    })
}

fn popcount(rows: &Bitmap) -> u32 {
    rows.iter().map(|w| w.count_ones()).sum()
}

/// An embedding slice as a candidate: its conditions for people, its query, and its
/// explanation in phrases and tags.
fn embedding_candidate(
    slice: &embedding::EmbeddingSlice,
    input: &EmbeddingInput,
    built: &predicates::Predicates,
    search_predicates: &[Predicate],
    discovery_rows: &[usize],
    label_means: &mut HashMap<Option<String>, Vec<f64>>,
) -> Candidate {
    let table = &input.table;
    let mut predicates = Vec::new();
    let mut conditions = vec![format!("e.model = {}", sql_string(input.model))];
    if let Some(label) = &slice.label {
        predicates.push(format!("label = {}", sql_string(label)));
        conditions.push(format!("i.label = {}", sql_string(label)));
    }
    predicates.push(format!("similar to embedding centroid {} (cosine >= {})", slice.component, slice.threshold));
    conditions.push(format!(
        "cosine_similarity(e.vector, {}) >= {}",
        embedding::centroid_literal(&slice.centroid),
        slice.threshold
    ));
    let query = format!(
        "SELECT DISTINCT i.image_id FROM images i JOIN embeddings e ON e.image_id = i.image_id WHERE {}",
        conditions.join(" AND ")
    );

    // Phrases: along the slice's mean minus the mean of its label (or of every image),
    // both over the discovery half.
    let in_discovery = restrict(&slice.rows, discovery_rows);
    let mut members = vec![0.0f64; table.dim];
    let mut count = 0usize;
    for (i, &r) in discovery_rows.iter().enumerate() {
        if in_discovery[i / 64] >> (i % 64) & 1 == 1 && table.has_vector[r] {
            members.iter_mut().zip(&table.vectors[r * table.dim..][..table.dim]).for_each(|(a, &v)| *a += f64::from(v));
            count += 1;
        }
    }
    members.iter_mut().for_each(|v| *v /= count.max(1) as f64);
    let reference = label_means.entry(slice.label.clone()).or_insert_with(|| {
        let mut sum = vec![0.0f64; table.dim];
        let mut count = 0usize;
        for &r in discovery_rows {
            if table.has_vector[r] && slice.label.as_deref().is_none_or(|l| table.labels[r].as_deref() == Some(l)) {
                sum.iter_mut().zip(&table.vectors[r * table.dim..][..table.dim]).for_each(|(a, &v)| *a += f64::from(v));
                count += 1;
            }
        }
        sum.iter_mut().for_each(|v| *v /= count.max(1) as f64);
        sum
    });
    let direction: Vec<f64> = members.iter().zip(reference.iter()).map(|(a, b)| a - b).collect();
    let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    let phrases = match input.phrases {
        Some(phrases) if norm > 0.0 => {
            let mut scored: Vec<(String, f64)> = phrases
                .texts
                .iter()
                .zip(&phrases.vectors)
                .map(|(text, v)| {
                    let dot: f64 = v.iter().zip(&direction).map(|(a, b)| f64::from(*a) * b).sum();
                    let v_norm = v.iter().map(|a| f64::from(*a) * f64::from(*a)).sum::<f64>().sqrt();
                    (text.clone(), if v_norm > 0.0 { dot / (v_norm * norm) } else { 0.0 })
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            scored.truncate(3);
            scored.iter_mut().for_each(|(_, s)| *s = (*s * 1e4).round() / 1e4);
            scored
        }
        _ => Vec::new(),
    };
    let (tags, tags_jaccard) = describe_in_tags(&in_discovery, built, search_predicates);
    Candidate {
        method: "embeddings",
        predicates,
        query,
        rows: slice.rows.clone(),
        explanation: Some(Explanation { phrases, tags, tags_jaccard }),
    }
}

/// A string as a SQL literal.
fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The conjunction of 1–3 predicates (one per column) that best matches `target` (rows of
/// the discovery half, as `predicates`) by Jaccard similarity: a beam search keeping the 8
/// best at each level.
fn describe_in_tags(target: &Bitmap, built: &predicates::Predicates, predicates: &[Predicate]) -> (Vec<String>, f64) {
    if predicates.is_empty() {
        return (Vec::new(), 0.0);
    }
    let rows: Vec<&Bitmap> = predicates.iter().map(|p| &p.rows).collect();
    let jaccard = |set: &Bitmap| -> f64 {
        let (mut both, mut either) = (0u32, 0u32);
        for (a, b) in set.iter().zip(target) {
            both += (a & b).count_ones();
            either += (a | b).count_ones();
        }
        if either == 0 { 0.0 } else { f64::from(both) / f64::from(either) }
    };
    const BEAM: usize = 8;
    let mut best: (Vec<usize>, f64) = (Vec::new(), 0.0);
    let mut beam: Vec<(Vec<usize>, Bitmap, f64)> = Vec::new();
    for level in 1..=3 {
        let mut next: Vec<(Vec<usize>, Bitmap, f64)> = Vec::new();
        if level == 1 {
            for (p, r) in rows.iter().enumerate() {
                next.push((vec![p], (*r).clone(), jaccard(r)));
            }
        } else {
            for (chosen, set, _) in &beam {
                for (p, r) in rows.iter().enumerate() {
                    let column = predicates[p].column;
                    if chosen.iter().any(|&c| predicates[c].column == column) || chosen.last() >= Some(&p) {
                        continue;
                    }
                    let rows: Bitmap = set.iter().zip(r.iter()).map(|(a, b)| a & b).collect();
                    let mut picked = chosen.clone();
                    picked.push(p);
                    let j = jaccard(&rows);
                    next.push((picked, rows, j));
                }
            }
        }
        next.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        next.truncate(BEAM);
        // A longer description must be clearly better to be preferred.
        if let Some(top) = next.first()
            && top.2 > best.1 + 0.02
        {
            best = (top.0.clone(), top.2);
        }
        beam = next;
    }
    let words = best.0.iter().map(|&p| built.predicates[p].description.clone()).collect();
    (words, (best.1 * 1e4).round() / 1e4)
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
        match discover_in_table(&table.0, &table.1, &table.2, None, None, options) {
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
        let too_big = discover_in_table(
            &t.0,
            &t.1,
            &t.2,
            None,
            None,
            &DiscoverOptions { min_support: 150, ..Default::default() },
        );
        assert!(
            matches!(too_big, Err(TableError::Engine(EngineError::InvalidArgument(m))) if m.contains("min_support 150"))
        );
        let no_errors = discover_in_table(&t.0, &t.1, &vec![0.0; 200], None, None, &DiscoverOptions::default());
        assert!(no_errors.is_ok_and(|d| d.slices.is_empty() && d.tested == 0));
        let constant: Vec<(String, ArrayRef)> = vec![("width".into(), Arc::new(Int64Array::from(vec![7; 200])))];
        let useless = discover_in_table(&t.0, &constant, &t.2, None, None, &DiscoverOptions::default());
        assert!(matches!(useless, Err(TableError::NoColumns(m)) if m.contains("width: has one value only")));
    }

    /// `n` unit vectors in `dim` dimensions: 10 labels, each with 5 visual concepts
    /// (directions), and errors at `base` everywhere except on (label 3, concept 2) when
    /// `planted`, where 60% are predicted as label 5. Returns the table, the vectors and
    /// which rows are the planted concept.
    #[allow(clippy::type_complexity)]
    fn clustered(
        n: usize,
        dim: usize,
        seed: u64,
        base: f64,
        planted: bool,
    ) -> ((Vec<String>, Vec<(String, ArrayRef)>, Vec<f64>), Vec<f32>, Vec<Option<String>>, Vec<Option<String>>, Vec<bool>)
    {
        let xorshift = |seed: u64| {
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64
            }
        };
        let mut uniform = xorshift(seed);
        // Box–Muller on a stream of its own.
        let mut gaussian = {
            let mut u = xorshift(seed ^ 0x5EED_0F6A_55AA);
            move || (-2.0 * u().max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * u()).cos()
        };
        let direction = |gaussian: &mut dyn FnMut() -> f64| -> Vec<f64> {
            let v: Vec<f64> = (0..dim).map(|_| gaussian()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / norm).collect()
        };
        let classes: Vec<Vec<f64>> = (0..10).map(|_| direction(&mut gaussian)).collect();
        let concepts: Vec<Vec<f64>> = (0..50).map(|_| direction(&mut gaussian)).collect();
        let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
        let (mut vectors, mut labels, mut predictions, mut errors, mut in_concept, mut noise) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let label = (uniform() * 10.0) as usize;
            let concept = (uniform() * 5.0) as usize;
            let mut v: Vec<f64> = (0..dim)
                .map(|j| classes[label][j] + 0.7 * concepts[label * 5 + concept][j] + 0.18 * gaussian())
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            vectors.extend(v.iter().map(|&x| x as f32));
            let target = planted && label == 3 && concept == 2;
            let wrong = uniform() < if target { 0.6 } else { base };
            let predicted = if !wrong {
                label
            } else if target {
                5
            } else {
                (label + 1 + (uniform() * 9.0) as usize) % 10
            };
            labels.push(Some(names[label].to_string()));
            predictions.push(Some(names[predicted].to_string()));
            errors.push(f64::from(u8::from(wrong)));
            in_concept.push(target);
            noise.push(uniform());
        }
        let ids: Vec<String> = (0..n).map(|i| format!("img_{seed}_{i}")).collect();
        let columns: Vec<(String, ArrayRef)> = vec![
            ("label".into(), Arc::new(StringArray::from(labels.clone()))),
            ("brightness".into(), Arc::new(Float64Array::from(noise))),
        ];
        ((ids, columns, errors), vectors, labels, predictions, in_concept)
    }

    fn embedding_run(n: usize, seed: u64, base: f64, planted: bool) -> (Discovery, Vec<bool>, Vec<f32>) {
        let dim = 48;
        let (table, vectors, labels, predictions, in_concept) = clustered(n, dim, seed, base, planted);
        let has_vector = vec![true; n];
        let input = EmbeddingInput {
            table: embedding::EmbeddingTable {
                vectors: &vectors,
                dim,
                has_vector: &has_vector,
                labels: &labels,
                predictions: Some(&predictions),
                errors: &table.2,
            },
            model: "m",
            phrases: None,
        };
        let options = DiscoverOptions { method: DiscoverMethod::Embeddings, seed, ..Default::default() };
        match discover_in_table(&table.0, &table.1, &table.2, None, Some(&input), &options) {
            Ok(d) => (d, in_concept, vectors),
            Err(_) => panic!("discovery failed"),
        }
    }

    #[test]
    fn a_planted_embedding_concept_is_found_with_its_label_and_explained_in_tags() {
        let mut precise = 0;
        for seed in 0..4 {
            let n = 12_000;
            let (d, in_concept, vectors) = embedding_run(n, seed, 0.05, true);
            let first = &d.slices[0];
            assert_eq!(first.method, "embeddings");
            assert!(first.confirmed && first.predicates[0] == "label = 'three'", "seed {seed}: {:#?}", d.slices);
            assert!(first.query.starts_with("SELECT DISTINCT i.image_id FROM images i JOIN embeddings e"));
            assert!(first.query.contains("e.model = 'm' AND i.label = 'three' AND cosine_similarity(e.vector, ["));
            let explanation = first.explanation.as_ref().expect("embedding slices are explained");
            assert_eq!(explanation.tags, ["label = 'three'"], "seed {seed}");
            // Precision@10: the ten members closest to the centroid are planted images.
            let centroid: Vec<f32> = first
                .query
                .split('[')
                .nth(1)
                .unwrap()
                .split(']')
                .next()
                .unwrap()
                .split(", ")
                .map(|v| v.parse::<f32>().unwrap())
                .collect();
            let mut closest: Vec<(f32, usize)> =
                (0..n).map(|r| (slicetest_embed::index::cosine(&vectors[r * 48..][..48], &centroid), r)).collect();
            closest.sort_by(|a, b| b.0.total_cmp(&a.0));
            let hits = closest.iter().take(10).filter(|(_, r)| in_concept[*r]).count();
            precise += usize::from(hits >= 9);
            // Most of the concept is in the slice.
            let size = first.discovery.size + first.confirmation.size;
            let planted = in_concept.iter().filter(|&&x| x).count() as u64;
            assert!(size * 2 > planted && size < planted * 2, "seed {seed}: {size} members for {planted} planted");
        }
        assert_eq!(precise, 4, "precision@10 >= 0.9 on every seed");
    }

    #[test]
    fn losses_without_predictions_and_images_without_vectors_work_too() {
        // A detection- or loss-style run: no predicted label, a continuous error, and a
        // third of the images not embedded (they can be in no embedding slice).
        let n = 9_000;
        let dim = 48;
        let (table, vectors, labels, _, in_concept) = clustered(n, dim, 5, 0.05, true);
        let errors: Vec<f64> = table.2.iter().map(|&e| e * 2.5 + 0.1).collect();
        let has_vector: Vec<bool> = (0..n).map(|r| r % 3 != 0).collect();
        let input = EmbeddingInput {
            table: embedding::EmbeddingTable {
                vectors: &vectors,
                dim,
                has_vector: &has_vector,
                labels: &labels,
                predictions: None,
                errors: &errors,
            },
            model: "m",
            phrases: None,
        };
        let options = DiscoverOptions { method: DiscoverMethod::Embeddings, ..Default::default() };
        let d = match discover_in_table(&table.0, &table.1, &errors, None, Some(&input), &options) {
            Ok(d) => d,
            Err(_) => panic!("discovery failed"),
        };
        assert_eq!(d.embeddings.as_ref().map(|e| e.vectors), Some(6_000));
        let first = d.slices.first().expect("the planted concept is found");
        assert!(first.confirmed && first.predicates[0] == "label = 'three'", "{:#?}", d.slices);
        assert!(first.confirmation.error_rate > 1.0, "{:?}", first.confirmation);
        // No member lacks a vector, and most members are planted.
        let members: Vec<usize> =
            first.failures.iter().map(|id| table.0.iter().position(|x| x == id).unwrap()).collect();
        assert!(members.iter().all(|&r| has_vector[r] && in_concept[r]), "{members:?}");
    }

    #[test]
    fn independent_errors_give_no_embedding_slice() {
        let with_a_slice =
            (0..10).filter(|&seed| !embedding_run(6_000, 50 + seed, 0.1, false).0.slices.is_empty()).count();
        assert!(with_a_slice <= 1, "{with_a_slice} of 10 null sets had a confirmed slice");
    }

    #[test]
    fn a_group_column_must_hold_one_value_per_image() {
        use datafusion::arrow::array::{Int32Array, ListArray, StructArray};
        use datafusion::arrow::datatypes::{Field, Int32Type};
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None]));
        let values = group_values(&ints, "scene", "street").unwrap();
        assert_eq!(values.as_string::<i32>().iter().collect::<Vec<_>>(), [Some("1"), None]);
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]));
        let fields = vec![(Arc::new(Field::new("a", DataType::Int32, true)), Arc::new(Int32Array::from(vec![1])) as _)];
        let structs: ArrayRef = Arc::new(StructArray::from(fields));
        for nested in [list, structs] {
            let e = group_values(&nested, "meta", "street").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
            let message = e.to_string();
            assert!(message.starts_with("--group meta: column \"meta\" of street.images is "), "{message}");
            assert!(message.contains("group by a column of strings, numbers"), "{message}");
            assert!(!message.contains("Cast error"), "{message}");
        }
    }

    #[test]
    fn a_group_column_keeps_near_duplicates_in_one_half() {
        // Groups of four copies of one scene: split by image, most groups straddle both
        // halves; grouped, none does.
        let (ids, columns, errors) = table(4_000, 9, 0.1, 0.1, |_, _, _, _| false);
        let groups: Vec<Option<String>> = (0..4_000).map(|i| Some(format!("scene_{}", i / 4))).collect();
        let straddling = |grouped: bool| -> usize {
            (0..1_000)
                .filter(|g| {
                    let halves: Vec<bool> = (g * 4..g * 4 + 4)
                        .map(|r| in_discovery_half(7, if grouped { groups[r].as_deref().unwrap() } else { &ids[r] }))
                        .collect();
                    halves.iter().any(|&h| h) && halves.iter().any(|&h| !h)
                })
                .count()
        };
        let options = DiscoverOptions { group: Some("scene".into()), ..Default::default() };
        let grouped = match discover_in_table(&ids, &columns, &errors, Some(&groups), None, &options) {
            Ok(d) => d,
            Err(_) => panic!("discovery failed"),
        };
        assert_eq!(grouped.group.as_deref(), Some("scene"));
        assert_eq!(grouped.halves[0] % 4, 0, "whole groups per half: {:?}", grouped.halves);
        assert_eq!(straddling(true), 0);
        assert!(straddling(false) > 800, "{}", straddling(false));
    }

    #[test]
    fn failures_are_the_slices_wrong_images() {
        let t = table(20_000, 1, 0.08, 0.6, |w, time, _, _| w == "rain" && time == "night");
        let d = run(&t, &DiscoverOptions::default());
        let first = &d.slices[0];
        assert_eq!(first.failures.len(), 8);
        for id in &first.failures {
            let r = t.0.iter().position(|x| x == id).unwrap();
            assert_eq!(t.2[r], 1.0, "{id} is a failure");
        }
        let mut sorted = first.failures.clone();
        sorted.sort();
        assert_eq!(sorted, first.failures, "equal errors: by id");
    }

    #[test]
    fn restrict_renumbers_the_subset() {
        let bitmap = bitmap_from([true, false, true, true, false]);
        assert_eq!(restrict(&bitmap, &[1, 2, 4]), bitmap_from([false, true, false]));
    }
}
