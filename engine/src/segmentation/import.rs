//! `slicetest tag import --masks DIR --classes FILE`: a folder of PNG label maps becomes a
//! mask set (the label maps, run-length encoded, and per-class statistics) and tag columns
//! on `images`: `<class>_pct`, the share of the image's labelled pixels of that class, and
//! `num_<class>_regions`, its 8-connected regions.
//!
//! Every mask is decoded and checked before anything is written: it must belong to an
//! image of the dataset, have the image's size, and hold only listed class ids or the
//! ignore index. One bad mask rejects the import, naming every problem found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use slicetest_datasets::DatasetError;
use slicetest_datasets::coco_mask::{self, Instances};
use slicetest_datasets::masks::{self, MaskClass, MaskSetManifest};
use slicetest_datasets::tags::{self, TagFile, TaggerProvenance};
use slicetest_eval::segmentation;

use crate::Engine;
use crate::error::Result;

/// What `slicetest tag import --masks` should do.
#[derive(Debug, Clone, Default)]
pub struct MaskImportOptions {
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// The mask set's name, also the tagger name of its columns (default: the folder's name).
    pub name: Option<String>,
    /// The value of unlabelled pixels (default 255).
    pub ignore_index: Option<u16>,
    /// Pass over images of a COCO file that are not in the dataset (an ingest of that file
    /// rejected them) instead of refusing the import.
    pub skip_unmatched: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// What an import stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskImportReport {
    /// The dataset.
    pub dataset: String,
    /// The mask set (and tagger) name.
    pub source: String,
    /// The tag columns added to `images`.
    pub columns: Vec<String>,
    /// Images with a mask.
    pub masks: usize,
    /// Images of the dataset without one (their columns are NULL).
    pub images_without_mask: usize,
    /// Labelled pixels over all masks.
    pub labelled_pixels: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The version recorded in the tag columns' provenance.
const MASKS_VERSION: &str = "masks-1";
/// At most this many problems are listed in a rejection.
const MAX_PROBLEMS: usize = 20;

/// One decoded, checked mask.
pub(crate) struct ImportedMask {
    pub image_id: String,
    /// The mask file's path relative to the folder.
    pub relative: String,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub mask_sha256: String,
    /// Runs in class-list positions, [`IGNORED`] for the ignore index.
    pub labels: masks::Runs,
}

/// The images of a dataset's latest version that masks are matched to.
pub(crate) struct MaskTargets {
    pub version: u64,
    /// image_id → (sha256, width, height), sorted by id.
    pub images: std::collections::BTreeMap<String, (String, u32, u32)>,
}

impl Engine {
    pub(crate) fn mask_targets(&self, dataset: &str) -> Result<MaskTargets> {
        let latest = self.latest_manifest(Some(dataset))?;
        let batch = slicetest_datasets::version::read_image_columns(
            self.workspace.layout(),
            &latest,
            &["image_id", "sha256", "width", "height"],
        )?;
        let text = |name: &str| cast(batch.column_by_name(name).expect("core column"), &DataType::Utf8);
        let number = |name: &str| cast(batch.column_by_name(name).expect("core column"), &DataType::Int32);
        let (ids, shas, widths, heights) = (text("image_id")?, text("sha256")?, number("width")?, number("height")?);
        let (ids, shas) = (ids.as_string::<i32>(), shas.as_string::<i32>());
        let (widths, heights) = (widths.as_primitive::<Int32Type>(), heights.as_primitive::<Int32Type>());
        let images = (0..ids.len())
            .map(|i| {
                let size = (widths.value(i).max(0) as u32, heights.value(i).max(0) as u32);
                (ids.value(i).to_string(), (shas.value(i).to_string(), size.0, size.1))
            })
            .collect();
        Ok(MaskTargets { version: latest.version, images })
    }

    /// Imports a folder of PNG label maps (with their class list), or the segmentations of
    /// a COCO instances file (whose categories are the classes), as mask set `name` of the
    /// dataset, with its `<class>_pct` and `num_<class>_regions` tag columns; replaces an
    /// earlier set of the same name. Nothing is written unless every mask is valid.
    pub fn import_masks(
        &self,
        path: &Path,
        classes: Option<&Path>,
        options: &MaskImportOptions,
    ) -> Result<MaskImportReport> {
        self.import_mask_set(path, classes, None, options)
    }

    /// [`Engine::import_masks`]; `instances`: the COCO file at `path`, already read.
    pub(crate) fn import_mask_set(
        &self,
        path: &Path,
        classes: Option<&Path>,
        instances: Option<Instances>,
        options: &MaskImportOptions,
    ) -> Result<MaskImportReport> {
        let started = Instant::now();
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        let coco = path.is_file();
        let source = options.name.clone().unwrap_or_else(|| default_set_name(path));
        slicetest_datasets::validate_name(&source)?;
        if self.tagger_registry().is_reserved(&source) {
            return Err(bad(path, format!("{source:?} is a built-in tagger's name; pick another with --name")).into());
        }
        let ignore = options.ignore_index.unwrap_or(masks::DEFAULT_IGNORE_INDEX);
        let (class_list, classes_path, instances, files) = if coco {
            if classes.is_some() {
                return Err(bad(path, "a COCO file's categories are its classes; leave out --classes".into()).into());
            }
            let instances = match instances {
                Some(read) => read,
                None => coco_mask::read_instances(path)?,
            };
            if !instances.has_masks() {
                return Err(bad(path, "no annotation in this COCO file has a \"segmentation\"".into()).into());
            }
            let class_list = masks::classes_of_categories(&instances.categories).map_err(|e| bad(path, e))?;
            (class_list, path, Some(instances), Vec::new())
        } else {
            let Some(classes) = classes else {
                return Err(bad(path, "a folder of label maps needs its class list: --classes FILE".into()).into());
            };
            let files = masks::mask_files(path)?;
            if files.is_empty() {
                return Err(bad(path, "no .png mask files in the folder".into()).into());
            }
            (masks::read_classes(classes)?, classes, None, files)
        };
        if let Some(c) = class_list.iter().find(|c| c.id == ignore) {
            return Err(bad(
                classes_path,
                format!("class {:?} has id {ignore}, the ignore index; pass another with --ignore-index", c.name),
            )
            .into());
        }

        let _lock = self.workspace.lock()?;
        let targets = self.mask_targets(&dataset)?;
        let decoded = match &instances {
            Some(instances) => read_coco_masks(
                path,
                instances,
                &targets,
                &class_list,
                ignore,
                options.progress,
                options.skip_unmatched,
            )?,
            None => read_masks(path, &files, &targets, &class_list, Some(ignore), options.progress)?,
        };
        let layout = self.workspace.layout();
        let stats: Vec<(Vec<u64>, Vec<u32>)> = decoded
            .par_iter()
            .map(|m| {
                let (w, h, k) = (m.width as usize, m.height as usize, class_list.len());
                let counts = segmentation::histogram_of_runs(&m.labels, k, IGNORED).expect("positions are classes");
                (counts, segmentation::regions_of_runs(&m.labels, w, h, k, IGNORED))
            })
            .collect();

        let mut tag_file = tag_columns(&decoded, &stats, &class_list)?;
        let columns: Vec<String> = tag_file.tag_fields().iter().map(|f| f.name().clone()).collect();
        let current_columns: Vec<String> =
            self.latest_manifest(Some(&dataset))?.columns.iter().map(|c| c.name.clone()).collect();
        let taken = tags::taken_columns(layout, &dataset, &current_columns, &source)?;
        tags::check_columns(&source, columns.iter().map(String::as_str), &taken)
            .map_err(|e| bad(classes_path, e.to_string().replacen(&format!("{source}: "), "", 1)))?;

        let masks_hash = slicetest_datasets::version::pairs_hash(
            decoded.iter().map(|m| (m.image_id.as_str(), m.mask_sha256.as_str())),
        );
        let labelled_pixels: u64 = stats.iter().map(|(c, _)| c.iter().sum::<u64>()).sum();
        let manifest = MaskSetManifest {
            source: source.clone(),
            dataset: dataset.clone(),
            dataset_version: targets.version,
            classes: class_list.clone(),
            ignore_index: ignore,
            background: instances.is_some().then_some(masks::BACKGROUND_ID),
            images: decoded.len() as u64,
            labelled_pixels,
            source_dir: path.display().to_string(),
            masks_hash: masks_hash.clone(),
            labels_file: String::new(),
            labels_sha256: String::new(),
            classes_file: String::new(),
            classes_sha256: String::new(),
            created_at: chrono::Utc::now().to_rfc3339(),
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let parameters = serde_json::json!({
            "kind": if coco { "coco masks" } else { "masks" },
            "source": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "classes": class_list.iter().map(|c| (c.id, c.name.clone())).collect::<Vec<_>>(),
            "ignore_index": ignore,
            "masks_hash": masks_hash,
        });
        tag_file.provenance = TaggerProvenance::new(&source, MASKS_VERSION, parameters, None);
        masks::write_mask_set(
            layout,
            manifest,
            &labels_batch(&decoded, &class_list, ignore),
            &classes_batch(&decoded, &stats, &class_list, &source),
        )?;
        tags::write_tags(layout, &dataset, &tag_file)?;
        Ok(MaskImportReport {
            images_without_mask: targets.images.len() - decoded.len(),
            dataset,
            source,
            columns,
            masks: decoded.len(),
            labelled_pixels,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// A mask set's name when none is given: a COCO file's stem, or a folder's name.
fn default_set_name(path: &Path) -> String {
    let path = path.canonicalize().ok();
    let name = match path.as_deref() {
        Some(p) if p.is_file() => p.file_stem(),
        Some(p) => p.file_name(),
        None => None,
    };
    slicetest_datasets::sanitize_name(name.map(|n| n.to_string_lossy()).as_deref().unwrap_or(""), "masks")
}

fn bad(path: &Path, message: String) -> DatasetError {
    DatasetError::BadInput { source_path: path.to_path_buf(), message }
}

/// Class id → position in the class list (the list may skip ids); the ignore index →
/// [`IGNORED`]; ids without a class → `UNLISTED`.
fn position_table(classes: &[MaskClass], ignore: Option<u16>) -> Vec<u16> {
    let max = classes.iter().map(|c| c.id as usize).max().unwrap_or(0);
    let mut table = vec![UNLISTED; max.max(ignore.unwrap_or(0) as usize) + 1];
    for (i, c) in classes.iter().enumerate() {
        table[c.id as usize] = i as u16;
    }
    if let Some(ignore) = ignore {
        table[ignore as usize] = IGNORED;
    }
    table
}

const UNLISTED: u16 = u16::MAX - 1;

/// A stored label map (class ids, run-length encoded, `pixels` values) as runs in class
/// positions; the ignore index only for ground truth (None: a prediction).
pub(crate) fn stored_runs(
    rle: &[u8],
    pixels: usize,
    classes: &[MaskClass],
    ignore: Option<u16>,
) -> std::result::Result<Vec<(u16, u32)>, String> {
    let runs = masks::rle_runs(rle, pixels)?;
    positions_of_runs(&runs, classes, ignore).map_err(|u| format!("unlisted class id {}", u.value))
}

/// A label map given as runs (value, length) in class-list positions, mapped run by run:
/// the ignore index becomes [`IGNORED`]; an id without a class is an error (reported
/// with the id itself). Without an ignore index (predictions), every pixel must hold a
/// class id.
pub(crate) fn positions_of_runs(
    runs: &[(u16, u32)],
    classes: &[MaskClass],
    ignore: Option<u16>,
) -> std::result::Result<Vec<(u16, u32)>, segmentation::UnknownClass> {
    let table = position_table(classes, ignore);
    let mut unknown: Option<segmentation::UnknownClass> = None;
    let mut pixel = 0usize;
    let mapped = runs
        .iter()
        .map(|&(v, n)| {
            let p = table.get(v as usize).copied().unwrap_or(UNLISTED);
            let at = pixel;
            pixel += n as usize;
            if p == UNLISTED {
                match &mut unknown {
                    Some(u) => u.count += n as usize,
                    None => unknown = Some(segmentation::UnknownClass { value: v, pixel: at, count: n as usize }),
                }
                (IGNORED, n)
            } else {
                (p, n)
            }
        })
        .collect();
    unknown.map_or(Ok(mapped), Err)
}

/// The value of ignored pixels in a label map of class-list positions.
pub(crate) const IGNORED: u16 = u16::MAX;

/// Reads, decodes (as runs in class positions) and checks every mask in parallel; all
/// problems or all masks. `ignore` is the ground truth's ignore index; None reads
/// predictions, where every pixel must hold a class.
pub(crate) fn read_masks(
    dir: &Path,
    files: &[(String, PathBuf)],
    targets: &MaskTargets,
    classes: &[MaskClass],
    ignore: Option<u16>,
    progress: bool,
) -> Result<Vec<ImportedMask>> {
    let relative: Vec<String> = files.iter().map(|(r, _)| r.clone()).collect();
    let what = if ignore.is_some() { "masks" } else { "predicted masks" };
    let rejected = |problems: Vec<String>| rejected(dir, what, problems);
    let matched = masks::match_masks(&relative, targets.images.keys().map(String::as_str)).map_err(rejected)?;
    let mut seen = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (i, id) in &matched {
        if let Some(first) = seen.insert(id.as_str(), *i) {
            problems.push(format!("{} and {}: two masks for image {id}", relative[first], relative[*i]));
        }
    }
    if !problems.is_empty() {
        return Err(rejected(problems));
    }
    let bar = slicetest_datasets::progress::bar(matched.len() as u64, "reading masks", progress);
    let results: Vec<std::result::Result<ImportedMask, String>> = matched
        .par_iter()
        .map(|(i, id)| {
            let (rel, path) = &files[*i];
            let at = |m: String| format!("{rel}: {m}");
            let bytes = std::fs::read(path).map_err(|e| at(format!("unreadable: {e}")))?;
            let (sha, w, h) = &targets.images[id];
            let (width, height, runs) = masks::decode_png_label_runs(&bytes).map_err(at)?;
            let labels = positions_of_runs(&runs, classes, ignore).map_err(|u| {
                let (x, y) = (u.pixel % width.max(1) as usize, u.pixel / width.max(1) as usize);
                let ignored = match ignore {
                    Some(i) => format!("; ignore index {i}"),
                    None => "; predictions give every pixel a class".into(),
                };
                at(format!(
                    "class id {} is not in the class list (first at x={x}, y={y}; {} pixel(s) with unlisted ids{ignored})",
                    u.value, u.count
                ))
            })?;
            if (width, height) != (*w, *h) {
                return Err(at(format!("the mask is {width}×{height} but image {id} is {w}×{h}")));
            }
            bar.inc(1);
            Ok(ImportedMask {
                image_id: id.clone(),
                relative: rel.clone(),
                sha256: sha.clone(),
                width,
                height,
                mask_sha256: hex::encode(Sha256::digest(&bytes)),
                labels,
            })
        })
        .collect();
    bar.finish_and_clear();
    all_or_problems(results, Vec::new()).map_err(rejected)
}

/// Every mask, sorted by image id, or — when any failed or `problems` already holds some —
/// every problem, sorted.
pub(crate) fn all_or_problems(
    results: Vec<std::result::Result<ImportedMask, String>>,
    mut problems: Vec<String>,
) -> std::result::Result<Vec<ImportedMask>, Vec<String>> {
    let mut ok = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(m) => ok.push(m),
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(problems);
    }
    ok.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    Ok(ok)
}

/// Checks a COCO file's segmentations before an ingest of the file writes anything: every
/// one decodes on its image (of the file's `width` and `height`) and the categories make a
/// class list. Returns the file as read, for the mask import after the ingest, with the
/// ignore index its mask set will use (255, or 65535 when a category has id 255); None
/// when no annotation has a segmentation.
pub(crate) fn check_coco_segmentations(
    engine: &Engine,
    path: &Path,
    dataset: &str,
) -> Result<Option<(Instances, u16)>> {
    let instances = match coco_mask::read_instances(path) {
        Ok(instances) => instances,
        // Not an instances file: the ingest's own reader says what is wrong with it.
        Err(_) => return Ok(None),
    };
    if !instances.has_masks() {
        return Ok(None);
    }
    let classes = masks::classes_of_categories(&instances.categories).map_err(|e| bad(path, e))?;
    let problems: Vec<String> = instances
        .images
        .par_iter()
        .filter(|im| !im.annotations.is_empty())
        .flat_map_iter(|im| {
            let at = move |m: String| format!("image id {} ({}): {m}", im.id, im.file_name);
            im.annotations
                .iter()
                .filter_map(|(n, _, s)| {
                    // Without the file's width and height, a polygon is checked on any raster
                    // and an RLE against its own size; the import after the ingest uses the
                    // image's real size.
                    let (w, h) = match (im.size, s) {
                        (Some(size), _) => size,
                        (None, coco_mask::Segmentation::Rle { size: [h, w], .. }) => (*w, *h),
                        (None, coco_mask::Segmentation::Polygons(_)) => (1, 1),
                    };
                    s.to_mask(h, w).err().map(|e| at(format!("annotation #{n}: {e}")))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if !problems.is_empty() {
        return Err(rejected(path, "masks", problems));
    }
    // Into a dataset that has tag columns of the same names (another COCO file's mask set:
    // train, then val), the mask import would fail after the images are in: refuse first.
    if engine.workspace.dataset(dataset).is_ok() {
        let source = default_set_name(path);
        let current: Vec<String> =
            engine.latest_manifest(Some(dataset))?.columns.iter().map(|c| c.name.clone()).collect();
        let taken = tags::taken_columns(engine.workspace.layout(), dataset, &current, &source)?;
        let columns: Vec<String> =
            classes.iter().flat_map(|c| [format!("{}_pct", c.column), format!("num_{}_regions", c.column)]).collect();
        tags::check_columns(&source, columns.iter().map(String::as_str), &taken).map_err(|e| {
            bad(
                path,
                format!(
                    "its segmentations would become mask set {source}, but {}; nothing was ingested. Put the \
                     annotations in one COCO file, or ingest this one into another dataset",
                    e.to_string().replacen(&format!("{source}: "), "", 1)
                ),
            )
        })?;
    }
    let taken = classes.iter().any(|c| c.id == masks::DEFAULT_IGNORE_INDEX);
    Ok(Some((instances, if taken { u16::MAX } else { masks::DEFAULT_IGNORE_INDEX })))
}

/// Checks that the segmentations of a COCO file fit the images an ingest of it accepted
/// (matched by `file_name` as the mask import matches them): the COCO file's size and
/// every RLE's must be the image file's. The problems, as [`rejected`] words them.
pub(crate) fn check_coco_sizes(
    instances: &Instances,
    images: &[slicetest_datasets::AcceptedImage],
) -> std::result::Result<(), String> {
    let sizes: std::collections::HashMap<&str, (u32, u32)> =
        images.iter().map(|im| (im.image_id, (im.width, im.height))).collect();
    let names: Vec<String> = instances.images.iter().map(|im| im.file_name.clone()).collect();
    let matched = masks::match_mask_paths(&names, sizes.keys().copied());
    let problems: Vec<String> = (instances.images.iter().zip(matched))
        .filter(|(image, _)| !image.annotations.is_empty())
        .filter_map(|(image, found)| {
            let (width, height) = sizes[found.ok()?.as_str()];
            let problem = image.check_size(width, height).err()?;
            Some(format!("image id {} ({}): {problem}", image.id, image.file_name))
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(rejected_message("masks", problems)) }
}

/// The semantic label maps of a COCO file's images that are in the dataset (see
/// [`coco_mask::InstancesImage::label_map`]), checked like mask files: matched by
/// `file_name`, of the image's size, every segmentation decodable. All problems or all masks.
fn read_coco_masks(
    path: &Path,
    instances: &Instances,
    targets: &MaskTargets,
    classes: &[MaskClass],
    ignore: u16,
    progress: bool,
    skip_unmatched: bool,
) -> Result<Vec<ImportedMask>> {
    let names: Vec<String> = instances.images.iter().map(|im| im.file_name.clone()).collect();
    let matched = masks::match_mask_paths(&names, targets.images.keys().map(String::as_str));
    let mut problems = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut wanted = Vec::new();
    for (i, found) in matched.into_iter().enumerate() {
        match found {
            Ok(id) => {
                if let Some(first) = seen.insert(id.clone(), i) {
                    problems.push(format!("{} and {}: two COCO images for image {id}", names[first], names[i]));
                }
                wanted.push((i, id));
            }
            Err(_) if skip_unmatched => {}
            Err(problem) => problems.push(format!("image id {}: {problem}", instances.images[i].id)),
        }
    }
    let bar = slicetest_datasets::progress::bar(wanted.len() as u64, "painting COCO masks", progress);
    let results: Vec<std::result::Result<ImportedMask, String>> = wanted
        .par_iter()
        .map(|(i, id)| {
            let image = &instances.images[*i];
            let (sha, width, height) = &targets.images[id];
            let at = |m: String| format!("image id {} ({}): {m}", image.id, image.file_name);
            let labels = image.label_map(*height, *width, masks::BACKGROUND_ID).map_err(at)?;
            let ids = segmentation::runs(&labels);
            let positions = positions_of_runs(&ids, classes, Some(ignore))
                .map_err(|u| at(format!("category id {} has no class", u.value)))?;
            bar.inc(1);
            Ok(ImportedMask {
                image_id: id.clone(),
                relative: image.file_name.clone(),
                sha256: sha.clone(),
                width: *width,
                height: *height,
                mask_sha256: hex::encode(Sha256::digest(masks::rle_encode_runs(ids))),
                labels: positions,
            })
        })
        .collect();
    bar.finish_and_clear();
    all_or_problems(results, problems).map_err(|p| rejected(path, "masks", p))
}

/// The error refusing a set of masks (`what`: "masks", "predicted masks"): the first
/// [`MAX_PROBLEMS`] problems, and how many more.
pub(crate) fn rejected(path: &Path, what: &str, problems: Vec<String>) -> crate::error::EngineError {
    bad(path, rejected_message(what, problems)).into()
}

/// "`what` rejected, nothing was written:" and the first [`MAX_PROBLEMS`] problems.
fn rejected_message(what: &str, problems: Vec<String>) -> String {
    let more = problems.len().saturating_sub(MAX_PROBLEMS);
    let mut listed: Vec<String> = problems.into_iter().take(MAX_PROBLEMS).collect();
    if more > 0 {
        listed.push(format!("… and {more} more"));
    }
    format!("{what} rejected, nothing was written:\n  - {}", listed.join("\n  - "))
}

/// The stored label maps hold the class ids as given (and the ignore index), so the file
/// reads without the class list.
fn labels_batch(masks: &[ImportedMask], classes: &[MaskClass], ignore: u16) -> RecordBatch {
    let id_of = |p: u16| if p == IGNORED { ignore } else { classes[p as usize].id };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(masks.iter().map(|m| m.image_id.as_str()))),
        Arc::new(StringArray::from_iter_values(masks.iter().map(|m| m.sha256.as_str()))),
        Arc::new(Int32Array::from_iter_values(masks.iter().map(|m| m.width as i32))),
        Arc::new(Int32Array::from_iter_values(masks.iter().map(|m| m.height as i32))),
        Arc::new(StringArray::from_iter_values(masks.iter().map(|m| m.mask_sha256.as_str()))),
        Arc::new(BinaryArray::from_iter_values(
            masks.iter().map(|m| masks::rle_encode_runs(m.labels.iter().map(|&(p, n)| (id_of(p), n)))),
        )),
    ];
    RecordBatch::try_new(masks::labels_schema(), columns).expect("schema matches")
}

fn classes_batch(
    masks: &[ImportedMask],
    stats: &[(Vec<u64>, Vec<u32>)],
    classes: &[MaskClass],
    source: &str,
) -> RecordBatch {
    let mut rows: Vec<(usize, usize)> = Vec::new();
    for (m, (counts, _)) in stats.iter().enumerate() {
        rows.extend(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(k, _)| (m, k)));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(m, _)| masks[m].image_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(m, _)| masks[m].sha256.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| source))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(_, k)| classes[k].name.as_str()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|&(_, k)| classes[k].id as i32))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|&(m, k)| stats[m].0[k] as i64))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|&(m, k)| stats[m].1[k] as i32))),
    ];
    RecordBatch::try_new(masks::classes_schema(), columns).expect("schema matches")
}

/// `<class>_pct` (NULL for a mask without labelled pixels) and `num_<class>_regions` per masked image.
fn tag_columns(masks: &[ImportedMask], stats: &[(Vec<u64>, Vec<u32>)], classes: &[MaskClass]) -> Result<TagFile> {
    let mut fields = tags::key_fields();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(masks.iter().map(|m| m.image_id.as_str()))),
        Arc::new(StringArray::from_iter_values(masks.iter().map(|m| m.sha256.as_str()))),
    ];
    let mut names = BTreeSet::new();
    for (k, class) in classes.iter().enumerate() {
        let pct = format!("{}_pct", class.column);
        slicetest_datasets::validate_column(&pct).map_err(|e| bad(Path::new(&class.name), e))?;
        names.insert(pct.clone());
        columns.push(Arc::new(Float64Array::from_iter(stats.iter().map(|(counts, _)| {
            let total: u64 = counts.iter().sum();
            (total > 0).then(|| counts[k] as f64 / total as f64)
        }))));
        fields.push(Field::new(pct, DataType::Float64, true));
    }
    for (k, class) in classes.iter().enumerate() {
        let regions = format!("num_{}_regions", class.column);
        slicetest_datasets::validate_column(&regions).map_err(|e| bad(Path::new(&class.name), e))?;
        columns.push(Arc::new(Int32Array::from_iter_values(stats.iter().map(|(_, r)| r[k] as i32))));
        fields.push(Field::new(regions, DataType::Int32, true));
    }
    let tags = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(TagFile {
        provenance: TaggerProvenance::new("", MASKS_VERSION, serde_json::Value::Null, None),
        tags,
        detections: None,
    })
}
