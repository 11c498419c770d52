//! Segmentation masks: label maps read from PNG files, stored run-length encoded.
//!
//! A mask set (`datasets/<ds>/masks/<source>/`) is one label map per image, imported from
//! a folder of PNG label maps with a class list:
//!
//! ```text
//! labels-<key>.parquet   image_id, sha256, width, height, mask_sha256, rle (one row per image)
//! classes-<key>.parquet  image_id, sha256, source, class, class_id, pixels, regions
//!                        (one row per image and class present: the `masks` SQL table)
//! masks.json             the manifest, written last: classes, ignore index, counts, the
//!                        two files' names and SHA-256s
//! ```
//!
//! `sha256` is the image's content hash when the mask was imported: like tags, a mask
//! describes the image as it was, and readers use only rows whose sha256 is current.
//!
//! The data files get names no other import takes (`<key>`: 16 hex digits of a hash of
//! their content and the import) and the manifest names them, so a set is published,
//! replaced or removed by writing or removing one object — the same on a local disk and
//! in a bucket, which has no rename. Readers see the old set or the new one, never half of one. (Sets imported
//! before this layout have `labels.parquet` / `classes.parquet`, which their manifests
//! name by default.)

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::stored::{parse_json, read_checked_parquet};
use crate::version::{encode_parquet, keyed_name};

/// The label value of pixels that have no class, unless the import says otherwise.
pub const DEFAULT_IGNORE_INDEX: u16 = 255;
/// A mask set's manifest.
pub const MANIFEST_FILE: &str = "masks.json";
/// The largest label map side accepted (as for images).
pub const MAX_SIDE: u32 = 16_384;

/// One class of a mask set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskClass {
    /// The pixel value.
    pub id: u16,
    /// Its name as given.
    pub name: String,
    /// The name as a column fragment (`traffic light` → `traffic_light`).
    pub column: String,
}

/// A class id → name list, from `classes.txt` (one name per line, the line number counting
/// from 0 is the id; blank lines are ids without a class) or JSON: a list of names (index
/// = id), an object `{"0": "road", …}`, or COCO-style `[{"id": 0, "name": "road"}, …]`.
pub fn read_classes(path: &Path) -> Result<Vec<MaskClass>> {
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let text = fs::read_to_string(path).map_err(DatasetError::io("reading", path))?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let pairs: Vec<(u64, String)> = if is_json {
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        classes_from_json(&value).map_err(bad)?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| (i as u64, line.trim().to_string()))
            .collect()
    };
    classes_from_pairs(pairs).map_err(bad)
}

fn classes_from_json(value: &serde_json::Value) -> std::result::Result<Vec<(u64, String)>, String> {
    use serde_json::Value;
    let name_of = |v: &Value, at: &str| v.as_str().map(str::to_string).ok_or_else(|| format!("{at}: not a name: {v}"));
    match value {
        Value::Array(items) if items.iter().all(Value::is_object) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let id =
                    item.get("id").and_then(Value::as_u64).ok_or_else(|| format!("entry {i}: no numeric \"id\""))?;
                Ok((id, name_of(item.get("name").unwrap_or(&Value::Null), &format!("entry {i}"))?))
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| Ok((i as u64, name_of(v, &format!("entry {i}"))?)))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let id = k.parse::<u64>().map_err(|_| format!("key {k:?} is not a class id"))?;
                Ok((id, name_of(v, &format!("key {k:?}"))?))
            })
            .collect(),
        _ => Err("expected a list of names, an object of id → name, or a list of {id, name}".into()),
    }
}

/// The id of the class slicetest adds for pixels no COCO annotation covers.
pub const BACKGROUND_ID: u16 = 0;

/// The classes of a mask set made from a COCO file: "background" (id 0, for pixels no
/// annotation covers) and the file's categories, by id.
pub fn classes_of_categories(categories: &[(i64, String)]) -> std::result::Result<Vec<MaskClass>, String> {
    let mut pairs = vec![(BACKGROUND_ID as u64, "background".to_string())];
    for (id, name) in categories {
        if *id <= 0 {
            return Err(format!(
                "category {name:?} has id {id}; category ids start at 1 (0 is the background of pixels no annotation covers)"
            ));
        }
        pairs.push((*id as u64, name.clone()));
    }
    classes_from_pairs(pairs)
}

fn classes_from_pairs(mut pairs: Vec<(u64, String)>) -> std::result::Result<Vec<MaskClass>, String> {
    if pairs.is_empty() {
        return Err("the class list is empty".into());
    }
    pairs.sort_by_key(|(id, _)| *id);
    let mut classes: Vec<MaskClass> = Vec::with_capacity(pairs.len());
    let mut columns = BTreeMap::new();
    for (id, name) in pairs {
        let id = u16::try_from(id).map_err(|_| format!("class id {id} is above 65535"))?;
        if classes.last().is_some_and(|c| c.id == id) {
            return Err(format!("class id {id} is listed twice"));
        }
        let column = crate::names::identifier(&name);
        if column.is_empty() {
            return Err(format!("class {id} ({name:?}) has no letters or digits to name a column with"));
        }
        if let Some(other) = columns.insert(column.clone(), name.clone()) {
            return Err(format!("classes {other:?} and {name:?} both become columns named {column}_pct"));
        }
        classes.push(MaskClass { id, name, column });
    }
    Ok(classes)
}

/// A label map as (value, run length) pairs, row-major.
pub type Runs = Vec<(u16, u32)>;

/// One label map: a class id per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` values.
    pub labels: Vec<u16>,
}

/// Decodes a PNG label map: 8- or 16-bit grayscale (the value is the class id), or a
/// palette image (the palette index is the class id, as in Pascal VOC's masks). Colour
/// and alpha images are refused: their pixels are colours, not class ids.
pub fn decode_png_label_map(bytes: &[u8]) -> std::result::Result<LabelMap, String> {
    let (frame, buf) = decode_frame(bytes)?;
    pixels_of_frame(&frame, &buf)
}

/// [`decode_png_label_map`] as (width, height, runs): (value, run length) pairs, row-major,
/// each maximal. An 8-bit map goes from its rows to runs without a per-pixel array.
pub fn decode_png_label_runs(bytes: &[u8]) -> std::result::Result<(u32, u32, Runs), String> {
    let (frame, buf) = decode_frame(bytes)?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut runs: Vec<(u16, u32)> = Vec::new();
    let mut push = |v: u16, n: usize| match runs.last_mut() {
        Some((last, count)) if *last == v => *count += n as u32,
        _ => runs.push((v, n as u32)),
    };
    if frame.bit_depth == png::BitDepth::Eight {
        for row in buf.chunks(frame.line_size).take(h) {
            let mut rest = &row[..w];
            while let Some(&v) = rest.first() {
                // Whole blocks of 32 equal bytes first (a branch-free compare the compiler
                // vectorises), then the first differing byte.
                let mut n = 0;
                while let Some(block) = rest.get(n..n + 32) {
                    if !block.iter().fold(true, |same, &x| same & (x == v)) {
                        break;
                    }
                    n += 32;
                }
                n += rest[n..].iter().position(|&x| x != v).unwrap_or(rest.len() - n);
                push(v as u16, n);
                rest = &rest[n..];
            }
        }
    } else {
        for v in pixels_of_frame(&frame, &buf)?.labels {
            push(v, 1);
        }
    }
    Ok((frame.width, frame.height, runs))
}

/// The PNG's frame with no transformation (palette indices stay indices).
fn decode_frame(bytes: &[u8]) -> std::result::Result<(png::OutputInfo, Vec<u8>), String> {
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: 1 << 30 });
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| format!("not a readable PNG: {e}"))?;
    let (width, height) = reader.info().size();
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("{width}×{height} is larger than {MAX_SIDE} pixels a side"));
    }
    let size = reader.output_buffer_size().ok_or("the PNG is too large to decode")?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| format!("the PNG is truncated or corrupt: {e}"))?;
    use png::ColorType;
    match (frame.color_type, frame.bit_depth as u8) {
        (ColorType::Grayscale, 8 | 16) | (ColorType::Indexed, 1 | 2 | 4 | 8) => Ok((frame, buf)),
        (ColorType::Grayscale, bits) => {
            Err(format!("{bits}-bit grayscale: label maps are 8- or 16-bit grayscale, or a palette"))
        }
        (other, bits) => Err(format!(
            "a {other:?} {bits}-bit PNG holds colours; a label map is grayscale (8 or 16 bits) or a palette image"
        )),
    }
}

/// A checked frame's pixels as a label map.
fn pixels_of_frame(frame: &png::OutputInfo, buf: &[u8]) -> std::result::Result<LabelMap, String> {
    use png::{BitDepth, ColorType};
    let (width, height) = (frame.width, frame.height);
    let (w, h) = (width as usize, height as usize);
    let mut labels = Vec::with_capacity(w * h);
    match (frame.color_type, frame.bit_depth) {
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            for row in buf.chunks(frame.line_size).take(h) {
                labels.extend(row[..2 * w].chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])));
            }
        }
        (ColorType::Grayscale | ColorType::Indexed, BitDepth::Eight) => {
            for row in buf.chunks(frame.line_size).take(h) {
                labels.extend(row[..w].iter().map(|&v| v as u16));
            }
        }
        (ColorType::Grayscale | ColorType::Indexed, depth) => {
            let bits = depth as usize;
            if bits == 16 {
                return Err("a 16-bit palette is not a PNG".into());
            }
            if frame.color_type == ColorType::Grayscale && bits < 8 {
                return Err(format!("{bits}-bit grayscale: label maps are 8- or 16-bit grayscale, or a palette"));
            }
            let per_byte = 8 / bits;
            let mask = ((1u16 << bits) - 1) as u8;
            for row in buf.chunks(frame.line_size).take(h) {
                labels.extend((0..w).map(|x| {
                    let byte = row[x / per_byte];
                    let shift = 8 - bits * (x % per_byte + 1);
                    ((byte >> shift) & mask) as u16
                }));
            }
        }
        (other, depth) => {
            return Err(format!(
                "a {other:?} {}-bit PNG holds colours; a label map is grayscale (8 or 16 bits) or a palette image",
                depth as u8
            ));
        }
    }
    Ok(LabelMap { width, height, labels })
}

/// Run-length encodes a label map: (value, run length) pairs as LEB128 varints, row-major.
pub fn rle_encode(labels: &[u16]) -> Vec<u8> {
    rle_encode_runs(labels.iter().map(|&v| (v, 1)))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes [`rle_encode`]'s output of `pixels` values.
pub fn rle_decode(bytes: &[u8], pixels: usize) -> std::result::Result<Vec<u16>, String> {
    let mut labels = Vec::with_capacity(pixels);
    for (value, run) in rle_runs(bytes, pixels)? {
        labels.resize(labels.len() + run as usize, value);
    }
    Ok(labels)
}

/// Run-length encodes a label map given as runs (value, length); adjacent runs of one
/// value are merged, so the bytes equal [`rle_encode`]'s of the expanded map.
pub fn rle_encode_runs(runs: impl IntoIterator<Item = (u16, u32)>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending: Option<(u16, u64)> = None;
    for (value, run) in runs {
        match &mut pending {
            Some((v, n)) if *v == value => *n += run as u64,
            _ => {
                if let Some((v, n)) = pending {
                    put_varint(&mut out, v as u64);
                    put_varint(&mut out, n);
                }
                pending = Some((value, run as u64));
            }
        }
    }
    if let Some((v, n)) = pending {
        put_varint(&mut out, v as u64);
        put_varint(&mut out, n);
    }
    out
}

/// The (value, run length) pairs of [`rle_encode`]'s output of `pixels` values.
pub fn rle_runs(bytes: &[u8], pixels: usize) -> std::result::Result<Vec<(u16, u32)>, String> {
    let mut runs = Vec::new();
    let mut covered = 0usize;
    let mut at = 0;
    let mut next = || -> std::result::Result<u64, String> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = *bytes.get(at).ok_or("the run-length data ends in the middle of a run")?;
            at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err("a run-length number is too long".into());
            }
        }
    };
    while covered < pixels {
        let value = u16::try_from(next()?).map_err(|_| "a label above 65535")?;
        let run = next()? as usize;
        if run == 0 || covered + run > pixels {
            return Err(format!("runs cover more than the {pixels} pixels of the map"));
        }
        covered += run;
        runs.push((value, run as u32));
    }
    Ok(runs)
}

/// The mask files under `dir` (`.png`, any depth), as (path relative to `dir` with `/`
/// separators, full path), sorted.
pub fn mask_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(DatasetError::BadInput {
            source_path: dir.to_path_buf(),
            message: "not a directory of mask files".into(),
        });
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        let entry =
            entry.map_err(|e| DatasetError::BadInput { source_path: dir.to_path_buf(), message: e.to_string() })?;
        let path = entry.path();
        if entry.file_type().is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            let relative = path.strip_prefix(dir).expect("walked under dir");
            let relative: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            files.push((relative.join("/"), path.to_path_buf()));
        }
    }
    files.sort();
    Ok(files)
}

/// Matches mask paths (relative to their folder, or COCO `file_name`s) to image ids: by
/// the same relative path, else with any extension (`gt/a.png` for image `gt/a.jpg`),
/// else by a unique image whose path ends with it (`a.png` for image `val/a.jpg`).
/// Returns `(mask index, image id)` pairs, or every problem.
pub fn match_masks<'a>(
    relative: &[String],
    image_ids: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<Vec<(usize, String)>, Vec<String>> {
    let (mut matched, mut problems) = (Vec::with_capacity(relative.len()), Vec::new());
    for (i, found) in match_mask_paths(relative, image_ids).into_iter().enumerate() {
        match found {
            Ok(id) => matched.push((i, id)),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() { Ok(matched) } else { Err(problems) }
}

/// [`match_masks`] per mask: its image id, or why it has none.
pub fn match_mask_paths<'a>(
    relative: &[String],
    image_ids: impl IntoIterator<Item = &'a str>,
) -> Vec<std::result::Result<String, String>> {
    let ids: Vec<&str> = image_ids.into_iter().collect();
    let exact: std::collections::HashSet<&str> = ids.iter().copied().collect();
    let mut by_stem: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut by_tail: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in &ids {
        let stem = strip_extension(id);
        by_stem.entry(stem).or_default().push(id);
        for (at, _) in stem.match_indices('/') {
            by_tail.entry(&stem[at + 1..]).or_default().push(id);
        }
    }
    relative
        .iter()
        .map(|rel| {
            if exact.contains(rel.as_str()) {
                return Ok(rel.clone());
            }
            let stem = strip_extension(rel);
            match by_stem.get(stem).or_else(|| by_tail.get(stem)).map(Vec::as_slice) {
                Some([one]) => Ok(one.to_string()),
                Some(several) => Err(format!("{rel}: matches several images ({})", several.join(", "))),
                None => Err(format!("{rel}: no image of the dataset has this path (with any extension)")),
            }
        })
        .collect()
}

fn strip_extension(path: &str) -> &str {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].rfind('.') {
        Some(dot) if dot > 0 => &path[..name_start + dot],
        _ => path,
    }
}

/// A mask set's manifest (`masks.json`), written last: the set exists once it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskSetManifest {
    /// The set's name (also the tagger name of its `<class>_pct` columns).
    pub source: String,
    /// The dataset.
    pub dataset: String,
    /// The dataset version the masks were matched against.
    pub dataset_version: u64,
    /// The classes, by id.
    pub classes: Vec<MaskClass>,
    /// The value of unlabelled pixels.
    pub ignore_index: u16,
    /// The class of pixels no annotation covers, for sets made from COCO annotations
    /// (the "background" class slicetest adds); predictions given as per-class masks
    /// leave such pixels to it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<u16>,
    /// Images with a mask.
    pub images: u64,
    /// Labelled pixels over all masks.
    pub labelled_pixels: u64,
    /// Where the masks came from (the folder or COCO file as given).
    pub source_dir: String,
    /// SHA-256 over the sorted `image_id\tmask_sha256` lines: two imports of the same
    /// files have the same hash.
    pub masks_hash: String,
    /// The label maps' file in the set's directory (`labels-<key>.parquet`).
    #[serde(default = "legacy_labels_file")]
    pub labels_file: String,
    /// SHA-256 of the label maps' file, checked when read.
    pub labels_sha256: String,
    /// The per-image class statistics' file (`classes-<key>.parquet`, the `masks` table).
    #[serde(default = "legacy_classes_file")]
    pub classes_file: String,
    /// SHA-256 of the class statistics' file.
    pub classes_sha256: String,
    /// Import time (RFC 3339).
    pub created_at: String,
    /// The slicetest version that wrote it.
    pub slicetest_version: String,
}

fn legacy_labels_file() -> String {
    "labels.parquet".into()
}

fn legacy_classes_file() -> String {
    "classes.parquet".into()
}

impl MaskSetManifest {
    /// The class with pixel value `id`.
    pub fn class(&self, id: u16) -> Option<&MaskClass> {
        self.classes.binary_search_by_key(&id, |c| c.id).ok().map(|i| &self.classes[i])
    }
}

/// `datasets/<ds>/masks/<source>/`.
pub fn mask_set_dir(layout: &WorkspaceLayout, dataset: &str, source: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("masks").join(source)
}

/// The mask sets of `dataset`, sorted by name (one listing, also in a bucket).
pub fn mask_sources(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    let dir = layout.dataset_dir(dataset).join("masks");
    let suffix = format!("/{MANIFEST_FILE}");
    let mut names: Vec<String> = layout
        .storage()
        .list_files(&dir)?
        .iter()
        .filter_map(|file| file.strip_suffix(&suffix))
        .filter(|name| validate_name(name).is_ok())
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// A mask set's manifest.
pub fn read_mask_set(layout: &WorkspaceLayout, dataset: &str, source: &str) -> Result<MaskSetManifest> {
    validate_name(source)?;
    let path = mask_set_dir(layout, dataset, source).join(MANIFEST_FILE);
    let text = match layout.storage().read_opt(&path)? {
        Some(text) => text,
        None => {
            let known = mask_sources(layout, dataset)?;
            return Err(DatasetError::BadInput {
                source_path: path,
                message: if known.is_empty() {
                    format!(
                        "dataset {dataset} has no masks; import them with `slicetest tag import --masks DIR --classes FILE`"
                    )
                } else {
                    format!("dataset {dataset} has no mask set {source:?} (mask sets: {})", known.join(", "))
                },
            });
        }
    };
    parse_json(&text, path, "mask set manifest")
}

/// A mask set's label maps (image_id, sha256, width, height, mask_sha256, rle), checked
/// against the manifest's hash.
pub fn read_labels(layout: &WorkspaceLayout, manifest: &MaskSetManifest) -> Result<RecordBatch> {
    let path = labels_path(layout, manifest);
    let expected = &manifest.labels_sha256;
    let altered =
        |actual: &str| format!("the file was altered after import (sha256 {actual}, manifest says {expected})");
    read_checked_parquet(layout.storage(), &path, expected, "mask set", altered, None)
}

/// The label maps' file of a mask set.
pub fn labels_path(layout: &WorkspaceLayout, manifest: &MaskSetManifest) -> PathBuf {
    mask_set_dir(layout, &manifest.dataset, &manifest.source).join(&manifest.labels_file)
}

/// The class statistics' file of a mask set (what the `masks` SQL table reads).
pub fn classes_path(layout: &WorkspaceLayout, manifest: &MaskSetManifest) -> PathBuf {
    mask_set_dir(layout, &manifest.dataset, &manifest.source).join(&manifest.classes_file)
}

/// The schema of a mask set's label maps.
pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("mask_sha256", DataType::Utf8, false),
        Field::new("rle", DataType::Binary, false),
    ]))
}

/// The schema of `classes.parquet` (the `masks` SQL table reads it).
pub fn classes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("class_id", DataType::Int32, false),
        Field::new("pixels", DataType::Int64, false),
        Field::new("regions", DataType::Int32, false),
    ]))
}

/// Publishes a mask set, replacing one of the same name: the two data files are created
/// under names no other content takes, then the manifest that names them is written —
/// that one write is the commit. The files only the replaced set named are removed after.
/// The manifest's file names and SHA-256 fields are filled in here.
pub fn write_mask_set(
    layout: &WorkspaceLayout,
    mut manifest: MaskSetManifest,
    labels: &RecordBatch,
    classes: &RecordBatch,
) -> Result<MaskSetManifest> {
    validate_name(&manifest.source)?;
    let storage = layout.storage();
    let dir = mask_set_dir(layout, &manifest.dataset, &manifest.source);
    let manifest_path = dir.join(MANIFEST_FILE);
    // A set that no longer parses is replaced all the same (its files are left behind).
    let previous: Option<MaskSetManifest> =
        storage.read_opt(&manifest_path)?.and_then(|text| serde_json::from_slice(&text).ok());
    // Names no other import takes, even of the same content: the files a replaced set
    // named are removed below, and must not be files a racing import of the same set is
    // about to name. (One name still always holds the same bytes, as the cache needs.)
    let import = format!("{}:{}:{:?}", std::process::id(), manifest.created_at, std::time::SystemTime::now());
    let mut created = Vec::new();
    let result = (|| {
        // Creates one data file; returns its name and the SHA-256 of its bytes.
        let mut create = |stem: &str, batch: &RecordBatch| -> Result<(String, String)> {
            let bytes = encode_parquet(batch, Vec::new())?;
            let sha = hex::encode(Sha256::digest(&bytes));
            let name = keyed_name(stem, &hex::encode(Sha256::digest(format!("{sha}:{import}"))), "parquet");
            let path = dir.join(&name);
            if !storage.create(&path, bytes)? {
                return Err(DatasetError::io("writing", &path)(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "another import took this name; try again",
                )));
            }
            created.push(path);
            Ok((name, sha))
        };
        (manifest.labels_file, manifest.labels_sha256) = create("labels", labels)?;
        (manifest.classes_file, manifest.classes_sha256) = create("classes", classes)?;
        crate::ingest::failpoint("masks-before-publish");
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
        storage.write(&manifest_path, json.into())
    })();
    if let Err(e) = result {
        for path in created {
            let _ = storage.remove(&path);
        }
        return Err(e);
    }
    if let Some(old) = previous {
        let kept = [&manifest.labels_file, &manifest.classes_file];
        for name in [&old.labels_file, &old.classes_file].into_iter().filter(|n| !kept.contains(n)) {
            // Best effort: a file left here is unreferenced, never read.
            let _ = storage.remove(&dir.join(name));
        }
    }
    Ok(manifest)
}

/// Removes a mask set; false when there was none. The manifest goes first, so readers
/// see the whole set or none.
pub fn remove_mask_set(layout: &WorkspaceLayout, dataset: &str, source: &str) -> Result<bool> {
    let storage = layout.storage();
    let dir = mask_set_dir(layout, dataset, source);
    let manifest = dir.join(MANIFEST_FILE);
    if !storage.exists(&manifest)? {
        return Ok(false);
    }
    storage.remove(&manifest)?;
    storage.remove_all(&dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png(color: png::ColorType, depth: png::BitDepth, w: u32, h: u32, data: &[u8], palette: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if palette {
            encoder.set_palette((0..=255u8).flat_map(|i| [i, i, i]).collect::<Vec<u8>>());
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn label_maps_from_grayscale_16_bit_and_palette_pngs() {
        use png::{BitDepth, ColorType};
        let gray = png(ColorType::Grayscale, BitDepth::Eight, 3, 2, &[0, 1, 2, 255, 4, 5], false);
        assert_eq!(decode_png_label_map(&gray).unwrap().labels, [0, 1, 2, 255, 4, 5]);
        // Runs are maximal across rows and across the scanner's 32-byte blocks.
        let rows = png(ColorType::Grayscale, BitDepth::Eight, 3, 2, &[7, 7, 1, 1, 1, 7], false);
        assert_eq!(decode_png_label_runs(&rows).unwrap(), (3, 2, vec![(7, 2), (1, 3), (7, 1)]));
        let mut long = vec![4u8; 70];
        long[33] = 5;
        let long_png = png(ColorType::Grayscale, BitDepth::Eight, 35, 2, &long, false);
        assert_eq!(decode_png_label_runs(&long_png).unwrap().2, [(4, 33), (5, 1), (4, 36)]);
        let wide = png(ColorType::Grayscale, BitDepth::Sixteen, 2, 1, &[1, 2, 0, 7], false);
        assert_eq!(decode_png_label_map(&wide).unwrap().labels, [258, 7]);
        // 2-bit palette: 3 pixels per row pack into one byte, rows padded.
        let packed = png(ColorType::Indexed, BitDepth::Two, 3, 2, &[0b00_01_10_00, 0b11_00_01_00], true);
        let map = decode_png_label_map(&packed).unwrap();
        assert_eq!((map.width, map.height, map.labels), (3, 2, vec![0, 1, 2, 3, 0, 1]));
        assert_eq!(decode_png_label_runs(&wide).unwrap(), (2, 1, vec![(258, 1), (7, 1)]));
        assert_eq!(decode_png_label_runs(&packed).unwrap().2.len(), 6);
        let rgb = png(ColorType::Rgb, BitDepth::Eight, 1, 1, &[1, 2, 3], false);
        assert!(decode_png_label_map(&rgb).unwrap_err().contains("holds colours"));
        let truncated = &gray[..gray.len() - 20];
        assert!(decode_png_label_map(truncated).unwrap_err().contains("truncated or corrupt"), "{truncated:?}");
        assert!(decode_png_label_map(b"GIF89a").unwrap_err().starts_with("not a readable PNG"));
    }

    #[test]
    fn masks_match_images_by_path_with_any_extension() {
        let ids = ["a/1.jpg", "a/2.png", "3", "b/4.jpg", "b/4.png"];
        let rel: Vec<String> = ["a/1.png", "a/2.png", "3.png"].map(String::from).to_vec();
        assert_eq!(
            match_masks(&rel, ids).unwrap(),
            [(0, "a/1.jpg".to_string()), (1, "a/2.png".to_string()), (2, "3".to_string())]
        );
        let rel: Vec<String> = ["b/4.png", "b/4.tif.png", "c/5.png"].map(String::from).to_vec();
        // b/4.png is exactly an image id; b/4.tif.png and c/5.png match nothing.
        let problems = match_masks(&rel[1..], ids).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let rel: Vec<String> = vec!["b/4.tif".into()];
        assert!(match_masks(&rel, ids).unwrap_err()[0].contains("several images (b/4.jpg, b/4.png)"));
    }

    #[test]
    fn class_lists_in_every_spelling() {
        let dir = std::env::temp_dir().join(format!("slicetest-classes-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            read_classes(&p)
        };
        let names = |c: Vec<MaskClass>| c.into_iter().map(|c| (c.id, c.column)).collect::<Vec<_>>();
        assert_eq!(
            names(write("a.txt", "road\n\nTraffic light\n").unwrap()),
            [(0, "road".into()), (2, "traffic_light".into())]
        );
        assert_eq!(
            names(write("b.json", r#"["road", null, "sky"]"#).unwrap()),
            [(0, "road".into()), (2, "sky".into())]
        );
        assert_eq!(
            names(write("c.json", r#"{"7": "car", "1": "sky"}"#).unwrap()),
            [(1, "sky".into()), (7, "car".into())]
        );
        assert_eq!(names(write("d.json", r#"[{"id": 3, "name": "person"}]"#).unwrap()), [(3, "person".into())]);
        let err = write("e.txt", "Road\nroad\n").unwrap_err().to_string();
        assert!(err.contains("both become columns named road_pct"), "{err}");
        let err = write("f.json", r#"{"x": "car"}"#).unwrap_err().to_string();
        assert!(err.contains("is not a class id"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn set_of(source: &str, values: &[i32]) -> (MaskSetManifest, RecordBatch, RecordBatch) {
        use datafusion::arrow::array::{BinaryArray, Int32Array, Int64Array, StringArray};
        let n = values.len();
        let ids: Vec<String> = (0..n).map(|i| format!("img{i}")).collect();
        let text = |v: &[String]| Arc::new(StringArray::from(v.to_vec())) as _;
        let labels = RecordBatch::try_new(
            labels_schema(),
            vec![
                text(&ids),
                text(&vec!["sha".to_string(); n]),
                Arc::new(Int32Array::from(vec![1; n])),
                Arc::new(Int32Array::from(vec![1; n])),
                text(&vec!["mask".to_string(); n]),
                Arc::new(BinaryArray::from_iter_values(values.iter().map(|v| rle_encode(&[*v as u16])))),
            ],
        )
        .unwrap();
        let classes = RecordBatch::try_new(
            classes_schema(),
            vec![
                text(&ids),
                text(&vec!["sha".to_string(); n]),
                text(&vec![source.to_string(); n]),
                text(&vec!["road".to_string(); n]),
                Arc::new(Int32Array::from(values.to_vec())),
                Arc::new(Int64Array::from(vec![1; n])),
                Arc::new(Int32Array::from(vec![1; n])),
            ],
        )
        .unwrap();
        let manifest = MaskSetManifest {
            source: source.into(),
            dataset: "ds".into(),
            dataset_version: 1,
            classes: classes_from_pairs(vec![(0, "road".into())]).unwrap(),
            ignore_index: DEFAULT_IGNORE_INDEX,
            background: None,
            images: n as u64,
            labelled_pixels: n as u64,
            source_dir: "masks/".into(),
            masks_hash: String::new(),
            labels_file: String::new(),
            labels_sha256: String::new(),
            classes_file: String::new(),
            classes_sha256: String::new(),
            created_at: String::new(),
            slicetest_version: String::new(),
        };
        (manifest, labels, classes)
    }

    #[test]
    fn mask_sets_are_published_replaced_and_removed_on_a_disk_and_in_a_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        let stores =
            [crate::Storage::local(dir.path()), crate::Storage::with_object_store(memory, "memory://ws/masks")];
        for storage in stores {
            let layout = WorkspaceLayout::on(storage.clone());
            assert!(mask_sources(&layout, "ds").unwrap().is_empty());
            let (manifest, labels, classes) = set_of("truth", &[0, 0, 0]);
            let first = write_mask_set(&layout, manifest, &labels, &classes).unwrap();
            assert!(first.labels_file.starts_with("labels-") && first.classes_file.starts_with("classes-"));
            assert_eq!(read_mask_set(&layout, "ds", "truth").unwrap(), first);
            assert_eq!(read_labels(&layout, &first).unwrap(), labels);
            let (other, other_labels, other_classes) = set_of("other", &[0]);
            write_mask_set(&layout, other, &other_labels, &other_classes).unwrap();
            assert_eq!(mask_sources(&layout, "ds").unwrap(), ["other", "truth"]);

            // A replacement names new files; the old ones go, the manifest still reads whole.
            let (manifest, labels, classes) = set_of("truth", &[0, 0]);
            let second = write_mask_set(&layout, manifest, &labels, &classes).unwrap();
            assert_ne!(second.labels_file, first.labels_file);
            assert_eq!(read_labels(&layout, &read_mask_set(&layout, "ds", "truth").unwrap()).unwrap(), labels);
            let dir = mask_set_dir(&layout, "ds", "truth");
            let mut files = storage.list(&dir).unwrap();
            files.sort();
            assert_eq!(files, [second.classes_file.as_str(), second.labels_file.as_str(), MANIFEST_FILE]);
            // The same content again: new names (a racing import never reuses a name the
            // other removes), the replaced files gone.
            let (manifest, labels, classes) = set_of("truth", &[0, 0]);
            let third = write_mask_set(&layout, manifest, &labels, &classes).unwrap();
            assert_ne!(third.labels_file, second.labels_file);
            assert_eq!(third.labels_sha256, second.labels_sha256);
            assert_eq!(storage.list(&dir).unwrap().len(), 3);
            let second = third;

            // A changed file is caught by its hash.
            storage.write(&labels_path(&layout, &second), bytes::Bytes::from_static(b"not parquet")).unwrap();
            let err = read_labels(&layout, &second).unwrap_err().to_string();
            assert!(err.contains("altered after import"), "{err}");

            assert!(remove_mask_set(&layout, "ds", "truth").unwrap());
            assert!(!remove_mask_set(&layout, "ds", "truth").unwrap());
            assert_eq!(mask_sources(&layout, "ds").unwrap(), ["other"]);
            assert!(storage.list(&dir).unwrap().is_empty());
            let err = read_mask_set(&layout, "ds", "truth").unwrap_err().to_string();
            assert!(err.contains("has no mask set \"truth\" (mask sets: other)"), "{err}");
        }
    }

    #[test]
    fn a_set_imported_before_keyed_names_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let (manifest, labels, classes) = set_of("truth", &[0]);
        let written = write_mask_set(&layout, manifest, &labels, &classes).unwrap();
        let set_dir = mask_set_dir(&layout, "ds", "truth");
        fs::rename(set_dir.join(&written.labels_file), set_dir.join("labels.parquet")).unwrap();
        let mut old: serde_json::Value = serde_json::to_value(&written).unwrap();
        old.as_object_mut().unwrap().remove("labels_file");
        old.as_object_mut().unwrap().remove("classes_file");
        fs::write(set_dir.join(MANIFEST_FILE), old.to_string()).unwrap();
        let read = read_mask_set(&layout, "ds", "truth").unwrap();
        assert_eq!((read.labels_file.as_str(), read.classes_file.as_str()), ("labels.parquet", "classes.parquet"));
        assert_eq!(read_labels(&layout, &read).unwrap(), labels);
    }

    proptest! {
        #[test]
        fn rle_round_trips(labels in prop::collection::vec(prop_oneof![0u16..4, Just(255u16), any::<u16>()], 0..300)) {
            let encoded = rle_encode(&labels);
            prop_assert_eq!(rle_decode(&encoded, labels.len()).unwrap(), labels.clone());
            // Runs split anywhere encode to the same bytes.
            let split: Vec<(u16, u32)> = labels.iter().map(|&v| (v, 1)).collect();
            prop_assert_eq!(rle_encode_runs(split), encoded.clone());
            if !labels.is_empty() {
                prop_assert!(rle_decode(&encoded[..encoded.len() - 1], labels.len()).is_err());
            }
        }
    }
}
