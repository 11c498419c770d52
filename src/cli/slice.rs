//! `slicetest slice …`, `slicetest slices` and `slicetest holdout export`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use futures::TryStreamExt;
use slicetest_engine::{DEFAULT_MIN_TEST_SAMPLES, Engine, OutputFormat, SliceStatement, SliceThresholds, write_stream};

use super::{CliError, print_table};

/// `slicetest slice <command>`.
#[derive(Debug, Subcommand)]
pub enum SliceCommand {
    /// Define a slice: a name and a query returning image_id (CREATE SLICE).
    Create {
        /// The slice name: letters, digits, '_' and '-'.
        name: String,
        /// A SELECT returning an image_id column, over the default dataset.
        query: String,
        /// What the population is and why it matters.
        #[arg(long)]
        comment: Option<String>,
        /// Slice test: a run fails this slice below this accuracy.
        #[arg(long)]
        min_accuracy: Option<f64>,
        /// Slice test: fewer scored samples than this is "not enough data" (default 30).
        #[arg(long)]
        min_samples: Option<u64>,
        /// Slice test of detection runs: fail below this COCO AP (IoU 0.50:0.95).
        #[arg(long)]
        min_map: Option<f64>,
        /// Slice test of detection runs: fail below this AP at IoU 0.50.
        #[arg(long)]
        min_ap50: Option<f64>,
        /// Slice test of detection runs with instance masks: fail below this mask AP (IoU 0.50:0.95).
        #[arg(long)]
        min_mask_map: Option<f64>,
        /// Slice test of detection runs with poses: fail below this keypoint AP (OKS 0.50:0.95).
        #[arg(long)]
        min_keypoint_map: Option<f64>,
        /// Slice test of detection runs: fail below this recall at the run's operating point.
        #[arg(long)]
        min_recall: Option<f64>,
        /// Slice test of detection runs: a category's recall threshold, CATEGORY=VALUE (repeatable).
        #[arg(long, value_name = "CATEGORY=VALUE", value_parser = category_threshold)]
        min_class_recall: Vec<(String, f64)>,
        /// Slice test of segmentation runs: fail below this mean IoU.
        #[arg(long)]
        min_miou: Option<f64>,
        /// Slice test of segmentation runs: fail below this pixel accuracy.
        #[arg(long)]
        min_pixel_accuracy: Option<f64>,
        /// Slice test of segmentation runs: a class's IoU threshold, CLASS=VALUE (repeatable).
        #[arg(long, value_name = "CLASS=VALUE", value_parser = category_threshold)]
        min_class_iou: Vec<(String, f64)>,
    },
    /// Remove a slice and its frozen versions (DROP SLICE).
    Drop {
        /// The slice.
        name: String,
    },
    /// List slices (SHOW SLICES).
    List,
    /// Show a slice's frozen versions (DESCRIBE SLICE).
    Show {
        /// The slice.
        name: String,
    },
    /// Freeze the slice's current members as its next version (FREEZE SLICE).
    Freeze {
        /// The slice.
        name: String,
        /// Share of the members reserved for the hold-out test set (0 to 1). Default: the
        /// latest frozen version's (0 at a first freeze), so the same images stay held out.
        #[arg(long)]
        holdout: Option<f64>,
        /// Seed of the hold-out choice. Default: the latest frozen version's (0 at a first
        /// freeze).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Images the live query matches that the latest frozen version lacks, and the reverse.
    Diff {
        /// The slice.
        name: String,
    },
    /// Write a frozen version's members with uri, label, split, hold-out flag and tags.
    Export {
        /// The slice.
        name: String,
        /// The frozen version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// Output format [default: the output file's extension (.parquet, .csv, .jsonl),
        /// else parquet].
        #[arg(long, short, value_enum)]
        format: Option<ExportFormat>,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `slicetest slice export --format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Csv,
    Jsonl,
    /// COCO JSON: images, one image-level annotation per labelled image, categories.
    Coco,
}

/// `slicetest slices`.
#[derive(Debug, Args)]
pub struct SlicesArgs {
    /// Flag slices with fewer evaluation samples (test split + hold-out) than this.
    #[arg(long, default_value_t = DEFAULT_MIN_TEST_SAMPLES)]
    pub min_test: u64,
}

/// `slicetest holdout <command>`.
#[derive(Debug, Subcommand)]
pub enum HoldoutCommand {
    /// Write holdout.<fmt> (held out by any slice) and train.<fmt> (the rest, minus test/val).
    Export {
        /// Directory to write the two manifests into (created if missing).
        #[arg(long, short)]
        output_dir: PathBuf,
        /// The dataset (default: the workspace default).
        #[arg(long, short)]
        dataset: Option<String>,
        /// Manifest format.
        #[arg(long, short, value_enum, default_value_t = ManifestFormat::Parquet)]
        format: ManifestFormat,
    },
}

/// Formats of the hold-out manifests.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ManifestFormat {
    Parquet,
    Csv,
    Jsonl,
}

impl From<ManifestFormat> for OutputFormat {
    fn from(f: ManifestFormat) -> Self {
        match f {
            ManifestFormat::Parquet => OutputFormat::Parquet,
            ManifestFormat::Csv => OutputFormat::Csv,
            ManifestFormat::Jsonl => OutputFormat::Jsonl,
        }
    }
}

pub async fn run(workspace: &Path, command: SliceCommand) -> Result<(), CliError> {
    let engine = Engine::open(workspace)?;
    let statement = match command {
        SliceCommand::Create {
            name,
            query,
            comment,
            min_accuracy,
            min_samples,
            min_map,
            min_ap50,
            min_mask_map,
            min_keypoint_map,
            min_recall,
            min_class_recall,
            min_miou,
            min_pixel_accuracy,
            min_class_iou,
        } => {
            let thresholds = SliceThresholds {
                min_accuracy,
                min_samples,
                min_map,
                min_ap50,
                min_mask_map,
                min_keypoint_map,
                min_recall,
                min_class_recall: min_class_recall.into_iter().collect(),
                min_miou,
                min_pixel_accuracy,
                min_class_iou: min_class_iou.into_iter().collect(),
            };
            SliceStatement::Create { name, comment, thresholds, query }
        }
        SliceCommand::Drop { name } => {
            let released = engine.drop_slice(&name)?;
            println!("slice {name} dropped");
            if let Some(warning) = slicetest_engine::slices::drop_warning(&name, released) {
                eprintln!("WARNING: {warning}");
            }
            return Ok(());
        }
        SliceCommand::List => SliceStatement::Show,
        SliceCommand::Show { name } => SliceStatement::Describe { name },
        SliceCommand::Freeze { name, holdout, seed } => return freeze(&engine, &name, holdout, seed).await,
        SliceCommand::Diff { name } => {
            let stream = engine.slice_diff(&name).await?;
            write_stream(stream, OutputFormat::Table, std::io::stdout()).await?;
            return Ok(());
        }
        SliceCommand::Export { name, version, format, output } => {
            return export(&engine, &name, version, format, output.as_deref()).await;
        }
    };
    write_table(engine.run_slice_statement(statement).await?).await
}

/// Prints one batch as a table.
async fn write_table(batch: RecordBatch) -> Result<(), CliError> {
    let stream = futures::stream::iter([Ok(batch.clone())]);
    let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(batch.schema(), stream);
    write_stream(Box::pin(stream), OutputFormat::Table, std::io::stdout()).await?;
    Ok(())
}

/// `slice freeze`: the FREEZE SLICE table, the hold-out settings kept from the latest
/// version, what changed of the hold-out, and a warning (on stderr) when images held out
/// before are no longer held out (the share or seed changed, or they left the slice).
async fn freeze(engine: &Engine, name: &str, holdout: Option<f64>, seed: Option<u64>) -> Result<(), CliError> {
    let outcome = engine.freeze_slice_keeping(name, holdout, seed).await?;
    // FREEZE SLICE's table less its note, which follows as lines of its own.
    let batch = slicetest_engine::slices::freeze_batch(&outcome);
    let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| batch.schema().field(i).name() != "note").collect();
    write_table(batch.project(&keep)?).await?;
    if let Some(p) = outcome.previous.as_ref().filter(|_| holdout.is_none() || seed.is_none()) {
        let kept: Vec<String> = [
            holdout.is_none().then(|| format!("hold-out {}", p.holdout_share)),
            seed.is_none().then(|| format!("seed {}", p.seed)),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!("{} as in v{} (give --holdout / --seed to change)", kept.join(" and "), p.version);
    }
    for note in outcome.notes() {
        if note.warning {
            eprintln!("WARNING: {}", note.text);
        } else {
            println!("{}", note.text);
        }
    }
    Ok(())
}

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write + Send>, CliError> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("creating {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

async fn export(
    engine: &Engine,
    name: &str,
    version: Option<u64>,
    format: Option<ExportFormat>,
    output: Option<&Path>,
) -> Result<(), CliError> {
    let known = [
        ("parquet", ExportFormat::Parquet),
        ("csv", ExportFormat::Csv),
        ("jsonl", ExportFormat::Jsonl),
        ("ndjson", ExportFormat::Jsonl),
    ];
    let format = match (format, output) {
        (Some(format), _) => format,
        // Two of the formats are JSON: a .json name does not say which.
        (None, Some(path)) if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) => {
            return Err(format!(
                "{}: say --format coco (a COCO document) or --format jsonl (one JSON object per member per line)",
                path.display()
            )
            .into());
        }
        (None, output) => super::format_of_output(output, &known).unwrap_or(ExportFormat::Parquet),
    };
    let stream = engine.slice_export(name, version).await?;
    let format = match format {
        ExportFormat::Parquet => OutputFormat::Parquet,
        ExportFormat::Csv => OutputFormat::Csv,
        ExportFormat::Jsonl => OutputFormat::Jsonl,
        ExportFormat::Coco => {
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            let mut out = open_output(output)?;
            serde_json::to_writer_pretty(&mut out, &coco(&batches)?)?;
            out.flush()?;
            return Ok(());
        }
    };
    write_stream(stream, format, open_output(output)?).await?;
    Ok(())
}

/// A COCO document for a classification slice: images (with slicetest's id, split and
/// hold-out flag as extra fields), categories from the labels, and one image-level
/// annotation (no box) per labelled image.
fn coco(batches: &[RecordBatch]) -> Result<serde_json::Value, CliError> {
    let text = |b: &RecordBatch, name: &str| -> Result<Vec<Option<String>>, CliError> {
        let column = b.column_by_name(name).ok_or_else(|| format!("export has no {name} column"))?;
        let column = cast(column, &DataType::Utf8)?;
        let column = column.as_string::<i32>();
        Ok((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_string())).collect())
    };
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut categories: Vec<String> = Vec::new();
    for b in batches {
        let (ids, uris, labels, splits) = (text(b, "image_id")?, text(b, "uri")?, text(b, "label")?, text(b, "split")?);
        let (widths, heights) = (text(b, "width")?, text(b, "height")?);
        let holdout = b.column_by_name("holdout").ok_or("export has no holdout column")?.as_boolean();
        for r in 0..b.num_rows() {
            let id = images.len() + 1;
            let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
            images.push(serde_json::json!({
                "id": id,
                "file_name": uris[r],
                "width": number(&widths[r]),
                "height": number(&heights[r]),
                "slicetest_image_id": ids[r],
                "split": splits[r],
                "holdout": holdout.value(r),
            }));
            if let Some(label) = &labels[r] {
                let category = match categories.iter().position(|c| c == label) {
                    Some(i) => i + 1,
                    None => {
                        categories.push(label.clone());
                        categories.len()
                    }
                };
                annotations
                    .push(serde_json::json!({"id": annotations.len() + 1, "image_id": id, "category_id": category}));
            }
        }
    }
    let categories: Vec<_> =
        categories.iter().enumerate().map(|(i, c)| serde_json::json!({"id": i + 1, "name": c})).collect();
    Ok(serde_json::json!({"images": images, "annotations": annotations, "categories": categories}))
}

pub fn slices(workspace: &Path, args: SlicesArgs) -> Result<(), CliError> {
    let engine = Engine::open(workspace)?;
    let breakdown = engine.breakdown()?;
    if breakdown.is_empty() {
        println!(
            "no slices yet; define one with `slicetest slice create <name> \"SELECT image_id FROM images WHERE …\"`"
        );
        return Ok(());
    }
    let share = |n: u64, total: u64| {
        if total == 0 { "-".to_string() } else { format!("{n} ({:.0}%)", 100.0 * n as f64 / total as f64) }
    };
    let mut flagged = 0;
    let rows = breakdown
        .iter()
        .map(|b| {
            let few = b.version.is_some() && b.evaluation_samples() < args.min_test;
            flagged += few as usize;
            vec![
                b.slice.clone(),
                b.version.map_or("live".into(), |v| format!("v{v}")),
                b.members.to_string(),
                share(b.train, b.members),
                share(b.val, b.members),
                share(b.test, b.members),
                share(b.holdout, b.members),
                format!("{:.2}%", 100.0 * b.coverage),
                if b.version.is_none() {
                    "not frozen".into()
                } else if few {
                    format!("only {} test+holdout (< {})", b.evaluation_samples(), args.min_test)
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    print_table(&["slice", "version", "members", "train", "val", "test", "holdout", "coverage", "check"], rows);
    if flagged > 0 {
        println!("{flagged} slice(s) have too few test samples for a meaningful metric");
    }
    Ok(())
}

pub async fn holdout(workspace: &Path, command: HoldoutCommand) -> Result<(), CliError> {
    let HoldoutCommand::Export { output_dir, dataset, format } = command;
    let engine = Engine::open(workspace)?;
    let (holdout, train) = engine.holdout_export(dataset.as_deref()).await?;
    std::fs::create_dir_all(&output_dir).map_err(|e| format!("creating {}: {e}", output_dir.display()))?;
    let ext = match format {
        ManifestFormat::Parquet => "parquet",
        ManifestFormat::Csv => "csv",
        ManifestFormat::Jsonl => "jsonl",
    };
    for (name, stream) in [("holdout", holdout), ("train", train)] {
        let path = output_dir.join(format!("{name}.{ext}"));
        let rows = write_stream(stream, format.into(), open_output(Some(&path))?).await?;
        println!("{name}: {rows} images → {}", path.display());
    }
    Ok(())
}

/// `person=0.8` → ("person", 0.8).
fn category_threshold(text: &str) -> Result<(String, f64), String> {
    let (category, value) = text.rsplit_once('=').ok_or("expected CATEGORY=VALUE, e.g. person=0.8")?;
    let value: f64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number"))?;
    Ok((category.trim().to_string(), value))
}
