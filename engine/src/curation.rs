//! Working with frozen slices: the per-slice breakdown, the diff between a slice's live
//! query and its latest frozen version, slice export, and the hold-out / training export.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use rayon::prelude::*;
use slicetest_datasets::slice::{self, FrozenSlice, SliceDefinition, members_of};
use slicetest_datasets::version::{DatasetVersion, read_version};

use crate::error::{EngineError, Result};
use crate::{Engine, query};

/// The name a slice export gives the dataset version's images in its session.
const EXPORT_IMAGES: &str = "slice_export_images";

/// Default minimum number of evaluation samples (test split or hold-out) for a slice's
/// metric to mean something.
pub const DEFAULT_MIN_TEST_SAMPLES: u64 = 30;

/// Where the members of one slice's latest frozen version sit.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceBreakdown {
    /// The slice.
    pub slice: String,
    /// Its dataset.
    pub dataset: String,
    /// The latest frozen version (None: never frozen, counts are zero).
    pub version: Option<u64>,
    /// Members in total.
    pub members: u64,
    /// Members with split `train`, not held out.
    pub train: u64,
    /// Members with split `val`, not held out.
    pub val: u64,
    /// Members with split `test`, not held out.
    pub test: u64,
    /// Members in the hold-out set (whatever their split).
    pub holdout: u64,
    /// Members with no split, not held out.
    pub unsplit: u64,
    /// Members / images in the dataset's latest version.
    pub coverage: f64,
}

impl SliceBreakdown {
    /// Samples a model run can be scored on: the test split plus the hold-out set.
    pub fn evaluation_samples(&self) -> u64 {
        self.test + self.holdout
    }
}

/// The kind of difference [`Engine::slice_diff`] reports.
pub const DIFF_KINDS: [&str; 3] = ["added", "removed", "changed"];

impl Engine {
    /// The breakdown of every slice's latest frozen version. Reads only the frozen member
    /// files (which carry each member's split), not the dataset; the slices in parallel,
    /// each dataset's manifest once.
    pub fn breakdown(&self) -> Result<Vec<SliceBreakdown>> {
        let layout = self.workspace.layout();
        let images: HashMap<String, u64> = (self.workspace.summaries()?.into_iter())
            .map(|summary| (summary.latest.dataset.clone(), summary.latest.row_count))
            .collect();
        let breakdown_of = |name: &String| {
            let definition = slice::read_definition(layout, name)?;
            let images = match images.get(&definition.dataset) {
                Some(&n) => n,
                // A slice of a dataset that is gone: the same error as for one slice.
                None => self.workspace.latest(&definition.dataset)?.row_count,
            };
            self.breakdown_of(&definition, images)
        };
        slice::slice_names(layout)?.par_iter().map(breakdown_of).collect()
    }

    /// The breakdown of one slice's latest frozen version (zero counts if never frozen).
    pub fn slice_breakdown(&self, name: &str) -> Result<SliceBreakdown> {
        let definition = slice::read_definition(self.workspace.layout(), name)?;
        let images = self.workspace.latest(&definition.dataset)?.row_count;
        self.breakdown_of(&definition, images)
    }

    /// The breakdown of the slice `definition` defines, whose dataset's latest version has
    /// `images` images.
    fn breakdown_of(&self, definition: &SliceDefinition, images: u64) -> Result<SliceBreakdown> {
        let layout = self.workspace.layout();
        let name = definition.name.as_str();
        let mut b = SliceBreakdown {
            slice: definition.name.clone(),
            dataset: definition.dataset.clone(),
            version: None,
            members: 0,
            train: 0,
            val: 0,
            test: 0,
            holdout: 0,
            unsplit: 0,
            coverage: 0.0,
        };
        let Some(frozen) = slice::latest_frozen(layout, name)? else {
            return Ok(b);
        };
        // Only the two columns counted are decoded (the tamper check still hashes the file).
        let batch = slice::read_member_columns(layout, &frozen, Some(&["split", "holdout"]))?;
        let splits = batch.column_by_name("split").expect("frozen members have a split").as_string::<i32>();
        let holdout = batch.column_by_name("holdout").expect("frozen members have a holdout").as_boolean();
        for i in 0..batch.num_rows() {
            let counter = if holdout.value(i) {
                &mut b.holdout
            } else {
                match splits.is_valid(i).then(|| splits.value(i)) {
                    Some("train") => &mut b.train,
                    Some("val") => &mut b.val,
                    Some("test") => &mut b.test,
                    _ => &mut b.unsplit,
                }
            };
            *counter += 1;
        }
        b.version = Some(frozen.version);
        b.members = frozen.members;
        b.coverage = if images == 0 { 0.0 } else { frozen.members as f64 / images as f64 };
        Ok(b)
    }

    /// Images the slice's live query matches now that its latest frozen version lacks
    /// (`added`), frozen members it no longer matches (`removed`), and members whose image
    /// content changed since freezing (`changed`). Columns: `change`, `image_id`.
    pub async fn slice_diff(&self, name: &str) -> Result<SendableRecordBatchStream> {
        let definition = slice::read_definition(self.workspace.layout(), name)?;
        slice::read_frozen(self.workspace.layout(), name, None)?;
        let ctx = self.dataset_context(Some(&definition.dataset)).await?;
        crate::slices::check_query(&ctx, name, &definition.dataset, &definition.query).await?;
        let sql = format!(
            "WITH live AS (SELECT i.image_id, i.sha256 FROM \"{ds}\".images i \
                           WHERE i.image_id IN (SELECT image_id FROM {q})), \
                  frozen AS (SELECT image_id, sha256 FROM slice('{name}')) \
             SELECT 'added' AS change, image_id FROM live WHERE image_id NOT IN (SELECT image_id FROM frozen) \
             UNION ALL SELECT 'removed', image_id FROM frozen WHERE image_id NOT IN (SELECT image_id FROM live) \
             UNION ALL SELECT 'changed', f.image_id FROM frozen f JOIN live l ON f.image_id = l.image_id \
                       WHERE f.sha256 <> l.sha256 \
             ORDER BY change, image_id",
            ds = definition.dataset,
            q = crate::slices::slice_subquery(&definition.query),
        );
        query::stream(&ctx, &sql).await
    }

    /// The members of a frozen version joined to their images: `image_id`, `uri`, `label`,
    /// `split`, `holdout`, `sha256`, then every other column of the dataset (`width`,
    /// `height`, …, manifest columns) and every tag column. Reproducible: split, hold-out
    /// and sha256 are as frozen, the image columns come from the dataset version the slice
    /// was frozen against (its manifest's `dataset_versions`), and the tags are those of
    /// each member's frozen bytes (tags are keyed by `sha256`; NULL where a tagger has no
    /// row for them). A re-ingest changes nothing of an existing version's export; only
    /// tagging images (or removing a tagger) does. A dataset column named `holdout` is
    /// exported as `images_holdout`.
    pub async fn slice_export(&self, name: &str, version: Option<u64>) -> Result<SendableRecordBatchStream> {
        let layout = self.workspace.layout();
        let definition = slice::read_definition(layout, name)?;
        let frozen = slice::read_frozen(layout, name, version)?;
        let dataset_version = self.frozen_against(&frozen)?;
        let ctx = self.dataset_context(Some(&definition.dataset)).await?;
        let images = slicetest_sql::slices::version_images(&ctx, &self.workspace, &dataset_version).await?;
        let columns: Vec<String> = images.schema().fields().iter().map(|f| f.name().clone()).collect();
        ctx.register_table(EXPORT_IMAGES, images).map_err(|e| EngineError::query(e, None))?;
        // sha256 as frozen (equal to the version's, which the join requires).
        let column = |c: &String| match c.as_str() {
            "sha256" => ", s.sha256".to_string(),
            // The export's `holdout` is the slice's flag; a dataset column of that name (a
            // manifest's own) keeps its values under another name rather than a second
            // `holdout` column.
            "holdout" => ", i.holdout AS images_holdout".to_string(),
            c => format!(", i.\"{}\"", c.replace('"', "\"\"")),
        };
        let others: String = (columns.iter())
            .filter(|c| !["image_id", "uri", "label", "split"].contains(&c.as_str()))
            .map(column)
            .collect();
        let sql = format!(
            "SELECT s.image_id, i.uri, i.label, s.split, s.holdout{others} \
             FROM slice('{name}', {v}) s LEFT JOIN {EXPORT_IMAGES} i \
               ON s.image_id = i.image_id AND s.sha256 = i.sha256 \
             ORDER BY s.image_id",
            v = frozen.version,
        );
        query::stream(&ctx, &sql).await
    }

    /// The dataset version a frozen slice version was frozen against.
    fn frozen_against(&self, frozen: &FrozenSlice) -> Result<DatasetVersion> {
        let Some(&number) = frozen.dataset_versions.get(&frozen.dataset) else {
            return Err(EngineError::InvalidArgument(format!(
                "slice {:?} version {} records no version of its dataset {:?} (it records {:?})",
                frozen.slice, frozen.version, frozen.dataset, frozen.dataset_versions
            )));
        };
        read_version(self.workspace.layout(), &frozen.dataset, number).map_err(|e| {
            EngineError::from(e).context(format!(
                "slice {:?} version {} was frozen against dataset {} version {number}, which cannot be read",
                frozen.slice, frozen.version, frozen.dataset
            ))
        })
    }

    /// Two manifests of `dataset`: the hold-out set (every image held out by the latest
    /// frozen version of any of its slices) and the training set (every other image whose
    /// split is not `test` or `val`). An image held out for one slice is never in the
    /// training set, even if another slice keeps it.
    pub async fn holdout_export(
        &self,
        dataset: Option<&str>,
    ) -> Result<(SendableRecordBatchStream, SendableRecordBatchStream)> {
        let dataset = self.workspace.dataset_or_default(dataset)?;
        self.workspace.latest(&dataset)?;
        let held = self.held_out_ids(&dataset)?;
        let ctx = self.dataset_context(Some(&dataset)).await?;
        let schema = Arc::new(Schema::new(vec![Field::new("image_id", DataType::Utf8, false)]));
        let ids = StringArray::from_iter_values(held.iter());
        let table = MemTable::try_new(schema.clone(), vec![vec![RecordBatch::try_new(schema, vec![Arc::new(ids)])?]])?;
        ctx.register_table("held_out_ids", Arc::new(table)).map_err(|e| EngineError::query(e, None))?;
        let holdout = query::stream(
            &ctx,
            &format!(
                "SELECT i.* FROM \"{dataset}\".images i WHERE i.image_id IN (SELECT image_id FROM held_out_ids) \
                 ORDER BY i.image_id"
            ),
        )
        .await?;
        let train = query::stream(
            &ctx,
            &format!(
                "SELECT i.* FROM \"{dataset}\".images i \
                 WHERE i.image_id NOT IN (SELECT image_id FROM held_out_ids) \
                   AND (i.split IS NULL OR i.split NOT IN ('test', 'val')) ORDER BY i.image_id"
            ),
        )
        .await?;
        Ok((holdout, train))
    }

    /// Every image of `dataset` held out by the latest frozen version of any of its
    /// slices, sorted.
    pub fn held_out_ids(&self, dataset: &str) -> Result<Vec<String>> {
        self.held_out_ids_except(dataset, None)
    }

    /// [`Engine::held_out_ids`] of every slice but `except`.
    pub(crate) fn held_out_ids_except(&self, dataset: &str, except: Option<&str>) -> Result<Vec<String>> {
        let layout = self.workspace.layout();
        let mut held = HashSet::new();
        for name in slice::slice_names(layout)? {
            if Some(name.as_str()) == except || slice::read_definition(layout, &name)?.dataset != dataset {
                continue;
            }
            let Some(frozen) = slice::latest_frozen(layout, &name)? else { continue };
            let members = members_of(&slice::read_members(layout, &frozen)?);
            held.extend(members.into_iter().filter(|m| m.holdout).map(|m| m.image_id));
        }
        let mut held: Vec<String> = held.into_iter().collect();
        held.sort();
        Ok(held)
    }
}
