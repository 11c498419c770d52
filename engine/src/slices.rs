//! Slices through the engine: create (query checked), drop, list, describe and freeze.
//! Storage and the hold-out rule live in `slicetest_datasets::slice`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use slicetest_datasets::layout::WorkspaceLayout;
use slicetest_datasets::masks;
use slicetest_datasets::slice::{self, FrozenSlice, KeepHoldout, SliceDefinition};
use slicetest_datasets::version::DatasetVersion;
use slicetest_datasets::{FreezeOutcome, FreezeRequest, HoldoutAssigner};

use crate::error::{EngineError, Result};
use crate::statement::{DEFAULT_HOLDOUT, DEFAULT_SEED, SliceStatement, SliceThresholds};
use crate::{Engine, query};

/// A slice's definition with its frozen versions, for listings.
#[derive(Debug, Clone)]
pub struct SliceInfo {
    /// The definition.
    pub definition: SliceDefinition,
    /// Manifests of the frozen versions, oldest first.
    pub frozen: Vec<FrozenSlice>,
}

impl Engine {
    /// Defines a slice; the query must plan against the default dataset and return `image_id`.
    pub async fn create_slice(
        &self,
        name: &str,
        query: &str,
        comment: Option<String>,
        thresholds: SliceThresholds,
    ) -> Result<SliceDefinition> {
        let rates = [
            ("min_accuracy".to_string(), thresholds.min_accuracy),
            ("min_map".to_string(), thresholds.min_map),
            ("min_ap50".to_string(), thresholds.min_ap50),
            ("min_mask_map".to_string(), thresholds.min_mask_map),
            ("min_keypoint_map".to_string(), thresholds.min_keypoint_map),
            ("min_recall".to_string(), thresholds.min_recall),
            ("min_miou".to_string(), thresholds.min_miou),
            ("min_pixel_accuracy".to_string(), thresholds.min_pixel_accuracy),
        ]
        .into_iter()
        .chain(thresholds.min_class_recall.iter().map(|(c, v)| (format!("min_recall.{c}"), Some(*v))))
        .chain(thresholds.min_class_iou.iter().map(|(c, v)| (format!("min_iou.{c}"), Some(*v))));
        for (name, value) in rates {
            if value.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
                return Err(EngineError::InvalidArgument(format!("{name} must be between 0 and 1")));
            }
        }
        slicetest_datasets::validate_name(name)?;
        let query = stored_query(query);
        if query_body(&query).is_empty() {
            return Err(EngineError::InvalidArgument(format!("the query of slice {name:?} is empty")));
        }
        let dataset = self.workspace.dataset_or_default(None)?;
        if !thresholds.min_class_recall.is_empty() {
            check_categories(&self.workspace.latest(&dataset)?, thresholds.min_class_recall.keys())?;
        }
        if !thresholds.min_class_iou.is_empty() {
            check_mask_classes(self.workspace.layout(), &dataset, thresholds.min_class_iou.keys())?;
        }
        let ctx = self.dataset_context(Some(&dataset)).await?;
        check_query(&ctx, name, &dataset, &query).await?;
        let definition = SliceDefinition {
            name: name.to_string(),
            query,
            dataset,
            comment,
            created_at: chrono_now(),
            min_accuracy: thresholds.min_accuracy,
            min_samples: thresholds.min_samples,
            min_map: thresholds.min_map,
            min_ap50: thresholds.min_ap50,
            min_mask_map: thresholds.min_mask_map,
            min_keypoint_map: thresholds.min_keypoint_map,
            min_recall: thresholds.min_recall,
            min_class_recall: thresholds.min_class_recall,
            min_miou: thresholds.min_miou,
            min_pixel_accuracy: thresholds.min_pixel_accuracy,
            min_class_iou: thresholds.min_class_iou,
        };
        slice::create_definition(self.workspace.layout(), &definition)?;
        Ok(definition)
    }

    /// Removes a slice with all its frozen versions. Returns what its hold-out leaves
    /// behind: its latest version and how many images that version held out that no other
    /// slice of its dataset holds out (`holdout export` puts those in the training set from
    /// now on); None when it held none out, or that could not be read (a damaged members
    /// file must not stop its slice from being dropped).
    pub fn drop_slice(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let _lock = self.workspace.lock()?;
        let released = match self.released_by_drop(name) {
            Ok(released) => released,
            Err(EngineError::Dataset(e @ slicetest_datasets::DatasetError::UnknownSlice { .. })) => {
                return Err(e.into());
            }
            Err(_) => None,
        };
        slice::drop_slice(self.workspace.layout(), name)?;
        Ok(released)
    }

    /// Slice `name`'s latest version and the images it holds out that no other slice of
    /// its dataset does.
    fn released_by_drop(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let layout = self.workspace.layout();
        let definition = slice::read_definition(layout, name)?;
        let Some(frozen) = slice::latest_frozen(layout, name)?.filter(|f| f.holdout_members > 0) else {
            return Ok(None);
        };
        let members = slice::members_of(&slice::read_members(layout, &frozen)?);
        let others = self.held_out_ids_except(&definition.dataset, Some(name))?;
        let released = members.iter().filter(|m| m.holdout && others.binary_search(&m.image_id).is_err()).count();
        Ok(Some((frozen.version, released as u64)))
    }

    /// Every slice with its frozen versions, by name.
    pub fn slices(&self) -> Result<Vec<SliceInfo>> {
        let layout = self.workspace.layout();
        slice::slice_names(layout)?.iter().map(|name| self.slice(name)).collect()
    }

    /// One slice with its frozen versions.
    pub fn slice(&self, name: &str) -> Result<SliceInfo> {
        let layout = self.workspace.layout();
        let definition = slice::read_definition(layout, name)?;
        let frozen = slice::all_frozen(layout, name)?;
        Ok(SliceInfo { definition, frozen })
    }

    /// Runs the slice's query and freezes its members as the next version, with `holdout`
    /// of them (chosen by [`HoldoutAssigner`] with `seed`) in the hold-out set. See
    /// [`Engine::freeze_slice_keeping`], which can keep the latest version's settings.
    pub async fn freeze_slice(&self, name: &str, holdout: f64, seed: u64) -> Result<FreezeOutcome> {
        self.freeze_slice_keeping(name, Some(holdout), Some(seed)).await
    }

    /// Runs the slice's query and freezes its members as the next version. The hold-out
    /// share and seed left out (None) are the latest frozen version's — so a plain
    /// re-freeze holds out the very images it held out before — or, at a first freeze,
    /// [`DEFAULT_HOLDOUT`] and [`DEFAULT_SEED`]. The outcome says when the hold-out
    /// changed and how many images held out before no longer are
    /// ([`FreezeOutcome::notes`]). Takes no lock: concurrent freezes, here or on other
    /// machines sharing a bucket, each commit a version or find that the one committed
    /// first has their members ([`slice::freeze_keeping`]).
    pub async fn freeze_slice_keeping(
        &self,
        name: &str,
        holdout: Option<f64>,
        seed: Option<u64>,
    ) -> Result<FreezeOutcome> {
        let assigner = HoldoutAssigner::new(holdout.unwrap_or(DEFAULT_HOLDOUT), seed.unwrap_or(DEFAULT_SEED))?;
        let keep = KeepHoldout { share: holdout.is_none(), seed: seed.is_none() };
        let layout = self.workspace.layout();
        let definition = slice::read_definition(layout, name)?;
        let versions = || -> Result<BTreeMap<String, u64>> {
            Ok(self.workspace.latest_versions()?.into_iter().map(|v| (v.dataset, v.version)).collect())
        };
        // The dataset versions the query read: those latest before its session was built
        // and still latest after it ran (an ingest in between runs it again), so the
        // manifest names the version the members come from (`slice export` reads it).
        let mut attempts = 0;
        let (members, dataset_versions) = loop {
            let before = versions()?;
            let ctx = self.dataset_context(Some(&definition.dataset)).await?;
            let members = self.frozen_members(&ctx, &definition).await?;
            let after = versions()?;
            attempts += 1;
            if before == after || attempts == 3 {
                break (members, after);
            }
        };
        let request = FreezeRequest { members, holdout: assigner, dataset_versions };
        Ok(slice::freeze_keeping(layout, &definition, request, keep)?)
    }

    /// The members the slice's query finds in `ctx` (`image_id`, `sha256`, `split` as Utf8).
    async fn frozen_members(&self, ctx: &SessionContext, definition: &SliceDefinition) -> Result<RecordBatch> {
        check_query(ctx, &definition.name, &definition.dataset, &definition.query).await?;
        let members_sql = members_sql(&definition.dataset, &definition.query);
        let batches = query::plan(ctx, &members_sql).await?.collect().await.map_err(|e| EngineError::query(e, None))?;
        // As Utf8 arrays (the columns may come back as views or dictionaries), one table.
        let schema = slice::request_schema();
        let utf8 = |batch: &RecordBatch| -> Result<RecordBatch> {
            let columns = (0..3)
                .map(|i| cast(batch.column(i), &DataType::Utf8).map_err(|e| EngineError::query(e.into(), None)))
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| EngineError::query(e.into(), None))
        };
        let batches = batches.iter().map(utf8).collect::<Result<Vec<_>>>()?;
        concat_batches(&schema, &batches).map_err(|e| EngineError::query(e.into(), None))
    }

    /// Runs a slice statement and returns its result as one batch.
    pub async fn run_slice_statement(&self, statement: SliceStatement) -> Result<RecordBatch> {
        match statement {
            SliceStatement::Create { name, comment, thresholds, query } => {
                let d = self.create_slice(&name, &query, comment, thresholds).await?;
                Ok(message(format!("slice {} created on dataset {}", d.name, d.dataset)))
            }
            SliceStatement::Drop { name, if_exists } => match self.drop_slice(&name) {
                Ok(released) => Ok(message(match drop_warning(&name, released) {
                    Some(warning) => format!("slice {name} dropped; WARNING: {warning}"),
                    None => format!("slice {name} dropped"),
                })),
                Err(EngineError::Dataset(slicetest_datasets::DatasetError::UnknownSlice { .. })) if if_exists => {
                    Ok(message(format!("slice {name} does not exist; nothing dropped")))
                }
                Err(e) => Err(e),
            },
            SliceStatement::Show => Ok(slices_batch(&self.slices()?)),
            SliceStatement::Describe { name } => Ok(versions_batch(&self.slice(&name)?)),
            SliceStatement::Freeze { name, holdout, seed } => {
                let outcome = self.freeze_slice_keeping(&name, holdout, seed).await?;
                Ok(freeze_batch(&outcome))
            }
        }
    }
}

/// The SQL that lists a slice's members with what a freeze stores of them (`image_id`,
/// `sha256`, `split`). A definition of the common shape — `SELECT image_id FROM images
/// [alias] [WHERE …]` on the slice's dataset — is widened to select the three columns
/// itself: one pass over `images`. Any other is joined back to `images` by `image_id`
/// (which is unique there, so both give the same rows).
fn members_sql(dataset: &str, query: &str) -> String {
    widened(dataset, query).unwrap_or_else(|| {
        format!(
            "SELECT i.image_id, i.sha256, i.split FROM \"{dataset}\".images i \
             WHERE i.image_id IN (SELECT image_id FROM {})",
            slice_subquery(query)
        )
    })
}

/// A slice's query as a derived table, `(<query>) AS slice_query`, to embed in a larger
/// statement: without the semicolons and comments it may end with (a trailing `-- …`
/// would swallow the closing parenthesis, a `;` end the statement early), and the
/// parenthesis on a line of its own all the same.
pub(crate) fn slice_subquery(query: &str) -> String {
    format!("({}\n) AS slice_query", query_body(query))
}

/// `query` without what may follow its last token: whitespace, comments and semicolons.
/// Found with the SQL tokenizer, so a `--` or `;` inside a string or quoted name stays;
/// text that does not tokenize (an unterminated string) is only trimmed, and planning it
/// reports the error.
pub(crate) fn query_body(query: &str) -> &str {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    let trimmed = query.trim_end();
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, trimmed).tokenize_with_location() else { return trimmed };
    let Some(last) = tokens.iter().rev().find(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon)) else {
        return "";
    };
    // The span's end is the (line, column) just past the token, columns counted in chars.
    let (line, column) = (last.span.end.line, last.span.end.column);
    let (mut at_line, mut at_column) = (1, 1);
    for (offset, c) in trimmed.char_indices() {
        if (at_line, at_column) == (line, column) {
            return &trimmed[..offset];
        }
        if c == '\n' {
            (at_line, at_column) = (at_line + 1, 1);
        } else {
            at_column += 1;
        }
    }
    trimmed
}

/// A slice's query as stored: as written, less surrounding whitespace and trailing
/// semicolons (what `CREATE SLICE … AS <query>;` leaves out too).
fn stored_query(query: &str) -> String {
    query.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace()).to_string()
}

/// Checks a slice's query the way freezing will use it: it plans against `dataset`'s
/// session, returns one `image_id` column of string type (the type of `images.image_id`),
/// and plans as the members query a freeze runs.
pub(crate) async fn check_query(ctx: &SessionContext, name: &str, dataset: &str, query: &str) -> Result<()> {
    let df = query::plan(ctx, query).await?;
    let fields = df.schema().fields();
    let ids: Vec<_> = fields.iter().filter(|f| f.name() == "image_id").collect();
    let returns = || fields.iter().map(|f| format!("{} ({})", f.name(), f.data_type())).collect::<Vec<_>>().join(", ");
    let problem = match ids.as_slice() {
        [] => format!(
            "must return an image_id column; it returns: {}",
            fields.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ),
        [id] if !is_string(id.data_type()) => format!(
            "must return image_id as a string (the ids of images.image_id); its image_id is {}{}",
            id.data_type(),
            if fields.len() > 1 { format!(" — it returns: {}", returns()) } else { String::new() }
        ),
        [_] => return plan_members(ctx, name, dataset, query).await,
        _ => format!("must return one image_id column, not {}; it returns: {}", ids.len(), returns()),
    };
    Err(EngineError::InvalidArgument(format!("the query of slice {name:?} {problem}")))
}

/// Plans the members query of a slice whose query returns a string `image_id`.
async fn plan_members(ctx: &SessionContext, name: &str, dataset: &str, query: &str) -> Result<()> {
    query::plan(ctx, &members_sql(dataset, query))
        .await
        .map(drop)
        .map_err(|e| e.context(format!("the query of slice {name:?} cannot be frozen")))
}

fn is_string(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

/// `query` selecting `image_id, sha256, split` instead of `image_id`, when it is one
/// `SELECT image_id FROM images [alias] [WHERE …]` with nothing else (no DISTINCT, GROUP
/// BY, ORDER BY, LIMIT, WITH, set operation, join, …).
fn widened(dataset: &str, sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement, TableFactor};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    let parse = |sql: &str| -> Option<Box<Query>> {
        match Parser::parse_sql(&GenericDialect {}, sql).ok()?.as_slice() {
            [Statement::Query(query)] => Some(query.clone()),
            _ => None,
        }
    };
    let select_of = |query: &Query| match query.body.as_ref() {
        SetExpr::Select(select) => Some(select.clone()),
        _ => None,
    };
    let is = |id: &Ident, expected: &str| match id.quote_style {
        None => id.value.eq_ignore_ascii_case(expected),
        Some(_) => id.value == expected,
    };
    let query = parse(query_body(sql))?;
    let select = select_of(&query)?;
    let [from] = select.from.as_slice() else { return None };
    let TableFactor::Table { name, alias, .. } = &from.relation else { return None };
    let table: Vec<&Ident> = name.0.iter().map(|part| part.as_ident()).collect::<Option<_>>()?;
    match table.as_slice() {
        [table] if is(table, "images") => {}
        [schema, table] if is(schema, dataset) && is(table, "images") => {}
        _ => return None,
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    // Nothing but that table in FROM and nothing but WHERE besides: with the projection
    // and WHERE of `plain` swapped in, the query (its FROM included) must be `plain`.
    let reference = alias.as_ref().map_or(name.to_string(), |alias| format!("{name} {alias}"));
    let plain = parse(&format!("SELECT image_id FROM {reference}"))?;
    let plain_select = select_of(&plain)?;
    let mut rest = query.clone();
    let mut rest_select = select.clone();
    (rest_select.projection, rest_select.selection) = (plain_select.projection.clone(), None);
    *rest.body = SetExpr::Select(rest_select);
    if rest != plain {
        return None;
    }
    // The projection: `image_id`, bare or qualified by the alias (or the table's name).
    let qualifier = alias.as_ref().map(|a| &a.name).or(table.last().copied());
    let column = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(Expr::Identifier(column))] => column,
        [SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))] => match parts.as_slice() {
            [q, column] if Some(q) == qualifier => column,
            _ => return None,
        },
        _ => return None,
    };
    if !is(column, "image_id") {
        return None;
    }
    let prefix = alias.as_ref().map_or(String::new(), |a| format!("{}.", a.name));
    let columns = parse(&format!("SELECT {prefix}image_id, {prefix}sha256, {prefix}split"))?;
    let mut widened = select;
    widened.projection = select_of(&columns)?.projection;
    let mut query = query;
    *query.body = SetExpr::Select(widened);
    Some(query.to_string())
}

/// Checks that each `min_recall.<category>` names a category of the dataset's ground-truth
/// boxes, at create, where a typo is cheap to fix (scoring fails such a check too, with
/// the same names, for definitions written before or by hand).
fn check_categories<'a>(version: &DatasetVersion, wanted: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let Some(objects) = &version.objects else {
        return Err(EngineError::InvalidArgument(format!(
            "min_recall.<category> thresholds are for detection: dataset {} has no ground-truth boxes",
            version.dataset
        )));
    };
    let known: Vec<String> = objects.categories.iter().map(|c| c.name.clone()).collect();
    for category in wanted {
        if !known.contains(category) {
            let of = format!("dataset {}", version.dataset);
            let problem = crate::scoring::unknown_class(category, ("category", "categories"), &of, &known);
            return Err(EngineError::InvalidArgument(format!("min_recall.{category}: {problem}")));
        }
    }
    Ok(())
}

/// Checks that each `min_iou.<class>` names a class of one of the dataset's mask sets (a
/// segmentation run is scored against one of them), at create, like `check_categories`.
fn check_mask_classes<'a>(
    layout: &WorkspaceLayout,
    dataset: &str,
    wanted: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let sources = masks::mask_sources(layout, dataset)?;
    if sources.is_empty() {
        return Err(EngineError::InvalidArgument(format!(
            "min_iou.<class> thresholds are for segmentation: dataset {dataset} has no ground-truth masks (import \
             them with `slicetest tag import --masks DIR --classes FILE`, or ingest COCO segmentations)"
        )));
    }
    let mut known: Vec<String> = Vec::new();
    for source in &sources {
        for class in masks::read_mask_set(layout, dataset, source)?.classes {
            if !known.contains(&class.name) {
                known.push(class.name);
            }
        }
    }
    for class in wanted {
        if !known.contains(class) {
            let of = match sources.as_slice() {
                [one] => format!("mask set {one} of dataset {dataset}"),
                _ => format!("the mask sets of dataset {dataset}"),
            };
            let problem = crate::scoring::unknown_class(class, ("class", "classes"), &of, &known);
            return Err(EngineError::InvalidArgument(format!("min_iou.{class}: {problem}")));
        }
    }
    Ok(())
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What [`Engine::drop_slice`]'s answer warns of, when it released any held-out image.
pub fn drop_warning(name: &str, released: Option<(u64, u64)>) -> Option<String> {
    let (version, released) = released.filter(|(_, n)| *n > 0)?;
    let (images, are, them) = if released == 1 { ("image", "is", "it") } else { ("images", "are", "them") };
    Some(format!(
        "{released} {images} held out by {name} v{version} {are} held out by no other slice: `slicetest holdout \
         export` now puts {them} in train.*, so a model trained on that export sees {them}"
    ))
}

fn message(text: String) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("result", DataType::Utf8, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![text]))]).expect("one column")
}

fn strings(values: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>())
}

fn numbers(values: impl IntoIterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<UInt64Array>())
}

/// `SHOW SLICES`: one row per slice.
fn slices_batch(slices: &[SliceInfo]) -> RecordBatch {
    let latest = |s: &SliceInfo| s.frozen.last().cloned();
    let schema = Schema::new(vec![
        Field::new("slice", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("frozen_versions", DataType::UInt64, false),
        Field::new("latest_version", DataType::UInt64, true),
        Field::new("members", DataType::UInt64, true),
        Field::new("holdout_members", DataType::UInt64, true),
        Field::new("comment", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, false),
    ]);
    let columns = vec![
        strings(slices.iter().map(|s| Some(s.definition.name.clone()))),
        strings(slices.iter().map(|s| Some(s.definition.dataset.clone()))),
        numbers(slices.iter().map(|s| Some(s.frozen.len() as u64))),
        numbers(slices.iter().map(|s| latest(s).map(|f| f.version))),
        numbers(slices.iter().map(|s| latest(s).map(|f| f.members))),
        numbers(slices.iter().map(|s| latest(s).map(|f| f.holdout_members))),
        strings(slices.iter().map(|s| s.definition.comment.clone())),
        strings(slices.iter().map(|s| Some(s.definition.query.clone()))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("consistent columns")
}

/// `FREEZE SLICE`: the version that now holds the members, whether it is new, its
/// hold-out settings, how many images held out by the version before no longer are, and
/// a note when the hold-out changed or held-out images left the slice
/// ([`FreezeOutcome::notes`], joined).
pub fn freeze_batch(outcome: &FreezeOutcome) -> RecordBatch {
    let f = &outcome.frozen;
    let schema = Schema::new(vec![
        Field::new("slice", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("members", DataType::UInt64, false),
        Field::new("holdout_members", DataType::UInt64, false),
        Field::new("new_version", DataType::Boolean, false),
        Field::new("holdout_share", DataType::Float64, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("released_from_holdout", DataType::UInt64, false),
        Field::new("note", DataType::Utf8, true),
    ]);
    let notes = outcome.notes();
    let note = (!notes.is_empty()).then(|| {
        notes
            .iter()
            .map(|n| if n.warning { format!("WARNING: {}", n.text) } else { n.text.clone() })
            .collect::<Vec<_>>()
            .join("; ")
    });
    let columns: Vec<ArrayRef> = vec![
        strings([Some(f.slice.clone())]),
        numbers([Some(f.version)]),
        numbers([Some(f.members)]),
        numbers([Some(f.holdout_members)]),
        Arc::new(datafusion::arrow::array::BooleanArray::from(vec![outcome.created])),
        Arc::new(datafusion::arrow::array::Float64Array::from(vec![f.holdout_share])),
        numbers([Some(f.seed)]),
        numbers([Some(outcome.released_from_holdout)]),
        strings([note]),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("consistent columns")
}

/// `DESCRIBE SLICE`: one row per frozen version.
fn versions_batch(info: &SliceInfo) -> RecordBatch {
    let f = &info.frozen;
    let schema = Schema::new(vec![
        Field::new("slice", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("members", DataType::UInt64, false),
        Field::new("holdout_members", DataType::UInt64, false),
        Field::new("holdout_share", DataType::Float64, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("dataset_versions", DataType::Utf8, false),
        Field::new("member_hash", DataType::Utf8, false),
        Field::new("frozen_at", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> =
        vec![
            strings(f.iter().map(|v| Some(v.slice.clone()))),
            numbers(f.iter().map(|v| Some(v.version))),
            numbers(f.iter().map(|v| Some(v.members))),
            numbers(f.iter().map(|v| Some(v.holdout_members))),
            Arc::new(datafusion::arrow::array::Float64Array::from_iter_values(f.iter().map(|v| v.holdout_share))),
            numbers(f.iter().map(|v| Some(v.seed))),
            strings(f.iter().map(|v| {
                Some(v.dataset_versions.iter().map(|(d, n)| format!("{d}@{n}")).collect::<Vec<_>>().join(","))
            })),
            strings(f.iter().map(|v| Some(v.member_hash.clone()))),
            strings(f.iter().map(|v| Some(v.frozen_at.clone()))),
        ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("consistent columns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_shape_is_widened_to_one_pass() {
        let widened = |q: &str| widened("street", q);
        assert_eq!(
            widened("SELECT image_id FROM images WHERE label = 'cat' AND brightness < 0.5").as_deref(),
            Some("SELECT image_id, sha256, split FROM images WHERE label = 'cat' AND brightness < 0.5")
        );
        assert_eq!(
            widened("select IMAGE_ID from Images").as_deref(),
            Some("SELECT image_id, sha256, split FROM Images")
        );
        assert_eq!(
            widened("SELECT i.image_id FROM images i WHERE i.faces > 0").as_deref(),
            Some("SELECT i.image_id, i.sha256, i.split FROM images i WHERE i.faces > 0")
        );
        assert_eq!(
            widened("SELECT x.image_id FROM street.images AS x WHERE x.image_id IN (SELECT image_id FROM t)")
                .as_deref(),
            Some(
                "SELECT x.image_id, x.sha256, x.split FROM street.images AS x WHERE x.image_id IN (SELECT image_id FROM t)"
            )
        );
        assert_eq!(
            widened("SELECT images.image_id FROM images WHERE split = 'test'").as_deref(),
            Some("SELECT image_id, sha256, split FROM images WHERE split = 'test'")
        );
    }

    #[test]
    fn trailing_comments_and_semicolons_are_left_out_where_a_query_is_embedded() {
        let q = "SELECT DISTINCT image_id FROM images WHERE label='dog'";
        for written in [
            format!("{q} -- dogs only"),
            format!("{q};"),
            format!("{q} ; ;\n"),
            format!("{q}; -- dogs; only\n-- and more\n"),
            format!("{q} /* dogs */"),
            format!("{q}\r\n-- dogs\r\n"),
        ] {
            assert_eq!(query_body(&written), q, "{written:?}");
            assert_eq!(slice_subquery(&written), format!("({q}\n) AS slice_query"));
        }
        // Comments inside stay; `--` and `;` in strings and quoted names are not the end.
        let inside = "SELECT image_id -- the id\nFROM images WHERE label <> '--;' AND \"a;--\" = 'é;'";
        assert_eq!(query_body(&format!("{inside} -- end")), inside);
        assert_eq!(query_body("SELECT 'é' AS image_id -- é"), "SELECT 'é' AS image_id");
        // Text that does not tokenize is left for planning to report.
        assert_eq!(query_body("SELECT 'unterminated  "), "SELECT 'unterminated");
        assert_eq!(query_body(" -- nothing\n ; "), "");
        assert!(members_sql("street", &format!("{q} -- dogs")).ends_with("label='dog'\n) AS slice_query)"));
        assert_eq!(
            widened("street", "SELECT image_id FROM images WHERE label = 'cat'; -- cats").as_deref(),
            Some("SELECT image_id, sha256, split FROM images WHERE label = 'cat'")
        );
        assert_eq!(stored_query("  SELECT 1 ; ;\n"), "SELECT 1");
    }

    #[test]
    fn every_other_shape_is_joined_back_to_images() {
        for query in [
            "SELECT DISTINCT image_id FROM images",
            "SELECT image_id FROM images WHERE x > 1 LIMIT 10",
            "SELECT image_id FROM images ORDER BY brightness DESC LIMIT 100",
            "SELECT image_id FROM images GROUP BY image_id",
            "SELECT image_id FROM images GROUP BY image_id HAVING count(*) > 1",
            "SELECT image_id FROM images WHERE a UNION SELECT image_id FROM images WHERE b",
            "WITH d AS (SELECT image_id FROM images) SELECT image_id FROM d",
            "WITH d AS (SELECT 1) SELECT image_id FROM images",
            "SELECT i.image_id FROM images i JOIN detections d ON i.image_id = d.image_id",
            "SELECT image_id FROM images, detections",
            "SELECT image_id FROM detections WHERE label = 'person'",
            "SELECT image_id FROM other.images",
            "SELECT image_id FROM slicetest.street.images",
            "SELECT image_id FROM (SELECT * FROM images) t",
            "SELECT image_id FROM text_search('a dog', 10)",
            "SELECT image_id AS id FROM images",
            "SELECT image_id, label FROM images",
            "SELECT upper(image_id) FROM images",
            "SELECT \"IMAGE_ID\" FROM images",
            "SELECT images.image_id FROM images i",
            "SELECT j.image_id FROM images i",
            "SELECT i.image_id FROM images i(a, b)",
            "SELECT image_id FROM images; SELECT 1",
            "not sql",
        ] {
            assert_eq!(widened("street", query), None, "{query}");
            assert!(members_sql("street", query).contains("IN (SELECT image_id FROM ("), "{query}");
        }
    }
}
