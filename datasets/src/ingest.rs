//! `slicetest ingest`: importer → parallel probe → merge with the latest version →
//! publish version n+1 (or nothing, when the content did not change).
//!
//! Safety without a lock (a bucket has none): the new version's data files get names keyed
//! by their content, and `versions/<n+1>/version.json`, created only if absent, commits
//! it. A writer that finds the number taken merges again onto the version that took it and
//! tries the next number, so concurrent ingests on several machines each publish a version
//! and none loses the other's images. A failed or killed ingest leaves no manifest, so the
//! previous version stays the latest, exactly as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use indicatif::ParallelProgressIterator;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DatasetError, Result};
use crate::image_files::{is_object_url, read_image_files};
use crate::import::{Candidate, ImportOptions, Rejection, SourceFormat, gather};
use crate::layout::{VERSION_FILE, WorkspaceLayout};
use crate::merge::{MergeStats, merge};
use crate::names::validate_dataset_name;
use crate::objects::{Category, ImportedObjects, ObjectsInfo, check_boxes, read_objects};
use crate::probe::ImageFacts;
use crate::probe::{Verify, probe_bytes, probe_file};
use crate::progress::bar;
use crate::record::build_batch;
use crate::version::{
    DatasetVersion, column_infos, content_hash, encode_parquet, keyed_name, list_versions, read_images, read_version,
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
    /// What earlier ingests in this process found in each file: a file whose stamp did
    /// not change since is not read again. `slicetest watch` keeps one across its looks.
    pub known: Option<Arc<KnownFiles>>,
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
            known: None,
        }
    }
}

/// The facts of the image files one ingest read, each with the file's stamp when it was
/// read: size and modification time of a local file, size and ETag of an object (from the
/// listing, so an unchanged object costs no request). The next ingest given the same
/// `KnownFiles` reads only files whose stamp changed or that are new — a watch of a
/// bucket with 100,000 images then lists it and fetches what arrived, instead of all of
/// it every minute. Files without a stamp (objects named by a manifest) are always read.
#[derive(Debug, Default)]
pub struct KnownFiles {
    /// Each file's stamp and what reading it found: its facts, or why it was rejected (a
    /// file that is not an image stays one until its stamp changes, and is not fetched
    /// again every look).
    by_file: Mutex<HashMap<PathBuf, (String, ProbeResult)>>,
}

impl KnownFiles {
    /// How many files are remembered.
    pub fn len(&self) -> usize {
        self.by_file.lock().expect("not poisoned").len()
    }

    /// Whether no file is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What identifies a candidate's content without reading it, if anything does.
fn stamp(candidate: &Candidate) -> Option<String> {
    if candidate.stamp.is_some() {
        return candidate.stamp.clone();
    }
    if is_object_url(&candidate.file) {
        return None;
    }
    crate::storage::file_stamp(&candidate.file)
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
    /// Of those, the files read (all of them, unless [`IngestOptions::known`] knew some).
    pub files_read: usize,
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
/// With [`FAILPOINT_ENV`], a file path: at the failpoint the process creates
/// `<path>.reached` and waits until `<path>` exists instead of aborting, so a test can
/// make another writer commit at exactly that moment (race tests).
pub const FAILPOINT_HOLD_ENV: &str = "SLICETEST_FAILPOINT_HOLD";

/// Aborts the process when [`FAILPOINT_ENV`] names `name`, or holds it there (see
/// [`FAILPOINT_HOLD_ENV`]). For crash and race tests.
pub fn failpoint(name: &str) {
    if !std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        return;
    }
    let Some(hold) = std::env::var_os(FAILPOINT_HOLD_ENV).map(PathBuf::from) else {
        tracing::error!("failpoint {name}: aborting");
        std::process::abort();
    };
    let mut reached = hold.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while !hold.exists() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ingests `path` into a dataset of `workspace`, publishing a new version if anything changed.
pub async fn ingest(workspace: &mut Workspace, path: &Path, options: &IngestOptions) -> Result<IngestReport> {
    ingest_checked(workspace, path, options, &|_| Ok(())).await
}

/// An image an ingest read and accepted: its id and size, as [`ingest_checked`]'s check
/// sees them.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedImage<'a> {
    /// The image id.
    pub image_id: &'a str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// [`ingest`], with a last check of the accepted images, made once every file is read and
/// before anything is written: an `Err(message)` refuses the whole ingest with that
/// message and leaves the workspace as it was. The engine checks a COCO file's
/// segmentations against the real image sizes this way.
pub async fn ingest_checked(
    workspace: &mut Workspace,
    path: &Path,
    options: &IngestOptions,
    check: &(dyn Fn(&[AcceptedImage]) -> std::result::Result<(), String> + Sync),
) -> Result<IngestReport> {
    let started = Instant::now();
    validate_dataset_name(&options.dataset)?;
    let layout = workspace.layout().clone();

    let set = gather(path, options.format, &options.import, &layout, &options.dataset).await?;
    let (probed, files_read) = probe_known(&set.candidates, options, options.known.as_deref());
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
    let images: Vec<AcceptedImage> = (accepted.iter())
        .map(|(c, facts)| AcceptedImage { image_id: &c.image_id, width: facts.width, height: facts.height })
        .collect();
    check(&images).map_err(|message| DatasetError::BadInput { source_path: path.to_path_buf(), message })?;

    let new_rows = build_batch(&accepted, set.extra.as_ref())?;
    // Merge onto the latest version and commit the next number; a writer that loses the
    // number to another merges again onto what that one published, so neither's images are lost.
    let mut report = None;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let latest = list_versions(&layout, &options.dataset)?.last().copied();
        let previous_manifest = latest.map(|v| read_version(&layout, &options.dataset, v)).transpose()?;
        let previous = previous_manifest.as_ref().map(|m| read_images(&layout, m)).transpose()?;
        let (merged, stats) = merge(previous.as_ref(), &new_rows, latest.unwrap_or(0))?;
        let objects = merge_objects(&layout, previous_manifest.as_ref(), set.objects.as_ref(), &accepted, path)?;
        let mut attempt = IngestReport {
            dataset: options.dataset.clone(),
            source: path.to_path_buf(),
            format: set.format.name().to_string(),
            version: latest.unwrap_or(0),
            created: false,
            total_images: merged.num_rows(),
            candidates: set.candidates.len(),
            files_read,
            merge: stats,
            rejected: rejected.clone(),
            ignored: set.ignored,
            seconds: 0.0,
        };
        let changed = previous.as_ref() != Some(&merged) || objects.changed;
        if !changed || publish_version(&layout, &merged, objects.merged.as_ref(), latest, &mut attempt)? {
            report = Some(attempt);
            break;
        }
    }
    let mut report = report.ok_or_else(|| too_contended(&layout, &options.dataset))?;
    workspace.set_default_if_unset(&options.dataset)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Images of a bucket fetched before they are checked: the bytes of one chunk are in
/// memory at a time.
const OBJECT_CHUNK: usize = 256;

/// [`probe_candidates`], taking the facts of files `known` has seen with the same stamp
/// from it instead of reading them, and remembering what this ingest found; with the
/// number of files read.
fn probe_known<'a>(
    candidates: &'a [Candidate],
    options: &IngestOptions,
    known: Option<&KnownFiles>,
) -> (Vec<(&'a Candidate, ProbeResult)>, usize) {
    let (verify, progress) = (options.verify, options.import.progress);
    let Some(known) = known else { return (probe_candidates(candidates, verify, progress), candidates.len()) };
    // Stamped before reading: a file changed while it is read gets a new stamp, so the next
    // ingest reads it again.
    let stamps: Vec<Option<String>> = candidates.par_iter().map(stamp).collect();
    let remembered = std::mem::take(&mut *known.by_file.lock().expect("not poisoned"));
    let mut results: Vec<Option<ProbeResult>> = candidates
        .iter()
        .zip(&stamps)
        .map(|(c, stamp)| match (stamp, remembered.get(&c.file)) {
            (Some(stamp), Some((seen, found))) if stamp == seen => Some(found.clone()),
            _ => None,
        })
        .collect();
    let unread: Vec<Candidate> =
        candidates.iter().zip(&results).filter(|(_, r)| r.is_none()).map(|(c, _)| c.clone()).collect();
    let mut read = probe_candidates(&unread, verify, progress).into_iter().map(|(_, result)| result);
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        *slot = read.next();
    }
    let mut now = HashMap::with_capacity(candidates.len());
    for ((c, stamp), result) in candidates.iter().zip(stamps).zip(&results) {
        if let (Some(stamp), Some(found)) = (stamp, result) {
            now.insert(c.file.clone(), (stamp, found.clone()));
        }
    }
    *known.by_file.lock().expect("not poisoned") = now;
    let probed = candidates.iter().zip(results.into_iter().map(|r| r.expect("every candidate probed"))).collect();
    (probed, unread.len())
}

/// Reads and checks every candidate: local files in parallel; objects of a bucket fetched
/// a chunk at a time (16 requests in flight, [`crate::image_files::read_image_files`]) and
/// then checked in parallel. A missing or unreadable object gets a reason, like a corrupt
/// file.
fn probe_candidates(candidates: &[Candidate], verify: Verify, progress: bool) -> Vec<(&Candidate, ProbeResult)> {
    let pb = bar(candidates.len() as u64, "checking images", progress);
    if !candidates.iter().any(|c| is_object_url(&c.file)) {
        return candidates.par_iter().progress_with(pb).map(|c| (c, probe_file(&c.file, verify))).collect();
    }
    let mut probed = Vec::with_capacity(candidates.len());
    for chunk in candidates.chunks(OBJECT_CHUNK) {
        let paths: Vec<PathBuf> = chunk.iter().map(|c| c.file.clone()).collect();
        let read = read_image_files(&paths);
        let checked: Vec<ProbeResult> =
            read.into_par_iter().map(|bytes| bytes.and_then(|b| probe_bytes(&b, verify))).collect();
        probed.extend(chunk.iter().zip(checked));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    probed
}

type ProbeResult = std::result::Result<ImageFacts, String>;

/// Publishes a prepared `images` table (core columns first, sorted or not) as the next
/// version of `dataset`, replacing the previous content. For metadata computed elsewhere
/// and for benchmarks; file-based inputs go through [`ingest`].
pub fn import_table(
    workspace: &mut Workspace,
    dataset: &str,
    table: &RecordBatch,
    source: &str,
) -> Result<IngestReport> {
    validate_dataset_name(dataset)?;
    let layout = workspace.layout().clone();
    let sorted = crate::merge::sort_by_id(table)?;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let latest = list_versions(&layout, dataset)?.last().copied();
        let mut report = IngestReport {
            dataset: dataset.to_string(),
            source: PathBuf::from(source),
            format: "table".into(),
            version: latest.unwrap_or(0),
            created: false,
            total_images: sorted.num_rows(),
            candidates: sorted.num_rows(),
            files_read: 0,
            merge: MergeStats { added: sorted.num_rows(), ..Default::default() },
            rejected: Vec::new(),
            ignored: 0,
            seconds: 0.0,
        };
        if publish_version(&layout, &sorted, None, latest, &mut report)? {
            workspace.set_default_if_unset(dataset)?;
            return Ok(report);
        }
    }
    Err(too_contended(&layout, dataset))
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
            Some((ImportedObjects { images, normalized: false, ..imported.clone() }, kept))
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

/// How many numbers a writer tries before giving up: each lost attempt means another
/// writer published a version meanwhile.
const MAX_COMMIT_ATTEMPTS: usize = 64;

fn too_contended(layout: &WorkspaceLayout, dataset: &str) -> DatasetError {
    DatasetError::io("publishing", layout.versions_dir(dataset))(std::io::Error::other(format!(
        "{MAX_COMMIT_ATTEMPTS} other versions were published while this ingest tried to commit; run it again"
    )))
}

/// Writes `merged` (and its ground-truth objects) as version `parent + 1`: the data files
/// under names keyed by their content, then `version.json` only if no other writer
/// created it first. True when this call published the version; false when another writer
/// took the number (this call's files are removed again and nothing changed).
fn publish_version(
    layout: &WorkspaceLayout,
    merged: &RecordBatch,
    objects: Option<&(RecordBatch, Vec<Category>)>,
    parent: Option<u64>,
    report: &mut IngestReport,
) -> Result<bool> {
    let version = parent.unwrap_or(0) + 1;
    let storage = layout.storage();
    let dir = layout.version_dir(&report.dataset, version);
    let mut written: Vec<String> = Vec::new();
    let mut put = |stem: &str, ext: &str, bytes: bytes::Bytes| -> Result<(String, String)> {
        let sha = hex::encode(Sha256::digest(&bytes));
        let name = keyed_name(stem, &sha, ext);
        storage.write(&dir.join(&name), bytes)?;
        written.push(name.clone());
        Ok((name, sha))
    };
    let result = (|| {
        let (images_file, parquet_sha256) = put("images", "parquet", encode_parquet(merged, Vec::new())?)?;
        failpoint("ingest-after-parquet");
        let objects = match objects {
            Some((batch, categories)) => {
                let (file, parquet_sha256) = put("objects", "parquet", encode_parquet(batch, Vec::new())?)?;
                Some(ObjectsInfo {
                    count: batch.num_rows() as u64,
                    categories: categories.clone(),
                    parquet_sha256,
                    file,
                })
            }
            None => None,
        };
        report.version = version;
        report.created = true;
        let (report_file, _) =
            put("ingest-report", "json", serde_json::to_vec_pretty(&report).expect("report serialises").into())?;
        let manifest = DatasetVersion {
            dataset: report.dataset.clone(),
            version,
            parent,
            created_at: Utc::now(),
            row_count: merged.num_rows() as u64,
            content_hash: content_hash(merged),
            parquet_sha256,
            images_file,
            report_file: Some(report_file),
            source: report.source.to_string_lossy().into_owned(),
            source_format: report.format.clone(),
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
            columns: column_infos(merged),
            objects,
        };
        let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        failpoint("ingest-before-publish");
        storage.create(&dir.join(VERSION_FILE), manifest_json.into())
    })();
    let committed = matches!(result, Ok(true));
    if !committed {
        report.version = parent.unwrap_or(0);
        report.created = false;
        // Another writer's manifest may name a file this one wrote too (the same content
        // under the same key): keep those.
        let winner = match result {
            Ok(false) => Some(read_version(layout, &report.dataset, version)?),
            _ => None,
        };
        let used = |name: &String| {
            winner.as_ref().is_some_and(|w| {
                &w.images_file == name
                    || w.report_file.as_ref() == Some(name)
                    || w.objects.as_ref().is_some_and(|o| &o.file == name)
            })
        };
        for name in written.iter().filter(|n| !used(n)) {
            let _ = storage.remove(&dir.join(name));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    /// A 4×4 BMP: uncompressed, so every colour gives a file of the same size.
    fn write_bmp(path: &Path, colour: u8) {
        image::RgbImage::from_pixel(4, 4, image::Rgb([colour, 0, 0])).save(path).unwrap();
    }

    fn set_modified(path: &Path, time: SystemTime) {
        File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
    }

    #[test]
    fn known_files_are_read_again_only_when_their_stamp_changes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let (a, b) = (src.join("a.bmp"), src.join("b.bmp"));
        write_bmp(&a, 1);
        write_bmp(&b, 2);
        let run = |ws: &mut Workspace, known: Option<Arc<KnownFiles>>| {
            let options = IngestOptions { format: SourceFormat::Folder, known, ..IngestOptions::new("ds") };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(ingest(ws, &src, &options)).unwrap()
        };
        let mut ws = Workspace::init(dir.path().join("ws")).unwrap();
        let known = Arc::new(KnownFiles::default());
        assert!(run(&mut ws, Some(known.clone())).created);
        assert_eq!(known.len(), 2);

        // Other pixels, same size, the old modification time: the stamp says unchanged, so
        // the file is not read and the change is not seen...
        let stamped = std::fs::metadata(&a).unwrap().modified().unwrap();
        write_bmp(&a, 3);
        set_modified(&a, stamped);
        let quiet = run(&mut ws, Some(known.clone()));
        assert_eq!((quiet.created, quiet.files_read, quiet.candidates), (false, 0, 2));
        // ...while an ingest without the memory reads it and finds it.
        let plain = run(&mut ws, None);
        assert_eq!((plain.created, plain.merge.changed), (true, 1));

        // A touched file and a new one are read.
        write_bmp(&a, 4);
        set_modified(&a, stamped + Duration::from_secs(5));
        write_bmp(&src.join("c.bmp"), 5);
        let look = run(&mut ws, Some(known.clone()));
        assert_eq!((look.created, look.merge.changed, look.merge.added, look.files_read), (true, 1, 1, 2));
        assert_eq!(known.len(), 3);
        // Removed files are forgotten.
        std::fs::remove_file(&b).unwrap();
        run(&mut ws, Some(known.clone()));
        assert_eq!(known.len(), 2);

        // A file that is not an image is rejected, and not read again while its stamp
        // stays: the same rejection, from memory.
        let bad = src.join("d.bmp");
        std::fs::write(&bad, b"half a copy").unwrap();
        let first = run(&mut ws, Some(known.clone()));
        assert_eq!((first.files_read, first.rejected.len()), (1, 1));
        let again = run(&mut ws, Some(known.clone()));
        assert_eq!((again.files_read, again.rejected.len()), (0, 1));
        assert_eq!(again.rejected[0].reason, first.rejected[0].reason);
        // Once it is an image, it is read and ingested.
        write_bmp(&bad, 6);
        set_modified(&bad, stamped + Duration::from_secs(10));
        let fixed = run(&mut ws, Some(known.clone()));
        assert_eq!((fixed.files_read, fixed.rejected.len(), fixed.merge.added), (1, 0, 1));
    }
}
