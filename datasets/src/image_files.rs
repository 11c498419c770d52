//! Image files wherever they are: a path on this machine, or an object in a bucket
//! (`s3://bucket/key`). Ingest lists and probes them, and every reader of pixels (embed,
//! tag, thumbnails, the HTTP API's image bytes, the HTML report) reads them through here,
//! so a dataset whose images live in a bucket works like one on local disk.
//!
//! A bucket of images is opened without the local cache of content-keyed files
//! ([`Storage::open_uncached`]): its object names are the user's and say nothing about
//! their content, which may be replaced. Credentials and endpoint come from the same
//! `AWS_*` variables as a bucket workspace. One client per bucket is kept for the process,
//! so reads share its connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use crate::error::{DatasetError, Result};
use crate::storage::{Storage, is_url};

/// Whether `path` names an object in a bucket (`s3://…`) rather than a local file.
pub fn is_object_url(path: &Path) -> bool {
    path.to_str().is_some_and(|s| is_url(s) && !s.starts_with("file://"))
}

/// The bytes of the image file at `path` (a local path or an `s3://` URL).
pub fn read_image_file(path: &Path) -> Result<Bytes> {
    let gone = || DatasetError::MissingImageFile { path: path.to_path_buf() };
    if is_object_url(path) {
        bucket_of(path)?.read_opt(path)?.ok_or_else(gone)
    } else {
        std::fs::read(path).map(Bytes::from).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => gone(),
            _ => DatasetError::io("reading", path)(e),
        })
    }
}

/// The bytes of each of `paths`, or why it cannot be read ("not found", a denied request):
/// objects of a bucket are fetched 16 at a time, local files read in turn.
pub fn read_image_files(paths: &[PathBuf]) -> Vec<std::result::Result<Bytes, String>> {
    let mut results: Vec<Option<std::result::Result<Bytes, String>>> = vec![None; paths.len()];
    // Objects grouped by bucket, each group fetched concurrently; local files one by one.
    let mut by_bucket: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, path) in paths.iter().enumerate() {
        match bucket_name(path) {
            Some(bucket) => by_bucket.entry(bucket).or_default().push(i),
            None => {
                let read = std::fs::read(path).map(Bytes::from).map_err(|e| format!("cannot read file: {e}"));
                results[i] = Some(read);
            }
        }
    }
    for indices in by_bucket.into_values() {
        let storage = match bucket_of(&paths[indices[0]]) {
            Ok(storage) => storage,
            Err(e) => {
                for &i in &indices {
                    results[i] = Some(Err(e.to_string()));
                }
                continue;
            }
        };
        let wanted: Vec<PathBuf> = indices.iter().map(|&i| paths[i].clone()).collect();
        for (i, read) in indices.into_iter().zip(storage.read_each(&wanted)) {
            results[i] = Some(match read {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err("cannot read file: no such object in the bucket".into()),
                Err(e) => Err(format!("cannot read file: {e}")),
            });
        }
    }
    results.into_iter().map(|r| r.expect("every path was read")).collect()
}

/// Every file under the bucket prefix `url` (`s3://bucket/prefix`), as `/`-separated
/// paths relative to it with their stamps (size and ETag), sorted; and the prefix's URL
/// without a trailing `/`.
pub fn list_objects(url: &Path) -> Result<(String, Vec<(String, String)>)> {
    let storage = Storage::open_uncached(url)?;
    let mut files = storage.list_files_stamped(storage.root())?;
    files.sort();
    Ok((storage.root().to_string_lossy().into_owned(), files))
}

/// `bucket` of `s3://bucket/key`.
fn bucket_name(path: &Path) -> Option<String> {
    if !is_object_url(path) {
        return None;
    }
    let url = url::Url::parse(path.to_str()?).ok()?;
    Some(format!("{}://{}", url.scheme(), url.host_str()?))
}

/// The process's client of the bucket holding `path`, opened on first use.
fn bucket_of(path: &Path) -> Result<Storage> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Storage>>> = OnceLock::new();
    let bucket = bucket_name(path).ok_or_else(|| DatasetError::BadInput {
        source_path: path.to_path_buf(),
        message: "not a bucket URL: write s3://<bucket>/<key>".into(),
    })?;
    let mut buckets = BUCKETS.get_or_init(Default::default).lock().expect("not poisoned");
    if let Some(storage) = buckets.get(&bucket) {
        return Ok(storage.clone());
    }
    let storage = Storage::open_uncached(Path::new(&bucket))?;
    buckets.insert(bucket, storage.clone());
    Ok(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_object_url(Path::new("s3://b/k.png")));
        assert!(!is_object_url(Path::new("/data/k.png")));
        assert!(!is_object_url(Path::new("file:///data/k.png")));
        assert_eq!(bucket_name(Path::new("s3://imgs/a/b.png")).as_deref(), Some("s3://imgs"));
        assert_eq!(bucket_name(Path::new("relative/b.png")), None);
    }

    #[test]
    fn local_files_read_one_by_one_with_a_reason_for_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"png").unwrap();
        let reads = read_image_files(&[dir.path().join("a.png"), dir.path().join("missing.png")]);
        assert_eq!(reads[0].as_deref().unwrap(), b"png");
        assert!(reads[1].as_ref().unwrap_err().starts_with("cannot read file"), "{:?}", reads[1]);
        assert_eq!(read_image_file(&dir.path().join("a.png")).unwrap(), Bytes::from_static(b"png"));
    }
}
