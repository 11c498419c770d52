//! Running a tagger: which images still need tags, tagging them in parallel chunks, and
//! republishing the tagger's file as it goes (so a killed run resumes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float32Builder, Int32Builder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rayon::prelude::*;
use slicetest_datasets::DatasetError;
use slicetest_datasets::parts::Shard;
use slicetest_datasets::progress::bar;
use slicetest_datasets::tags::{self, TagWriter, TaggerProvenance};

use super::{FoundBox, ImageTagger, ImageTags, TagOptions, TagValue, TaggerReport};
use crate::Engine;
use crate::error::Result;

/// The images of a dataset's latest version: id → (sha256, uri), plus the names of its
/// columns. What taggers tag and imports may name.
pub(crate) struct CurrentImages {
    pub(crate) dataset: String,
    pub(crate) version: u64,
    pub(crate) rows: HashMap<String, (String, String)>,
    /// Sorted ids, so runs tag in a reproducible order.
    pub(crate) order: Vec<String>,
    pub(crate) columns: Vec<String>,
}

/// Where a tagger run stands: what is stored for the images as they are now, and the
/// generation its parts go to.
pub(super) struct Progress {
    pub(super) provenance: TaggerProvenance,
    pub(super) writer: TagWriter,
    /// Images already tagged as they are now.
    pub(super) done: HashSet<String>,
    /// Whether stored tags were left behind because the tagger's parameters changed.
    pub(super) rebuilt: bool,
    /// How many of the run's shard are in `done`.
    pub(super) already: usize,
}

impl Engine {
    pub(crate) fn current_images(&self, dataset: &str) -> Result<CurrentImages> {
        let latest = self.latest_manifest(Some(dataset))?;
        let batch = slicetest_datasets::version::read_image_columns(
            self.workspace.layout(),
            &latest,
            &["image_id", "sha256", "uri"],
        )?;
        let column = |name: &str| {
            datafusion::arrow::compute::cast(batch.column_by_name(name).expect("core column"), &DataType::Utf8)
        };
        let (ids, shas, uris) = (column("image_id")?, column("sha256")?, column("uri")?);
        let as_str = |a: &ArrayRef| a.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone();
        let (ids, shas, uris) = (as_str(&ids), as_str(&shas), as_str(&uris));
        let rows: HashMap<String, (String, String)> = (0..ids.len())
            .map(|i| (ids.value(i).to_string(), (shas.value(i).to_string(), uris.value(i).to_string())))
            .collect();
        let mut order: Vec<String> = rows.keys().cloned().collect();
        order.sort();
        let columns = latest.columns.iter().map(|c| c.name.clone()).collect();
        Ok(CurrentImages { dataset: dataset.to_string(), version: latest.version, rows, order, columns })
    }

    /// Finds which current images a tagger has rows for, checks that its columns are
    /// free, and opens the generation its parts go to (a new one when its parameters
    /// changed). Rows of images that left the dataset or changed stay in their parts;
    /// readers skip them (they join on the current sha256).
    pub(super) fn progress(
        &self,
        current: &CurrentImages,
        provenance: TaggerProvenance,
        columns: &[String],
        shard: Shard,
    ) -> Result<Progress> {
        let layout = self.workspace.layout();
        let tagger = provenance.tagger.clone();
        let taken = tags::taken_columns(layout, &current.dataset, &current.columns, &tagger)?;
        tags::check_columns(&tagger, columns.iter().map(String::as_str), &taken)?;
        let stored = tags::read_tags(layout, &current.dataset, &tagger)?;
        let rebuilt = stored.as_ref().is_some_and(|s| s.provenance.parameters_hash != provenance.parameters_hash);
        let writer = TagWriter::open(layout, &current.dataset, &provenance, false)?;
        let is_current = |id: &str, sha: &str| current.rows.get(id).is_some_and(|(s, _)| s == sha);
        let done: HashSet<String> = match stored.filter(|_| !rebuilt) {
            Some(stored) => {
                stored.tagged().into_iter().filter(|(id, sha)| is_current(id, sha)).map(|(id, _)| id).collect()
            }
            None => HashSet::new(),
        };
        let already = done.iter().filter(|id| shard.contains(id)).count();
        Ok(Progress { provenance, writer, done, rebuilt, already })
    }

    /// Runs a pixel tagger over every image it has not tagged yet.
    pub(super) fn run_image_tagger(
        &self,
        current: &CurrentImages,
        tagger: &dyn ImageTagger,
        options: &TagOptions,
    ) -> Result<TaggerReport> {
        let started = Instant::now();
        let fields = tagger.fields();
        let columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let provenance = tagger.provenance().computed_on(slicetest_embed::cpu::describe());
        let state = self.progress(current, provenance, &columns, options.shard)?;
        let pending: Vec<&String> =
            current.order.iter().filter(|id| !state.done.contains(*id) && options.shard.contains(id)).collect();
        let layout = self.workspace.layout();
        let bar = bar(pending.len() as u64, &format!("tagging ({})", state.provenance.tagger), options.progress);
        let mut rows: Vec<(String, String, Option<ImageTags>)> = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut last_publish = Instant::now();
        let mut published = 0;
        for ids in pending.chunks(options.chunk_size.max(1)) {
            let tagged: Vec<(String, String, std::result::Result<ImageTags, String>)> = ids
                .par_iter()
                .map(|id| {
                    let (sha, uri) = &current.rows[*id];
                    let result = crate::images::open_ingested_image(&layout.resolve_uri(uri), sha)
                        .and_then(|image| tagger.tag(&image))
                        .map_err(|e| e.to_string());
                    (id.to_string(), sha.clone(), result)
                })
                .collect();
            bar.inc(ids.len() as u64);
            // A failed image gets no row: the next run tries it again (a file restored, a
            // transient bucket error), and until then its tags read NULL, as untagged ones do.
            for (id, sha, result) in tagged {
                match result {
                    Ok(tags) => rows.push((id, sha, Some(tags))),
                    Err(reason) => failed.push((id, reason)),
                }
            }
            // A part every few seconds (not every chunk: many small parts read slower).
            if last_publish.elapsed().as_secs_f64() >= options.checkpoint_seconds {
                publish(&state, &fields, tagger.finds_boxes(), &rows[published..])?;
                published = rows.len();
                last_publish = Instant::now();
            }
        }
        bar.finish_and_clear();
        publish(&state, &fields, tagger.finds_boxes(), &rows[published..])?;
        state.writer.retire_older()?;
        Ok(TaggerReport {
            tagger: state.provenance.tagger.clone(),
            columns,
            tagged: rows.len(),
            already_tagged: state.already,
            rebuilt: state.rebuilt,
            boxes: rows.iter().filter_map(|r| r.2.as_ref()).map(|t| t.boxes.len()).sum(),
            failed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Adds `rows` as a part of the run's generation (nothing for no rows).
pub(super) fn publish(
    state: &Progress,
    fields: &[Field],
    finds_boxes: bool,
    rows: &[(String, String, Option<ImageTags>)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let boxes = if finds_boxes { Some(box_batch(rows)?) } else { None };
    state.writer.append(&tag_batch(fields, rows)?, boxes.as_ref())?;
    Ok(())
}

/// image_id, sha256, then one column per field; a row without tags is all NULL.
pub(super) fn tag_batch(fields: &[Field], rows: &[(String, String, Option<ImageTags>)]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
    ];
    for (i, field) in fields.iter().enumerate() {
        let value = |r: &(String, String, Option<ImageTags>)| r.2.as_ref().map(|t| t.values[i].clone());
        let array: ArrayRef = match field.data_type() {
            DataType::Float32 => {
                let mut b = Float32Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_float)));
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_int)));
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_bool)));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                rows.iter().for_each(|r| b.append_option(value(r).and_then(as_text)));
                Arc::new(b.finish())
            }
        };
        columns.push(array);
    }
    let mut schema_fields = tags::key_fields();
    schema_fields.extend(fields.iter().map(|f| f.clone().with_nullable(true)));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).map_err(DatasetError::from)?)
}

fn as_float(v: TagValue) -> Option<f32> {
    if let TagValue::Float(x) = v { Some(x) } else { None }
}
fn as_int(v: TagValue) -> Option<i32> {
    if let TagValue::Int(x) = v { Some(x) } else { None }
}
fn as_bool(v: TagValue) -> Option<bool> {
    if let TagValue::Bool(x) = v { Some(x) } else { None }
}
fn as_text(v: TagValue) -> Option<String> {
    if let TagValue::Text(x) = v { Some(x) } else { None }
}

/// The detections file rows of `rows`' boxes.
pub(super) fn box_batch(rows: &[(String, String, Option<ImageTags>)]) -> Result<RecordBatch> {
    let boxes: Vec<(&str, &str, &FoundBox)> = rows
        .iter()
        .filter_map(|(id, sha, tags)| tags.as_ref().map(|t| (id, sha, t)))
        .flat_map(|(id, sha, t)| t.boxes.iter().map(move |b| (id.as_str(), sha.as_str(), b)))
        .collect();
    let floats = |f: &dyn Fn(&FoundBox) -> f32| -> ArrayRef {
        Arc::new(datafusion::arrow::array::Float32Array::from_iter_values(boxes.iter().map(|b| f(b.2))))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.0))),
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.1))),
        Arc::new(StringArray::from_iter_values(boxes.iter().map(|b| b.2.label.as_str()))),
        floats(&|b| b.score),
        floats(&|b| b.corners[0]),
        floats(&|b| b.corners[1]),
        floats(&|b| b.corners[2]),
        floats(&|b| b.corners[3]),
    ];
    Ok(RecordBatch::try_new(tags::detections_schema(), columns).map_err(DatasetError::from)?)
}
