//! Image folders: every image file below a root, recursively.
//!
//! Rules (documented in docs/formats.md):
//! - `image_id` is the file's path relative to the root, with `/` separators.
//! - `split` comes from the nearest ancestor folder named train / val / test / holdout
//!   (or a spelling [`normalize_split`] knows).
//! - `label` is the name of the file's parent folder, unless that is the root or a split folder.
//! - Hidden files and folders (names starting with `.`) are skipped; non-image files are counted as ignored.
//! - A symlink that leads outside the root is rejected.
//!
//! A bucket prefix (`slicetest ingest s3://bucket/images/`) follows the same rules, with
//! object keys for paths ([`gather_objects`]).

use std::path::{Path, PathBuf};

use super::{
    Candidate, CandidateSet, ImportOptions, OUTSIDE_HINT_FOLDER, Rejection, canonical_root, normalize_split,
    relative_id, resolve_inside,
};
use crate::error::{DatasetError, Result};
use crate::probe::{IMAGE_EXTENSIONS, has_image_extension};

pub(super) fn gather(dir: &Path, _options: &ImportOptions) -> Result<CandidateSet> {
    let root = canonical_root(dir)?;
    let mut set = CandidateSet::default();
    for entry in super::visible_entries(&root, usize::MAX) {
        let entry = entry.map_err(|e| DatasetError::BadInput {
            source_path: dir.to_path_buf(),
            message: format!("cannot walk the folder: {e}"),
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        if !has_image_extension(path) {
            set.ignored += 1;
            continue;
        }
        let Some(image_id) = relative_id(&root, path) else { continue };
        let file = match resolve_inside(&root, path, OUTSIDE_HINT_FOLDER) {
            Ok(f) => f,
            Err(reason) => {
                set.rejected.push(Rejection { item: image_id, reason });
                continue;
            }
        };
        let uri = file.to_string_lossy().into_owned();
        push_image(&mut set, image_id, file, uri, None);
    }
    if set.candidates.is_empty() && set.rejected.is_empty() {
        return Err(DatasetError::BadInput {
            source_path: dir.to_path_buf(),
            message: format!(
                "no image files found (looked recursively for {}; {} other files ignored)",
                image_extensions(),
                set.ignored
            ),
        });
    }
    Ok(set)
}

/// The objects under a bucket prefix (`s3://bucket/images/`), by the same rules as a
/// folder: the key below the prefix is the image id, folders give split and label, hidden
/// names are skipped, other files are counted as ignored. Images are not read here; ingest
/// fetches and checks them, so a missing or unreadable object is reported like a corrupt
/// file.
pub(super) fn gather_objects(url: &Path) -> Result<CandidateSet> {
    let (root, files) = crate::image_files::list_objects(url)?;
    let mut set = CandidateSet::default();
    for (image_id, stamp) in files {
        if image_id.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        if !has_image_extension(Path::new(&image_id)) {
            set.ignored += 1;
            continue;
        }
        let uri = format!("{root}/{image_id}");
        push_image(&mut set, image_id, uri.clone().into(), uri, Some(stamp));
    }
    if set.candidates.is_empty() {
        return Err(DatasetError::BadInput {
            source_path: url.to_path_buf(),
            message: format!(
                "no image objects found under this prefix (looked for {}; {} other objects ignored)",
                image_extensions(),
                set.ignored
            ),
        });
    }
    Ok(set)
}

/// Adds the image `image_id` (a `/`-separated path below the root) read from `file`, with
/// the split and label its folders give.
fn push_image(set: &mut CandidateSet, image_id: String, file: PathBuf, uri: String, stamp: Option<String>) {
    let (split, label) = split_and_label(&image_id);
    let row = set.candidates.len();
    set.candidates.push(Candidate { uri, image_id, file, split, label, row, stamp });
}

/// `.png .jpg …`: the extensions read as images, for "none found" errors.
fn image_extensions() -> String {
    IMAGE_EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(" ")
}

fn is_split_name(s: &str) -> bool {
    matches!(normalize_split(s).as_str(), "train" | "val" | "test" | "holdout")
}

/// Split and label of a relative id like `train/Shirt/001.png`.
pub(super) fn split_and_label(image_id: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = image_id.split('/').collect();
    let dirs = &parts[..parts.len() - 1];
    let split = dirs.iter().rev().find(|d| is_split_name(d)).map(|d| normalize_split(d));
    let label = dirs.last().filter(|d| !is_split_name(d)).map(|d| d.to_string());
    (split, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn split_and_label_follow_the_folder_rules() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(split_and_label("train/Shirt/1.png"), (s("train"), s("Shirt")));
        assert_eq!(split_and_label("Validation/cat/1.png"), (s("val"), s("cat")));
        assert_eq!(split_and_label("cat/1.png"), (None, s("cat")));
        assert_eq!(split_and_label("test/1.png"), (s("test"), None));
        assert_eq!(split_and_label("1.png"), (None, None));
        assert_eq!(split_and_label("a/train/b/cat/1.png"), (s("train"), s("cat")));
    }

    #[test]
    fn walks_recursively_skipping_hidden_and_non_images() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("train/cat")).unwrap();
        fs::create_dir_all(p.join(".cache")).unwrap();
        fs::write(p.join("train/cat/a.png"), b"x").unwrap();
        fs::write(p.join("train/cat/notes.txt"), b"x").unwrap();
        fs::write(p.join(".cache/b.png"), b"x").unwrap();
        let set = gather(p, &ImportOptions::default()).unwrap();
        let ids: Vec<_> = set.candidates.iter().map(|c| c.image_id.as_str()).collect();
        assert_eq!(ids, ["train/cat/a.png"]);
        assert_eq!(set.ignored, 1);
    }

    #[test]
    fn an_empty_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = gather(dir.path(), &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.contains("no image files found"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_leading_outside_is_rejected() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.png"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.png"), dir.path().join("link.png")).unwrap();
        let set = gather(dir.path(), &ImportOptions::default()).unwrap();
        assert!(set.candidates.is_empty());
        assert!(set.rejected[0].reason.contains("outside the folder"), "{:?}", set.rejected);
    }
}
