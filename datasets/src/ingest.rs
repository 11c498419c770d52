//! `slicetest ingest`: importer → parallel probe → merge with the latest version →
//! publish version n+1 (or nothing, when the content did not change).
//!
//! Safety: the workspace lock serialises writers; the new version is built in a
//! temporary directory and renamed into `versions/<n+1>` in one step, so a failed or
//! killed ingest leaves the previous version exactly as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use indicatif::ParallelProgressIterator;
use rayon::prelude::*;
use serde::Serialize;

use crate::atomic::{TMP_PREFIX, publish_dir, remove_stale_tmp, write_atomic};
use crate::error::{DatasetError, Result};
use crate::import::{Candidate, ImportOptions, Rejection, SourceFormat, gather};
use crate::layout::{REPORT_FILE, VERSION_FILE, WorkspaceLayout};
use crate::merge::{MergeStats, merge};
use crate::names::validate_name;
use crate::objects::{Category, ImportedObjects, OBJECTS_FILE, ObjectsInfo, check_boxes, read_objects};
use crate::probe::ImageFacts;
use crate::probe::{Verify, probe_file};
use crate::progress::bar;
use crate::record::build_batch;
use crate::version::{
    DatasetVersion, column_infos, content_hash, list_versions, read_images, read_version, write_parquet,
};
use crate::workspace::Workspace;

/// Everything `slicetest ingest` can be told.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Target dataset (created on first ingest).
    pub dataset: String,
    /// Input format; `Auto` detects it from the path.
    pub format: SourceFormat,
    /// Importer settings (split override, root, path column, progress bars).
    pub import: ImportOptions,
    /// How thoroughly each image is checked.
    pub verify: Verify,
    /// Refuse the whole ingest if any file is rejected.
    pub strict: bool,
}

impl IngestOptions {
    /// Defaults for ingesting into `dataset`.
    pub fn new(dataset: impl Into<String>) -> Self {
        Self {
            dataset: dataset.into(),
            format: SourceFormat::Auto,
            import: ImportOptions::default(),
            verify: Verify::Full,
            strict: false,
        }
    }
}

/// What an ingest did; also written as `ingest-report.json` in the new version.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Dataset ingested into.
    pub dataset: String,
    /// The input path.
    pub source: PathBuf,
    /// The importer used.
    pub format: String,
    /// The dataset's current version after the ingest.
    pub version: u64,
    /// Whether a new version was published (false: the content was already there).
    pub created: bool,
    /// Images in the current version.
    pub total_images: usize,
    /// Files the importer proposed.
    pub candidates: usize,
    /// How the accepted images changed the dataset.
    pub merge: MergeStats,
    /// Files and rows that were skipped, with the reason.
    pub rejected: Vec<Rejection>,
    /// Non-image files passed over.
    pub ignored: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Environment variable naming a failpoint at which the process aborts (crash tests).
pub const FAILPOINT_ENV: &str = "SLICETEST_FAILPOINT";

/// Aborts the process when [`FAILPOINT_ENV`] names `name` (crash tests).
pub fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        tracing::error!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Ingests `path` into a dataset of `workspace`, publishing a new version if anything changed.
pub async fn ingest(workspace: &mut Workspace, path: &Path, options: &IngestOptions) -> Result<IngestReport> {
    let started = Instant::now();
    validate_name(&options.dataset)?;
    let _lock = workspace.lock()?;
    let layout = workspace.layout().clone();
    let versions_dir = layout.versions_dir(&options.dataset);
    remove_stale_tmp(&versions_dir);

    let set = gather(path, options.format, &options.import, &layout, &options.dataset).await?;
    let pb = bar(set.candidates.len() as u64, "checking images", options.import.progress);
    let probed: Vec<_> =
        set.candidates.par_iter().progress_with(pb).map(|c| (c, probe_file(&c.file, options.verify))).collect();
    let mut rejected = set.rejected.clone();
    let mut accepted = Vec::with_capacity(probed.len());
    for (c, result) in probed {
        match result {
            Ok(facts) => accepted.push((c, facts)),
            Err(reason) => rejected.push(Rejection { item: c.image_id.clone(), reason }),
        }
    }
    if accepted.is_empty() {
        return Err(DatasetError::NothingIngested {
            message: format!("nothing ingested from {}: {}", path.display(), summarize(&rejected)),
        });
    }
    if options.strict && !rejected.is_empty() {
        return Err(DatasetError::NothingIngested {
            message: format!(
                "--strict: {} of {} items were rejected, so nothing was ingested: {}",
                rejected.len(),
                set.candidates.len() + set.rejected.len(),
                summarize(&rejected)
            ),
        });
    }

    let new_rows = build_batch(&accepted, set.extra.as_ref())?;
    let latest = list_versions(&layout, &options.dataset)?.last().copied();
    let previous_manifest = latest.map(|v| read_version(&layout, &options.dataset, v)).transpose()?;
    let previous = previous_manifest.as_ref().map(|m| read_images(&layout, m)).transpose()?;
    let (merged, stats) = merge(previous.as_ref(), &new_rows, latest.unwrap_or(0))?;
    let objects = merge_objects(&layout, previous_manifest.as_ref(), set.objects.as_ref(), &accepted, path)?;

    let mut report = IngestReport {
        dataset: options.dataset.clone(),
        source: path.to_path_buf(),
        format: set.format.name().to_string(),
        version: latest.unwrap_or(0),
        created: false,
        total_images: merged.num_rows(),
        candidates: set.candidates.len(),
        merge: stats,
        rejected,
        ignored: set.ignored,
        seconds: 0.0,
    };
    if previous.as_ref() != Some(&merged) || objects.changed {
        publish_version(workspace, &merged, objects.merged.as_ref(), latest, &mut report)?;
    }
    workspace.set_default_if_unset(&options.dataset)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Publishes a prepared `images` table (core columns first, sorted or not) as the next
/// version of `dataset`, replacing the previous content. For metadata computed elsewhere
/// and for benchmarks; file-based inputs go through [`ingest`].
pub fn import_table(
    workspace: &mut Workspace,
    dataset: &str,
    table: &RecordBatch,
    source: &str,
) -> Result<IngestReport> {
    validate_name(dataset)?;
    let _lock = workspace.lock()?;
    let layout = workspace.layout().clone();
    remove_stale_tmp(&layout.versions_dir(dataset));
    let latest = list_versions(&layout, dataset)?.last().copied();
    let sorted = crate::merge::sort_by_id(table)?;
    let mut report = IngestReport {
        dataset: dataset.to_string(),
        source: PathBuf::from(source),
        format: "table".into(),
        version: latest.unwrap_or(0),
        created: false,
        total_images: sorted.num_rows(),
        candidates: sorted.num_rows(),
        merge: MergeStats { added: sorted.num_rows(), ..Default::default() },
        rejected: Vec::new(),
        ignored: 0,
        seconds: 0.0,
    };
    publish_version(workspace, &sorted, None, latest, &mut report)?;
    workspace.set_default_if_unset(dataset)?;
    Ok(report)
}

/// A version's ground-truth objects after an import, and whether they differ from the
/// previous version's.
struct MergedObjects {
    merged: Option<(RecordBatch, Vec<Category>)>,
    changed: bool,
}

/// Checks the import's boxes against the accepted images' sizes and merges them with the
/// previous version's objects (the import replaces the objects of the images it lists).
fn merge_objects(
    layout: &WorkspaceLayout,
    previous: Option<&DatasetVersion>,
    imported: Option<&ImportedObjects>,
    accepted: &[(&Candidate, ImageFacts)],
    source: &Path,
) -> Result<MergedObjects> {
    let previous_objects = match previous {
        Some(manifest) => read_objects(layout, manifest)?
            .map(|batch| (batch, manifest.objects.as_ref().map(|o| o.categories.clone()).unwrap_or_default())),
        None => None,
    };
    let imported = match imported {
        Some(imported) => {
            let sizes: HashMap<&str, (u32, u32)> =
                accepted.iter().map(|(c, f)| (c.image_id.as_str(), (f.width, f.height))).collect();
            let kept = check_boxes(imported, &sizes, source)?;
            // Only images that made it in speak for their objects.
            let images = imported.images.iter().filter(|id| sizes.contains_key(id.as_str())).cloned().collect();
            Some((ImportedObjects { images, ..imported.clone() }, kept))
        }
        None => None,
    };
    let merged = crate::objects::merge(
        previous_objects.as_ref().map(|(batch, categories)| (batch, categories.as_slice())),
        imported.as_ref().map(|(imported, kept)| (imported, kept.clone())),
        source,
    )?;
    let changed = match (&merged, &previous_objects) {
        (None, None) => false,
        (Some(new), Some(old)) => new.0 != old.0 || new.1 != old.1,
        _ => true,
    };
    Ok(MergedObjects { merged, changed })
}

/// Writes `merged` (and its ground-truth objects) as version `parent + 1` under a
/// temporary name, then renames it into place.
fn publish_version(
    workspace: &Workspace,
    merged: &RecordBatch,
    objects: Option<&(RecordBatch, Vec<Category>)>,
    parent: Option<u64>,
    report: &mut IngestReport,
) -> Result<()> {
    let version = parent.unwrap_or(0) + 1;
    let layout = workspace.layout();
    let versions_dir = layout.versions_dir(&report.dataset);
    std::fs::create_dir_all(&versions_dir).map_err(DatasetError::io("creating", &versions_dir))?;
    let staging = versions_dir.join(format!("{TMP_PREFIX}{}-{version}", std::process::id()));
    std::fs::create_dir(&staging).map_err(DatasetError::io("creating", &staging))?;
    let result = (|| {
        let parquet_sha256 = write_parquet(&staging.join(crate::layout::IMAGES_FILE), merged)?;
        failpoint("ingest-after-parquet");
        let objects = match objects {
            Some((batch, categories)) => Some(ObjectsInfo {
                count: batch.num_rows() as u64,
                categories: categories.clone(),
                parquet_sha256: write_parquet(&staging.join(OBJECTS_FILE), batch)?,
            }),
            None => None,
        };
        let manifest = DatasetVersion {
            dataset: report.dataset.clone(),
            version,
            parent,
            created_at: Utc::now(),
            row_count: merged.num_rows() as u64,
            content_hash: content_hash(merged),
            parquet_sha256,
            source: report.source.to_string_lossy().into_owned(),
            source_format: report.format.clone(),
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
            columns: column_infos(merged),
            objects,
        };
        report.version = version;
        report.created = true;
        let report_json = serde_json::to_vec_pretty(&report).expect("report serialises");
        write_atomic(&staging.join(REPORT_FILE), &report_json)?;
        let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        write_atomic(&staging.join(VERSION_FILE), &manifest_json)?;
        failpoint("ingest-before-publish");
        publish_dir(&staging, &layout.version_dir(&report.dataset, version))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A short human summary of rejections: the count and the first few reasons.
pub fn summarize(rejected: &[Rejection]) -> String {
    if rejected.is_empty() {
        return "no usable images".into();
    }
    let shown: Vec<String> = rejected.iter().take(5).map(|r| format!("{}: {}", r.item, r.reason)).collect();
    let more = rejected.len().saturating_sub(shown.len());
    let tail = if more > 0 { format!("; … and {more} more") } else { String::new() };
    format!("{} rejected ({}){tail}", rejected.len(), shown.join("; "))
}
