//! `slicetest embed`: every image of a dataset through CLIP's vision tower, stored as
//! `datasets/<ds>/embeddings/<model>/part-*.parquet` (see `slicetest_datasets::embeddings`).
//!
//! Images are decoded and preprocessed in parallel (rayon) a chunk at a time, the chunk
//! goes through the model in batches, and the chunk's vectors are appended as one part.
//! Images already embedded with their current content (image_id + sha256) are skipped, so
//! a second run only embeds what is new or changed and a killed run resumes after its last
//! finished chunk.
//!
//! A run may cover a subset: the images a boolean SQL predicate over `images` selects
//! (`--where`), the first `--limit` of them by image_id. The subset is a function of the
//! data, so running the same command again resumes it instead of growing it.
//!
//! When the images are embedded, the run readies the search index of the dataset's
//! vectors with that model (the HNSW graph, built or extended and saved, once there are
//! enough vectors for one), so that searches go through it from the first one. One shard
//! of a job does not: the other shards may not be done (the next unsharded run, or a
//! server at its first search, builds it).
//!
//! No lock is taken: `model.json` and each part are created only if absent (see
//! `slicetest_datasets::parts`), so concurrent runs and the shards of one job — on one
//! machine or many, against a directory or a bucket — add parts side by side.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::prelude::{DataFrame, col};
use rayon::iter::Either;
use rayon::prelude::*;
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_datasets::parts::Shard;
use slicetest_datasets::progress::{bar, spinner};
use slicetest_datasets::version::read_image_columns;
use slicetest_datasets::{DatasetVersion, WorkspaceLayout};
use slicetest_embed::{Clip, DEFAULT_MODEL, fingerprint, resolve_model, select_device};
use slicetest_sql::vectors::IndexStatus;

use crate::Engine;
use crate::error::{EngineError, Result};

/// What `slicetest embed` should do.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// A checkpoint directory or a Hugging Face id (local HF cache, else downloaded).
    pub model: String,
    /// The name the embeddings are stored (and queried) under; default: derived from `model`.
    pub name: Option<String>,
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// `auto`, `cpu`, `cuda` or `metal`.
    pub device: String,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Images per stored part (the unit of resumption).
    pub chunk_size: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Only the images this boolean SQL predicate over the dataset's `images` selects
    /// (e.g. `split = 'test'`); None: every image.
    pub filter: Option<String>,
    /// Only the first `limit` selected images, by image_id.
    pub limit: Option<usize>,
    /// Counters another thread can read while the run goes on (the HTTP API's jobs).
    pub counters: Option<Arc<EmbedProgress>>,
    /// Only this shard's images (`--shard i/n`): one process of a job split over machines.
    pub shard: Shard,
    /// The dataset version whose images to embed (default: the latest when the run
    /// starts); every shard of a job given the same version covers the same images.
    pub version: Option<u64>,
    /// Ready the search index when done (see the module docs); false leaves it to a later
    /// run or a server (searches scan exactly until then).
    pub index: bool,
}

impl Default for EmbedOptions {
    /// The CLI's defaults: the default model on the best device, batches of 16, parts of
    /// 1024 images, every image of the default dataset, no progress bar.
    fn default() -> Self {
        EmbedOptions {
            model: DEFAULT_MODEL.into(),
            name: None,
            dataset: None,
            device: "auto".into(),
            batch_size: 16,
            chunk_size: 1024,
            progress: false,
            filter: None,
            limit: None,
            counters: None,
            shard: Shard::ALL,
            version: None,
            index: true,
        }
    }
}

const STAGE_EMBEDDING: u8 = 0;
const STAGE_MERGING: u8 = 1;
const STAGE_INDEXING: u8 = 2;

/// Live counts of an embed run, shared with whoever watches it. `done` counts the images
/// of `total` processed so far (embedded or failed to decode); `embedded` those stored.
/// The watcher may also [`cancel`](EmbedProgress::cancel) the run.
#[derive(Debug)]
pub struct EmbedProgress {
    total: AtomicUsize,
    done: AtomicUsize,
    embedded: AtomicUsize,
    already_embedded: AtomicUsize,
    cancelled: AtomicBool,
    /// Where the run is once every image is processed: [`STAGE_EMBEDDING`] until then,
    /// then [`STAGE_MERGING`] (the parts) and [`STAGE_INDEXING`] (the search index).
    stage: AtomicU8,
    /// Vectors linked into the search index so far.
    linked: AtomicUsize,
}

impl Default for EmbedProgress {
    fn default() -> Self {
        EmbedProgress {
            total: AtomicUsize::new(usize::MAX),
            done: AtomicUsize::new(0),
            embedded: AtomicUsize::new(0),
            already_embedded: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
            stage: AtomicU8::new(STAGE_EMBEDDING),
            linked: AtomicUsize::new(0),
        }
    }
}

impl EmbedProgress {
    /// Images this run has to embed; None until the model is loaded and the images that
    /// are already embedded are known.
    pub fn total(&self) -> Option<usize> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t != usize::MAX)
    }

    /// Images of `total` processed so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Images stored so far (a part is stored per chunk).
    pub fn embedded(&self) -> usize {
        self.embedded.load(Ordering::Relaxed)
    }

    /// Images of the selection that were embedded before this run.
    pub fn already_embedded(&self) -> usize {
        self.already_embedded.load(Ordering::Relaxed)
    }

    /// What the run is doing: `loading` (the model, and which images are embedded
    /// already), `embedding`, then, once every image is processed, `merging` (the parts
    /// into fewer, larger ones) and `indexing` (readying the search index).
    pub fn phase(&self) -> &'static str {
        match (self.total(), self.stage.load(Ordering::Relaxed)) {
            (_, STAGE_INDEXING) => "indexing",
            (_, STAGE_MERGING) => "merging",
            (None, _) => "loading",
            (Some(_), _) => "embedding",
        }
    }

    /// While `indexing`: vectors linked into the search index so far.
    pub fn linked(&self) -> Option<usize> {
        (self.stage.load(Ordering::Relaxed) == STAGE_INDEXING).then(|| self.linked.load(Ordering::Relaxed))
    }

    /// Asks the run to stop after its current batch (parts already stored stay, so the
    /// next run resumes there), or, once the images are embedded, to stop readying the
    /// search index (a later run or a server's search readies it); the run then fails
    /// with "cancelled".
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn check_cancelled(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            let stored = self.embedded();
            return Err(EngineError::Cancelled { stored });
        }
        Ok(())
    }
}

/// What an embed run did.
#[derive(Debug, Clone)]
pub struct EmbedReport {
    /// The dataset.
    pub dataset: String,
    /// The dataset version whose images were embedded.
    pub version: u64,
    /// The shard this run covered.
    pub shard: Shard,
    /// The stored model record.
    pub model: EmbeddingModel,
    /// Images embedded by this run.
    pub embedded: usize,
    /// Images skipped because their content was already embedded.
    pub already_embedded: usize,
    /// Images that could not be decoded: (image_id, reason).
    pub failed: Vec<(String, String)>,
    /// Wall time of the run's embedding work.
    pub seconds: f64,
    /// The parts before and after the run merged small ones, when it did (see
    /// [`embeddings::compact_parts`]).
    pub compaction: Option<embeddings::Compaction>,
    /// Vectors the search index covers, when the run readied one (None: not asked, one
    /// shard of a job, or too few vectors for an index: searches scan them exactly).
    pub indexed: Option<usize>,
    /// Wall time of readying the index (loading the vectors included).
    pub index_seconds: f64,
    /// Why the index, though built, could not be saved (searches of this process use it;
    /// the next process builds it again).
    pub index_unsaved: Option<String>,
}

/// What a model's provenance says about where its vectors were computed: the CPU, the
/// device asked for and, on the CPU, the kernel the dense layers ran (`avx512-f32`,
/// `amx-bf16`, `avx512-bf16`, `gemm`), which decides their last bits (bfloat16: more than that).
fn computed_on(clip: &Clip, device: &str) -> String {
    let kernel = clip.model.cpu_kernel().map_or(String::new(), |k| format!(", kernel: {}", k.name()));
    format!("{} (device: {device}{kernel})", slicetest_embed::cpu::describe())
}

/// The storage name of a model: a directory's name, or a HF id with `/` as `--`.
pub fn model_name(model: &str) -> String {
    let path = Path::new(model);
    let raw = if path.is_dir() {
        path.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    } else {
        None
    };
    let raw = raw.unwrap_or_else(|| model.replace('/', "--"));
    slicetest_datasets::sanitize_name(&raw, "model")
}

/// Checks, without network access, a model string that names a path: it must be a
/// directory holding a complete checkpoint. A Hugging Face id passes; it is resolved
/// (local cache, else the hub) when the run starts. The HTTP API calls this before it
/// accepts a job, so a mistyped directory is refused up front.
pub fn check_model_path(model: &str) -> Result<()> {
    let path = Path::new(model);
    let path_like = path.is_absolute()
        || model.starts_with("./")
        || model.starts_with("../")
        || model.starts_with('~')
        || path.exists();
    if model.trim().is_empty() {
        return Err(EngineError::InvalidArgument(
            "the model is empty: give a checkpoint directory or a Hugging Face id".into(),
        ));
    }
    if !path_like {
        return Ok(());
    }
    if !path.is_dir() {
        return Err(EngineError::InvalidArgument(format!(
            "model {model}: no such directory (a path is read on the machine that runs slicetest; it must hold {})",
            slicetest_embed::resolve::MODEL_FILES.join(", ")
        )));
    }
    resolve_model(model).map(drop).map_err(|e| EngineError::InvalidArgument(e.to_string()))
}

/// (index into `Pending`, preprocessed pixels) of the images of a chunk that decoded.
type Decoded = Vec<(usize, Vec<f32>)>;

struct Pending {
    ids: Vec<String>,
    shas: Vec<String>,
    uris: Vec<String>,
}

impl Engine {
    /// Embeds every image of a dataset (or of the subset `options.filter` and
    /// `options.limit` select) not embedded yet with the given model.
    ///
    /// Async only for the subset's query; the embedding itself runs on the calling thread
    /// (the CLI's, or a blocking thread of the HTTP server).
    pub async fn embed(&self, options: &EmbedOptions) -> Result<EmbedReport> {
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        self.workspace.latest(&dataset)?;
        let selection = self.embed_selection(&dataset, options.filter.as_deref(), options.limit).await?;
        let dir = resolve_model(&options.model)?;
        let selected = match selection {
            Some(frame) => Some(selected_ids(frame).await?),
            None => None,
        };
        let (device, dtype) = select_device(&options.device)?;
        let clip = Clip::load(&dir, &device, dtype)?;
        let record = EmbeddingModel {
            name: options.name.clone().unwrap_or_else(|| model_name(&options.model)),
            source: if Path::new(&options.model).is_dir() {
                dir.canonicalize().unwrap_or(dir.clone()).display().to_string()
            } else {
                options.model.clone()
            },
            fingerprint: fingerprint(&dir)?,
            dim: clip.model.config().projection_dim,
            preprocessing: format!(
                "CLIPImageProcessor: shortest side {} (Pillow bicubic), centre crop {}, CLIP mean/std",
                clip.preprocessor.shortest_edge, clip.preprocessor.crop
            ),
            slicetest_version: env!("CARGO_PKG_VERSION").into(),
            computed_on: Some(computed_on(&clip, &options.device)),
        };
        let layout = self.workspace.layout();
        // No lock: parts have names no other writer takes (see slicetest_datasets::parts),
        // so shards on other machines and other runs add theirs at the same time.
        embeddings::register_model(layout, &dataset, &record)?;
        let done = embeddings::embedded_images(layout, &dataset, &record.name)?;
        let version = self.pinned_version(&dataset, options.version)?;
        let (pending, already_embedded) = pending_images(layout, &version, &done, selected.as_ref(), options.shard)?;
        let counters = options.counters.clone().unwrap_or_default();
        counters.already_embedded.store(already_embedded, Ordering::Relaxed);
        counters.total.store(pending.ids.len(), Ordering::Relaxed);
        let started = Instant::now();
        let progress = bar(pending.ids.len() as u64, "embedding", options.progress);
        let (mut embedded, mut failed) = (0, Vec::new());
        let dim = record.dim;
        for start in (0..pending.ids.len()).step_by(options.chunk_size.max(1)) {
            let end = (start + options.chunk_size.max(1)).min(pending.ids.len());
            let (ok, bad) = self.decode_chunk(&clip, &pending, start..end);
            failed.extend(bad);
            let (rows, pixels): (Vec<usize>, Vec<Vec<f32>>) = ok.into_iter().unzip();
            let mut vectors = Vec::with_capacity(rows.len() * dim);
            for batch in pixels.chunks(options.batch_size.max(1)) {
                counters.check_cancelled()?;
                vectors.extend(clip.embed_pixels(batch)?.into_iter().flatten());
                progress.inc(batch.len() as u64);
                counters.done.fetch_add(batch.len(), Ordering::Relaxed);
            }
            if !rows.is_empty() {
                let ids: Vec<String> = rows.iter().map(|&i| pending.ids[i].clone()).collect();
                let shas: Vec<String> = rows.iter().map(|&i| pending.shas[i].clone()).collect();
                let part = embeddings::part_batch(&ids, &shas, vectors, dim)?;
                embeddings::append_part(layout, &dataset, &record.name, &part)?;
                embedded += rows.len();
                counters.embedded.store(embedded, Ordering::Relaxed);
            }
            progress.inc((end - start - rows.len()) as u64);
            counters.done.fetch_add(end - start - rows.len(), Ordering::Relaxed);
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        // The parts of one chunk each are merged into fewer, larger ones (readers open every
        // part). A shard leaves that to the unsharded run that follows its job, as it does
        // the index: merging while other shards still add parts would only be redone.
        let compaction = match options.shard.is_all() {
            true => {
                counters.stage.store(STAGE_MERGING, Ordering::Relaxed);
                let merging = spinner("merging parts", options.progress);
                let compaction = embeddings::compact_parts(layout, &dataset, &record.name);
                merging.finish_and_clear();
                Some(compaction?)
            }
            false => None,
        };
        let indexing = Instant::now();
        let (indexed, index_unsaved) = match options.index && options.shard.is_all() {
            true => match self.prepare_search_index(&dataset, &record.name, options.progress, &counters)? {
                IndexStatus::Exact => (None, None),
                IndexStatus::Ready { rows, unsaved } => (Some(rows), unsaved),
                IndexStatus::Stopped => return Err(EngineError::Cancelled { stored: embedded }),
            },
            false => (None, None),
        };
        Ok(EmbedReport {
            dataset,
            version: version.version,
            shard: options.shard,
            model: record,
            embedded,
            already_embedded,
            failed,
            seconds,
            compaction: compaction.filter(|c| c.parts_after < c.parts_before),
            indexed,
            index_seconds: indexing.elapsed().as_secs_f64(),
            index_unsaved,
        })
    }

    /// Loads the vectors of `model` for the latest images of `dataset` into the engine's
    /// vector store and readies their search index (see
    /// [`VectorSet::prepare_index`](slicetest_sql::vectors::VectorSet::prepare_index)),
    /// with a progress bar while the graph grows; a cancelled run stops it.
    fn prepare_search_index(
        &self,
        dataset: &str,
        model: &str,
        visible: bool,
        counters: &EmbedProgress,
    ) -> Result<IndexStatus> {
        let latest = self.workspace.latest(dataset)?;
        let set = self.vectors().vectors(&latest, model)?;
        let progress = bar(set.len() as u64, "indexing", visible);
        counters.stage.store(STAGE_INDEXING, Ordering::Relaxed);
        let status = set.prepare_index(&mut |linked| {
            progress.set_position(linked as u64);
            counters.linked.store(linked, Ordering::Relaxed);
            match counters.cancelled.load(Ordering::Relaxed) {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        });
        progress.finish_and_clear();
        Ok(status)
    }

    /// The names of the embeddings stored for `dataset`, sorted (empty: not embedded yet).
    pub fn embedding_models(&self, dataset: &str) -> Result<Vec<String>> {
        Ok(embeddings::model_names(self.workspace.layout(), dataset)?)
    }

    /// The subset of `dataset`'s images an embed run covers, planned but not run:
    /// `image_id`s of the latest version where `filter` holds, by image_id, the first
    /// `limit`. None when neither is given (every image). A predicate that does not parse,
    /// names an unknown column or is not boolean is an error here, before anything runs.
    pub async fn embed_selection(
        &self,
        dataset: &str,
        filter: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Option<DataFrame>> {
        if filter.is_none() && limit.is_none() {
            return Ok(None);
        }
        if limit == Some(0) {
            return Err(EngineError::InvalidArgument("--limit must be at least 1".into()));
        }
        let ctx = self.context().await?;
        let mut frame = ctx.table(TableReference::partial(dataset, "images")).await?;
        if let Some(filter) = filter.map(str::trim) {
            let bad = |e: datafusion::error::DataFusionError| {
                EngineError::InvalidArgument(format!(
                    "--where {filter:?} is not a boolean SQL predicate over {dataset}.images: {}",
                    without_kind(&e.strip_backtrace())
                ))
            };
            if filter.is_empty() {
                return Err(EngineError::InvalidArgument(
                    "--where is empty: give a predicate such as split = 'test'".into(),
                ));
            }
            let predicate = frame.parse_sql_expr(filter).map_err(bad)?;
            frame = frame.filter(predicate).map_err(bad)?;
        }
        let frame = frame.select(vec![col("image_id")])?.sort(vec![col("image_id").sort(true, false)])?;
        Ok(Some(if limit.is_some() { frame.limit(0, limit)? } else { frame }))
    }

    /// Version `version` of `dataset` (None: the latest).
    pub(crate) fn pinned_version(&self, dataset: &str, version: Option<u64>) -> Result<DatasetVersion> {
        let Some(v) = version else { return Ok(self.workspace.latest(dataset)?) };
        let info = self.workspace.dataset(dataset)?;
        info.versions.iter().find(|d| d.version == v).cloned().ok_or_else(|| {
            let known: Vec<String> = info.versions.iter().map(|d| d.version.to_string()).collect();
            EngineError::InvalidArgument(format!(
                "dataset {dataset} has no version {v}; its versions are {}",
                known.join(", ")
            ))
        })
    }

    /// Decodes and preprocesses images `range` of `pending` in parallel: (index, pixels)
    /// of those that decode, (image_id, reason) of those that don't.
    fn decode_chunk(
        &self,
        clip: &Clip,
        pending: &Pending,
        range: std::ops::Range<usize>,
    ) -> (Decoded, Vec<(String, String)>) {
        let layout = self.workspace.layout();
        range.into_par_iter().partition_map(|i| {
            let path = layout.resolve_uri(&pending.uris[i]);
            match crate::images::open_ingested_image(&path, &pending.shas[i]) {
                Ok(image) => Either::Left((i, clip.preprocessor.pixels(&image))),
                Err(e) => Either::Right((pending.ids[i].clone(), e.to_string())),
            }
        })
    }
}

/// The images of `version` in `shard` not in `done` as they are now (a changed file is
/// embedded again), only those in `selected` when given, and how many of those are done.
fn pending_images(
    layout: &WorkspaceLayout,
    version: &DatasetVersion,
    done: &HashSet<(String, String)>,
    selected: Option<&HashSet<String>>,
    shard: Shard,
) -> Result<(Pending, usize)> {
    let batch = read_image_columns(layout, version, &["image_id", "sha256", "uri"])?;
    let column = |name: &str| cast(batch.column_by_name(name).expect("core column"), &DataType::Utf8);
    let (ids, shas, uris) = (column("image_id")?, column("sha256")?, column("uri")?);
    let (ids, shas, uris) = (ids.as_string::<i32>(), shas.as_string::<i32>(), uris.as_string::<i32>());
    let mut pending = Pending { ids: Vec::new(), shas: Vec::new(), uris: Vec::new() };
    let is_done = |i: usize| done.contains(&(ids.value(i).to_string(), shas.value(i).to_string()));
    let in_subset = |i: &usize| selected.is_none_or(|s| s.contains(ids.value(*i))) && shard.contains(ids.value(*i));
    let mut already = 0;
    for i in (0..ids.len()).filter(in_subset) {
        if is_done(i) {
            already += 1;
            continue;
        }
        pending.ids.push(ids.value(i).to_string());
        pending.shas.push(shas.value(i).to_string());
        pending.uris.push(uris.value(i).to_string());
    }
    Ok((pending, already))
}

/// DataFusion's message without the kind it starts with ("Error during planning: ", …):
/// the predicate's error already says what it is about.
fn without_kind(message: &str) -> &str {
    ["Error during planning: ", "Schema error: ", "SQL error: "]
        .iter()
        .find_map(|kind| message.strip_prefix(kind))
        .unwrap_or(message)
}

/// Runs a selection planned by [`Engine::embed_selection`].
async fn selected_ids(frame: DataFrame) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for batch in frame.collect().await? {
        let column = cast(batch.column(0), &DataType::Utf8)?;
        let column = column.as_string::<i32>();
        ids.extend((0..column.len()).filter(|&i| column.is_valid(i)).map(|i| column.value(i).to_string()));
    }
    Ok(ids)
}

impl From<slicetest_embed::EmbedError> for EngineError {
    fn from(e: slicetest_embed::EmbedError) -> Self {
        EngineError::Embed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reports_its_phases_in_order() {
        let progress = EmbedProgress::default();
        assert_eq!((progress.phase(), progress.linked()), ("loading", None));
        progress.total.store(10, Ordering::Relaxed);
        assert_eq!((progress.phase(), progress.linked()), ("embedding", None));
        progress.stage.store(STAGE_MERGING, Ordering::Relaxed);
        assert_eq!((progress.phase(), progress.linked()), ("merging", None));
        progress.stage.store(STAGE_INDEXING, Ordering::Relaxed);
        progress.linked.store(7, Ordering::Relaxed);
        assert_eq!((progress.phase(), progress.linked()), ("indexing", Some(7)));
    }
}
