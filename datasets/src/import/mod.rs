//! Importers: each turns one kind of input into a [`CandidateSet`], the files to probe
//! plus the per-image columns the input carries. Probing, merging and publishing a
//! version are the same for all of them (see [`crate::ingest`]).

mod boxes;
mod coco;
mod folder;
mod idx;
mod manifest;
mod voc;
pub(crate) mod yolo;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;

pub use idx::{FASHION_MNIST_CLASSES, IdxClasses};

/// The kinds of input `slicetest ingest` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SourceFormat {
    /// Decide from the path: a directory of IDX files, a VOC folder (Annotations/ or .xml files), an image folder; a file by extension (.csv/.parquet/.jsonl manifest, .json COCO, .yaml YOLO).
    #[default]
    Auto,
    /// A folder of images, recursive; class-named subfolders give `label`, train/val/test parents give `split`.
    Folder,
    /// A CSV, Parquet or JSON-lines manifest with a path column and any other columns.
    Manifest,
    /// MNIST-style IDX files (`train-images-idx3-ubyte.gz`, …) with digit labels.
    Idx,
    /// Fashion-MNIST's IDX files, labelled with its ten class names.
    FashionMnist,
    /// A COCO-style JSON file (images, annotations, categories).
    Coco,
    /// An Ultralytics YOLO dataset: its data.yaml (names, train / val / test) and a label file per image.
    Yolo,
    /// Pascal VOC: a folder of XML annotations (Annotations/ + JPEGImages/, or an XML beside each image).
    Voc,
}

impl SourceFormat {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Auto => "auto",
            SourceFormat::Folder => "folder",
            SourceFormat::Manifest => "manifest",
            SourceFormat::Idx => "idx",
            SourceFormat::FashionMnist => "fashion-mnist",
            SourceFormat::Coco => "coco",
            SourceFormat::Yolo => "yolo",
            SourceFormat::Voc => "voc",
        }
    }
}

/// Importer settings that come from the command line.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Forces a split for every image that has none from the input.
    pub split: Option<String>,
    /// The folder that image paths must stay inside (default: the manifest's or JSON's folder).
    pub root: Option<PathBuf>,
    /// The manifest column holding file paths (default: the first of `path`, `uri`, `file`, `file_name`, `filename`).
    pub path_column: Option<String>,
    /// Show progress bars.
    pub progress: bool,
    /// A box manifest: ground-truth boxes for the imported images (see `boxes.rs`).
    pub boxes: Option<PathBuf>,
    /// The box manifest's category list, naming categories without boxes too.
    pub categories: Option<PathBuf>,
}

/// One file an importer proposes to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Stable id: the file's path relative to the import root, or the input's own id.
    pub image_id: String,
    /// Where to read the file.
    pub file: PathBuf,
    /// Value of the `uri` column: absolute path, or workspace-relative for files slicetest wrote.
    pub uri: String,
    /// train / val / test / holdout, or another value the input gave.
    pub split: Option<String>,
    /// Class label, when the input has one.
    pub label: Option<String>,
    /// Row of this candidate in [`CandidateSet::extra`].
    pub row: usize,
    /// What identifies the file's content without reading it, when the importer learnt it
    /// for free (an object's size and ETag, from the bucket listing); see
    /// [`crate::ingest::KnownFiles`].
    pub stamp: Option<String>,
}

/// An input item that was not ingested, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The file or manifest row concerned.
    pub item: String,
    /// Why it was skipped, in words a person can act on.
    pub reason: String,
}

/// What an importer found: candidates, their extra columns, and what it refused up front.
#[derive(Debug, Default)]
pub struct CandidateSet {
    /// Files to probe, in input order.
    pub candidates: Vec<Candidate>,
    /// Input columns (manifest columns, COCO counts), one row per candidate `row`.
    pub extra: Option<RecordBatch>,
    /// Items refused before probing (missing file, path outside the root, duplicate id, …).
    pub rejected: Vec<Rejection>,
    /// Non-image files that were passed over.
    pub ignored: usize,
    /// The format that was actually used (after auto-detection).
    pub format: SourceFormat,
    /// Ground-truth boxes the input carries (COCO annotations with a `bbox`).
    pub objects: Option<crate::objects::ImportedObjects>,
}

/// Runs the importer for `format` (auto-detected when `Auto`) on `path`.
pub async fn gather(
    path: &Path,
    format: SourceFormat,
    options: &ImportOptions,
    layout: &WorkspaceLayout,
    dataset: &str,
) -> Result<CandidateSet> {
    let bucket = crate::image_files::is_object_url(path);
    if !bucket && !path.exists() {
        return Err(DatasetError::BadInput {
            source_path: path.to_path_buf(),
            message: "no such file or directory".into(),
        });
    }
    let format = match format {
        SourceFormat::Auto if bucket => SourceFormat::Folder,
        SourceFormat::Auto => detect(path)?,
        f => f,
    };
    let mut set = match format {
        SourceFormat::Folder if bucket => folder::gather_objects(path)?,
        _ if bucket => {
            return Err(DatasetError::BadInput {
                source_path: path.to_path_buf(),
                message: format!(
                    "a bucket prefix is ingested as a folder of images; --format {} reads a local file \
                     (a manifest may list s3:// URLs)",
                    format.name()
                ),
            });
        }
        SourceFormat::Folder => folder::gather(path, options)?,
        SourceFormat::Manifest => manifest::gather(path, options).await?,
        SourceFormat::Coco => coco::gather(path, options)?,
        SourceFormat::Yolo => yolo::gather(path, options)?,
        SourceFormat::Voc => voc::gather(path, options)?,
        SourceFormat::Idx => idx::gather(path, IdxClasses::Digits, options, layout, dataset)?,
        SourceFormat::FashionMnist => idx::gather(path, IdxClasses::FashionMnist, options, layout, dataset)?,
        SourceFormat::Auto => unreachable!("resolved above"),
    };
    set.format = format;
    if let Some(boxes_file) = &options.boxes {
        if set.objects.is_some() {
            return Err(DatasetError::BadInput {
                source_path: boxes_file.clone(),
                message: format!(
                    "the {} input carries its own boxes; --boxes is for folders and manifests",
                    format.name()
                ),
            });
        }
        set.objects = Some(boxes::gather(boxes_file, options.categories.as_deref(), &set).await?);
    } else if let Some(list) = &options.categories {
        return Err(DatasetError::BadInput {
            source_path: list.clone(),
            message: "a category list goes with a box manifest (--boxes); a COCO file or YOLO data.yaml lists its own \
                      categories"
                .into(),
        });
    }
    apply_split(&mut set, options);
    Ok(set)
}

/// `--split`: the split of every candidate that has none from its input.
fn apply_split(set: &mut CandidateSet, options: &ImportOptions) {
    if let Some(split) = &options.split {
        let split = normalize_split(split);
        for c in set.candidates.iter_mut().filter(|c| c.split.is_none()) {
            c.split = Some(split.clone());
        }
    }
}

fn detect(path: &Path) -> Result<SourceFormat> {
    if path.is_dir() {
        if idx::looks_like_idx_dir(path) {
            let fashion = path.to_string_lossy().to_lowercase().contains("fashion");
            return Ok(if fashion { SourceFormat::FashionMnist } else { SourceFormat::Idx });
        }
        if voc::looks_like_voc(path) {
            return Ok(SourceFormat::Voc);
        }
        return Ok(SourceFormat::Folder);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "parquet" | "jsonl" | "ndjson" => Ok(SourceFormat::Manifest),
        "json" => Ok(SourceFormat::Coco),
        "yaml" | "yml" => Ok(SourceFormat::Yolo),
        _ => Err(DatasetError::BadInput {
            source_path: path.to_path_buf(),
            message: "cannot tell the input format: give a folder, a .csv/.parquet/.jsonl manifest, a COCO .json or \
                      a YOLO data.yaml, or pass --format"
                .into(),
        }),
    }
}

/// Maps common spellings of a split to train / val / test / holdout; other values are kept, lowercased.
pub fn normalize_split(s: &str) -> String {
    let lower = s.trim().to_ascii_lowercase();
    match lower.as_str() {
        "train" | "training" => "train".into(),
        "val" | "valid" | "validation" | "dev" => "val".into(),
        "test" | "testing" => "test".into(),
        "holdout" | "hold-out" | "hold_out" => "holdout".into(),
        _ => lower,
    }
}

/// The count column of each category (`num_<name>`, lowercased, other characters turned
/// into `_`), by category id in id order; a name that collides with another after
/// cleaning, or with `num_annotations`, gets its id appended (`num_dog_7`).
pub(crate) fn count_columns<'a>(categories: impl IntoIterator<Item = (i64, &'a str)>) -> BTreeMap<i64, String> {
    let mut columns = BTreeMap::new();
    let mut taken = std::collections::HashSet::new();
    for (id, name) in categories {
        let mut column = format!("num_{}", crate::names::identifier(name));
        if taken.contains(&column) || column == "num_annotations" {
            column = format!("{column}_{id}");
        }
        taken.insert(column.clone());
        columns.insert(id, column);
    }
    columns
}

/// Gives `set` its `objects`, with the image columns a COCO import makes of its
/// annotations, for an importer whose candidates are rows 0, 1, … in order:
/// `num_annotations` and a `num_<category>` count per category ([`count_columns`]), so
/// `WHERE num_person > 3` picks crowded images.
pub(crate) fn attach_objects(set: &mut CandidateSet, objects: crate::objects::ImportedObjects) -> Result<()> {
    set.extra = Some(object_counts(set, &objects)?);
    set.objects = Some(objects);
    Ok(())
}

fn object_counts(set: &CandidateSet, objects: &crate::objects::ImportedObjects) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let columns = count_columns(objects.categories.iter().map(|c| (c.id, c.name.as_str())));
    let row: std::collections::HashMap<&str, usize> =
        set.candidates.iter().map(|c| (c.image_id.as_str(), c.row)).collect();
    let images = set.candidates.len();
    let mut totals = vec![0i64; images];
    let mut counts: BTreeMap<i64, Vec<i64>> = columns.keys().map(|&id| (id, vec![0; images])).collect();
    for object in &objects.objects {
        if let (Some(&i), Some(column)) = (row.get(object.image_id.as_str()), counts.get_mut(&object.category_id)) {
            column[i] += 1;
            totals[i] += 1;
        }
    }
    let mut fields = vec![Field::new("num_annotations", DataType::Int64, true)];
    let mut arrays: Vec<ArrayRef> = vec![std::sync::Arc::new(Int64Array::from(totals))];
    for (id, name) in &columns {
        fields.push(Field::new(name, DataType::Int64, true));
        arrays.push(std::sync::Arc::new(Int64Array::from(counts.remove(id).unwrap_or_default())));
    }
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)?)
}

/// The walk every importer makes of a folder, `max_depth` levels down (`usize::MAX`: all):
/// sorted by name, without following links, hidden names (`.cache/`, `.x.png`) skipped
/// below the folder itself.
pub(crate) fn visible_entries(
    dir: &Path,
    max_depth: usize,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> {
    walkdir::WalkDir::new(dir)
        .max_depth(max_depth)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
}

/// A path relative to `root`, with '/' separators: the image-id rule for files on disk.
pub(crate) fn relative_id(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// What a file outside the folder can do about it: a manifest's or COCO file's paths may
/// widen the folder with `--root`; a folder's files are the folder.
pub(crate) const OUTSIDE_HINT_ROOT: &str = "move the file inside it or pass --root";
/// See [`OUTSIDE_HINT_ROOT`].
pub(crate) const OUTSIDE_HINT_FOLDER: &str = "a link in the folder must point inside it: copy the file in instead";

/// Resolves `file` and checks it stays inside `root` (both canonical), following symlinks;
/// `hint` ends the error of a file outside.
pub(crate) fn resolve_inside(root: &Path, file: &Path, hint: &str) -> Result<PathBuf, String> {
    let canonical = file.canonicalize().map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    if !canonical.starts_with(root) {
        return Err(format!("path {} is outside the folder {}; {hint}", canonical.display(), root.display()));
    }
    if !canonical.is_file() {
        return Err(format!("{} is not a regular file", canonical.display()));
    }
    Ok(canonical)
}

/// Canonicalizes an import root with a clear error.
pub(crate) fn canonical_root(root: &Path) -> Result<PathBuf> {
    root.canonicalize().map_err(DatasetError::io("opening", root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_normalised() {
        assert_eq!(normalize_split("Training"), "train");
        assert_eq!(normalize_split("validation"), "val");
        assert_eq!(normalize_split("TEST"), "test");
        assert_eq!(normalize_split("calib"), "calib");
    }

    #[test]
    fn relative_ids_use_forward_slashes() {
        assert_eq!(relative_id(Path::new("/r"), Path::new("/r/a/b.png")).as_deref(), Some("a/b.png"));
        assert_eq!(relative_id(Path::new("/r"), Path::new("/x/b.png")), None);
    }
}
