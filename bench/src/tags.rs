//! bench-tags: the `pixels` tagger's throughput on Fashion-MNIST (target ≥ 2,000 images/s
//! on 2 cores), against the same statistics computed with PIL + numpy in one process per
//! core (`scripts/pixel_stats_peer.py`) on the same PNG files.
//!
//! The timed slicetest run is the whole `slicetest tag --tagger pixels` path: read the
//! image table, decode every PNG, compute the statistics in parallel, write the tag file.
//! The tags are removed between runs so each run tags every image.
//!
//! Then what the tag join costs a query (the tagged dataset against the same one ingested
//! again without tags), and the same tagger sharded (`tag --shard i/8`): the shards' union against one run,
//! and the query over `images` with the tags stored as one part or as many, with DuckDB
//! on the same files as the peer.
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-tags [-- --runs N --peer-images N]`
//! (Fashion-MNIST from Debian's `dataset-fashion-mnist`; the peer needs numpy and pillow).

use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use slicetest_bench::{DuckDbPeer, median, python_json, tempdir, verdict};
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
    println!(
        "bench-tags on {cores} cores, build profile {}: Fashion-MNIST from {FASHION_MNIST}",
        slicetest_bench::build_profile()
    );
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
    sharded(&engine, &root, runs).await?;
    tag_join_cost(&mut engine, runs).await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The query every layout is timed with: tag columns joined into `images`, grouped.
const QUERY: &str = "SELECT label, count(*) AS n, avg(brightness) AS b, avg(contrast) AS c \
                     FROM images GROUP BY label ORDER BY label";

/// `tag --shard i/8` run one shard after another against the same workspace, compared
/// with one unsharded run: the tagging time (what sharding costs a job: each shard reads
/// the image table and checks what is done), that the union of the shards is the
/// unsharded result, and what the query over `images` pays for a tagger stored as many
/// parts (read through a group-by on (image_id, sha256)) instead of one — with DuckDB
/// running the same join over the same Parquet files, alternated, as the peer.
async fn sharded(engine: &Engine, root: &std::path::Path, runs: usize) -> anyhow::Result<()> {
    const SHARDS: u64 = 8;
    let one_part = TagOptions {
        taggers: vec!["pixels".into()],
        progress: false,
        checkpoint_seconds: f64::INFINITY,
        ..TagOptions::new(None)
    };
    engine.remove_tags(None, "pixels")?;
    let started = Instant::now();
    engine.tag(&one_part)?;
    let unsharded_s = started.elapsed().as_secs_f64();
    let expected = engine.sql(QUERY).await?.collect().await?;
    let (one_ms, one_duck_ms) = time_query(engine, root, runs).await?;

    engine.remove_tags(None, "pixels")?;
    let started = Instant::now();
    for index in 0..SHARDS {
        // Parts of 4,096 images, as a long sharded job with checkpoints would leave them.
        let shard = TagOptions {
            shard: slicetest_engine::Shard { index, count: SHARDS },
            chunk_size: 4096,
            checkpoint_seconds: 0.0,
            ..one_part.clone()
        };
        engine.tag(&shard)?;
    }
    let sharded_s = started.elapsed().as_secs_f64();
    let parts = std::fs::read_dir(root.join("datasets/fashion_mnist/tags/pixels/g000001"))?.count();
    let got = engine.sql(QUERY).await?.collect().await?;
    let same = datafusion::arrow::util::pretty::pretty_format_batches(&got)?.to_string()
        == datafusion::arrow::util::pretty::pretty_format_batches(&expected)?.to_string();
    let (many_ms, many_duck_ms) = time_query(engine, root, runs).await?;
    println!(
        "sharded tagging: {SHARDS} shards one after another {sharded_s:.2} s vs one run {unsharded_s:.2} s \
         ({:.2}×); union equals the unsharded result: {}",
        sharded_s / unsharded_s,
        verdict(same)
    );
    println!(
        "query over images + pixels tags (p50): 1 part {one_ms:.1} ms (DuckDB {one_duck_ms:.1} ms, {:.2}×); \
         {parts} parts {many_ms:.1} ms (DuckDB {many_duck_ms:.1} ms, {:.2}×); many / one part {:.2}×",
        one_ms / one_duck_ms,
        many_ms / many_duck_ms,
        many_ms / one_ms
    );
    if !same {
        bail!("the shards' union differs from the unsharded run");
    }
    Ok(())
}

/// p50 milliseconds of [`QUERY`] in slicetest and of the same query in DuckDB over the
/// same files (the version's images table left-joined to the tagger's parts, one row per
/// image_id + sha256), alternating the two.
async fn time_query(engine: &Engine, root: &std::path::Path, runs: usize) -> anyhow::Result<(f64, f64)> {
    let images = root.join("datasets/fashion_mnist/versions/1/images-*.parquet");
    let parts = root.join("datasets/fashion_mnist/tags/pixels/g*/part-*.parquet");
    let duck_sql = format!(
        "SELECT label, count(*) AS n, avg(brightness) AS b, avg(contrast) AS c \
         FROM read_parquet('{}') i LEFT JOIN (SELECT image_id, sha256, min(brightness) AS brightness, \
         min(contrast) AS contrast FROM read_parquet('{}') GROUP BY image_id, sha256) t \
         USING (image_id, sha256) GROUP BY label ORDER BY label",
        images.display(),
        parts.display()
    );
    let mut duck = DuckDbPeer::start()?;
    duck.run(&duck_sql)?;
    engine.sql(QUERY).await?.collect().await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(3) {
        let started = Instant::now();
        engine.sql(QUERY).await?.collect().await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
        theirs.push(duck.run(&duck_sql)?.0);
    }
    Ok((median(&mut ours), median(&mut theirs)))
}

/// What the tag columns cost a query: the same dataset ingested a second time without
/// tags, and three queries timed on both, alternated — one on the dataset's own columns
/// (target: tagged ≤ 1.1× untagged), one filtering on a tag column (target ≤ 1.3× the
/// own-column query untagged), one reading every column.
async fn tag_join_cost(engine: &mut Engine, runs: usize) -> anyhow::Result<()> {
    // The shards left many parts; a finished job is compacted to one.
    engine.compact_tags(Some("fashion_mnist"), &[])?;
    let options = IngestOptions {
        format: SourceFormat::FashionMnist,
        import: ImportOptions::default(),
        verify: Verify::Header,
        ..IngestOptions::new("untagged")
    };
    engine.ingest(std::path::Path::new(FASHION_MNIST), &options).await?;
    let own = "SELECT label, count(*) AS n FROM {ds}.images WHERE split = 'test' GROUP BY label";
    let cases = [
        ("own columns only", own, own),
        (
            "filter on a tag column",
            "SELECT label, count(*) AS n FROM {ds}.images WHERE brightness > 0.3 GROUP BY label",
            own,
        ),
        (
            "every column",
            "SELECT * FROM {ds}.images ORDER BY image_id LIMIT 10",
            "SELECT * FROM {ds}.images ORDER BY image_id LIMIT 10",
        ),
    ];
    // First through the join (as after a write that does not materialise), then through
    // the table `slicetest tag` / `tag compact` write.
    for materialised in [false, true] {
        if materialised {
            engine.materialize_images(Some("fashion_mnist")).await?;
        }
        let how = if materialised { "materialised images table, no join" } else { "the tag join" };
        println!("{how} (pixels tags compacted, 70,000 rows; p50 over {} alternated runs):", runs.max(5));
        time_cases(engine, &cases, runs).await?;
    }
    Ok(())
}

/// Times each (what, tagged query, untagged query) alternately and prints the p50s.
async fn time_cases(engine: &Engine, cases: &[(&str, &str, &str)], runs: usize) -> anyhow::Result<()> {
    for &(what, tagged, untagged) in cases {
        let tagged = tagged.replace("{ds}", "fashion_mnist");
        let untagged = untagged.replace("{ds}", "untagged");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..=runs.max(5) {
            let started = Instant::now();
            engine.sql(&tagged).await?.collect().await?;
            let t = started.elapsed().as_secs_f64() * 1000.0;
            let started = Instant::now();
            engine.sql(&untagged).await?.collect().await?;
            let u = started.elapsed().as_secs_f64() * 1000.0;
            if round > 0 {
                a.push(t);
                b.push(u);
            }
        }
        let (t, u) = (median(&mut a), median(&mut b));
        println!("  {what}: tagged {t:.1} ms, untagged {u:.1} ms, {:.2}×", t / u);
    }
    Ok(())
}
