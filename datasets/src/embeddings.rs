//! Stored image embeddings: `datasets/<ds>/embeddings/<model>/`, a `model.json` saying
//! which model made them, and `part-<n>.parquet` files (image_id, sha256, vector as
//! FixedSizeList<Float32, D>, L2-normalised). `slicetest embed` writes one part per chunk
//! of images, atomically, so a killed run loses at most the chunk in flight and the next
//! run skips every image already embedded with its current content (image_id + sha256).
//! Parts are named and read as [`crate::parts`] says, so shards of one embed job (and any
//! number of concurrent runs) add parts without a lock.
//!
//! A part per chunk makes a thousand parts of a million images, and every reader opens
//! each (a bare `count(*)` of `embeddings` is then mostly file opens). A finished run
//! therefore merges runs of small parts into larger ones ([`compact_parts`]): each merged
//! part takes the place, in read order, of the parts it replaces, so what readers see —
//! each image's first copy, in the same order — does not change.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::parts::{self, ListedTree, PartName, StoredPart, content_key, create_part};
use crate::storage::Storage;
use crate::stored::parse_json;
use crate::version::{encode_parquet, encode_parquet_grouped};

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
///
/// A part listed but gone when read was merged meanwhile ([`compact_parts`] removes the
/// parts it replaced): the parts are listed and read again, up to three times.
pub fn read_parts(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<Vec<RecordBatch>> {
    read_every_part(layout, dataset, name, false)
}

/// Every part's batches (only image_id and sha256 when `keys_only`), listed again when a
/// listed part is gone (see [`read_parts`]).
fn read_every_part(layout: &WorkspaceLayout, dataset: &str, name: &str, keys_only: bool) -> Result<Vec<RecordBatch>> {
    let mut tries = 0;
    'listing: loop {
        tries += 1;
        let mut batches = Vec::new();
        for part in part_files(layout, dataset, name)? {
            match read_part(layout.storage(), &part.path, keys_only) {
                Ok(read) => batches.extend(read),
                Err(e) if e.is_missing_file() && tries < 3 => continue 'listing,
                Err(e) => return Err(e),
            }
        }
        return Ok(batches);
    }
}

/// Parts smaller than this are merged by [`compact_parts`]; larger ones stay as they are,
/// so a run that adds a few images rewrites at most this much.
pub const SMALL_PART_BYTES: u64 = 32 << 20;

/// [`compact_parts`] merges small parts into parts of at most this many bytes (about
/// 130,000 vectors of 512 dimensions), so that merging one holds a bounded amount in memory.
pub const MERGED_PART_BYTES: u64 = 256 << 20;

/// What [`compact_parts`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Parts before.
    pub parts_before: usize,
    /// Parts after.
    pub parts_after: usize,
}

/// The runs of consecutive parts (in read order) that [`compact_parts`] merges: parts under
/// `small` bytes each, at most `merged` bytes together, two or more to a run.
fn merge_runs(parts: &[StoredPart], small: u64, merged: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, part) in parts.iter().enumerate() {
        let fits = part.size < small && bytes + part.size <= merged;
        if !fits {
            if i - start >= 2 {
                runs.push(start..i);
            }
            // A large part stands alone; a small one that did not fit starts the next run.
            (start, bytes) = if part.size < small { (i, part.size) } else { (i + 1, 0) };
        } else {
            bytes += part.size;
        }
    }
    if parts.len() - start.min(parts.len()) >= 2 {
        runs.push(start..parts.len());
    }
    runs
}

/// Merges runs of consecutive small parts of stored embeddings into one part each
/// ([`SMALL_PART_BYTES`], [`MERGED_PART_BYTES`]), keeping each (image_id, sha256)'s first
/// copy, and removes the parts merged.
///
/// A merged part is named with the `seq` of the first part it replaces, so it is read
/// where they were: an image's first copy stays the same vector, and the rows keep their
/// order (a saved search index, keyed by that order, stays valid). It is created before
/// any part it replaces is removed: a process killed in between leaves copies, which
/// readers already resolve. Parts other writers add meanwhile take higher `seq`s and are
/// left alone. A part another compaction removed before this one read it is covered by the
/// other's merged part: the parts are listed again (up to three times).
pub fn compact_parts(layout: &WorkspaceLayout, dataset: &str, name: &str) -> Result<Compaction> {
    compact_parts_sized(layout, dataset, name, SMALL_PART_BYTES, MERGED_PART_BYTES)
}

fn compact_parts_sized(
    layout: &WorkspaceLayout,
    dataset: &str,
    name: &str,
    small: u64,
    merged: u64,
) -> Result<Compaction> {
    let mut parts_before = None;
    // A listed part that is gone was merged by a compaction racing this one: list again.
    for _ in 0..3 {
        let listed = part_files(layout, dataset, name)?;
        parts_before.get_or_insert(listed.len());
        if merge_listed(layout, &layout.embeddings_dir(dataset, name), &listed, small, merged)? {
            break;
        }
    }
    let parts_after = part_files(layout, dataset, name)?.len();
    Ok(Compaction { parts_before: parts_before.unwrap_or(parts_after), parts_after })
}

/// One pass of [`compact_parts`] over the parts `listed` in `dir`; false when a listed part
/// was gone (removed by another compaction) before it was read.
fn merge_listed(layout: &WorkspaceLayout, dir: &Path, listed: &[StoredPart], small: u64, merged: u64) -> Result<bool> {
    let storage = layout.storage();
    let mut seen = HashSet::new();
    for run in merge_runs(listed, small, merged) {
        let replaced = &listed[run];
        let mut batches = Vec::new();
        for part in replaced {
            match read_part(storage, &part.path, false) {
                Ok(read) => batches.extend(read),
                Err(e) if e.is_missing_file() => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // No rows: the parts were empty, or every image in them is in a part merged before.
        let mut path = None;
        if let Some(merged) = first_copies(&batches, &mut seen)? {
            let bytes = encode_parquet_grouped(&merged, Vec::new(), 3, rows_per_group(&merged))?;
            let part = dir.join(PartName { seq: replaced[0].name.seq, key: content_key(&[&bytes]) }.file_name());
            // False: a compaction racing this one made the very same part; it is complete.
            storage.create(&part, bytes)?;
            path = Some(part);
        }
        for old in replaced.iter().filter(|old| Some(&old.path) != path.as_ref()) {
            storage.remove(&old.path)?;
        }
    }
    Ok(true)
}

/// Row groups of a merged part: about 2 MB of vectors each (1024 of 512 dimensions, what a
/// part of `embed`'s default chunk holds), so that a lookup by id reads one group (the
/// others are skipped by their statistics) and a scan of every vector reads groups on
/// every core. bench-embeddings-table (50,000 vectors, one merged part): groups of 16,384
/// vectors took 85 ms for one vector by id and 358 ms for all; 4,096: 41 and 392 ms;
/// 1,024: 13 and 274 ms.
fn rows_per_group(part: &RecordBatch) -> usize {
    let dim = part.column(2).as_fixed_size_list().value_length().max(1) as usize;
    ((2 << 20) / (dim * 4)).clamp(256, 64 * 1024)
}

/// One part's batch of the rows of `batches` (in order) whose (image_id, sha256) is not in
/// `seen`, each key once (None when there is none); adds the keys to `seen`.
fn first_copies(batches: &[RecordBatch], seen: &mut HashSet<(String, String)>) -> Result<Option<RecordBatch>> {
    let (mut ids, mut shas, mut vectors, mut dim) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for batch in batches {
        let (id, sha) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
        let list = batch.column(2).as_fixed_size_list();
        dim = list.value_length() as usize;
        let values = cast(list.values(), &DataType::Float32)?;
        let values = values.as_primitive::<datafusion::arrow::datatypes::Float32Type>().values();
        for i in 0..batch.num_rows() {
            if seen.insert((id.value(i).to_string(), sha.value(i).to_string())) {
                ids.push(id.value(i).to_string());
                shas.push(sha.value(i).to_string());
                vectors.extend_from_slice(&values[list.value_offset(i) as usize..][..dim]);
            }
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    part_batch(&ids, &shas, vectors, dim).map(Some)
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
    for batch in read_every_part(layout, dataset, name, true)? {
        let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
        done.extend((0..batch.num_rows()).map(|i| (ids.value(i).to_string(), shas.value(i).to_string())));
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

    fn part(seq: u64, size: u64) -> StoredPart {
        let name = PartName { seq, key: format!("{seq:016x}") };
        StoredPart { path: PathBuf::from(name.file_name()), name, size }
    }

    #[test]
    fn runs_of_small_parts_are_merged_up_to_the_bound_and_large_parts_stand_alone() {
        let runs = |sizes: &[u64]| {
            let parts: Vec<StoredPart> = sizes.iter().enumerate().map(|(i, &size)| part(i as u64, size)).collect();
            merge_runs(&parts, 50, 25)
        };
        assert_eq!(runs(&[10, 10, 100, 10, 10, 10]), [0..2, 3..5]);
        assert_eq!(runs(&[10, 10, 10]), vec![0..2]);
        assert_eq!(runs(&[5, 5, 5, 5, 5]), vec![0..5]);
        assert!(runs(&[10]).is_empty() && runs(&[]).is_empty());
        assert!(runs(&[10, 100, 10, 100]).is_empty(), "no run of two small parts");
        assert!(runs(&[100, 20, 20, 20, 20]).is_empty(), "any two would pass the bound");
        assert_eq!(runs(&[100, 12, 12, 12, 12]), [1..3, 3..5]);
    }

    /// What readers see of stored embeddings: each (image_id, sha256)'s first row in read
    /// order, in that order, with its vector.
    fn first_copy_view(layout: &WorkspaceLayout) -> Vec<(String, String, Vec<f32>)> {
        let mut seen = HashSet::new();
        let mut view = Vec::new();
        for batch in read_parts(layout, "ds", "tiny").unwrap() {
            let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            let list = batch.column(2).as_fixed_size_list();
            for i in 0..batch.num_rows() {
                if seen.insert((ids.value(i).to_string(), shas.value(i).to_string())) {
                    let vector =
                        list.value(i).as_primitive::<datafusion::arrow::datatypes::Float32Type>().values().to_vec();
                    view.push((ids.value(i).to_string(), shas.value(i).to_string(), vector));
                }
            }
        }
        view
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Compaction changes the files, never what readers see: every key's first copy,
        /// in the same order, whatever the parts, their copies and the size bounds.
        #[test]
        fn compaction_keeps_every_first_copy_in_order(
            parts in proptest::collection::vec(proptest::collection::vec((0u8..12, 0u8..2, -4i8..4), 0..6), 1..9),
            small in 0u64..4000,
            merged in 0u64..8000,
        ) {
            let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
            let layout = WorkspaceLayout::on(Storage::with_object_store(memory, "memory://ws/compact"));
            for rows in &parts {
                // A writer stores an image once per part.
                let mut keys = HashSet::new();
                let rows: Vec<_> = rows.iter().filter(|r| keys.insert((r.0, r.1))).collect();
                let ids: Vec<String> = rows.iter().map(|r| format!("img{}", r.0)).collect();
                let shas: Vec<String> = rows.iter().map(|r| format!("sha{}", r.1)).collect();
                let vectors = rows.iter().flat_map(|r| [f32::from(r.2), 1.0]).collect();
                let batch = part_batch(&ids, &shas, vectors, 2).unwrap();
                append_part(&layout, "ds", "tiny", &batch).unwrap();
            }
            let before = first_copy_view(&layout);
            let listed = part_files(&layout, "ds", "tiny").unwrap().len();
            let report = compact_parts_sized(&layout, "ds", "tiny", small, merged).unwrap();
            let after = part_files(&layout, "ds", "tiny").unwrap().len();
            proptest::prop_assert_eq!(&first_copy_view(&layout), &before);
            proptest::prop_assert_eq!(report, Compaction { parts_before: listed, parts_after: after });
            proptest::prop_assert!(after <= listed);
            // Merged parts hold each image once too (SQL's first-copy scan keeps every row
            // of an image in the part it comes from).
            for part in part_files(&layout, "ds", "tiny").unwrap() {
                let batches = read_part(layout.storage(), &part.path, false).unwrap();
                let mut keys = HashSet::new();
                for batch in &batches {
                    proptest::prop_assert_eq!(batch.column(2).as_fixed_size_list().value_length(), 2);
                    let (ids, shas) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
                    for i in 0..batch.num_rows() {
                        proptest::prop_assert!(keys.insert((ids.value(i).to_string(), shas.value(i).to_string())));
                    }
                }
            }
            // Unbounded, everything is one part; compacting again changes nothing.
            compact_parts_sized(&layout, "ds", "tiny", u64::MAX, u64::MAX).unwrap();
            proptest::prop_assert_eq!(&first_copy_view(&layout), &before);
            proptest::prop_assert!(part_files(&layout, "ds", "tiny").unwrap().len() <= 1);
            let again = compact_parts_sized(&layout, "ds", "tiny", u64::MAX, u64::MAX).unwrap();
            proptest::prop_assert_eq!(again.parts_before, again.parts_after);
        }
    }

    #[test]
    fn a_merged_part_replaces_the_small_parts_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::on(Storage::local(dir.path()));
        for i in 0..4 {
            let batch = part_batch(&[format!("img{i}")], &[format!("sha{i}")], vec![0.6, 0.8], 2).unwrap();
            append_part(&layout, "ds", "tiny", &batch).unwrap();
        }
        let listed = part_files(&layout, "ds", "tiny").unwrap();
        let report = compact_parts(&layout, "ds", "tiny").unwrap();
        assert_eq!(report, Compaction { parts_before: 4, parts_after: 1 });
        let now = part_files(&layout, "ds", "tiny").unwrap();
        assert_eq!(now[0].name.seq, listed[0].name.seq, "read where the first part it replaced was");
        assert!(listed.iter().all(|p| !p.path.exists()));
        assert_eq!(read_parts(&layout, "ds", "tiny").unwrap().iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
        assert_eq!(embedded_images(&layout, "ds", "tiny").unwrap().len(), 4);
        // A part listed before and read after is a missing file: readers list again.
        assert!(read_part(layout.storage(), &listed[1].path, true).unwrap_err().is_missing_file());
    }
}
