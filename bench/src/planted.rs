//! Synthetic data with planted failures for the discovery benches: a table of columns with
//! slices whose error rate is raised, and clustered unit vectors with a concept the model
//! gets wrong. Seeded: the same seed gives the same bytes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use rayon::prelude::*;
use slicetest_engine::discovery::embedding::EmbeddingTable;
use slicetest_engine::discovery::{DiscoverOptions, Discovery, EmbeddingInput, discover_table};

/// SplitMix64 of (seed, stream, index): independent uniform draws without state, so rows
/// can be generated in parallel and in any order.
pub fn draw(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(index.wrapping_mul(0x94D0_49BB_1331_11EB));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from [`draw`].
pub fn uniform(seed: u64, stream: u64, index: u64) -> f64 {
    (draw(seed, stream, index) >> 11) as f64 / (1u64 << 53) as f64
}

/// A table for discovery: ids, columns, 0/1 errors, and the rows of each planted slice.
pub struct PlantedTable {
    /// Image ids.
    pub ids: Vec<String>,
    /// `c0` … `c7` (categorical, 3–8 values, as strings `v0`, `v1`, …), `brightness` and
    /// `contrast` (uniform in [0, 1)), `num_people` (0–8).
    pub columns: Vec<(String, ArrayRef)>,
    /// Each row's error.
    pub errors: Vec<f64>,
    /// The planted slice (none without one): its name and which rows it holds.
    pub planted: Vec<(&'static str, Vec<bool>)>,
}

/// Cardinalities of the categorical columns.
const CARDINALITIES: [u64; 8] = [3, 4, 5, 6, 8, 3, 4, 7];

/// The planted slices [`planted_table`] knows.
pub const PLANTED_SLICES: usize = 4;

/// `rows` rows at `base` errors; with `plant = Some(i)`, slice `i` of these has more:
/// - `c0 = v1 AND c1 = v2` (1/12 of the rows) at 40%;
/// - `c3 = v0 AND c4 = v1 AND c5 = v2` (1/144) at 50%;
/// - `0.2 <= brightness < 0.4` (1/5) at 25%;
/// - `c4 = v5 AND c6 = v3 AND c7 = v6` (1/224, 0.45% of the rows) at 44%.
pub fn planted_table(rows: usize, seed: u64, base: f64, plant: Option<usize>) -> PlantedTable {
    let categorical: Vec<Vec<u64>> = CARDINALITIES
        .iter()
        .enumerate()
        .map(|(c, &n)| (0..rows as u64).map(|r| draw(seed, c as u64, r) % n).collect())
        .collect();
    let brightness: Vec<f64> = (0..rows as u64).map(|r| uniform(seed, 20, r)).collect();
    let contrast: Vec<f64> = (0..rows as u64).map(|r| uniform(seed, 21, r)).collect();
    let people: Vec<i64> = (0..rows as u64).map(|r| (draw(seed, 22, r) % 9) as i64).collect();
    let is = |c: usize, v: u64, r: usize| categorical[c][r] == v;
    /// A planted slice: its name, its error rate, and whether a row is in it.
    type Slice<'a> = (&'static str, f64, Box<dyn Fn(usize) -> bool + 'a>);
    let slices: [Slice; 4] = [
        ("c0 = v1 AND c1 = v2", 0.40, Box::new(|r| is(0, 1, r) && is(1, 2, r))),
        ("c3 = v0 AND c4 = v1 AND c5 = v2", 0.50, Box::new(|r| is(3, 0, r) && is(4, 1, r) && is(5, 2, r))),
        ("0.2 <= brightness < 0.4", 0.25, Box::new(|r| (0.2..0.4).contains(&brightness[r]))),
        ("c4 = v5 AND c6 = v3 AND c7 = v6", 0.44, Box::new(|r| is(4, 5, r) && is(6, 3, r) && is(7, 6, r))),
    ];
    let mut planted: Vec<(&'static str, Vec<bool>)> =
        slices.iter().map(|(name, _, member)| (*name, (0..rows).map(member).collect())).collect();
    let errors = (0..rows)
        .map(|r| {
            let rate = match plant {
                Some(i) if (slices[i].2)(r) => slices[i].1,
                _ => base,
            };
            f64::from(u8::from(uniform(seed, 30, r as u64) < rate))
        })
        .collect();
    let mut columns: Vec<(String, ArrayRef)> = categorical
        .iter()
        .enumerate()
        .map(|(c, values)| {
            let strings: Vec<String> = values.iter().map(|v| format!("v{v}")).collect();
            (format!("c{c}"), Arc::new(StringArray::from(strings)) as ArrayRef)
        })
        .collect();
    columns.push(("brightness".into(), Arc::new(Float64Array::from(brightness.clone()))));
    columns.push(("contrast".into(), Arc::new(Float64Array::from(contrast))));
    columns.push(("num_people".into(), Arc::new(Int64Array::from(people))));
    let ids = (0..rows).map(|r| format!("img_{seed}_{r:07}")).collect();
    let planted = match plant {
        Some(i) => vec![planted.swap_remove(i)],
        None => Vec::new(),
    };
    PlantedTable { ids, columns, errors, planted }
}

/// Clustered unit vectors with labels, predictions and errors.
pub struct ClusteredVectors {
    /// Row-major vectors, `dim` per row.
    pub vectors: Vec<f32>,
    /// Vector length.
    pub dim: usize,
    /// Image ids.
    pub ids: Vec<String>,
    /// Labels (`zero` … `nine`).
    pub labels: Vec<Option<String>>,
    /// Predicted labels.
    pub predictions: Vec<Option<String>>,
    /// 0/1 errors.
    pub errors: Vec<f64>,
    /// Whether each row is in the planted concept.
    pub planted: Vec<bool>,
    /// `label` and a `brightness` column that says nothing.
    pub columns: Vec<(String, ArrayRef)>,
}

impl ClusteredVectors {
    /// Discovery over the set with every image embedded (model `synthetic`, no phrases),
    /// as `slicetest discover` runs it once it has read a run.
    pub fn discover(&self, options: &DiscoverOptions) -> slicetest_engine::Result<Discovery> {
        let has_vector = vec![true; self.ids.len()];
        let input = EmbeddingInput {
            table: EmbeddingTable {
                vectors: &self.vectors,
                dim: self.dim,
                has_vector: &has_vector,
                labels: &self.labels,
                predictions: Some(&self.predictions),
                errors: &self.errors,
            },
            model: "synthetic",
            phrases: None,
        };
        discover_table(&self.ids, &self.columns, &self.errors, None, Some(&input), options)
    }
}

/// `rows` unit vectors in `dim` dimensions: 10 labels × `concepts` visual concepts (label
/// direction + 0.7 × concept direction + uniform noise ±`noise` per dimension,
/// normalised), errors at `base` (a random other label predicted); with `plant`, label
/// `three`'s concept 2 is wrong 60% of the time, predicted as `five`.
pub fn clustered_vectors(
    rows: usize,
    dim: usize,
    concepts: usize,
    noise: f32,
    seed: u64,
    base: f64,
    plant: bool,
) -> ClusteredVectors {
    const NAMES: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let direction = |stream: u64| -> Vec<f32> {
        let v: Vec<f32> = (0..dim as u64).map(|j| uniform(seed, stream, j) as f32 * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    };
    let classes: Vec<Vec<f32>> = (0..10).map(|c| direction(100 + c)).collect();
    let concept_dirs: Vec<Vec<f32>> = (0..10 * concepts as u64).map(|c| direction(1_000 + c)).collect();
    // Per row: label, concept, planted, error, prediction.
    let meta: Vec<(usize, usize, bool, bool, usize)> = (0..rows as u64)
        .into_par_iter()
        .map(|r| {
            let label = (draw(seed, 1, r) % 10) as usize;
            let concept = (draw(seed, 2, r) % concepts as u64) as usize;
            let planted = plant && label == 3 && concept == 2;
            let wrong = uniform(seed, 3, r) < if planted { 0.6 } else { base };
            let predicted = match (wrong, planted) {
                (false, _) => label,
                (true, true) => 5,
                (true, false) => (label + 1 + (draw(seed, 4, r) % 9) as usize) % 10,
            };
            (label, concept, planted, wrong, predicted)
        })
        .collect();
    let mut vectors = vec![0.0f32; rows * dim];
    vectors.par_chunks_mut(dim).enumerate().for_each(|(r, v)| {
        let (label, concept, ..) = meta[r];
        for (j, x) in v.iter_mut().enumerate() {
            let jitter = (uniform(seed, 5, (r * dim + j) as u64) as f32 * 2.0 - 1.0) * noise;
            *x = classes[label][j] + 0.7 * concept_dirs[label * concepts + concept][j] + jitter;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
    });
    let labels: Vec<Option<String>> = meta.iter().map(|m| Some(NAMES[m.0].to_string())).collect();
    let columns: Vec<(String, ArrayRef)> = vec![
        ("label".into(), Arc::new(StringArray::from(labels.clone()))),
        (
            "brightness".into(),
            Arc::new(Float64Array::from((0..rows as u64).map(|r| uniform(seed, 6, r)).collect::<Vec<_>>())),
        ),
    ];
    ClusteredVectors {
        vectors,
        dim,
        ids: (0..rows).map(|r| format!("img_{seed}_{r:07}")).collect(),
        labels,
        predictions: meta.iter().map(|m| Some(NAMES[m.4].to_string())).collect(),
        errors: meta.iter().map(|m| f64::from(u8::from(m.3))).collect(),
        planted: meta.iter().map(|m| m.2).collect(),
        columns,
    }
}
