//! Approximate nearest neighbours: an HNSW graph (hnsw_rs) over L2-normalised vectors,
//! saved beside the embeddings, extended when new vectors are appended.
//!
//! The index is a cache: its directory holds the graph files and an `index.json`, written
//! last, that says which rows (by a key over their ids and content hashes) the graph
//! covers. Anything missing or not matching is rebuilt, so a crash mid-save costs a
//! rebuild, never a wrong answer.

use std::path::{Path, PathBuf};

use anndists::dist::Distance;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Hnsw};
use serde::{Deserialize, Serialize};

use crate::error::{EmbedError, Result};
use crate::index::dot;

const BASENAME: &str = "graph";
const INDEX_FILE: &str = "index.json";

/// 1 − cosine similarity of unit vectors, never negative (rounding can push a vector's
/// dot product with itself above 1; anndists' `DistDot` asserts on that).
#[derive(Debug, Default, Clone, Copy)]
pub struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// The graph's shape and search effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours per node (M).
    pub m: usize,
    /// Candidates examined while inserting.
    pub ef_construction: usize,
    /// Candidates examined while searching (raised to k when k is larger).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 16, ef_construction: 200, ef_search: 64 }
    }
}

/// What a saved index covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Rows in the graph (the first `rows` vectors of the set it was built from).
    pub rows: usize,
    /// A key over those rows (ids and content), computed by the caller.
    pub key: String,
    /// The graph's parameters.
    pub params: HnswParams,
}

/// An HNSW graph whose node ids are row numbers of a vector matrix.
pub struct HnswIndex {
    graph: Hnsw<'static, f32, CosineDistance>,
    rows: usize,
    params: HnswParams,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex").field("rows", &self.rows).field("params", &self.params).finish()
    }
}

impl HnswIndex {
    /// Builds a graph over every row of `matrix` (row-major, `dim` columns), in parallel.
    pub fn build(matrix: &[f32], dim: usize, params: HnswParams) -> Self {
        let n = matrix.len() / dim.max(1);
        let graph = Hnsw::new(params.m, n.max(1), 16, params.ef_construction, CosineDistance);
        let mut index = HnswIndex { graph, rows: 0, params };
        index.extend(matrix, dim);
        index
    }

    /// Inserts the rows of `matrix` beyond those already in the graph.
    pub fn extend(&mut self, matrix: &[f32], dim: usize) {
        let n = matrix.len() / dim.max(1);
        if n <= self.rows {
            return;
        }
        let rows: Vec<(&[f32], usize)> = (self.rows..n).map(|r| (&matrix[r * dim..(r + 1) * dim], r)).collect();
        self.graph.parallel_insert_slice(&rows);
        self.rows = n;
    }

    /// Rows in the graph.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The graph's parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The (about) `k` nearest rows to `query` with their cosine similarity, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let ef = self.params.ef_search.max(k);
        let mut hits: Vec<(u32, f32)> =
            self.graph.search(query, k, ef).into_iter().map(|n| (n.d_id as u32, 1.0 - n.distance)).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    }

    /// Saves the graph into `dir` (replaced), `record` last.
    pub fn save(&self, dir: &Path, key: &str) -> Result<()> {
        let bad = |message: String| EmbedError::Model { path: dir.to_path_buf(), message };
        let tmp = sibling(dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| bad(format!("creating {}: {e}", tmp.display())))?;
        self.graph.file_dump(&tmp, BASENAME).map_err(|e| bad(format!("saving the index: {e}")))?;
        let record = IndexRecord { rows: self.rows, key: key.to_string(), params: self.params };
        let json = serde_json::to_vec_pretty(&record).expect("serialisable");
        std::fs::write(tmp.join(INDEX_FILE), json).map_err(|e| bad(format!("writing index.json: {e}")))?;
        let old = sibling(dir, "old");
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| bad(format!("replacing: {e}")))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| bad(format!("replacing: {e}")))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// What the index saved in `dir` covers, if there is one.
    pub fn saved_record(dir: &Path) -> Option<IndexRecord> {
        serde_json::from_slice(&std::fs::read(dir.join(INDEX_FILE)).ok()?).ok()
    }

    /// Loads the graph saved in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |message: String| EmbedError::Model { path: dir.to_path_buf(), message };
        let record = Self::saved_record(dir).ok_or_else(|| bad("no index.json".into()))?;
        // hnsw_rs ties a loaded graph's lifetime to its loader; an index lives as long as
        // the session that searches with it, so the (small) loader is kept for good.
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
        let graph = loader.load_hnsw::<f32, CosineDistance>().map_err(|e| bad(format!("loading the index: {e}")))?;
        if graph.get_nb_point() != record.rows {
            return Err(bad(format!("index.json says {} rows, the graph has {}", record.rows, graph.get_nb_point())));
        }
        Ok(HnswIndex { graph, rows: record.rows, params: record.params })
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}-{suffix}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::exact_top_k;

    /// A seeded stream of uniform values in [-1, 1) (a 64-bit LCG's high bits).
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Unit vectors with an 8-dimensional structure (a fixed random map of 8-d latent
    /// points into `dim`): neighbourhoods like real embeddings have. On uniformly random
    /// high-dimensional vectors no graph index can navigate.
    fn structured(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let (mut next, mut fixed) = (uniform(seed), uniform(99));
        let map: Vec<f32> = (0..8 * dim).map(|_| fixed()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let z: Vec<f32> = (0..8).map(|_| next()).collect();
            let mut row = vec![0f32; dim];
            for (zi, m) in z.iter().zip(map.chunks(dim)) {
                row.iter_mut().zip(m).for_each(|(r, m)| *r += zi * m);
            }
            let norm = dot(&row, &row).sqrt();
            out.extend(row.iter().map(|x| x / norm));
        }
        out
    }

    fn recall(index: &HnswIndex, matrix: &[f32], queries: &[f32], dim: usize) -> f64 {
        let mut found = 0;
        for q in queries.chunks(dim) {
            let exact: Vec<u32> = exact_top_k(matrix, dim, q, 10, None).into_iter().map(|h| h.0).collect();
            found += index.search(q, 10).iter().filter(|h| exact.contains(&h.0)).count();
        }
        found as f64 / (queries.len() / dim * 10) as f64
    }

    #[test]
    fn recall_at_10_on_20k_vectors_and_a_saved_extended_index() {
        let dim = 64;
        let matrix = structured(20_000, dim, 1);
        let queries = structured(100, dim, 2);
        let params = HnswParams::default();
        // Built in two steps (the second as when new images were embedded).
        let mut index = HnswIndex::build(&matrix[..15_000 * dim], dim, params);
        index.extend(&matrix, dim);
        assert_eq!(index.rows(), 20_000);
        let r = recall(&index, &matrix, &queries, dim);
        assert!(r >= 0.95, "recall@10 {r}");

        let dir = std::env::temp_dir().join(format!("slicetest-hnsw-{}", std::process::id())).join("index");
        index.save(&dir, "key-1").unwrap();
        assert_eq!(HnswIndex::saved_record(&dir).unwrap().key, "key-1");
        let loaded = HnswIndex::load(&dir).unwrap();
        let q = &queries[..dim];
        assert_eq!(loaded.search(q, 10), index.search(q, 10));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_vector_finds_itself_even_when_rounding_exceeds_one() {
        let v = [0.6f32, 0.8, 0.0];
        assert_eq!(CosineDistance.eval(&v, &v), 0.0f32.max(1.0 - dot(&v, &v)));
        assert!(CosineDistance.eval(&v, &v) >= 0.0);
    }
}
