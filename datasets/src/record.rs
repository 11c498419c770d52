//! The `images` table: its core columns and how probed candidates become a record batch.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::import::Candidate;
use crate::probe::ImageFacts;

/// Columns slicetest computes from the image file itself; a manifest may not supply them.
pub const COMPUTED_COLUMNS: &[&str] = &["uri", "sha256", "width", "height", "format", "bytes"];

/// The core columns every `images` table starts with, in order.
pub fn core_fields() -> Vec<Field> {
    vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("split", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
    ]
}

/// Builds the `images` rows for probed candidates, followed by their extra columns.
///
/// `accepted` pairs each candidate with its facts; `extra` holds one row per
/// candidate `row` (rows of rejected candidates are dropped here).
pub fn build_batch(accepted: &[(&Candidate, ImageFacts)], extra: Option<&RecordBatch>) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&(&Candidate, ImageFacts)) -> Option<String>| -> ArrayRef {
        Arc::new(accepted.iter().map(f).collect::<StringArray>())
    };
    let mut columns: Vec<ArrayRef> = vec![
        strings(&|(c, _)| Some(c.image_id.clone())),
        strings(&|(c, _)| Some(c.uri.clone())),
        strings(&|(_, f)| Some(f.sha256.clone())),
        Arc::new(accepted.iter().map(|(_, f)| f.width as i32).collect::<Int32Array>()),
        Arc::new(accepted.iter().map(|(_, f)| f.height as i32).collect::<Int32Array>()),
        strings(&|(_, f)| Some(f.format.to_string())),
        Arc::new(accepted.iter().map(|(_, f)| f.bytes as i64).collect::<Int64Array>()),
        strings(&|(c, _)| c.split.clone()),
        strings(&|(c, _)| c.label.clone()),
    ];
    let mut fields = core_fields();
    if let Some(extra) = extra {
        let rows = UInt32Array::from_iter_values(accepted.iter().map(|(c, _)| c.row as u32));
        let taken = take_record_batch(extra, &rows)?;
        fields.extend(taken.schema().fields().iter().map(|f| f.as_ref().clone()));
        columns.extend(taken.columns().iter().cloned());
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}
