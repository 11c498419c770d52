//! The demo's real models: small image classifiers trained on candle (CPU) on a dataset's
//! `train` split, predicting its `test` split, so the demo's report shows real failure
//! patterns (Fashion-MNIST's Shirt vs T-shirt/top) instead of invented predictions.
//!
//! Images are read through the workspace exactly as ingested (PNG files by `uri`), turned
//! to 28×28 grayscale in [0, 1] and flattened. Everything random (initial weights, batch
//! order) comes from one seed, so a retrain on the same data gives the same model.

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Module, Optimizer, ParamsAdamW};
use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use slicetest_engine::bootstrap::SplitMix64;
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

/// A multilayer perceptron: linear layers with ReLU between them.
struct Mlp {
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// PyTorch's default Linear initialisation, U(−1/√fan_in, 1/√fan_in), from a seed.
    fn new(widths: &[usize], seed: u64) -> candle_core::Result<Self> {
        let mut rng = SplitMix64::for_resample(seed, 0);
        let mut uniform = |n: usize, bound: f32| -> Vec<f32> {
            (0..n).map(|_| ((rng.below(1 << 24) as f32 / (1 << 24) as f32) * 2.0 - 1.0) * bound).collect()
        };
        let layers = widths
            .windows(2)
            .map(|w| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let weight = Var::from_vec(uniform(fan_in * fan_out, bound), (fan_out, fan_in), &Device::Cpu)?;
                let bias = Var::from_vec(uniform(fan_out, bound), fan_out, &Device::Cpu)?;
                Ok((weight, bias))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Mlp { layers })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            xs = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).forward(&xs)?;
            if i + 1 < self.layers.len() {
                xs = xs.relu()?;
            }
        }
        Ok(xs)
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
    let mlp = train_mlp(&train, classes.len(), config)?;
    let probs = predict(&mlp, &test)?;
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
    };
    Ok((engine.upload_run(file.path(), &options).await?, accuracy))
}

/// The class names (sorted) and the train and test images of the default dataset.
async fn load(engine: &Engine) -> Result<(Vec<String>, ImageSet, ImageSet), CliError> {
    let query = "SELECT image_id, uri, label, split FROM images \
                 WHERE label IS NOT NULL AND split IN ('train', 'test') ORDER BY image_id";
    let batches = engine.sql(query).await?.collect().await?;
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    for batch in &batches {
        let col = |i: usize| cast(batch.column(i), &DataType::Utf8);
        let (ids, uris, labels, splits) = (col(0)?, col(1)?, col(2)?, col(3)?);
        let s = |a: &Arc<dyn Array>, r: usize| a.as_string::<i32>().value(r).to_string();
        rows.extend((0..batch.num_rows()).map(|r| (s(&ids, r), s(&uris, r), s(&labels, r), s(&splits, r))));
    }
    // Images a frozen slice holds out are kept away from training, as a real pipeline
    // using `slicetest holdout export` would.
    let dataset = engine.workspace().dataset_or_default(None)?;
    let held_out: std::collections::HashSet<String> = engine.held_out_ids(&dataset)?.into_iter().collect();
    rows.retain(|r| !(r.3 == "train" && held_out.contains(&r.0)));
    let mut classes: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
    classes.sort();
    classes.dedup();
    if rows.iter().all(|r| r.3 != "train") || rows.iter().all(|r| r.3 != "test") {
        return Err("the demo classifier needs labelled images in both the train and the test split".into());
    }
    let layout = engine.workspace().layout();
    let split = |name: &str| -> Result<ImageSet, CliError> {
        let chosen: Vec<&(String, String, String, String)> = rows.iter().filter(|r| r.3 == name).collect();
        let pixels: Vec<Vec<f32>> = chosen
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
                Ok(gray.into_raw().into_iter().map(|p| p as f32 / 255.0).collect())
            })
            .collect::<Result<_, String>>()?;
        Ok(ImageSet {
            ids: chosen.iter().map(|r| r.0.clone()).collect(),
            pixels: pixels.concat(),
            labels: chosen.iter().map(|r| classes.binary_search(&r.2).expect("collected above") as u32).collect(),
        })
    };
    let (train, test) = (split("train")?, split("test")?);
    Ok((classes, train, test))
}

fn train_mlp(train: &ImageSet, classes: usize, config: &TrainConfig) -> Result<Mlp, CliError> {
    let n = config.train_limit.map_or(train.len(), |l| l.min(train.len()));
    let widths: Vec<usize> = std::iter::once(PIXELS).chain(config.hidden.iter().copied()).chain([classes]).collect();
    let mlp = Mlp::new(&widths, config.seed)?;
    let params = ParamsAdamW { lr: config.learning_rate, weight_decay: 0.0, ..Default::default() };
    let mut optimizer = AdamW::new(mlp.vars(), params)?;
    let mut rng = SplitMix64::for_resample(config.seed, 1);
    let steps = n.div_ceil(config.batch);
    let bar = ProgressBar::new((config.epochs * steps) as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps ({elapsed})").expect("valid template"),
    );
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 1..=config.epochs {
        // Fisher–Yates with the seeded generator: the batch order is part of the seed.
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut total = 0.0;
        for chunk in order.chunks(config.batch) {
            let (xs, ys) = batch(train, chunk)?;
            let loss = candle_nn::loss::cross_entropy(&mlp.forward(&xs)?, &ys)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            bar.inc(1);
        }
        bar.set_message(format!("epoch {epoch}/{}: loss {:.4}", config.epochs, total / n as f64));
    }
    bar.finish();
    Ok(mlp)
}

fn batch(set: &ImageSet, rows: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
    let mut pixels = Vec::with_capacity(rows.len() * PIXELS);
    for &r in rows {
        pixels.extend_from_slice(&set.pixels[r * PIXELS..(r + 1) * PIXELS]);
    }
    let labels: Vec<u32> = rows.iter().map(|&r| set.labels[r]).collect();
    Ok((Tensor::from_vec(pixels, (rows.len(), PIXELS), &Device::Cpu)?, Tensor::new(labels, &Device::Cpu)?))
}

/// Softmax probabilities of every image, row-major (images × classes), in f64.
fn predict(mlp: &Mlp, set: &ImageSet) -> candle_core::Result<Vec<f64>> {
    let mut out = Vec::new();
    let rows: Vec<usize> = (0..set.len()).collect();
    for chunk in rows.chunks(1024) {
        let (xs, _) = batch(set, chunk)?;
        let probs = candle_nn::ops::softmax(&mlp.forward(&xs)?.to_dtype(DType::F64)?, D::Minus1)?;
        out.extend(probs.flatten_all()?.to_vec1::<f64>()?);
    }
    Ok(out)
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
