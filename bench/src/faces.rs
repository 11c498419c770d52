//! bench-faces: MTCNN face detection throughput on the CPU, slicetest (candle) against
//! facenet-pytorch 2.6.0 (`bench/scripts/mtcnn_facenet.py`) on the same photos.
//!
//! Both sides decode the photos up front (untimed), run `--warmup` untimed passes, then
//! `--repeats` timed passes calling the detector once per image, one image at a time, with
//! all cores available to the library (rayon here, torch intra-op threads there). Reported:
//! images/s of each, the ratio (target ≥ 1.0) and whether the face counts agree. The
//! parallel `detect_batch` (several images at once) is reported as an extra line.
//!
//! Usage: bench-faces [--repeats R] [--warmup W] [FILE...]
//! (default files: the MTCNN reference photos in embed/tests/fixtures).
//! Python peer: $SLICETEST_TORCH_PYTHON, else /root/.venvs/fixtures/bin/python (torch,
//! torchvision, pillow, requests, facenet-pytorch==2.6.0 installed with --no-deps).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use slicetest_embed::faces::{FaceDetector, MTCNN_VERSION};

fn default_files() -> Vec<PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../embed/tests/fixtures");
    ["faces/astronaut.webp", "faces/camera.png", "faces/person.jpg", "faces/t1.webp", "faces/tom_hanks.png"]
        .iter()
        .chain(&["photos/dog.jpg", "photos/scream.jpg"])
        .map(|f| fixtures.join(f))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut repeats, mut warmup, mut files) = (5usize, 1usize, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeats" => repeats = args.next().context("--repeats R")?.parse().context("--repeats R")?,
            "--warmup" => warmup = args.next().context("--warmup W")?.parse().context("--warmup W")?,
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        files = default_files();
    }
    if repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let images: Vec<image::RgbImage> = files
        .iter()
        .map(|f| slicetest_embed::open_image(f).map(|i| i.to_rgb8()).with_context(|| f.display().to_string()))
        .collect::<anyhow::Result<_>>()?;
    let threads = rayon::current_num_threads();
    println!(
        "bench-faces: {MTCNN_VERSION}, {} images, {repeats} repeats, {threads} threads, build profile {}",
        images.len(),
        slicetest_bench::build_profile()
    );

    let detector = FaceDetector::new(&candle_core::Device::Cpu)?;
    let one_pass =
        || -> anyhow::Result<Vec<usize>> { images.iter().map(|img| Ok(detector.detect(img)?.len())).collect() };
    for _ in 0..warmup {
        one_pass()?;
    }
    let start = Instant::now();
    let mut ours_faces = Vec::new();
    for _ in 0..repeats {
        ours_faces = one_pass()?;
    }
    let ours = (images.len() * repeats) as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..repeats {
        detector.detect_batch(&images)?;
    }
    let batched = (images.len() * repeats) as f64 / start.elapsed().as_secs_f64();

    let python = std::env::var("SLICETEST_TORCH_PYTHON").unwrap_or_else(|_| "/root/.venvs/fixtures/bin/python".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mtcnn_facenet.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--repeats", &repeats.to_string(), "--warmup", &warmup.to_string(), "--threads", &threads.to_string()])
        .args(&files)
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout).context("peer JSON")?;
    let theirs = peer["images_per_s"].as_f64().context("images_per_s")?;
    let their_faces: Vec<usize> =
        peer["faces"].as_array().context("faces")?.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect();

    println!("slicetest (candle)   {ours:8.2} images/s  faces {ours_faces:?}");
    println!("slicetest batch      {batched:8.2} images/s  (detect_batch, images in parallel)");
    println!(
        "facenet-pytorch      {theirs:8.2} images/s  faces {their_faces:?}  (torch {}, {} threads)",
        peer["torch"].as_str().unwrap_or("?"),
        peer["threads"]
    );
    let ratio = ours / theirs;
    println!(
        "ratio {ratio:.2} (target >= 1.0: {}), face counts {}",
        if ratio >= 1.0 { "PASS" } else { "MISS" },
        if ours_faces == their_faces { "agree" } else { "DIFFER" }
    );
    Ok(())
}
