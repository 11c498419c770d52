//! Slices through the engine: create (query checked), drop, list, describe and freeze.
//! Storage and the hold-out rule live in `slicetest_datasets::slice`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use slicetest_datasets::slice::{self, FrozenSlice, SliceDefinition};
use slicetest_datasets::{FreezeOutcome, FreezeRequest, HoldoutAssigner};

use crate::error::{EngineError, Result};
use crate::statement::{SliceStatement, SliceThresholds};
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
        let dataset = self.workspace.dataset_or_default(None)?;
        let ctx = self.dataset_context(Some(&dataset)).await?;
        let df = query::plan(&ctx, query).await?;
        let fields: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        if !fields.iter().any(|f| f == "image_id") {
            return Err(EngineError::InvalidArgument(format!(
                "the query of slice {name:?} must return an image_id column; it returns: {}",
                fields.join(", ")
            )));
        }
        let definition = SliceDefinition {
            name: name.to_string(),
            query: query.to_string(),
            dataset,
            comment,
            created_at: chrono_now(),
            min_accuracy: thresholds.min_accuracy,
            min_samples: thresholds.min_samples,
            min_map: thresholds.min_map,
            min_ap50: thresholds.min_ap50,
            min_recall: thresholds.min_recall,
            min_class_recall: thresholds.min_class_recall,
            min_miou: thresholds.min_miou,
            min_pixel_accuracy: thresholds.min_pixel_accuracy,
            min_class_iou: thresholds.min_class_iou,
        };
        slice::create_definition(self.workspace.layout(), &definition)?;
        Ok(definition)
    }

    /// Removes a slice with all its frozen versions.
    pub fn drop_slice(&self, name: &str) -> Result<()> {
        let _lock = self.workspace.lock()?;
        Ok(slice::drop_slice(self.workspace.layout(), name)?)
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
    /// of them (chosen by [`HoldoutAssigner`]) in the hold-out set. Takes no lock:
    /// concurrent freezes, here or on other machines sharing a bucket, each commit a version
    /// or find that the one committed first has their members ([`slice::freeze`]).
    pub async fn freeze_slice(&self, name: &str, holdout: f64, seed: u64) -> Result<FreezeOutcome> {
        let assigner = HoldoutAssigner::new(holdout, seed)?;
        let layout = self.workspace.layout();
        let definition = slice::read_definition(layout, name)?;
        let ctx = self.dataset_context(Some(&definition.dataset)).await?;
        let members_sql = format!(
            "SELECT i.image_id, i.sha256, i.split FROM \"{ds}\".images i \
             WHERE i.image_id IN (SELECT image_id FROM ({q}) AS slice_query)",
            ds = definition.dataset,
            q = definition.query
        );
        let batches =
            query::plan(&ctx, &members_sql).await?.collect().await.map_err(|e| EngineError::query(e, None))?;
        // As Utf8 arrays (the columns may come back as views or dictionaries), one table.
        let schema = slice::request_schema();
        let utf8 = |batch: &RecordBatch| -> Result<RecordBatch> {
            let columns = (0..3)
                .map(|i| cast(batch.column(i), &DataType::Utf8).map_err(|e| EngineError::query(e.into(), None)))
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| EngineError::query(e.into(), None))
        };
        let batches = batches.iter().map(utf8).collect::<Result<Vec<_>>>()?;
        let members = concat_batches(&schema, &batches).map_err(|e| EngineError::query(e.into(), None))?;
        let dataset_versions: BTreeMap<String, u64> =
            self.workspace.latest_versions()?.into_iter().map(|v| (v.dataset, v.version)).collect();
        let request = FreezeRequest { members, holdout: assigner, dataset_versions };
        Ok(slice::freeze(layout, &definition, request)?)
    }

    /// Runs a slice statement and returns its result as one batch.
    pub async fn run_slice_statement(&self, statement: SliceStatement) -> Result<RecordBatch> {
        match statement {
            SliceStatement::Create { name, comment, thresholds, query } => {
                let d = self.create_slice(&name, &query, comment, thresholds).await?;
                Ok(message(format!("slice {} created on dataset {}", d.name, d.dataset)))
            }
            SliceStatement::Drop { name, if_exists } => match self.drop_slice(&name) {
                Ok(()) => Ok(message(format!("slice {name} dropped"))),
                Err(EngineError::Dataset(slicetest_datasets::DatasetError::UnknownSlice { .. })) if if_exists => {
                    Ok(message(format!("slice {name} does not exist; nothing dropped")))
                }
                Err(e) => Err(e),
            },
            SliceStatement::Show => Ok(slices_batch(&self.slices()?)),
            SliceStatement::Describe { name } => Ok(versions_batch(&self.slice(&name)?)),
            SliceStatement::Freeze { name, holdout, seed } => {
                let outcome = self.freeze_slice(&name, holdout, seed).await?;
                Ok(freeze_batch(&outcome))
            }
        }
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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

/// `FREEZE SLICE`: the version that now holds the members, and whether it is new.
fn freeze_batch(outcome: &FreezeOutcome) -> RecordBatch {
    let f = &outcome.frozen;
    let schema = Schema::new(vec![
        Field::new("slice", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("members", DataType::UInt64, false),
        Field::new("holdout_members", DataType::UInt64, false),
        Field::new("new_version", DataType::Boolean, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings([Some(f.slice.clone())]),
        numbers([Some(f.version)]),
        numbers([Some(f.members)]),
        numbers([Some(f.holdout_members)]),
        Arc::new(datafusion::arrow::array::BooleanArray::from(vec![outcome.created])),
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
