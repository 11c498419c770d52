//! Stored image embeddings: `datasets/<ds>/embeddings/<model>/`, a `model.json` saying
//! which model made them, and `part-<n>.parquet` files (image_id, sha256, vector as
//! FixedSizeList<Float32, D>, L2-normalised). `slicetest embed` writes one part per chunk
//! of images, atomically, so a killed run loses at most the chunk in flight and the next
//! run skips every image already embedded with its current content (image_id + sha256).
//! Parts are named and read as [`crate::parts`] says, so shards of one embed job (and any
//! number of concurrent runs) add parts without a lock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::parts::{self, ListedTree, StoredPart, create_part};
use crate::storage::Storage;
use crate::stored::parse_json;
use crate::version::encode_parquet;

const MODEL_FILE: &str = "model.json";

/// Which model made a set of embeddings: checked before a run adds to them, so vectors of
/// two different models never mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingModel {
    /// The name the embeddings are stored under (a directory name).
    pub name: String,
    /// Where the model came from: a Hugging Face id or a directory.
    pub source: String,
    /// SHA-256 over the model's config, tokenizer and weights header.
    pub fingerprint: String,
    /// Vector dimension.
    pub dim: usize,
    /// How images were turned into pixels.
    pub preprocessing: String,
    /// The slicetest version that wrote the first part.
    pub slicetest_version: String,
    /// The machine of the run that registered the model (`slicetest_embed::cpu::describe`
    /// and the device asked for): CLIP's GEMM kernels are chosen by the CPU, so vectors
    /// computed elsewhere can differ in their last bits. Later runs on other machines add
    /// parts without changing it. Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_on: Option<String>,
}

/// The schema of every part: image_id, sha256, vector.
pub fn part_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("vector", vector_type(dim), false),
    ]))
}

/// FixedSizeList<Float32, dim>.
pub fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
}

/// Builds a part from parallel id, hash and row-major vector slices.
pub fn part_batch(ids: &[String], shas: &[String], vectors: Vec<f32>, dim: usize) -> Result<RecordBatch> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Arc::new(Float32Array::from(vectors));
    let list = FixedSizeListArray::try_new(field, dim as i32, values, None)?;
    Ok(RecordBatch::try_new(
        part_schema(dim),
        vec![
            Arc::new(StringArray::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values(shas)),
            Arc::new(list),
        ],
    )?)
}

/// Names of the models with embeddings of `dataset`.
pub fn model_names(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    let (storage, dir) = (layout.storage(), layout.dataset_dir(dataset).join("embeddings"));
    let listed: Vec<String> = storage.list(&dir)?.into_iter().filter(|name| validate_name(name).is_ok()).collect();
    let complete = storage.each(&listed, |name| storage.exists(&dir.join(name).join(MODEL_FILE)));
    let mut names = Vec::new();
    for (name, complete) in listed.into_iter().zip(complete) {
        if complete? {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A model with stored embeddings of a dataset, and its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The name the embeddings are stored under.
    pub name: String,
    /// Its part files in read order (none yet while the first is being written).
    pub parts: Vec<StoredPart>,
}

/// Every model with embeddings of `dataset` ([`model_names`]) with its parts
/// ([`part_files`]), from one listing of the dataset's `embeddings/` and everything below
/// it: on a bucket one round trip instead of three one after another (the models, whether
/// each has its `model.json`, each one's parts), which is what a search waits for before
/// it can look at a vector.
pub fn stored_models(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<StoredModel>> {
    let tree = ListedTree::list(layout.storage(), &layout.dataset_dir(dataset).join("embeddings"))?;
    Ok(tree
        .children()
        .into_iter()
        .filter(|name| validate_name(name).is_ok())
        .map(|name| (name, tree.subtree(name)))
        .filter(|(_, model)| model.has_file(MODEL_FILE))
        .map(|(name, model)| StoredModel { name: name.to_string(), parts: model.parts() })
        .collect())
}

/// The model record of stored embeddings, if any.
pub fn read_model(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<Option<EmbeddingModel>> {
    let path = layout.embeddings_dir(dataset, name).join(MODEL_FILE);
    match layout.storage().read_opt(&path)? {
        Some(json) => parse_json(&json, path, "embedding model record").map(Some),
        None => Ok(None),
    }
}

/// Records the model of a new embeddings directory; refuses a different model under the
/// same name. Shards starting at once race to create `model.json`: one creates it, the
/// others find it and check it like any later run.
pub fn register_model(layout: &WorkspaceLayout, dataset: &str, model: &EmbeddingModel) -> Result<()> {
    validate_name(&model.name)?;
    let dir = layout.embeddings_dir(dataset, &model.name);
    if read_model(layout, dataset, &model.name)?.is_none() {
        let json = serde_json::to_vec_pretty(model).expect("serialisable");
        if layout.storage().create(&dir.join(MODEL_FILE), json.into())? {
            return Ok(());
        }
    }
    let existing = read_model(layout, dataset, &model.name)?.expect("created above or before");
    if existing.fingerprint != model.fingerprint || existing.dim != model.dim {
        return Err(DatasetError::BadInput {
            source_path: dir,
            message: format!(
                "these embeddings were made by another model ({}, fingerprint {}…); \
                 pick another --name or delete the directory",
                existing.source,
                &existing.fingerprint[..12.min(existing.fingerprint.len())]
            ),
        });
    }
    Ok(())
}

/// The part files of stored embeddings, in read order (see [`crate::parts`]).
pub fn part_files(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<Vec<StoredPart>> {
    parts::list_parts(layout.storage(), &layout.embeddings_dir(dataset, name))
}

/// Adds a part holding `batch` (a [`part_batch`]); None when a racing writer had just
/// added the very same bytes.
pub fn append_part(
    layout: &WorkspaceLayout,
    dataset: &str,
    name: &str,
    batch: &RecordBatch,
) -> Result<Option<PathBuf>> {
    let dir = layout.embeddings_dir(dataset, name);
    let path = create_part(layout.storage(), &dir, encode_parquet(batch, Vec::new())?)?;
    crate::ingest::failpoint("embed-after-part");
    Ok(path)
}

/// Every stored vector: the parts' batches, each with image_id, sha256 and vector.
pub fn read_parts(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for part in part_files(layout, dataset, name)? {
        batches.extend(read_part(layout.storage(), &part.path, false)?);
    }
    Ok(batches)
}

/// A part's batches (only image_id and sha256 when `keys_only`), after checking its schema.
fn read_part(storage: &Storage, path: &Path, keys_only: bool) -> Result<Vec<RecordBatch>> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(storage.open_file(path)?)?;
    if keys_only {
        let roots = builder.parquet_schema().root_schema().get_fields().len();
        let keys = ProjectionMask::roots(builder.parquet_schema(), (0..2).filter(|&i| i < roots));
        builder = builder.with_projection(keys);
    }
    let batches = builder.build()?.collect::<std::result::Result<Vec<_>, _>>()?;
    for batch in &batches {
        let ok = batch.num_columns() == if keys_only { 2 } else { 3 }
            && batch.column(0).as_string_opt::<i32>().is_some()
            && batch.column(1).as_string_opt::<i32>().is_some()
            && (keys_only || matches!(batch.column(2).data_type(), DataType::FixedSizeList(_, _)));
        if !ok {
            return Err(DatasetError::Corrupt {
                what: "embeddings part",
                path: path.to_path_buf(),
                message: format!("unexpected schema {:?}", batch.schema()),
            });
        }
    }
    Ok(batches)
}

/// Every embedded (image_id, sha256): an image counts as embedded only as the content it
/// had then. Reads only those two columns of each part (of a local one).
pub fn embedded_images(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<HashSet<(String, String)>> {
    let mut done = HashSet::new();
    for part in part_files(layout, dataset, name)? {
        for batch in read_part(layout.storage(), &part.path, true)? {
            let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            done.extend((0..batch.num_rows()).map(|i| (ids.value(i).to_string(), shas.value(i).to_string())));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(fingerprint: &str) -> EmbeddingModel {
        EmbeddingModel {
            name: "tiny".into(),
            source: "/models/tiny".into(),
            fingerprint: fingerprint.into(),
            dim: 2,
            preprocessing: "clip".into(),
            slicetest_version: "0".into(),
            computed_on: None,
        }
    }

    #[test]
    fn parts_append_and_read_back_and_models_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        for storage in [Storage::local(dir.path()), Storage::with_object_store(memory, "memory://ws/emb")] {
            let layout = WorkspaceLayout::on(storage.clone());
            register_model(&layout, "ds", &model("aaaa")).unwrap();
            register_model(&layout, "ds", &model("aaaa")).unwrap();
            let err = register_model(&layout, "ds", &model("bbbb")).unwrap_err().to_string();
            assert!(err.contains("another model"), "{err}");
            for i in 0..2 {
                let batch = part_batch(&[format!("img{i}")], &[format!("sha{i}")], vec![0.6, 0.8], 2).unwrap();
                assert!(append_part(&layout, "ds", "tiny", &batch).unwrap().is_some());
            }
            let parts = read_parts(&layout, "ds", "tiny").unwrap();
            assert_eq!(parts.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
            let done = embedded_images(&layout, "ds", "tiny").unwrap();
            assert!(done.contains(&("img0".to_string(), "sha0".to_string())) && done.len() == 2);
            assert_eq!(model_names(&layout, "ds").unwrap(), ["tiny"]);
            // A temporary file left by a killed writer is not a part.
            let tmp = crate::atomic::tmp_sibling(&layout.embeddings_dir("ds", "tiny").join("part-000002.parquet"));
            storage.write(&tmp, bytes::Bytes::from_static(b"half")).unwrap();
            assert_eq!(part_files(&layout, "ds", "tiny").unwrap().len(), 2);
            // One listing says the same: a directory without its model.json (a run just
            // starting) is no model yet.
            storage.write(&layout.embeddings_dir("ds", "starting").join("part-000001.parquet"), "x".into()).unwrap();
            let stored = stored_models(&layout, "ds").unwrap();
            assert_eq!(
                stored,
                [StoredModel { name: "tiny".into(), parts: part_files(&layout, "ds", "tiny").unwrap() }]
            );
            assert_eq!(model_names(&layout, "ds").unwrap(), ["tiny"]);
            // A part that is not an embeddings part says which file is wrong.
            let bad = layout.embeddings_dir("ds", "tiny").join("part-000009.parquet");
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)])),
                vec![Arc::new(StringArray::from(vec!["a"]))],
            )
            .unwrap();
            storage.write(&bad, encode_parquet(&batch, Vec::new()).unwrap()).unwrap();
            let err = read_parts(&layout, "ds", "tiny").unwrap_err().to_string();
            assert!(err.contains("part-000009.parquet") && err.contains("embeddings part"), "{err}");
        }
    }
}
