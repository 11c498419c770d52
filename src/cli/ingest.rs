//! `slicetest ingest`.

use std::path::{Path, PathBuf};

use clap::Args;
use slicetest_engine::{Engine, ImportOptions, IngestOptions, IngestReport, SourceFormat, Verify};

use super::CliError;

/// Arguments of `slicetest ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// An image folder, a CSV/Parquet/JSONL manifest, a COCO JSON file or a directory of IDX files.
    pub path: PathBuf,
    #[command(flatten)]
    pub into: IntoDataset,
    /// Folder that manifest and COCO paths must stay inside (default: the file's folder; a folder ingest is its own root).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Manifest column with the file paths (default: path, uri, file, file_name or filename).
    #[arg(long)]
    pub path_column: Option<String>,
    /// Ground-truth boxes for the imported images: a CSV/Parquet/JSONL file with image_id
    /// (or path), category, x, y, w, h [, category_id, object_id, area, iscrowd].
    #[arg(long, value_name = "FILE")]
    pub boxes: Option<PathBuf>,
    /// Every category of the box manifest, also those with no box here (a detector's
    /// classes the data lacks): one name per line (.txt), or a table with category [, category_id].
    #[arg(long, value_name = "FILE", requires = "boxes")]
    pub categories: Option<PathBuf>,
    /// Fail, writing nothing, if any file is rejected.
    #[arg(long)]
    pub strict: bool,
    /// Also write the ingest report (JSON) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Which dataset a source goes into and how it is read: the flags `ingest` and `watch`
/// share.
#[derive(Debug, Args)]
pub struct IntoDataset {
    /// Dataset to ingest into (default: derived from the path's name).
    #[arg(long, short)]
    pub dataset: Option<String>,
    /// Input format (default: detected from the path).
    #[arg(long, value_enum, default_value_t = SourceFormat::Auto)]
    pub format: SourceFormat,
    /// Split for images whose input gives none (train, val, test, holdout, …).
    #[arg(long)]
    pub split: Option<String>,
    /// `full` decodes every image (catches truncated files); `header` only reads headers.
    #[arg(long, value_enum, default_value_t = Verify::Full)]
    pub verify: Verify,
}

impl IntoDataset {
    /// Ingest options for `path` with these flags, `import` carrying the rest.
    pub fn options(&self, path: &Path, import: ImportOptions, strict: bool) -> IngestOptions {
        IngestOptions {
            dataset: self.dataset.clone().unwrap_or_else(|| default_dataset_name(path)),
            format: self.format,
            import: ImportOptions { split: self.split.clone(), ..import },
            verify: self.verify,
            strict,
            known: None,
        }
    }
}

impl IngestArgs {
    fn options(&self) -> IngestOptions {
        let import = ImportOptions {
            root: self.root.clone(),
            path_column: self.path_column.clone(),
            progress: !self.quiet,
            boxes: self.boxes.clone(),
            categories: self.categories.clone(),
            ..ImportOptions::default()
        };
        self.into.options(&self.path, import, self.strict)
    }
}

/// `data/Fashion-MNIST/` → `fashion_mnist`; `coco/instances_val.json` → `instances_val`;
/// `coco8/data.yaml` → `coco8` (YOLO datasets all call their yaml data.yaml).
pub fn default_dataset_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = match stem(&path) {
        s if s.eq_ignore_ascii_case("data") && path.extension().is_some_and(|e| e == "yaml" || e == "yml") => {
            path.parent().map(stem).unwrap_or(s)
        }
        s => s,
    };
    let name = slicetest_engine::names::identifier(&stem);
    if name.is_empty() { "images".into() } else { name }
}

pub async fn run(workspace: &Path, args: IngestArgs) -> Result<(), CliError> {
    let mut engine = Engine::open_or_init(workspace)?;
    let (report, masks) = engine.ingest_with_masks(&args.path, &args.options()).await?;
    print_report(&report);
    if let Some(m) = masks {
        println!(
            "  segmentation masks → mask set {} ({} images, {} labelled pixels) in {:.1}s as columns {}",
            m.source,
            m.masks,
            m.labelled_pixels,
            m.seconds,
            super::tag::column_list(&m.columns)
        );
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// Prints the summary line, then the rejections (at most 20) to stderr.
pub fn print_report(r: &IngestReport) {
    let m = &r.merge;
    let rate = r.candidates as f64 / r.seconds.max(1e-9);
    if r.created {
        println!(
            "{}: version {} published with {} images ({} added, {} changed, {} kept) from {} [{}] in {:.1}s ({rate:.0} images/s)",
            r.dataset,
            r.version,
            r.total_images,
            m.added,
            m.changed,
            m.kept,
            r.source.display(),
            r.format,
            r.seconds
        );
    } else {
        println!(
            "{}: unchanged, still version {} with {} images ({} already ingested) in {:.1}s",
            r.dataset, r.version, r.total_images, m.unchanged, r.seconds
        );
    }
    if r.ignored > 0 {
        println!("  {} non-image files ignored", r.ignored);
    }
    if !r.rejected.is_empty() {
        eprintln!("  {} items rejected:", r.rejected.len());
        for rej in r.rejected.iter().take(20) {
            eprintln!("    {}: {}", rej.item, rej.reason);
        }
        if r.rejected.len() > 20 {
            eprintln!("    … see the full list in the version's ingest-report-<key>.json or with --report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_default_to_a_sql_friendly_stem() {
        assert_eq!(default_dataset_name(Path::new("/x/Fashion-MNIST")), "fashion_mnist");
        assert_eq!(default_dataset_name(Path::new("/x/instances_val.json")), "instances_val");
        assert_eq!(default_dataset_name(Path::new("/x/---")), "images");
        assert_eq!(default_dataset_name(Path::new("/x/coco8-seg/data.yaml")), "coco8_seg");
        assert_eq!(default_dataset_name(Path::new("/x/cracks.yaml")), "cracks");
    }
}
