//! MNIST-style IDX files (Fashion-MNIST from Debian's `dataset-fashion-mnist`).
//!
//! A directory holds `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
//! `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`. Each image is
//! written as a grayscale PNG inside the workspace, content-addressed
//! (`datasets/<ds>/files/<aa>/<sha256>.png`), so re-ingesting rewrites nothing and a
//! killed ingest leaves at most unreferenced files. `image_id` is `<split>_<index>`
//! with the index zero-padded to 5 digits (`train_00000`, `test_09999`).

use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use indicatif::ParallelProgressIterator;
use rayon::prelude::*;

use super::{Candidate, CandidateSet, ImportOptions};
use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::probe::sha256_hex;
use crate::progress::bar;

/// Fashion-MNIST's class names, by label index.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// How label indices become label strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxClasses {
    /// The index itself ("0" … "9"), as in MNIST.
    Digits,
    /// Fashion-MNIST's class names.
    FashionMnist,
}

const PARTS: [(&str, &str); 2] = [("train", "train"), ("t10k", "test")];

pub(super) fn looks_like_idx_dir(dir: &Path) -> bool {
    find(dir, "train-images-idx3-ubyte").is_some()
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The images of one IDX file: count, rows, columns and the pixel bytes.
#[derive(Debug, PartialEq)]
pub(crate) struct IdxImages {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols)
    }
}

pub(super) fn gather(
    dir: &Path,
    classes: IdxClasses,
    options: &ImportOptions,
    layout: &WorkspaceLayout,
    dataset: &str,
) -> Result<CandidateSet> {
    let bad = |message: String| DatasetError::BadInput { source_path: dir.to_path_buf(), message };
    let mut set = CandidateSet::default();
    let mut found_any = false;
    for (prefix, split) in PARTS {
        let (Some(images_path), Some(labels_path)) =
            (find(dir, &format!("{prefix}-images-idx3-ubyte")), find(dir, &format!("{prefix}-labels-idx1-ubyte")))
        else {
            continue;
        };
        found_any = true;
        let images =
            parse_images(&read_maybe_gz(&images_path)?).map_err(|m| bad(format!("{}: {m}", images_path.display())))?;
        let labels =
            parse_labels(&read_maybe_gz(&labels_path)?).map_err(|m| bad(format!("{}: {m}", labels_path.display())))?;
        if images.len() != labels.len() {
            return Err(bad(format!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.len(),
                labels_path.display(),
                labels.len()
            )));
        }
        let written = write_pngs(&images, layout, dataset, split, options.progress)?;
        for (i, (file, rel)) in written.into_iter().enumerate() {
            let label = match classes {
                IdxClasses::Digits => labels[i].to_string(),
                IdxClasses::FashionMnist => FASHION_MNIST_CLASSES
                    .get(labels[i] as usize)
                    .ok_or_else(|| bad(format!("label {} at index {i} is not a Fashion-MNIST class (0-9)", labels[i])))?
                    .to_string(),
            };
            set.candidates.push(Candidate {
                image_id: format!("{split}_{i:05}"),
                file,
                uri: rel,
                split: Some(split.to_string()),
                label: Some(label),
                row: set.candidates.len(),
                stamp: None,
            });
        }
    }
    if !found_any {
        return Err(bad(
            "no IDX pairs found (expected train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz], \
                        and/or the t10k-… pair)"
                .into(),
        ));
    }
    Ok(set)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(DatasetError::io("reading", path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(DatasetError::io("decompressing", path))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, String> {
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        return Err(format!("file too short for an IDX header ({} bytes)", bytes.len()));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        return Err(format!("bad magic number {:#010x}, expected {magic:#010x}", word(0)));
    }
    Ok((1..=dims).map(|i| word(i) as usize).collect())
}

pub(crate) fn parse_images(bytes: &[u8]) -> Result<IdxImages, String> {
    let dims = header(bytes, 0x0000_0803, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(format!("images of {rows}×{cols} pixels"));
    }
    let body = &bytes[16..];
    let want = n.checked_mul(rows * cols).ok_or("image count overflows")?;
    if body.len() != want {
        return Err(format!(
            "header promises {n} images of {rows}×{cols} ({want} bytes) but the file holds {} bytes",
            body.len()
        ));
    }
    Ok(IdxImages { rows, cols, pixels: body.to_vec() })
}

pub(crate) fn parse_labels(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let n = header(bytes, 0x0000_0801, 1)?[0];
    let body = &bytes[8..];
    if body.len() != n {
        return Err(format!("header promises {n} labels but the file holds {}", body.len()));
    }
    Ok(body.to_vec())
}

/// Images encoded, then written to a bucket workspace, at a time (their bytes are in memory).
const BUCKET_CHUNK: usize = 4096;

/// Encodes every image as PNG into the workspace; returns (absolute file, workspace-relative uri).
/// On a local disk each file is written in parallel (skipped when it is there already);
/// in a bucket each is created if absent, 16 requests in flight.
fn write_pngs(
    images: &IdxImages,
    layout: &WorkspaceLayout,
    dataset: &str,
    split: &str,
    progress: bool,
) -> Result<Vec<(PathBuf, String)>> {
    let files_dir = layout.files_dir(dataset);
    let pb = bar(images.len() as u64, &format!("writing {split} PNGs"), progress);
    let size = images.rows * images.cols;
    let encode = |i: usize| {
        let img = image::GrayImage::from_raw(
            images.cols as u32,
            images.rows as u32,
            images.pixels[i * size..(i + 1) * size].to_vec(),
        )
        .expect("buffer size matches");
        let mut png = Cursor::new(Vec::with_capacity(size + 100));
        img.write_to(&mut png, image::ImageFormat::Png).expect("PNG encoding to memory");
        let png = png.into_inner();
        let sha = sha256_hex(&png);
        let path = files_dir.join(format!("{}/{}.png", &sha[..2], sha));
        let uri = path
            .strip_prefix(layout.root())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.to_string_lossy().into_owned());
        (path, uri, png)
    };
    if !layout.storage().is_remote() {
        return (0..images.len())
            .into_par_iter()
            .progress_with(pb)
            .map(|i| {
                let (path, uri, png) = encode(i);
                if !path.exists() {
                    write_blob(&path, &png)?;
                }
                Ok((path, uri))
            })
            .collect();
    }
    let mut written = Vec::with_capacity(images.len());
    for start in (0..images.len()).step_by(BUCKET_CHUNK) {
        let end = (start + BUCKET_CHUNK).min(images.len());
        let encoded: Vec<_> = (start..end).into_par_iter().map(encode).collect();
        let mut files = Vec::with_capacity(encoded.len());
        for (path, uri, png) in encoded {
            files.push((path.clone(), bytes::Bytes::from(png)));
            written.push((path, uri));
        }
        layout.storage().create_many(files)?;
        pb.inc((end - start) as u64);
    }
    pb.finish_and_clear();
    Ok(written)
}

/// Writes a content-addressed blob via a temporary name, so a reader never sees half of one.
fn write_blob(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("blob has a parent");
    fs::create_dir_all(dir).map_err(DatasetError::io("creating", dir))?;
    let tmp = crate::atomic::tmp_sibling(path);
    fs::write(&tmp, bytes).map_err(DatasetError::io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(DatasetError::io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn idx_images(n: u32, rows: u32, cols: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0x0803, n, rows, cols] {
            v.extend_from_slice(&u32::to_be_bytes(w));
        }
        v.extend((0..(n * rows * cols) as usize).map(fill));
        v
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0x0801, labels.len() as u32] {
            v.extend_from_slice(&u32::to_be_bytes(w));
        }
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn parses_valid_idx_and_rejects_short_files() {
        let imgs = parse_images(&idx_images(3, 2, 4, |i| i as u8)).unwrap();
        assert_eq!((imgs.len(), imgs.rows, imgs.cols), (3, 2, 4));
        assert_eq!(parse_labels(&idx_labels(&[1, 2, 3])).unwrap(), vec![1, 2, 3]);
        let mut short = idx_images(3, 2, 4, |_| 0);
        short.pop();
        assert!(parse_images(&short).unwrap_err().contains("header promises 3 images"));
        assert!(parse_labels(&idx_images(1, 1, 1, |_| 0)).unwrap_err().contains("bad magic"));
    }

    #[test]
    fn writes_content_addressed_pngs_with_fashion_labels() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("t10k-images-idx3-ubyte"), idx_images(3, 28, 28, |i| (i % 251) as u8)).unwrap();
        fs::write(src.path().join("t10k-labels-idx1-ubyte"), idx_labels(&[6, 0, 9])).unwrap();
        let ws = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(ws.path());
        let set = gather(src.path(), IdxClasses::FashionMnist, &ImportOptions::default(), &layout, "fm").unwrap();
        let got: Vec<_> = set.candidates.iter().map(|c| (c.image_id.as_str(), c.label.as_deref().unwrap())).collect();
        assert_eq!(got, [("test_00000", "Shirt"), ("test_00001", "T-shirt/top"), ("test_00002", "Ankle boot")]);
        for c in &set.candidates {
            assert!(c.uri.starts_with("datasets/fm/files/"), "{}", c.uri);
            assert_eq!(layout.resolve_uri(&c.uri), c.file);
            let decoded = image::open(&c.file).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (28, 28));
        }
    }
}
