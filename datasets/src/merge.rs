//! Building a new version from the previous one plus the rows of an ingest.
//!
//! Rows are keyed by `image_id`: a new row replaces the old row with the same id, other
//! old rows stay. Columns are the union of both schemas (a column only one side has is
//! NULL on the other side); a column whose type changed is an error. The result is
//! sorted by `image_id`, so the same content always gives the same table.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{
    SortOptions, concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};

use crate::error::{DatasetError, Result};

/// How an ingest changed the dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeStats {
    /// Images whose id was not in the previous version.
    pub added: usize,
    /// Images whose id was there, with different content or columns.
    pub changed: usize,
    /// Images whose id was there with identical values.
    pub unchanged: usize,
    /// Images kept from the previous version that this ingest did not mention.
    pub kept: usize,
}

/// Sorts a batch by `image_id`.
pub fn sort_by_id(batch: &RecordBatch) -> Result<RecordBatch> {
    let ids = batch.column_by_name("image_id").expect("image_id column");
    let order = sort_to_indices(ids, Some(SortOptions::default()), None)?;
    Ok(take_record_batch(batch, &order)?)
}

/// Merges `new` (this ingest's rows) onto `previous` (the latest version, if any).
pub fn merge(
    previous: Option<&RecordBatch>,
    new: &RecordBatch,
    previous_version: u64,
) -> Result<(RecordBatch, MergeStats)> {
    let new = sort_by_id(new)?;
    let Some(previous) = previous else {
        let stats = MergeStats { added: new.num_rows(), ..Default::default() };
        return Ok((new, stats));
    };
    let schema = union_schema(previous.schema_ref(), new.schema_ref(), previous_version)?;
    let previous = align(previous, &schema)?;
    let new = align(&new, &schema)?;

    let new_ids: HashSet<&str> = new.column(0).as_string::<i32>().iter().flatten().collect();
    let prev_ids = previous.column(0).as_string::<i32>();
    let keep_mask: BooleanArray = prev_ids.iter().map(|id| Some(!new_ids.contains(id.unwrap_or_default()))).collect();
    let kept = filter_record_batch(&previous, &keep_mask)?;

    let mut stats = MergeStats { kept: kept.num_rows(), ..Default::default() };
    let replaced = filter_record_batch(&previous, &datafusion::arrow::compute::not(&keep_mask)?)?;
    let replaced = sort_by_id(&replaced)?;
    stats.changed = count_changed(&replaced, &new);
    stats.unchanged = replaced.num_rows() - stats.changed;
    stats.added = new.num_rows() - replaced.num_rows();

    let merged = concat_batches(&schema, [&kept, &new])?;
    Ok((sort_by_id(&merged)?, stats))
}

/// Among rows of `new` whose id is in `replaced` (both sorted by id), how many differ.
fn count_changed(replaced: &RecordBatch, new: &RecordBatch) -> usize {
    let new_ids = new.column(0).as_string::<i32>();
    let old_ids = replaced.column(0).as_string::<i32>();
    let (mut i, mut changed) = (0, 0);
    for j in 0..old_ids.len() {
        while new_ids.value(i) != old_ids.value(j) {
            i += 1;
        }
        let same = (0..new.num_columns())
            .all(|c| new.column(c).slice(i, 1).to_data() == replaced.column(c).slice(j, 1).to_data());
        changed += usize::from(!same);
    }
    changed
}

fn union_schema(old: &SchemaRef, new: &SchemaRef, previous_version: u64) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for f in old.fields() {
        let mut field = f.as_ref().clone();
        match new.field_with_name(f.name()) {
            Ok(nf) if nf.data_type() != f.data_type() => {
                return Err(DatasetError::NothingIngested {
                    message: format!(
                        "column {:?} is {} in version {previous_version} but {} in this ingest; \
                         convert it in the input, or ingest into a new dataset",
                        f.name(),
                        f.data_type(),
                        nf.data_type()
                    ),
                });
            }
            Ok(nf) => field = field.with_nullable(f.is_nullable() || nf.is_nullable()),
            Err(_) => field = field.with_nullable(true),
        }
        fields.push(field);
    }
    for f in new.fields() {
        if old.field_with_name(f.name()).is_err() {
            fields.push(f.as_ref().clone().with_nullable(true));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Reorders a batch's columns to `schema`, filling absent columns with NULLs.
fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    fn batch(ids: &[&str], shas: &[&str], extra: Option<(&str, Vec<Option<i64>>)>) -> RecordBatch {
        let mut fields =
            vec![Field::new("image_id", DataType::Utf8, false), Field::new("sha256", DataType::Utf8, false)];
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(StringArray::from(shas.to_vec()))];
        if let Some((name, values)) = extra {
            fields.push(Field::new(name, DataType::Int64, true));
            cols.push(Arc::new(Int64Array::from(values)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    #[test]
    fn first_ingest_is_sorted() {
        let (m, s) = merge(None, &batch(&["b", "a"], &["2", "1"], None), 0).unwrap();
        assert_eq!(m.column(0).as_string::<i32>().value(0), "a");
        assert_eq!(s.added, 2);
    }

    #[test]
    fn reingesting_the_same_rows_changes_nothing() {
        let prev = batch(&["a", "b"], &["1", "2"], None);
        let (m, s) = merge(Some(&prev), &batch(&["b", "a"], &["2", "1"], None), 1).unwrap();
        assert_eq!(m, prev);
        assert_eq!(s, MergeStats { unchanged: 2, ..Default::default() });
    }

    #[test]
    fn new_rows_are_added_changed_rows_replaced_and_columns_unioned() {
        let prev = batch(&["a", "b"], &["1", "2"], None);
        let new = batch(&["b", "c"], &["2x", "3"], Some(("num_people", vec![Some(4), None])));
        let (m, s) = merge(Some(&prev), &new, 1).unwrap();
        assert_eq!(s, MergeStats { added: 1, changed: 1, unchanged: 0, kept: 1 });
        let ids: Vec<_> = m.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let shas: Vec<_> = m.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(shas, ["1", "2x", "3"]);
        let people = m.column_by_name("num_people").unwrap();
        assert!(people.is_null(0) && !people.is_null(1) && people.is_null(2));
    }

    #[test]
    fn a_column_changing_type_is_refused() {
        let prev = batch(&["a"], &["1"], Some(("x", vec![Some(1)])));
        let fields = vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new("x", DataType::Utf8, true),
        ];
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["b"])),
            Arc::new(StringArray::from(vec!["2"])),
            Arc::new(StringArray::from(vec!["one"])),
        ];
        let new = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        let err = merge(Some(&prev), &new, 3).unwrap_err().to_string();
        assert!(err.contains("column \"x\" is Int64 in version 3 but Utf8"), "{err}");
    }
}
