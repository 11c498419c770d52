//! Vector search inside SQL, over the embeddings `slicetest embed` stored:
//!
//! - `text_search('<text>', k [, '<model>'])` and `image_search('<image_id>', k [, '<model>'])`
//!   are tables of (image_id, score), best first;
//! - `clip_similarity(image_id, '<text>')` scores rows, so a filtered query
//!   (`WHERE … ORDER BY clip_similarity(image_id, '…') DESC LIMIT k`) is an exact top-k of
//!   the filtered rows;
//! - `cosine_similarity(a, b)` compares any two float vectors.
//!
//! Vectors are those of the default dataset's current images (an image whose file changed
//! since it was embedded has no vector until it is embedded again). They are loaded on
//! first use and kept for the session; the text tower is loaded when text is first encoded.
//! `text_search` / `image_search` scan exactly below [`HNSW_MIN_ROWS`] vectors and use the
//! HNSW index (built, saved and extended on demand) above; `clip_similarity` is always exact.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::Expr;
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_datasets::version::{pairs_hash, read_image_columns};
use slicetest_datasets::{DatasetVersion, WorkspaceLayout};
use slicetest_embed::hnsw::{HnswIndex, HnswParams};
use slicetest_embed::index::{cosine, dot, exact_top_k};
use slicetest_embed::{Clip, fingerprint, resolve_model};

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
    matrix: Vec<f32>,
    row_of: HashMap<String, u32>,
    /// Where the HNSW index of these embeddings is saved.
    index_dir: std::path::PathBuf,
    index: OnceLock<std::result::Result<HnswIndex, String>>,
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

    /// The k best (image_id, score) for `query`: exact below [`HNSW_MIN_ROWS`] vectors,
    /// through the HNSW index above.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(&str, f32)>> {
        let hits = if self.len() < hnsw_min_rows() {
            exact_top_k(&self.matrix, self.dim(), query, k, None)
        } else {
            self.index()?.search(&self.matrix, query, k)
        };
        Ok(hits.into_iter().map(|(r, s)| (self.ids[r as usize].as_str(), s)).collect())
    }

    /// A key over the first `rows` (image_id, sha256) pairs.
    fn key(&self, rows: usize) -> String {
        pairs_hash(self.ids.iter().zip(&self.shas).take(rows).map(|(id, sha)| (id.as_str(), sha.as_str())))
    }

    /// The HNSW index: the saved one if it covers exactly these rows, extended if it
    /// covers a prefix of them (new images were embedded), else built; saved when changed.
    fn index(&self) -> Result<&HnswIndex> {
        let index = self.index.get_or_init(|| {
            let (dim, key) = (self.dim(), self.key(self.len()));
            let saved = match HnswIndex::saved_record(&self.index_dir) {
                Some(r) if r.rows <= self.len() && r.key == self.key(r.rows) => HnswIndex::load(&self.index_dir).ok(),
                _ => None,
            };
            // A damaged saved graph is a cache miss like any other: rebuilt.
            let mut index = saved
                .filter(|index| index.dim() == dim)
                .unwrap_or_else(|| HnswIndex::build(&[], dim, HnswParams::default()));
            if index.rows() < self.len() {
                index.extend(&self.matrix);
                index.save(&self.index_dir, &key).map_err(|e| e.to_string())?;
            }
            Ok(index)
        });
        index.as_ref().map_err(|e| DataFusionError::Execution(format!("vector index of {}: {e}", self.model.name)))
    }
}

/// (model name, text): a sentence is encoded once per model and session.
type TextKey = (String, String);

/// Everything the vector functions of one session share: loaded vector sets and text
/// towers, by model name.
#[derive(Debug)]
pub struct VectorCatalog {
    layout: WorkspaceLayout,
    /// The default dataset's latest version (None: the workspace has no dataset yet).
    dataset: Option<DatasetVersion>,
    sets: Mutex<HashMap<String, Arc<VectorSet>>>,
    towers: Mutex<HashMap<String, Arc<Clip>>>,
    texts: Mutex<HashMap<TextKey, Arc<Vec<f32>>>>,
}

impl VectorCatalog {
    /// The catalog over `dataset` (the session's default) in the workspace at `layout`.
    pub fn new(layout: WorkspaceLayout, dataset: Option<DatasetVersion>) -> Self {
        VectorCatalog { layout, dataset, sets: Mutex::default(), towers: Mutex::default(), texts: Mutex::default() }
    }

    fn dataset(&self) -> Result<&DatasetVersion> {
        match &self.dataset {
            Some(d) => Ok(d),
            None => plan_err!("no dataset to search: ingest one first"),
        }
    }

    /// The model to use: the one named, else the only one, else an error listing them.
    fn model_name(&self, requested: Option<&str>) -> Result<String> {
        let dataset = self.dataset()?;
        let names = embeddings::model_names(&self.layout, &dataset.dataset).map_err(external)?;
        match requested {
            Some(name) if names.iter().any(|n| n == name) => Ok(name.to_string()),
            Some(name) => plan_err!(
                "dataset {} has no embeddings named {name:?} (it has: {})",
                dataset.dataset,
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
            None => match names.as_slice() {
                [only] => Ok(only.clone()),
                [] => plan_err!(
                    "dataset {} has no embeddings yet: run `slicetest embed {}` first",
                    dataset.dataset,
                    dataset.dataset
                ),
                many => plan_err!(
                    "dataset {} has embeddings of several models ({}); name one as the last argument",
                    dataset.dataset,
                    many.join(", ")
                ),
            },
        }
    }

    /// The vectors of `model` (default: the only model), loaded once.
    pub fn vectors(&self, model: Option<&str>) -> Result<Arc<VectorSet>> {
        let name = self.model_name(model)?;
        if let Some(set) = self.sets.lock().expect("not poisoned").get(&name) {
            return Ok(set.clone());
        }
        let set = Arc::new(self.load(&name)?);
        self.sets.lock().expect("not poisoned").insert(name, set.clone());
        Ok(set)
    }

    fn load(&self, name: &str) -> Result<VectorSet> {
        let dataset = self.dataset()?;
        let model = embeddings::read_model(&self.layout, &dataset.dataset, name)
            .map_err(external)?
            .expect("listed models have a record");
        let current = read_image_columns(&self.layout, dataset, &["image_id", "sha256"]).map_err(external)?;
        let (ids, shas) = (cast(current.column(0), &DataType::Utf8)?, cast(current.column(1), &DataType::Utf8)?);
        let (ids, shas) = (ids.as_string::<i32>(), shas.as_string::<i32>());
        let current: HashMap<&str, &str> = (0..ids.len()).map(|i| (ids.value(i), shas.value(i))).collect();
        let mut set = VectorSet {
            model,
            ids: Vec::new(),
            shas: Vec::new(),
            matrix: Vec::new(),
            row_of: HashMap::new(),
            index_dir: self.layout.embeddings_dir(&dataset.dataset, name).join("index"),
            index: OnceLock::new(),
        };
        for batch in embeddings::read_parts(&self.layout, &dataset.dataset, name).map_err(external)? {
            let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            let vectors = batch.column(2).as_fixed_size_list();
            let values = vectors.values().as_primitive::<Float32Type>();
            for i in 0..batch.num_rows() {
                // Only vectors of the image as it is now; a later part wins over an earlier one.
                if current.get(ids.value(i)) != Some(&shas.value(i)) {
                    continue;
                }
                let vector = &values.values()[i * set.model.dim..][..set.model.dim];
                match set.row_of.get(ids.value(i)) {
                    Some(&r) => set.matrix[r as usize * set.model.dim..][..set.model.dim].copy_from_slice(vector),
                    None => {
                        set.row_of.insert(ids.value(i).to_string(), set.ids.len() as u32);
                        set.ids.push(ids.value(i).to_string());
                        set.shas.push(shas.value(i).to_string());
                        set.matrix.extend_from_slice(vector);
                    }
                }
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
        let vector = tower.embed_texts(&[text]).map_err(external)?.remove(0);
        let vector = Arc::new(vector);
        self.texts.lock().expect("not poisoned").insert(key, vector.clone());
        Ok(vector)
    }

    /// The normalised embedding of an image that is not in the dataset (a query image).
    pub fn image_vector(&self, set: &VectorSet, image: &image::DynamicImage) -> Result<Vec<f32>> {
        Ok(self.tower(&set.model)?.embed_images(std::slice::from_ref(image)).map_err(external)?.remove(0))
    }

    fn tower(&self, model: &EmbeddingModel) -> Result<Arc<Clip>> {
        if let Some(clip) = self.towers.lock().expect("not poisoned").get(&model.name) {
            return Ok(clip.clone());
        }
        let dir = resolve_model(&model.source).map_err(external)?;
        if fingerprint(&dir).map_err(external)? != model.fingerprint {
            return exec_err!(
                "the model at {} is not the one that made the {:?} embeddings; text would be compared with vectors of another model",
                dir.display(),
                model.name
            );
        }
        let clip = loaded_clip(&dir, &model.fingerprint)?;
        self.towers.lock().expect("not poisoned").insert(model.name.clone(), clip.clone());
        Ok(clip)
    }
}

/// Models loaded by any session of this process, by (directory, fingerprint). Each SQL
/// session has its own catalog, but a long-lived process (the HTTP server) should load a
/// checkpoint once, not on every query; the fingerprint keeps a replaced checkpoint apart.
fn loaded_clip(dir: &std::path::Path, fingerprint: &str) -> Result<Arc<Clip>> {
    type Loaded = Mutex<HashMap<(std::path::PathBuf, String), Arc<Clip>>>;
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let key = (dir.to_path_buf(), fingerprint.to_string());
    let loaded = LOADED.get_or_init(Loaded::default);
    if let Some(clip) = loaded.lock().expect("not poisoned").get(&key) {
        return Ok(clip.clone());
    }
    let clip = Arc::new(Clip::load(dir, &candle_core::Device::Cpu, candle_core::DType::F32).map_err(external)?);
    loaded.lock().expect("not poisoned").insert(key, clip.clone());
    Ok(clip)
}

/// A string literal argument, or a planning error with `usage`.
fn string_arg(exprs: &[Expr], i: usize, usage: &str, what: &str) -> Result<Option<String>> {
    match exprs.get(i) {
        None => Ok(None),
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        )) => Ok(Some(s.clone())),
        Some(_) => plan_err!("{usage}: {what} must be a string literal"),
    }
}

fn k_arg(exprs: &[Expr], usage: &str) -> Result<usize> {
    match exprs.get(1) {
        Some(Expr::Literal(v, _)) if v.data_type().is_integer() && !v.is_null() => match v.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(k)) if (1..=100_000).contains(&k) => Ok(k as usize),
            _ => plan_err!("{usage}: k must be between 1 and 100000"),
        },
        _ => plan_err!("{usage}: k must be an integer literal"),
    }
}

fn hits_table(hits: &[(&str, f32)]) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(hits.iter().map(|h| h.0))),
        Arc::new(Float32Array::from_iter_values(hits.iter().map(|h| h.1))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `text_search('<text>', k [, '<model>'])`: the k images closest to a sentence.
#[derive(Debug)]
pub struct TextSearchFunction(pub Arc<VectorCatalog>);

impl TableFunctionImpl for TextSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let usage = "usage: text_search('<text>', k [, '<model>'])";
        let exprs = args.exprs();
        let Some(text) = string_arg(exprs, 0, usage, "the text")? else { return plan_err!("{usage}") };
        let (k, model) = (k_arg(exprs, usage)?, string_arg(exprs, 2, usage, "the model name")?);
        if exprs.len() > 3 {
            return plan_err!("{usage}");
        }
        let set = self.0.vectors(model.as_deref())?;
        let query = self.0.text_vector(&set, &text)?;
        hits_table(&set.search(&query, k)?)
    }
}

/// `image_search('<image_id>', k [, '<model>'])`: the k images closest to one image (itself
/// first).
#[derive(Debug)]
pub struct ImageSearchFunction(pub Arc<VectorCatalog>);

impl TableFunctionImpl for ImageSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let usage = "usage: image_search('<image_id>', k [, '<model>'])";
        let exprs = args.exprs();
        let Some(id) = string_arg(exprs, 0, usage, "the image id")? else { return plan_err!("{usage}") };
        let (k, model) = (k_arg(exprs, usage)?, string_arg(exprs, 2, usage, "the model name")?);
        if exprs.len() > 3 {
            return plan_err!("{usage}");
        }
        let set = self.0.vectors(model.as_deref())?;
        let Some(query) = set.vector(&id) else {
            return plan_err!("image {id:?} has no {} embedding (unknown id, or not embedded yet)", set.model.name);
        };
        let query = query.to_vec();
        hits_table(&set.search(&query, k)?)
    }
}

/// `clip_similarity(image_id, '<text>')`: cosine similarity of each image with a sentence
/// (NULL for an image without a vector).
#[derive(Debug)]
pub struct ClipSimilarityFunction {
    catalog: Arc<VectorCatalog>,
    signature: Signature,
}

impl ClipSimilarityFunction {
    /// The function over `catalog`.
    pub fn new(catalog: Arc<VectorCatalog>) -> Self {
        ClipSimilarityFunction { catalog, signature: Signature::string(2, Volatility::Stable) }
    }
}

impl PartialEq for ClipSimilarityFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}
impl Eq for ClipSimilarityFunction {}
impl Hash for ClipSimilarityFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "clip_similarity".hash(state);
    }
}

impl ScalarUDFImpl for ClipSimilarityFunction {
    fn name(&self) -> &str {
        "clip_similarity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = match &args.args[1] {
            ColumnarValue::Scalar(s) if !s.is_null() => s.to_string(),
            _ => return exec_err!("clip_similarity(image_id, '<text>'): the text must be a constant string"),
        };
        let set = self.catalog.vectors(None)?;
        let query = self.catalog.text_vector(&set, &text)?;
        let ids = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let scores: Float32Array = (0..ids.len())
            .map(|i| if ids.is_null(i) { None } else { set.vector(ids.value(i)).map(|v| dot(v, &query)) })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(scores)))
    }
}

/// `cosine_similarity(a, b)`: cosine similarity of two float vectors (fixed-size or
/// variable lists of float32/float64) of equal length; NULL when either is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CosineSimilarityFunction {
    signature: Signature,
}

impl Default for CosineSimilarityFunction {
    fn default() -> Self {
        CosineSimilarityFunction { signature: Signature::any(2, Volatility::Immutable) }
    }
}

/// Row `i` of a list-of-floats column as f32s.
fn row_vector(array: &ArrayRef, i: usize) -> Result<Option<Vec<f32>>> {
    if array.data_type() == &DataType::Null || array.is_null(i) {
        return Ok(None);
    }
    let values = match array.data_type() {
        DataType::Null => return Ok(None),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(i),
        DataType::List(_) => array.as_list::<i32>().value(i),
        DataType::LargeList(_) => array.as_list::<i64>().value(i),
        other => return exec_err!("cosine_similarity: expected a list of floats, got {other}"),
    };
    Ok(Some(match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float64 => values.as_primitive::<Float64Type>().values().iter().map(|v| *v as f32).collect(),
        other => return exec_err!("cosine_similarity: expected float elements, got {other}"),
    }))
}

impl ScalarUDFImpl for CosineSimilarityFunction {
    fn name(&self) -> &str {
        "cosine_similarity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let b = args.args[1].to_array(args.number_rows)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for i in 0..args.number_rows {
            out.push(match (row_vector(&a, i)?, row_vector(&b, i)?) {
                (Some(x), Some(y)) if x.len() == y.len() => Some(cosine(&x, &y)),
                (Some(x), Some(y)) => {
                    return exec_err!("cosine_similarity: vectors of length {} and {} at row {i}", x.len(), y.len());
                }
                _ => None,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(Float32Array::from(out))))
    }
}
