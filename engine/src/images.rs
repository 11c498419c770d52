//! Finding an image's file by id, for serving images (never by a client's path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use slicetest_datasets::image_files;
use slicetest_datasets::run::Task;
use slicetest_datasets::version::{DatasetVersion, read_image_columns};

use crate::Engine;
use crate::error::Result;

/// Decodes the image file at `path`: a local file, or an object when `path` is an `s3://`
/// URL (a dataset ingested from a bucket). Bounded like every decode (16,384 px a side).
pub fn open_image(path: &Path) -> slicetest_embed::Result<image::DynamicImage> {
    if !image_files::is_object_url(path) {
        return slicetest_embed::open_image(path);
    }
    let what = path.display().to_string();
    let bytes = image_files::read_image_file(path)
        .map_err(|e| slicetest_embed::EmbedError::Image { what: what.clone(), message: e.to_string() })?;
    slicetest_embed::decode_image(&bytes, &what)
}

/// Decodes the image an ingest recorded with SHA-256 `sha256`, from its file at `path`
/// (local or `s3://`): a file whose bytes changed since is refused, so tags and vectors,
/// which are stored by that hash, never describe other pixels than the ingested ones.
pub fn open_ingested_image(path: &Path, sha256: &str) -> slicetest_embed::Result<image::DynamicImage> {
    let what = path.display().to_string();
    let bytes = image_files::read_image_file(path)
        .map_err(|e| slicetest_embed::EmbedError::Image { what: what.clone(), message: e.to_string() })?;
    let now = slicetest_datasets::probe::sha256_hex(&bytes);
    if now != sha256 {
        return Err(slicetest_embed::EmbedError::Image {
            what,
            message: format!(
                "the file changed since it was ingested (SHA-256 {} then, {} now): ingest it again to use the new content",
                short(sha256),
                short(&now)
            ),
        });
    }
    slicetest_embed::decode_image(&bytes, &what)
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// The bytes of the image file at `path` (a local file or an `s3://` object); a file that
/// is gone since the ingest is [`slicetest_datasets::DatasetError::MissingImageFile`]
/// (kind `NotFound`).
pub fn read_image_bytes(path: &Path) -> Result<bytes::Bytes> {
    Ok(image_files::read_image_file(path)?)
}

/// Where one image's file is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    /// The file on this machine, or the URL of an object in a bucket.
    pub path: PathBuf,
    /// Its format as probed at ingest (`png`, `jpeg`, …).
    pub format: String,
    /// SHA-256 of its content at ingest.
    pub sha256: String,
}

/// Every image of one dataset version, by id.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    /// The dataset.
    pub dataset: String,
    /// The version the files were listed from.
    pub version: u64,
    /// The files by image id.
    pub by_id: HashMap<String, ImageFile>,
}

impl Engine {
    /// The manifest of the latest version of `dataset` (default: the workspace default).
    pub fn latest_manifest(&self, dataset: Option<&str>) -> Result<DatasetVersion> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        Ok(self.workspace.latest(&dataset)?)
    }

    /// The latest version number of `dataset` (default: the workspace default).
    pub fn latest_version(&self, dataset: Option<&str>) -> Result<(String, u64)> {
        let latest = self.latest_manifest(dataset)?;
        Ok((latest.dataset, latest.version))
    }

    /// The files of every image in the latest version of `dataset` (default: the
    /// workspace default). Reads three columns of the images table; callers that serve
    /// many images keep the result while [`Engine::latest_version`] is unchanged.
    pub fn image_files(&self, dataset: Option<&str>) -> Result<ImageFiles> {
        let latest = self.latest_manifest(dataset)?;
        let layout = self.workspace.layout();
        let batch = read_image_columns(layout, &latest, &["image_id", "uri", "format", "sha256"])?;
        // Columns come in the file's order, not the order asked for: look them up by name.
        let column = |name: &str| {
            let array = batch.column_by_name(name).expect("core columns are always present");
            cast(array, &DataType::Utf8)
        };
        let columns = [column("image_id")?, column("uri")?, column("format")?, column("sha256")?];
        let [ids, uris, formats, shas] = [0, 1, 2, 3].map(|i| columns[i].as_string::<i32>());
        let by_id = (0..ids.len())
            .map(|i| {
                let file = ImageFile {
                    path: layout.resolve_uri(uris.value(i)),
                    format: formats.value(i).to_string(),
                    sha256: shas.value(i).to_string(),
                };
                (ids.value(i).to_string(), file)
            })
            .collect();
        Ok(ImageFiles { dataset: latest.dataset, version: latest.version, by_id })
    }
}

/// An image's place in one slice (the slice's latest frozen version).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SliceMembership {
    /// The slice.
    pub slice: String,
    /// Its latest frozen version.
    pub version: u64,
    /// Whether the image is in that version's hold-out set.
    pub holdout: bool,
}

/// One run's prediction for an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImagePrediction {
    /// The run.
    pub run: String,
    /// The run's model and version.
    pub model: String,
    /// The model's version.
    pub model_version: String,
    /// The predicted label (None when the run has only scores).
    pub predicted: Option<String>,
    /// The run's per-sample score, when it has one.
    pub score: Option<f64>,
}

/// A ground-truth object of an image (a row of `objects`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageObject {
    /// The annotation's id.
    pub object_id: i64,
    /// Its category's name.
    pub category: String,
    /// `[x, y, w, h]` in pixels (COCO's box).
    pub bbox: [f64; 4],
    /// A crowd region.
    pub iscrowd: bool,
}

/// One detection run's boxes on an image, at the run's operating point.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageRunBoxes {
    /// The run.
    pub run: String,
    /// The run's model.
    pub model: String,
    /// The model's version.
    pub model_version: String,
    /// The operating point: detections at or above this score count (IoU 0.5).
    pub score_threshold: f64,
    /// The image's counts and boxes: found (`tp`), false (`fp`), missed objects (`fn`),
    /// detections in crowds (`ignored`).
    #[serde(flatten)]
    pub image: crate::detection::ImageFailures,
}

/// A box a tagger found in an image (a row of `detections`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageDetection {
    /// The tagger that found it.
    pub tagger: String,
    /// What it is.
    pub label: String,
    /// The detector's confidence, when it gave one.
    pub score: Option<f32>,
    /// Left, top, right, bottom in pixels.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl Engine {
    /// The boxes every tagger found in image `id` of `dataset` as its content `sha256` is now.
    pub fn image_detections(&self, dataset: &str, id: &str, sha256: &str) -> Result<Vec<ImageDetection>> {
        let layout = self.workspace.layout();
        let mut out = Vec::new();
        for tagger in slicetest_datasets::tags::detection_taggers(layout, dataset)? {
            let Some(boxes) = slicetest_datasets::tags::read_detections(layout, dataset, &tagger)? else { continue };
            let boxes = slicetest_datasets::tags::retain_rows(&boxes, |i, s| i == id && s == sha256)?;
            let labels = boxes.column(2).as_string::<i32>();
            let number = |c: usize| boxes.column(c).as_primitive::<datafusion::arrow::datatypes::Float32Type>();
            let (score, x0, y0, x1, y1) = (number(3), number(4), number(5), number(6), number(7));
            for i in 0..boxes.num_rows() {
                out.push(ImageDetection {
                    tagger: tagger.clone(),
                    label: labels.value(i).to_string(),
                    score: score.is_valid(i).then(|| score.value(i)),
                    x0: x0.value(i),
                    y0: y0.value(i),
                    x1: x1.value(i),
                    y1: y1.value(i),
                });
            }
        }
        Ok(out)
    }

    /// The slices of `dataset` whose latest frozen version holds image `id`.
    pub fn image_slices(&self, dataset: &str, id: &str) -> Result<Vec<SliceMembership>> {
        let layout = self.workspace.layout();
        let mut out = Vec::new();
        for name in slicetest_datasets::slice::slice_names(layout)? {
            if slicetest_datasets::slice::read_definition(layout, &name)?.dataset != dataset {
                continue;
            }
            let Some(frozen) = slicetest_datasets::slice::latest_frozen(layout, &name)? else { continue };
            let members = slicetest_datasets::slice::read_members(layout, &frozen)?;
            let (ids, holdout) = (members.column(0).as_string::<i32>(), members.column(3).as_boolean());
            if let Some(i) = (0..ids.len()).find(|&i| ids.value(i) == id) {
                out.push(SliceMembership { slice: name, version: frozen.version, holdout: holdout.value(i) });
            }
        }
        Ok(out)
    }

    /// The ground-truth objects of image `id` of `dataset` (its latest version).
    pub fn image_objects(&self, dataset: &str, id: &str) -> Result<Vec<ImageObject>> {
        let latest = self.workspace.latest(dataset)?;
        let Some(objects) = slicetest_datasets::objects::read_objects(self.workspace.layout(), &latest)? else {
            return Ok(Vec::new());
        };
        Ok(slicetest_datasets::objects::rows(&objects)
            .filter(|o| o.image_id == id)
            .map(|o| ImageObject {
                object_id: o.object_id,
                category: o.category.to_string(),
                bbox: o.bbox,
                iscrowd: o.iscrowd,
            })
            .collect())
    }

    /// Every detection run on `dataset` with its boxes on image `id` (matched runs are
    /// cached, so only the first look at a run matches it).
    pub fn image_run_boxes(&self, dataset: &str, id: &str) -> Result<Vec<ImageRunBoxes>> {
        let mut out = Vec::new();
        let runs = self.runs()?.into_iter().filter(|r| r.dataset == dataset && r.task == Task::Detection);
        for run in runs {
            let evaluation = self.evaluations.get(&self.workspace, &run)?;
            let Some(image) = evaluation.image_boxes(id) else { continue };
            out.push(ImageRunBoxes {
                run: run.run,
                model: run.model,
                model_version: run.model_version,
                score_threshold: evaluation.score_threshold(),
                image,
            });
        }
        Ok(out)
    }

    /// Every classification run on `dataset` that has a prediction for image `id`.
    pub fn image_predictions(&self, dataset: &str, id: &str) -> Result<Vec<ImagePrediction>> {
        let mut out = Vec::new();
        for run in self.runs()?.into_iter().filter(|r| r.dataset == dataset && r.task == Task::Classification) {
            let batch = slicetest_datasets::run::read_predictions(&self.workspace, &run)?;
            let ids = batch.column(0).as_string::<i32>();
            let Some(i) = (0..ids.len()).find(|&i| ids.value(i) == id) else { continue };
            let predicted = batch.column_by_name("predicted").map(|c| c.as_string::<i32>());
            let score = batch.column_by_name("score").map(|c| c.as_primitive::<Float64Type>());
            out.push(ImagePrediction {
                run: run.run.clone(),
                model: run.model.clone(),
                model_version: run.model_version.clone(),
                predicted: predicted.filter(|p| p.is_valid(i)).map(|p| p.value(i).to_string()),
                score: score.filter(|s| s.is_valid(i)).map(|s| s.value(i)),
            });
        }
        Ok(out)
    }
}
