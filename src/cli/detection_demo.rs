//! The demo's detection part: a detection dataset made offline from Fashion-MNIST, a real
//! detector trained on the CPU, and its test detections scored per slice.
//!
//! Canvases are 96×96 dark images with 1–4 Fashion-MNIST garments pasted at 10–48 px and
//! random places (`slicetest_embed::detector::canvas`); a garment's box is the tight box of
//! its pixels. The garments come from the `fashion_mnist` dataset the demo ingested (read
//! through the workspace like any images: PNG files by `uri`): training canvases from its
//! `train` split, test canvases from its `test` split.
//!
//! Only the test canvases become a dataset: they are written as PNG files plus a COCO
//! instances file under `<workspace>/demo/fashion_canvases/` and ingested with the regular
//! COCO importer (`split` forced to `test`), exactly as `slicetest ingest instances.json`
//! would. The training canvases stay in memory: a detection run is evaluated on every
//! image of its dataset, so training canvases in the same dataset would either count as
//! misses or need predictions of their own, and a second dataset of 6,000 canvases would
//! hold nothing the demo shows. They are a function of the seed, so a second demo makes
//! the same ones.
//!
//! Two detectors (`slicetest_embed::detector`, CenterNet-style, every byte reproducible)
//! are trained: the demo's detector and a weaker baseline (half the channels or fewer,
//! one epoch instead of three). Their detections are written as COCO results files next to the
//! instances file and uploaded as runs, as a user would upload a model's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use slicetest_embed::detector::canvas::{Canvas, CanvasSpec, Garment, generate};
use slicetest_embed::detector::{self, Detector, DetectorSettings, Example, KernelPath};
use slicetest_engine::{
    DEFAULT_ALPHA, Engine, ImportOptions, IngestOptions, SliceThresholds, SourceFormat, UploadOptions, Verify,
};

use super::CliError;
use super::classifier::{LabelledImage, grayscale_pixels, labelled_images};

/// The detection dataset the demo makes.
pub const CANVAS_DATASET: &str = "fashion_canvases";

/// How much the demo's detection part does; the defaults are the demo's, tests shrink them.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionDemo {
    /// The dataset whose `train` and `test` images are the garments.
    pub source: String,
    /// Canvases both detectors train on.
    pub train_canvases: usize,
    /// Canvases in the detection dataset.
    pub test_canvases: usize,
    /// Passes of the demo's detector over its canvases (the baseline makes one).
    pub epochs: usize,
    /// Seeds the canvases and the training.
    pub seed: u64,
}

impl Default for DetectionDemo {
    fn default() -> Self {
        DetectionDemo {
            source: super::demo::DEMO_DATASET.into(),
            train_canvases: 6000,
            test_canvases: 1000,
            epochs: 3,
            seed: 7,
        }
    }
}

/// The detection slices: (name, query, description, thresholds). The same bar for every
/// slice — mAP 0.4, AP50 0.65, recall 0.7 at the run's operating point — so the verdicts
/// compare populations, not thresholds; the tops also need 60% of their shirts found.
fn demo_slices() -> Vec<(&'static str, &'static str, &'static str, SliceThresholds)> {
    let bar = SliceThresholds { min_map: Some(0.4), min_ap50: Some(0.65), min_recall: Some(0.7), ..Default::default() };
    let shirts = BTreeMap::from([("Shirt".to_string(), 0.6)]);
    vec![
        (
            "canvas_small_garments",
            "SELECT DISTINCT image_id FROM objects WHERE w < 16 AND h < 16",
            "canvases with a garment smaller than 16 px: at output stride 4 it spans 3 cells or fewer",
            bar.clone(),
        ),
        (
            "canvas_tops",
            "SELECT DISTINCT image_id FROM objects WHERE category IN ('Shirt', 'T-shirt/top')",
            "canvases with a shirt or a T-shirt, the classes a Fashion-MNIST model confuses most",
            SliceThresholds { min_class_recall: shirts, ..bar.clone() },
        ),
        (
            "canvas_large_garments",
            "SELECT image_id FROM images WHERE image_id NOT IN \
             (SELECT image_id FROM objects WHERE w < 24 AND h < 24)",
            "canvases whose garments are all at least 24 px on one side",
            bar,
        ),
    ]
}

/// A detector the demo trains.
struct DemoDetector {
    run: &'static str,
    model: &'static str,
    settings: DetectorSettings,
}

fn demo_detectors(config: &DetectionDemo, kernel: KernelPath) -> [DemoDetector; 2] {
    let base = DetectorSettings {
        widths: [16, 32, 48],
        epochs: config.epochs,
        batch: 16,
        learning_rate: 3e-3,
        weight_decay: 1e-4,
        seed: config.seed,
        kernel,
    };
    [
        DemoDetector {
            run: "canvas_baseline",
            model: "canvas-centernet-small",
            settings: DetectorSettings { widths: [8, 16, 24], epochs: 1, ..base.clone() },
        },
        DemoDetector { run: "canvas_detector", model: "canvas-centernet", settings: base },
    ]
}

/// The run the demo reports on, and its baseline.
pub const DETECTION_RUN: (&str, &str) = ("canvas_detector", "canvas_baseline");

/// Detections kept per canvas (COCO evaluates at most 100; a canvas holds at most 4).
const TOP_K: usize = 20;

/// Grayscale garments of one split, in `image_id` order, with the class names.
struct Garments {
    pixels: Vec<Vec<u8>>,
    classes: Vec<u32>,
}

impl Garments {
    fn pool(&self) -> Vec<Garment<'_>> {
        self.pixels.iter().zip(&self.classes).map(|(p, &class)| Garment { pixels: p, side: 28, class }).collect()
    }
}

/// Headings the detection part prints (numbered from the `step` given to [`run`]).
pub const STEPS: usize = 4;

/// Runs the detection part in the engine's workspace; `step` numbers its headings.
/// Resumable: canvases are the same bytes every time, an ingest of the same canvases
/// changes nothing, and runs that exist are not trained again.
pub async fn run(engine: &mut Engine, workspace: &Path, config: &DetectionDemo, step: usize) -> Result<(), CliError> {
    let started = Instant::now();
    let kernel = KernelPath::detect();
    let detectors = demo_detectors(config, kernel);
    let existing: Vec<String> = engine.runs()?.into_iter().map(|r| r.run).collect();
    let missing: Vec<&DemoDetector> = detectors.iter().filter(|d| !existing.iter().any(|r| r == d.run)).collect();
    let have_dataset = engine.datasets()?.iter().any(|d| d.latest.dataset == CANVAS_DATASET);
    let dir = workspace.join("demo").join(CANVAS_DATASET);
    let spec = CanvasSpec::default();

    println!(
        "\n== {step}. detection: {} test canvases of {side}×{side} px with 1-4 garments of 10-48 px from {}'s test split, \
         as a COCO dataset",
        config.test_canvases,
        config.source,
        side = spec.side
    );
    let mut train_set = Vec::new();
    let mut class_names = Vec::new();
    if missing.is_empty() && have_dataset {
        println!("{CANVAS_DATASET}: already ingested, and both runs exist");
    } else {
        let t = Instant::now();
        let (classes, train, test) = load_garments(engine, &config.source, config).await?;
        let test_set = generate(&test.pool(), config.test_canvases, &spec, config.seed.wrapping_add(1));
        train_set = generate(&train.pool(), config.train_canvases, &spec, config.seed);
        println!(
            "made {} training and {} test canvases from {} + {} garments in {:.1} s",
            train_set.len(),
            test_set.len(),
            train.pixels.len(),
            test.pixels.len(),
            t.elapsed().as_secs_f64()
        );
        let instances = write_coco(&dir, &test_set, &classes)?;
        let options = IngestOptions {
            dataset: CANVAS_DATASET.into(),
            format: SourceFormat::Coco,
            import: ImportOptions { split: Some("test".into()), ..Default::default() },
            verify: Verify::Full,
            strict: true,
            known: None,
        };
        println!("slicetest ingest {} -d {CANVAS_DATASET} --split test", instances.display());
        super::ingest::print_report(&engine.ingest(&instances, &options).await?);
        class_names = classes;
    }
    let default = engine.workspace().config().default_dataset.clone();
    engine.use_dataset(CANVAS_DATASET)?;
    let result = runs_and_report(engine, workspace, config, &detectors, &train_set, &class_names, &dir, step).await;
    if let Some(dataset) = default {
        engine.use_dataset(&dataset)?;
    }
    result?;
    println!("the detection part took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Trains and uploads the missing runs, freezes the slices, and prints and writes the report.
#[allow(clippy::too_many_arguments)]
async fn runs_and_report(
    engine: &Engine,
    workspace: &Path,
    config: &DetectionDemo,
    detectors: &[DemoDetector],
    train_set: &[Canvas],
    class_names: &[String],
    dir: &Path,
    step: usize,
) -> Result<(), CliError> {
    println!(
        "\n== {}. two CenterNet-style detectors trained on {} canvases on the CPU (seed {}; the same bytes on every machine); \
         their test detections become runs",
        step + 1,
        config.train_canvases,
        config.seed
    );
    let existing: Vec<String> = engine.runs()?.into_iter().map(|r| r.run).collect();
    let mut test_canvases: Option<Vec<(i64, Vec<u8>)>> = None;
    for d in detectors {
        if existing.iter().any(|r| r == d.run) {
            println!("{}: already uploaded (runs are immutable)", d.run);
            continue;
        }
        let canvases = match &test_canvases {
            Some(c) => c,
            None => test_canvases.insert(read_test_canvases(engine).await?),
        };
        let n = train_set.len();
        let examples: Vec<Example<'_>> =
            train_set.iter().map(|c| Example { pixels: &c.pixels, objects: &c.objects }).collect();
        let t = Instant::now();
        let model = train_detector(&examples, class_names.len(), &d.settings, d.run);
        let trained = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let images: Vec<&[u8]> = canvases.iter().map(|(_, p)| p.as_slice()).collect();
        let found = model.detect(&images, TOP_K);
        let predicted = t.elapsed().as_secs_f64();
        let results = dir.join(format!("{}.json", d.run));
        write_results(&results, canvases, &found)?;
        let version = format!(
            "w{}-{}-{}-e{}-b{}-lr{}-n{n}-seed{}",
            d.settings.widths[0],
            d.settings.widths[1],
            d.settings.widths[2],
            d.settings.epochs,
            d.settings.batch,
            d.settings.learning_rate,
            d.settings.seed
        );
        let options = UploadOptions {
            run: d.run.into(),
            model: d.model.into(),
            model_version: version.clone(),
            dataset: Some(CANVAS_DATASET.into()),
            allow_partial: false,
            instances: false,
            provenance: BTreeMap::from([
                ("trainer".to_string(), "slicetest demo detector (slicetest_embed::detector)".to_string()),
                ("cpu".to_string(), slicetest_embed::cpu::describe()),
                ("kernel".to_string(), format!("{} (every path gives the same bytes)", d.settings.kernel.name())),
            ]),
            score_threshold: None,
        };
        let manifest = engine.upload_run(&results, &options).await?;
        println!(
            "{}: {} {version} ({} parameters) trained on {n} canvases in {trained:.1} s, predicted {} canvases in \
             {predicted:.1} s; slicetest run upload {} --run {}: {} boxes",
            d.run,
            d.model,
            model.parameters(),
            images.len(),
            results.display(),
            d.run,
            manifest.predictions
        );
    }

    println!("\n== {}. detection slices: small garments, tops, large garments (same bar for each)", step + 2);
    for (name, query, comment, thresholds) in demo_slices() {
        if engine.slice(name).is_err() {
            engine.create_slice(name, query, Some(comment.to_string()), thresholds).await?;
        }
        // No hold-out: the detectors never train on these canvases.
        let outcome = engine.freeze_slice(name, 0.0, 7).await?;
        let what = if outcome.created { "frozen as" } else { "unchanged, still" };
        println!(
            "{name}: {what} version {} with {} canvases — {query}",
            outcome.frozen.version, outcome.frozen.members
        );
    }

    let (run, baseline) = DETECTION_RUN;
    println!("\n== {}. slicetest test --run {run} --baseline {baseline}", step + 3);
    let t = Instant::now();
    let report = engine.score_run(run, Some(baseline), DEFAULT_ALPHA)?;
    let scored = t.elapsed().as_secs_f64();
    super::run::print_report(&report);
    let failing: Vec<&str> = report.failures().map(|s| s.slice.as_str()).collect();
    if failing.is_empty() {
        println!("every slice test passes (scored in {scored:.1} s)");
    } else {
        println!(
            "failing slices: {} (scored in {scored:.1} s; in CI, `slicetest test` exits 1 here)",
            failing.join(", ")
        );
    }
    let html = workspace.join("reports").join(format!("{run}.html"));
    std::fs::create_dir_all(html.parent().expect("joined"))?;
    std::fs::write(&html, engine.html_report(&report, None)?)?;
    println!(
        "the detection report (mAP chart, PR curves, class confusions, per-slice galleries of missed and false boxes): {}",
        html.display()
    );
    let w = workspace.display();
    println!(
        "  slicetest -w {w} sql \"SELECT o.category, count(*) AS missed, round(avg(o.w * o.h)) AS area FROM \
              {CANVAS_DATASET}.objects o JOIN detection_matches('{run}') m USING (object_id) WHERE m.outcome = 'fn' \
              GROUP BY 1 ORDER BY 2 DESC\""
    );
    Ok(())
}

/// The class names (sorted, the detector's class indices) and the `train` and `test`
/// garments of `dataset`, the first `3 ×` canvases of each split (every canvas draws
/// 2.5 garments on average).
async fn load_garments(
    engine: &Engine,
    dataset: &str,
    config: &DetectionDemo,
) -> Result<(Vec<String>, Garments, Garments), CliError> {
    let rows = labelled_images(engine, dataset).await?;
    let mut classes: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
    classes.sort();
    classes.dedup();
    let split = |name: &str, limit: usize| -> Result<Garments, CliError> {
        let chosen: Vec<&LabelledImage> = rows.iter().filter(|r| r.3 == name).take(limit).collect();
        if chosen.is_empty() {
            return Err(format!("the detection demo needs labelled images in {dataset}'s {name} split").into());
        }
        let pixels = grayscale_pixels(engine, &chosen)?;
        let classes = chosen.iter().map(|r| classes.binary_search(&r.2).expect("collected above") as u32).collect();
        Ok(Garments { pixels, classes })
    };
    let train = split("train", 3 * config.train_canvases)?;
    let test = split("test", 3 * config.test_canvases)?;
    Ok((classes, train, test))
}

/// Writes the canvases as `images/canvas_<i>.png` and `instances.json` (COCO: ids from
/// 1, categories 1… in class order, boxes as the canvases have them) into `dir`; returns
/// the instances file.
fn write_coco(dir: &Path, canvases: &[Canvas], classes: &[String]) -> Result<PathBuf, CliError> {
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir)?;
    canvases.par_iter().enumerate().try_for_each(|(i, c)| -> Result<(), String> {
        let path = images_dir.join(format!("canvas_{i:05}.png"));
        let image = image::GrayImage::from_raw(c.side as u32, c.side as u32, c.pixels.clone()).expect("side × side");
        image.save(&path).map_err(|e| format!("writing {}: {e}", path.display()))
    })?;
    let mut images = Vec::with_capacity(canvases.len());
    let mut annotations = Vec::new();
    for (i, c) in canvases.iter().enumerate() {
        let id = i as i64 + 1;
        images.push(
            json!({"id": id, "file_name": format!("images/canvas_{i:05}.png"), "width": c.side, "height": c.side}),
        );
        for o in &c.objects {
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": id,
                "category_id": o.class + 1,
                "bbox": [o.x, o.y, o.w, o.h],
                "area": o.w * o.h,
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<_> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"id": i + 1, "name": name, "supercategory": "garment"}))
        .collect();
    let path = dir.join("instances.json");
    let coco = json!({"images": images, "annotations": annotations, "categories": categories});
    std::fs::write(&path, serde_json::to_vec(&coco)?)?;
    Ok(path)
}

/// The ingested test canvases: (COCO id, pixels), in COCO id order, read back through the
/// dataset (what a user's evaluation script would do).
async fn read_test_canvases(engine: &Engine) -> Result<Vec<(i64, Vec<u8>)>, CliError> {
    let query = format!("SELECT coco_id, uri FROM \"{CANVAS_DATASET}\".images ORDER BY coco_id");
    let batches = engine.sql(&query).await?.collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        let ids = cast(batch.column(0), &DataType::Int64)?;
        let uris = cast(batch.column(1), &DataType::Utf8)?;
        let (ids, uris) = (ids.as_primitive::<datafusion::arrow::datatypes::Int64Type>(), uris.as_string::<i32>());
        rows.extend((0..batch.num_rows()).map(|r| (ids.value(r), uris.value(r).to_string())));
    }
    let layout = engine.workspace().layout();
    rows.par_iter()
        .map(|(id, uri)| {
            let path = layout.resolve_uri(uri);
            let image = image::open(&path).map_err(|e| format!("canvas {id} ({}): {e}", path.display()))?;
            Ok((*id, image.to_luma8().into_raw()))
        })
        .collect::<Result<_, String>>()
        .map_err(Into::into)
}

/// Trains one detector with a progress bar.
fn train_detector(examples: &[Example<'_>], classes: usize, settings: &DetectorSettings, run: &str) -> Detector {
    slicetest_embed::keep_freed_memory_for_reuse();
    let steps = settings.epochs * examples.len().div_ceil(settings.batch.max(1));
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps ({elapsed})").expect("valid template"),
    );
    let side = CanvasSpec::default().side;
    let model = detector::train(examples, side, classes, settings, |p| {
        bar.inc(1);
        bar.set_message(format!("{run}: epoch {}/{}, loss {:.3}", p.epoch, settings.epochs, p.loss));
    });
    bar.finish_and_clear();
    model
}

/// Writes the detections as a COCO results file (`image_id` the COCO id, `category_id`
/// the class + 1).
fn write_results(path: &Path, canvases: &[(i64, Vec<u8>)], found: &[Vec<detector::Detection>]) -> Result<(), CliError> {
    let mut results = Vec::new();
    for ((id, _), found) in canvases.iter().zip(found) {
        for d in found {
            results.push(json!({
                "image_id": id,
                "category_id": d.class + 1,
                "bbox": [d.x, d.y, d.w, d.h],
                "score": d.score,
            }));
        }
    }
    std::fs::write(path, serde_json::to_vec(&results)?)?;
    Ok(())
}
