//! The vectors `slicetest embed` stored, in memory once per process: the engine owns one
//! [`VectorStore`], and every SQL session, `slicetest search` / `GET /search/…` and the
//! zero-shot tagger read through it.
//!
//! A set of vectors is kept per (dataset, model) together with what it was loaded from:
//! the dataset version and the embeddings' part files (name and size). A request that
//! finds the same version and parts reuses it; a new version (an ingest) or a new part (an
//! embed run) loads it again, so a long-lived server never answers from stale vectors, and
//! the replaced set is dropped. One request loads a set while the others asking for it
//! wait, so a cold server under load reads the Parquet once. CLIP checkpoints are kept by
//! (directory, fingerprint), and encoded sentences by (model, text), up to
//! [`TEXT_CACHE_ENTRIES`].
//!
//! A set large enough for the HNSW index ([`HNSW_MIN_ROWS`]) is searched through it once
//! the index is in memory, and scanned exactly until then: a search never waits minutes
//! for a build. `slicetest embed` readies the index ([`VectorSet::prepare_index`]); a
//! long-lived process (the server: [`VectorStore::with_background_indexing`]) also readies
//! it on a thread of its own at the first search that finds it missing — loading the
//! saved graph, extending it or building it. A one-shot command does not: for one query
//! an exact scan (about 0.1 s over a million vectors) costs less than loading the graph.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type};
use datafusion::error::{DataFusionError, Result};
use slicetest_datasets::embeddings::{self, EmbeddingModel, StoredModel};
use slicetest_datasets::parts::StoredPart;
use slicetest_datasets::version::{pairs_hash, read_image_columns};
use slicetest_datasets::{DatasetVersion, WorkspaceLayout};
use slicetest_embed::hnsw::{HnswIndex, HnswParams, at_low_priority, matrix_buffer};
use slicetest_embed::index::exact_top_k;
use slicetest_embed::{Clip, fingerprint, resolve_model};

use crate::error::SqlError;

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Collections at least this large are searched through the HNSW index; smaller ones by
/// an exact scan, which is then faster and always exact. `SLICETEST_HNSW_MIN_ROWS`
/// overrides it (tests use a small value).
pub const HNSW_MIN_ROWS: usize = 50_000;

fn hnsw_min_rows() -> usize {
    std::env::var("SLICETEST_HNSW_MIN_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(HNSW_MIN_ROWS)
}

/// One model's vectors of the current images of a dataset, in memory.
#[derive(Debug)]
pub struct VectorSet {
    /// Which model made them.
    pub model: EmbeddingModel,
    ids: Vec<String>,
    shas: Vec<String>,
    /// Where each image is (the `uri` column), for search results.
    uris: Vec<String>,
    matrix: Vec<f32>,
    row_of: HashMap<String, u32>,
    /// Searched through the HNSW index from this many vectors ([`HNSW_MIN_ROWS`] or
    /// `SLICETEST_HNSW_MIN_ROWS` when the set was loaded); exactly below.
    index_from: usize,
    /// Where the HNSW index of these embeddings is saved.
    index_dir: std::path::PathBuf,
    /// The index once ready, with why it could not be saved (if it could not).
    index: OnceLock<(HnswIndex, Option<String>)>,
    /// Held while the index is loaded or built: one caller builds it, the others wait
    /// for it ([`VectorSet::prepare_index`]); searches never take it. A build that was
    /// stopped leaves `index` unset for the next caller.
    building: Mutex<()>,
    /// Rows in the graph of the build under way, for [`VectorSet::index_state`].
    linked: AtomicUsize,
    /// Whether a search that finds no index starts readying it on a thread (a server).
    index_in_background: bool,
    /// Set while a background thread readies the index: one at a time.
    background: AtomicBool,
    /// Set when the store replaced this set by a newer one or shut down: a background
    /// build of it stops at its next batch.
    retired: AtomicBool,
    /// What the set was loaded from.
    source: SetSource,
}

impl VectorSet {
    /// Every (image_id, sha256, vector), in storage order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &[f32])> {
        let dim = self.model.dim.max(1);
        self.ids
            .iter()
            .zip(&self.shas)
            .zip(self.matrix.chunks_exact(dim))
            .map(|((id, sha), v)| (id.as_str(), sha.as_str(), v))
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.model.dim
    }

    /// Where an image of the set is (its `uri`), if it has a vector.
    pub fn uri(&self, image_id: &str) -> Option<&str> {
        self.row_of.get(image_id).map(|&r| self.uris[r as usize].as_str())
    }

    /// The vector of an image, if it has one.
    pub fn vector(&self, image_id: &str) -> Option<&[f32]> {
        self.row_of.get(image_id).map(|&r| &self.matrix[r as usize * self.dim()..][..self.dim()])
    }

    /// Vectors in the set.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held: the vectors, the ids, hashes and uris, and the id → row map.
    pub fn resident_bytes(&self) -> usize {
        let strings: usize =
            self.ids.iter().chain(&self.shas).chain(&self.uris).map(|s| s.capacity() + size_of::<String>()).sum();
        let map = self.row_of.capacity() * (size_of::<String>() + size_of::<u32>() + 8)
            + self.ids.iter().map(String::len).sum::<usize>();
        self.matrix.capacity() * size_of::<f32>() + strings + map
    }

    /// The k best (image_id, score) for `query`: exact below [`HNSW_MIN_ROWS`] vectors,
    /// through the HNSW index above once it is in memory, exact until then (see the module
    /// docs; with background indexing on, this search starts readying it).
    pub fn search(self: &Arc<Self>, query: &[f32], k: usize) -> Vec<(&str, f32)> {
        let index = match self.len() < self.index_from {
            true => None,
            false => self.index.get().map(|ready| &ready.0),
        };
        if index.is_none() {
            self.warm();
        }
        let hits = match index {
            Some(index) => index.search(&self.matrix, query, k),
            None => exact_top_k(&self.matrix, self.dim(), query, k, None),
        };
        hits.into_iter().map(|(r, s)| (self.ids[r as usize].as_str(), s)).collect()
    }

    /// Starts readying a missing index in the background when this set is large enough
    /// to be searched through one and was loaded by a server (background indexing on);
    /// else nothing. A search does it; `slicetest serve --warm` does it ahead of any.
    pub fn warm(self: &Arc<Self>) {
        if self.len() >= self.index_from && self.index_in_background && self.index.get().is_none() {
            self.ready_index_in_background();
        }
    }

    /// A key over the first `rows` (image_id, sha256) pairs.
    fn key(&self, rows: usize) -> String {
        pairs_hash(self.ids.iter().zip(&self.shas).take(rows).map(|(id, sha)| (id.as_str(), sha.as_str())))
    }

    /// Readies this set's searches ahead of the first one (`slicetest embed` calls it when
    /// it is done): when the set is large enough to be searched through the HNSW index,
    /// the index is loaded, extended or built, and saved, calling `progress(rows linked)`
    /// (of [`VectorSet::len`]) while the graph grows; when `progress` breaks, the build
    /// stops and nothing is kept ([`IndexStatus::Stopped`]).
    pub fn prepare_index(&self, progress: &mut dyn FnMut(usize) -> ControlFlow<()>) -> IndexStatus {
        if self.len() < self.index_from {
            return IndexStatus::Exact;
        }
        match self.index_reporting(progress) {
            Some((index, unsaved)) => IndexStatus::Ready { rows: index.rows(), unsaved: unsaved.clone() },
            None => IndexStatus::Stopped,
        }
    }

    /// Starts [`VectorSet::prepare_index`] on a thread of its own unless one runs: it
    /// loads, extends or builds the index while searches scan exactly, on threads of lower
    /// priority ([`at_low_priority`]), and stops when the set is retired ([`VectorStore`]
    /// replaced it or shut down). A stopped or failed start leaves it to the next search.
    fn ready_index_in_background(self: &Arc<Self>) {
        if self.retired.load(Ordering::Relaxed) || self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let set = Arc::clone(self);
        let started = std::thread::Builder::new().name("search-index".into()).spawn(move || {
            let started = std::time::Instant::now();
            // At a lower priority: a build takes the cores for minutes, and the server's
            // requests (exact scans meanwhile) come first.
            let status = at_low_priority(|| {
                set.prepare_index(&mut |_| match set.retired.load(Ordering::Relaxed) {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                })
            });
            let (model, seconds) = (&set.model.name, started.elapsed().as_secs_f64());
            match status {
                IndexStatus::Ready { rows, .. } => tracing::info!(%model, rows, seconds, "search index ready"),
                IndexStatus::Stopped => tracing::info!(%model, seconds, "search index build stopped"),
                IndexStatus::Exact => {}
            }
            set.background.store(false, Ordering::Release);
        });
        if let Err(e) = started {
            tracing::warn!(model = %self.model.name, "could not start building the search index: {e}");
            self.background.store(false, Ordering::Release);
        }
    }

    /// Where this set's search index stands (see [`IndexState`]).
    pub fn index_state(&self) -> IndexState {
        if self.len() < self.index_from {
            return IndexState::Exact;
        }
        if let Some((index, unsaved)) = self.index.get() {
            return IndexState::Ready { rows: index.rows(), unsaved: unsaved.clone() };
        }
        match self.building.try_lock() {
            Err(TryLockError::WouldBlock) => IndexState::Building { linked: self.linked.load(Ordering::Relaxed) },
            // Checked again under the lock: it may have become ready in between.
            _ => match self.index.get() {
                Some((index, unsaved)) => IndexState::Ready { rows: index.rows(), unsaved: unsaved.clone() },
                None => IndexState::Missing,
            },
        }
    }

    /// Stops a background build of this set at its next batch (the set is stale, or the
    /// process is shutting down).
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// The HNSW index: the saved one if it covers exactly these rows, extended if it
    /// covers a prefix of them (new images were embedded), else built; saved when changed.
    /// With it, why saving it failed (it is kept in memory all the same: a full disk must
    /// not stop searches). None when `progress` stopped the build. Waits for another
    /// caller readying it.
    fn index_reporting(
        &self,
        progress: &mut dyn FnMut(usize) -> ControlFlow<()>,
    ) -> Option<&(HnswIndex, Option<String>)> {
        if let Some(ready) = self.index.get() {
            return Some(ready);
        }
        let _building = self.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ready) = self.index.get() {
            return Some(ready);
        }
        let (dim, key) = (self.dim(), self.key(self.len()));
        let saved = match HnswIndex::saved_record(&self.index_dir) {
            Some(r) if r.rows <= self.len() && r.key == self.key(r.rows) => HnswIndex::load(&self.index_dir).ok(),
            _ => None,
        };
        // A damaged saved graph is a cache miss like any other: rebuilt.
        let mut index = saved
            .filter(|index| index.dim() == dim)
            .unwrap_or_else(|| HnswIndex::build(&[], dim, HnswParams::default()));
        let mut unsaved = None;
        if index.rows() < self.len() {
            self.linked.store(index.rows(), Ordering::Relaxed);
            let mut progress = |linked: usize| {
                self.linked.store(linked, Ordering::Relaxed);
                progress(linked)
            };
            index.extend_reporting(&self.matrix, &mut progress).continue_value()?;
            if let Err(e) = index.save(&self.index_dir, &key) {
                tracing::warn!(model = %self.model.name, "the search index is used but could not be saved: {e}");
                unsaved = Some(e.to_string());
            }
        }
        Some(self.index.get_or_init(|| (index, unsaved)))
    }
}

/// How [`VectorSet::prepare_index`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexStatus {
    /// Fewer vectors than [`HNSW_MIN_ROWS`]: searches scan them exactly, with no index.
    Exact,
    /// The index covers `rows` vectors and is in memory. `unsaved`: why it could not be
    /// saved (the next process builds it again).
    Ready {
        /// Vectors in the graph.
        rows: usize,
        /// Why saving failed, if it did.
        unsaved: Option<String>,
    },
    /// The progress callback stopped the build; nothing was kept.
    Stopped,
}

/// Where a vector set's search index stands in this process ([`VectorSet::index_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    /// Fewer vectors than [`HNSW_MIN_ROWS`]: searches scan them exactly, with no index.
    Exact,
    /// Not in memory and nobody readying it: searches scan exactly (in a server, the next
    /// search starts readying it).
    Missing,
    /// Being loaded, extended or built (`linked` vectors in the graph so far); searches
    /// scan exactly meanwhile.
    Building {
        /// Vectors linked into the graph so far.
        linked: usize,
    },
    /// In memory: searches go through it.
    Ready {
        /// Vectors in the graph.
        rows: usize,
        /// Why saving it failed, if it did.
        unsaved: Option<String>,
    },
}

/// What a vector set was loaded from: when either changes, the set is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetSource {
    /// The dataset version whose images the vectors belong to.
    version: u64,
    /// The embeddings' part files, (name, bytes), in order: embed runs only add parts.
    parts: Vec<(String, u64)>,
}

impl SetSource {
    fn of(layout: &WorkspaceLayout, dataset: &DatasetVersion, model: &str) -> Result<SetSource> {
        let files = embeddings::part_files(layout, &dataset.dataset, model).map_err(external)?;
        Ok(SetSource::listed(dataset.version, &files))
    }

    /// The source of the vectors of dataset version `version` in the parts `files`, as
    /// listed by the caller.
    fn listed(version: u64, files: &[StoredPart]) -> SetSource {
        SetSource { version, parts: files.iter().map(|part| (part.name.file_name(), part.size)).collect() }
    }
}

/// Sentences kept encoded (per model); beyond this the cache starts over.
pub const TEXT_CACHE_ENTRIES: usize = 4096;

/// (model name, text): a sentence is encoded once per model.
type TextKey = (String, String);

/// One (dataset, model)'s set: `None` until loaded; its lock is held while loading.
type Slot = Arc<Mutex<Option<Arc<VectorSet>>>>;

/// Every vector set, CLIP checkpoint and encoded sentence of one workspace, loaded once
/// and shared (see the module docs).
#[derive(Debug)]
pub struct VectorStore {
    layout: WorkspaceLayout,
    sets: Mutex<HashMap<(String, String), Slot>>,
    /// By (model source, fingerprint).
    towers: Mutex<HashMap<(String, String), Arc<Clip>>>,
    texts: Mutex<HashMap<TextKey, Arc<Vec<f32>>>>,
    loads: std::sync::atomic::AtomicUsize,
    /// Whether the sets' searches ready a missing index in the background.
    index_in_background: bool,
}

impl VectorStore {
    /// An empty store over the workspace at `layout`.
    pub fn new(layout: WorkspaceLayout) -> Self {
        VectorStore {
            layout,
            sets: Mutex::default(),
            towers: Mutex::default(),
            texts: Mutex::default(),
            loads: Default::default(),
            index_in_background: false,
        }
    }

    /// The store of a long-lived process: a search that finds a set's HNSW index missing
    /// starts readying it on a thread of its own (and scans exactly meanwhile).
    pub fn with_background_indexing(mut self) -> Self {
        self.index_in_background = true;
        self
    }

    /// Stops every background index build at its next batch (a server shutting down);
    /// what was saved before stays.
    pub fn stop_background_indexing(&self) {
        for set in self.loaded_sets() {
            set.retire();
        }
    }

    fn loaded_sets(&self) -> Vec<Arc<VectorSet>> {
        let slots: Vec<Slot> = self.sets.lock().expect("not poisoned").values().cloned().collect();
        slots.iter().filter_map(|slot| slot.lock().expect("not poisoned").clone()).collect()
    }

    /// Where the search index of `model`'s vectors of `dataset` stands, if they are
    /// loaded and current (None: not loaded yet, being loaded, or stale — the next search
    /// loads them).
    pub fn index_state(&self, dataset: &DatasetVersion, model: &str) -> Result<Option<(usize, IndexState)>> {
        let slot = self.sets.lock().expect("not poisoned").get(&(dataset.dataset.clone(), model.to_string())).cloned();
        let Some(slot) = slot else { return Ok(None) };
        // A slot is locked while its set loads (seconds at a million vectors): not loaded yet.
        let set = match slot.try_lock() {
            Ok(set) => set.clone(),
            Err(TryLockError::Poisoned(_) | TryLockError::WouldBlock) => None,
        };
        match set {
            Some(set) if set.source == SetSource::of(&self.layout, dataset, model)? => {
                Ok(Some((set.len(), set.index_state())))
            }
            _ => Ok(None),
        }
    }

    /// The workspace layout.
    pub fn layout(&self) -> &WorkspaceLayout {
        &self.layout
    }

    /// The vectors of `model` for the current images of `dataset`: the loaded set if it
    /// is still current, else loaded from the embeddings' Parquet parts.
    pub fn vectors(&self, dataset: &DatasetVersion, model: &str) -> Result<Arc<VectorSet>> {
        self.vectors_from(dataset, model, SetSource::of(&self.layout, dataset, model)?)
    }

    /// [`VectorStore::vectors`] of a model whose parts the caller listed a moment ago
    /// ([`embeddings::stored_models`]), without listing them again.
    pub fn stored_vectors(&self, dataset: &DatasetVersion, model: &StoredModel) -> Result<Arc<VectorSet>> {
        self.vectors_from(dataset, &model.name, SetSource::listed(dataset.version, &model.parts))
    }

    /// The set of `model` of `dataset` in memory, if it holds the vectors of `version` in
    /// the parts the caller listed: a warm search needs nothing else (no manifest read,
    /// on a bucket a round trip). None: not loaded, or stale (load it with
    /// [`VectorStore::stored_vectors`]).
    pub fn loaded_vectors(&self, dataset: &str, version: u64, model: &StoredModel) -> Option<Arc<VectorSet>> {
        let slot = self.sets.lock().expect("not poisoned").get(&(dataset.to_string(), model.name.clone())).cloned()?;
        // A slot is locked while its set loads: not loaded yet, for this caller.
        let set = slot.try_lock().ok()?.clone()?;
        (set.source == SetSource::listed(version, &model.parts)).then_some(set)
    }

    fn vectors_from(&self, dataset: &DatasetVersion, model: &str, source: SetSource) -> Result<Arc<VectorSet>> {
        let slot = self
            .sets
            .lock()
            .expect("not poisoned")
            .entry((dataset.dataset.clone(), model.to_string()))
            .or_default()
            .clone();
        let mut slot = slot.lock().expect("not poisoned");
        if let Some(set) = slot.as_ref()
            && set.source == source
        {
            return Ok(set.clone());
        }
        // Drop the stale set first, so that memory holds one copy while the new one loads
        // (unless a request still uses the old one), and stop its index build.
        if let Some(stale) = slot.take() {
            stale.retire();
        }
        let set = Arc::new(self.load(dataset, model, source)?);
        self.loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some(set.clone());
        Ok(set)
    }

    /// How many times a vector set was read from Parquet (tests and benchmarks check that
    /// requests reuse what is loaded).
    pub fn loads(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the loaded vector sets hold (vectors, ids, hashes and uris; the HNSW
    /// indexes are on top: the graph, about `M · 2 · 4` bytes per vector, and once
    /// searched the f16 copy of the vectors, 2 bytes per value).
    pub fn resident_bytes(&self) -> usize {
        self.loaded_sets().iter().map(|set| set.resident_bytes()).sum()
    }

    fn load(&self, dataset: &DatasetVersion, name: &str, source: SetSource) -> Result<VectorSet> {
        let model = embeddings::read_model(&self.layout, &dataset.dataset, name)
            .map_err(external)?
            .ok_or_else(|| SqlError::UnknownModel {
                dataset: dataset.dataset.clone(),
                model: name.to_string(),
                models: Vec::new(),
            })
            .map_err(SqlError::into_datafusion)?;
        let current = read_image_columns(&self.layout, dataset, &["image_id", "sha256", "uri"]).map_err(external)?;
        // Columns come in the file's order: looked up by name.
        let column = |name: &str| cast(current.column_by_name(name).expect("core column"), &DataType::Utf8);
        let (ids, shas, uris) = (column("image_id")?, column("sha256")?, column("uri")?);
        let (ids, shas, uris) = (ids.as_string::<i32>(), shas.as_string::<i32>(), uris.as_string::<i32>());
        let current: HashMap<&str, (&str, &str)> =
            (0..ids.len()).map(|i| (ids.value(i), (shas.value(i), uris.value(i)))).collect();
        let mut set = VectorSet {
            model,
            ids: Vec::new(),
            shas: Vec::new(),
            uris: Vec::new(),
            matrix: Vec::new(),
            row_of: HashMap::new(),
            index_from: hnsw_min_rows(),
            index_dir: self.layout.embeddings_dir(&dataset.dataset, name).join("index"),
            index: OnceLock::new(),
            building: Mutex::new(()),
            linked: AtomicUsize::new(0),
            index_in_background: self.index_in_background,
            background: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            source,
        };
        let parts = embeddings::read_parts(&self.layout, &dataset.dataset, name).map_err(external)?;
        // At most one row per current image: the buffer is never outgrown.
        let rows = parts.iter().map(|b| b.num_rows()).sum::<usize>().min(current.len());
        set.matrix = matrix_buffer(rows * set.model.dim);
        for batch in parts {
            let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            let vectors = batch.column(2).as_fixed_size_list();
            let values = vectors.values().as_primitive::<Float32Type>();
            for i in 0..batch.num_rows() {
                // Only vectors of the image as it is now; where two parts hold the same
                // image and content (two writers embedded it at once), the first part wins.
                let Some(&(sha, uri)) = current.get(ids.value(i)) else { continue };
                if sha != shas.value(i) || set.row_of.contains_key(ids.value(i)) {
                    continue;
                }
                let vector = &values.values()[i * set.model.dim..][..set.model.dim];
                set.row_of.insert(ids.value(i).to_string(), set.ids.len() as u32);
                set.ids.push(ids.value(i).to_string());
                set.shas.push(shas.value(i).to_string());
                set.uris.push(uri.to_string());
                set.matrix.extend_from_slice(vector);
            }
        }
        Ok(set)
    }

    /// The normalised text embedding of `text` under the model of `set`.
    pub fn text_vector(&self, set: &VectorSet, text: &str) -> Result<Arc<Vec<f32>>> {
        let key = (set.model.name.clone(), text.to_string());
        if let Some(v) = self.texts.lock().expect("not poisoned").get(&key) {
            return Ok(v.clone());
        }
        let tower = self.tower(&set.model)?;
        let vector = Arc::new(tower.embed_texts(&[text]).map_err(external)?.remove(0));
        let mut texts = self.texts.lock().expect("not poisoned");
        if texts.len() >= TEXT_CACHE_ENTRIES {
            texts.clear();
        }
        texts.insert(key, vector.clone());
        Ok(vector)
    }

    /// The normalised text embeddings of `texts` under the model of `set`: the cached
    /// ones from the cache, the others in batches of 64 through one tower.
    pub fn text_vectors(&self, set: &VectorSet, texts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>> {
        let key = |text: &str| (set.model.name.clone(), text.to_string());
        let mut found: Vec<Option<Arc<Vec<f32>>>> = {
            let cache = self.texts.lock().expect("not poisoned");
            texts.iter().map(|t| cache.get(&key(t)).cloned()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let tower = self.tower(&set.model)?;
            for batch in missing.chunks(64) {
                let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
                let vectors = tower.embed_texts(&batch_texts).map_err(external)?;
                let mut cache = self.texts.lock().expect("not poisoned");
                for (&i, vector) in batch.iter().zip(vectors) {
                    let vector = Arc::new(vector);
                    if cache.len() >= TEXT_CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(key(texts[i]), vector.clone());
                    found[i] = Some(vector);
                }
            }
        }
        Ok(found.into_iter().map(|v| v.expect("every text encoded")).collect())
    }

    /// The normalised embedding of an image that is not in the dataset (a query image).
    pub fn image_vector(&self, set: &VectorSet, image: &image::DynamicImage) -> Result<Vec<f32>> {
        Ok(self.tower(&set.model)?.embed_images(std::slice::from_ref(image)).map_err(external)?.remove(0))
    }

    /// The CLIP checkpoint that made `model`'s vectors, loaded once per (source,
    /// fingerprint); the source is resolved only to load it, and a checkpoint there that is
    /// not the one that made the vectors is refused, never silently mixed in.
    fn tower(&self, model: &EmbeddingModel) -> Result<Arc<Clip>> {
        let key = (model.source.clone(), model.fingerprint.clone());
        if let Some(clip) = self.towers.lock().expect("not poisoned").get(&key) {
            return Ok(clip.clone());
        }
        let dir = resolve_model(&model.source).map_err(external)?;
        if fingerprint(&dir).map_err(external)? != model.fingerprint {
            return Err(SqlError::ModelChanged { dir, model: model.name.clone() }.into_datafusion());
        }
        let clip = Arc::new(Clip::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).map_err(external)?);
        self.towers.lock().expect("not poisoned").insert(key, clip.clone());
        Ok(clip)
    }
}

/// The vector functions' view of one SQL session: the engine's store, and the session's
/// default dataset (as it was when the session was built). A session resolves each model
/// once: its queries see one set of vectors, and `clip_similarity`, called once per batch,
/// lists no files after its first batch.
#[derive(Debug)]
pub struct VectorCatalog {
    store: Arc<VectorStore>,
    /// The default dataset's latest version (None: the workspace has no dataset yet).
    dataset: Option<DatasetVersion>,
    /// The sets this session resolved, by the model asked for (None: the only one).
    resolved: Mutex<HashMap<Option<String>, Arc<VectorSet>>>,
    /// The default dataset's embedding models and their parts, when the caller listed
    /// them already.
    models: Option<Vec<StoredModel>>,
}

impl VectorCatalog {
    /// The view of `store` with `dataset` as the default.
    pub fn new(store: Arc<VectorStore>, dataset: Option<DatasetVersion>) -> Self {
        VectorCatalog { store, dataset, resolved: Mutex::default(), models: None }
    }

    /// This catalog with the default dataset's embedding models and their parts as the
    /// caller listed them ([`embeddings::stored_models`]), instead of listing them again:
    /// its searches see those parts.
    pub fn with_models(mut self, models: Vec<StoredModel>) -> Self {
        self.models = Some(models);
        self
    }

    /// The store the vectors come from.
    pub fn store(&self) -> &Arc<VectorStore> {
        &self.store
    }

    /// The default dataset's version this catalog reads (None: no dataset yet).
    pub fn dataset_version(&self) -> Option<&DatasetVersion> {
        self.dataset.as_ref()
    }

    fn dataset(&self) -> Result<&DatasetVersion> {
        self.dataset.as_ref().ok_or_else(|| SqlError::NoDataset.into_datafusion())
    }

    /// The model to use: the one named, else the only one, else an error listing them.
    fn model_name(&self, requested: Option<&str>) -> Result<String> {
        let dataset = self.dataset()?;
        let names = match &self.models {
            Some(models) => models.iter().map(|model| model.name.clone()).collect(),
            None => embeddings::model_names(self.store.layout(), &dataset.dataset).map_err(external)?,
        };
        let error = match requested {
            Some(name) if names.iter().any(|n| n == name) => return Ok(name.to_string()),
            Some(name) => {
                SqlError::UnknownModel { dataset: dataset.dataset.clone(), model: name.to_string(), models: names }
            }
            None => match names.as_slice() {
                [only] => return Ok(only.clone()),
                [] => SqlError::NoEmbeddings { dataset: dataset.dataset.clone() },
                _ => SqlError::AmbiguousModel { dataset: dataset.dataset.clone(), models: names },
            },
        };
        Err(error.into_datafusion())
    }

    /// The vectors of `model` (default: the only model) of the default dataset.
    pub fn vectors(&self, model: Option<&str>) -> Result<Arc<VectorSet>> {
        let key = model.map(str::to_string);
        if let Some(set) = self.resolved.lock().expect("not poisoned").get(&key) {
            return Ok(set.clone());
        }
        let (dataset, name) = (self.dataset()?, self.model_name(model)?);
        let listed = self.models.iter().flatten().find(|model| model.name == name);
        let set = match listed {
            Some(model) => self.store.stored_vectors(dataset, model)?,
            None => self.store.vectors(dataset, &name)?,
        };
        self.resolved.lock().expect("not poisoned").insert(key, set.clone());
        Ok(set)
    }

    /// See [`VectorStore::text_vector`].
    pub fn text_vector(&self, set: &VectorSet, text: &str) -> Result<Arc<Vec<f32>>> {
        self.store.text_vector(set, text)
    }

    /// See [`VectorStore::text_vectors`].
    pub fn text_vectors(&self, set: &VectorSet, texts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>> {
        self.store.text_vectors(set, texts)
    }

    /// See [`VectorStore::image_vector`].
    pub fn image_vector(&self, set: &VectorSet, image: &image::DynamicImage) -> Result<Vec<f32>> {
        self.store.image_vector(set, image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of `rows` unit vectors of 8 dimensions, indexed from `index_from` rows, its
    /// index saved in `index_dir`, as a one-shot command loads it.
    fn set(rows: usize, index_from: usize, index_dir: std::path::PathBuf) -> Arc<VectorSet> {
        let dim = 8;
        let mut state = 7u64;
        let mut matrix = Vec::with_capacity(rows * dim);
        for _ in 0..rows {
            let row: Vec<f32> = (0..dim)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            matrix.extend(row.iter().map(|x| x / norm));
        }
        let ids: Vec<String> = (0..rows).map(|i| format!("img_{i:05}")).collect();
        Arc::new(VectorSet {
            model: EmbeddingModel {
                name: "clip".into(),
                source: "test".into(),
                fingerprint: "f".into(),
                dim,
                preprocessing: String::new(),
                slicetest_version: String::new(),
                computed_on: None,
            },
            shas: ids.iter().map(|id| format!("sha-{id}")).collect(),
            uris: ids.iter().map(|id| format!("{id}.jpg")).collect(),
            row_of: ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect(),
            ids,
            matrix,
            index_from,
            index_dir,
            index: OnceLock::new(),
            building: Mutex::new(()),
            linked: AtomicUsize::new(0),
            index_in_background: false,
            background: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            source: SetSource { version: 1, parts: Vec::new() },
        })
    }

    /// [`set`] as a server loads it: searches ready a missing index in the background.
    fn served_set(rows: usize, index_from: usize, index_dir: std::path::PathBuf) -> Arc<VectorSet> {
        let mut set = set(rows, index_from, index_dir);
        Arc::get_mut(&mut set).unwrap().index_in_background = true;
        set
    }

    /// Waits (up to a minute) until no background thread readies `set`'s index.
    fn wait_for_background(set: &VectorSet) {
        let started = std::time::Instant::now();
        while set.background.load(Ordering::Acquire) {
            assert!(started.elapsed().as_secs() < 60, "the background build never ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn ids(hits: Vec<(&str, f32)>) -> Vec<String> {
        hits.into_iter().map(|(id, _)| id.to_string()).collect()
    }

    fn exact(set: &VectorSet, query: &[f32], k: usize) -> Vec<String> {
        exact_top_k(&set.matrix, set.dim(), query, k, None)
            .into_iter()
            .map(|(r, _)| set.ids[r as usize].clone())
            .collect()
    }

    #[test]
    fn a_small_set_needs_no_index_and_a_large_one_is_indexed_and_saved() {
        let tmp = tempfile::tempdir().unwrap();
        let small = set(50, 51, tmp.path().join("small"));
        assert_eq!(small.prepare_index(&mut |_| ControlFlow::Continue(())), IndexStatus::Exact);
        assert!(!tmp.path().join("small").exists());

        let large = set(500, 100, tmp.path().join("index"));
        let mut linked = Vec::new();
        let status = large.prepare_index(&mut |rows| {
            linked.push(rows);
            ControlFlow::Continue(())
        });
        assert_eq!(status, IndexStatus::Ready { rows: 500, unsaved: None });
        assert_eq!(linked.last(), Some(&500));
        assert_eq!(HnswIndex::saved_record(&tmp.path().join("index")).unwrap().rows, 500);
        // Ready: the next call neither builds nor reports.
        let status = large.prepare_index(&mut |_| panic!("built twice"));
        assert_eq!(status, IndexStatus::Ready { rows: 500, unsaved: None });
    }

    #[test]
    fn a_stopped_build_keeps_nothing_and_a_one_shot_search_scans_exactly_without_building() {
        let tmp = tempfile::tempdir().unwrap();
        let set = set(2_000, 100, tmp.path().join("index"));
        let status = set.prepare_index(&mut |linked| match linked {
            ..1_000 => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        });
        assert_eq!(status, IndexStatus::Stopped);
        assert!(set.index.get().is_none() && !tmp.path().join("index").exists());
        assert_eq!(set.index_state(), IndexState::Missing);

        let query = &set.matrix[17 * set.dim()..][..set.dim()];
        assert_eq!(ids(set.search(query, 5)), exact(&set, query, 5));
        assert!(!set.background.load(Ordering::Acquire), "no background build in a one-shot process");
        assert!(set.index.get().is_none() && !tmp.path().join("index").exists(), "the search built nothing");
    }

    /// `serve --warm`: warming a served set readies its index with no search; warming a
    /// one-shot set, or one too small for an index, starts nothing.
    #[test]
    fn warming_a_served_set_readies_its_index_without_a_search() {
        let tmp = tempfile::tempdir().unwrap();
        let one_shot = set(2_000, 100, tmp.path().join("a"));
        one_shot.warm();
        let small = served_set(50, 100, tmp.path().join("b"));
        small.warm();
        assert!(!one_shot.background.load(Ordering::Acquire) && !small.background.load(Ordering::Acquire));
        assert_eq!((one_shot.index_state(), small.index_state()), (IndexState::Missing, IndexState::Exact));

        let served = served_set(2_000, 100, tmp.path().join("c"));
        served.warm();
        wait_for_background(&served);
        assert_eq!(served.index_state(), IndexState::Ready { rows: 2_000, unsaved: None });
        assert!(HnswIndex::saved_record(&tmp.path().join("c")).is_some());
        assert!(!tmp.path().join("a").exists() && !tmp.path().join("b").exists());
    }

    #[test]
    fn a_served_search_scans_exactly_while_the_index_builds_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let set = served_set(2_000, 100, tmp.path().join("index"));
        let query = &set.matrix[40 * set.dim()..][..set.dim()];

        // Held as an embedding job holds it while it builds: were the search to wait, it
        // would wait on this thread forever.
        let building = set.building.lock().unwrap();
        assert_eq!(ids(set.search(query, 5)), exact(&set, query, 5));
        assert!(set.background.load(Ordering::Acquire), "the search started a background build");
        assert_eq!(set.index_state(), IndexState::Building { linked: 0 });
        // A second search neither waits nor starts another.
        assert_eq!(ids(set.search(query, 5)), exact(&set, query, 5));
        assert!(set.index.get().is_none() && !tmp.path().join("index").exists(), "nothing built yet");
        drop(building);

        wait_for_background(&set);
        assert_eq!(set.index_state(), IndexState::Ready { rows: 2_000, unsaved: None });
        assert_eq!(HnswIndex::saved_record(&tmp.path().join("index")).unwrap().rows, 2_000);
        assert_eq!(ids(set.search(query, 5)), exact(&set, query, 5));

        // A new server over the same files loads the saved graph in the background.
        let reloaded = served_set(2_000, 100, tmp.path().join("index"));
        assert_eq!(reloaded.index_state(), IndexState::Missing);
        assert_eq!(ids(reloaded.search(query, 5)), exact(&set, query, 5));
        wait_for_background(&reloaded);
        assert_eq!(reloaded.index_state(), IndexState::Ready { rows: 2_000, unsaved: None });
    }

    #[test]
    fn a_retired_sets_background_build_stops_and_keeps_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let set = served_set(3_000, 100, tmp.path().join("index"));
        let query = &set.matrix[..set.dim()];
        let building = set.building.lock().unwrap();
        set.search(query, 5);
        // Replaced by a newer set (or the server stops) before the thread gets the lock.
        set.retire();
        drop(building);
        wait_for_background(&set);
        assert_eq!(set.index_state(), IndexState::Missing);
        assert!(!tmp.path().join("index").exists(), "a stopped build saves nothing");
        // And a retired set starts no build at all.
        assert_eq!(ids(set.search(query, 5)), exact(&set, query, 5));
        assert!(!set.background.load(Ordering::Acquire));
    }

    #[test]
    fn an_index_that_cannot_be_saved_is_used_and_the_failure_reported() {
        let tmp = tempfile::tempdir().unwrap();
        // Its directory would be under a file: saving fails as on a read-only or full disk.
        let blocker = tmp.path().join("not-a-directory");
        std::fs::write(&blocker, b"x").unwrap();
        let set = set(600, 100, blocker.join("index"));
        let IndexStatus::Ready { rows: 600, unsaved: Some(why) } =
            set.prepare_index(&mut |_| ControlFlow::Continue(()))
        else {
            panic!("expected a ready, unsaved index");
        };
        assert!(why.contains("not-a-directory"), "{why}");
        let query = &set.matrix[..set.dim()];
        let hits = set.search(query, 3);
        assert_eq!(hits.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>(), exact(&set, query, 3));
        let again = set.prepare_index(&mut |_| panic!("built twice"));
        assert_eq!(again, IndexStatus::Ready { rows: 600, unsaved: Some(why) });
    }
}
