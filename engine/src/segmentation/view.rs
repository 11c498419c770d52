//! Masks on the image page: which mask sets and segmentation runs cover one image (its
//! classes' shares, the run's pixel accuracy and per-class IoU on it, from the stored
//! confusion matrix), and each layer (a set's ground truth, a run's prediction, where a
//! run disagrees with its ground truth) as an RGBA PNG in the HTML report's class colours.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::error::DataFusionError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use slicetest_datasets::DatasetError;
use slicetest_datasets::masks::{self, MaskSetManifest};
use slicetest_datasets::run::{self, RunManifest, Task};
use slicetest_eval::segmentation;

use super::import::{IGNORED, stored_runs};
use crate::Engine;
use crate::error::{EngineError, ErrorKind, Result};

/// A colour per class position (a fixed, distinguishable cycle): the HTML report's
/// galleries and the image page's overlays use this one palette.
pub fn class_colour(position: u16) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 12] = [
        [128, 64, 128],
        [70, 130, 180],
        [220, 20, 60],
        [250, 170, 30],
        [107, 142, 35],
        [0, 0, 142],
        [244, 35, 232],
        [152, 251, 152],
        [102, 102, 156],
        [190, 153, 153],
        [0, 80, 100],
        [255, 255, 0],
    ];
    PALETTE[position as usize % PALETTE.len()]
}

/// Pixels a prediction gets right, in the errors view (the report's green).
pub const RIGHT_COLOUR: [u8; 3] = [46, 160, 67];
/// Pixels a prediction gets wrong, in the errors view (the report's red).
pub const WRONG_COLOUR: [u8; 3] = [220, 38, 38];

/// Bumped when the colours change, so clients' cached PNGs are not reused.
const PALETTE_VERSION: &str = "palette-1";

/// `#rrggbb`.
fn hex(rgb: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

/// One class of a ground-truth mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskClassShare {
    /// The class name.
    pub class: String,
    /// Its pixel value in the mask files.
    pub class_id: u16,
    /// Its colour in the overlays (`#rrggbb`).
    pub colour: String,
    /// Its pixels in this image.
    pub pixels: u64,
    /// Its pixels over the image's labelled (non-ignored) pixels.
    pub share: f64,
}

/// One mask set's ground truth for an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageMaskSet {
    /// The mask set (`?source=` of `GET /images/{id}/mask`).
    pub source: String,
    /// The mask's width in pixels (the image's).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Pixels with a class.
    pub labelled_pixels: u64,
    /// Pixels holding the ignore index (transparent in the overlay).
    pub ignored_pixels: u64,
    /// The classes present, most pixels first.
    pub classes: Vec<MaskClassShare>,
}

/// One class of a segmentation run on an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunClassScore {
    /// The class name.
    pub class: String,
    /// Its pixel value in the mask files.
    pub class_id: u16,
    /// Its colour in the overlays (`#rrggbb`).
    pub colour: String,
    /// Labelled pixels of the class (the truth).
    pub pixels: u64,
    /// Labelled pixels predicted as the class.
    pub predicted: u64,
    /// Those over the image's labelled pixels.
    pub share: f64,
    /// IoU on this image: tp / (tp + fp + fn).
    pub iou: Option<f64>,
}

/// Right or wrong pixels of a run on an image, as the errors view colours them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelOutcome {
    /// Labelled pixels.
    pub pixels: u64,
    /// Over the image's labelled pixels.
    pub share: f64,
    /// Their colour in the errors view (`#rrggbb`).
    pub colour: String,
}

/// One segmentation run's prediction for an image, scored against its mask set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageSegmentationRun {
    /// The run (`?run=` of `GET /images/{id}/mask`).
    pub run: String,
    /// The run's model.
    pub model: String,
    /// The model's version.
    pub model_version: String,
    /// The mask set it is scored against.
    pub mask_source: String,
    /// The image's labelled pixels.
    pub pixels: u64,
    /// Correct pixels over labelled pixels (None without labelled pixels).
    pub pixel_accuracy: Option<f64>,
    /// Mean IoU over this image's classes (true or predicted).
    pub mean_iou: Option<f64>,
    /// Pixels given their true class.
    pub right: PixelOutcome,
    /// Pixels given another class.
    pub wrong: PixelOutcome,
    /// The classes true or predicted on the image, in class order.
    pub classes: Vec<RunClassScore>,
}

/// The masks of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageMasks {
    /// Each mask set holding a mask for the image (as its content is now).
    pub sets: Vec<ImageMaskSet>,
    /// Each segmentation run with a prediction for it.
    pub runs: Vec<ImageSegmentationRun>,
}

/// A layer of masks over an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskLayer {
    /// A mask set's ground truth, by the set's name.
    Truth(String),
    /// A segmentation run's prediction, by the run's name.
    Predicted(String),
    /// Where a run's prediction is right (green) or wrong (red); ignored pixels transparent.
    Errors(String),
}

/// A NotFound-kind error (404 over HTTP) saying what is missing.
fn not_found(message: String) -> EngineError {
    EngineError::Query { source: DataFusionError::Execution(message.clone()), message, kind: ErrorKind::NotFound }
}

/// One stored label map (a row of `labels.parquet` or of a run's `masks.parquet`).
struct StoredMask {
    width: u32,
    height: u32,
    rle: Vec<u8>,
}

/// The row of `image_id` in a batch of stored label maps; with `sha256`, only if the
/// mask was made for that content of the image.
fn stored_mask(batch: &RecordBatch, image_id: &str, sha256: Option<&str>) -> Option<StoredMask> {
    let column = |name: &str| batch.column_by_name(name).expect("label map schema");
    let ids = column("image_id").as_string::<i32>();
    let shas = sha256.map(|_| column("sha256").as_string::<i32>());
    let row =
        (0..batch.num_rows()).find(|&r| ids.value(r) == image_id && shas.is_none_or(|s| Some(s.value(r)) == sha256))?;
    Some(StoredMask {
        width: column("width").as_primitive::<Int32Type>().value(row) as u32,
        height: column("height").as_primitive::<Int32Type>().value(row) as u32,
        rle: column("rle").as_binary::<i32>().value(row).to_vec(),
    })
}

/// What a layer is drawn from.
struct Resolved {
    set: MaskSetManifest,
    run: Option<RunManifest>,
    image_sha256: String,
}

impl Engine {
    /// The content hash of image `image_id` of `dataset` (its latest version).
    fn image_sha256(&self, dataset: &str, image_id: &str) -> Result<String> {
        let files = self.image_files(Some(dataset))?;
        match files.by_id.get(image_id) {
            Some(file) => Ok(file.sha256.clone()),
            None => Err(not_found(format!("dataset {} has no image {image_id:?}", files.dataset))),
        }
    }

    /// Mask set `source` of `dataset`, NotFound when it has none by that name.
    fn mask_set_named(&self, dataset: &str, source: &str) -> Result<MaskSetManifest> {
        let layout = self.workspace.layout();
        let sources = masks::mask_sources(layout, dataset)?;
        if !sources.iter().any(|s| s == source) {
            let known = if sources.is_empty() { "none".to_string() } else { sources.join(", ") };
            return Err(not_found(format!("dataset {dataset} has no mask set {source:?} (mask sets: {known})")));
        }
        Ok(masks::read_mask_set(layout, dataset, source)?)
    }

    /// Segmentation run `name` on `dataset`, NotFound when there is none.
    fn segmentation_run_named(&self, dataset: &str, name: &str) -> Result<RunManifest> {
        let manifest = self.run(name)?;
        if manifest.task != Task::Segmentation || manifest.segmentation.is_none() {
            return Err(not_found(format!("run {name} is not a segmentation run: it has no masks")));
        }
        if manifest.dataset != dataset {
            return Err(not_found(format!("run {name} is on dataset {}, not {dataset}", manifest.dataset)));
        }
        Ok(manifest)
    }

    fn resolve_layer(&self, dataset: &str, image_id: &str, layer: &MaskLayer) -> Result<Resolved> {
        let image_sha256 = self.image_sha256(dataset, image_id)?;
        let (set, run) = match layer {
            MaskLayer::Truth(source) => (self.mask_set_named(dataset, source)?, None),
            MaskLayer::Predicted(name) | MaskLayer::Errors(name) => {
                let run = self.segmentation_run_named(dataset, name)?;
                let source = &run.segmentation.as_ref().expect("a segmentation run").mask_source;
                (self.mask_set_named(dataset, source)?, Some(run))
            }
        };
        Ok(Resolved { set, run, image_sha256 })
    }

    /// The ETag of a layer's PNG: changes whenever the masks, the image's content or the
    /// colours do. Cheap (manifests only); NotFound like [`Engine::mask_png`] for a set or
    /// run that does not exist.
    pub fn mask_tag(&self, dataset: &str, image_id: &str, layer: &MaskLayer) -> Result<String> {
        let r = self.resolve_layer(dataset, image_id, layer)?;
        let (kind, name) = match layer {
            MaskLayer::Truth(s) => ("truth", s),
            MaskLayer::Predicted(s) => ("predicted", s),
            MaskLayer::Errors(s) => ("errors", s),
        };
        let run_masks = r.run.as_ref().and_then(|m| m.segmentation.as_ref()).map_or("", |s| s.masks_sha256.as_str());
        let key = [PALETTE_VERSION, kind, name, dataset, image_id, &r.image_sha256, &r.set.labels_sha256, run_masks];
        let mut hash = Sha256::new();
        for part in key {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        Ok(format!("mask-{}", &hex::encode(hash.finalize())[..32]))
    }

    /// Layer `layer` over image `image_id` of `dataset` as an RGBA PNG of the image's
    /// size: classes in [`class_colour`]s, ignored pixels transparent; the errors view
    /// red where the prediction is wrong, green where right. NotFound when the set or run
    /// does not exist or has no mask for the image as it is now.
    pub fn mask_png(&self, dataset: &str, image_id: &str, layer: &MaskLayer) -> Result<Vec<u8>> {
        let r = self.resolve_layer(dataset, image_id, layer)?;
        let layout = self.workspace.layout();
        let corrupt = |what: &'static str, message: String| DatasetError::Corrupt {
            what,
            path: image_id.into(),
            message: format!("the stored label map of {image_id}: {message}"),
        };
        let truth = || -> Result<(StoredMask, Vec<u16>)> {
            let labels = masks::read_labels(layout, &r.set)?;
            let mask = stored_mask(&labels, image_id, Some(&r.image_sha256)).ok_or_else(|| {
                not_found(format!(
                    "mask set {} has no mask for image {image_id:?} (as its content is now)",
                    r.set.source
                ))
            })?;
            let pixels = (mask.width * mask.height) as usize;
            let runs = stored_runs(&mask.rle, pixels, &r.set.classes, Some(r.set.ignore_index))
                .map_err(|m| corrupt("mask set", m))?;
            Ok((mask, segmentation::expand_runs(&runs)))
        };
        let predicted = |run: &RunManifest| -> Result<(StoredMask, Vec<u16>)> {
            let batch = run::read_segmentation_file(&self.workspace, run, run::PREDICTED_MASKS_FILE)?;
            let mask = stored_mask(&batch, image_id, None)
                .ok_or_else(|| not_found(format!("run {} has no prediction for image {image_id:?}", run.run)))?;
            let pixels = (mask.width * mask.height) as usize;
            let runs = stored_runs(&mask.rle, pixels, &r.set.classes, None).map_err(|m| corrupt("run", m))?;
            Ok((mask, segmentation::expand_runs(&runs)))
        };
        let colour = |p: u16| match p {
            IGNORED => [0, 0, 0, 0],
            p => with_alpha(class_colour(p)),
        };
        let (width, height, rgba): (u32, u32, Vec<u8>) = match (layer, &r.run) {
            (MaskLayer::Truth(_), _) => {
                let (mask, labels) = truth()?;
                (mask.width, mask.height, labels.into_iter().flat_map(colour).collect())
            }
            (MaskLayer::Predicted(_), Some(run)) => {
                let (mask, labels) = predicted(run)?;
                (mask.width, mask.height, labels.into_iter().flat_map(colour).collect())
            }
            (MaskLayer::Errors(_), Some(run)) => {
                let (pred, predicted) = predicted(run)?;
                let (gt, truth) = truth()?;
                if (gt.width, gt.height) != (pred.width, pred.height) {
                    return Err(not_found(format!(
                        "run {}'s prediction for {image_id} is {}×{} but its ground truth is {}×{}",
                        run.run, pred.width, pred.height, gt.width, gt.height
                    )));
                }
                let pixel = |(t, p): (u16, u16)| match t {
                    IGNORED => [0, 0, 0, 0],
                    t if t == p => with_alpha(RIGHT_COLOUR),
                    _ => with_alpha(WRONG_COLOUR),
                };
                (gt.width, gt.height, truth.into_iter().zip(predicted).flat_map(pixel).collect())
            }
            _ => unreachable!("run layers resolve a run"),
        };
        let image = image::RgbaImage::from_raw(width, height, rgba).expect("width × height pixels");
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| EngineError::Output(e.to_string()))?;
        Ok(bytes.into_inner())
    }

    /// The mask sets and segmentation runs of `dataset` that cover image `image_id`: per
    /// set the classes present with their share of the labelled pixels; per run (with a
    /// prediction for the image) its pixel accuracy, mIoU and each class's IoU on this
    /// image, from the confusion matrix stored at upload.
    pub fn image_masks(&self, dataset: &str, image_id: &str) -> Result<ImageMasks> {
        let layout = self.workspace.layout();
        let sources = masks::mask_sources(layout, dataset)?;
        // Read only when the dataset has masks: most image pages have none.
        let image_sha256 = if sources.is_empty() { String::new() } else { self.image_sha256(dataset, image_id)? };
        let mut sets = Vec::new();
        for source in sources {
            let set = masks::read_mask_set(layout, dataset, &source)?;
            let labels = masks::read_labels(layout, &set)?;
            let Some(mask) = stored_mask(&labels, image_id, Some(&image_sha256)) else { continue };
            let pixels = (mask.width * mask.height) as usize;
            let runs = stored_runs(&mask.rle, pixels, &set.classes, Some(set.ignore_index)).map_err(|message| {
                DatasetError::Corrupt { what: "mask set", path: set.source_dir.clone().into(), message }
            })?;
            let mut counts = vec![0u64; set.classes.len()];
            let mut ignored = 0u64;
            for (p, n) in runs {
                match p {
                    IGNORED => ignored += u64::from(n),
                    p => counts[p as usize] += u64::from(n),
                }
            }
            let labelled: u64 = counts.iter().sum();
            let mut classes: Vec<MaskClassShare> = counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(p, &n)| MaskClassShare {
                    class: set.classes[p].name.clone(),
                    class_id: set.classes[p].id,
                    colour: hex(class_colour(p as u16)),
                    pixels: n,
                    share: n as f64 / labelled as f64,
                })
                .collect();
            classes.sort_by(|a, b| b.pixels.cmp(&a.pixels).then(a.class_id.cmp(&b.class_id)));
            sets.push(ImageMaskSet {
                source,
                width: mask.width,
                height: mask.height,
                labelled_pixels: labelled,
                ignored_pixels: ignored,
                classes,
            });
        }
        let mut runs = Vec::new();
        for manifest in self.runs()?.into_iter().filter(|r| r.dataset == dataset && r.task == Task::Segmentation) {
            let Some(files) = &manifest.segmentation else { continue };
            if let Some(scored) = image_run_scores(self, &manifest, &files.mask_source, image_id)? {
                runs.push(scored);
            }
        }
        Ok(ImageMasks { sets, runs })
    }
}

fn with_alpha([r, g, b]: [u8; 3]) -> [u8; 4] {
    [r, g, b, 255]
}

/// A run's scores on one image, from its stored confusion cells (None: no prediction).
fn image_run_scores(
    engine: &Engine,
    manifest: &RunManifest,
    mask_source: &str,
    image_id: &str,
) -> Result<Option<ImageSegmentationRun>> {
    let batch = run::read_segmentation_file(&engine.workspace, manifest, run::CONFUSION_FILE)?;
    let column = |name: &str| batch.column_by_name(name).expect("confusion schema");
    let ids = column("image_id").as_string::<i32>();
    let (truth, predicted) = (column("truth").as_string::<i32>(), column("predicted").as_string::<i32>());
    let (truth_ids, predicted_ids) =
        (column("truth_id").as_primitive::<Int32Type>(), column("predicted_id").as_primitive::<Int32Type>());
    let cells = column("pixels").as_primitive::<Int64Type>();
    let k = manifest.classes.len();
    let position = |name: &str| manifest.classes.iter().position(|c| c == name);
    let mut matrix = vec![0u64; k * k];
    let mut class_ids = vec![0u16; k];
    let mut found = false;
    for row in (0..batch.num_rows()).filter(|&r| ids.value(r) == image_id) {
        found = true;
        let (Some(t), Some(p)) = (position(truth.value(row)), position(predicted.value(row))) else {
            return Err(DatasetError::Corrupt {
                what: "run",
                path: run::run_file(engine.workspace.layout(), manifest, run::CONFUSION_FILE),
                message: format!("row {}: a class that run.json does not list", row + 1),
            }
            .into());
        };
        class_ids[t] = truth_ids.value(row) as u16;
        class_ids[p] = predicted_ids.value(row) as u16;
        matrix[t * k + p] += cells.value(row) as u64;
    }
    if !found {
        return Ok(None);
    }
    let scores = segmentation::scores(&matrix, k);
    let labelled = scores.pixels;
    let share = |n: u64| if labelled == 0 { 0.0 } else { n as f64 / labelled as f64 };
    let right: u64 = (0..k).map(|c| matrix[c * k + c]).sum();
    let outcome = |pixels: u64, colour: [u8; 3]| PixelOutcome { pixels, share: share(pixels), colour: hex(colour) };
    let classes = scores
        .classes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.tp + s.fp + s.fn_ > 0)
        .map(|(c, s)| RunClassScore {
            class: manifest.classes[c].clone(),
            class_id: class_ids[c],
            colour: hex(class_colour(c as u16)),
            pixels: s.tp + s.fn_,
            predicted: s.tp + s.fp,
            share: share(s.tp + s.fp),
            iou: s.iou,
        })
        .collect();
    Ok(Some(ImageSegmentationRun {
        run: manifest.run.clone(),
        model: manifest.model.clone(),
        model_version: manifest.model_version.clone(),
        mask_source: mask_source.to_string(),
        pixels: labelled,
        pixel_accuracy: scores.pixel_accuracy,
        mean_iou: scores.mean_iou,
        right: outcome(right, RIGHT_COLOUR),
        wrong: outcome(labelled - right, WRONG_COLOUR),
        classes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_hex_of_the_palette() {
        assert_eq!(hex(class_colour(0)), "#804080");
        assert_eq!(class_colour(12), class_colour(0), "the palette cycles");
        assert_eq!(hex(RIGHT_COLOUR), "#2ea043");
        assert_eq!(hex(WRONG_COLOUR), "#dc2626");
    }

    #[test]
    fn a_missing_layer_is_not_found() {
        let e = not_found("run r has no prediction for image \"x\"".into());
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (ErrorKind::NotFound, "run r has no prediction for image \"x\"")
        );
    }
}
