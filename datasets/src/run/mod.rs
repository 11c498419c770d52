//! Model runs on disk: validated predictions (`runs/<run>/predictions-<key>.parquet`, named
//! by content, see [`run_file`]) and a manifest (`runs/<run>/run.json`). The manifest is written last and only if absent, so
//! a run is there whole or not at all (also on a bucket), and never rewritten.
//!
//! A classification run's table has an `image_id` column and at least one of: `predicted`
//! (a label), `prob_<label>` columns (one per class, summing to 1), `score`, `loss`.
//! Without `predicted`, the most probable class is the prediction. A detection run
//! (boxes, see [`detections`]) is stored as `runs/<run>/detections-<key>.parquet` instead.

pub mod archive;
pub mod detections;
pub mod mask_results;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::stored::{parse_json, read_checked_parquet};
use crate::table_file::read_table;
use crate::version::{encode_parquet, keyed_name, read_image_columns};
use crate::workspace::{Workspace, unknown_name_hint};
use detections::Positions;

/// Probabilities must sum to 1 within this tolerance.
pub const PROB_SUM_TOLERANCE: f64 = 1e-3;
/// At most this many problems are listed in a rejection.
const MAX_PROBLEMS: usize = 20;

/// What a run predicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A label per image (`predictions.parquet`).
    #[default]
    Classification,
    /// Boxes with categories and scores (`detections.parquet`).
    Detection,
    /// A class per pixel (`scores.parquet`, `confusion.parquet`, `masks.parquet`; see
    /// [`SegmentationFiles`]).
    Segmentation,
}

/// What a segmentation run keeps besides its per-image, per-class scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationFiles {
    /// The dataset's mask set the predictions were scored against.
    pub mask_source: String,
    /// The ignore index of that mask set (its pixels count nowhere).
    pub ignore_index: u16,
    /// SHA-256 of `confusion.parquet`: image_id, truth, truth_id, predicted,
    /// predicted_id, pixels — each image's pixel confusion matrix, non-zero cells only.
    pub confusion_sha256: String,
    /// SHA-256 of `masks.parquet`: image_id, width, height, rle — the predicted label maps.
    pub masks_sha256: String,
}

/// A segmentation run's per-image confusion matrices.
pub const CONFUSION_FILE: &str = "confusion.parquet";
/// A segmentation run's predicted label maps.
pub const PREDICTED_MASKS_FILE: &str = "masks.parquet";
/// A segmentation run's per-image, per-class tp/fp/fn (its "predictions" file).
pub const SEGMENTATION_SCORES_FILE: &str = "scores.parquet";

/// The manifest of an uploaded run (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run's name.
    pub run: String,
    /// What the run predicts; manifests written before detection runs existed are
    /// classification runs.
    #[serde(default)]
    pub task: Task,
    /// The model's name.
    pub model: String,
    /// The model's version.
    pub model_version: String,
    /// The dataset the predictions are for, and its version at upload.
    pub dataset: String,
    /// The dataset version at upload time.
    pub dataset_version: u64,
    /// Number of predictions (detections, for a detection run).
    pub predictions: u64,
    /// Images of the dataset with no prediction (allowed only with `allow_partial`; for
    /// a detection run, images where nothing was detected).
    pub images_without_prediction: u64,
    /// Class order of the `probs` lists (empty without probabilities); for a detection
    /// run, the dataset's categories in id order.
    pub classes: Vec<String>,
    /// Whether `score` / `loss` columns were given.
    pub has_score: bool,
    /// Whether a `loss` column was given.
    pub has_loss: bool,
    /// The uploaded file and its SHA-256.
    pub source: String,
    /// SHA-256 of the uploaded file.
    pub source_sha256: String,
    /// SHA-256 of `predictions.parquet`.
    pub parquet_sha256: String,
    /// Upload time (RFC 3339).
    pub created_at: String,
    /// The slicetest version that wrote it.
    pub slicetest_version: String,
    /// Where the predictions came from, as the uploader describes it (e.g. the demo
    /// records its trainer, the CPU and the kernel path); absent in older manifests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provenance: BTreeMap<String, String>,
    /// Detection runs: the operating point's score threshold given at upload (None: the
    /// best-F1 one, chosen when scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f64>,
    /// Segmentation runs: the mask set and the files beside the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationFiles>,
    /// What looked wrong with the upload without making it unusable (boxes that reach
    /// far past their images, as corners given for sizes do); said at upload, kept here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The stored name of each file by its role (`predictions.parquet` →
    /// `predictions-<sha16>.parquet`): names no other upload's content takes, so two
    /// uploads racing for one run name never write the same file. Empty in manifests
    /// written before names were keyed, where the role is the file name ([`run_file`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// What to upload and as what.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The run's name (unique in the workspace).
    pub run: String,
    /// The model's name.
    pub model: String,
    /// The model's version.
    pub model_version: String,
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// Accept predictions that cover only part of the dataset.
    pub allow_partial: bool,
    /// Free-form provenance stored in `run.json` (what made the predictions, where).
    pub provenance: BTreeMap<String, String>,
    /// Detection runs: the score threshold of the operating point (default: the one
    /// with the best F1 on the whole run, chosen when the run is scored).
    pub score_threshold: Option<f64>,
    /// The file's masks are instance masks (detections scored with mask AP), also where
    /// they have no box: each such detection gets its mask's box, as pycocotools'
    /// `loadRes` gives one. Without it, masks without boxes are a segmentation run's
    /// per-class masks.
    pub instances: bool,
}

/// Validates `path` against the dataset and stores it as a new run. Nothing is written
/// unless every row is valid.
pub async fn upload(workspace: &Workspace, path: &Path, options: &UploadOptions) -> Result<RunManifest> {
    upload_from(workspace, path, &path.display().to_string(), options).await
}

/// What an uploaded file holds, before it is checked.
enum Input {
    /// A table: classification predictions, or detections when it has box columns.
    Table(RecordBatch),
    /// A COCO results list (`.json` records with a `bbox`).
    CocoResults(Vec<u8>),
    /// COCO results one record a line (`.jsonl` records with a `bbox`).
    CocoLines(Vec<u8>),
    /// A folder of YOLO prediction label files.
    YoloLabels(PathBuf),
}

/// Like [`upload`], recording `source` as where the predictions came from (`run.json`'s
/// `source`; the API gives the uploaded file's name or `upload`, never its temporary path).
pub async fn upload_from(
    workspace: &Workspace,
    path: &Path,
    source: &str,
    options: &UploadOptions,
) -> Result<RunManifest> {
    validate_name(&options.run)?;
    let layout = workspace.layout();
    let dataset = workspace.dataset_or_default(options.dataset.as_deref())?;
    let info = workspace.dataset(&dataset)?;
    let version = info.latest().expect("listed datasets have a version").clone();
    let rejected = |problems: Vec<String>| DatasetError::BadInput {
        source_path: path.to_path_buf(),
        message: format!("predictions rejected, nothing was written:\n  - {}", problems.join("\n  - ")),
    };
    if let Some(t) = options.score_threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(rejected(vec![format!("score_threshold {t} is not a number in [0, 1]")]));
    }
    // A `.json` file is a list of records: a COCO results list when they have a `bbox`,
    // else classification records (the columns of a table). JSON lines likewise, a
    // record a line. A table with box columns is detections too.
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let input = match extension.as_str() {
        _ if path.is_dir() => {
            Input::YoloLabels(detections::yolo_labels_dir(path).unwrap_or_else(|| path.to_path_buf()))
        }
        "json" => {
            let bytes = fs::read(path).map_err(DatasetError::io("reading", path))?;
            if options.instances || detections::has_boxes(&bytes).map_err(|e| rejected(vec![e]))? {
                Input::CocoResults(bytes)
            } else {
                Input::Table(records_table(&bytes).map_err(|e| rejected(vec![e]))?)
            }
        }
        "jsonl" | "ndjson" => {
            let bytes = fs::read(path).map_err(DatasetError::io("reading", path))?;
            if options.instances || detections::json_lines_have_boxes(&bytes) {
                Input::CocoLines(bytes)
            } else {
                Input::Table(read_table(path, "predictions").await?)
            }
        }
        _ => Input::Table(read_table(path, "predictions").await?),
    };
    let box_columns = match &input {
        Input::Table(table) if options.instances => {
            let mut columns = detections::box_columns(table);
            columns.extend(table.column_by_name(detections::SEGMENTATION_COLUMN).map(|_| "segmentation".to_string()));
            columns
        }
        Input::Table(table) => detections::box_columns(table),
        Input::CocoResults(_) | Input::CocoLines(_) | Input::YoloLabels(_) => vec!["bbox".to_string()],
    };
    let checked = if !box_columns.is_empty() {
        let Some(objects) = &version.objects else {
            let what = match &input {
                Input::CocoResults(_) | Input::CocoLines(_) => {
                    "these are detections (records with a \"bbox\")".to_string()
                }
                Input::YoloLabels(_) => "these are detections (YOLO label files)".to_string(),
                Input::Table(_) => format!("column(s) {} are box columns of detections", box_columns.join(", ")),
            };
            return Err(DatasetError::BadInput {
                source_path: path.to_path_buf(),
                message: format!(
                    "{what}, but dataset {dataset:?} (version {}) has no ground-truth boxes to score them against; \
                     ingest a COCO file with annotations first (classification predictions are image_id with \
                     predicted, prob_<label>, score or loss, and no box columns)",
                    version.version
                ),
            });
        };
        let instances = options.instances;
        let (mut rows, positions) = match &input {
            Input::Table(table) => (detections::table_rows(table, instances).map_err(rejected)?, Positions::TableRows),
            Input::CocoResults(bytes) => {
                (detections::coco_rows(bytes, instances).map_err(rejected)?, Positions::ListItems)
            }
            Input::CocoLines(bytes) => detections::coco_line_rows(bytes, instances).map_err(rejected)?,
            Input::YoloLabels(dir) => detections::yolo_rows(dir).map_err(rejected)?,
        };
        let has_coco = version.columns.iter().any(|c| c.name == "coco_id");
        let columns: &[&str] =
            if has_coco { &["image_id", "coco_id", "width", "height"] } else { &["image_id", "width", "height"] };
        let images = read_image_columns(layout, &version, columns)?;
        let ids: Vec<String> = strings(&images, "image_id").unwrap_or_default().into_iter().flatten().collect();
        let coco_ids: Option<Vec<Option<i64>>> = images.column_by_name("coco_id").map(|c| {
            let c = c.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
        });
        let sizes = crate::version::image_sizes(&images)?;
        let checked = detections::validate(
            &options.run,
            &mut rows,
            &positions,
            &ids,
            coco_ids.as_deref(),
            &sizes,
            &objects.categories,
        )
        .map_err(rejected)?;
        let given: Vec<bool> = rows.iter().map(detections::Row::box_given).collect();
        let warnings = detections::boxes_past_their_images(&checked.batch, &images, &given).into_iter().collect();
        Checked {
            batch: checked.batch,
            classes: objects.categories.iter().map(|c| c.name.clone()).collect(),
            missing: checked.images_without_detections,
            has_score: true,
            has_loss: false,
            task: Task::Detection,
            warnings,
        }
    } else {
        let Input::Table(table) = &input else { unreachable!("COCO results have boxes") };
        if options.instances {
            return Err(rejected(vec![
                "instances: these are classification predictions, not instance masks (no segmentation column)".into(),
            ]));
        }
        if options.score_threshold.is_some() {
            return Err(rejected(vec![
                "score_threshold is for detection runs; these are classification predictions".into(),
            ]));
        }
        let images = read_image_columns(layout, &version, &["image_id", "label"])?;
        validate(table, &images, options.allow_partial).map_err(rejected)?
    };

    let source_sha256 = if let Input::YoloLabels(dir) = &input {
        // A folder of label files: each file's name and SHA-256.
        let files = detections::yolo_label_files(dir).map_err(DatasetError::io("listing", dir))?;
        let hashes = files.iter().map(|f| Ok((name_of(f), file_sha256(f)?))).collect::<Result<Vec<_>>>()?;
        crate::version::pairs_hash(hashes.iter().map(|(name, sha)| (name.as_str(), sha.as_str())))
    } else {
        file_sha256(path)?
    };
    let files = [(predictions_file(checked.task), &checked.batch)];
    publish(workspace, &options.run, &files, |hashes| RunManifest {
        run: options.run.clone(),
        task: checked.task,
        model: options.model.clone(),
        model_version: options.model_version.clone(),
        dataset: dataset.clone(),
        dataset_version: version.version,
        predictions: checked.batch.num_rows() as u64,
        images_without_prediction: checked.missing,
        classes: checked.classes.clone(),
        has_score: checked.has_score,
        has_loss: checked.has_loss,
        source: source.to_string(),
        source_sha256,
        parquet_sha256: hashes[0].clone(),
        created_at: chrono::Utc::now().to_rfc3339(),
        slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
        provenance: options.provenance.clone(),
        score_threshold: options.score_threshold,
        segmentation: None,
        warnings: checked.warnings.clone(),
        files: BTreeMap::new(), // publish fills it in
    })
}

/// A file's name, for hashes over a folder's files.
fn name_of(file: &Path) -> String {
    file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A JSON list of classification records (`[{"image_id": …, "predicted": …}, …]`, as
/// `json.dumps(df.to_dict("records"))` writes it) as a table: one column per field, in
/// the order the fields first appear; Int64 when every value is a whole number, Float64
/// when every value is a number, else text (numbers as written); null where a record
/// lacks the field or has `null`.
fn records_table(bytes: &[u8]) -> std::result::Result<RecordBatch, String> {
    use serde_json::Value;
    let records: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(bytes).map_err(|e| {
        format!("a .json file of predictions is a list of records ({{\"image_id\": …, \"predicted\": …}}): {e}")
    })?;
    let mut names: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for record in &records {
        for name in record.keys() {
            if seen.insert(name) {
                names.push(name);
            }
        }
    }
    let mut fields = Vec::with_capacity(names.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(names.len());
    for name in names {
        let values: Vec<Option<&Value>> = records.iter().map(|r| r.get(name).filter(|v| !v.is_null())).collect();
        if let Some((n, _)) = values.iter().enumerate().find(|(_, v)| v.is_some_and(|v| v.is_array() || v.is_object()))
        {
            return Err(format!("record {}: field {name:?} is a list or an object; give plain values", n + 1));
        }
        let present = || values.iter().flatten();
        let column: ArrayRef = if present().all(|v| v.as_i64().is_some()) {
            Arc::new(values.iter().map(|v| v.and_then(Value::as_i64)).collect::<datafusion::arrow::array::Int64Array>())
        } else if present().all(|v| v.is_number()) {
            Arc::new(values.iter().map(|v| v.and_then(Value::as_f64)).collect::<Float64Array>())
        } else {
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Arc::new(values.iter().map(|v| v.map(text)).collect::<StringArray>())
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(records.len()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options).map_err(|e| e.to_string())
}

/// SHA-256 of an uploaded file.
pub fn file_sha256(path: &Path) -> Result<String> {
    Ok(hex::encode(Sha256::digest(fs::read(path).map_err(DatasetError::io("reading", path))?)))
}

/// Publishes run `run`: writes `files` (name, table), then the manifest made from their
/// SHA-256s (in order), created only if absent: an existing run of that name is refused
/// (runs are immutable), also when another upload commits it first. Files written before
/// a failure are removed again.
pub fn publish(
    workspace: &Workspace,
    run: &str,
    files: &[(&str, &RecordBatch)],
    manifest: impl FnOnce(&[String]) -> RunManifest,
) -> Result<RunManifest> {
    let layout = workspace.layout();
    let storage = layout.storage();
    let dir = layout.run_dir(run);
    let taken = || DatasetError::RunExists(run.to_string());
    if storage.exists(&dir.join(RUN_FILE))? {
        return Err(taken());
    }
    let mut written = Vec::new();
    let result = (|| {
        // The files are independent: encoded (and compressed) in parallel.
        use rayon::prelude::*;
        let encoded =
            files.par_iter().map(|(_, batch)| encode_parquet(batch, Vec::new())).collect::<Result<Vec<_>>>()?;
        let (mut hashes, mut names) = (Vec::with_capacity(files.len()), BTreeMap::new());
        for ((role, _), bytes) in files.iter().zip(encoded) {
            let sha = hex::encode(Sha256::digest(&bytes));
            let name = keyed_name(role.strip_suffix(".parquet").unwrap_or(role), &sha, "parquet");
            storage.write(&dir.join(&name), bytes)?;
            written.push(name.clone());
            names.insert(role.to_string(), name);
            hashes.push(sha);
        }
        let mut manifest = manifest(&hashes);
        manifest.files = names;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
        crate::ingest::failpoint("upload-before-publish");
        if !storage.create(&dir.join(RUN_FILE), json.into())? {
            return Err(taken());
        }
        Ok(manifest)
    })();
    if result.is_err() {
        // Keep what a run that committed under this name names (the same content as ours
        // has the same name); the rest is ours alone.
        let kept: Vec<String> = match storage.read_opt(&dir.join(RUN_FILE)) {
            Ok(Some(json)) => serde_json::from_slice::<RunManifest>(&json)
                .map(|m| m.files.into_values().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for name in written.iter().filter(|name| !kept.contains(name)) {
            let _ = storage.remove(&dir.join(name));
        }
    }
    result
}

/// Where a run keeps the file of `role` ([`predictions_file`], [`CONFUSION_FILE`], …).
pub fn run_file(layout: &WorkspaceLayout, manifest: &RunManifest, role: &str) -> PathBuf {
    layout.run_dir(&manifest.run).join(manifest.files.get(role).map_or(role, String::as_str))
}

/// File name of a run's predictions.
pub const PREDICTIONS_FILE: &str = "predictions.parquet";
/// File name of a run's manifest.
pub const RUN_FILE: &str = "run.json";

/// The file a run of `task` keeps its predictions in.
pub fn predictions_file(task: Task) -> &'static str {
    match task {
        Task::Classification => PREDICTIONS_FILE,
        Task::Detection => detections::DETECTIONS_FILE,
        Task::Segmentation => SEGMENTATION_SCORES_FILE,
    }
}

/// Reads a run's manifest.
pub fn read_run(workspace: &Workspace, run: &str) -> Result<RunManifest> {
    validate_name(run)?;
    let path = workspace.layout().run_dir(run).join(RUN_FILE);
    let Some(text) = workspace.layout().storage().read_opt(&path)? else {
        let hint = unknown_name_hint(run, &run_names(workspace)?, "runs", "no runs yet (slicetest run upload …)");
        return Err(DatasetError::UnknownRun { name: run.to_string(), hint });
    };
    parse_json(&text, path, "run manifest")
}

/// Every committed run's manifest, by name: one listing, the manifests read concurrently
/// (one after another, each is a round trip on a bucket).
pub fn read_runs(workspace: &Workspace) -> Result<Vec<RunManifest>> {
    let layout = workspace.layout();
    let paths: Vec<PathBuf> = run_names(workspace)?.iter().map(|run| layout.run_dir(run).join(RUN_FILE)).collect();
    let texts = layout.storage().read_many(&paths)?;
    paths.into_iter().zip(texts).filter_map(|(path, text)| Some(parse_json(&text?, path, "run manifest"))).collect()
}

/// Names of all committed runs (those with a manifest), sorted.
pub fn run_names(workspace: &Workspace) -> Result<Vec<String>> {
    let layout = workspace.layout();
    let mut names: Vec<String> = layout
        .storage()
        .list_files(&layout.runs_dir())?
        .iter()
        .filter_map(|file| file.strip_suffix(RUN_FILE)?.strip_suffix('/'))
        .filter(|name| validate_name(name).is_ok())
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// Reads a run's predictions after checking the file against its manifest: the
/// classification table, or for a detection run its boxes (see
/// [`detections::detections_schema`]).
pub fn read_predictions(workspace: &Workspace, manifest: &RunManifest) -> Result<RecordBatch> {
    let path = run_file(workspace.layout(), manifest, predictions_file(manifest.task));
    let expected = &manifest.parquet_sha256;
    let altered =
        |actual: &str| format!("the file was altered after upload (sha256 {actual}, manifest says {expected})");
    read_checked_parquet(workspace.layout().storage(), &path, expected, "run", altered, None)
}

/// One of a segmentation run's files beside its scores ([`CONFUSION_FILE`] or
/// [`PREDICTED_MASKS_FILE`]), checked against the manifest's hash.
pub fn read_segmentation_file(workspace: &Workspace, manifest: &RunManifest, file: &str) -> Result<RecordBatch> {
    let path = run_file(workspace.layout(), manifest, file);
    let expected = match (&manifest.segmentation, file) {
        (Some(s), CONFUSION_FILE) => &s.confusion_sha256,
        (Some(s), PREDICTED_MASKS_FILE) => &s.masks_sha256,
        _ => {
            return Err(DatasetError::Corrupt {
                what: "run",
                path,
                message: format!("run {} has no {file} (not a segmentation run)", manifest.run),
            });
        }
    };
    let altered =
        |actual: &str| format!("the file was altered after upload (sha256 {actual}, manifest says {expected})");
    read_checked_parquet(workspace.layout().storage(), &path, expected, "run", altered, None)
}

/// Schema of a stored predictions file.
pub fn predictions_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("predicted", DataType::Utf8, true),
        Field::new("probs", DataType::List(Arc::new(Field::new("item", DataType::Float64, true))), true),
        Field::new("score", DataType::Float64, true),
        Field::new("loss", DataType::Float64, true),
    ]))
}

struct Checked {
    batch: RecordBatch,
    classes: Vec<String>,
    missing: u64,
    has_score: bool,
    has_loss: bool,
    task: Task,
    warnings: Vec<String>,
}

fn strings(batch: &RecordBatch, name: &str) -> Option<Vec<Option<String>>> {
    let column = cast(batch.column_by_name(name)?, &DataType::Utf8).ok()?;
    let column = column.as_string::<i32>();
    Some((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_string())).collect())
}

/// One cell of a numeric column as uploaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    /// A number (NaN and infinities included: each check says what it accepts).
    Number(f64),
    /// No value: null, or an empty CSV field.
    Empty,
    /// Text that is not a number (a CSV column with such a cell is read as text).
    Text(&'a str),
}

impl Cell<'_> {
    /// The number, if it is one.
    pub(crate) fn number(self) -> Option<f64> {
        match self {
            Cell::Number(v) => Some(v),
            _ => None,
        }
    }
}

/// A numeric column as uploaded: its numbers, and the cells that are text but no number.
pub(crate) struct Numbers {
    /// The values; null where a cell is empty or not a number.
    values: Float64Array,
    /// The cells that are text and not a number, by row (few: each is a problem).
    text: HashMap<usize, String>,
}

impl Numbers {
    /// Row `row`'s cell.
    pub(crate) fn cell(&self, row: usize) -> Cell<'_> {
        match self.text.get(&row) {
            Some(t) => Cell::Text(t),
            None if self.values.is_null(row) => Cell::Empty,
            None => Cell::Number(self.values.value(row)),
        }
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// The numeric column `name`, None when the table has none: numbers as they are, text
/// parsed as a number where it is one, so a stray word in a CSV column (which makes the
/// whole column text) is found and named by its row instead of becoming null.
pub(crate) fn number_cells(table: &RecordBatch, name: &str) -> std::result::Result<Option<Numbers>, String> {
    let Some(column) = table.column_by_name(name) else { return Ok(None) };
    let data_type = column.data_type();
    if matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        let strings = cast(column, &DataType::Utf8).map_err(|e| format!("column {name:?}: {e}"))?;
        let strings = strings.as_string::<i32>();
        let mut text = HashMap::new();
        let values = (0..strings.len())
            .map(|i| {
                let value = strings.value(i).trim();
                if strings.is_null(i) || value.is_empty() {
                    return None;
                }
                let number = value.parse::<f64>().ok();
                if number.is_none() {
                    text.insert(i, value.to_string());
                }
                number
            })
            .collect();
        return Ok(Some(Numbers { values, text }));
    }
    if !(data_type.is_numeric() || data_type == &DataType::Null) {
        return Err(format!("column {name:?} must hold numbers, not {data_type}"));
    }
    let values = cast(column, &DataType::Float64).map_err(|_| format!("column {name:?} must hold numbers"))?;
    Ok(Some(Numbers { values: values.as_primitive().clone(), text: HashMap::new() }))
}

/// A JSON number that is a whole number (`1`, or `1.0` as a float-typed id comes out of
/// NumPy), as an integer; pycocotools accepts both.
pub(crate) fn whole_number(value: &serde_json::Number) -> Option<i64> {
    value.as_i64().or_else(|| whole_f64(value.as_f64()?))
}

/// `value` as an integer when it is a whole number in range.
pub(crate) fn whole_f64(value: f64) -> Option<i64> {
    (value.fract() == 0.0 && value.abs() < 9.0e15).then_some(value as i64)
}

/// Every problem with `table`, located by row (1-based, as in the file) and image id.
fn validate(
    table: &RecordBatch,
    images: &RecordBatch,
    allow_partial: bool,
) -> std::result::Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let names: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
    if names.is_empty() {
        return Err(vec!["the file is empty: no header, no rows".into()]);
    }
    if table.num_rows() == 0 {
        return Err(vec![format!("the file holds no predictions: no rows (the columns are: {})", names.join(", "))]);
    }
    let Some(ids) = strings(table, "image_id") else {
        return Err(vec![format!("no image_id column; the columns are: {}", names.join(", "))]);
    };
    let known_ids: HashSet<String> = strings(images, "image_id").unwrap_or_default().into_iter().flatten().collect();
    let labels: BTreeSet<String> = strings(images, "label").unwrap_or_default().into_iter().flatten().collect();
    let classes: Vec<String> = names.iter().filter_map(|n| n.strip_prefix("prob_").map(str::to_string)).collect();
    let predicted = strings(table, "predicted");
    let (score, loss) = match (number_cells(table, "score"), number_cells(table, "loss")) {
        (Ok(s), Ok(l)) => (s, l),
        (s, l) => return Err([s.err(), l.err()].into_iter().flatten().collect()),
    };
    if predicted.is_none() && classes.is_empty() && score.is_none() && loss.is_none() {
        return Err(vec![format!(
            "nothing to score: give a predicted column, prob_<label> columns, score or loss (columns are: {})",
            names.join(", ")
        )]);
    }
    for c in &classes {
        if !labels.is_empty() && !labels.contains(c) {
            problems.push(format!("column prob_{c}: {c:?} is not a label of the dataset"));
        }
    }
    // The probabilities are a distribution over the dataset's labels: one left out has
    // no probability for the images that have it, and its log-loss would be made up.
    let uncovered: Vec<String> = labels.iter().filter(|l| !classes.contains(l)).map(|l| format!("prob_{l}")).collect();
    if !classes.is_empty() && !uncovered.is_empty() {
        problems.push(format!(
            "prob_<label> columns give a probability to every label of the dataset; missing {} (the labels are: {})",
            uncovered.join(", "),
            labels.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let prob_columns: Vec<Numbers> = match classes
        .iter()
        .map(|c| number_cells(table, &format!("prob_{c}")))
        .collect::<std::result::Result<Vec<_>, _>>()
    {
        Ok(v) => v.into_iter().flatten().collect(),
        Err(e) => return Err(vec![e]),
    };

    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out_predicted: Vec<Option<String>> = Vec::with_capacity(ids.len());
    let mut probs = ListBuilder::new(Float64Builder::new());
    for (row, id) in ids.iter().enumerate() {
        let at = |id: &str| format!("row {} (image_id {id:?})", row + 1);
        let Some(id) = id.as_deref() else {
            problems.push(format!("row {}: image_id is empty", row + 1));
            out_predicted.push(None);
            probs.append(false);
            continue;
        };
        if !known_ids.contains(id) {
            problems.push(format!("{}: no such image in the dataset", at(id)));
        }
        if let Some(first) = seen.insert(id, row) {
            problems.push(format!("{}: duplicate of row {}", at(id), first + 1));
        }
        for (name, cells) in [("score", &score), ("loss", &loss)] {
            match cells.as_ref().map(|c| c.cell(row)) {
                Some(Cell::Number(v)) if !v.is_finite() => problems.push(format!("{}: {name} is {v}", at(id))),
                Some(Cell::Empty) => problems.push(format!("{}: {name} is empty", at(id))),
                Some(Cell::Text(t)) => problems.push(format!("{}: {name} is {t:?}, not a number", at(id))),
                _ => {}
            }
        }
        let mut argmax = None;
        if !prob_columns.is_empty() {
            let values: Vec<f64> = prob_columns.iter().map(|c| c.cell(row).number().unwrap_or(f64::NAN)).collect();
            let bad = prob_columns
                .iter()
                .enumerate()
                .find(|(_, c)| !c.cell(row).number().is_some_and(|v| (0.0..=1.0).contains(&v)));
            if let Some((k, cells)) = bad {
                let value = match cells.cell(row) {
                    Cell::Number(v) => v.to_string(),
                    Cell::Empty => "empty".to_string(),
                    Cell::Text(t) => format!("{t:?}"),
                };
                problems.push(format!(
                    "{}: prob_{} is {value}; probabilities are finite numbers in [0, 1]",
                    at(id),
                    classes[k]
                ));
            } else {
                let sum: f64 = values.iter().sum();
                if (sum - 1.0).abs() > PROB_SUM_TOLERANCE {
                    problems.push(format!(
                        "{}: probabilities sum to {sum:.6}, not 1 (tolerance {PROB_SUM_TOLERANCE})",
                        at(id)
                    ));
                }
                argmax = values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, _)| classes[k].clone());
            }
            probs.values().append_slice(&values);
            probs.append(true);
        } else {
            probs.append(false);
        }
        let label = match &predicted {
            // A predicted column is the prediction of every row: an empty cell is a
            // missing prediction, not one to leave out of the accuracy.
            Some(p) => match p[row].as_deref().filter(|l| !l.is_empty()) {
                Some(l) => Some(l.to_string()),
                None => {
                    let fallback = if classes.is_empty() {
                        ""
                    } else {
                        " (leave the column out for the most probable class to be the prediction)"
                    };
                    problems.push(format!("{}: predicted is empty{fallback}", at(id)));
                    None
                }
            },
            None => argmax,
        };
        if let Some(l) = &label
            && !labels.is_empty()
            && !labels.contains(l)
        {
            problems.push(format!("{}: predicted label {l:?} is not a label of the dataset", at(id)));
        }
        out_predicted.push(label);
        if problems.len() >= MAX_PROBLEMS {
            problems.push("… (stopped after 20 problems)".into());
            return Err(problems);
        }
    }
    let missing = known_ids.len().saturating_sub(seen.len()) as u64;
    if missing > 0 && !allow_partial && problems.is_empty() {
        let example = known_ids.iter().find(|i| !seen.contains_key(i.as_str())).cloned().unwrap_or_default();
        problems.push(format!(
            "{missing} of {} images have no prediction (e.g. {example:?}); pass --allow-partial to accept that",
            known_ids.len()
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let floats = |numbers: &Option<Numbers>| -> ArrayRef {
        Arc::new(match numbers {
            Some(numbers) => numbers.values.clone(),
            None => Float64Array::new_null(ids.len()),
        })
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.iter().map(|i| i.as_deref()).collect::<StringArray>()),
        Arc::new(out_predicted.iter().map(|p| p.as_deref()).collect::<StringArray>()),
        Arc::new(probs.finish()),
        floats(&score),
        floats(&loss),
    ];
    let batch = RecordBatch::try_new(predictions_schema(), columns).map_err(|e| vec![e.to_string()])?;
    Ok(Checked {
        batch,
        classes,
        missing,
        has_score: score.is_some(),
        has_loss: loss.is_some(),
        task: Task::Classification,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings_column(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(values.iter().copied().collect::<StringArray>())
    }

    fn floats_column(values: &[f64]) -> ArrayRef {
        Arc::new(Float64Array::from(values.to_vec()))
    }

    /// Images a (cat), b (dog), c (cat).
    fn images() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("label", strings_column(&[Some("cat"), Some("dog"), Some("cat")])),
        ])
        .unwrap()
    }

    fn problems(table: RecordBatch, allow_partial: bool) -> Vec<String> {
        match validate(&table, &images(), allow_partial) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    #[test]
    fn every_bad_row_is_named_by_row_and_image() {
        let table = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("x"), Some("a"), None])),
            ("predicted", strings_column(&[Some("cat"), Some("bird"), Some("cat"), Some("dog"), Some("cat")])),
        ])
        .unwrap();
        assert_eq!(
            problems(table, true),
            [
                "row 2 (image_id \"b\"): predicted label \"bird\" is not a label of the dataset",
                "row 3 (image_id \"x\"): no such image in the dataset",
                "row 4 (image_id \"a\"): duplicate of row 1",
                "row 5: image_id is empty",
            ]
        );
    }

    #[test]
    fn probabilities_give_the_prediction_and_must_be_a_distribution() {
        let table = |cat: &[f64], dog: &[f64]| {
            RecordBatch::try_from_iter([
                ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
                ("prob_cat", floats_column(cat)),
                ("prob_dog", floats_column(dog)),
            ])
            .unwrap()
        };
        let checked = validate(&table(&[0.9, 0.2, 0.4], &[0.1, 0.8, 0.6]), &images(), false).unwrap();
        let predicted = checked.batch.column(1).as_string::<i32>();
        assert_eq!(predicted.iter().collect::<Vec<_>>(), [Some("cat"), Some("dog"), Some("dog")]);
        assert_eq!(checked.classes, ["cat", "dog"]);

        let bad = problems(table(&[0.9, 0.2, 1.5], &[0.1, 0.7, -0.5]), false);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("row 2 (image_id \"b\"): probabilities sum to 0.900000, not 1"), "{bad:?}");
        assert!(bad[1].starts_with("row 3 (image_id \"c\"): prob_cat is 1.5"), "{bad:?}");
    }

    #[test]
    fn a_partial_upload_needs_allow_partial_and_scores_must_be_finite() {
        let partial = || {
            RecordBatch::try_from_iter([
                ("image_id", strings_column(&[Some("a"), Some("b")])),
                ("predicted", strings_column(&[Some("cat"), Some("cat")])),
            ])
            .unwrap()
        };
        let refused = problems(partial(), false);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].starts_with("1 of 3 images have no prediction (e.g. \"c\")"), "{refused:?}");
        assert_eq!(validate(&partial(), &images(), true).unwrap().missing, 1);

        let scored = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("score", floats_column(&[0.5, f64::NAN, 1.0])),
        ])
        .unwrap();
        assert_eq!(problems(scored, false), ["row 2 (image_id \"b\"): score is NaN"]);

        let nothing = RecordBatch::try_from_iter([("image_id", strings_column(&[Some("a")]))]).unwrap();
        assert!(problems(nothing, true)[0].starts_with("nothing to score"));
        let no_ids = RecordBatch::try_from_iter([("id", strings_column(&[Some("a")]))]).unwrap();
        assert_eq!(problems(no_ids, true), ["no image_id column; the columns are: id"]);
    }

    #[test]
    fn empty_predictions_and_non_numbers_are_refused_by_row() {
        let table = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("predicted", strings_column(&[Some("cat"), None, Some("")])),
            ("score", strings_column(&[Some("0.5"), Some("abc"), None])),
            ("loss", strings_column(&[Some(" 1.5 "), Some("inf"), Some("2")])),
        ])
        .unwrap();
        assert_eq!(
            problems(table, false),
            [
                "row 2 (image_id \"b\"): score is \"abc\", not a number",
                "row 2 (image_id \"b\"): loss is inf",
                "row 2 (image_id \"b\"): predicted is empty",
                "row 3 (image_id \"c\"): score is empty",
                "row 3 (image_id \"c\"): predicted is empty",
            ]
        );
        // Text that is all numbers is read as numbers (a CSV column with a stray space).
        let fine = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("predicted", strings_column(&[Some("cat"), Some("dog"), Some("cat")])),
            ("score", strings_column(&[Some("0.5"), Some(" 1 "), Some("1e-3")])),
        ])
        .unwrap();
        let checked = validate(&fine, &images(), false).unwrap();
        let score = checked.batch.column(3).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(score.iter().collect::<Vec<_>>(), [Some(0.5), Some(1.0), Some(0.001)]);
        // With probabilities an empty predicted cell is still refused, saying how to let them decide.
        let with_probs = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("predicted", strings_column(&[Some("cat"), None, Some("cat")])),
            ("prob_cat", floats_column(&[0.9, 0.2, 0.6])),
            ("prob_dog", floats_column(&[0.1, 0.8, 0.4])),
        ])
        .unwrap();
        let refused = problems(with_probs, false);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("row 2 (image_id \"b\"): predicted is empty (leave the column out"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_file_without_predictions_is_refused() {
        let header_only =
            RecordBatch::try_from_iter([("image_id", strings_column(&[])), ("predicted", strings_column(&[]))])
                .unwrap();
        assert_eq!(
            problems(header_only, true),
            ["the file holds no predictions: no rows (the columns are: image_id, predicted)"]
        );
        let nothing = RecordBatch::new_empty(Arc::new(Schema::empty()));
        assert_eq!(problems(nothing, true), ["the file is empty: no header, no rows"]);
    }

    #[test]
    fn probabilities_cover_every_label_and_must_be_numbers() {
        let images = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("label", strings_column(&[Some("cat"), Some("dog"), Some("bird")])),
        ])
        .unwrap();
        let two_of_three = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b"), Some("c")])),
            ("prob_cat", floats_column(&[0.9, 0.2, 0.5])),
            ("prob_dog", floats_column(&[0.1, 0.8, 0.5])),
        ])
        .unwrap();
        assert_eq!(
            validate(&two_of_three, &images, false).err().unwrap(),
            ["prob_<label> columns give a probability to every label of the dataset; missing prob_bird \
              (the labels are: bird, cat, dog)"]
        );
        let text = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a"), Some("b")])),
            ("prob_cat", strings_column(&[Some("0.5"), Some("n/a")])),
            ("prob_dog", strings_column(&[Some("0.5"), None])),
        ])
        .unwrap();
        assert_eq!(
            problems(text, true),
            ["row 2 (image_id \"b\"): prob_cat is \"n/a\"; probabilities are finite numbers in [0, 1]"]
        );
    }

    #[test]
    fn a_json_list_of_records_is_a_table() {
        let bytes = br#"[{"image_id": "a", "predicted": "cat", "prob_cat": 1, "prob_dog": 0.0},
                         {"image_id": "b", "predicted": "dog", "prob_cat": 0.25, "prob_dog": 0.75, "n": 3},
                         {"image_id": 7, "predicted": null, "prob_cat": 0.5, "prob_dog": 0.5}]"#;
        let table = records_table(bytes).unwrap();
        let schema = table.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["image_id", "predicted", "prob_cat", "prob_dog", "n"]);
        let types: Vec<DataType> = table.schema().fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, [DataType::Utf8, DataType::Utf8, DataType::Float64, DataType::Float64, DataType::Int64]);
        assert_eq!(strings(&table, "image_id").unwrap(), [Some("a".into()), Some("b".into()), Some("7".into())]);
        assert_eq!(strings(&table, "predicted").unwrap()[2], None);
        assert_eq!(table.column(4).null_count(), 2, "records without a field have null");
        let nested = records_table(br#"[{"image_id": "a", "probs": [0.5, 0.5]}]"#).unwrap_err();
        assert_eq!(nested, "record 1: field \"probs\" is a list or an object; give plain values");
        assert!(records_table(br#"{"image_id": ["a"]}"#).unwrap_err().starts_with("a .json file of predictions"));
        let empty = records_table(b"[]").unwrap();
        assert_eq!((empty.num_columns(), empty.num_rows()), (0, 0));
    }

    #[test]
    fn box_columns_make_a_table_detections_that_must_be_whole() {
        let corners = RecordBatch::try_from_iter([
            ("image_id", strings_column(&[Some("a")])),
            ("category", strings_column(&[Some("cat")])),
            ("x", floats_column(&[1.0])),
            ("y", floats_column(&[2.0])),
            ("score", floats_column(&[0.5])),
            ("x1", floats_column(&[3.0])),
            ("y1", floats_column(&[4.0])),
        ])
        .unwrap();
        assert_eq!(detections::box_columns(&corners), ["category", "x", "y", "x1", "y1"]);
        let Err(problems) = detections::table_rows(&corners, false) else { panic!("corners are not boxes") };
        assert!(problems[0].contains("missing w, h (columns x1, y1 are not read"), "{problems:?}");
        assert!(detections::box_columns(&images()).is_empty(), "image_id and label are no box columns");
    }

    #[test]
    fn a_taken_run_name_is_an_existing_thing_not_bad_input() {
        let e = DatasetError::RunExists("r1".into());
        assert_eq!(e.kind(), crate::error::ErrorKind::AlreadyExists);
        assert_eq!(e.to_string(), "a run named \"r1\" already exists; runs are immutable, pick another name");
    }
}
