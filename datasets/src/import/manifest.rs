//! Manifests: a CSV, Parquet or JSON-lines table with one row per image.
//!
//! One column holds the file path (`path`, `uri`, `file`, `file_name` or `filename`, or
//! the one named by `--path-column`); relative paths are relative to the manifest's
//! folder, and every path must resolve inside that folder (or `--root`). Optional
//! `image_id`, `split` and `label` columns fill those columns; every other column is
//! kept, with its type, as a queryable column of `images`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use super::{
    Candidate, CandidateSet, ImportOptions, OUTSIDE_HINT_ROOT, Rejection, canonical_root, normalize_split, relative_id,
    resolve_inside,
};
use crate::error::{DatasetError, Result};
use crate::record::COMPUTED_COLUMNS;
use crate::table_file::read_table;
use crate::workspace::closest;

/// Column names tried, in order, when no `--path-column` is given.
pub const PATH_COLUMNS: &[&str] = &["path", "uri", "file", "file_name", "filename"];

pub(super) async fn gather(path: &Path, options: &ImportOptions) -> Result<CandidateSet> {
    let table = read_table(path, "manifest").await?;
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    if table.num_rows() == 0 {
        return Err(bad("the manifest has no rows".into()));
    }
    let names: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
    let path_col = choose_path_column(&names, options.path_column.as_deref()).map_err(&bad)?;
    if let Some(clash) = names.iter().find(|n| COMPUTED_COLUMNS.contains(&n.as_str()) && **n != path_col) {
        return Err(bad(format!(
            "column {clash:?} is computed by slicetest from the image itself; rename it in the manifest"
        )));
    }
    let root_dir = match &options.root {
        Some(r) => r.clone(),
        None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let root = canonical_root(if root_dir.as_os_str().is_empty() { Path::new(".") } else { &root_dir })?;

    let paths = string_column(&table, Some(&path_col))?.expect("path column exists");
    let [id_col, split_col, label_col] =
        ["image_id", "split", "label"].map(|want| column_named(&names, want).map_err(&bad));
    let (id_col, split_col, label_col) = (id_col?, split_col?, label_col?);
    let ids = string_column(&table, id_col.as_deref())?;
    let splits = string_column(&table, split_col.as_deref())?;
    let labels = string_column(&table, label_col.as_deref())?;

    let mut set = CandidateSet::default();
    let mut rows = Vec::new();
    let mut first_row_of: HashMap<String, usize> = HashMap::new();
    for row in 0..table.num_rows() {
        let raw = if paths.is_null(row) { "" } else { paths.value(row).trim() };
        let item = format!("row {} ({})", row + 1, if raw.is_empty() { "no path" } else { raw });
        let reject = |reason: String| Rejection { item: item.clone(), reason };
        let file = match resolve_row_path(&root, raw) {
            Ok(f) => f,
            Err(reason) => {
                set.rejected.push(reject(reason));
                continue;
            }
        };
        let image_id = match ids.as_ref().filter(|a| !a.is_null(row)) {
            Some(a) => a.value(row).to_string(),
            None => match object_key(&file) {
                Some(key) => key,
                None => relative_id(&root, &file).expect("resolved inside root"),
            },
        };
        if let Some(first) = first_row_of.get(&image_id) {
            set.rejected.push(reject(format!("duplicate image_id {image_id:?} (first at row {})", first + 1)));
            continue;
        }
        first_row_of.insert(image_id.clone(), row);
        let value = |a: &Option<StringArray>| a.as_ref().filter(|a| !a.is_null(row)).map(|a| a.value(row).to_string());
        set.candidates.push(Candidate {
            image_id,
            uri: file.to_string_lossy().into_owned(),
            file,
            split: value(&splits).map(|s| normalize_split(&s)),
            label: value(&labels),
            row: rows.len(),
            stamp: None,
        });
        rows.push(row as u32);
    }
    let consumed = [Some(&path_col), id_col.as_ref(), split_col.as_ref(), label_col.as_ref()];
    let keep: Vec<usize> = (0..names.len()).filter(|&i| !consumed.contains(&Some(&names[i]))).collect();
    if !keep.is_empty() {
        let projected = table.project(&keep)?;
        let indices = datafusion::arrow::array::UInt32Array::from(rows);
        let taken = datafusion::arrow::compute::take_record_batch(&projected, &indices)?;
        set.extra = Some(normalize_columns(taken)?);
    }
    Ok(set)
}

/// Reads the whole manifest into one batch, with types inferred from every row.
fn choose_path_column(names: &[String], requested: Option<&str>) -> Result<String, String> {
    if let Some(want) = requested {
        return match names.iter().find(|n| *n == want) {
            Some(n) => Ok(n.clone()),
            None => Err(match closest(want, names) {
                Some(c) => format!("the manifest has no column {want:?}; did you mean {c:?}?"),
                None => format!("the manifest has no column {want:?}; its columns are: {}", names.join(", ")),
            }),
        };
    }
    PATH_COLUMNS.iter().find_map(|p| names.iter().find(|n| n.eq_ignore_ascii_case(p))).cloned().ok_or_else(|| {
        format!(
            "the manifest has no path column (looked for {}; or pass --path-column); its columns are: {}",
            PATH_COLUMNS.join(", "),
            names.join(", ")
        )
    })
}

fn resolve_row_path(root: &Path, raw: &str) -> Result<std::path::PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw.starts_with("s3://") || raw.starts_with("s3a://") {
        return Ok(raw.into()); // read (and found missing, if it is) when ingest probes it
    }
    let local = raw.strip_prefix("file://").unwrap_or(raw);
    if local.contains("://") {
        return Err("only local files and s3:// URLs are supported".into());
    }
    let p = Path::new(local);
    resolve_inside(root, &if p.is_absolute() { p.to_path_buf() } else { root.join(p) }, OUTSIDE_HINT_ROOT)
}

/// The key of an object's URL (`s3://bucket/images/a.png` → `images/a.png`): the image id
/// of a manifest row that names an object and no id.
fn object_key(file: &Path) -> Option<String> {
    let text = file.to_str().filter(|_| crate::image_files::is_object_url(file))?;
    let url = url::Url::parse(text).ok()?;
    Some(url.path().trim_start_matches('/').to_string()).filter(|k| !k.is_empty())
}

/// The manifest's column for `image_id`, `split` or `label`: the one of that name, else
/// the one that differs only in case (`Label`, `SPLIT`, as spreadsheets write them, the
/// way the path column is found); two of those are ambiguous.
fn column_named(names: &[String], want: &str) -> Result<Option<String>, String> {
    if names.iter().any(|n| n == want) {
        return Ok(Some(want.to_string()));
    }
    let matching: Vec<&String> = names.iter().filter(|n| n.eq_ignore_ascii_case(want)).collect();
    match matching.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        several => Err(format!(
            "columns {} all name the {want} column; keep one (or name one exactly {want:?})",
            several.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" and ")
        )),
    }
}

/// A column cast to UTF-8 (labels may be integers), or None if the manifest lacks it.
fn string_column(table: &RecordBatch, name: Option<&str>) -> Result<Option<StringArray>> {
    let Some(name) = name else { return Ok(None) };
    let Ok(idx) = table.schema().index_of(name) else { return Ok(None) };
    let col = cast(table.column(idx), &DataType::Utf8)?;
    Ok(Some(col.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone()))
}

/// Makes every input column nullable and stores strings as plain `Utf8` (DataFusion reads
/// Parquet strings as `Utf8View`), so the same column from a CSV and a Parquet manifest
/// has one type across versions.
fn normalize_columns(batch: RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let plain = match field.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
            DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
            _ => None,
        };
        match plain {
            Some(t) => {
                columns.push(cast(column, &t)?);
                fields.push(Field::new(field.name(), t, true));
            }
            None => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone().with_nullable(true));
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_column_is_found_or_explained() {
        assert_eq!(choose_path_column(&names(&["id", "Path"]), None).unwrap(), "Path");
        let err = choose_path_column(&names(&["id", "weather"]), None).unwrap_err();
        assert!(err.contains("no path column") && err.contains("weather"), "{err}");
        let err = choose_path_column(&names(&["filepath"]), Some("filepth")).unwrap_err();
        assert!(err.contains("did you mean \"filepath\""), "{err}");
    }

    #[tokio::test]
    async fn csv_rows_become_candidates_with_typed_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.png"), b"x").unwrap();
        fs::write(dir.path().join("b.png"), b"x").unwrap();
        let csv = "path,label,split,num_people,weather\na.png,cat,Training,3,sunny\nb.png,7,,,\n\
                   ../outside.png,dog,test,1,rain\na.png,cat,train,2,fog\nmissing.png,cat,train,1,x\n";
        fs::write(dir.path().join("m.csv"), csv).unwrap();
        let set = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap();
        let ids: Vec<_> = set.candidates.iter().map(|c| c.image_id.as_str()).collect();
        assert_eq!(ids, ["a.png", "b.png"]);
        assert_eq!(set.candidates[0].split.as_deref(), Some("train"));
        assert_eq!(set.candidates[1].label.as_deref(), Some("7"));
        let reasons: Vec<_> = set.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("cannot open") || reasons[0].contains("outside"), "{reasons:?}");
        assert!(reasons[1].contains("duplicate image_id \"a.png\" (first at row 1)"), "{reasons:?}");
        let extra = set.extra.unwrap();
        assert_eq!(extra.num_rows(), 2);
        assert_eq!(extra.schema().field_with_name("num_people").unwrap().data_type(), &DataType::Int64);
        assert!(extra.column(0).is_null(1));
    }

    #[tokio::test]
    async fn the_id_split_and_label_columns_are_found_whatever_their_case() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.png"), b"x").unwrap();
        let csv = "Path,Image_ID,Label,SPLIT,Weather\na.png,first,cat,Validation,sunny\n";
        fs::write(dir.path().join("m.csv"), csv).unwrap();
        let set = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap();
        let c = &set.candidates[0];
        assert_eq!((c.image_id.as_str(), c.label.as_deref(), c.split.as_deref()), ("first", Some("cat"), Some("val")));
        let extra = set.extra.unwrap();
        let kept: Vec<_> = extra.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(kept, ["Weather"], "consumed columns are not kept twice");

        // The exact name wins; the other stays a column of its own.
        fs::write(dir.path().join("m.csv"), "path,label,Label\na.png,cat,Cat\n").unwrap();
        let set = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap();
        assert_eq!(set.candidates[0].label.as_deref(), Some("cat"));
        assert_eq!(set.extra.unwrap().schema().field(0).name(), "Label");

        fs::write(dir.path().join("m.csv"), "path,Label,LABEL\na.png,cat,Cat\n").unwrap();
        let err = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap_err().to_string();
        assert!(err.contains("columns \"Label\" and \"LABEL\" all name the label column"), "{err}");
    }

    #[tokio::test]
    async fn a_repeated_header_name_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("m.csv"), "path,label,label\na.png,cat,dog\n").unwrap();
        let err = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap_err().to_string();
        assert!(err.contains("column \"label\" appears twice in the header (columns 2 and 3)"), "{err}");
    }

    #[tokio::test]
    async fn a_computed_column_in_the_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("m.csv"), "path,width\na.png,3\n").unwrap();
        let err = gather(&dir.path().join("m.csv"), &ImportOptions::default()).await.unwrap_err().to_string();
        assert!(err.contains("\"width\" is computed by slicetest"), "{err}");
    }
}
