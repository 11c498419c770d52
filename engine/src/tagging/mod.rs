//! `slicetest tag`: auto-taggers that add columns to `images` (see
//! `slicetest_datasets::tags` for the files).
//!
//! Two kinds of tagger: those that look at pixels ([`ImageTagger`]: pixel statistics, the
//! face detector), which decode every image in parallel (rayon), and CLIP zero-shot, which
//! reads the stored image vectors and needs no decoding. Both only tag images that have no
//! row for their current content yet (rows of images that left the dataset or changed
//! are no longer read), and a tagger whose parameters changed starts over in a new
//! generation. While working, a tagger adds a part every few seconds, so a killed run
//! resumes where it stopped, and `--shard i/n` splits a run over processes and machines.
//!
//! **Adding a tagger** is one entry in a [`TaggerRegistry`]: a name, a line of help, when
//! it runs by default, and how to make it ([`TaggerSpec::image`] for an [`ImageTagger`]).
//! The built-in ones are listed in [`TaggerRegistry::builtin`]; a program embedding the
//! engine adds its own with [`Engine::register_tagger`]. `slicetest tag`, its help and
//! `tag list` all read the registry. Modules: the trait and the registry here, the run
//! loop in `runner.rs`, one module per tagger (`pixels.rs`, `faces.rs`, `zero_shot.rs`).

mod faces;
mod pixels;
pub(crate) mod runner;
mod zero_shot;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::Field;
use slicetest_datasets::parts::Shard;
use slicetest_datasets::tags::{self, TaggerProvenance};

pub use faces::FaceTagger;
pub use pixels::PixelTagger;
pub(crate) use runner::CurrentImages;

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
    /// Seconds between two parts a tagger adds while it works (the most work a killed
    /// run loses); 0 adds one after every chunk.
    pub checkpoint_seconds: f64,
    /// Only this shard's images (`--shard i/n`): one process of a job split over
    /// machines; the job's shards together tag what one run would.
    pub shard: Shard,
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

/// When `slicetest tag` without `--tagger` runs a tagger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsByDefault {
    /// Always.
    Always,
    /// Once the dataset has embeddings (the tagger reads them).
    WhenEmbedded,
    /// Only when named.
    Never,
}

/// Makes an image tagger when a run starts (loading its model, say).
pub type MakeImageTagger = Arc<dyn Fn() -> Result<Box<dyn ImageTagger>> + Send + Sync>;

/// How a registered tagger runs.
#[derive(Clone)]
pub enum TaggerKind {
    /// Looks at every image's pixels, decoded in parallel.
    Image(MakeImageTagger),
    /// CLIP zero-shot over the stored image vectors (`--vocab` adds vocabularies).
    ZeroShot,
}

/// One tagger `slicetest tag` can run.
#[derive(Clone)]
pub struct TaggerSpec {
    /// Its name (`--tagger`, the tag file's name, the provenance's `tagger`).
    pub name: String,
    /// One line for `--help` and `tag list`.
    pub about: String,
    /// When it runs without `--tagger`.
    pub by_default: RunsByDefault,
    /// How it runs.
    pub kind: TaggerKind,
}

impl TaggerSpec {
    /// An image tagger made by `make` when a run starts.
    pub fn image(
        name: &str,
        about: &str,
        by_default: RunsByDefault,
        make: impl Fn() -> Result<Box<dyn ImageTagger>> + Send + Sync + 'static,
    ) -> Self {
        TaggerSpec { name: name.into(), about: about.into(), by_default, kind: TaggerKind::Image(Arc::new(make)) }
    }
}

impl std::fmt::Debug for TaggerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaggerSpec").field("name", &self.name).field("by_default", &self.by_default).finish()
    }
}

/// The taggers an engine can run, in the order they run by default.
#[derive(Debug, Clone)]
pub struct TaggerRegistry(Vec<TaggerSpec>);

impl Default for TaggerRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl TaggerRegistry {
    /// slicetest's own taggers: pixel statistics, faces (MTCNN) and CLIP zero-shot.
    pub fn builtin() -> Self {
        TaggerRegistry(vec![
            TaggerSpec::image(
                PIXEL_TAGGER,
                "brightness, contrast, saturation, colorfulness, sharpness, entropy, grayscale, aspect ratio, dominant colour",
                RunsByDefault::Always,
                || Ok(Box::new(PixelTagger)),
            ),
            TaggerSpec::image(
                FACE_TAGGER,
                "faces found by MTCNN: num_faces, max_face_area_frac, and a box per face in detections",
                RunsByDefault::Always,
                || Ok(Box::new(FaceTagger::new()?)),
            ),
            TaggerSpec {
                name: CLIP_TAGGER.into(),
                about: "CLIP zero-shot attributes (time of day, weather, scene, …) from the stored image vectors"
                    .into(),
                by_default: RunsByDefault::WhenEmbedded,
                kind: TaggerKind::ZeroShot,
            },
        ])
    }

    /// Adds `spec`; its name must be a valid name that no tagger has yet (`clip-…` is the
    /// vocabularies' own).
    pub fn register(&mut self, spec: TaggerSpec) -> Result<()> {
        slicetest_datasets::validate_name(&spec.name)?;
        if self.is_reserved(&spec.name) {
            return Err(EngineError::InvalidArgument(format!("a tagger named {:?} already exists", spec.name)));
        }
        self.0.push(spec);
        Ok(())
    }

    /// The tagger called `name`.
    pub fn get(&self, name: &str) -> Option<&TaggerSpec> {
        self.0.iter().find(|t| t.name == name)
    }

    /// Whether `name` belongs to a registered tagger or a vocabulary (`clip-…`): names
    /// `tag import` may not take.
    pub fn is_reserved(&self, name: &str) -> bool {
        self.get(name).is_some() || name.starts_with("clip-")
    }

    /// Every tagger, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &TaggerSpec> {
        self.0.iter()
    }

    /// The taggers' names, comma-separated (for messages).
    pub fn names(&self) -> String {
        self.0.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Images per range when the wide `images` file is written (see `write_wide_images`).
const WIDE_CHUNK: usize = 1 << 20;

impl Engine {
    /// Runs the taggers `options` asks for on a dataset.
    pub fn tag(&self, options: &TagOptions) -> Result<TagReport> {
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        // No workspace lock: each run adds its own parts (see slicetest_datasets::tags), so
        // the shards of a job, on one machine or many, tag side by side.
        let current = self.current_images(&dataset)?;
        let mut names = options.taggers.clone();
        if names.is_empty() {
            if options.vocabulary.is_some() {
                names.push(CLIP_TAGGER.into());
            } else {
                let embedded =
                    !slicetest_datasets::embeddings::model_names(self.workspace.layout(), &dataset)?.is_empty();
                names = (self.tagger_registry().iter())
                    .filter(|t| match t.by_default {
                        RunsByDefault::Always => true,
                        RunsByDefault::WhenEmbedded => embedded,
                        RunsByDefault::Never => false,
                    })
                    .map(|t| t.name.clone())
                    .collect();
            }
        }
        // Every name is checked before the first tagger runs.
        let specs = names
            .iter()
            .map(|name| {
                self.tagger_registry().get(name).ok_or_else(|| {
                    EngineError::InvalidArgument(format!(
                        "unknown tagger {name:?}; the taggers are {} (`slicetest tag import` adds your own model's outputs)",
                        self.tagger_registry().names()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut reports = Vec::new();
        for spec in specs {
            let report = match &spec.kind {
                TaggerKind::Image(make) => self.run_image_tagger(&current, make()?.as_ref(), options)?,
                TaggerKind::ZeroShot => self.run_zero_shot(&current, options)?,
            };
            reports.push(report);
        }
        Ok(TagReport { dataset, taggers: reports })
    }

    /// Removes a tagger's stored tags and boxes; false when it had none.
    pub fn remove_tags(&self, dataset: Option<&str>, tagger: &str) -> Result<bool> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        let _lock = self.workspace.lock()?;
        Ok(tags::remove_tags(self.workspace.layout(), &dataset, tagger)?)
    }

    /// Writes `images` with every tagger's columns as one Parquet file for the dataset's
    /// current version and tag parts ([`tags::wide_images_file`]), so that queries on tag
    /// columns read it instead of joining the tag rows; removes the files of earlier keys.
    /// Returns the file and its rows, or None when the dataset has no tags. Nothing to do
    /// when the file for the current key exists. `slicetest tag`, `tag import` and `tag
    /// compact` call it; after other writes (a new version, `tag remove`, a mask import)
    /// readers use the join until the next of those.
    pub async fn materialize_images(&self, dataset: Option<&str>) -> Result<Option<(PathBuf, usize)>> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        let layout = self.workspace.layout();
        let latest = self.workspace.latest(&dataset)?;
        let taggers = tags::stored_taggers(layout, &dataset)?;
        if taggers.is_empty() {
            return Ok(None);
        }
        let file = tags::wide_images_file(layout, &latest, &taggers);
        let storage = layout.storage();
        let rows = if storage.exists(&file)? {
            None
        } else {
            Some(self.write_wide_images(&dataset, &file, WIDE_CHUNK).await?)
        };
        // Files of earlier keys are never read again (their key is not the current one).
        let dir = tags::wide_images_dir(layout, &dataset);
        let current = file.file_name().map(|n| n.to_string_lossy().to_string());
        for name in storage.list(&dir)? {
            if Some(&name) != current.as_ref() && name.ends_with(".parquet") {
                storage.remove(&dir.join(&name))?;
            }
        }
        Ok(Some((file, rows.unwrap_or_default())))
    }

    /// Writes `dataset`'s `images` with every tag column to `file`, in the image table's
    /// own order (by id, so row order does not change), a range of `chunk` ids at a time
    /// ([`WIDE_CHUNK`]): each range's joins hold only that range's tag rows (the catalog applies an
    /// image_id filter to them too), so the memory it takes does not grow with the
    /// dataset (all at once, 10M images with four taggers needed more than the 4 GB
    /// pool). Returns the rows written.
    async fn write_wide_images(&self, dataset: &str, file: &std::path::Path, chunk: usize) -> Result<usize> {
        use datafusion::arrow::array::AsArray;
        use datafusion::prelude::{col, lit};
        let table = format!("SELECT * FROM {}.images", crate::discovery::predicates::quote_column(dataset));
        let by_id = || vec![col("image_id").sort(true, false)];
        // The ranges' first ids: every `chunk`-th id in id order.
        let mut starts = Vec::new();
        let mut position = 0usize;
        for batch in self.sql(&table).await?.select(vec![col("image_id")])?.sort(by_id())?.collect().await? {
            let ids = datafusion::arrow::compute::cast(batch.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
            for id in ids.as_string::<i32>().iter().flatten() {
                if position.is_multiple_of(chunk) {
                    starts.push(id.to_string());
                }
                position += 1;
            }
        }
        let mut writer = None;
        let mut rows = 0;
        for (k, start) in starts.iter().enumerate() {
            let mut range = col("image_id").gt_eq(lit(start.as_str()));
            if let Some(end) = starts.get(k + 1) {
                range = range.and(col("image_id").lt(lit(end.as_str())));
            }
            let in_range = self.sql(&table).await?.filter(range)?.sort(by_id())?;
            for batch in in_range.collect().await? {
                let writer = match &mut writer {
                    Some(writer) => writer,
                    None => {
                        writer.insert(slicetest_datasets::version::parquet_writer_at(&batch.schema(), Vec::new(), 1)?)
                    }
                };
                rows += batch.num_rows();
                writer.write(&batch).map_err(slicetest_datasets::DatasetError::from)?;
            }
        }
        let writer = match writer {
            Some(writer) => writer,
            // No images: an empty table with the view's columns.
            None => {
                let schema = Arc::new(self.sql(&table).await?.schema().as_arrow().clone());
                slicetest_datasets::version::parquet_writer_at(&schema, Vec::new(), 1)?
            }
        };
        let bytes = writer.into_inner().map_err(slicetest_datasets::DatasetError::from)?;
        self.workspace.layout().storage().create(file, bytes.into())?;
        Ok(rows)
    }

    /// Rewrites each named tagger's parts (every stored tagger when `taggers` is empty) as
    /// one part in a new generation, keeping one row per image as it is now (rows of images
    /// that left the dataset or changed are dropped). Readers switch to it at once; run it
    /// after a sharded job has finished, since parts a still-running shard adds to the
    /// older generation are not carried over. Returns (tagger, parts before, rows kept)
    /// for the taggers that had more than one part or stale rows.
    pub fn compact_tags(&self, dataset: Option<&str>, taggers: &[String]) -> Result<Vec<(String, usize, usize)>> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        let layout = self.workspace.layout();
        let stored = tags::tagger_names(layout, &dataset)?;
        for name in taggers {
            if !stored.contains(name) {
                return Err(EngineError::NotFound(format!(
                    "dataset {dataset} has no tags named {name:?}; stored: {}",
                    if stored.is_empty() { "none".to_string() } else { stored.join(", ") }
                )));
            }
        }
        let current = self.current_images(&dataset)?;
        let is_current = |id: &str, sha: &str| current.rows.get(id).is_some_and(|(s, _)| s == sha);
        let mut compacted = Vec::new();
        for name in stored.into_iter().filter(|n| taggers.is_empty() || taggers.contains(n)) {
            let parts = tags::visible_parts(layout, &dataset, &name)?.tags.len();
            let Some(file) = tags::read_tags(layout, &dataset, &name)? else { continue };
            let kept = tags::retain_rows(&file.tags, is_current)?;
            if parts <= 1 && kept.num_rows() == file.tags.num_rows() {
                continue;
            }
            let detections = file.detections.as_ref().map(|d| tags::retain_rows(d, is_current)).transpose()?;
            let rows = kept.num_rows();
            tags::write_tags(layout, &dataset, &tags::TagFile { provenance: file.provenance, tags: kept, detections })?;
            compacted.push((name, parts, rows));
        }
        Ok(compacted)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::runner::{box_batch, tag_batch};
    use super::zero_shot::vocabulary_tagger;
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

    #[tokio::test]
    async fn the_wide_table_written_a_range_at_a_time_is_the_join_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        slicetest_test_support::fixture_workspace(dir.path()).await.unwrap();
        let engine = Engine::open(dir.path().join("ws")).unwrap();
        let tag = TagOptions { taggers: vec!["pixels".into()], progress: false, ..TagOptions::new(None) };
        engine.tag(&tag).unwrap();
        let joined = engine.sql("SELECT * FROM images ORDER BY image_id").await.unwrap().collect().await.unwrap();
        let expected = datafusion::arrow::util::pretty::pretty_format_batches(&joined).unwrap().to_string();
        let images = joined.iter().map(|b| b.num_rows()).sum::<usize>();
        assert!(images >= 5, "{expected}");
        for chunk in [1, 2, 3, images, 1 << 20] {
            let file = dir.path().join(format!("wide-{chunk}.parquet"));
            assert_eq!(engine.write_wide_images("photos", &file, chunk).await.unwrap(), images);
            let read = datafusion::prelude::SessionContext::new();
            let options = datafusion::prelude::ParquetReadOptions::default();
            let batches = read.read_parquet(file.to_str().unwrap(), options).await.unwrap().collect().await.unwrap();
            let got = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
            assert_eq!(got, expected, "ranges of {chunk}");
        }
    }

    #[test]
    fn vocabulary_files_name_their_tagger() {
        assert_eq!(vocabulary_tagger(Path::new("/x/my vocab.toml")).unwrap(), "clip-my_vocab");
    }
}
