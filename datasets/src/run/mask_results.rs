//! Segmentation predictions as per-class masks in COCO's RLE, the form COCO-stuff results
//! and most segmentation toolkits write: one binary mask per (image, predicted class).
//!
//! Three inputs are understood:
//! - a COCO results file (`.json`): a list of `{"image_id", "category_id",
//!   "segmentation": {"size": [h, w], "counts": "…"}}` (other fields, such as `score`, are
//!   ignored);
//! - the same objects one per line (`.jsonl` / `.ndjson`);
//! - a table (Parquet, CSV or Arrow) with `image_id`, `category_id`, `counts` (COCO's
//!   compressed text), `height` and `width`.
//!
//! `image_id` is the COCO id (`coco_id` of `images`) when it is a number, else the
//! dataset's own image id. Turning the masks into label maps (and checking them against
//! the ground truth) is the engine's part.

use std::io::BufRead;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use serde::Deserialize;

use crate::coco_mask::Counts;
use crate::error::{DatasetError, Result};

/// An image as a results file names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MaskImage {
    /// A COCO image id (`coco_id`).
    Coco(i64),
    /// The dataset's image id.
    Id(String),
}

impl std::fmt::Display for MaskImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaskImage::Coco(id) => write!(f, "{id}"),
            MaskImage::Id(id) => write!(f, "{id:?}"),
        }
    }
}

/// One predicted class mask.
#[derive(Debug, Clone)]
pub struct PredictedClassMask {
    /// Where it is in the file (`result #n` from 0, or `row n` from 1), for errors.
    pub position: String,
    /// Its place in the file, from 0: problems are listed in this order.
    pub index: usize,
    /// The image.
    pub image: MaskImage,
    /// The predicted class id.
    pub category_id: i64,
    /// `[height, width]`.
    pub size: [u32; 2],
    /// The mask's runs.
    pub counts: Counts,
}

#[derive(Deserialize)]
struct Probe {
    segmentation: Option<serde::de::IgnoredAny>,
    bbox: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct JsonResult {
    image_id: serde_json::Value,
    /// A whole number; `1.0` is one too (pycocotools accepts it).
    category_id: serde_json::Number,
    segmentation: JsonRle,
}

#[derive(Deserialize)]
struct JsonRle {
    size: [u32; 2],
    counts: Counts,
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Whether `path` holds segmentation results rather than detections or class labels: a
/// JSON list or JSON lines whose first entry has a `segmentation` and no `bbox`, or a
/// table with a `counts` column.
pub async fn is_mask_results(path: &Path) -> Result<bool> {
    let probe = |p: &Probe| p.segmentation.is_some() && p.bbox.is_none();
    match extension(path).as_str() {
        "json" => {
            let bytes = std::fs::read(path).map_err(DatasetError::io("reading", path))?;
            // Only the two fields are looked at; a file that is no list is left to the other readers.
            Ok(serde_json::from_slice::<Vec<Probe>>(&bytes).is_ok_and(|list| list.first().is_some_and(probe)))
        }
        "jsonl" | "ndjson" => {
            let file = std::fs::File::open(path).map_err(DatasetError::io("reading", path))?;
            let first = std::io::BufReader::new(file).lines().map_while(|l| l.ok()).find(|l| !l.trim().is_empty());
            Ok(first.is_some_and(|line| serde_json::from_str::<Probe>(&line).is_ok_and(|p| probe(&p))))
        }
        "parquet" | "csv" | "arrow" | "arrows" | "ipc" => {
            let names = crate::table_file::column_names(path).await?;
            Ok(names.iter().any(|n| n == "counts"))
        }
        _ => Ok(false),
    }
}

fn image_ref(value: serde_json::Value) -> Option<MaskImage> {
    match value {
        serde_json::Value::Number(v) => v.as_i64().map(MaskImage::Coco),
        serde_json::Value::String(s) => Some(MaskImage::Id(s)),
        _ => None,
    }
}

/// Reads every predicted class mask of a results file (see the module docs).
pub async fn read_mask_results(path: &Path) -> Result<Vec<PredictedClassMask>> {
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let shape = "image_id, category_id and segmentation {size: [h, w], counts}";
    let from_json = |index: usize, position: String, r: JsonResult| -> Result<PredictedClassMask> {
        let image =
            image_ref(r.image_id).ok_or_else(|| bad(format!("{position}: image_id is not a number or text")))?;
        let category_id = super::whole_number(&r.category_id).ok_or_else(|| {
            bad(format!("{position}: category_id {} is not a whole number (class ids are integers)", r.category_id))
        })?;
        Ok(PredictedClassMask {
            position,
            index,
            image,
            category_id,
            size: r.segmentation.size,
            counts: r.segmentation.counts,
        })
    };
    match extension(path).as_str() {
        "json" => {
            let bytes = std::fs::read(path).map_err(DatasetError::io("reading", path))?;
            let list: Vec<JsonResult> = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("not a list of segmentation results ({shape}): {e}")))?;
            list.into_iter().enumerate().map(|(n, r)| from_json(n, format!("result #{n}"), r)).collect()
        }
        "jsonl" | "ndjson" => {
            let file = std::fs::File::open(path).map_err(DatasetError::io("reading", path))?;
            let mut out = Vec::new();
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(DatasetError::io("reading", path))?;
                if line.trim().is_empty() {
                    continue;
                }
                let r: JsonResult = serde_json::from_str(&line)
                    .map_err(|e| bad(format!("line {}: not a segmentation result ({shape}): {e}", n + 1)))?;
                out.push(from_json(out.len(), format!("line {}", n + 1), r)?);
            }
            Ok(out)
        }
        _ => table_masks(path).await,
    }
}

async fn table_masks(path: &Path) -> Result<Vec<PredictedClassMask>> {
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let table = crate::table_file::read_table(path, "segmentation results").await?;
    let names: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
    let missing: Vec<&str> = ["image_id", "category_id", "counts", "height", "width"]
        .into_iter()
        .filter(|c| !names.iter().any(|n| n == c))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "a table of segmentation results needs image_id, category_id, counts (COCO RLE text), height and width; \
             missing {}; the columns are: {}",
            missing.join(", "),
            names.join(", ")
        )));
    }
    let column = |name: &str, to: &DataType| {
        cast(table.column_by_name(name).expect("checked"), to).map_err(|e| bad(format!("column {name:?}: {e}")))
    };
    let image_ints = table.column_by_name("image_id").expect("checked").data_type().is_integer();
    let images = column("image_id", &DataType::Utf8)?;
    let counts = column("counts", &DataType::Utf8)?;
    // Casting 1.5 to an integer would truncate it: a float column must hold whole numbers.
    for name in ["category_id", "height", "width"] {
        let cells = super::number_cells(&table, name).map_err(&bad)?.expect("checked");
        for i in 0..cells.len() {
            match cells.cell(i) {
                super::Cell::Number(v) if super::whole_f64(v).is_none() => {
                    return Err(bad(format!("row {}: {name} {v} is not a whole number", i + 1)));
                }
                super::Cell::Text(t) => return Err(bad(format!("row {}: {name} {t:?} is not a number", i + 1))),
                _ => {}
            }
        }
    }
    let (category, height, width) = (
        column("category_id", &DataType::Int64)?,
        column("height", &DataType::Int64)?,
        column("width", &DataType::Int64)?,
    );
    let (images, counts) = (images.as_string::<i32>(), counts.as_string::<i32>());
    let (category, height, width) =
        (category.as_primitive::<Int64Type>(), height.as_primitive::<Int64Type>(), width.as_primitive::<Int64Type>());
    let mut out = Vec::with_capacity(table.num_rows());
    for i in 0..table.num_rows() {
        let position = format!("row {}", i + 1);
        let nulls: Vec<&str> = [
            ("image_id", images.is_null(i)),
            ("category_id", category.is_null(i)),
            ("counts", counts.is_null(i)),
            ("height", height.is_null(i)),
            ("width", width.is_null(i)),
        ]
        .into_iter()
        .filter_map(|(n, null)| null.then_some(n))
        .collect();
        if !nulls.is_empty() {
            return Err(bad(format!("{position}: {} is empty", nulls.join(", "))));
        }
        let side = |v: i64, name: &str| {
            u32::try_from(v).map_err(|_| bad(format!("{position}: {name} {v} is not a size in pixels")))
        };
        let id = images.value(i);
        out.push(PredictedClassMask {
            image: match id.parse::<i64>() {
                Ok(n) if image_ints => MaskImage::Coco(n),
                _ => MaskImage::Id(id.to_string()),
            },
            category_id: category.value(i),
            size: [side(height.value(i), "height")?, side(width.value(i), "width")?],
            counts: Counts::Compressed(counts.value(i).to_string()),
            position,
            index: i,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn class_ids_may_be_whole_floats_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("masks.json");
        let result = |category: &str| {
            format!(
                r#"{{"image_id": 1, "category_id": {category}, "segmentation": {{"size": [2, 2], "counts": "04"}}}}"#
            )
        };
        std::fs::write(&path, format!("[{}, {}]", result("1.0"), result("2"))).unwrap();
        let masks = read_mask_results(&path).await.unwrap();
        assert_eq!(masks.iter().map(|m| (m.category_id, m.index)).collect::<Vec<_>>(), [(1, 0), (2, 1)]);
        std::fs::write(&path, format!("[{}, {}]", result("1"), result("1.5"))).unwrap();
        let error = read_mask_results(&path).await.unwrap_err().to_string();
        assert!(
            error.ends_with("result #1: category_id 1.5 is not a whole number (class ids are integers)"),
            "{error}"
        );
    }
}
