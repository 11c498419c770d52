//! `slicetest embed`: every image of a dataset through CLIP's vision tower, stored as
//! `datasets/<ds>/embeddings/<model>/part-*.parquet` (see `slicetest_datasets::embeddings`).
//!
//! Images are decoded and preprocessed in parallel (rayon) a chunk at a time, the chunk
//! goes through the model in batches, and the chunk's vectors are appended as one part.
//! Images already embedded with their current content (image_id + sha256) are skipped, so
//! a second run only embeds what is new or changed and a killed run resumes after its last
//! finished chunk.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use rayon::iter::Either;
use rayon::prelude::*;
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_datasets::progress::bar;
use slicetest_datasets::version::read_image_columns;
use slicetest_embed::{Clip, fingerprint, resolve_model, select_device};

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
}

/// What an embed run did.
#[derive(Debug, Clone)]
pub struct EmbedReport {
    /// The dataset.
    pub dataset: String,
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
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// (index into `Pending`, preprocessed pixels) of the images of a chunk that decoded.
type Decoded = Vec<(usize, Vec<f32>)>;

struct Pending {
    ids: Vec<String>,
    shas: Vec<String>,
    uris: Vec<String>,
}

impl Engine {
    /// Embeds every image of a dataset not embedded yet with the given model.
    pub fn embed(&self, options: &EmbedOptions) -> Result<EmbedReport> {
        let dir = resolve_model(&options.model)?;
        let (device, dtype) = select_device(&options.device)?;
        let clip = Clip::load(&dir, &device, dtype)?;
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
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
        };
        let layout = self.workspace.layout();
        let _lock = self.workspace.lock()?;
        embeddings::register_model(layout, &dataset, &record)?;
        let done = embeddings::embedded_images(&embeddings::read_parts(layout, &dataset, &record.name)?);
        let (pending, already_embedded) = self.pending_images(&dataset, &done)?;
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
                vectors.extend(clip.embed_pixels(batch)?.into_iter().flatten());
                progress.inc(batch.len() as u64);
            }
            if !rows.is_empty() {
                let ids: Vec<String> = rows.iter().map(|&i| pending.ids[i].clone()).collect();
                let shas: Vec<String> = rows.iter().map(|&i| pending.shas[i].clone()).collect();
                let part = embeddings::part_batch(&ids, &shas, vectors, dim)?;
                embeddings::append_part(layout, &dataset, &record.name, &part)?;
                embedded += rows.len();
            }
            progress.inc((end - start - rows.len()) as u64);
        }
        progress.finish_and_clear();
        Ok(EmbedReport {
            dataset,
            model: record,
            embedded,
            already_embedded,
            failed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The images of the dataset's latest version not in `done` as they are now (a changed
    /// file is embedded again), and how many are done.
    fn pending_images(&self, dataset: &str, done: &HashSet<(String, String)>) -> Result<(Pending, usize)> {
        let info = self.workspace.dataset(dataset)?;
        let latest = info.latest().expect("listed datasets have a version");
        let batch = read_image_columns(self.workspace.layout(), latest, &["image_id", "sha256", "uri"])?;
        let column = |name: &str| cast(batch.column_by_name(name).expect("core column"), &DataType::Utf8);
        let (ids, shas, uris) = (column("image_id")?, column("sha256")?, column("uri")?);
        let (ids, shas, uris) = (ids.as_string::<i32>(), shas.as_string::<i32>(), uris.as_string::<i32>());
        let mut pending = Pending { ids: Vec::new(), shas: Vec::new(), uris: Vec::new() };
        let is_done = |i: usize| done.contains(&(ids.value(i).to_string(), shas.value(i).to_string()));
        for i in (0..ids.len()).filter(|&i| !is_done(i)) {
            pending.ids.push(ids.value(i).to_string());
            pending.shas.push(shas.value(i).to_string());
            pending.uris.push(uris.value(i).to_string());
        }
        let already = ids.len() - pending.ids.len();
        Ok((pending, already))
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
            match slicetest_embed::open_image(&path) {
                Ok(image) => Either::Left((i, clip.preprocessor.pixels(&image))),
                Err(e) => Either::Right((pending.ids[i].clone(), e.to_string())),
            }
        })
    }
}

impl From<slicetest_embed::EmbedError> for EngineError {
    fn from(e: slicetest_embed::EmbedError) -> Self {
        EngineError::Embed(e)
    }
}
