//! SQL access to frozen slices: the `slice('<name>' [, version])` table function and the
//! `in_slice(image_id, '<name>')` predicate. Both read frozen versions only (hash-checked),
//! so a query over a slice means the same thing forever.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::Expr;
use datafusion::prelude::SessionContext;
use slicetest_datasets::slice::{latest_frozen, read_frozen, read_members};
use slicetest_datasets::version::DatasetVersion;
use slicetest_datasets::{Workspace, WorkspaceLayout, tags};

/// `images` of one version of a dataset — any version, not only the latest the schema
/// reads — with every tag column joined the way `images` joins them: on `image_id` and
/// the image's `sha256` in that version, so the tags are those of the very bytes that
/// version holds (NULL where its tagger has no row for them). What `slice export` of a
/// frozen version reads: the version the slice was frozen against.
pub async fn version_images(
    ctx: &SessionContext,
    workspace: &Workspace,
    version: &DatasetVersion,
) -> crate::Result<Arc<dyn TableProvider>> {
    let taggers = tags::stored_taggers(workspace.layout(), &version.dataset)?;
    let images = crate::catalog::images_table(ctx, workspace, version).await?;
    crate::catalog::tagged_images(ctx, &taggers, images).await
}

fn external(e: slicetest_datasets::DatasetError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `slice('<name>' [, version])`: the members of a frozen version (the latest by default),
/// with columns `slice`, `version`, `image_id`, `sha256`, `split`, `holdout`.
#[derive(Debug)]
pub struct SliceTableFunction {
    layout: WorkspaceLayout,
}

impl SliceTableFunction {
    /// The function over the workspace at `layout`.
    pub fn new(layout: WorkspaceLayout) -> Self {
        Self { layout }
    }
}

impl TableFunctionImpl for SliceTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let usage = "usage: slice('<name>') or slice('<name>', <version>)";
        let name = match exprs.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)) => s.clone(),
            _ => return plan_err!("{usage}: the first argument is the slice name as a string"),
        };
        let version = match exprs.get(1) {
            None => None,
            Some(Expr::Literal(v, _)) if v.data_type().is_integer() && !v.is_null() => {
                match v.cast_to(&DataType::UInt64)? {
                    ScalarValue::UInt64(Some(k)) => Some(k),
                    _ => return plan_err!("{usage}: the version is a positive integer"),
                }
            }
            Some(_) => return plan_err!("{usage}: the version is a positive integer"),
        };
        if exprs.len() > 2 {
            return plan_err!("{usage}");
        }
        let frozen = read_frozen(&self.layout, &name, version).map_err(external)?;
        let members = read_members(&self.layout, &frozen).map_err(external)?;
        let n = members.num_rows();
        let schema = Arc::new(Schema::new(vec![
            Field::new("slice", DataType::Utf8, false),
            Field::new("version", DataType::UInt64, false),
            Field::new("image_id", DataType::Utf8, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new("split", DataType::Utf8, true),
            Field::new("holdout", DataType::Boolean, false),
        ]));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![frozen.slice.as_str(); n])),
            Arc::new(UInt64Array::from(vec![frozen.version; n])),
        ];
        columns.extend(members.columns().iter().cloned());
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// `in_slice(image_id, '<name>' [, version])`: true when the image is a member of the
/// slice's frozen version (default: the latest). Planning pins the latest version: the
/// optimiser rewrites the two-argument call into the three-argument one, so a query means
/// the version that was latest when it was planned, wherever it runs (a cluster's
/// executors read that version, not one frozen while the query ran).
#[derive(Debug)]
pub struct InSliceFunction {
    layout: WorkspaceLayout,
    signature: Signature,
    /// Member sets loaded so far in this session, by slice name and version.
    loaded: Mutex<HashMap<(String, u64), Members>>,
}

/// The image ids of one frozen slice version.
type Members = Arc<HashSet<String>>;

impl InSliceFunction {
    /// The function over the workspace at `layout`.
    pub fn new(layout: WorkspaceLayout) -> Self {
        let strings = [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8];
        let signatures = strings
            .iter()
            .flat_map(|a| strings.iter().map(move |b| (a, b)))
            .flat_map(|(a, b)| {
                [
                    TypeSignature::Exact(vec![a.clone(), b.clone()]),
                    TypeSignature::Exact(vec![a.clone(), b.clone(), DataType::Int64]),
                ]
            })
            .collect();
        Self { layout, signature: Signature::one_of(signatures, Volatility::Stable), loaded: Mutex::default() }
    }

    /// The workspace whose slices this function reads.
    pub fn layout(&self) -> &WorkspaceLayout {
        &self.layout
    }

    fn members(&self, name: &str, version: Option<u64>) -> Result<Members> {
        if let Some(v) = version
            && let Some(set) = self.loaded.lock().expect("not poisoned").get(&(name.to_string(), v))
        {
            return Ok(set.clone());
        }
        let frozen = read_frozen(&self.layout, name, version).map_err(external)?;
        let key = (name.to_string(), frozen.version);
        if let Some(set) = self.loaded.lock().expect("not poisoned").get(&key) {
            return Ok(set.clone());
        }
        let batch = read_members(&self.layout, &frozen).map_err(external)?;
        let ids = batch.column(0).as_string::<i32>();
        let set: Members = Arc::new(ids.iter().flatten().map(str::to_string).collect());
        self.loaded.lock().expect("not poisoned").insert(key, set.clone());
        Ok(set)
    }
}

impl PartialEq for InSliceFunction {
    fn eq(&self, other: &Self) -> bool {
        self.layout == other.layout
    }
}

impl Eq for InSliceFunction {}

impl Hash for InSliceFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.layout.root().hash(state);
    }
}

impl ScalarUDFImpl for InSliceFunction {
    fn name(&self) -> &str {
        "in_slice"
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::OnceLock<Documentation> = std::sync::OnceLock::new();
        Some(DOC.get_or_init(|| {
            crate::function_doc(
                "Whether the image is a member of the slice's latest frozen version (or of version v).",
                "in_slice(image_id, 'slice_name' [, version])",
                &[
                    ("image_id", "the image's id"),
                    ("slice_name", "a frozen slice, as a string literal"),
                    ("version", "a frozen version (default: the latest)"),
                ],
                "SELECT label, count(*) FROM images WHERE in_slice(image_id, 'night_people') GROUP BY label",
            )
        }))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // Pins the latest version while planning; a slice that does not exist (or a name
        // that is not a literal) stays as written and fails when it runs, as before.
        let latest = match args.as_slice() {
            [_, Expr::Literal(name, _)] => name
                .try_as_str()
                .flatten()
                .and_then(|name| latest_frozen(&self.layout, name).ok().flatten())
                .map(|frozen| frozen.version),
            _ => None,
        };
        let Some(latest) = latest else { return Ok(ExprSimplifyResult::Original(args)) };
        let mut pinned = args;
        pinned.push(datafusion::prelude::lit(latest as i64));
        let udf = ScalarUDF::new_from_impl(InSliceFunction::new(self.layout.clone()));
        Ok(ExprSimplifyResult::Simplified(udf.call(pinned)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(s) if !s.is_null() => s.to_string(),
            _ => return exec_err!("in_slice(image_id, '<name>'): the slice name must be a constant string"),
        };
        let version = match args.args.get(2) {
            None => None,
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))) if *v >= 1 => Some(*v as u64),
            Some(_) => {
                return exec_err!("in_slice(image_id, '<name>', version): the version must be a positive integer");
            }
        };
        let members = self.members(&name, version)?;
        let ids = args.args[0].to_array(args.number_rows)?;
        let ids = cast(&ids, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let result: BooleanArray =
            (0..ids.len()).map(|i| (!ids.is_null(i)).then(|| members.contains(ids.value(i)))).collect();
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}
