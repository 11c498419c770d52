//! `slicetest tag`: auto-taggers that add columns to `images` (see
//! `slicetest_datasets::tags` for the files).
//!
//! Two kinds of tagger: those that look at pixels ([`ImageTagger`]: pixel statistics, the
//! face detector), which decode every image in parallel (rayon), and CLIP zero-shot, which
//! reads the stored image vectors and needs no decoding. Both only tag images that have no
//! row for their current content yet, rows of images that left the dataset or changed are
//! dropped, and a tagger whose parameters changed starts over. While working, a tagger
//! republishes its file every few seconds, so a killed run resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float32Builder, Int32Builder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rayon::prelude::*;
use slicetest_datasets::DatasetError;
use slicetest_datasets::progress::bar;
use slicetest_datasets::tags::{self, TagFile, TaggerProvenance};
use slicetest_embed::faces::{FaceDetector, MTCNN_VERSION};
use slicetest_embed::tagging::pixel::{PIXEL_STATS_VERSION, PixelStats};
use slicetest_embed::tagging::zero_shot::{Vocabulary, ZeroShotClassifier, read_vocabulary};
use slicetest_sql::vectors::VectorCatalog;

use crate::Engine;
use crate::error::{EngineError, Result};

/// The pixel-statistics tagger.
pub const PIXEL_TAGGER: &str = "pixels";
/// The face detector (MTCNN).
pub const FACE_TAGGER: &str = "faces";
/// CLIP zero-shot tags from the default vocabulary (`clip-<name>` for a vocabulary file).
pub const CLIP_TAGGER: &str = "clip";

/// What `slicetest tag` should do.
#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// Taggers to run (`pixels`, `faces`, `clip`); empty: every tagger that can run
    /// (`clip` only once the dataset is embedded).
    pub taggers: Vec<String>,
    /// A zero-shot vocabulary file: runs the tagger `clip-<file stem>` with it.
    pub vocabulary: Option<PathBuf>,
    /// Which embeddings the zero-shot tagger reads (default: the dataset's only model).
    pub model: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
    /// Images decoded in parallel between two looks at the clock (default 1024).
    pub chunk_size: usize,
    /// Seconds between republishing the tag file while a tagger works (the most work a
    /// killed run loses); 0 republishes after every chunk.
    pub checkpoint_seconds: f64,
}

impl TagOptions {
    /// Every tagger that can run on `dataset` (None: the default), with a progress bar.
    pub fn new(dataset: Option<String>) -> Self {
        TagOptions { dataset, progress: true, chunk_size: 1024, checkpoint_seconds: 5.0, ..Default::default() }
    }
}

/// What one tagger did.
#[derive(Debug, Clone)]
pub struct TaggerReport {
    /// The tagger.
    pub tagger: String,
    /// The columns it adds to `images`.
    pub columns: Vec<String>,
    /// Images tagged by this run.
    pub tagged: usize,
    /// Images that already had tags for their current content.
    pub already_tagged: usize,
    /// Whether stored tags were thrown away because the tagger's parameters changed.
    pub rebuilt: bool,
    /// Images that could not be tagged (their columns are NULL): (image_id, reason).
    pub failed: Vec<(String, String)>,
    /// Boxes found by this run.
    pub boxes: usize,
    /// Wall time.
    pub seconds: f64,
}

/// What a `slicetest tag` run did.
#[derive(Debug, Clone)]
pub struct TagReport {
    /// The dataset.
    pub dataset: String,
    /// One report per tagger, in the order they ran.
    pub taggers: Vec<TaggerReport>,
}

/// One tag value; a row of them follows the tagger's [`ImageTagger::fields`].
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    /// A Float32 column.
    Float(f32),
    /// An Int32 column.
    Int(i32),
    /// A Boolean column.
    Bool(bool),
    /// A Utf8 column.
    Text(String),
}

/// A box a tagger found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundBox {
    /// What it is.
    pub label: String,
    /// The detector's confidence.
    pub score: f32,
    /// Corners in pixels of the image: (x0, y0) top left, (x1, y1) bottom right.
    pub corners: [f32; 4],
}

/// One image's tags.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTags {
    /// One value per field.
    pub values: Vec<TagValue>,
    /// Boxes, for taggers that find objects.
    pub boxes: Vec<FoundBox>,
}

/// A tagger that looks at an image's pixels.
pub trait ImageTagger: Sync {
    /// Name, version and parameters (what makes two runs' tags comparable).
    fn provenance(&self) -> TaggerProvenance;
    /// The columns it adds (all nullable: an image that fails to decode gets NULLs).
    fn fields(&self) -> Vec<Field>;
    /// Whether it stores boxes in `detections`.
    fn finds_boxes(&self) -> bool {
        false
    }
    /// Tags one decoded image.
    fn tag(&self, image: &image::DynamicImage) -> slicetest_embed::Result<ImageTags>;
}

/// Brightness, contrast, sharpness, … (see `slicetest_embed::tagging::pixel`).
#[derive(Debug, Default)]
pub struct PixelTagger;

impl ImageTagger for PixelTagger {
    fn provenance(&self) -> TaggerProvenance {
        TaggerProvenance::new(PIXEL_TAGGER, PIXEL_STATS_VERSION, serde_json::json!({}), None)
    }

    fn fields(&self) -> Vec<Field> {
        let float = |n: &str| Field::new(n, DataType::Float32, true);
        vec![
            float("brightness"),
            float("contrast"),
            float("saturation"),
            float("colorfulness"),
            float("sharpness"),
            float("entropy"),
            Field::new("is_grayscale", DataType::Boolean, true),
            float("aspect_ratio"),
            Field::new("dominant_color", DataType::Utf8, true),
        ]
    }

    fn tag(&self, image: &image::DynamicImage) -> slicetest_embed::Result<ImageTags> {
        let s = PixelStats::of(image);
        let values = vec![
            TagValue::Float(s.brightness),
            TagValue::Float(s.contrast),
            TagValue::Float(s.saturation),
            TagValue::Float(s.colorfulness),
            TagValue::Float(s.sharpness),
            TagValue::Float(s.entropy),
            TagValue::Bool(s.is_grayscale),
            TagValue::Float(s.aspect_ratio),
            TagValue::Text(s.dominant_color.to_string()),
        ];
        Ok(ImageTags { values, boxes: Vec::new() })
    }
}

/// Faces found by MTCNN: `num_faces`, `max_face_area_frac`, and a box per face.
#[derive(Debug)]
pub struct FaceTagger {
    detector: FaceDetector,
}

impl FaceTagger {
    /// Loads the detector (its weights are compiled in).
    pub fn new() -> Result<Self> {
        Ok(FaceTagger { detector: FaceDetector::new(&candle_core::Device::Cpu)? })
    }
}

impl ImageTagger for FaceTagger {
    fn provenance(&self) -> TaggerProvenance {
        let parameters = serde_json::json!({"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709});
        TaggerProvenance::new(FACE_TAGGER, "1", parameters, Some(MTCNN_VERSION.to_string()))
    }

    fn fields(&self) -> Vec<Field> {
        vec![Field::new("num_faces", DataType::Int32, true), Field::new("max_face_area_frac", DataType::Float32, true)]
    }

    fn finds_boxes(&self) -> bool {
        true
    }

    fn tag(&self, image: &image::DynamicImage) -> slicetest_embed::Result<ImageTags> {
        let faces = self.detector.detect(&image.to_rgb8())?;
        let area = (image.width() as f32 * image.height() as f32).max(1.0);
        let largest = faces.iter().map(|f| ((f.x1 - f.x0) * (f.y1 - f.y0)).max(0.0) / area).fold(0.0f32, f32::max);
        let boxes = faces
            .iter()
            .map(|f| FoundBox { label: "face".into(), score: f.score, corners: [f.x0, f.y0, f.x1, f.y1] })
            .collect();
        Ok(ImageTags { values: vec![TagValue::Int(faces.len() as i32), TagValue::Float(largest.min(1.0))], boxes })
    }
}

/// The images of a dataset's latest version: id → (sha256, uri), plus the names of its
/// columns. What taggers tag and imports may name.
pub(crate) struct CurrentImages {
    pub(crate) dataset: String,
    pub(crate) version: u64,
    pub(crate) rows: HashMap<String, (String, String)>,
    /// Sorted ids, so runs tag in a reproducible order.
    pub(crate) order: Vec<String>,
    pub(crate) columns: Vec<String>,
}

/// A tagger's stored rows, cut down to what is still valid, ready to be extended.
struct Progress {
    provenance: TaggerProvenance,
    kept: Option<TagFile>,
    done: HashSet<String>,
    rebuilt: bool,
    /// Whether stored rows were dropped (their image left the dataset or changed).
    pruned: bool,
    already: usize,
}

impl Engine {
    /// Runs the taggers `options` asks for on a dataset.
    pub fn tag(&self, options: &TagOptions) -> Result<TagReport> {
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        let _lock = self.workspace.lock()?;
        let current = self.current_images(&dataset)?;
        let mut names = options.taggers.clone();
        if names.is_empty() {
            if options.vocabulary.is_some() {
                names.push(CLIP_TAGGER.into());
            } else {
                names.extend([PIXEL_TAGGER.to_string(), FACE_TAGGER.to_string()]);
                let embedded = slicetest_datasets::embeddings::model_names(self.workspace.layout(), &dataset)?;
                if !embedded.is_empty() {
                    names.push(CLIP_TAGGER.into());
                }
            }
        }
        let mut reports = Vec::new();
        for name in names {
            let report = match name.as_str() {
                PIXEL_TAGGER => self.run_image_tagger(&current, &PixelTagger, options)?,
                FACE_TAGGER => self.run_image_tagger(&current, &FaceTagger::new()?, options)?,
                CLIP_TAGGER => self.run_zero_shot(&current, options)?,
                other => {
                    return Err(EngineError::Statement(format!(
                        "unknown tagger {other:?}; the taggers are {PIXEL_TAGGER}, {FACE_TAGGER} and {CLIP_TAGGER} \
                         (`slicetest tag import` adds your own model's outputs)"
                    )));
                }
            };
            reports.push(report);
        }
        Ok(TagReport { dataset, taggers: reports })
    }

    pub(crate) fn current_images(&self, dataset: &str) -> Result<CurrentImages> {
        let latest = self.latest_manifest(Some(dataset))?;
        let batch = slicetest_datasets::version::read_image_columns(
            self.workspace.layout(),
            &latest,
            &["image_id", "sha256", "uri"],
        )?;
        let column = |name: &str| {
            datafusion::arrow::compute::cast(batch.column_by_name(name).expect("core column"), &DataType::Utf8)
        };
        let (ids, shas, uris) = (column("image_id")?, column("sha256")?, column("uri")?);
        let as_str = |a: &ArrayRef| a.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone();
        let (ids, shas, uris) = (as_str(&ids), as_str(&shas), as_str(&uris));
        let rows: HashMap<String, (String, String)> = (0..ids.len())
            .map(|i| (ids.value(i).to_string(), (shas.value(i).to_string(), uris.value(i).to_string())))
            .collect();
        let mut order: Vec<String> = rows.keys().cloned().collect();
        order.sort();
        let columns = latest.columns.iter().map(|c| c.name.clone()).collect();
        Ok(CurrentImages { dataset: dataset.to_string(), version: latest.version, rows, order, columns })
    }

    /// Loads a tagger's stored rows, keeps those that still describe a current image, and
    /// checks that its columns are free.
    fn progress(&self, current: &CurrentImages, provenance: TaggerProvenance, columns: &[String]) -> Result<Progress> {
        let layout = self.workspace.layout();
        let tagger = provenance.tagger.clone();
        let taken = tags::taken_columns(layout, &current.dataset, &current.columns, &tagger)?;
        tags::check_columns(&tagger, columns.iter().map(String::as_str), &taken)?;
        let stored = tags::read_tags(layout, &current.dataset, &tagger)?;
        let rebuilt = stored.as_ref().is_some_and(|s| s.provenance.parameters_hash != provenance.parameters_hash);
        let Some(stored) = stored.filter(|_| !rebuilt) else {
            return Ok(Progress { provenance, kept: None, done: HashSet::new(), rebuilt, pruned: false, already: 0 });
        };
        let is_current = |id: &str, sha: &str| current.rows.get(id).is_some_and(|(s, _)| s == sha);
        let kept_tags = tags::retain_rows(&stored.tags, is_current)?;
        let kept_boxes = stored.detections.as_ref().map(|d| tags::retain_rows(d, is_current)).transpose()?;
        let kept = TagFile { provenance: provenance.clone(), tags: kept_tags, detections: kept_boxes };
        let done: HashSet<String> = kept.tagged().into_iter().map(|(id, _)| id).collect();
        let already = done.len();
        let pruned = already != stored.tags.num_rows();
        Ok(Progress { provenance, kept: Some(kept), done, rebuilt, pruned, already })
    }

    /// Runs a pixel tagger over every image it has not tagged yet.
    fn run_image_tagger(
        &self,
        current: &CurrentImages,
        tagger: &dyn ImageTagger,
        options: &TagOptions,
    ) -> Result<TaggerReport> {
        let started = Instant::now();
        let fields = tagger.fields();
        let columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let provenance = tagger.provenance().computed_on(slicetest_embed::cpu::describe());
        let state = self.progress(current, provenance, &columns)?;
        let pending: Vec<&String> = current.order.iter().filter(|id| !state.done.contains(*id)).collect();
        let layout = self.workspace.layout();
        let bar = bar(pending.len() as u64, &format!("tagging ({})", state.provenance.tagger), options.progress);
        let mut rows: Vec<(String, String, Option<ImageTags>)> = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut last_publish = Instant::now();
        for ids in pending.chunks(options.chunk_size.max(1)) {
            let tagged: Vec<(String, String, std::result::Result<ImageTags, String>)> = ids
                .par_iter()
                .map(|id| {
                    let (sha, uri) = &current.rows[*id];
                    let result = slicetest_embed::open_image(&layout.resolve_uri(uri))
                        .and_then(|image| tagger.tag(&image))
                        .map_err(|e| e.to_string());
                    (id.to_string(), sha.clone(), result)
                })
                .collect();
            bar.inc(ids.len() as u64);
            for (id, sha, result) in tagged {
                match result {
                    Ok(tags) => rows.push((id, sha, Some(tags))),
                    Err(reason) => {
                        failed.push((id.clone(), reason));
                        rows.push((id, sha, None));
                    }
                }
            }
            // Publish every few seconds (not every chunk: each publish rewrites the file).
            if last_publish.elapsed().as_secs_f64() >= options.checkpoint_seconds {
                self.publish(current, &state, &fields, tagger.finds_boxes(), &rows)?;
                last_publish = Instant::now();
            }
        }
        bar.finish_and_clear();
        if !rows.is_empty() || state.pruned || state.kept.is_none() {
            self.publish(current, &state, &fields, tagger.finds_boxes(), &rows)?;
        }
        Ok(TaggerReport {
            tagger: state.provenance.tagger.clone(),
            columns,
            tagged: rows.len() - failed.len(),
            already_tagged: state.already,
            rebuilt: state.rebuilt,
            boxes: rows.iter().filter_map(|r| r.2.as_ref()).map(|t| t.boxes.len()).sum(),
            failed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the kept rows plus `rows` as the tagger's file.
    fn publish(
        &self,
        current: &CurrentImages,
        state: &Progress,
        fields: &[Field],
        finds_boxes: bool,
        rows: &[(String, String, Option<ImageTags>)],
    ) -> Result<()> {
        let new_tags = tag_batch(fields, rows)?;
        let tags = match &state.kept {
            Some(kept) => tags::append_rows(&kept.tags, &new_tags)?,
            None => new_tags,
        };
        let detections = if finds_boxes {
            let new_boxes = box_batch(rows)?;
            Some(match state.kept.as_ref().and_then(|k| k.detections.as_ref()) {
                Some(kept) => tags::append_rows(kept, &new_boxes)?,
                None => new_boxes,
            })
        } else {
            None
        };
        let file = TagFile { provenance: state.provenance.clone(), tags, detections };
        Ok(tags::write_tags(self.workspace.layout(), &current.dataset, &file)?)
    }

    /// CLIP zero-shot tags from the stored image vectors.
    fn run_zero_shot(&self, current: &CurrentImages, options: &TagOptions) -> Result<TaggerReport> {
        let started = Instant::now();
        let (vocabulary, tagger, origin) = match &options.vocabulary {
            None => (Vocabulary::default_vocabulary(), CLIP_TAGGER.to_string(), "default".to_string()),
            Some(path) => (read_vocabulary(path)?, vocabulary_tagger(path)?, path.display().to_string()),
        };
        let latest = self.latest_manifest(Some(&current.dataset))?;
        let catalog = VectorCatalog::new(self.workspace.layout().clone(), Some(latest));
        let set = catalog.vectors(options.model.as_deref()).map_err(|e| {
            EngineError::Statement(format!(
                "the {tagger} tagger reads CLIP image vectors: {}; run `slicetest embed` first",
                e.strip_backtrace()
            ))
        })?;
        let parameters = serde_json::json!({"vocabulary": origin, "attributes": vocabulary.attributes,
            "logit_scale": slicetest_embed::tagging::zero_shot::LOGIT_SCALE});
        let model = format!("{} ({})", set.model.name, set.model.fingerprint);
        let provenance =
            TaggerProvenance::new(&tagger, "1", parameters, Some(model)).computed_on(slicetest_embed::cpu::describe());
        let columns = vocabulary.columns();
        let state = self.progress(current, provenance, &columns)?;
        let prompts = vocabulary.prompts();
        let vectors: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| catalog.text_vector(&set, p).map(|v| v.to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| EngineError::query(e, None))?;
        let classifier = ZeroShotClassifier::new(&vocabulary, &vectors)?;
        let rows: Vec<(String, String, Option<ImageTags>)> = set
            .iter()
            .filter(|(id, _, _)| !state.done.contains(*id))
            .map(|(id, sha, vector)| {
                let values = classifier
                    .classify(vector)
                    .into_iter()
                    .flat_map(|t| [TagValue::Text(t.value), TagValue::Float(t.score)])
                    .collect();
                (id.to_string(), sha.to_string(), Some(ImageTags { values, boxes: Vec::new() }))
            })
            .collect();
        let fields: Vec<Field> = vocabulary
            .attributes
            .keys()
            .flat_map(|a| {
                [Field::new(a, DataType::Utf8, true), Field::new(format!("{a}_score"), DataType::Float32, true)]
            })
            .collect();
        self.publish(current, &state, &fields, false, &rows)?;
        Ok(TaggerReport {
            tagger,
            columns,
            tagged: rows.len(),
            already_tagged: state.already,
            rebuilt: state.rebuilt,
            failed: Vec::new(),
            boxes: 0,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Removes a tagger's stored tags and boxes; false when it had none.
    pub fn remove_tags(&self, dataset: Option<&str>, tagger: &str) -> Result<bool> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        let _lock = self.workspace.lock()?;
        Ok(tags::remove_tags(self.workspace.layout(), &dataset, tagger)?)
    }

    /// The stored taggers of a dataset with their provenance and row counts.
    pub fn taggers(&self, dataset: Option<&str>) -> Result<Vec<(TaggerProvenance, Vec<String>, usize)>> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        let layout = self.workspace.layout();
        let mut out = Vec::new();
        for name in tags::tagger_names(layout, &dataset)? {
            if let Some(file) = tags::read_tags(layout, &dataset, &name)? {
                let columns = file.tag_fields().iter().map(|f| f.name().clone()).collect();
                out.push((file.provenance, columns, file.tags.num_rows()));
            }
        }
        Ok(out)
    }
}

/// `clip-<stem>` for a vocabulary file `<stem>.toml`.
fn vocabulary_tagger(path: &Path) -> Result<String> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let name = format!("{CLIP_TAGGER}-{clean}");
    slicetest_datasets::validate_name(&name)?;
    Ok(name)
}

/// image_id, sha256, then one column per field; a row without tags is all NULL.
fn tag_batch(fields: &[Field], rows: &[(String, String, Option<ImageTags>)]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
    ];
    for (i, field) in fields.iter().enumerate() {
        let value = |r: &(String, String, Option<ImageTags>)| r.2.as_ref().map(|t| t.values[i].clone());
        let array: ArrayRef = match field.data_type() {
            DataType::Float32 => {
                let mut b = Float32Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_float)));
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_int)));
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_bool)));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_text)));
                Arc::new(b.finish())
            }
        };
        columns.push(array);
    }
    let mut schema_fields = tags::key_fields();
    schema_fields.extend(fields.iter().map(|f| f.clone().with_nullable(true)));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).map_err(DatasetError::from)?)
}

fn as_float(v: TagValue) -> Option<f32> {
    if let TagValue::Float(x) = v { Some(x) } else { None }
}
fn as_int(v: TagValue) -> Option<i32> {
    if let TagValue::Int(x) = v { Some(x) } else { None }
}
fn as_bool(v: TagValue) -> Option<bool> {
    if let TagValue::Bool(x) = v { Some(x) } else { None }
}
fn as_text(v: TagValue) -> Option<String> {
    if let TagValue::Text(x) = v { Some(x) } else { None }
}

/// The detections file rows of `rows`' boxes.
fn box_batch(rows: &[(String, String, Option<ImageTags>)]) -> Result<RecordBatch> {
    let boxes: Vec<(&str, &str, &FoundBox)> = rows
        .iter()
        .filter_map(|(id, sha, tags)| tags.as_ref().map(|t| (id, sha, t)))
        .flat_map(|(id, sha, t)| t.boxes.iter().map(move |b| (id.as_str(), sha.as_str(), b)))
        .collect();
    let floats = |f: &dyn Fn(&FoundBox) -> f32| -> ArrayRef {
        Arc::new(datafusion::arrow::array::Float32Array::from_iter_values(boxes.iter().map(|b| f(b.2))))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.0))),
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.1))),
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.2.label.as_str()))),
        floats(&|b| b.score),
        floats(&|b| b.corners[0]),
        floats(&|b| b.corners[1]),
        floats(&|b| b.corners[2]),
        floats(&|b| b.corners[3]),
    ];
    Ok(RecordBatch::try_new(tags::detections_schema(), columns).map_err(DatasetError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_tags_become_nulls_and_boxes_rows() {
        let tagger = PixelTagger;
        let image = image::DynamicImage::new_rgb8(4, 2);
        let tags = tagger.tag(&image).unwrap();
        let mut with_box = tags.clone();
        with_box.boxes.push(FoundBox { label: "face".into(), score: 0.9, corners: [0.0, 0.0, 1.0, 1.0] });
        let rows = vec![("a".to_string(), "s".to_string(), Some(with_box)), ("b".into(), "t".into(), None)];
        let batch = tag_batch(&tagger.fields(), &rows).unwrap();
        assert_eq!(batch.num_columns(), 2 + tagger.fields().len());
        assert_eq!(batch.column(2).null_count(), 1);
        assert_eq!(box_batch(&rows).unwrap().num_rows(), 1);
    }

    #[test]
    fn vocabulary_files_name_their_tagger() {
        assert_eq!(vocabulary_tagger(Path::new("/x/my vocab.toml")).unwrap(), "clip-my_vocab");
    }
}
