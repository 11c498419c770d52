//! The demo's real models: small image classifiers (`slicetest_embed::classifier`) trained
//! on a dataset's `train` split, predicting its `test` split, so the demo's report shows
//! real failure patterns (Fashion-MNIST's Shirt vs T-shirt/top) instead of invented
//! predictions.
//!
//! Images are read through the workspace exactly as ingested (PNG files by `uri`), turned
//! to 28×28 grayscale in [0, 1] and flattened. Everything random (initial weights, batch
//! order) comes from one seed, and the arithmetic order is fixed in the source, so a
//! retrain on the same data gives the same bytes on any CPU and with any thread count.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use slicetest_embed::classifier::{self, Examples, KernelPath, Mlp, TrainSettings};
use slicetest_engine::{Engine, RunManifest, UploadOptions};

use super::CliError;

/// Side of the square grayscale input.
const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Hidden layer widths; empty means softmax regression (a linear model).
    pub hidden: Vec<usize>,
    /// Passes over the training images.
    pub epochs: usize,
    /// Use only the first `n` training images (a weaker model, for baselines).
    pub train_limit: Option<usize>,
    /// Images per optimiser step.
    pub batch: usize,
    /// AdamW's learning rate.
    pub learning_rate: f64,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
}

impl TrainConfig {
    /// A short, stable description recorded as the run's model version.
    pub fn version(&self) -> String {
        let layers: Vec<String> = self.hidden.iter().map(usize::to_string).collect();
        let limit = self.train_limit.map_or(String::new(), |n| format!("-n{n}"));
        format!(
            "h[{}]-e{}-b{}-lr{}-seed{}{limit}",
            layers.join(","),
            self.epochs,
            self.batch,
            self.learning_rate,
            self.seed
        )
    }
}

/// Labelled images as flat pixel rows.
struct ImageSet {
    ids: Vec<String>,
    pixels: Vec<f32>,
    labels: Vec<u32>,
}

impl ImageSet {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Trains a classifier on the dataset's `train` split, predicts its `test` split and
/// uploads the predictions (label and per-class probabilities) as run `run`. Returns the
/// run and the test accuracy.
pub async fn train_and_upload(
    engine: &Engine,
    run: &str,
    model: &str,
    config: &TrainConfig,
) -> Result<(RunManifest, f64), CliError> {
    let (classes, train, test) = load(engine).await?;
    let kernel = KernelPath::detect();
    let mlp = train_mlp(&train, classes.len(), config, kernel);
    let probs = mlp.predict_proba(&test.pixels, PIXELS);
    let correct =
        (0..test.len()).filter(|&i| argmax(&probs[i * classes.len()..][..classes.len()]) == test.labels[i] as usize);
    let accuracy = correct.count() as f64 / test.len() as f64;

    let file = tempfile::Builder::new().suffix(".parquet").tempfile()?;
    write_predictions(file.path(), &test.ids, &classes, &probs)?;
    let options = UploadOptions {
        run: run.into(),
        model: model.into(),
        model_version: config.version(),
        dataset: None,
        allow_partial: true,
        // What a reader of run.json needs to reproduce the bytes: the trainer, the machine
        // (which does not change them; recorded so that claim can be checked) and the path.
        instances: false,
        provenance: BTreeMap::from([
            ("trainer".to_string(), "slicetest demo classifier (slicetest_embed::classifier)".to_string()),
            ("cpu".to_string(), slicetest_embed::cpu::describe()),
            ("kernel".to_string(), format!("{} (every path gives the same bytes)", kernel.name())),
        ]),
        score_threshold: None,
    };
    Ok((engine.upload_run(file.path(), &options).await?, accuracy))
}

/// A labelled image of a demo dataset: (image_id, uri, label, split).
pub(super) type LabelledImage = (String, String, String, String);

/// The labelled `train` and `test` images of `dataset`, by image id.
pub(super) async fn labelled_images(engine: &Engine, dataset: &str) -> Result<Vec<LabelledImage>, CliError> {
    let query = format!(
        "SELECT image_id, uri, label, split FROM \"{dataset}\".images \
         WHERE label IS NOT NULL AND split IN ('train', 'test') ORDER BY image_id"
    );
    let batches = engine.sql(&query).await?.collect().await?;
    let mut rows: Vec<LabelledImage> = Vec::new();
    for batch in &batches {
        let col = |i: usize| cast(batch.column(i), &DataType::Utf8);
        let (ids, uris, labels, splits) = (col(0)?, col(1)?, col(2)?, col(3)?);
        let s = |a: &Arc<dyn Array>, r: usize| a.as_string::<i32>().value(r).to_string();
        rows.extend((0..batch.num_rows()).map(|r| (s(&ids, r), s(&uris, r), s(&labels, r), s(&splits, r))));
    }
    Ok(rows)
}

/// The images' files as 28×28 grayscale pixels (resized with a triangle filter), read in
/// parallel, in the images' order.
pub(super) fn grayscale_pixels(engine: &Engine, images: &[&LabelledImage]) -> Result<Vec<Vec<u8>>, CliError> {
    let layout = engine.workspace().layout();
    let pixels = images
        .par_iter()
        .map(|(id, uri, _, _)| {
            let path = layout.resolve_uri(uri);
            let image = image::open(&path).map_err(|e| format!("image {id} ({}): {e}", path.display()))?;
            let gray = image::imageops::resize(
                &image.to_luma8(),
                SIDE as u32,
                SIDE as u32,
                image::imageops::FilterType::Triangle,
            );
            Ok(gray.into_raw())
        })
        .collect::<Result<_, String>>()?;
    Ok(pixels)
}

/// The class names (sorted) and the train and test images of the default dataset.
async fn load(engine: &Engine) -> Result<(Vec<String>, ImageSet, ImageSet), CliError> {
    let dataset = engine.workspace().dataset_or_default(None)?;
    let mut rows = labelled_images(engine, &dataset).await?;
    // Images a frozen slice holds out are kept away from training, as a real pipeline
    // using `slicetest holdout export` would.
    let held_out: std::collections::HashSet<String> = engine.held_out_ids(&dataset)?.into_iter().collect();
    rows.retain(|r| !(r.3 == "train" && held_out.contains(&r.0)));
    let mut classes: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
    classes.sort();
    classes.dedup();
    if rows.iter().all(|r| r.3 != "train") || rows.iter().all(|r| r.3 != "test") {
        return Err("the demo classifier needs labelled images in both the train and the test split".into());
    }
    let split = |name: &str| -> Result<ImageSet, CliError> {
        let chosen: Vec<&LabelledImage> = rows.iter().filter(|r| r.3 == name).collect();
        let pixels = grayscale_pixels(engine, &chosen)?;
        Ok(ImageSet {
            ids: chosen.iter().map(|r| r.0.clone()).collect(),
            pixels: pixels.into_iter().flatten().map(|p| p as f32 / 255.0).collect(),
            labels: chosen.iter().map(|r| classes.binary_search(&r.2).expect("collected above") as u32).collect(),
        })
    };
    let (train, test) = (split("train")?, split("test")?);
    Ok((classes, train, test))
}

fn train_mlp(train: &ImageSet, classes: usize, config: &TrainConfig, kernel: KernelPath) -> Mlp {
    let n = config.train_limit.map_or(train.len(), |l| l.min(train.len()));
    let settings = TrainSettings {
        hidden: config.hidden.clone(),
        epochs: config.epochs,
        batch: config.batch,
        learning_rate: config.learning_rate,
        seed: config.seed,
        kernel,
    };
    let examples = Examples { rows: &train.pixels[..n * PIXELS], labels: &train.labels[..n], features: PIXELS };
    let steps = n.div_ceil(config.batch.max(1));
    let bar = ProgressBar::new((config.epochs * steps) as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps ({elapsed})").expect("valid template"),
    );
    let mlp = classifier::train(examples, classes, &settings, |epoch, loss| {
        bar.inc(1);
        bar.set_message(format!("epoch {epoch}/{}: loss {loss:.4}", config.epochs));
    });
    bar.finish();
    mlp
}

fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Writes `image_id`, `predicted` and one `prob_<class>` column per class as Parquet.
fn write_predictions(path: &Path, ids: &[String], classes: &[String], probs: &[f64]) -> Result<(), CliError> {
    let k = classes.len();
    let mut fields =
        vec![Field::new("image_id", DataType::Utf8, false), Field::new("predicted", DataType::Utf8, false)];
    fields.extend(classes.iter().map(|c| Field::new(format!("prob_{c}"), DataType::Float64, false)));
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(probs.chunks(k).map(|p| classes[argmax(p)].as_str()))),
    ];
    for c in 0..k {
        let column: Float64Array = probs.chunks(k).map(|p| Some(p[c])).collect();
        columns.push(Arc::new(column));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let file = std::fs::File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}
