//! bench-segmentation: mask import and segmentation-run scoring throughput on 512×512
//! label maps, against NumPy (+ Pillow, SciPy) doing the same work on the same PNG files
//! in the same run (`scripts/segmentation_numpy.py`, one process per core). Target
//! (issue: segmentation): ≥ 3× NumPy's masks/s.
//!
//! Data: N (default 200) Cityscapes-like scenes from a fixed seed, 19 classes (sky,
//! buildings with trees, road with sidewalk/terrain wedges, 8–24 objects; a 1-pixel ignore
//! ring around most objects and an ignore band for the ego vehicle, ~2% ignore), and
//! predictions that differ from them (horizon and objects shifted and resized, some
//! objects relabelled, dropped or invented, 1% salt noise, no ignore pixels). Images are
//! 512×512 grayscale renderings of the scenes (masks are checked against image sizes).
//!
//! 1. import: `Engine::import_masks` (read + PNG decode + id check + SHA-256 + histogram +
//!    8-connected regions + RLE + Parquet/tag writes) vs PIL decode + `np.bincount` +
//!    `scipy.ndimage.label` (3×3 structure) per class present.
//! 2. scoring: `Engine::upload_segmentation_run` (read + decode predictions + check + RLE
//!    decode of the stored ground truth + K×K confusion + RLE of predictions + Parquet
//!    writes) vs PIL decode of GT and prediction + `np.bincount(gt[m] * K + pred[m])` per
//!    image, summed, per-class IoU.
//!
//! The two sides alternate for `--rounds` rounds (default 3) and each side's best round
//! counts (this shared 2-core box's load moves either side by 2× between runs). The bench
//! checks that both sides agree (labelled pixels, regions per class, the summed confusion
//! matrix). `--breakdown` times slicetest's kernels phase by phase on the same files.
//!
//! usage: bench-segmentation [--masks N] [--rounds N] [--no-peer] [--breakdown] [--keep DIR]
//! (`--keep DIR`: generate into DIR and leave the files and the workspace there)
//! The peer runs through `$SLICETEST_BENCH_PYTHON` (else python3) with numpy, pillow, scipy.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use rayon::prelude::*;
use slicetest_bench::{python_json, verdict};
use slicetest_engine::{
    DEFAULT_ALPHA, Engine, ImportOptions, IngestOptions, MaskImportOptions, SourceFormat, UploadOptions, Verify,
};

const SIDE: i32 = 512;
/// Cityscapes' 19 training classes; the line number is the class id.
const CLASSES: [&str; 19] = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
];
const K: usize = CLASSES.len();
const IGNORE: u8 = 255;
const SEED: u64 = 0x5e9_2024_0607;
/// The mask set's name (also the tag columns' tagger).
const MASK_SET: &str = "gt";

/// xorshift64: a fixed-seed stream, the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone)]
struct Blob {
    class: u8,
    cx: i32,
    cy: i32,
    rx: i32,
    ry: i32,
    ellipse: bool,
    /// Ground truth draws a 1-pixel ignore ring around it.
    ring: bool,
}

#[derive(Clone)]
struct Scene {
    /// Sky above this row.
    horizon: i32,
    /// Road (with sidewalk and terrain wedges) from this row down.
    ground: i32,
    /// Sidewalk width at the ground row; it widens downwards.
    sidewalk: i32,
    /// Column ranges of vegetation in the building band.
    trees: Vec<(i32, i32)>,
    blobs: Vec<Blob>,
}

/// An object of a random class, sized and placed as that class tends to be.
fn random_blob(rng: &mut Rng, horizon: i32, ground: i32) -> Blob {
    // (class, weight): cars, people and poles are common; trains rare.
    const KINDS: [(u8, u64); 13] = [
        (13, 30),
        (11, 20),
        (5, 14),
        (7, 6),
        (6, 5),
        (12, 4),
        (18, 5),
        (17, 2),
        (14, 3),
        (15, 2),
        (16, 1),
        (4, 5),
        (3, 3),
    ];
    let total: u64 = KINDS.iter().map(|k| k.1).sum();
    let mut pick = rng.next() % total;
    let mut class = 13;
    for (c, weight) in KINDS {
        if pick < weight {
            class = c;
            break;
        }
        pick -= weight;
    }
    let (rx, ry, ellipse) = match class {
        13 => (rng.range(18, 60), rng.range(10, 28), true),
        11 | 12 => (rng.range(4, 10), rng.range(12, 36), true),
        5 => (rng.range(2, 4), rng.range(30, 100), false),
        7 => (rng.range(5, 12), rng.range(5, 12), false),
        6 => (rng.range(3, 6), rng.range(8, 15), false),
        17 | 18 => (rng.range(10, 20), rng.range(8, 15), true),
        14..=16 => (rng.range(40, 90), rng.range(30, 60), false),
        _ => (rng.range(30, 100), rng.range(5, 25), false),
    };
    let cy = match class {
        6 | 7 => rng.range(horizon.max(20), ground),
        5 => rng.range(horizon, ground + 40),
        _ => rng.range(ground - 20, SIDE - 20),
    };
    Blob { class, cx: rng.range(0, SIDE - 1), cy, rx, ry, ellipse, ring: rng.chance(85) }
}

fn scene(seed: u64) -> Scene {
    let mut rng = Rng::new(seed);
    let horizon = rng.range(90, 190);
    let ground = horizon + rng.range(60, 120);
    let mut trees = Vec::new();
    for _ in 0..rng.range(0, 4) {
        let x = rng.range(0, SIDE - 40);
        trees.push((x, x + rng.range(20, 120)));
    }
    let blobs = (0..rng.range(8, 24)).map(|_| random_blob(&mut rng, horizon, ground)).collect();
    Scene { horizon, ground, sidewalk: rng.range(10, 60), trees, blobs }
}

/// The prediction's scene: shifted, resized, relabelled, dropped and invented objects.
fn predicted_scene(truth: &Scene, seed: u64) -> Scene {
    let mut rng = Rng::new(seed ^ 0xabcd_ef01);
    let mut s = truth.clone();
    s.horizon += rng.range(-6, 6);
    s.ground += rng.range(-8, 8);
    s.sidewalk = (s.sidewalk + rng.range(-10, 10)).max(0);
    let mut blobs = Vec::new();
    for b in &truth.blobs {
        if rng.chance(5) {
            continue; // missed
        }
        let mut b = b.clone();
        b.cx += rng.range(-8, 8);
        b.cy += rng.range(-6, 6);
        b.rx = (b.rx * rng.range(80, 120) / 100).max(1);
        b.ry = (b.ry * rng.range(80, 120) / 100).max(1);
        if rng.chance(8) {
            b.class = [11, 12, 13, 14, 15, 17, 18][rng.range(0, 6) as usize]; // confused
        }
        blobs.push(b);
    }
    for _ in 0..rng.range(0, 2) {
        blobs.push(random_blob(&mut rng, s.horizon, s.ground)); // invented
    }
    s.blobs = blobs;
    s
}

fn fill(map: &mut [u8], b: &Blob, grow: i32, value: u8) {
    let (rx, ry) = (b.rx + grow, b.ry + grow);
    let (y0, y1) = ((b.cy - ry).max(0), (b.cy + ry).min(SIDE - 1));
    let (x0, x1) = ((b.cx - rx).max(0), (b.cx + rx).min(SIDE - 1));
    for y in y0..=y1 {
        let dy = (y - b.cy) as i64;
        for x in x0..=x1 {
            let dx = (x - b.cx) as i64;
            let inside = !b.ellipse
                || dx * dx * (ry as i64 * ry as i64) + dy * dy * (rx as i64 * rx as i64)
                    <= (rx as i64 * ry as i64).pow(2);
            if inside {
                map[(y * SIDE + x) as usize] = value;
            }
        }
    }
}

/// A label map of the scene; `truth` adds the ignore rings and the ego-vehicle band.
fn render(s: &Scene, truth: bool, noise_seed: Option<u64>) -> Vec<u8> {
    let mut map = vec![0u8; (SIDE * SIDE) as usize];
    for y in 0..SIDE {
        let row = &mut map[(y * SIDE) as usize..((y + 1) * SIDE) as usize];
        if y < s.horizon {
            row.fill(10);
        } else if y < s.ground {
            row.fill(2);
            for &(a, b) in &s.trees {
                row[a.max(0) as usize..b.min(SIDE) as usize].fill(8);
            }
        } else {
            let w = (s.sidewalk + (y - s.ground) / 3).min(SIDE / 2) as usize;
            row[..w].fill(1);
            row[SIDE as usize - w..].fill(1);
            row[..w / 3].fill(9);
        }
    }
    for b in &s.blobs {
        if truth && b.ring {
            fill(&mut map, b, 1, IGNORE);
        }
        fill(&mut map, b, 0, b.class);
    }
    if truth {
        map[((SIDE - 8) * SIDE) as usize..].fill(IGNORE); // the ego vehicle's bonnet
    }
    if let Some(seed) = noise_seed {
        let mut rng = Rng::new(seed ^ 0x1234_5678);
        for _ in 0..map.len() / 100 {
            let at = (rng.next() % map.len() as u64) as usize;
            map[at] = (rng.next() % K as u64) as u8;
        }
    }
    map
}

fn write_png(path: &Path, pixels: &[u8]) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Adaptive).write_image(
        pixels,
        SIDE as u32,
        SIDE as u32,
        image::ExtendedColorType::L8,
    )?;
    std::fs::write(path, bytes)?;
    Ok(())
}

struct Data {
    images: PathBuf,
    gt: PathBuf,
    pred: PathBuf,
    classes: PathBuf,
    gt_bytes: u64,
    pred_bytes: u64,
    ignore_share: f64,
}

fn generate(dir: &Path, n: usize) -> anyhow::Result<Data> {
    let (images, gt, pred) = (dir.join("images"), dir.join("gt"), dir.join("pred"));
    for d in [&images, &gt, &pred] {
        std::fs::create_dir_all(d)?;
    }
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, CLASSES.join("\n") + "\n")?;
    let stats: Vec<(u64, u64, u64)> = (0..n)
        .into_par_iter()
        .map(|i| -> anyhow::Result<(u64, u64, u64)> {
            let seed = SEED ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
            let truth = scene(seed);
            let gt_map = render(&truth, true, None);
            let pred_map = render(&predicted_scene(&truth, seed), false, Some(seed));
            let name = format!("frame_{i:05}.png");
            // The image: the scene in gray levels (unique content, so unique hashes).
            let gray: Vec<u8> = gt_map.iter().map(|&v| if v == IGNORE { 0 } else { 20 + v * 12 }).collect();
            write_png(&images.join(&name), &gray)?;
            write_png(&gt.join(&name), &gt_map)?;
            write_png(&pred.join(&name), &pred_map)?;
            let ignored = gt_map.iter().filter(|&&v| v == IGNORE).count() as u64;
            Ok((std::fs::metadata(gt.join(&name))?.len(), std::fs::metadata(pred.join(&name))?.len(), ignored))
        })
        .collect::<anyhow::Result<_>>()?;
    let ignored: u64 = stats.iter().map(|s| s.2).sum();
    Ok(Data {
        images,
        gt,
        pred,
        classes,
        gt_bytes: stats.iter().map(|s| s.0).sum(),
        pred_bytes: stats.iter().map(|s| s.1).sum(),
        ignore_share: ignored as f64 / (n as f64 * (SIDE * SIDE) as f64),
    })
}

/// Per class: (pixels, regions) over the whole mask set, from the `masks` table.
async fn mask_totals(engine: &Engine) -> anyhow::Result<Vec<(i64, i64)>> {
    let sql = format!(
        "SELECT class_id, SUM(pixels) AS p, SUM(regions) AS r FROM masks WHERE source = '{MASK_SET}' GROUP BY class_id"
    );
    let mut totals = vec![(0i64, 0i64); K];
    for batch in engine.sql(&sql).await?.collect().await? {
        let (ids, p, r) = (
            cast(batch.column(0), &DataType::Int64)?,
            cast(batch.column(1), &DataType::Int64)?,
            cast(batch.column(2), &DataType::Int64)?,
        );
        let (ids, p, r) =
            (ids.as_primitive::<Int64Type>(), p.as_primitive::<Int64Type>(), r.as_primitive::<Int64Type>());
        for i in 0..ids.len() {
            totals[ids.value(i) as usize] = (p.value(i), r.value(i));
        }
    }
    Ok(totals)
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn list(v: &[f64]) -> String {
    v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ")
}

/// slicetest's kernels one phase at a time over the same files (all cores, rayon), to
/// show where import and upload spend their time. Public functions only; the engine
/// glue (class-id → position table, Parquet writes) is what the totals add on top.
fn breakdown(data: &Data, n: usize) -> anyhow::Result<()> {
    use slicetest_datasets::masks::{decode_png_label_map, rle_decode, rle_encode};
    use slicetest_eval::segmentation::{confusion, histogram, regions};
    let names: Vec<String> = (0..n).map(|i| format!("frame_{i:05}.png")).collect();
    let phase = |label: &str, f: &(dyn Fn(usize) -> u64 + Sync)| {
        let t = Instant::now();
        let check: u64 = (0..n).into_par_iter().map(f).sum();
        let s = t.elapsed().as_secs_f64();
        println!("  {label:<44} {:>8.1} ms  {:>9.0} masks/s   (check {check})", s * 1e3, n as f64 / s);
        s
    };
    let read = |dir: &Path, i: usize| std::fs::read(dir.join(&names[i])).expect("generated file");
    let decode = |dir: &Path, i: usize| {
        decode_png_label_map(&read(dir, i))
            .expect("generated PNG")
            .labels
            .iter()
            .map(|&v| if v == 255 { u16::MAX } else { v })
            .collect::<Vec<u16>>()
    };
    let gt: Vec<Vec<u16>> = (0..n).into_par_iter().map(|i| decode(&data.gt, i)).collect();
    let pred: Vec<Vec<u16>> = (0..n).into_par_iter().map(|i| decode(&data.pred, i)).collect();
    let gt_rle: Vec<Vec<u8>> = gt.par_iter().map(|m| rle_encode(m)).collect();
    let side = SIDE as usize;
    println!("slicetest kernels, phase by phase ({n} masks, {} threads):", rayon::current_num_threads());
    phase("read GT files", &|i| read(&data.gt, i).len() as u64);
    phase("read + PNG decode GT (png crate)", &|i| {
        decode_png_label_map(&read(&data.gt, i)).expect("png").labels.len() as u64
    });
    phase("read + PNG decode GT to u8 only (image crate)", &|i| {
        let png = image::load_from_memory_with_format(&read(&data.gt, i), image::ImageFormat::Png).expect("png");
        png.as_bytes().len() as u64
    });
    phase("histogram", &|i| histogram(&gt[i], K, u16::MAX).expect("classes").iter().sum());
    phase("regions (union-find, 8-connected)", &|i| {
        regions(&gt[i], side, side, K, u16::MAX).iter().map(|&r| r as u64).sum()
    });
    phase("RLE encode GT", &|i| rle_encode(&gt[i]).len() as u64);
    phase("read + PNG decode predictions", &|i| {
        decode_png_label_map(&read(&data.pred, i)).expect("png").labels.len() as u64
    });
    phase("read + PNG decode predictions to u8 only (image crate)", &|i| {
        let png = image::load_from_memory_with_format(&read(&data.pred, i), image::ImageFormat::Png).expect("png");
        png.as_bytes().len() as u64
    });
    phase("RLE decode stored GT", &|i| rle_decode(&gt_rle[i], side * side).expect("rle").len() as u64);
    phase("confusion K×K", &|i| confusion(&gt[i], &pred[i], K, u16::MAX).expect("classes").iter().sum());
    phase("RLE encode predictions", &|i| rle_encode(&pred[i]).len() as u64);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut n, mut rounds, mut peer, mut show_breakdown) = (200usize, 3usize, true, false);
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--masks" => n = args.next().context("--masks N")?.parse()?,
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--no-peer" => peer = false,
            "--breakdown" => show_breakdown = true,
            "--keep" => keep = Some(args.next().context("--keep DIR")?.into()),
            other => bail!("unknown flag {other} (flags: --masks N, --rounds N, --no-peer, --breakdown, --keep DIR)"),
        }
    }
    ensure!(n > 0 && rounds > 0, "--masks and --rounds are at least 1");
    let profile = slicetest_bench::build_profile();
    let cores = std::thread::available_parallelism()?.get();
    println!(
        "bench-segmentation, build profile {profile}, \
         {cores} cores, {n} masks of {SIDE}×{SIDE}, {K} classes, {rounds} alternating rounds"
    );
    let temp = tempfile::tempdir()?;
    let dir = match &keep {
        Some(d) => {
            ensure!(!d.exists(), "--keep {}: the folder exists already", d.display());
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let t = Instant::now();
    let data = generate(&dir, n)?;
    println!(
        "generated in {:.1} s: GT PNGs {:.1} KiB/mask, predictions {:.1} KiB/mask, {:.2}% ignore pixels",
        t.elapsed().as_secs_f64(),
        data.gt_bytes as f64 / n as f64 / 1024.0,
        data.pred_bytes as f64 / n as f64 / 1024.0,
        100.0 * data.ignore_share
    );
    let mut engine = Engine::open_or_init(dir.join("ws"))?;
    let options = IngestOptions {
        format: SourceFormat::Folder,
        import: ImportOptions::default(),
        verify: Verify::Header,
        ..IngestOptions::new("seg")
    };
    let ingest = engine.ingest(&data.images, &options).await?;
    ensure!(ingest.total_images == n, "ingested {} images, expected {n}", ingest.total_images);

    let gt_arg = data.gt.display().to_string();
    let pred_arg = data.pred.display().to_string();
    let cores_arg = cores.to_string();
    let k_arg = K.to_string();

    // 1. Import.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut peer_import = serde_json::Value::Null;
    let mut labelled = 0;
    let import_options = MaskImportOptions { name: Some(MASK_SET.into()), ..Default::default() };
    for _ in 0..rounds {
        let t = Instant::now();
        let report = engine.import_masks(&data.gt, Some(&data.classes), &import_options)?;
        ours.push(t.elapsed().as_secs_f64());
        ensure!(report.masks == n, "imported {} masks, expected {n}", report.masks);
        labelled = report.labelled_pixels;
        if peer {
            peer_import = python_json(
                "segmentation_numpy.py",
                ["import", &gt_arg, "--classes", &k_arg, "--processes", &cores_arg],
                "numpy pillow scipy",
            )?;
            theirs.push(peer_import["seconds"].as_f64().context("seconds")?);
        }
    }
    let ours_rate = n as f64 / best(&ours);
    println!("\n1. mask import ({n} masks): seconds per round: slicetest [{}]", list(&ours));
    println!("   slicetest import_masks: {ours_rate:>8.1} masks/s (best round)");
    if peer {
        let theirs_rate = n as f64 / best(&theirs);
        println!("   seconds per round: NumPy [{}]", list(&theirs));
        println!("   NumPy peer ({cores} processes): {theirs_rate:>8.1} masks/s (best round)");
        let ratio = ours_rate / theirs_rate;
        println!("   ratio slicetest / NumPy: {ratio:.2}×   target ≥ 3×: {}", verdict(ratio >= 3.0));
        // Both computed the same statistics?
        let totals = mask_totals(&engine).await?;
        let peer_pixels: Vec<i64> = serde_json::from_value(peer_import["pixels"].clone())?;
        let peer_regions: Vec<i64> = serde_json::from_value(peer_import["regions"].clone())?;
        let same = totals.iter().map(|t| t.0).eq(peer_pixels.iter().copied())
            && totals.iter().map(|t| t.1).eq(peer_regions.iter().copied())
            && peer_import["labelled_pixels"].as_u64() == Some(labelled);
        println!(
            "   same pixels and regions per class as NumPy/SciPy: {} ({labelled} labelled pixels, {} regions)",
            if same { "yes" } else { "NO" },
            totals.iter().map(|t| t.1).sum::<i64>()
        );
        if !same {
            println!(
                "   slicetest (pixels, regions): {totals:?}\n   NumPy pixels {peer_pixels:?}\n   SciPy regions {peer_regions:?}"
            );
        }
    }

    // 2. Scoring (upload: confusion matrices against the stored ground truth).
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut peer_score = serde_json::Value::Null;
    let mut last_run = String::new();
    for r in 0..rounds {
        last_run = format!("pred_{r}");
        let upload = UploadOptions {
            run: last_run.clone(),
            model: "synthetic".into(),
            model_version: "1".into(),
            dataset: None,
            allow_partial: false,
            instances: false,
            provenance: Default::default(),
            score_threshold: None,
        };
        let t = Instant::now();
        let manifest = engine.upload_segmentation_run(&data.pred, &upload, Some(MASK_SET))?;
        ours.push(t.elapsed().as_secs_f64());
        ensure!(manifest.predictions as usize == n, "{} predictions stored, expected {n}", manifest.predictions);
        if peer {
            peer_score = python_json(
                "segmentation_numpy.py",
                ["score", &gt_arg, "--pred", &pred_arg, "--classes", &k_arg, "--processes", &cores_arg],
                "numpy pillow",
            )?;
            theirs.push(peer_score["seconds"].as_f64().context("seconds")?);
        }
    }
    let ours_rate = n as f64 / best(&ours);
    println!("\n2. scoring a run ({n} predicted masks): seconds per round: slicetest [{}]", list(&ours));
    println!("   slicetest upload_segmentation_run: {ours_rate:>8.1} masks/s (best round)");
    let t = Instant::now();
    let report = engine.score_run(&last_run, None, DEFAULT_ALPHA)?;
    let score_seconds = t.elapsed().as_secs_f64();
    let metrics = report.overall.segmentation.context("a segmentation run has segmentation metrics")?;
    println!(
        "   slicetest score_run (summed matrices, bootstrap intervals, {} slices): {:.1} ms, mIoU {:.4}",
        report.slices.len(),
        score_seconds * 1e3,
        metrics.scores.mean_iou.unwrap_or(f64::NAN)
    );
    if peer {
        let theirs_rate = n as f64 / best(&theirs);
        println!("   seconds per round: NumPy [{}]", list(&theirs));
        println!("   NumPy peer ({cores} processes): {theirs_rate:>8.1} masks/s (best round)");
        let ratio = ours_rate / theirs_rate;
        println!("   ratio slicetest / NumPy: {ratio:.2}×   target ≥ 3×: {}", verdict(ratio >= 3.0));
        let peer_matrix: Vec<Vec<u64>> = serde_json::from_value(peer_score["confusion"].clone())?;
        let same = peer_matrix == metrics.confusion;
        let peer_miou = peer_score["mean_iou"].as_f64().unwrap_or(f64::NAN);
        println!(
            "   same summed confusion matrix as NumPy: {}; mIoU slicetest {:.6}, NumPy {peer_miou:.6}",
            if same { "yes" } else { "NO" },
            metrics.scores.mean_iou.unwrap_or(f64::NAN)
        );
    }

    if show_breakdown {
        println!();
        breakdown(&data, n)?;
    }
    Ok(())
}
