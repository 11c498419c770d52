//! Vector search inside SQL, over the embeddings `slicetest embed` stored:
//!
//! - `text_search('<text>', k [, '<model>'])` and `image_search('<image_id>', k [, '<model>'])`
//!   are tables of (image_id, score), best first;
//! - `clip_similarity(image_id, '<text>' [, '<model>'])` scores rows, so a filtered query
//!   (`WHERE … ORDER BY clip_similarity(image_id, '…') DESC LIMIT k`) is an exact top-k of
//!   the filtered rows;
//! - `cosine_similarity(a, b)` compares any two float vectors.
//!
//! Vectors are those of the default dataset's current images (an image whose file changed
//! since it was embedded has no vector until it is embedded again). They come from the
//! engine's [`VectorStore`] (see [`store`]): loaded on first use and kept while they are
//! current; the text tower is loaded when text is first encoded.
//! `text_search` / `image_search` scan exactly below [`HNSW_MIN_ROWS`] vectors and use the
//! HNSW index (built, saved and extended on demand) above; `clip_similarity` is always exact.

mod store;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use store::{HNSW_MIN_ROWS, IndexState, IndexStatus, TEXT_CACHE_ENTRIES, VectorCatalog, VectorSet, VectorStore};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::Expr;
use slicetest_embed::index::{cosine, dot};

use crate::error::SqlError;

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
        if text.trim().is_empty() {
            // An empty sentence encodes to a vector like any other, and ranks images by nothing.
            return plan_err!("{usage}: the text is empty; give a sentence that describes the images");
        }
        let (k, model) = (k_arg(exprs, usage)?, string_arg(exprs, 2, usage, "the model name")?);
        if exprs.len() > 3 {
            return plan_err!("{usage}");
        }
        let set = self.0.vectors(model.as_deref())?;
        let query = self.0.text_vector(&set, &text)?;
        hits_table(&set.search(&query, k))
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
            return Err(SqlError::NotEmbedded { image_id: id, model: set.model.name.clone() }.into_datafusion());
        };
        let query = query.to_vec();
        hits_table(&set.search(&query, k))
    }
}

/// `clip_similarity(image_id, '<text>' [, '<model>'])`: cosine similarity of each image
/// with a sentence (NULL for an image without a vector) under the named model, or the
/// dataset's only one.
///
/// Planning encodes the sentence once: the optimiser replaces the call with one to a copy
/// of the function that carries the sentence's vector ([`ClipSimilarityFunction::query`]),
/// so whoever runs the plan (this process, or a cluster's executors, which have no text
/// tower) only looks vectors up.
#[derive(Debug)]
pub struct ClipSimilarityFunction {
    catalog: Arc<VectorCatalog>,
    signature: Signature,
    /// The sentence this copy was planned for and its vector.
    query: Option<PlannedQuery>,
}

/// A sentence `clip_similarity` encoded at planning.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    /// The sentence.
    pub text: String,
    /// The model it was asked for (None: the dataset's only one).
    pub model: Option<String>,
    /// Its vector under that model.
    pub vector: Arc<Vec<f32>>,
}

impl ClipSimilarityFunction {
    /// The function over `catalog`.
    pub fn new(catalog: Arc<VectorCatalog>) -> Self {
        let signature = Signature::one_of(vec![TypeSignature::String(2), TypeSignature::String(3)], Volatility::Stable);
        ClipSimilarityFunction { catalog, signature, query: None }
    }

    /// The function over `catalog` with the vector of `text` under `model` (None: the
    /// only one) already encoded.
    pub fn with_query(catalog: Arc<VectorCatalog>, text: String, model: Option<String>, vector: Arc<Vec<f32>>) -> Self {
        ClipSimilarityFunction { query: Some(PlannedQuery { text, model, vector }), ..Self::new(catalog) }
    }

    /// The vectors this function reads.
    pub fn catalog(&self) -> &Arc<VectorCatalog> {
        &self.catalog
    }

    /// The sentence planning encoded, with its model and vector.
    pub fn query(&self) -> Option<&PlannedQuery> {
        self.query.as_ref()
    }

    /// What identifies a planned copy: its sentence and model.
    fn planned(&self) -> Option<(&str, Option<&str>)> {
        self.query.as_ref().map(|q| (q.text.as_str(), q.model.as_deref()))
    }
}

impl PartialEq for ClipSimilarityFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog) && self.planned() == other.planned()
    }
}
impl Eq for ClipSimilarityFunction {}
impl Hash for ClipSimilarityFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "clip_similarity".hash(state);
        self.planned().hash(state);
    }
}

/// `clip_similarity`'s model argument: None when absent, the name when a constant string.
fn model_of(args: &[ColumnarValue]) -> Result<Option<String>> {
    match args.get(2) {
        None => Ok(None),
        Some(ColumnarValue::Scalar(s)) if !s.is_null() => Ok(s.try_as_str().flatten().map(str::to_string)),
        Some(_) => exec_err!("clip_similarity(image_id, '<text>', '<model>'): the model must be a constant string"),
    }
}

impl ScalarUDFImpl for ClipSimilarityFunction {
    fn name(&self) -> &str {
        "clip_similarity"
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::OnceLock<Documentation> = std::sync::OnceLock::new();
        Some(DOC.get_or_init(|| {
            crate::function_doc(
                "Cosine similarity of the image's stored CLIP vector and a sentence (NULL for an image without a vector); an exact score of every row. The model is the dataset's only one, or the one named by the third argument.",
                "clip_similarity(image_id, 'text' [, 'model'])",
                &[
                    ("image_id", "the image's id"),
                    ("text", "the sentence, a constant string"),
                    ("model", "optional: the name the embeddings are stored under (`slicetest embed --name`), a constant string; required when the dataset has several"),
                ],
                "SELECT image_id FROM images WHERE split = 'test' ORDER BY clip_similarity(image_id, 'a dog at night') DESC LIMIT 10",
            )
        }))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let literal = |e: &Expr| match e {
            Expr::Literal(value, _) => value.try_as_str().flatten().map(str::to_string),
            _ => None,
        };
        let (text, model) = match args.as_slice() {
            [_, text] => (literal(text), None),
            [_, text, model] => match literal(model) {
                Some(model) => (literal(text), Some(model)),
                None => (None, None),
            },
            _ => (None, None),
        };
        let Some(text) = text.filter(|_| self.query.is_none()) else { return Ok(ExprSimplifyResult::Original(args)) };
        // Which vectors is known now: a model that is not there (misspelt, or not named where
        // the dataset has several) is an error of the query, said before anything runs.
        let set = self.catalog.vectors(model.as_deref())?;
        // Without a text tower the call stays as written, and says why when it runs.
        let Ok(vector) = self.catalog.text_vector(&set, &text) else { return Ok(ExprSimplifyResult::Original(args)) };
        let folded = ScalarUDF::new_from_impl(Self::with_query(self.catalog.clone(), text, model, vector));
        Ok(ExprSimplifyResult::Simplified(folded.call(args)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = match &args.args[1] {
            ColumnarValue::Scalar(s) if !s.is_null() => s.to_string(),
            _ => return exec_err!("clip_similarity(image_id, '<text>'): the text must be a constant string"),
        };
        let model = model_of(&args.args)?;
        let set = self.catalog.vectors(model.as_deref())?;
        let query = match &self.query {
            Some(planned) if planned.text == text && planned.model == model => planned.vector.clone(),
            _ => self.catalog.text_vector(&set, &text)?,
        };
        let ids = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let scores: Float32Array = (0..ids.len())
            .map(|i| if ids.is_null(i) { None } else { set.vector(ids.value(i)).map(|v| dot(v, &query)) })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(scores)))
    }
}

/// Refuses a plan that calls `clip_similarity` and reads a table of another dataset than
/// `default_dataset`, the one whose vectors the function looks image ids up in: ids repeat
/// across datasets (`img/0001.png` in both), so such a row would silently get the score of
/// another image. Checked at planning, before anything runs.
pub fn check_vector_dataset(plan: &datafusion::logical_expr::LogicalPlan, default_dataset: &str) -> Result<()> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let mut scores = false;
    let mut other = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(schema) = scan.table_name.schema()
            && schema != default_dataset
            && schema != "information_schema"
        {
            other.get_or_insert_with(|| format!("{schema}.{}", scan.table_name.table()));
        }
        for expr in node.expressions() {
            scores |=
                expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.name() == "clip_similarity")))?;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match other {
        Some(other) if scores => {
            Err(SqlError::OtherDataset { default: default_dataset.to_string(), other }.into_datafusion())
        }
        _ => Ok(()),
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

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::OnceLock<Documentation> = std::sync::OnceLock::new();
        Some(DOC.get_or_init(|| {
            crate::function_doc(
                "Cosine similarity of two float vectors of equal length (NULL when either is NULL).",
                "cosine_similarity(a, b)",
                &[("a", "a list of float32 or float64"), ("b", "a list of the same length")],
                "SELECT cosine_similarity([1.0, 0.0], [1.0, 1.0])",
            )
        }))
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{FixedSizeListArray, ListArray};
    use datafusion::arrow::datatypes::Float32Type as F32;
    use datafusion::config::ConfigOptions;

    use super::*;

    fn invoke(args: Vec<ColumnarValue>, number_rows: usize) -> Result<Vec<Option<f32>>> {
        let arg_fields = args.iter().map(|a| Arc::new(Field::new("x", a.data_type(), true))).collect();
        let args = ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows,
            return_field: Arc::new(Field::new("cosine_similarity", DataType::Float32, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let ColumnarValue::Array(out) = CosineSimilarityFunction::default().invoke_with_args(args)? else {
            panic!("cosine_similarity answers an array")
        };
        Ok(out.as_primitive::<F32>().iter().collect())
    }

    fn list(rows: &[Option<Vec<f32>>]) -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<F32, _, _>(
            rows.iter().map(|r| r.as_ref().map(|v| v.iter().map(|x| Some(*x)).collect::<Vec<_>>())),
        ))
    }

    fn close(got: &[Option<f32>], want: &[Option<f32>]) -> bool {
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| match (g, w) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-6,
                (None, None) => true,
                _ => false,
            })
    }

    #[test]
    fn arrays_row_by_row_with_nulls() {
        let a = list(&[Some(vec![1.0, 0.0]), Some(vec![1.0, 1.0]), None, Some(vec![0.0, 2.0])]);
        let b = list(&[Some(vec![1.0, 1.0]), Some(vec![-1.0, -1.0]), Some(vec![1.0, 0.0]), Some(vec![0.0, 3.0])]);
        let got = invoke(vec![ColumnarValue::Array(a), ColumnarValue::Array(b)], 4).unwrap();
        let want = [Some(std::f32::consts::FRAC_1_SQRT_2), Some(-1.0), None, Some(1.0)];
        assert!(close(&got, &want), "{got:?}");
    }

    #[test]
    fn a_scalar_against_a_fixed_size_column_and_float64_elements() {
        let fixed = FixedSizeListArray::from_iter_primitive::<F32, _, _>(
            [Some(vec![Some(3.0), Some(4.0)]), Some(vec![Some(4.0), Some(-3.0)])],
            2,
        );
        let query = ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>([Some(vec![
            Some(3.0),
            Some(4.0),
        ])])));
        let got = invoke(vec![ColumnarValue::Array(Arc::new(fixed)), ColumnarValue::Scalar(query)], 2).unwrap();
        assert!(close(&got, &[Some(1.0), Some(0.0)]), "{got:?}");
    }

    #[test]
    fn unequal_lengths_and_non_float_lists_are_refused_by_row() {
        let a = list(&[Some(vec![1.0, 0.0]), Some(vec![1.0, 0.0, 0.0])]);
        let b = list(&[Some(vec![1.0, 0.0]), Some(vec![1.0, 0.0])]);
        let error = invoke(vec![ColumnarValue::Array(a), ColumnarValue::Array(b)], 2).unwrap_err();
        assert!(error.to_string().contains("vectors of length 3 and 2 at row 1"), "{error}");
        let text = ColumnarValue::Scalar(ScalarValue::Utf8(Some("x".into())));
        let error = invoke(vec![text.clone(), text], 1).unwrap_err();
        assert!(error.to_string().contains("expected a list of floats"), "{error}");
    }
}

#[cfg(test)]
mod dataset_tests {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A session whose default schema is dataset d1, beside a dataset d2, each with an
    /// `images` table, and a stand-in `clip_similarity` (the check goes by name).
    async fn session() -> SessionContext {
        let config =
            SessionConfig::new().with_default_catalog_and_schema("datafusion", "d1").with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        // The default schema exists with the session.
        for sql in [
            "CREATE SCHEMA d2",
            "CREATE TABLE d1.images AS VALUES ('img/1.png')",
            "CREATE TABLE d2.images AS VALUES ('img/1.png')",
        ] {
            ctx.sql(sql).await.unwrap();
        }
        let stand_in =
            |_: &[ColumnarValue]| -> Result<ColumnarValue> { Ok(ColumnarValue::Scalar(ScalarValue::Float32(None))) };
        ctx.register_udf(create_udf(
            "clip_similarity",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Float32,
            Volatility::Stable,
            Arc::new(stand_in),
        ));
        ctx
    }

    async fn check(ctx: &SessionContext, sql: &str) -> Result<()> {
        let plan = ctx.state().create_logical_plan(sql).await?;
        check_vector_dataset(&plan, "d1")
    }

    #[tokio::test]
    async fn clip_similarity_over_another_dataset_is_refused_at_planning() {
        let ctx = session().await;
        for fine in [
            "SELECT clip_similarity(column1, 'a cat') FROM images",
            "SELECT clip_similarity(column1, 'a cat') FROM d1.images",
            "SELECT clip_similarity(column1, 'a cat') FROM datafusion.d1.images",
            // Another dataset without the function: nothing to confuse.
            "SELECT column1 FROM d2.images",
            "SELECT count(*) FROM information_schema.tables WHERE clip_similarity(table_name, 'x') > 0",
        ] {
            check(&ctx, fine).await.unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        for refused in [
            "SELECT clip_similarity(column1, 'a cat') FROM d2.images",
            "SELECT a.column1 FROM d2.images a ORDER BY clip_similarity(a.column1, 'a cat') DESC LIMIT 3",
            "SELECT column1 FROM images WHERE column1 IN (SELECT column1 FROM d2.images WHERE clip_similarity(column1, 'x') > 0.2)",
            "SELECT clip_similarity(i.column1, 'x') FROM images i JOIN d2.images j USING (column1)",
        ] {
            let err = check(&ctx, refused).await.unwrap_err().to_string();
            assert!(err.contains("default dataset d1, and this query reads d2.images"), "{refused}: {err}");
        }
    }
}
