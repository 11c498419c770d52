//! Segmentation runs: a folder of predicted label maps, checked against the dataset's
//! ground-truth mask set and reduced to one pixel confusion matrix per image at upload;
//! a slice is scored on the sum of its images' matrices (Hugging Face evaluate's
//! `mean_iou`: summed intersections and unions, not a mean of per-image IoUs), with
//! seeded bootstrap intervals over images and a paired bootstrap against a baseline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest;
use slicetest_datasets::DatasetError;
use slicetest_datasets::coco_mask;
use slicetest_datasets::masks::{self, MaskSetManifest};
use slicetest_datasets::run::mask_results::{MaskImage, PredictedClassMask};
use slicetest_datasets::run::{self, RunManifest, SegmentationFiles, Task, UploadOptions};
use slicetest_eval::segmentation::{self, SegmentationScores};

use super::import::{IGNORED, ImportedMask, positions_of_runs, read_masks, rejected, stored_runs};
use super::view::{RIGHT_COLOUR, WRONG_COLOUR, class_colour};
use crate::Engine;
use crate::bootstrap::{BOOTSTRAP_RESAMPLES, SplitMix64, percentile_interval};
use crate::error::{EngineError, Result};

/// Seed of the bootstrap resamples (fixed: reports are reproducible, and two runs on the
/// same images draw the same resamples, so their draws pair up).
const SEGMENTATION_SEED: u64 = 7;

impl Engine {
    /// Validates a folder of predicted label maps (PNG, one per image, matched to images
    /// like masks) against the dataset's mask set `mask_source` (default: its only one)
    /// and stores it as a segmentation run. Nothing is written unless every mask is valid.
    pub fn upload_segmentation_run(
        &self,
        dir: &Path,
        options: &UploadOptions,
        mask_source: Option<&str>,
    ) -> Result<RunManifest> {
        self.upload_segmentation(dir, &dir.display().to_string(), options, mask_source, None)
    }

    /// Stores a segmentation run: the predicted masks of folder `dir`, or `results` read
    /// from the file `dir`; `source` is what `run.json` records as where they came from.
    pub(crate) fn upload_segmentation(
        &self,
        dir: &Path,
        source_name: &str,
        options: &UploadOptions,
        mask_source: Option<&str>,
        results: Option<Vec<PredictedClassMask>>,
    ) -> Result<RunManifest> {
        slicetest_datasets::validate_name(&options.run)?;
        let bad = |message: String| DatasetError::BadInput { source_path: dir.to_path_buf(), message };
        if options.score_threshold.is_some() {
            return Err(bad("score_threshold is for detection runs; these are segmentation masks".into()).into());
        }
        let layout = self.workspace.layout();
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        let source = match mask_source {
            Some(s) => s.to_string(),
            None => match masks::mask_sources(layout, &dataset)?.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(bad(format!(
                        "these are segmentation masks, but dataset {dataset} has no ground-truth masks to score them \
                         against; import them first with `slicetest tag import --masks DIR --classes FILE`"
                    ))
                    .into());
                }
                several => {
                    return Err(bad(format!(
                        "dataset {dataset} has several mask sets ({}); say which one with --mask-source",
                        several.join(", ")
                    ))
                    .into());
                }
            },
        };
        let set = masks::read_mask_set(layout, &dataset, &source)?;
        let targets = self.mask_targets(&dataset)?;
        let truth = GroundTruth::read(self, &set, &targets)?;
        let (predicted, read_as_background) = match results {
            Some(results) => {
                // In a set made from COCO annotations a pixel no mask covers is background,
                // and so is every pixel of an image the file gives no mask: results files
                // leave out what a model calls background (as COCO-stuff results do), so an
                // image predicted all background has no entry. `--allow-partial` leaves such
                // images out of the scores instead.
                let all_background: &[String] =
                    if set.background.is_some() && !options.allow_partial { &truth.ids } else { &[] };
                self.masks_of_results(dir, &dataset, results, &set, &targets, all_background)?
            }
            None => {
                let files = masks::mask_files(dir)?;
                if files.is_empty() {
                    return Err(bad("no .png mask files in the folder".into()).into());
                }
                // Predictions hold class ids only: the ignore index is refused like any unlisted
                // id (a model that abstains on a pixel should say so with a class).
                (read_masks(dir, &files, &targets, &set.classes, None, false)?, 0)
            }
        };
        let mut problems = Vec::new();
        for m in &predicted {
            match truth.index.get(m.image_id.as_str()) {
                None => problems.push(format!(
                    "{}: image {} has no ground-truth mask in mask set {source} (for its current content)",
                    m.image_id, m.image_id
                )),
                Some(&i) if (truth.sizes[i]) != (m.width, m.height) => problems.push(format!(
                    "{}: the prediction is {}×{} but its ground-truth mask is {}×{}",
                    m.image_id, m.width, m.height, truth.sizes[i].0, truth.sizes[i].1
                )),
                _ => {}
            }
        }
        let covered: std::collections::HashSet<&str> = predicted.iter().map(|m| m.image_id.as_str()).collect();
        let missing: Vec<&str> = truth.ids.iter().map(String::as_str).filter(|id| !covered.contains(id)).collect();
        if !missing.is_empty() && !options.allow_partial {
            problems.push(format!(
                "{} image(s) with a ground-truth mask have no prediction (e.g. {}); pass --allow-partial to score only \
                 the images predicted",
                missing.len(),
                missing.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if !problems.is_empty() {
            return Err(rejected(dir, "predicted masks", problems));
        }
        let classes = set.classes.len();
        let id_of = |p: u16| set.classes[p as usize].id;
        // Per image, in parallel: the confusion matrix and the prediction run-length encoded for storage.
        let (matrices, encoded): (Vec<Vec<u64>>, Vec<Vec<u8>>) = predicted
            .par_iter()
            .map(|m| {
                let gt = truth.runs(truth.index[m.image_id.as_str()])?;
                let matrix =
                    segmentation::confusion_of_runs(&gt, &m.labels, classes, IGNORED).expect("positions are classes");
                Ok((matrix, masks::rle_encode_runs(m.labels.iter().map(|&(p, n)| (id_of(p), n)))))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();

        let names: Vec<&str> = set.classes.iter().map(|c| c.name.as_str()).collect();
        let confusion = confusion_batch(&predicted, &matrices, &set);
        let scores = scores_batch(&options.run, &predicted, &matrices, &names, &set);
        let predicted_masks = RecordBatch::try_new(
            predicted_masks_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(predicted.iter().map(|m| m.image_id.as_str()))) as ArrayRef,
                Arc::new(Int32Array::from_iter_values(predicted.iter().map(|m| m.width as i32))),
                Arc::new(Int32Array::from_iter_values(predicted.iter().map(|m| m.height as i32))),
                Arc::new(BinaryArray::from_iter_values(encoded)),
            ],
        )?;

        let _lock = self.workspace.lock()?;
        // The source's hash from the masks read (their relative paths and SHA-256s), not a second read of the folder.
        let source_sha256 = slicetest_datasets::version::pairs_hash(
            predicted.iter().map(|m| (m.relative.as_str(), m.mask_sha256.as_str())),
        );
        let files = [
            (run::SEGMENTATION_SCORES_FILE, &scores),
            (run::CONFUSION_FILE, &confusion),
            (run::PREDICTED_MASKS_FILE, &predicted_masks),
        ];
        let manifest = run::publish(&self.workspace, &options.run, &files, |hashes| RunManifest {
            run: options.run.clone(),
            task: Task::Segmentation,
            model: options.model.clone(),
            model_version: options.model_version.clone(),
            dataset: dataset.clone(),
            dataset_version: targets.version,
            predictions: (predicted.len() - read_as_background) as u64,
            images_without_prediction: (missing.len() + read_as_background) as u64,
            classes: names.iter().map(|n| n.to_string()).collect(),
            has_score: false,
            has_loss: false,
            source: source_name.to_string(),
            source_sha256,
            parquet_sha256: hashes[0].clone(),
            created_at: chrono::Utc::now().to_rfc3339(),
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
            provenance: options.provenance.clone(),
            score_threshold: None,
            segmentation: Some(SegmentationFiles {
                mask_source: source.clone(),
                ignore_index: set.ignore_index,
                confusion_sha256: hashes[1].clone(),
                masks_sha256: hashes[2].clone(),
            }),
            warnings: Vec::new(),
            files: Default::default(), // publish fills it in
        })?;
        Ok(manifest)
    }

    /// A segmentation run's per-image confusion matrices.
    pub fn segmentation_evaluation(&self, manifest: &RunManifest) -> Result<SegmentationEvaluation> {
        SegmentationEvaluation::read(self, manifest)
    }
}

impl Engine {
    /// Per-class result masks → one label map per image, in class positions: every mask
    /// names an image of the dataset and a class of the set, has the image's size, and
    /// no two of an image's masks overlap; pixels no mask covers go to the set's
    /// background class, or are an error where it has none.
    fn masks_of_results(
        &self,
        path: &Path,
        dataset: &str,
        results: Vec<PredictedClassMask>,
        set: &MaskSetManifest,
        targets: &super::import::MaskTargets,
        all_background: &[String],
    ) -> Result<(Vec<ImportedMask>, usize)> {
        let bad = |problems: Vec<String>| rejected(path, "predicted masks", problems);
        if results.is_empty() {
            return Err(bad(vec!["the file holds no masks".into()]));
        }
        // COCO ids, when the dataset came from a COCO file.
        let latest = self.latest_manifest(Some(dataset))?;
        let mut by_coco: HashMap<i64, String> = HashMap::new();
        if latest.columns.iter().any(|c| c.name == "coco_id") {
            let images = slicetest_datasets::version::read_image_columns(
                self.workspace.layout(),
                &latest,
                &["image_id", "coco_id"],
            )?;
            let ids = images.column_by_name("image_id").expect("asked for");
            let ids = datafusion::arrow::compute::cast(ids, &DataType::Utf8)?;
            let coco = images.column_by_name("coco_id").expect("asked for");
            let coco = datafusion::arrow::compute::cast(coco, &DataType::Int64)?;
            let (ids, coco) = (ids.as_string::<i32>(), coco.as_primitive::<Int64Type>());
            by_coco.extend((0..ids.len()).filter(|&i| coco.is_valid(i)).map(|i| (coco.value(i), ids.value(i).into())));
        }
        // Each problem with the place in the file of the mask it is about: listed in file
        // order (`result #3` before `result #12`), not as text.
        let mut problems: Vec<(usize, String)> = Vec::new();
        let mut per_image: std::collections::BTreeMap<String, Vec<PredictedClassMask>> = Default::default();
        for r in results {
            let id = match &r.image {
                MaskImage::Coco(n) => by_coco.get(n).cloned().or_else(|| {
                    let id = n.to_string();
                    targets.images.contains_key(&id).then_some(id)
                }),
                MaskImage::Id(id) => targets.images.contains_key(id).then(|| id.clone()),
            };
            let Some(id) = id else {
                let hint = if by_coco.is_empty() { "" } else { " (a number is looked up as coco_id)" };
                problems.push((
                    r.index,
                    format!("{}: image_id {} is not an image of the dataset{hint}", r.position, r.image),
                ));
                continue;
            };
            if !u16::try_from(r.category_id).is_ok_and(|c| set.class(c).is_some()) {
                let message = format!(
                    "{}: category_id {} is not a class of mask set {} ({})",
                    r.position,
                    r.category_id,
                    set.source,
                    set.classes.iter().map(|c| format!("{} {}", c.id, c.name)).collect::<Vec<_>>().join(", ")
                );
                problems.push((r.index, message));
                continue;
            }
            per_image.entry(id).or_default().push(r);
        }
        if !problems.is_empty() {
            return Err(bad(in_file_order(problems)));
        }
        // Images given no mask: painted below with no masks, so wholly background.
        let mut read_as_background = 0;
        for id in all_background.iter().filter(|id| targets.images.contains_key(*id)) {
            if !per_image.contains_key(id) {
                per_image.insert(id.clone(), Vec::new());
                read_as_background += 1;
            }
        }
        const EMPTY: u16 = u16::MAX;
        let painted: Vec<std::result::Result<ImportedMask, (usize, String)>> = per_image
            .into_par_iter()
            .map(|(id, masks)| {
                // An image's problem is placed at its first mask, or at the mask that failed.
                let first = masks.iter().map(|m| m.index).min().unwrap_or_default();
                let (sha, width, height) = &targets.images[&id];
                let mut labels = vec![EMPTY; *width as usize * *height as usize];
                let mut overlaps = 0u64;
                for m in &masks {
                    let segmentation = coco_mask::Segmentation::Rle { counts: m.counts.clone(), size: m.size };
                    let mask = segmentation
                        .to_mask(*height, *width)
                        .map_err(|e| (m.index, format!("{} (image {id}, class {}): {e}", m.position, m.category_id)))?;
                    overlaps += mask.paint_counting_overlaps(&mut labels, m.category_id as u16, EMPTY);
                }
                if overlaps > 0 {
                    return Err((
                        first,
                        format!(
                            "image {id}: {overlaps} pixel(s) are in the masks of two classes (instance masks, which \
                             may overlap, are detections: pass --instances to score them with mask AP)"
                        ),
                    ));
                }
                if let Some(first) = labels.iter().position(|&v| v == EMPTY) {
                    match set.background {
                        Some(background) => labels.iter_mut().filter(|v| **v == EMPTY).for_each(|v| *v = background),
                        None => {
                            let uncovered = labels.iter().filter(|&&v| v == EMPTY).count();
                            let (x, y) = (first % *width as usize, first / *width as usize);
                            return Err((
                                first,
                                format!(
                                    "image {id}: {uncovered} pixel(s) are in no class's mask (first at x={x}, y={y}); \
                                     give every pixel a class"
                                ),
                            ));
                        }
                    }
                }
                let runs = segmentation::runs(&labels);
                let positions = positions_of_runs(&runs, &set.classes, None).expect("classes checked above");
                Ok(ImportedMask {
                    relative: id.clone(),
                    sha256: sha.clone(),
                    width: *width,
                    height: *height,
                    mask_sha256: hex::encode(sha2::Sha256::digest(masks::rle_encode_runs(runs))),
                    labels: positions,
                    image_id: id,
                })
            })
            .collect();
        let mut masks = Vec::with_capacity(painted.len());
        for result in painted {
            match result {
                Ok(mask) => masks.push(mask),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(bad(in_file_order(problems)));
        }
        masks.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        Ok((masks, read_as_background))
    }
}

/// Problems, each with the place in the file it is about, in file order (stable: two
/// problems at one place keep theirs).
fn in_file_order(mut problems: Vec<(usize, String)>) -> Vec<String> {
    problems.sort_by_key(|(at, _)| *at);
    problems.into_iter().map(|(_, p)| p).collect()
}

/// The ground-truth label maps of a mask set, for the images whose content is unchanged.
struct GroundTruth {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    sizes: Vec<(u32, u32)>,
    rle: BinaryArray,
    rows: Vec<usize>,
    set: MaskSetManifest,
}

impl GroundTruth {
    fn read(engine: &Engine, set: &MaskSetManifest, targets: &super::import::MaskTargets) -> Result<GroundTruth> {
        let labels = masks::read_labels(engine.workspace.layout(), set)?;
        let column = |name: &str| labels.column_by_name(name).expect("labels schema");
        let (ids, shas) = (column("image_id").as_string::<i32>(), column("sha256").as_string::<i32>());
        let (widths, heights) =
            (column("width").as_primitive::<Int32Type>(), column("height").as_primitive::<Int32Type>());
        let mut truth = GroundTruth {
            ids: Vec::new(),
            index: HashMap::new(),
            sizes: Vec::new(),
            rle: column("rle").as_binary::<i32>().clone(),
            rows: Vec::new(),
            set: set.clone(),
        };
        for row in 0..labels.num_rows() {
            let id = ids.value(row);
            if targets.images.get(id).is_some_and(|(sha, _, _)| sha == shas.value(row)) {
                truth.index.insert(id.to_string(), truth.ids.len());
                truth.ids.push(id.to_string());
                truth.sizes.push((widths.value(row) as u32, heights.value(row) as u32));
                truth.rows.push(row);
            }
        }
        Ok(truth)
    }

    /// Image `i`'s label map in class positions, as runs.
    fn runs(&self, i: usize) -> Result<Vec<(u16, u32)>> {
        let (w, h) = self.sizes[i];
        let corrupt = |message: String| DatasetError::Corrupt {
            what: "mask set",
            path: self.set.source_dir.clone().into(),
            message: format!("{}: {message}", self.ids[i]),
        };
        let rle = self.rle.value(self.rows[i]);
        Ok(stored_runs(rle, (w * h) as usize, &self.set.classes, Some(self.set.ignore_index)).map_err(corrupt)?)
    }
}

fn predicted_masks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("rle", DataType::Binary, false),
    ]))
}

fn confusion_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("truth", DataType::Utf8, false),
        Field::new("truth_id", DataType::Int32, false),
        Field::new("predicted", DataType::Utf8, false),
        Field::new("predicted_id", DataType::Int32, false),
        Field::new("pixels", DataType::Int64, false),
    ]))
}

/// The `segmentation_scores` table's schema: one row per image and class with pixels.
pub fn scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("class_id", DataType::Int32, false),
        Field::new("tp", DataType::Int64, false),
        Field::new("fp", DataType::Int64, false),
        Field::new("fn", DataType::Int64, false),
    ]))
}

fn confusion_batch(masks: &[ImportedMask], matrices: &[Vec<u64>], set: &MaskSetManifest) -> RecordBatch {
    let k = set.classes.len();
    let cells: Vec<(usize, usize, usize, u64)> = matrices
        .iter()
        .enumerate()
        .flat_map(|(m, matrix)| {
            let cells: Vec<_> = matrix
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(cell, &n)| (m, cell / k, cell % k, n))
                .collect();
            // An image without labelled pixels keeps one empty cell, so it is still listed (and counted) as scored.
            if cells.is_empty() { vec![(m, 0, 0, 0)] } else { cells }
        })
        .collect();
    let class = |p: usize| &set.classes[p];
    RecordBatch::try_new(
        confusion_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(cells.iter().map(|c| masks[c.0].image_id.as_str()))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(cells.iter().map(|c| class(c.1).name.as_str()))),
            Arc::new(Int32Array::from_iter_values(cells.iter().map(|c| class(c.1).id as i32))),
            Arc::new(StringArray::from_iter_values(cells.iter().map(|c| class(c.2).name.as_str()))),
            Arc::new(Int32Array::from_iter_values(cells.iter().map(|c| class(c.2).id as i32))),
            Arc::new(Int64Array::from_iter_values(cells.iter().map(|c| c.3 as i64))),
        ],
    )
    .expect("schema matches")
}

fn scores_batch(
    run: &str,
    masks: &[ImportedMask],
    matrices: &[Vec<u64>],
    names: &[&str],
    set: &MaskSetManifest,
) -> RecordBatch {
    let k = names.len();
    let mut rows: Vec<(usize, usize, u64, u64, u64)> = Vec::new();
    for (m, matrix) in matrices.iter().enumerate() {
        let s = segmentation::scores(matrix, k);
        for (c, class) in s.classes.iter().enumerate() {
            if class.tp + class.fp + class.fn_ > 0 {
                rows.push((m, c, class.tp, class.fp, class.fn_));
            }
        }
    }
    RecordBatch::try_new(
        scores_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| run))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| masks[r.0].image_id.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| names[r.1]))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| set.classes[r.1].id as i32))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2 as i64))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3 as i64))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4 as i64))),
        ],
    )
    .expect("schema matches")
}

/// A segmentation run's per-image confusion matrices, sparse, ready to be summed over any
/// subset of its images.
pub struct SegmentationEvaluation {
    /// The class names, in class-list order.
    pub classes: Vec<String>,
    /// The images with a prediction, sorted.
    pub image_ids: Vec<String>,
    index: HashMap<String, u32>,
    /// Per image: (truth position, predicted position, pixels).
    cells: Vec<Vec<(u16, u16, u64)>>,
}

impl SegmentationEvaluation {
    fn read(engine: &Engine, manifest: &RunManifest) -> Result<SegmentationEvaluation> {
        if manifest.segmentation.is_none() {
            return Err(EngineError::InvalidArgument(format!("run {} is not a segmentation run", manifest.run)));
        }
        let path = run::run_file(engine.workspace.layout(), manifest, run::CONFUSION_FILE);
        let batch = run::read_segmentation_file(&engine.workspace, manifest, run::CONFUSION_FILE)?;
        let column = |name: &str| batch.column_by_name(name).expect("confusion schema");
        let ids = column("image_id").as_string::<i32>();
        let (truth, predicted) = (column("truth").as_string::<i32>(), column("predicted").as_string::<i32>());
        let pixels = column("pixels").as_primitive::<Int64Type>();
        let position: HashMap<&str, u16> =
            manifest.classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u16)).collect();
        let mut evaluation = SegmentationEvaluation {
            classes: manifest.classes.clone(),
            image_ids: Vec::new(),
            index: HashMap::new(),
            cells: Vec::new(),
        };
        // Images with a prediction but no labelled pixel have no cells: list them from the scores file too.
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            let i = *evaluation.index.entry(id.to_string()).or_insert_with(|| {
                evaluation.image_ids.push(id.to_string());
                evaluation.cells.push(Vec::new());
                (evaluation.cells.len() - 1) as u32
            });
            let (Some(&t), Some(&p)) = (position.get(truth.value(row)), position.get(predicted.value(row))) else {
                return Err(DatasetError::Corrupt {
                    what: "run",
                    path: path.clone(),
                    message: format!("row {}: a class that run.json does not list", row + 1),
                }
                .into());
            };
            evaluation.cells[i as usize].push((t, p, pixels.value(row) as u64));
        }
        Ok(evaluation)
    }

    /// Which images are among `image_ids`.
    pub fn membership<'a>(&self, image_ids: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let mut rows: Vec<u32> = image_ids.into_iter().filter_map(|id| self.index.get(id).copied()).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Per image, the share of its labelled pixels given the wrong class (None without labelled pixels).
    pub fn per_image_error(&self) -> impl Iterator<Item = (&str, Option<f64>)> {
        self.image_ids.iter().zip(&self.cells).map(|(id, cells)| {
            let total: u64 = cells.iter().map(|c| c.2).sum();
            let wrong: u64 = cells.iter().filter(|c| c.0 != c.1).map(|c| c.2).sum();
            (id.as_str(), (total > 0).then(|| wrong as f64 / total as f64))
        })
    }

    /// The images of `rows` with the largest share of wrong pixels, worst first (ties:
    /// more wrong pixels, then image id).
    fn worst_images(&self, rows: &[u32]) -> Vec<WorstMask> {
        let mut images: Vec<WorstMask> = rows
            .iter()
            .map(|&r| {
                let cells = &self.cells[r as usize];
                WorstMask {
                    image_id: self.image_ids[r as usize].clone(),
                    pixels: cells.iter().map(|c| c.2).sum(),
                    wrong: cells.iter().filter(|c| c.0 != c.1).map(|c| c.2).sum(),
                }
            })
            .filter(|w| w.wrong > 0)
            .collect();
        let share = |w: &WorstMask| w.wrong as f64 / w.pixels as f64;
        images.sort_by(|a, b| {
            share(b).total_cmp(&share(a)).then(b.wrong.cmp(&a.wrong)).then(a.image_id.cmp(&b.image_id))
        });
        images.truncate(WORST_IMAGES);
        images
    }

    /// Every image.
    pub fn everything(&self) -> Vec<u32> {
        (0..self.cells.len() as u32).collect()
    }

    /// The summed K×K confusion matrix of `rows` (with repeats, for resamples).
    fn confusion(&self, rows: &[u32]) -> Vec<u64> {
        let k = self.classes.len();
        let mut matrix = vec![0u64; k * k];
        for &r in rows {
            for &(t, p, n) in &self.cells[r as usize] {
                matrix[t as usize * k + p as usize] += n;
            }
        }
        matrix
    }

    /// mIoU, pixel accuracy and mean accuracy on each seeded resample of `rows` (NaN where
    /// undefined); the same resamples for every run with the same images.
    fn resampled(&self, rows: &[u32]) -> Vec<[f64; 3]> {
        if rows.is_empty() {
            return Vec::new();
        }
        let k = self.classes.len();
        (0..BOOTSTRAP_RESAMPLES)
            .into_par_iter()
            .map(|b| {
                let mut rng = SplitMix64::for_resample(SEGMENTATION_SEED, b);
                let draw: Vec<u32> = (0..rows.len()).map(|_| rows[rng.below(rows.len())]).collect();
                let s = segmentation::scores(&self.confusion(&draw), k);
                [s.mean_iou, s.pixel_accuracy, s.mean_accuracy].map(|v| v.unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The metrics of the images `rows`, with bootstrap intervals; against `baseline` (a
    /// segmentation run over the same images), a paired bootstrap test of the mIoU drop.
    pub fn score(
        &self,
        rows: &[u32],
        baseline: Option<&SegmentationEvaluation>,
        alpha: f64,
    ) -> (SegmentationMetrics, Option<SegmentationRegression>) {
        let k = self.classes.len();
        let confusion = self.confusion(rows);
        let scores = segmentation::scores(&confusion, k);
        let draws = self.resampled(rows);
        let interval = |i: usize| {
            let [low, high] = percentile_interval(draws.iter().map(|d| d[i]).collect());
            (!low.is_nan()).then_some([low, high])
        };
        let metrics = SegmentationMetrics {
            images: rows.len() as u64,
            mean_iou_ci: interval(0),
            pixel_accuracy_ci: interval(1),
            mean_accuracy_ci: interval(2),
            classes: self
                .classes
                .iter()
                .zip(&scores.classes)
                .enumerate()
                .map(|(c, (name, s))| SegmentationClass {
                    class: name.clone(),
                    pixels: confusion[c * k..(c + 1) * k].iter().sum(),
                    tp: s.tp,
                    fp: s.fp,
                    fn_: s.fn_,
                    iou: s.iou,
                    accuracy: s.accuracy,
                })
                .collect(),
            confusion: (0..k).map(|t| confusion[t * k..(t + 1) * k].to_vec()).collect(),
            worst_images: self.worst_images(rows),
            scores,
        };
        let regression = baseline.and_then(|b| self.regression(b, rows, metrics.scores.mean_iou, &draws, alpha));
        (metrics, regression)
    }

    fn regression(
        &self,
        baseline: &SegmentationEvaluation,
        rows: &[u32],
        new: Option<f64>,
        draws: &[[f64; 3]],
        alpha: f64,
    ) -> Option<SegmentationRegression> {
        if self.image_ids != baseline.image_ids || self.classes != baseline.classes {
            return None;
        }
        let base = segmentation::scores(&baseline.confusion(rows), self.classes.len()).mean_iou;
        let (Some(new), Some(base)) = (new, base) else { return None };
        let deltas: Vec<f64> =
            draws.iter().zip(baseline.resampled(rows)).map(|(n, b)| n[0] - b[0]).filter(|d| !d.is_nan()).collect();
        if deltas.is_empty() {
            return None;
        }
        let p_value = deltas.iter().filter(|&&d| d >= 0.0).count() as f64 / deltas.len() as f64;
        let delta = new - base;
        Some(SegmentationRegression {
            baseline_miou: base,
            delta,
            p_value,
            significant: delta < 0.0 && p_value < alpha,
        })
    }
}

/// One class on a slice.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentationClass {
    /// The class name.
    pub class: String,
    /// Labelled pixels of the class.
    pub pixels: u64,
    /// Pixels of the class predicted as the class.
    pub tp: u64,
    /// Pixels of other classes predicted as the class.
    pub fp: u64,
    /// Pixels of the class predicted as another class.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// IoU; None when the class is neither true nor predicted on the slice.
    pub iou: Option<f64>,
    /// Accuracy (recall); None when the slice has no pixel of the class.
    pub accuracy: Option<f64>,
}

/// A segmentation run's metrics on a set of images.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentationMetrics {
    /// Images scored.
    pub images: u64,
    /// mIoU, pixel accuracy, mean accuracy and per-class numbers (`mean_iou`'s definitions).
    pub scores: SegmentationScores,
    /// 95% bootstrap interval of mIoU (images resampled).
    pub mean_iou_ci: Option<[f64; 2]>,
    /// 95% bootstrap interval of pixel accuracy.
    pub pixel_accuracy_ci: Option<[f64; 2]>,
    /// 95% bootstrap interval of mean accuracy.
    pub mean_accuracy_ci: Option<[f64; 2]>,
    /// Per class, with names.
    pub classes: Vec<SegmentationClass>,
    /// The summed pixel confusion matrix (row = truth, column = prediction, class order).
    pub confusion: Vec<Vec<u64>>,
    /// The images with the largest share of wrong pixels (up to [`WORST_IMAGES`]), worst first.
    pub worst_images: Vec<WorstMask>,
}

/// Images shown in a slice's failure gallery.
pub const WORST_IMAGES: usize = 4;

/// One image of a failure gallery.
#[derive(Debug, Clone, Serialize)]
pub struct WorstMask {
    /// The image.
    pub image_id: String,
    /// Its labelled pixels.
    pub pixels: u64,
    /// Labelled pixels given the wrong class.
    pub wrong: u64,
}

/// A gallery image's masks as PNG data URIs: the ground truth and the prediction in class
/// colours, and where they disagree.
#[derive(Debug, Clone)]
pub struct MaskOverlay {
    /// The ground truth (ignored pixels black).
    pub truth: String,
    /// The prediction.
    pub predicted: String,
    /// Red where the prediction is wrong, green where right, black where ignored.
    pub disagreement: String,
}

fn png_data_uri(width: u32, height: u32, rgb: Vec<u8>) -> Result<String> {
    let image = image::RgbImage::from_raw(width, height, rgb).expect("width × height pixels");
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
    Ok(format!("data:image/png;base64,{}", crate::report_html::base64(bytes.get_ref())))
}

impl Engine {
    /// The gallery pictures of `image_ids` for a segmentation run: its predicted masks and
    /// the mask set's ground truth, coloured. Images missing from either are left out.
    pub fn segmentation_overlays<'a>(
        &self,
        manifest: &RunManifest,
        image_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, MaskOverlay>> {
        let Some(files) = &manifest.segmentation else { return Ok(HashMap::new()) };
        let wanted: std::collections::HashSet<&str> = image_ids.into_iter().collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let layout = self.workspace.layout();
        let set = masks::read_mask_set(layout, &manifest.dataset, &files.mask_source)?;
        let truth = masks::read_labels(layout, &set)?;
        let predicted = run::read_segmentation_file(&self.workspace, manifest, run::PREDICTED_MASKS_FILE)?;
        // image_id → (width, height, rle) of each side.
        let rows = |batch: &RecordBatch| -> HashMap<String, (u32, u32, Vec<u8>)> {
            let ids = batch.column_by_name("image_id").expect("schema").as_string::<i32>();
            let w = batch.column_by_name("width").expect("schema").as_primitive::<Int32Type>();
            let h = batch.column_by_name("height").expect("schema").as_primitive::<Int32Type>();
            let rle = batch.column_by_name("rle").expect("schema").as_binary::<i32>();
            (0..batch.num_rows())
                .filter(|&r| wanted.contains(ids.value(r)))
                .map(|r| (ids.value(r).to_string(), (w.value(r) as u32, h.value(r) as u32, rle.value(r).to_vec())))
                .collect()
        };
        let (truth, predicted) = (rows(&truth), rows(&predicted));
        let mut overlays = HashMap::new();
        for (id, (w, h, gt_rle)) in &truth {
            let Some((pw, ph, pred_rle)) = predicted.get(id) else { continue };
            if (pw, ph) != (w, h) {
                continue;
            }
            let pixels = (*w * *h) as usize;
            let corrupt = |message: String| DatasetError::Corrupt { what: "mask", path: id.into(), message };
            let gt = stored_runs(gt_rle, pixels, &set.classes, Some(set.ignore_index)).map_err(corrupt)?;
            let pred = stored_runs(pred_rle, pixels, &set.classes, None).map_err(corrupt)?;
            let (gt, pred) = (segmentation::expand_runs(&gt), segmentation::expand_runs(&pred));
            let colour = |p: u16| if p == IGNORED { [0, 0, 0] } else { class_colour(p) };
            let diff = |(t, p): (&u16, &u16)| match (*t == IGNORED, t == p) {
                (true, _) => [0, 0, 0],
                (false, true) => RIGHT_COLOUR,
                (false, false) => WRONG_COLOUR,
            };
            overlays.insert(
                id.clone(),
                MaskOverlay {
                    truth: png_data_uri(*w, *h, gt.iter().flat_map(|&p| colour(p)).collect())?,
                    predicted: png_data_uri(*w, *h, pred.iter().flat_map(|&p| colour(p)).collect())?,
                    disagreement: png_data_uri(*w, *h, gt.iter().zip(&pred).flat_map(diff).collect())?,
                },
            );
        }
        Ok(overlays)
    }
}

/// A segmentation run's mIoU against a baseline's on the same images.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentationRegression {
    /// The baseline's mIoU on the slice.
    pub baseline_miou: f64,
    /// This run's mIoU minus the baseline's.
    pub delta: f64,
    /// Share of paired resamples in which this run's mIoU is not below the baseline's.
    pub p_value: f64,
    /// Whether the drop is significant at the chosen level.
    pub significant: bool,
}
