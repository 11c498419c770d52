//! Predictions sent as one ZIP archive: what is a folder on disk (YOLO label files, a
//! segmentation run's PNG masks) has to travel as one file over HTTP, and
//! `run upload predictions.zip` reads the same archive from the CLI. The archive is
//! unpacked into a temporary folder, which is then read as the folder it was made from.
//!
//! Unpacking is bounded, because the archive comes from a client: an entry's path must stay
//! inside the folder (no `..`, no absolute paths; `ZipFile::enclosed_name`), links are
//! refused, and the unpacked bytes are capped whatever the entries' headers claim.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};

/// At most this many bytes are unpacked from one archive (a ZIP bomb stops here).
pub const MAX_UNPACKED_BYTES: u64 = 8 << 30;
/// At most this many entries are unpacked from one archive.
pub const MAX_ENTRIES: usize = 2_000_000;

/// Whether `path` names a ZIP archive (by its extension, as every other upload format is
/// told by its extension).
pub fn is_zip(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// An archive unpacked into a temporary folder, removed when this is dropped.
#[derive(Debug)]
pub struct Unpacked {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Unpacked {
    /// What the archive holds: its only top-level folder when it has one and nothing else
    /// (`zip -r labels.zip labels/`), its only file when that is a run file (a table or
    /// COCO results), else the folder it was unpacked into.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `message` with the temporary folder's paths written as paths inside the archive
    /// (`predictions.zip/bus.txt`), so an error names what the user sent.
    pub fn describe(&self, message: &str, archive: &Path) -> String {
        let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let unpacked = self.dir.path().join("");
        message
            .replace(&unpacked.to_string_lossy().to_string(), &format!("{name}/"))
            .replace(&self.dir.path().to_string_lossy().to_string(), &name)
    }
}

/// Unpacks the ZIP archive at `archive` into a new temporary folder (see the module docs
/// for the bounds). macOS' `__MACOSX/` resource forks and hidden files are skipped.
pub fn unpack_zip(archive: &Path) -> Result<Unpacked> {
    unpack_zip_within(archive, MAX_UNPACKED_BYTES, Some(Path::new(IN_MEMORY_DIR)))
}

/// Where a small archive is unpacked first: memory (tmpfs), where creating thousands of
/// small files is fast; on a journaled disk it is not (5,000 YOLO label files: 0.2 s here
/// against 0.3–3.9 s in the system's temporary folder on the development VM).
const IN_MEMORY_DIR: &str = "/dev/shm";
/// Archives whose entries claim at most this many bytes in all are unpacked in memory.
const IN_MEMORY_BYTES: u64 = 256 << 20;

/// [`unpack_zip`] with its bounds and its in-memory folder (None: never in memory) given.
fn unpack_zip_within(archive: &Path, max_bytes: u64, memory: Option<&Path>) -> Result<Unpacked> {
    let bad = |message: String| DatasetError::BadInput { source_path: archive.to_path_buf(), message };
    let file = File::open(archive).map_err(DatasetError::io("opening", archive))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable ZIP archive: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(bad(format!("{} entries; at most {MAX_ENTRIES} are unpacked", zip.len())));
    }
    let declared =
        (0..zip.len()).map(|i| zip.by_index_raw(i).map_or(u64::MAX, |e| e.size())).fold(0u64, u64::saturating_add);
    // A full or small /dev/shm (64 MiB in a default Docker container) or any other
    // failure there falls back to the temporary folder, which says what is wrong if it is
    // the archive; only the bytes the entries claim are let into memory.
    if declared <= IN_MEMORY_BYTES
        && let Some(memory) = memory.filter(|m| m.is_dir())
        && let Ok(unpacked) = unpack_into(&mut zip, memory, declared.min(max_bytes), &bad)
    {
        return Ok(unpacked);
    }
    unpack_into(&mut zip, &std::env::temp_dir(), max_bytes, &bad)
}

/// Unpacks `zip` into a new temporary folder in `parent`, at most `max_bytes` of it.
fn unpack_into(
    zip: &mut zip::ZipArchive<File>,
    parent: &Path,
    max_bytes: u64,
    bad: &dyn Fn(String) -> DatasetError,
) -> Result<Unpacked> {
    let dir = tempfile::Builder::new()
        .prefix("slicetest-unzip-")
        .tempdir_in(parent)
        .map_err(DatasetError::io("creating a folder to unpack into", parent))?;
    let mut budget = max_bytes;
    let mut files = 0usize;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| bad(format!("entry {index}: {e}")))?;
        let shown = entry.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("entry {index}"));
        let Some(relative) = entry.enclosed_name() else {
            return Err(bad(format!(
                "entry {shown:?} points outside the archive's folder; its files are not unpacked"
            )));
        };
        let skipped = relative.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c == "__MACOSX" || c.starts_with('.')
        });
        if skipped || entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            return Err(bad(format!("entry {shown:?} is a link; only files and folders are read")));
        }
        let target = dir.path().join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(DatasetError::io("creating", parent))?;
        }
        let mut out = File::create(&target).map_err(DatasetError::io("creating", &target))?;
        // `take` bounds what is read whatever the entry's header claims; one byte over the
        // budget tells a full budget from an exhausted one.
        let mut limited = (&mut entry).take(budget + 1);
        let mut buffer = [0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = limited.read(&mut buffer).map_err(|e| bad(format!("entry {shown:?}: {e}")))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > budget {
                return Err(bad(format!(
                    "unpacks to more than {max_bytes} bytes (at entry {shown:?}); send the files in smaller archives"
                )));
            }
            out.write_all(&buffer[..n]).map_err(DatasetError::io("writing", &target))?;
        }
        budget -= written;
        files += 1;
    }
    if files == 0 {
        return Err(bad("holds no files (hidden files and __MACOSX/ entries are not read)".into()));
    }
    let root = only_child(dir.path()).map_err(DatasetError::io("listing", dir.path()))?;
    Ok(Unpacked { dir, root })
}

/// Extensions of files that hold a whole run (a table, COCO results); a YOLO label file or
/// a PNG mask is one image's and stays in its folder.
const RUN_FILE_EXTENSIONS: [&str; 8] = ["json", "jsonl", "ndjson", "csv", "parquet", "arrow", "arrows", "ipc"];

/// The folder `dir` stands for: followed down while a folder holds only one folder; then
/// that folder's only file when it holds one run file (a zipped `predictions.json`).
fn only_child(dir: &Path) -> std::io::Result<PathBuf> {
    let mut here = dir.to_path_buf();
    loop {
        let entries: Vec<PathBuf> =
            std::fs::read_dir(&here)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
        match entries.as_slice() {
            [only] if only.is_dir() => here = only.clone(),
            [only] if is_run_file(only) => return Ok(only.clone()),
            _ => return Ok(here),
        }
    }
}

fn is_run_file(path: &Path) -> bool {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    RUN_FILE_EXTENSIONS.contains(&extension.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn archive(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("predictions.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, bytes) in entries {
            let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    #[test]
    fn a_zipped_folder_unpacks_to_that_folder() {
        let dir = tempfile::tempdir().unwrap();
        let zip = archive(
            dir.path(),
            &[
                ("labels/bus.txt", b"0 0.5 0.5 0.2 0.2 0.9\n"),
                ("labels/zidane.txt", b""),
                ("__MACOSX/labels/._bus.txt", b"x"),
            ],
        );
        let unpacked = unpack_zip(&zip).unwrap();
        assert_eq!(unpacked.root().file_name().unwrap(), "labels");
        assert_eq!(std::fs::read_to_string(unpacked.root().join("bus.txt")).unwrap(), "0 0.5 0.5 0.2 0.2 0.9\n");
        assert!(unpacked.root().join("zidane.txt").is_file());
        let message = format!("{} line 3: bad", unpacked.root().join("bus.txt").display());
        assert_eq!(unpacked.describe(&message, &zip), "predictions.zip/labels/bus.txt line 3: bad");
        let temporary = unpacked.dir.path().to_path_buf();
        drop(unpacked);
        assert!(!temporary.exists(), "the unpacked files are removed with it");
    }

    #[test]
    fn files_at_the_top_unpack_to_the_folder_and_one_file_to_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let zip = archive(dir.path(), &[("a.png", b"1"), ("b.png", b"2")]);
        let unpacked = unpack_zip(&zip).unwrap();
        assert!(unpacked.root().join("a.png").is_file() && unpacked.root().join("b.png").is_file());
        let zip = archive(dir.path(), &[("results/predictions.json", b"[]")]);
        assert_eq!(unpack_zip(&zip).unwrap().root().file_name().unwrap(), "predictions.json");
        // One image's labels or mask stay a folder of one.
        let zip = archive(dir.path(), &[("labels/bus.txt", b"0 0.5 0.5 0.2 0.2 0.9\n")]);
        assert_eq!(unpack_zip(&zip).unwrap().root().file_name().unwrap(), "labels");
        let zip = archive(dir.path(), &[("a.png", b"1")]);
        assert!(unpack_zip(&zip).unwrap().root().is_dir());
    }

    #[test]
    fn entries_outside_the_folder_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip = archive(dir.path(), &[("../../etc/evil.txt", b"x")]);
        let err = unpack_zip(&zip).unwrap_err().to_string();
        assert!(err.contains("\"../../etc/evil.txt\" points outside"), "{err}");
        let path = dir.path().join("link.zip");
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        writer.add_symlink("labels/bus.txt", "/etc/passwd", SimpleFileOptions::default()).unwrap();
        writer.finish().unwrap();
        let err = unpack_zip(&path).unwrap_err().to_string();
        assert!(err.contains("is a link"), "{err}");
    }

    #[test]
    fn unpacking_stops_at_the_byte_bound_whatever_the_entries_claim() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 10_000];
        let zip = archive(dir.path(), &[("a.png", &zeros), ("b.png", &zeros)]);
        let memory = tempfile::tempdir().unwrap();
        for memory in [None, Some(memory.path())] {
            let unpacked = unpack_zip_within(&zip, 20_000, memory).unwrap();
            // A small archive is unpacked in memory (tmpfs) when there is such a folder.
            assert_eq!(memory.is_some_and(|m| unpacked.root().starts_with(m)), memory.is_some());
            let err = unpack_zip_within(&zip, 19_999, memory).unwrap_err().to_string();
            assert!(err.contains("unpacks to more than 19999 bytes (at entry \"b.png\")"), "{err}");
        }
        assert_eq!(std::fs::read_dir(memory.path()).unwrap().count(), 0, "nothing is left behind");
    }

    #[test]
    fn an_archive_of_nothing_readable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip = archive(dir.path(), &[("__MACOSX/._a.png", b"x"), (".DS_Store", b"x")]);
        let err = unpack_zip(&zip).unwrap_err().to_string();
        assert!(
            err.ends_with("predictions.zip: holds no files (hidden files and __MACOSX/ entries are not read)"),
            "{err}"
        );
    }

    #[test]
    fn what_is_not_a_zip_archive_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.zip");
        std::fs::write(&path, b"0 0.5 0.5 0.2 0.2 0.9\n").unwrap();
        let err = unpack_zip(&path).unwrap_err().to_string();
        assert!(err.contains("labels.zip: not a readable ZIP archive"), "{err}");
    }
}
