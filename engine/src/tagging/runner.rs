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
use slicetest_datasets::progress::bar;
use slicetest_datasets::tags::{self, TagFile, TaggerProvenance};

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

/// A tagger's stored rows, cut down to what is still valid, ready to be extended.
pub(super) struct Progress {
    pub(super) provenance: TaggerProvenance,
    pub(super) kept: Option<TagFile>,
    pub(super) done: HashSet<String>,
    pub(super) rebuilt: bool,
    /// Whether stored rows were dropped (their image left the dataset or changed).
    pub(super) pruned: bool,
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

    /// Loads a tagger's stored rows, keeps those that still describe a current image, and
    /// checks that its columns are free.
    pub(super) fn progress(
        &self,
        current: &CurrentImages,
        provenance: TaggerProvenance,
        columns: &[String],
    ) -> Result<Progress> {
        let layout = self.workspace.layout();
        let tagger = provenance.tagger.clone();
        let taken = tags::taken_columns(layout, &current.dataset, &current.columns, &tagger)?;
        tags::check_columns(&tagger, columns.iter().map(String::as_str), &taken)?;
        let stored = tags::read_tags(layout, &current.dataset, &tagger)?;
        let rebuilt = stored.as_ref().is_some_and(|s| s.provenance.parameters_hash != provenance.parameters_hash);
        let Some(stored) = stored.filter(|_| !rebuilt) else {
            return Ok(Progress { provenance, kept: None, done: HashSet::new(), rebuilt, pruned: false, already: 0 });
        };
        let is_current = |id: &str, sha: &str| current.rows.get(id).is_some_and(|(s, _)| s == sha);
        let kept_tags = tags::retain_rows(&stored.tags, is_current)?;
        let kept_boxes = stored.detections.as_ref().map(|d| tags::retain_rows(d, is_current)).transpose()?;
        let kept = TagFile { provenance: provenance.clone(), tags: kept_tags, detections: kept_boxes };
        let done: HashSet<String> = kept.tagged().into_iter().map(|(id, _)| id).collect();
        let already = done.len();
        let pruned = already != stored.tags.num_rows();
        Ok(Progress { provenance, kept: Some(kept), done, rebuilt, pruned, already })
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
        let state = self.progress(current, provenance, &columns)?;
        let pending: Vec<&String> = current.order.iter().filter(|id| !state.done.contains(*id)).collect();
        let layout = self.workspace.layout();
        let bar = bar(pending.len() as u64, &format!("tagging ({})", state.provenance.tagger), options.progress);
        let mut rows: Vec<(String, String, Option<ImageTags>)> = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut last_publish = Instant::now();
        for ids in pending.chunks(options.chunk_size.max(1)) {
            let tagged: Vec<(String, String, std::result::Result<ImageTags, String>)> = ids
                .par_iter()
                .map(|id| {
                    let (sha, uri) = &current.rows[*id];
                    let result = slicetest_embed::open_image(&layout.resolve_uri(uri))
                        .and_then(|image| tagger.tag(&image))
                        .map_err(|e| e.to_string());
                    (id.to_string(), sha.clone(), result)
                })
                .collect();
            bar.inc(ids.len() as u64);
            for (id, sha, result) in tagged {
                match result {
                    Ok(tags) => rows.push((id, sha, Some(tags))),
                    Err(reason) => {
                        failed.push((id.clone(), reason));
                        rows.push((id, sha, None));
                    }
                }
            }
            // Publish every few seconds (not every chunk: each publish rewrites the file).
            if last_publish.elapsed().as_secs_f64() >= options.checkpoint_seconds {
                self.publish(current, &state, &fields, tagger.finds_boxes(), &rows)?;
                last_publish = Instant::now();
            }
        }
        bar.finish_and_clear();
        if !rows.is_empty() || state.pruned || state.kept.is_none() {
            self.publish(current, &state, &fields, tagger.finds_boxes(), &rows)?;
        }
        Ok(TaggerReport {
            tagger: state.provenance.tagger.clone(),
            columns,
            tagged: rows.len() - failed.len(),
            already_tagged: state.already,
            rebuilt: state.rebuilt,
            boxes: rows.iter().filter_map(|r| r.2.as_ref()).map(|t| t.boxes.len()).sum(),
            failed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the kept rows plus `rows` as the tagger's file.
    pub(super) fn publish(
        &self,
        current: &CurrentImages,
        state: &Progress,
        fields: &[Field],
        finds_boxes: bool,
        rows: &[(String, String, Option<ImageTags>)],
    ) -> Result<()> {
        let new_tags = tag_batch(fields, rows)?;
        let tags = match &state.kept {
            Some(kept) => tags::append_rows(&kept.tags, &new_tags)?,
            None => new_tags,
        };
        let detections = if finds_boxes {
            let new_boxes = box_batch(rows)?;
            Some(match state.kept.as_ref().and_then(|k| k.detections.as_ref()) {
                Some(kept) => tags::append_rows(kept, &new_boxes)?,
                None => new_boxes,
            })
        } else {
            None
        };
        let file = TagFile { provenance: state.provenance.clone(), tags, detections };
        Ok(tags::write_tags(self.workspace.layout(), &current.dataset, &file)?)
    }
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
