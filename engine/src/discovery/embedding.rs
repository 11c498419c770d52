//! Embedding discovery, after Domino (Eyuboglu et al., ICLR 2022): slices found in the
//! stored CLIP vectors instead of in the `images` columns, so a failure that no tag
//! names ("shirts photographed flat, from above") can still be found.
//!
//! 1. **PCA** of a seeded sample of at most [`SAMPLE_ROWS`] discovery-half vectors, to at
//!    most [`PCA_COMPONENTS`] dimensions ([`Pca`], held to scikit-learn's `PCA`).
//! 2. **An error-aware Gaussian mixture** on the sample ([`fit_mixture`]): each component
//!    has a weight, a diagonal Gaussian over the reduced vectors, and two categorical
//!    distributions, over the true label and over the predicted label (for runs without a
//!    predicted label: over "right / wrong"), whose log-likelihoods are weighted by
//!    [`LABEL_WEIGHT`] as DominoSlicer's `y_log_likelihood_weight` and
//!    `y_hat_log_likelihood_weight` are, so that components gather images that look alike
//!    *and* share a confusion. With no weight it is scikit-learn's
//!    `GaussianMixture(covariance_type="diag")`, step for step (a test holds it to that).
//!    Initialisation as Domino's by confusion-matrix cell when the cells fit into the
//!    components; else the largest cells of errors start a component each (up to half of
//!    them) and seeded k-means on the vectors and both labels starts the rest.
//! 3. **Candidates**: the components with the largest gap between their true-label and
//!    predicted-label distributions (Domino's criterion; for runs without a predicted
//!    label, the gap between their error rate and the mean).
//! 4. **A query for each** ([`EmbeddingSlice`]): a component is turned into a rule that
//!    never looks at the prediction, so it can be confirmed on the other half and saved as
//!    a slice: its dominant label, when one label holds most of it, and a cosine
//!    similarity to its centroid at least the threshold that best reproduces the
//!    component on the sample (F1). In SQL that is a `cosine_similarity(e.vector, [...])`
//!    predicate over the `embeddings` table.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use slicetest_embed::index::cosine;

use super::sliceline::{Bitmap, bitmap_from};

/// Most rows the PCA and the mixture are fitted on (a seeded sample of the discovery half).
pub const SAMPLE_ROWS: usize = 50_000;
/// Most PCA dimensions the mixture works in (Domino's default).
pub const PCA_COMPONENTS: usize = 128;
/// Mixture components (Domino's `n_mixture_components`).
pub const MIXTURE_COMPONENTS: usize = 25;
/// Weight of the label and prediction log-likelihoods (Domino's default, 10).
pub const LABEL_WEIGHT: f64 = 10.0;
/// A label is a slice's condition when it holds at least this share of the component.
const DOMINANT_LABEL_SHARE: f64 = 0.8;

/// Principal components of a set of vectors.
#[derive(Debug, Clone)]
pub struct Pca {
    /// The mean vector.
    pub mean: Vec<f64>,
    /// The components, one per row (`p × dim`, row-major), largest variance first; each
    /// unit length, its sign fixed so that its largest-magnitude entry is positive.
    pub components: Vec<f64>,
    /// The variance along each component (with `n − 1` in the denominator, as sklearn).
    pub explained_variance: Vec<f64>,
    /// The total variance of the data.
    pub total_variance: f64,
    /// Input dimension.
    pub dim: usize,
}

impl Pca {
    /// Fits at most `max_components` components to `rows` (each `dim` long; at least two).
    pub fn fit(rows: &[&[f32]], max_components: usize) -> Pca {
        let (n, dim) = (rows.len(), rows[0].len());
        let mut mean = vec![0.0f64; dim];
        for row in rows {
            for (m, &v) in mean.iter_mut().zip(*row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centered = nalgebra::DMatrix::<f64>::from_fn(n, dim, |i, j| f64::from(rows[i][j]) - mean[j]);
        // `transpose() * m` goes through matrixmultiply's GEMM; `tr_mul` would not.
        let covariance = centered.transpose() * &centered / (n.max(2) - 1) as f64;
        let total_variance = covariance.trace();
        let eigen = nalgebra::SymmetricEigen::new(covariance);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let p = max_components.min(dim).min(n.saturating_sub(1)).max(1);
        let mut components = Vec::with_capacity(p * dim);
        let mut explained_variance = Vec::with_capacity(p);
        for &c in &order[..p] {
            let column = eigen.eigenvectors.column(c);
            let largest = column.iter().copied().fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if largest < 0.0 { -1.0 } else { 1.0 };
            components.extend(column.iter().map(|v| v * sign));
            explained_variance.push(eigen.eigenvalues[c].max(0.0));
        }
        Pca { mean, components, explained_variance, total_variance, dim }
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.explained_variance.len()
    }

    /// Whether there are no components.
    pub fn is_empty(&self) -> bool {
        self.explained_variance.is_empty()
    }

    /// The share of the total variance the components keep.
    pub fn explained_variance_ratio(&self) -> f64 {
        if self.total_variance > 0.0 { self.explained_variance.iter().sum::<f64>() / self.total_variance } else { 1.0 }
    }

    /// `rows` in component coordinates (`n × p`, row-major).
    pub fn transform(&self, rows: &[&[f32]]) -> Vec<f64> {
        let (n, p) = (rows.len(), self.len());
        let centered = nalgebra::DMatrix::<f64>::from_fn(n, self.dim, |i, j| f64::from(rows[i][j]) - self.mean[j]);
        let basis = nalgebra::DMatrix::<f64>::from_row_slice(p, self.dim, &self.components);
        let projected = centered * basis.transpose();
        let mut out = Vec::with_capacity(n * p);
        for i in 0..n {
            out.extend(projected.row(i).iter());
        }
        out
    }
}

/// The data a mixture is fitted on: `n` rows of `d` coordinates, each with a label code
/// and a prediction code (both `< classes`).
#[derive(Debug, Clone, Copy)]
pub struct MixtureData<'a> {
    /// Row-major coordinates.
    pub points: &'a [f64],
    /// Coordinates per row.
    pub d: usize,
    /// Label code of each row.
    pub labels: &'a [u32],
    /// Prediction code of each row.
    pub predictions: &'a [u32],
    /// Number of codes.
    pub classes: usize,
    /// Whether each row is an error (steers the initialisation only).
    pub wrong: &'a [bool],
}

impl MixtureData<'_> {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.points[i * self.d..][..self.d]
    }
}

/// How a mixture is fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixtureSettings {
    /// Components.
    pub components: usize,
    /// Weight of the label log-likelihood.
    pub label_weight: f64,
    /// Weight of the prediction log-likelihood.
    pub prediction_weight: f64,
    /// Most EM iterations.
    pub max_iter: usize,
    /// Stop when the mean log-likelihood changes by less (sklearn's `tol`).
    pub tol: f64,
    /// Added to every variance (sklearn's `reg_covar`).
    pub reg_covar: f64,
    /// Seeds the initialisation.
    pub seed: u64,
}

impl Default for MixtureSettings {
    fn default() -> Self {
        MixtureSettings {
            components: MIXTURE_COMPONENTS,
            label_weight: LABEL_WEIGHT,
            prediction_weight: LABEL_WEIGHT,
            max_iter: 100,
            tol: 1e-3,
            reg_covar: 1e-6,
            seed: 0,
        }
    }
}

/// A fitted mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// Component weights.
    pub weights: Vec<f64>,
    /// Means, `components × d`.
    pub means: Vec<f64>,
    /// Diagonal variances, `components × d`.
    pub variances: Vec<f64>,
    /// P(label = code | component), `components × classes`.
    pub label_probs: Vec<f64>,
    /// P(prediction = code | component), `components × classes`.
    pub prediction_probs: Vec<f64>,
    /// Coordinates per row.
    pub d: usize,
    /// Codes.
    pub classes: usize,
    /// EM iterations run.
    pub iterations: usize,
    /// Whether the log-likelihood settled before `max_iter`.
    pub converged: bool,
    /// Mean log-likelihood at the last E-step (sklearn's `lower_bound_`).
    pub lower_bound: f64,
}

/// Smoothing of the categorical distributions, so that a code a component has never seen
/// is very unlikely rather than impossible.
const CATEGORICAL_FLOOR: f64 = 1e-6;

impl Mixture {
    /// Number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// The weighted log joint of row `i` under each component, into `out`.
    fn log_joint(&self, data: &MixtureData, i: usize, settings: &MixtureSettings, cache: &[f64], out: &mut [f64]) {
        let (d, x) = (self.d, data.row(i));
        for (c, slot) in out.iter_mut().enumerate() {
            let mean = &self.means[c * d..][..d];
            let precision = &cache[c * (d + 1)..][..d];
            let mut squared = 0.0;
            for ((&xv, &m), &p) in x.iter().zip(mean).zip(precision) {
                let diff = xv - m;
                squared += diff * diff * p;
            }
            let mut lp = cache[c * (d + 1) + d] - 0.5 * squared;
            if settings.label_weight != 0.0 {
                lp += settings.label_weight * self.label_probs[c * self.classes + data.labels[i] as usize].ln();
            }
            if settings.prediction_weight != 0.0 {
                lp += settings.prediction_weight
                    * self.prediction_probs[c * self.classes + data.predictions[i] as usize].ln();
            }
            *slot = lp;
        }
    }

    /// Per component: the precisions, then `ln w − ½(d ln 2π + Σ ln σ²)`.
    fn cache(&self) -> Vec<f64> {
        let d = self.d;
        let mut cache = Vec::with_capacity(self.components() * (d + 1));
        for c in 0..self.components() {
            let variances = &self.variances[c * d..][..d];
            cache.extend(variances.iter().map(|v| 1.0 / v));
            let log_det: f64 = variances.iter().map(|v| v.ln()).sum();
            cache.push(self.weights[c].ln() - 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det));
        }
        cache
    }

    /// E-step: responsibilities (`n × components`) and the mean log-likelihood.
    fn responsibilities(&self, data: &MixtureData, settings: &MixtureSettings) -> (Vec<f64>, f64) {
        let k = self.components();
        let cache = self.cache();
        let mut resp = vec![0.0; data.len() * k];
        // Fixed chunks summed in order: the same bits on every run, however rayon splits.
        let partial: Vec<f64> = resp
            .par_chunks_mut(k * 256)
            .enumerate()
            .map(|(chunk, out)| {
                let mut sum = 0.0;
                for (j, row) in out.chunks_mut(k).enumerate() {
                    self.log_joint(data, chunk * 256 + j, settings, &cache, row);
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let norm = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    row.iter_mut().for_each(|v| *v = (*v - norm).exp());
                    sum += norm;
                }
                sum
            })
            .collect();
        (resp, partial.iter().sum::<f64>() / data.len() as f64)
    }

    /// The most likely component of each row (labels and prediction included).
    pub fn assign(&self, data: &MixtureData, settings: &MixtureSettings) -> Vec<usize> {
        let cache = self.cache();
        (0..data.len())
            .into_par_iter()
            .map_init(
                || vec![0.0; self.components()],
                |row, i| {
                    self.log_joint(data, i, settings, &cache, row);
                    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0)
                },
            )
            .collect()
    }

    /// M-step: the parameters that maximise the expected log-likelihood under `resp`
    /// (scikit-learn's `_estimate_gaussian_parameters` for the Gaussians).
    fn from_responsibilities(data: &MixtureData, resp: &[f64], k: usize, reg_covar: f64) -> Mixture {
        let (d, classes) = (data.d, data.classes);
        // Per component: Σr, Σr·x, Σr·x², Σr·[label], Σr·[prediction].
        let width = 1 + 2 * d + 2 * classes;
        // Per chunk of 1,024 rows, then the chunks in order: deterministic sums.
        let chunks: Vec<Vec<f64>> = (0..data.len().div_ceil(1024))
            .into_par_iter()
            .map(|chunk| {
                let mut acc = vec![0.0; k * width];
                for i in chunk * 1024..((chunk + 1) * 1024).min(data.len()) {
                    let x = data.row(i);
                    for c in 0..k {
                        let r = resp[i * k + c];
                        if r == 0.0 {
                            continue;
                        }
                        let s = &mut acc[c * width..][..width];
                        s[0] += r;
                        for j in 0..d {
                            s[1 + j] += r * x[j];
                            s[1 + d + j] += r * x[j] * x[j];
                        }
                        s[1 + 2 * d + data.labels[i] as usize] += r;
                        s[1 + 2 * d + classes + data.predictions[i] as usize] += r;
                    }
                }
                acc
            })
            .collect();
        let mut sums = vec![0.0; k * width];
        for chunk in chunks {
            sums.iter_mut().zip(chunk).for_each(|(a, b)| *a += b);
        }
        let mut mixture = Mixture {
            weights: Vec::with_capacity(k),
            means: Vec::with_capacity(k * d),
            variances: Vec::with_capacity(k * d),
            label_probs: Vec::with_capacity(k * classes),
            prediction_probs: Vec::with_capacity(k * classes),
            d,
            classes,
            iterations: 0,
            converged: false,
            lower_bound: f64::NEG_INFINITY,
        };
        for c in 0..k {
            let s = &sums[c * width..][..width];
            // As sklearn: 10 machine epsilons keep an empty component's divisions finite.
            let nk = s[0] + 10.0 * f64::EPSILON;
            mixture.weights.push(nk);
            for j in 0..d {
                let mean = s[1 + j] / nk;
                mixture.means.push(mean);
                mixture.variances.push((s[1 + d + j] / nk - mean * mean).max(0.0) + reg_covar);
            }
            let floor = CATEGORICAL_FLOOR * classes as f64;
            for code in 0..classes {
                mixture.label_probs.push((s[1 + 2 * d + code] + CATEGORICAL_FLOOR) / (nk + floor));
                mixture.prediction_probs.push((s[1 + 2 * d + classes + code] + CATEGORICAL_FLOOR) / (nk + floor));
            }
        }
        let total: f64 = mixture.weights.iter().sum();
        mixture.weights.iter_mut().for_each(|w| *w /= total);
        mixture
    }
}

/// Runs EM from `initial` (sklearn's loop: E-step, M-step, stop when the mean
/// log-likelihood of the E-step changed by less than `tol`).
pub fn run_em(data: &MixtureData, mut mixture: Mixture, settings: &MixtureSettings) -> Mixture {
    let k = mixture.components();
    let mut lower_bound = f64::NEG_INFINITY;
    let mut converged = false;
    let mut iterations = 0;
    for _ in 0..settings.max_iter {
        iterations += 1;
        let previous = lower_bound;
        let (resp, mean_log_likelihood) = mixture.responsibilities(data, settings);
        mixture = Mixture::from_responsibilities(data, &resp, k, settings.reg_covar);
        lower_bound = mean_log_likelihood;
        if (lower_bound - previous).abs() < settings.tol {
            converged = true;
            break;
        }
    }
    Mixture { iterations, converged, lower_bound, ..mixture }
}

/// Fits the error-aware mixture: Domino's initialisation, then EM.
pub fn fit_mixture(data: &MixtureData, settings: &MixtureSettings) -> Mixture {
    let k = settings.components.min(data.len()).max(1);
    let resp = if data.classes * data.classes <= k {
        confusion_init(data, k, settings.seed)
    } else {
        error_cells_init(data, k, settings.seed)
    };
    let initial = Mixture::from_responsibilities(data, &resp, k, settings.reg_covar);
    run_em(data, initial, settings)
}

/// Domino's `init_params="confusion"`: component `c` starts as confusion cell
/// `c mod classes²` (label × prediction), plus a little seeded noise that breaks ties.
fn confusion_init(data: &MixtureData, k: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let cells = data.classes * data.classes;
    let mut resp = vec![0.0; data.len() * k];
    for i in 0..data.len() {
        let cell = data.labels[i] as usize * data.classes + data.predictions[i] as usize;
        let row = &mut resp[i * k..][..k];
        for (c, r) in row.iter_mut().enumerate() {
            *r = f64::from(u8::from(c % cells == cell)) + 1e-3 * rng.random::<f64>();
        }
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|r| *r /= sum);
    }
    resp
}

/// When the confusion cells do not fit into the components: the largest cells of errors
/// (label × prediction among wrong rows; at least 5 rows and 0.2% of them) start one
/// component each, up to half of the components, and seeded k-means on the other rows
/// starts the rest. Domino would fall back to plain k-means here, which with many classes
/// rarely gives a rare confusion a component of its own; a failure is what we look for.
fn error_cells_init(data: &MixtureData, k: usize, seed: u64) -> Vec<f64> {
    let n = data.len();
    let mut cells: std::collections::BTreeMap<(u32, u32), Vec<usize>> = Default::default();
    for i in (0..n).filter(|&i| data.wrong[i]) {
        cells.entry((data.labels[i], data.predictions[i])).or_default().push(i);
    }
    let mut cells: Vec<Vec<usize>> =
        cells.into_values().filter(|rows| rows.len() >= 5 && rows.len() as f64 >= 0.002 * n as f64).collect();
    cells.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    cells.truncate(k / 2);
    let mut resp = vec![0.0; n * k];
    let mut taken = vec![false; n];
    for (c, rows) in cells.iter().enumerate() {
        for &i in rows {
            resp[i * k + c] = 1.0;
            taken[i] = true;
        }
    }
    let rest: Vec<usize> = (0..n).filter(|&i| !taken[i]).collect();
    let clusters = (k - cells.len()).min(rest.len());
    if clusters > 0 {
        for (&i, cluster) in rest.iter().zip(kmeans(data, &rest, clusters, seed)) {
            resp[i * k + cells.len() + cluster] = 1.0;
        }
    }
    resp
}

/// Seeded k-means (k-means++ seeding, 10 Lloyd rounds) of the `rows` of `data`, on the
/// coordinates scaled to unit total variance plus one-hot label and prediction: each
/// row's cluster.
fn kmeans(data: &MixtureData, rows: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let (m, d) = (rows.len(), data.d);
    let mut rng = StdRng::seed_from_u64(seed);
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|&i| data.row(i)[j]).sum::<f64>() / m as f64).collect();
    let variance: f64 =
        rows.iter().map(|&i| data.row(i).iter().zip(&mean).map(|(x, c)| (x - c) * (x - c)).sum::<f64>()).sum::<f64>()
            / m as f64;
    let scale = if variance > 0.0 { 1.0 / variance.sqrt() } else { 1.0 };
    // A centre: scaled coordinates, label shares, prediction shares.
    type Centre = (Vec<f64>, Vec<f64>, Vec<f64>);
    let distance = |i: usize, centre: &Centre| -> f64 {
        let mut sum: f64 = data.row(i).iter().zip(&centre.0).map(|(x, c)| (x * scale - c) * (x * scale - c)).sum();
        for code in 0..data.classes {
            let l = f64::from(u8::from(data.labels[i] as usize == code)) - centre.1[code];
            let p = f64::from(u8::from(data.predictions[i] as usize == code)) - centre.2[code];
            sum += l * l + p * p;
        }
        sum
    };
    let point = |i: usize| -> Centre {
        let mut labels = vec![0.0; data.classes];
        let mut predictions = vec![0.0; data.classes];
        labels[data.labels[i] as usize] = 1.0;
        predictions[data.predictions[i] as usize] = 1.0;
        (data.row(i).iter().map(|x| x * scale).collect(), labels, predictions)
    };
    // k-means++ seeding.
    let mut centres = vec![point(rows[rng.random_range(0..m)])];
    let mut nearest: Vec<f64> = rows.par_iter().map(|&i| distance(i, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            nearest.iter().position(|&w| {
                target -= w;
                target <= 0.0
            })
        } else {
            None
        }
        .unwrap_or(centres.len() % m);
        centres.push(point(rows[next]));
        let centre = centres.last().expect("just pushed");
        let fresh: Vec<f64> = rows.par_iter().map(|&i| distance(i, centre)).collect();
        nearest.iter_mut().zip(fresh).for_each(|(a, b)| *a = a.min(b));
    }
    let mut assignment = vec![0usize; m];
    for _ in 0..10 {
        assignment = rows
            .par_iter()
            .map(|&i| {
                // One distance per centre (min_by would compute each twice).
                (0..k).map(|c| (distance(i, &centres[c]), c)).min_by(|a, b| a.0.total_cmp(&b.0)).map_or(0, |m| m.1)
            })
            .collect();
        let mut sums = vec![(vec![0.0; d], vec![0.0; data.classes], vec![0.0; data.classes], 0usize); k];
        for (&i, &c) in rows.iter().zip(&assignment) {
            let p = point(i);
            let s = &mut sums[c];
            s.0.iter_mut().zip(&p.0).for_each(|(a, b)| *a += b);
            s.1.iter_mut().zip(&p.1).for_each(|(a, b)| *a += b);
            s.2.iter_mut().zip(&p.2).for_each(|(a, b)| *a += b);
            s.3 += 1;
        }
        for (centre, (x, l, p, count)) in centres.iter_mut().zip(sums) {
            if count > 0 {
                let scale = 1.0 / count as f64;
                *centre = (
                    x.iter().map(|v| v * scale).collect(),
                    l.iter().map(|v| v * scale).collect(),
                    p.iter().map(|v| v * scale).collect(),
                );
            }
        }
    }
    assignment
}

/// What embedding discovery sees of the scored images.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingTable<'a> {
    /// Row-major vectors, `dim` per scored image (zeros where it has none).
    pub vectors: &'a [f32],
    /// Vector length.
    pub dim: usize,
    /// Whether each image has a vector.
    pub has_vector: &'a [bool],
    /// Each image's label (None: no label).
    pub labels: &'a [Option<String>],
    /// Each image's predicted label, for classification runs.
    pub predictions: Option<&'a [Option<String>]>,
    /// Each image's error.
    pub errors: &'a [f64],
}

impl EmbeddingTable<'_> {
    fn vector(&self, r: usize) -> &[f32] {
        &self.vectors[r * self.dim..][..self.dim]
    }
}

/// A component turned into a rule over the images' vectors and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSlice {
    /// The mixture component it came from.
    pub component: usize,
    /// The label condition, when one label holds most of the component.
    pub label: Option<String>,
    /// The unit centroid, rounded as it is written into the query.
    pub centroid: Vec<f32>,
    /// Members have at least this cosine similarity to the centroid.
    pub threshold: f64,
    /// Domino's gap of the component.
    pub gap: f64,
    /// Images of the component in the fitting sample.
    pub sample_members: usize,
    /// How well the rule reproduces the component on the sample (F1).
    pub agreement: f64,
    /// Members among all scored images.
    pub rows: Bitmap,
}

/// What embedding discovery found, with how it got there.
#[derive(Debug, Clone)]
pub struct EmbeddingSearch {
    /// Candidates, largest gap first.
    pub slices: Vec<EmbeddingSlice>,
    /// Rows the PCA and mixture were fitted on.
    pub sample: usize,
    /// PCA dimensions.
    pub pca_components: usize,
    /// Share of the variance they keep.
    pub explained_variance_ratio: f64,
    /// Mixture components.
    pub components: usize,
    /// EM iterations.
    pub iterations: usize,
    /// Whether EM converged.
    pub converged: bool,
}

/// Finds up to `max_slices` candidate slices in the vectors of the `discovery` rows.
pub fn search(
    table: &EmbeddingTable,
    discovery: &[usize],
    max_slices: usize,
    min_support: u64,
    seed: u64,
) -> Option<EmbeddingSearch> {
    let n = table.errors.len();
    let mut sample: Vec<usize> = discovery.iter().copied().filter(|&r| table.has_vector[r]).collect();
    if sample.len() < 3 {
        return None;
    }
    if sample.len() > SAMPLE_ROWS {
        sample.shuffle(&mut StdRng::seed_from_u64(seed));
        sample.truncate(SAMPLE_ROWS);
        sample.sort_unstable();
    }
    let rows: Vec<&[f32]> = sample.iter().map(|&r| table.vector(r)).collect();
    let pca = Pca::fit(&rows, PCA_COMPONENTS);
    let points = pca.transform(&rows);

    // One code space for labels and predictions, so the gap compares the same class.
    let mut names: Vec<&str> = table.labels.iter().flatten().map(String::as_str).collect();
    if let Some(predictions) = table.predictions {
        names.extend(predictions.iter().flatten().map(String::as_str));
    }
    names.sort_unstable();
    names.dedup();
    let null_code = names.len() as u32;
    let code = |name: &Option<String>| -> u32 {
        name.as_deref().and_then(|n| names.binary_search(&n).ok()).map_or(null_code, |c| c as u32)
    };
    let mean_error = sample.iter().map(|&r| table.errors[r]).sum::<f64>() / sample.len() as f64;
    let labels: Vec<u32> = sample.iter().map(|&r| code(&table.labels[r])).collect();
    let (predictions, classes): (Vec<u32>, usize) = match table.predictions {
        Some(predictions) => (sample.iter().map(|&r| code(&predictions[r])).collect(), names.len() + 1),
        // Without a predicted label the second distribution is over "right / wrong".
        None => (sample.iter().map(|&r| u32::from(table.errors[r] > mean_error)).collect(), (names.len() + 1).max(2)),
    };
    let wrong: Vec<bool> = sample.iter().map(|&r| table.errors[r] > mean_error).collect();
    let data = MixtureData {
        points: &points,
        d: pca.len(),
        labels: &labels,
        predictions: &predictions,
        classes,
        wrong: &wrong,
    };
    let settings = MixtureSettings { seed, ..Default::default() };
    let mixture = fit_mixture(&data, &settings);
    let assignment = mixture.assign(&data, &settings);

    // A component must be big enough, scaled from the sample to the discovery half, to
    // reach half the minimum support (its rule may take in more images than it).
    let with_vectors = discovery.iter().filter(|&&r| table.has_vector[r]).count();
    let scale = with_vectors as f64 / sample.len() as f64;
    let mut candidates: Vec<(usize, f64)> = (0..mixture.components())
        .filter_map(|c| {
            let members = assignment.iter().filter(|&&a| a == c).count();
            (members >= 2 && members as f64 * scale * 2.0 >= min_support as f64).then_some(())?;
            let gap = match table.predictions {
                Some(_) => {
                    let label = &mixture.label_probs[c * classes..][..classes];
                    let predicted = &mixture.prediction_probs[c * classes..][..classes];
                    0.5 * label.iter().zip(predicted).map(|(a, b)| (a - b).abs()).sum::<f64>()
                }
                None => {
                    let errors: f64 =
                        sample.iter().zip(&assignment).filter(|(_, a)| **a == c).map(|(&r, _)| table.errors[r]).sum();
                    errors / members as f64 - mean_error
                }
            };
            (gap > 0.0).then_some((c, gap))
        })
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.truncate(max_slices);

    let slices =
        candidates.into_iter().filter_map(|(c, gap)| rule_for(table, &sample, &assignment, c, gap, n)).collect();
    Some(EmbeddingSearch {
        slices,
        sample: sample.len(),
        pca_components: pca.len(),
        explained_variance_ratio: pca.explained_variance_ratio(),
        components: mixture.components(),
        iterations: mixture.iterations,
        converged: mixture.converged,
    })
}

/// Decimal places of the centroid written into a query.
const CENTROID_DECIMALS: i32 = 5;

/// The rule (dominant label, cosine to the centroid ≥ threshold) that best reproduces
/// component `c` on the sample, and its members among all `n` rows.
fn rule_for(
    table: &EmbeddingTable,
    sample: &[usize],
    assignment: &[usize],
    c: usize,
    gap: f64,
    n: usize,
) -> Option<EmbeddingSlice> {
    let members: Vec<usize> = sample.iter().zip(assignment).filter(|(_, a)| **a == c).map(|(&r, _)| r).collect();
    if members.is_empty() {
        return None;
    }
    // Dominant label.
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for &r in &members {
        if let Some(label) = &table.labels[r] {
            *counts.entry(label.as_str()).or_default() += 1;
        }
    }
    let label = counts
        .iter()
        .max_by_key(|(_, count)| **count)
        .filter(|(_, count)| **count as f64 >= DOMINANT_LABEL_SHARE * members.len() as f64)
        .map(|(label, _)| label.to_string());
    // Centroid, unit length, rounded as the query writes it.
    let mut centroid = vec![0.0f64; table.dim];
    for &r in &members {
        centroid.iter_mut().zip(table.vector(r)).for_each(|(a, &v)| *a += f64::from(v));
    }
    let norm = centroid.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        return None;
    }
    let factor = 10f64.powi(CENTROID_DECIMALS);
    let centroid: Vec<f32> = centroid.iter().map(|v| ((v / norm * factor).round() / factor) as f32).collect();
    let label_ok = |r: usize| label.as_deref().is_none_or(|l| table.labels[r].as_deref() == Some(l));

    // Threshold: the best F1 against the component over the sample rows the label admits.
    let mut scored: Vec<(f64, bool)> = sample
        .iter()
        .zip(assignment)
        .filter(|(r, _)| label_ok(**r))
        .map(|(&r, &a)| (f64::from(cosine(table.vector(r), &centroid)), a == c))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = members.iter().filter(|&&r| label_ok(r)).count();
    let (mut best, mut best_at, mut hits) = (0.0, 0usize, 0usize);
    for (i, &(_, member)) in scored.iter().enumerate() {
        hits += usize::from(member);
        let f1 = 2.0 * hits as f64 / (i + 1 + positives) as f64;
        if f1 > best {
            (best, best_at) = (f1, i);
        }
    }
    // The shortest decimal between the chosen score and the next one down, so that the
    // query reads well and a cosine computed elsewhere in float32 falls on the same side.
    let chosen = scored[best_at].0;
    let next = scored.get(best_at + 1).map_or(chosen - 1e-3, |s| s.0);
    let threshold = (2..=9)
        .map(|decimals| {
            let scale = 10f64.powi(decimals);
            (((chosen + next) / 2.0 * scale).floor() / scale, decimals)
        })
        .find(|&(t, _)| t > next && t <= chosen)
        .map_or(chosen, |(t, decimals)| format!("{t:.*}", decimals as usize).parse().unwrap_or(t));
    let member: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|r| table.has_vector[r] && label_ok(r) && f64::from(cosine(table.vector(r), &centroid)) >= threshold)
        .collect();
    let rows = bitmap_from(member);
    Some(EmbeddingSlice {
        component: c,
        label,
        centroid,
        threshold,
        gap,
        sample_members: members.len(),
        agreement: best,
        rows,
    })
}

/// The SQL literal of a centroid: `[0.01234, -0.0561, …]`. Each number is the shortest
/// decimal that reads back as the same float32, which is what `cosine_similarity`
/// computes with.
pub fn centroid_literal(centroid: &[f32]) -> String {
    let values: Vec<String> = centroid.iter().map(|v| format!("{v}")).collect();
    format!("[{}]", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform numbers in [0, 1).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn pca_recovers_the_directions_of_largest_variance() {
        // Points spread 3 : 1 : 0.1 along three orthogonal directions in 5 dimensions.
        let mut u = uniform(1);
        let directions = [[0.6, 0.8, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0], [0.8, -0.6, 0.0, 0.0, 0.0]];
        let rows: Vec<Vec<f32>> = (0..2_000)
            .map(|_| {
                let (a, b, c) = (3.0 * (u() - 0.5), u() - 0.5, 0.1 * (u() - 0.5));
                (0..5).map(|j| (a * directions[0][j] + b * directions[1][j] + c * directions[2][j]) as f32).collect()
            })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let pca = Pca::fit(&refs, 2);
        assert_eq!(pca.len(), 2);
        for (c, direction) in directions.iter().take(2).enumerate() {
            let dot: f64 = pca.components[c * 5..][..5].iter().zip(direction).map(|(a, b)| a * b).sum();
            assert!(dot.abs() > 0.999, "component {c}: {:?}", &pca.components[c * 5..][..5]);
        }
        assert!(pca.explained_variance[0] > 5.0 * pca.explained_variance[1]);
        assert!(pca.explained_variance_ratio() > 0.99);
        let projected = pca.transform(&refs[..1]);
        assert_eq!(projected.len(), 2);
    }

    #[test]
    fn the_mixture_separates_a_confusion_that_looks_alike() {
        // Two labels; images of label 0 near (2, 0) predicted right, a tight group of
        // label 0 near (−2, 0) predicted as 1, label 1 near (0, 2) predicted right.
        let mut u = uniform(2);
        let (mut points, mut labels, mut predictions) = (vec![], vec![], vec![]);
        for i in 0..3_000 {
            let (centre, label, prediction) = match i % 3 {
                0 => ((2.0, 0.0), 0, 0),
                1 => ((-2.0, 0.0), 0, 1),
                _ => ((0.0, 2.0), 1, 1),
            };
            points.extend([centre.0 + 0.3 * (u() - 0.5), centre.1 + 0.3 * (u() - 0.5)]);
            labels.push(label);
            predictions.push(prediction);
        }
        let wrong: Vec<bool> = labels.iter().zip(&predictions).map(|(a, b)| a != b).collect();
        let data = MixtureData {
            points: &points,
            d: 2,
            labels: &labels,
            predictions: &predictions,
            classes: 2,
            wrong: &wrong,
        };
        let settings = MixtureSettings { components: 4, ..Default::default() };
        let mixture = fit_mixture(&data, &settings);
        let assignment = mixture.assign(&data, &settings);
        // Every row of the confused group lands in components whose label and prediction
        // distributions disagree.
        for i in (1..3_000).step_by(3) {
            let c = assignment[i];
            assert!(mixture.label_probs[c * 2] > 0.99 && mixture.prediction_probs[c * 2 + 1] > 0.99, "row {i}");
        }
    }
}
