//! Stored tags: per tagger, `datasets/<ds>/tags/<tagger>/g<generation>/part-*.parquet`,
//! one row per image (image_id, sha256, then the tagger's columns), and for taggers that
//! find objects `datasets/<ds>/detections/<tagger>/g<generation>/part-*.parquet` (image_id,
//! sha256, label, score, x0, y0, x1, y1; one row per box), a boxes part beside each tag
//! part of the same name. The tagger's provenance (name, version, parameters and their
//! hash, model) is stored as JSON in every part's Parquet metadata under
//! [`PROVENANCE_KEY`], so any Parquet reader can tell where a column came from.
//!
//! Rows are keyed by (image_id, sha256): a tag describes an image as it was when tagged,
//! and the SQL view only joins rows whose sha256 is the image's current one. Parts are
//! immutable and named as [`crate::parts`] says: a run adds a part every few seconds
//! (what makes a killed run resumable), and the shards of one `tag --shard i/n` job add
//! theirs side by side without a lock. A run with other parameters, or an import, starts
//! a new generation ([`TagWriter`]; `g<N>/generation.json` created only if absent);
//! readers use the highest generation that holds a part. Everything goes through
//! [`Storage`], so a workspace in a bucket is tagged the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::parts::{ListedTree, PartName, content_key, next_part_name};
use crate::storage::Storage;
use crate::version::encode_parquet;

/// The Parquet (and Arrow schema) metadata key holding a tag file's [`TaggerProvenance`].
pub const PROVENANCE_KEY: &str = "slicetest.tagger";
/// The file that creates a generation directory (and says which tagger settings made it):
/// created only if absent, it is how two writers agree on who made a generation.
const GENERATION_FILE: &str = "generation.json";
/// The columns every tag file starts with.
pub const KEY_COLUMNS: [&str; 2] = ["image_id", "sha256"];
/// The columns of a detections file after the keys.
pub const DETECTION_COLUMNS: [&str; 6] = ["label", "score", "x0", "y0", "x1", "y1"];

/// Where a tag file's columns came from. Two runs with the same `parameters_hash` produce
/// the same columns, so a later run only tags images that are new; a different hash means
/// the file is rebuilt from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaggerProvenance {
    /// The tagger's name (the file name, and how `slicetest tag --tagger` names it).
    pub tagger: String,
    /// The version of the tagger's definitions.
    pub version: String,
    /// The tagger's settings (a vocabulary, thresholds, the source file of an import).
    pub parameters: serde_json::Value,
    /// SHA-256 over version, parameters and model.
    pub parameters_hash: String,
    /// The model the tags came from (a name and fingerprint), if any.
    pub model: Option<String>,
    /// The slicetest version that wrote the file.
    pub slicetest_version: String,
    /// The CPU of the run that last wrote the file (`slicetest_embed::cpu::describe`):
    /// model taggers (faces, CLIP zero-shot) run kernels chosen by the CPU, whose last bits
    /// can differ between machines. Not part of `parameters_hash`: another CPU does not
    /// make stored tags stale. Absent for imports and older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_on: Option<String>,
}

impl TaggerProvenance {
    /// A provenance record whose hash covers `version`, `parameters` and `model`.
    pub fn new(tagger: &str, version: &str, parameters: serde_json::Value, model: Option<String>) -> Self {
        let mut h = Sha256::new();
        h.update(version.as_bytes());
        h.update(b"\0");
        h.update(parameters.to_string().as_bytes());
        h.update(b"\0");
        h.update(model.as_deref().unwrap_or("").as_bytes());
        TaggerProvenance {
            tagger: tagger.to_string(),
            version: version.to_string(),
            parameters,
            parameters_hash: hex::encode(h.finalize()),
            model,
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
            computed_on: None,
        }
    }

    /// The same record, saying which CPU computed the tags.
    pub fn computed_on(mut self, cpu: String) -> Self {
        self.computed_on = Some(cpu);
        self
    }
}

/// One tagger's stored rows.
#[derive(Debug, Clone)]
pub struct TagFile {
    /// Where the rows came from.
    pub provenance: TaggerProvenance,
    /// image_id, sha256, then the tag columns.
    pub tags: RecordBatch,
    /// The boxes, for taggers that find objects.
    pub detections: Option<RecordBatch>,
}

impl TagFile {
    /// The (image_id, sha256) pairs that have a row.
    pub fn tagged(&self) -> std::collections::HashSet<(String, String)> {
        let (ids, shas) = key_columns(&self.tags);
        (0..self.tags.num_rows()).map(|i| (ids.value(i).to_string(), shas.value(i).to_string())).collect()
    }

    /// The tag columns (everything after the keys).
    pub fn tag_fields(&self) -> Vec<Arc<Field>> {
        self.tags.schema().fields().iter().skip(KEY_COLUMNS.len()).cloned().collect()
    }
}

fn key_columns(
    batch: &RecordBatch,
) -> (&datafusion::arrow::array::StringArray, &datafusion::arrow::array::StringArray) {
    (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>())
}

/// `datasets/<ds>/tags/<tagger>/`: the tagger's generations of parts.
pub fn tags_dir(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("tags").join(tagger)
}

/// `datasets/<ds>/detections/<tagger>/`: its boxes, part for part beside the tags.
pub fn detections_dir(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("detections").join(tagger)
}

/// `datasets/<ds>/tags/<tagger>.parquet`, the one file per tagger of older workspaces:
/// read as generation 0, removed by the next run that writes the tagger.
fn legacy_tags_file(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("tags").join(format!("{tagger}.parquet"))
}

fn legacy_detections_file(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("detections").join(format!("{tagger}.parquet"))
}

fn generation_dir(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("g{generation:06}"))
}

/// The generation numbers under a tagger's directory, ascending.
fn generations(storage: &Storage, dir: &Path) -> Result<Vec<u32>> {
    Ok(generation_numbers(storage.list(dir)?.iter().map(String::as_str)))
}

/// The generation numbers among the names in a tagger's directory, ascending.
fn generation_numbers<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let mut numbers: Vec<u32> = names.into_iter().filter_map(|n| n.strip_prefix('g')?.parse().ok()).collect();
    numbers.sort_unstable();
    numbers
}

/// What readers see of a tagger: the parts of its highest generation that has any (with
/// the boxes part of the same name, where there is one), else the single file of an older
/// workspace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VisibleParts {
    /// The generation (0: the older single file).
    pub generation: u32,
    /// Tag parts in read order.
    pub tags: Vec<PathBuf>,
    /// For each tag part, its boxes part if the tagger found boxes.
    pub detections: Vec<Option<PathBuf>>,
}

impl VisibleParts {
    /// Whether the tagger found boxes (some tag part has a boxes part).
    pub fn has_detections(&self) -> bool {
        self.detections.iter().any(Option::is_some)
    }
}

/// The parts of `tagger` that readers use; empty when it has none. Its tags and its boxes
/// are listed at once, each with everything below it (see [`ListedTree`]).
pub fn visible_parts(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<VisibleParts> {
    let storage = layout.storage();
    let (tags, boxes) = storage.join(
        || ListedTree::list(storage, &tags_dir(layout, dataset, tagger)),
        || ListedTree::list(storage, &detections_dir(layout, dataset, tagger)),
    );
    if let Some(visible) = visible_generation(&tags?, &boxes?) {
        return Ok(visible);
    }
    if storage.exists(&legacy_tags_file(layout, dataset, tagger))? {
        let with_boxes = storage.exists(&legacy_detections_file(layout, dataset, tagger))?;
        return Ok(legacy_parts(layout, dataset, tagger, with_boxes));
    }
    Ok(VisibleParts::default())
}

/// An older workspace's single file of `tagger`, read as generation 0, with its single
/// boxes file where there is one.
fn legacy_parts(layout: &WorkspaceLayout, dataset: &str, tagger: &str, with_boxes: bool) -> VisibleParts {
    VisibleParts {
        generation: 0,
        tags: vec![legacy_tags_file(layout, dataset, tagger)],
        detections: vec![with_boxes.then(|| legacy_detections_file(layout, dataset, tagger))],
    }
}

/// The parts of the highest generation in a tagger's listed `tags` that holds any, each
/// with its boxes part of the same name in `boxes`, if there is one.
fn visible_generation(tags: &ListedTree, boxes: &ListedTree) -> Option<VisibleParts> {
    for generation in generation_numbers(tags.children()).into_iter().rev() {
        let name = format!("g{generation:06}");
        let parts = tags.subtree(&name).parts();
        if parts.is_empty() {
            continue;
        }
        let box_parts: HashMap<PartName, PathBuf> =
            boxes.subtree(&name).parts().into_iter().map(|p| (p.name, p.path)).collect();
        let detections = parts.iter().map(|p| box_parts.get(&p.name).cloned()).collect();
        return Some(VisibleParts { generation, tags: parts.into_iter().map(|p| p.path).collect(), detections });
    }
    None
}

/// `datasets/<ds>/wide/<key>.parquet`: `images` of `version` with every tagger's columns,
/// written once by `Engine::materialize_images` so that queries on tag columns read one
/// file instead of joining the tag rows. The key hashes everything the rows depend on (the
/// version's image table and each tagger's name and parts, which are never rewritten), so
/// a new version, a new part or a removed tagger names another file and a stale one is
/// never read: readers that find no file for the current key use the join.
pub fn wide_images_file(
    layout: &WorkspaceLayout,
    version: &crate::version::DatasetVersion,
    taggers: &[(String, VisibleParts)],
) -> PathBuf {
    use sha2::{Digest, Sha256};
    // Paths inside the workspace, so that a workspace moved or copied keeps its key.
    let inside = |path: &Path| path.strip_prefix(layout.root()).unwrap_or(path).to_string_lossy().into_owned();
    let mut key = Sha256::new();
    key.update(inside(&layout.images_file(version)).as_bytes());
    for (name, parts) in taggers {
        key.update(b"\0tagger\0");
        key.update(name.as_bytes());
        for part in &parts.tags {
            key.update(b"\0");
            key.update(inside(part).as_bytes());
        }
    }
    wide_images_dir(layout, &version.dataset).join(format!("{}.parquet", &hex::encode(key.finalize())[..32]))
}

#[cfg(test)]
mod wide_tests {
    use super::*;

    #[test]
    fn the_wide_key_names_what_the_rows_depend_on_and_not_where_the_workspace_is() {
        let version = |file: &str| -> crate::version::DatasetVersion {
            serde_json::from_value(serde_json::json!({
                "dataset": "d", "version": 3, "parent": null, "created_at": "2026-12-04T00:00:00Z",
                "row_count": 1, "content_hash": "h", "parquet_sha256": "s", "images_file": file,
                "source": "src", "source_format": "folder", "slicetest_version": "0", "columns": []
            }))
            .expect("a version manifest")
        };
        let parts = |names: &[&str]| VisibleParts {
            generation: 1,
            tags: names.iter().map(PathBuf::from).collect(),
            detections: vec![None; names.len()],
        };
        let key = |root: &str, file: &str, taggers: Vec<(String, VisibleParts)>| {
            let layout = WorkspaceLayout::new(root);
            let tagger_parts: Vec<(String, VisibleParts)> = taggers
                .into_iter()
                .map(|(n, p)| {
                    let tags = p.tags.iter().map(|t| layout.dataset_dir("d").join(t)).collect();
                    (n, VisibleParts { tags, ..p })
                })
                .collect();
            wide_images_file(&layout, &version(file), &tagger_parts).file_name().unwrap().to_owned()
        };
        let base = key("/a/ws", "images-1.parquet", vec![("pixels".into(), parts(&["p1"]))]);
        assert_eq!(base, key("/elsewhere/ws", "images-1.parquet", vec![("pixels".into(), parts(&["p1"]))]));
        assert_ne!(base, key("/a/ws", "images-2.parquet", vec![("pixels".into(), parts(&["p1"]))]));
        assert_ne!(base, key("/a/ws", "images-1.parquet", vec![("pixels".into(), parts(&["p1", "p2"]))]));
        assert_ne!(base, key("/a/ws", "images-1.parquet", vec![("faces".into(), parts(&["p1"]))]));
        assert_ne!(base, key("/a/ws", "images-1.parquet", vec![]));
    }
}

/// `datasets/<ds>/wide/`: see [`wide_images_file`].
pub fn wide_images_dir(layout: &WorkspaceLayout, dataset: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("wide")
}

/// Every tagger with stored tags for `dataset` and the parts readers use, sorted by name
/// (the order their columns join the `images` view in). The dataset's `tags/` and
/// `detections/` are listed at once, each with everything below it: on a bucket one round
/// trip, where listing the taggers, then each one's generations, then a generation's parts
/// and boxes took four one after another.
pub fn stored_taggers(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<(String, VisibleParts)>> {
    let storage = layout.storage();
    let (tags_dir, boxes_dir) =
        (layout.dataset_dir(dataset).join("tags"), layout.dataset_dir(dataset).join("detections"));
    let (tags, boxes) = storage.join(|| ListedTree::list(storage, &tags_dir), || ListedTree::list(storage, &boxes_dir));
    let (tags, boxes) = (tags?, boxes?);
    let mut names: Vec<&str> = tags
        .children()
        .into_iter()
        .map(|n| n.strip_suffix(".parquet").unwrap_or(n))
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut stored = Vec::new();
    for name in names {
        let visible = visible_generation(&tags.subtree(name), &boxes.subtree(name)).or_else(|| {
            let legacy = format!("{name}.parquet");
            tags.has_file(&legacy).then(|| legacy_parts(layout, dataset, name, boxes.has_file(&legacy)))
        });
        if let Some(visible) = visible {
            stored.push((name.to_string(), visible));
        }
    }
    Ok(stored)
}

/// The taggers with stored tags for `dataset`, sorted by name.
pub fn tagger_names(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    Ok(stored_taggers(layout, dataset)?.into_iter().map(|(name, _)| name).collect())
}

/// The taggers with stored detections for `dataset`, sorted by name.
pub fn detection_taggers(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    Ok(stored_taggers(layout, dataset)?
        .into_iter()
        .filter(|(_, parts)| parts.has_detections())
        .map(|(name, _)| name)
        .collect())
}

/// `image_id`, `sha256`: the first fields of every tag and detections file.
pub fn key_fields() -> Vec<Field> {
    KEY_COLUMNS.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect()
}

/// The schema of a detections file.
pub fn detections_schema() -> SchemaRef {
    let mut fields = key_fields();
    fields.push(Field::new("label", DataType::Utf8, false));
    fields.extend(["score", "x0", "y0", "x1", "y1"].map(|n| Field::new(n, DataType::Float32, true)));
    Arc::new(Schema::new(fields))
}

/// A tagger's stored rows, if it has any. Where two parts hold the same (image_id,
/// sha256) — two writers tagged the image at once — the first part's row (and boxes) win.
pub fn read_tags(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Option<TagFile>> {
    let visible = visible_parts(layout, dataset, tagger)?;
    let Some(first) = visible.tags.first() else { return Ok(None) };
    let mut provenance = None;
    let (mut tag_batches, mut box_batches) = (Vec::new(), Vec::new());
    let mut seen: std::collections::HashSet<(String, String)> = Default::default();
    for (path, boxes) in visible.tags.iter().zip(&visible.detections) {
        let (tags, part_provenance) = read_tag_part(layout.storage(), path)?;
        provenance.get_or_insert(part_provenance);
        let mut owned: std::collections::HashSet<(String, String)> = Default::default();
        let tags = retain_rows(&tags, |id, sha| {
            let key = (id.to_string(), sha.to_string());
            !seen.contains(&key) && owned.insert(key)
        })?;
        if let Some(boxes) = boxes {
            let boxes = read_whole(layout.storage(), boxes)?;
            box_batches.push(retain_rows(&boxes, |id, sha| owned.contains(&(id.to_string(), sha.to_string())))?);
        }
        seen.extend(owned);
        tag_batches.push(tags);
    }
    let schema = tag_batches[0].schema();
    let tags = concat_batches(&schema, &tag_batches).map_err(|e| DatasetError::Corrupt {
        what: "tag file",
        path: first.clone(),
        message: format!("the tagger's parts have different columns: {e}"),
    })?;
    let detections =
        if box_batches.is_empty() { None } else { Some(concat_batches(&detections_schema(), &box_batches)?) };
    let provenance = provenance.expect("one part at least");
    Ok(Some(TagFile { provenance, tags, detections }))
}

/// One tag part: its rows (without schema metadata) and its provenance.
fn read_tag_part(storage: &Storage, path: &Path) -> Result<(RecordBatch, TaggerProvenance)> {
    let tags = read_whole(storage, path)?;
    let bad = |message: String| DatasetError::Corrupt { what: "tag file", path: path.to_path_buf(), message };
    let keys_ok = tags.num_columns() >= 2
        && KEY_COLUMNS.iter().enumerate().all(|(i, n)| tags.schema().field(i).name() == n)
        && tags.column(0).data_type() == &DataType::Utf8
        && tags.column(1).data_type() == &DataType::Utf8;
    if !keys_ok {
        return Err(bad(format!("expected image_id, sha256 first, got {:?}", tags.schema())));
    }
    let provenance = provenance_in(&tags.schema(), path)?;
    Ok((strip_metadata(tags), provenance))
}

/// The provenance of a tag part, from its footer alone.
fn read_part_provenance(storage: &Storage, path: &Path) -> Result<TaggerProvenance> {
    provenance_in(ParquetRecordBatchReaderBuilder::try_new(storage.open_file(path)?)?.schema(), path)
}

/// The [`PROVENANCE_KEY`] metadata of a tag part's schema, parsed.
fn provenance_in(schema: &Schema, path: &Path) -> Result<TaggerProvenance> {
    let bad = |message: String| DatasetError::Corrupt { what: "tag file", path: path.to_path_buf(), message };
    let json = schema.metadata().get(PROVENANCE_KEY).ok_or_else(|| bad(format!("no {PROVENANCE_KEY} metadata")))?;
    serde_json::from_str(json).map_err(|e| bad(e.to_string()))
}

/// A tagger's stored boxes, if it has any.
pub fn read_detections(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Option<RecordBatch>> {
    Ok(read_tags(layout, dataset, tagger)?.and_then(|f| f.detections))
}

/// The tag columns of a stored tagger (read from a part's footer only).
pub fn tag_columns(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Vec<String>> {
    let Some(path) = visible_parts(layout, dataset, tagger)?.tags.into_iter().next() else { return Ok(Vec::new()) };
    let builder = ParquetRecordBatchReaderBuilder::try_new(layout.storage().open_file(&path)?)?;
    Ok(builder.schema().fields().iter().skip(KEY_COLUMNS.len()).map(|f| f.name().clone()).collect())
}

fn read_whole(storage: &Storage, path: &Path) -> Result<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(storage.open_file(path)?)?;
    let schema = builder.schema().clone();
    let batches = builder.build()?.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

fn strip_metadata(batch: RecordBatch) -> RecordBatch {
    let schema = Arc::new(Schema::new(batch.schema().fields().clone()));
    RecordBatch::try_new(schema, batch.columns().to_vec()).expect("same fields")
}

/// Where a tagger run adds its parts: one generation of the tagger's directories.
///
/// A run whose parameters match the visible generation's adds to it; any other run (new
/// parameters, an import replacing the tagger) starts the next generation, which readers
/// switch to as soon as it holds a part. [`TagWriter::retire_older`] then removes what came
/// before. Several shards of one job share a generation: the first to start creates it,
/// the others find it (still empty, or holding their own parameters) and add to it.
#[derive(Debug, Clone)]
pub struct TagWriter {
    tags: PathBuf,
    boxes: PathBuf,
    generation: u32,
    metadata: Vec<(String, String)>,
    provenance: TaggerProvenance,
    layout: WorkspaceLayout,
    dataset: String,
}

impl TagWriter {
    /// The generation a run with `provenance` writes to: the visible one when its
    /// parameters hash is the same and `replace` is false, else a new one.
    pub fn open(layout: &WorkspaceLayout, dataset: &str, provenance: &TaggerProvenance, replace: bool) -> Result<Self> {
        let tagger = &provenance.tagger;
        validate_name(tagger)?;
        let storage = layout.storage();
        let (tags, boxes) = (tags_dir(layout, dataset, tagger), detections_dir(layout, dataset, tagger));
        let json = serde_json::to_string(provenance).expect("serialisable");
        let writer = |generation| TagWriter {
            tags: generation_dir(&tags, generation),
            boxes: generation_dir(&boxes, generation),
            generation,
            metadata: vec![(PROVENANCE_KEY.to_string(), json.clone())],
            provenance: provenance.clone(),
            layout: layout.clone(),
            dataset: dataset.to_string(),
        };
        loop {
            let visible = visible_parts(layout, dataset, tagger)?;
            let same_parameters = match visible.tags.first() {
                Some(first) => read_part_provenance(storage, first)?.parameters_hash == provenance.parameters_hash,
                None => false,
            };
            if same_parameters && !replace {
                if visible.generation == 0 {
                    return writer(1).adopt_legacy(&visible);
                }
                return Ok(writer(visible.generation));
            }
            // A newer, still empty generation (another shard of this job made it a moment
            // ago, or a killed run left it) is taken as it is; else the next one is created
            // — its marker file created only if absent, as buckets have no directories —
            // and a writer that loses that race looks again.
            let top = generations(storage, &tags)?.last().copied().unwrap_or(0);
            if top > visible.generation && !replace {
                return Ok(writer(top));
            }
            let marker = generation_dir(&tags, top + 1).join(GENERATION_FILE);
            if storage.create(&marker, json.clone().into_bytes().into())? {
                return Ok(writer(top + 1));
            }
        }
    }

    /// Carries an older workspace's single file into generation 1 (copied once), so a run
    /// that adds to it keeps its rows.
    fn adopt_legacy(self, legacy: &VisibleParts) -> Result<Self> {
        let storage = self.layout.storage();
        let name = PartName { seq: 0, key: String::new() }.file_name();
        for (from, dir) in [(legacy.detections[0].as_ref(), &self.boxes), (Some(&legacy.tags[0]), &self.tags)] {
            if let Some(from) = from {
                storage.create(&dir.join(&name), storage.read(from)?)?;
            }
        }
        Ok(self)
    }

    /// The generation written to.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The provenance every part carries.
    pub fn provenance(&self) -> &TaggerProvenance {
        &self.provenance
    }

    /// Adds a part: `tags` (keys first, then the tagger's columns) and, for taggers that
    /// find objects, `boxes` (the [`detections_schema`]). The boxes are written first under
    /// the same name; the tag part is the commit, so a run killed between the two leaves
    /// boxes no reader sees. The name's key hashes both files, so a name always holds the
    /// same pair. False when a racing writer had just added the same bytes.
    pub fn append(&self, tags: &RecordBatch, boxes: Option<&RecordBatch>) -> Result<bool> {
        let storage = self.layout.storage();
        // In the Arrow schema too, so readers of the schema alone (DataFusion) see it.
        let schema = Arc::new(Schema::new_with_metadata(
            tags.schema().fields().clone(),
            self.metadata.iter().cloned().collect(),
        ));
        let tags = RecordBatch::try_new(schema, tags.columns().to_vec())?;
        let tag_bytes = encode_parquet(&tags, self.metadata.clone())?;
        let box_bytes = boxes.map(|b| encode_parquet(b, self.metadata.clone())).transpose()?;
        let key = content_key(&[&tag_bytes, box_bytes.as_deref().unwrap_or_default()]);
        let name = next_part_name(storage, &self.tags, &key)?.file_name();
        if let Some(box_bytes) = box_bytes {
            // Taken already means the same bytes: a killed try of this very part wrote them.
            storage.create(&self.boxes.join(&name), box_bytes)?;
        }
        let created = storage.create(&self.tags.join(&name), tag_bytes)?;
        crate::ingest::failpoint("tag-after-publish");
        Ok(created)
    }

    /// Once this generation is the one readers see, removes every older one and the
    /// single file of an older workspace.
    pub fn retire_older(&self) -> Result<()> {
        let (storage, tagger) = (self.layout.storage(), &self.provenance.tagger);
        if visible_parts(&self.layout, &self.dataset, tagger)?.generation != self.generation {
            return Ok(());
        }
        for dir in [tags_dir(&self.layout, &self.dataset, tagger), detections_dir(&self.layout, &self.dataset, tagger)]
        {
            for generation in generations(storage, &dir)?.into_iter().filter(|&g| g < self.generation) {
                storage.remove_all(&generation_dir(&dir, generation))?;
            }
        }
        storage.remove(&legacy_tags_file(&self.layout, &self.dataset, tagger))?;
        storage.remove(&legacy_detections_file(&self.layout, &self.dataset, tagger))
    }
}

/// Replaces a tagger's rows with `file` (an import): a new generation holding one part,
/// then the older ones removed. Readers see the old rows or the new ones, never a mix.
pub fn write_tags(layout: &WorkspaceLayout, dataset: &str, file: &TagFile) -> Result<()> {
    let writer = TagWriter::open(layout, dataset, &file.provenance, true)?;
    writer.append(&file.tags, file.detections.as_ref())?;
    writer.retire_older()
}

/// Removes a tagger's files (tags, detections, and the mask set of a mask import).
pub fn remove_tags(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<bool> {
    validate_name(tagger)?;
    let storage = layout.storage();
    let mut removed = crate::masks::remove_mask_set(layout, dataset, tagger)?;
    removed |= !visible_parts(layout, dataset, tagger)?.tags.is_empty();
    for dir in [tags_dir(layout, dataset, tagger), detections_dir(layout, dataset, tagger)] {
        storage.remove_all(&dir)?;
    }
    for path in [legacy_tags_file(layout, dataset, tagger), legacy_detections_file(layout, dataset, tagger)] {
        storage.remove(&path)?;
    }
    Ok(removed)
}

/// The rows of `batch` (keys first) whose (image_id, sha256) satisfy `keep`.
pub fn retain_rows(batch: &RecordBatch, mut keep: impl FnMut(&str, &str) -> bool) -> Result<RecordBatch> {
    let (ids, shas) = key_columns(batch);
    let mask: datafusion::arrow::array::BooleanArray =
        (0..batch.num_rows()).map(|i| Some(keep(ids.value(i), shas.value(i)))).collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// The column names a tagger may not use, each with who owns it: the dataset version's
/// own `columns`, and every other tagger's (all but `tagger`).
pub fn taken_columns(
    layout: &WorkspaceLayout,
    dataset: &str,
    columns: &[String],
    tagger: &str,
) -> Result<HashMap<String, String>> {
    let mut taken: HashMap<String, String> =
        columns.iter().map(|c| (c.clone(), format!("dataset {dataset}"))).collect();
    for other in tagger_names(layout, dataset)?.into_iter().filter(|o| o != tagger) {
        for c in tag_columns(layout, dataset, &other)? {
            taken.insert(c, format!("tagger {other}"));
        }
    }
    Ok(taken)
}

/// Checks that a tagger's column names are usable: not a key column, unique, and not one
/// of `taken` (the images table's columns and other taggers' columns), so a column name
/// always means one thing in SQL.
pub fn check_columns<'a>(
    tagger: &str,
    columns: impl IntoIterator<Item = &'a str>,
    taken: &HashMap<String, String>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in columns {
        let bad = |message: String| DatasetError::BadInput { source_path: PathBuf::from(tagger), message };
        if KEY_COLUMNS.contains(&name) {
            return Err(bad(format!("column {name:?} is reserved")));
        }
        if !seen.insert(name) {
            return Err(bad(format!("column {name:?} appears twice")));
        }
        if let Some(owner) = taken.get(name) {
            return Err(bad(format!("column {name:?} already exists in the images table (from {owner}); rename it")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float32Array, StringArray};

    use super::*;

    fn batch(ids: &[&str], values: &[f32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new("brightness", DataType::Float32, true),
        ]));
        let shas: Vec<String> = ids.iter().map(|i| format!("sha-{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(ids)),
                Arc::new(StringArray::from_iter_values(shas)),
                Arc::new(Float32Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn tags_round_trip_with_provenance_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        assert!(read_tags(&layout, "ds", "pixels").unwrap().is_none());
        let provenance = TaggerProvenance::new("pixels", "1", serde_json::json!({"a": 1}), None);
        let file = TagFile { provenance: provenance.clone(), tags: batch(&["a", "b"], &[0.1, 0.2]), detections: None };
        write_tags(&layout, "ds", &file).unwrap();
        let back = read_tags(&layout, "ds", "pixels").unwrap().unwrap();
        assert_eq!(back.provenance, provenance);
        // Any Parquet reader finds the provenance in the footer.
        let part = visible_parts(&layout, "ds", "pixels").unwrap().tags.remove(0);
        let file = std::fs::File::open(part).unwrap();
        let footer = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().metadata().clone();
        let kv = footer.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter().any(|e| e.key == PROVENANCE_KEY && e.value.as_deref().is_some_and(|v| v.contains("\"pixels\"")))
        );
        assert_eq!(back.tags.num_rows(), 2);
        assert!(back.tagged().contains(&("a".to_string(), "sha-a".to_string())));
        let kept = retain_rows(&back.tags, |id, _| id != "a").unwrap();
        assert_eq!(kept.num_rows(), 1);
        assert_eq!(tagger_names(&layout, "ds").unwrap(), ["pixels"]);
        // Same inputs, same hash; any change, another.
        let again = TaggerProvenance::new("pixels", "1", serde_json::json!({"a": 1}), None);
        assert_eq!(again.parameters_hash, provenance.parameters_hash);
        let other = TaggerProvenance::new("pixels", "2", serde_json::json!({"a": 1}), None);
        assert_ne!(other.parameters_hash, provenance.parameters_hash);
        assert!(remove_tags(&layout, "ds", "pixels").unwrap());
        assert!(tagger_names(&layout, "ds").unwrap().is_empty());
    }

    fn boxes(ids: &[&str]) -> RecordBatch {
        let n = ids.len();
        let shas: Vec<String> = ids.iter().map(|i| format!("sha-{i}")).collect();
        let floats = || Arc::new(Float32Array::from(vec![0.5; n])) as datafusion::arrow::array::ArrayRef;
        RecordBatch::try_new(
            detections_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(ids)),
                Arc::new(StringArray::from_iter_values(shas)),
                Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "face"))),
                floats(),
                floats(),
                floats(),
                floats(),
                floats(),
            ],
        )
        .unwrap()
    }

    fn ids_and_values(file: &TagFile) -> Vec<(String, f32)> {
        let (ids, values) = (
            file.tags.column(0).as_string::<i32>(),
            file.tags.column(2).as_primitive::<datafusion::arrow::datatypes::Float32Type>(),
        );
        (0..file.tags.num_rows()).map(|i| (ids.value(i).to_string(), values.value(i))).collect()
    }

    #[test]
    fn parts_add_up_duplicates_resolve_to_the_first_part_and_new_parameters_start_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        for storage in [Storage::local(dir.path()), Storage::with_object_store(memory, "memory://ws/tags")] {
            parts_on(&WorkspaceLayout::on(storage));
        }
    }

    fn parts_on(layout: &WorkspaceLayout) {
        let storage = layout.storage();
        let v1 = TaggerProvenance::new("faces", "1", serde_json::json!({}), None);
        // Two writers of one job (shards) share the generation; the second finds the first's.
        let a = TagWriter::open(layout, "ds", &v1, false).unwrap();
        let b = TagWriter::open(layout, "ds", &v1, false).unwrap();
        assert_eq!((a.generation(), b.generation()), (1, 1));
        assert!(a.append(&batch(&["a", "b"], &[0.1, 0.2]), Some(&boxes(&["a"]))).unwrap());
        // A retried writer that tagged "b" again, and "c": "b" keeps the first part's row.
        assert!(b.append(&batch(&["b", "c"], &[0.9, 0.3]), Some(&boxes(&["b", "c"]))).unwrap());
        let stored = read_tags(layout, "ds", "faces").unwrap().unwrap();
        assert_eq!(ids_and_values(&stored), [("a".into(), 0.1), ("b".into(), 0.2), ("c".into(), 0.3)]);
        let listed = stored_taggers(layout, "ds").unwrap();
        assert_eq!(listed, [("faces".to_string(), visible_parts(layout, "ds", "faces").unwrap())]);
        assert_eq!(listed[0].1.detections.iter().map(Option::is_some).collect::<Vec<_>>(), [true, true]);
        let found = stored.detections.unwrap();
        assert_eq!(
            found.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
            ["a", "c"],
            "b's boxes come from the part its row came from"
        );
        assert_eq!(detection_taggers(layout, "ds").unwrap(), ["faces"]);
        // Boxes written by a writer killed before its tag part are not read.
        let c = TagWriter::open(layout, "ds", &v1, false).unwrap();
        let orphan = c.boxes.join(next_part_name(storage, &c.tags, "00000000000000ff").unwrap().file_name());
        storage.write(&orphan, encode_parquet(&boxes(&["z"]), vec![]).unwrap()).unwrap();
        assert_eq!(read_detections(layout, "ds", "faces").unwrap().unwrap().num_rows(), 2);

        // New parameters: a new generation, invisible until it holds a part, then the only one.
        let v2 = TaggerProvenance::new("faces", "2", serde_json::json!({}), None);
        let next = TagWriter::open(layout, "ds", &v2, false).unwrap();
        assert_eq!(next.generation(), 2);
        assert_eq!(read_tags(layout, "ds", "faces").unwrap().unwrap().provenance, v1);
        assert_eq!(TagWriter::open(layout, "ds", &v2, false).unwrap().generation(), 2, "a second shard joins it");
        next.append(&batch(&["a"], &[0.5]), None).unwrap();
        let stored = read_tags(layout, "ds", "faces").unwrap().unwrap();
        assert_eq!((stored.provenance.clone(), ids_and_values(&stored)), (v2.clone(), vec![("a".into(), 0.5)]));
        assert!(stored.detections.is_none() && detection_taggers(layout, "ds").unwrap().is_empty());
        next.retire_older().unwrap();
        assert_eq!(generations(storage, &tags_dir(layout, "ds", "faces")).unwrap(), [2]);
        assert_eq!(generations(storage, &detections_dir(layout, "ds", "faces")).unwrap(), Vec::<u32>::new());
        // An import replaces whatever is there, parameters alike or not.
        let file = TagFile { provenance: v2.clone(), tags: batch(&["q"], &[1.0]), detections: None };
        write_tags(layout, "ds", &file).unwrap();
        assert_eq!(ids_and_values(&read_tags(layout, "ds", "faces").unwrap().unwrap()), [("q".into(), 1.0)]);
        assert_eq!(generations(storage, &tags_dir(layout, "ds", "faces")).unwrap(), [3]);

        // An older workspace's single files (tags and boxes) beside it: one listing of the
        // dataset's tags and boxes finds what each tagger's own listings find.
        let old = TaggerProvenance::new("old", "1", serde_json::json!({}), None);
        let rows = batch(&["a"], &[0.25]);
        let metadata = vec![(PROVENANCE_KEY.to_string(), serde_json::to_string(&old).unwrap())];
        storage.write(&legacy_tags_file(layout, "ds", "old"), encode_parquet(&rows, metadata).unwrap()).unwrap();
        storage
            .write(&legacy_detections_file(layout, "ds", "old"), encode_parquet(&boxes(&["a"]), vec![]).unwrap())
            .unwrap();
        let listed = stored_taggers(layout, "ds").unwrap();
        assert_eq!(listed.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["faces", "old"]);
        for (name, visible) in &listed {
            assert_eq!(visible, &visible_parts(layout, "ds", name).unwrap(), "{name}");
        }
        assert_eq!((listed[1].1.generation, listed[1].1.has_detections()), (0, true));
        assert_eq!(detection_taggers(layout, "ds").unwrap(), ["old"]);
    }

    #[test]
    fn an_older_workspace_single_file_is_read_and_carried_into_the_first_generation() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let provenance = TaggerProvenance::new("pixels", "1", serde_json::json!({}), None);
        let metadata = vec![(PROVENANCE_KEY.to_string(), serde_json::to_string(&provenance).unwrap())];
        let legacy = legacy_tags_file(&layout, "ds", "pixels");
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        let rows = batch(&["a"], &[0.25]);
        let schema =
            Arc::new(Schema::new_with_metadata(rows.schema().fields().clone(), metadata.iter().cloned().collect()));
        let bytes = encode_parquet(&RecordBatch::try_new(schema, rows.columns().to_vec()).unwrap(), metadata).unwrap();
        std::fs::write(&legacy, bytes).unwrap();
        assert_eq!(tagger_names(&layout, "ds").unwrap(), ["pixels"]);
        assert_eq!(tag_columns(&layout, "ds", "pixels").unwrap(), ["brightness"]);
        let writer = TagWriter::open(&layout, "ds", &provenance, false).unwrap();
        writer.append(&batch(&["b"], &[0.5]), None).unwrap();
        writer.retire_older().unwrap();
        assert!(!legacy.exists());
        let stored = read_tags(&layout, "ds", "pixels").unwrap().unwrap();
        assert_eq!(ids_and_values(&stored), [("a".into(), 0.25), ("b".into(), 0.5)]);
        assert!(remove_tags(&layout, "ds", "pixels").unwrap());
        assert!(tagger_names(&layout, "ds").unwrap().is_empty() && !tags_dir(&layout, "ds", "pixels").exists());
    }

    #[test]
    fn column_names_must_be_free() {
        let taken: HashMap<String, String> = [("label".to_string(), "the manifest".to_string())].into();
        check_columns("t", ["brightness", "contrast"], &taken).unwrap();
        for bad in [vec!["label"], vec!["image_id"], vec!["x", "x"]] {
            assert!(check_columns("t", bad.iter().copied(), &taken).is_err(), "{bad:?}");
        }
    }
}
