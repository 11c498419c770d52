//! bench-s3: the workspace in a bucket against the same workspace on a local disk, in one
//! run, on a local S3-compatible server (moto's, started here on 127.0.0.1).
//!
//! 1. Ingest of a folder of small PNGs into a bucket workspace vs a local one (the images
//!    are read from local disk either way; what differs is where versions are written);
//!    then the same PNGs as objects in the bucket, ingested from `s3://bench/source/`
//!    (listed, fetched, checked) vs from the local folder; then a watch's next look after
//!    10 objects arrived (only new or changed objects are fetched) vs boto3 listing the
//!    prefix and downloading the new ones.
//! 2. p50 of the foundation filter + group-by over 1,000,000 synthetic image rows, bucket
//!    vs local, alternating (target: bucket ≤ 1.5× local), with a session built once (as
//!    bench-foundation does) and per query (as every CLI command does: it lists the
//!    workspace and reads the manifests first); and the bucket without the local cache of
//!    content-keyed files (`SLICETEST_CACHE_MAX_GB=0`), which downloads every query's columns.
//!    The per-command query runs on the bucket also with `SLICETEST_READ_CONSISTENCY_INTERVAL=10`
//!    (listings and manifests read within 10 s answered from memory, as in a busy server).
//! 3. p50 of a filter + group-by on tag columns of a tagged dataset (the same rows, two
//!    imported taggers, materialised as `wide/<key>.parquet`), bucket vs local, alternating
//!    (target: bucket ≤ 1.5× local), with and without the local cache.
//!
//! 4. A session's set-up (listings, manifests, footers) over two small datasets, one
//!    tagged, in an in-memory store that answers each request after 20 ms
//!    ([`DelayedStore`]), behind the local cache: the requests made and the time taken;
//!    then the same for a search by an image's id, its vectors in memory.
//!
//! The workspace also holds a dataset with `--versions` versions (default 100), whose
//! manifests every command reads.
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-s3 [-- --rows N --runs N --images N --versions N]`
//! (needs `pip install "moto[server]"`; `$SLICETEST_BENCH_PYTHON` picks the interpreter).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::RecordBatch;
use object_store::ObjectStore;
use slicetest_bench::delayed_store::DelayedStore;
use slicetest_bench::{median, synthetic_images, synthetic_tag_tables, tempdir, verdict, write_parquet};
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_datasets::object_cache::ObjectCache;
use slicetest_datasets::{Storage, Workspace, WorkspaceLayout};
use slicetest_engine::{Engine, ImportKind, IngestOptions, KnownFiles, SearchQuery, TagImportOptions};

const QUERY: &str = "SELECT label, split, count(*) AS n, avg(brightness) AS mean_brightness, max(width * height) AS max_area \
                     FROM synthetic.images WHERE brightness < 0.5 AND num_people > 2 AND format = 'jpeg' \
                     GROUP BY label, split ORDER BY label, split";
/// The same shape of query on a tagged dataset, filtering and grouping on tag columns.
const TAGGED_QUERY: &str = "SELECT weather, time_of_day, count(*) AS n, avg(blur) AS mean_blur, avg(brightness) AS mean_brightness \
                            FROM tagged.images WHERE noise < 0.5 AND label = 'dog' \
                            GROUP BY weather, time_of_day ORDER BY weather, time_of_day";
/// Rows of the datasets of the session set-up step, and the round trip it simulates.
const SMALL_ROWS: usize = 10_000;
const ROUND_TRIP_MS: u64 = 20;
const SMALL_DIM: usize = 64;
const BUCKET: &str = "slicetest-bench";
/// Where the images ingested from a bucket are.
const IMAGES_BUCKET: &str = "slicetest-bench-images";
/// Objects that arrive between two looks of a watch.
const NEW_OBJECTS: usize = 10;

struct Args {
    rows: usize,
    runs: usize,
    images: usize,
    versions: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { rows: 1_000_000, runs: 20, images: 10_000, versions: 100 };
    for (flag, value) in slicetest_bench::flag_values()? {
        match flag.as_str() {
            "--rows" => a.rows = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            "--images" => a.images = value.parse()?,
            "--versions" => a.versions = value.parse()?,
            other => bail!("unknown flag {other} (flags: --rows N, --runs N, --images N, --versions N)"),
        }
    }
    Ok(a)
}

/// Times, in Python with boto3 against the server at `endpoint`, listing the images
/// bucket's `source/` prefix into `keys` and then running `fetch` (Python statements that
/// may use `s3`, `keys`, `BUCKET` and `ThreadPoolExecutor`): (objects listed, seconds), or
/// why Python did not run it.
fn boto3_peer(endpoint: &str, fetch: &str) -> anyhow::Result<Result<(usize, f64), String>> {
    let script = format!(
        "import boto3, time\n\
         from concurrent.futures import ThreadPoolExecutor\n\
         BUCKET = '{IMAGES_BUCKET}'\n\
         s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='bench', aws_secret_access_key='bench', region_name='us-east-1')\n\
         t = time.time()\n\
         keys = [o['Key'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket=BUCKET, Prefix='source/') for o in p.get('Contents', [])]\n\
         {fetch}\n\
         print(len(keys), time.time() - t)\n"
    );
    let python = std::env::var("SLICETEST_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).args(["-c", &script]).output()?;
    Ok(match String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>()[..] {
        [n, secs] if out.status.success() => Ok((n.parse()?, secs.parse()?)),
        _ => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    })
}

/// moto's S3 server on a free loopback port, stopped on drop.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let python = std::env::var("SLICETEST_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {python} -m moto.server (pip install \"moto[server]\")"))?;
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("moto's server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // moto does not check signatures: a plain PUT creates a bucket. The images to
        // ingest get a bucket of their own: moto lists a bucket by scanning all its keys,
        // so 100,000 images beside the workspaces would slow every listing of theirs.
        for bucket in [BUCKET, IMAGES_BUCKET] {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            write!(
                stream,
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            if !reply.starts_with("HTTP/1.1 200") {
                bail!("creating bucket {bucket}: {}", reply.lines().next().unwrap_or(""));
            }
        }
        Ok(server)
    }

    fn storage(&self, prefix: &str) -> anyhow::Result<Storage> {
        self.storage_in(BUCKET, prefix)
    }

    fn storage_in(&self, bucket: &str, prefix: &str) -> anyhow::Result<Storage> {
        let settings = [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "bench"),
            ("aws_secret_access_key", "bench"),
            ("aws_region", "us-east-1"),
        ];
        Ok(Storage::open_with(Path::new(&format!("s3://{bucket}/{prefix}")), &settings)?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempdir()?;
    // The bucket's content-keyed files are cached here (not in ~/.cache), starting empty.
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("SLICETEST_CACHE_DIR", dir.join("object-cache")) };
    println!(
        "bench-s3 on {} cores, build profile {}",
        std::thread::available_parallelism()?.get(),
        slicetest_bench::build_profile()
    );
    let server = S3Server::start()?;
    // Images ingested from the bucket are read with the standard AWS_* settings.
    // SAFETY: as above; the storage runtime reads them when it first opens a bucket.
    for (key, value) in [
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
    ] {
        unsafe { std::env::set_var(key, value) };
    }

    // 1. Ingest: the same folder into a local workspace and a bucket one.
    let images = dir.join("images");
    let mut names = Vec::with_capacity(args.images);
    for i in 0..args.images {
        names.push(format!("{:02}/img_{i:06}.png", i % 100));
        let path = images.join(names.last().expect("pushed"));
        std::fs::create_dir_all(path.parent().expect("joined"))?;
        let pixels = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(i % 251) as u8, x as u8 * 16, y as u8 * 16]));
        pixels.save(&path)?;
    }
    let mut local = Engine::from_workspace(Workspace::init(dir.join("ws"))?)?;
    let mut bucket = Engine::from_workspace(Workspace::init_in(WorkspaceLayout::on(server.storage("ingest")?))?)?;
    let mut rates = Vec::new();
    for (name, engine) in [("local", &mut local), ("bucket", &mut bucket)] {
        let started = Instant::now();
        let report = engine.ingest(&images, &IngestOptions::new("small")).await?;
        let seconds = started.elapsed().as_secs_f64();
        if report.total_images != args.images {
            bail!("{name}: ingested {} of {} images", report.total_images, args.images);
        }
        rates.push(args.images as f64 / seconds);
        println!(
            "ingest  {} small PNGs into a {name} workspace: {seconds:.2} s ({:.0} images/s)",
            args.images,
            rates.last().unwrap()
        );
    }
    println!("ingest  ratio bucket/local time = {:.2}x", rates[0] / rates[1]);

    // 1b. The same images as objects in the bucket, ingested from there into a local
    // workspace: listed, fetched 16 at a time, checked (what `ingest s3://…` does).
    let source = server.storage_in(IMAGES_BUCKET, "source")?;
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let uploads: Vec<_> = names
            .chunks(names.len().div_ceil(8).max(1))
            .map(|chunk| {
                let (source, images) = (&source, &images);
                scope.spawn(move || -> anyhow::Result<()> {
                    for name in chunk {
                        source.write(&source.root().join(name), std::fs::read(images.join(name))?.into())?;
                    }
                    Ok(())
                })
            })
            .collect();
        uploads.into_iter().try_for_each(|u| u.join().expect("an upload thread panicked"))
    })?;
    println!("ingest  (uploaded {} objects in {:.1} s, 8 at a time)", names.len(), started.elapsed().as_secs_f64());
    let mut from_bucket = Engine::from_workspace(Workspace::init(dir.join("ws-from-bucket"))?)?;
    let started = Instant::now();
    let prefix = format!("s3://{IMAGES_BUCKET}/source/");
    // Remembering what it read, as a watch does (its first look reads everything).
    let watching = IngestOptions { known: Some(Arc::new(KnownFiles::default())), ..IngestOptions::new("small") };
    let report = from_bucket.ingest(Path::new(&prefix), &watching).await?;
    let seconds = started.elapsed().as_secs_f64();
    if report.total_images != args.images {
        bail!("from the bucket: ingested {} of {} images", report.total_images, args.images);
    }
    let rate = args.images as f64 / seconds;
    println!(
        "ingest  {} small PNGs from a bucket prefix ({prefix}) into a local workspace: {seconds:.2} s ({rate:.0} images/s)",
        args.images
    );
    println!("ingest  ratio from-bucket/from-folder time = {:.2}x", rates[0] / rate);
    // What the server itself can serve: boto3 listing and downloading the same objects
    // with 16 threads (no checking, no writing), in the same run.
    let peer = boto3_peer(
        &server.endpoint,
        "with ThreadPoolExecutor(16) as ex:\n    n = sum(len(b) for b in ex.map(lambda k: s3.get_object(Bucket=BUCKET, Key=k)['Body'].read(), keys))",
    )?;
    match peer {
        Ok((n, secs)) => println!(
            "ingest  peer: boto3 lists and downloads the {n} objects, 16 threads: {secs:.2} s ({:.0} objects/s); \
             slicetest's ingest from the bucket takes {:.2}x its time",
            n as f64 / secs,
            seconds / secs
        ),
        Err(why) => println!("ingest  peer: boto3 did not run ({why})"),
    }

    // 1c. A watch's next look at the prefix after NEW_OBJECTS arrived: the listing says
    // which objects are new or changed, only those are fetched. The peer does the least
    // any tool must: list the prefix, download the new objects.
    for i in 0..NEW_OBJECTS {
        let pixels =
            image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([7, x as u8 * 16, ((y + i as u32) * 16) as u8]));
        let mut png = std::io::Cursor::new(Vec::new());
        pixels.write_to(&mut png, image::ImageFormat::Png)?;
        source.write(&source.root().join(format!("new/img_{i:03}.png")), png.into_inner().into())?;
    }
    let started = Instant::now();
    let look = from_bucket.ingest(Path::new(&prefix), &watching).await?;
    let look_seconds = started.elapsed().as_secs_f64();
    if (look.merge.added, look.files_read) != (NEW_OBJECTS, NEW_OBJECTS) {
        bail!("the look added {} and read {} files, not {NEW_OBJECTS}", look.merge.added, look.files_read);
    }
    println!(
        "watch   next look after {NEW_OBJECTS} new objects: {look_seconds:.2} s (read {} of {} objects); \
         the first look (reads all) took {:.1}x as long",
        look.files_read,
        look.candidates,
        seconds / look_seconds
    );
    let peer = boto3_peer(
        &server.endpoint,
        "n = sum(len(s3.get_object(Bucket=BUCKET, Key=k)['Body'].read()) for k in keys if k.startswith('source/new/'))",
    )?;
    match peer {
        Ok((n, secs)) => println!(
            "watch   peer: boto3 lists the {n} objects and downloads the {NEW_OBJECTS} new ones: {secs:.2} s; \
             slicetest's look takes {:.2}x its time",
            look_seconds / secs
        ),
        Err(why) => println!("watch   peer: boto3 did not run ({why})"),
    }

    // 2. The foundation query over the same 1M-row table in both.
    let table = synthetic_images(args.rows);
    let local_layout = WorkspaceLayout::new(dir.join("ws-query"));
    let bucket_layout = WorkspaceLayout::on(server.storage("query")?);
    // The tags of dataset `tagged` (the same rows): two imported taggers, materialised.
    let ids: Vec<String> = (0..args.rows).map(|i| format!("img_{i:08}")).collect();
    let tag_files = dir.join("tag-files");
    std::fs::create_dir_all(&tag_files)?;
    let mut imports = Vec::new();
    for (name, batch) in synthetic_tag_tables(&ids)?.into_iter().filter(|(name, _)| ["quality", "scene"].contains(name))
    {
        let path = tag_files.join(format!("{name}.parquet"));
        write_parquet(&path, &batch)?;
        imports.push((name, path));
    }
    for layout in [&local_layout, &bucket_layout] {
        let mut workspace = Workspace::init_in(layout.clone())?;
        slicetest_datasets::import_table(&mut workspace, "synthetic", &table, "bench")?;
        slicetest_datasets::import_table(&mut workspace, "tagged", &table, "bench")?;
        // A dataset with a long history: every command reads each version's manifest.
        for v in 0..args.versions {
            slicetest_datasets::import_table(&mut workspace, "history", &synthetic_images(v + 1), "bench")?;
        }
        let engine = Engine::from_workspace(workspace)?;
        for (name, path) in &imports {
            let options = TagImportOptions {
                dataset: Some("tagged".into()),
                name: Some(name.to_string()),
                kind: ImportKind::PerImage,
            };
            engine.import_tags(path, &options).await?;
        }
        engine.materialize_images(Some("tagged")).await?;
    }
    // The same bucket without the local cache: every query downloads the columns it reads.
    // SAFETY: no other thread reads the environment while this runs.
    unsafe { std::env::set_var("SLICETEST_CACHE_MAX_GB", "0") };
    let uncached_layout = WorkspaceLayout::on(server.storage("query")?);
    unsafe { std::env::remove_var("SLICETEST_CACHE_MAX_GB") };
    // The same bucket as a server that may answer from listings and manifests read in the
    // last 10 s (`SLICETEST_READ_CONSISTENCY_INTERVAL`): what a command costs when another
    // one just ran.
    unsafe { std::env::set_var(slicetest_datasets::recent_reads::INTERVAL_VARIABLE, "10") };
    let remembering_layout = WorkspaceLayout::on(server.storage("query")?);
    unsafe { std::env::remove_var(slicetest_datasets::recent_reads::INTERVAL_VARIABLE) };
    let engines = [
        Engine::from_workspace(Workspace::open_in(local_layout)?)?,
        Engine::from_workspace(Workspace::open_in(bucket_layout)?)?,
        Engine::from_workspace(Workspace::open_in(uncached_layout)?)?,
        Engine::from_workspace(Workspace::open_in(remembering_layout)?)?,
    ];
    let contexts = [engines[0].context().await?, engines[1].context().await?, engines[2].context().await?];
    let run_query = |i: usize, query: &'static str| {
        let ctx = contexts[i].clone();
        async move {
            let batches = slicetest_engine::query::plan(&ctx, query).await?.collect().await?;
            Ok::<_, anyhow::Error>(batches.iter().map(RecordBatch::num_rows).sum::<usize>())
        }
    };
    let run = |i: usize| run_query(i, QUERY);
    let per_command = |i: usize| {
        let engine = &engines[i];
        async move {
            let ctx = engine.context().await?;
            let batches = slicetest_engine::query::plan(&ctx, QUERY).await?.collect().await?;
            Ok::<_, anyhow::Error>(batches.iter().map(RecordBatch::num_rows).sum::<usize>())
        }
    };
    let warm_local = run(0).await?;
    let started = Instant::now();
    let warm_bucket = run(1).await?;
    println!(
        "query   first query over the bucket (downloads the table into the local cache): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    if warm_local != warm_bucket || run(2).await? != warm_local {
        bail!("results differ: local {warm_local} groups, bucket {warm_bucket}");
    }
    let (mut times, mut ratios) = ([Vec::new(), Vec::new(), Vec::new()], Vec::new());
    let mut uncached_ratios = Vec::new();
    let (mut command_times, mut command_ratios) = ([Vec::new(), Vec::new(), Vec::new()], Vec::new());
    let mut remembering_ratios = Vec::new();
    for _ in 0..args.runs {
        let mut pair = [0.0; 3];
        for i in [0, 1, 2] {
            let started = Instant::now();
            run(i).await?;
            pair[i] = started.elapsed().as_secs_f64() * 1000.0;
            times[i].push(pair[i]);
        }
        ratios.push(pair[1] / pair[0]);
        uncached_ratios.push(pair[2] / pair[0]);
        let mut pair = [0.0; 3];
        for (k, i) in [0, 1, 3].into_iter().enumerate() {
            let started = Instant::now();
            per_command(i).await?;
            pair[k] = started.elapsed().as_secs_f64() * 1000.0;
            command_times[k].push(pair[k]);
        }
        command_ratios.push(pair[1] / pair[0]);
        remembering_ratios.push(pair[2] / pair[0]);
    }
    let [local_ms, bucket_ms] = [median(&mut times[0]), median(&mut times[1])];
    let ratio = median(&mut ratios);
    println!(
        "query   filter+group-by over {} rows ({warm_local} groups), p50 of {} alternating runs, session built once: \
         local {local_ms:.1} ms, bucket {bucket_ms:.1} ms",
        args.rows, args.runs
    );
    println!("query   ratio bucket/local = {ratio:.2}x (p50 of pairs) (target <= 1.5x) {}", verdict(ratio <= 1.5));
    println!(
        "query   without the local cache (SLICETEST_CACHE_MAX_GB=0): bucket {:.1} ms, ratio {:.2}x",
        median(&mut times[2]),
        median(&mut uncached_ratios)
    );
    let [local_ms, bucket_ms, remembering_ms] =
        [median(&mut command_times[0]), median(&mut command_times[1]), median(&mut command_times[2])];
    let per_command_ratio = median(&mut command_ratios);

    // 3. A query on tag columns of a tagged dataset: it reads the materialised file
    // (`wide/<key>.parquet`), which the local cache must keep as it keeps the images table.
    let first =
        [run_query(0, TAGGED_QUERY).await?, run_query(1, TAGGED_QUERY).await?, run_query(2, TAGGED_QUERY).await?];
    if first[1] != first[0] || first[2] != first[0] {
        bail!("tagged query: results differ: {first:?} groups (local, bucket, uncached)");
    }
    let (mut tagged_times, mut tagged_ratios, mut tagged_uncached) =
        ([Vec::new(), Vec::new(), Vec::new()], Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let mut times = [0.0; 3];
        for i in [0, 1, 2] {
            let started = Instant::now();
            run_query(i, TAGGED_QUERY).await?;
            times[i] = started.elapsed().as_secs_f64() * 1000.0;
            tagged_times[i].push(times[i]);
        }
        tagged_ratios.push(times[1] / times[0]);
        tagged_uncached.push(times[2] / times[0]);
    }
    let tagged_ratio = median(&mut tagged_ratios);
    println!(
        "query   per command (three datasets — one of {} versions, one tagged — listed, their latest manifests \
         read, session built, query run): local {local_ms:.1} ms, bucket {bucket_ms:.1} ms, ratio {:.2}x",
        args.versions, per_command_ratio
    );
    let remembering_ratio = median(&mut remembering_ratios);
    println!(
        "query   per command with SLICETEST_READ_CONSISTENCY_INTERVAL=10 (listings and manifests of the last 10 s \
         answered from memory): bucket {remembering_ms:.1} ms, ratio {remembering_ratio:.2}x local \
         (target <= 1.5x) {}",
        verdict(remembering_ratio <= 1.5)
    );
    println!(
        "tagged  tag-column filter+group-by over {} rows of a tagged dataset (two taggers, materialised; {} groups), \
         p50 of {} alternating runs, session built once: local {:.1} ms, bucket {:.1} ms, without the cache {:.1} ms",
        args.rows,
        first[0],
        args.runs,
        median(&mut tagged_times[0]),
        median(&mut tagged_times[1]),
        median(&mut tagged_times[2])
    );
    println!(
        "tagged  ratio bucket/local = {tagged_ratio:.2}x (p50 of pairs) (target <= 1.5x) {}; without the cache {:.2}x",
        verdict(tagged_ratio <= 1.5),
        median(&mut tagged_uncached)
    );

    // 4. A session's set-up (listings, manifests, footers) when each request costs a
    // network round trip, as on S3: moto's requests cost its CPU, on the cores slicetest
    // uses, so concurrent ones are no faster there; DelayedStore answers from memory after
    // a fixed delay. Behind the local cache of content-keyed files, as a bucket is.
    let delayed = Arc::new(DelayedStore::default());
    let cached: Arc<dyn ObjectStore> = Arc::new(ObjectCache::new(delayed.clone(), dir.join("delayed-cache"), 1 << 30)?);
    let delayed_layout = WorkspaceLayout::on(Storage::with_object_store(cached, "memory://delayed/ws"));
    {
        let mut workspace = Workspace::init_in(delayed_layout.clone())?;
        let small = synthetic_images(SMALL_ROWS);
        slicetest_datasets::import_table(&mut workspace, "synthetic", &small, "bench")?;
        slicetest_datasets::import_table(&mut workspace, "tagged", &small, "bench")?;
        let engine = Engine::from_workspace(workspace)?;
        let small_ids: Vec<String> = (0..SMALL_ROWS).map(|i| format!("img_{i:08}")).collect();
        for (name, batch) in synthetic_tag_tables(&small_ids)? {
            let path = tag_files.join(format!("small-{name}.parquet"));
            write_parquet(&path, &batch)?;
            let kind = if name == "boxes" { ImportKind::Detections } else { ImportKind::PerImage };
            let options = TagImportOptions { dataset: Some("tagged".into()), name: Some(name.to_string()), kind };
            engine.import_tags(&path, &options).await?;
        }
        engine.materialize_images(Some("tagged")).await?;
        // Vectors for `tagged`'s images, as `slicetest embed` stores them: a search by an
        // image's id needs no model, only the stored vectors.
        let model = EmbeddingModel {
            name: "synthetic".into(),
            source: "bench".into(),
            fingerprint: "0".repeat(64),
            dim: SMALL_DIM,
            preprocessing: "none".into(),
            slicetest_version: "bench".into(),
            computed_on: None,
        };
        let layout = engine.workspace().layout();
        embeddings::register_model(layout, "tagged", &model)?;
        let shas = small.column_by_name("sha256").context("synthetic images have a sha256")?;
        let shas = datafusion::arrow::compute::cast(shas, &datafusion::arrow::datatypes::DataType::Utf8)?;
        let shas: Vec<String> = shas.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect();
        let mut next = slicetest_bench::xorshift(7);
        let vectors = (0..SMALL_ROWS * SMALL_DIM).map(|_| (next() % 1000) as f32 / 1000.0 - 0.5).collect();
        embeddings::append_part(
            layout,
            "tagged",
            "synthetic",
            &embeddings::part_batch(&small_ids, &shas, vectors, SMALL_DIM)?,
        )?;
    }
    let mut engine = Engine::from_workspace(Workspace::open_in(delayed_layout)?)?;
    engine.use_dataset("tagged")?;
    engine.context().await?; // the data files' footers into the local cache
    delayed.set_delay(Duration::from_millis(ROUND_TRIP_MS));
    let (before, runs) = (delayed.requests(), args.runs.clamp(3, 10));
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        engine.context().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let requests = (delayed.requests() - before) as f64 / runs as f64;
    let p50 = median(&mut times);
    println!(
        "setup   a session over two datasets (one with three taggers and boxes, materialised, embedded) at \
         {ROUND_TRIP_MS} ms a request: p50 of {runs} {p50:.0} ms, {requests:.0} requests ({:.1} round trips' time)",
        p50 / ROUND_TRIP_MS as f64
    );
    // A search by an image's id, its vectors already in memory: what is left is finding
    // the dataset's version, its models and their parts (which say whether the vectors
    // in memory are current).
    let query = SearchQuery::ImageId("img_00000007".into());
    delayed.set_delay(Duration::ZERO);
    engine.search(&query, 10, None)?;
    delayed.set_delay(Duration::from_millis(ROUND_TRIP_MS));
    let (before, mut times) = (delayed.requests(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        engine.search(&query, 10, None)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let requests = (delayed.requests() - before) as f64 / runs as f64;
    let p50 = median(&mut times);
    println!(
        "setup   a search by image id (vectors in memory) at {ROUND_TRIP_MS} ms a request: p50 of {runs} {p50:.0} ms, \
         {requests:.0} requests ({:.1} round trips' time)",
        p50 / ROUND_TRIP_MS as f64
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
