//! bench-tags: the `pixels` tagger's throughput on Fashion-MNIST (target ≥ 2,000 images/s
//! on 2 cores), against the same statistics computed with PIL + numpy in one process per
//! core (`scripts/pixel_stats_peer.py`) on the same PNG files.
//!
//! The timed slicetest run is the whole `slicetest tag --tagger pixels` path: read the
//! image table, decode every PNG, compute the statistics in parallel, write the tag file.
//! The tags are removed between runs so each run tags every image.
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-tags [-- --runs N --peer-images N]`
//! (Fashion-MNIST from Debian's `dataset-fashion-mnist`; the peer needs numpy and pillow).

use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use slicetest_bench::{median, python_json, tempdir, verdict};
use slicetest_engine::{Engine, ImportOptions, IngestOptions, SourceFormat, TagOptions, Verify};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut runs, mut peer_images) = (5usize, 70_000usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--runs" => runs = value,
            "--peer-images" => peer_images = value,
            other => bail!("unknown flag {other} (flags: --runs N, --peer-images N)"),
        }
    }
    let dir = tempdir()?;
    let cores = std::thread::available_parallelism()?.get();
    println!("bench-tags on {cores} cores: Fashion-MNIST from {FASHION_MNIST}");
    let mut engine = Engine::open_or_init(dir.join("ws"))?;
    let options = IngestOptions {
        format: SourceFormat::FashionMnist,
        import: ImportOptions::default(),
        verify: Verify::Header,
        ..IngestOptions::new("fashion_mnist")
    };
    engine.ingest(std::path::Path::new(FASHION_MNIST), &options).await.context("apt install dataset-fashion-mnist")?;

    let tag = TagOptions { taggers: vec!["pixels".into()], progress: false, ..TagOptions::new(None) };
    let mut rates = Vec::new();
    let mut images = 0;
    for _ in 0..runs {
        engine.remove_tags(None, "pixels")?;
        let started = Instant::now();
        let report = engine.tag(&tag)?;
        let seconds = started.elapsed().as_secs_f64();
        images = report.taggers[0].tagged;
        rates.push(images as f64 / seconds);
    }
    let ours = median(&mut rates);
    println!("slicetest pixels tagger: {images} images, median {ours:.0} images/s over {runs} runs (target ≥ 2,000)");

    // The same files, for the peer.
    let batch = engine.sql("SELECT uri FROM images ORDER BY image_id").await?.collect().await?;
    let root = dir.join("ws");
    let mut list = String::new();
    for b in &batch {
        let uris = cast(b.column(0), &DataType::Utf8)?;
        for uri in uris.as_string::<i32>().iter().flatten().take(peer_images.saturating_sub(list.lines().count())) {
            list.push_str(&root.join(uri).display().to_string());
            list.push('\n');
        }
    }
    let list_file = dir.join("files.txt");
    std::fs::write(&list_file, list)?;
    let peer = python_json(
        "pixel_stats_peer.py",
        [list_file.display().to_string(), "--processes".into(), cores.to_string()],
        "numpy pillow",
    )?;
    let theirs = peer["images_per_s"].as_f64().context("images_per_s")?;
    println!(
        "PIL + numpy ({cores} processes): {} images, {theirs:.0} images/s",
        peer["images"].as_u64().unwrap_or_default()
    );
    println!("ratio slicetest / peer: {:.1}×   target ≥ 2,000 images/s: {}", ours / theirs, verdict(ours >= 2000.0));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
