//! Exact nearest-neighbour search over L2-normalised vectors: cosine similarity is the dot
//! product. The scan is split across threads; each keeps its own top-k in a small heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

/// Dot product with eight independent accumulators, so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Cosine similarity of two vectors of any norm (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norms = (dot(a, a) * dot(b, b)).sqrt();
    if norms == 0.0 { 0.0 } else { dot(a, b) / norms }
}

/// A (row, score) candidate ordered so that the heap's top is the worst kept one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hit(f32, u32);

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: a max-heap of Hit pops the lowest score (ties: the highest row).
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn keep(heap: &mut BinaryHeap<Hit>, hit: Hit, k: usize) {
    if heap.len() < k {
        heap.push(hit);
    } else if heap.peek().is_some_and(|worst| hit < *worst) {
        heap.pop();
        heap.push(hit);
    }
}

/// The `k` rows of `matrix` (row-major, `dim` columns) with the highest dot product with
/// `query`, best first; ties go to the lower row. `rows` restricts the scan to a candidate
/// set (a SQL filter), which makes a filtered top-k exact.
pub fn exact_top_k(matrix: &[f32], dim: usize, query: &[f32], k: usize, rows: Option<&[u32]>) -> Vec<(u32, f32)> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let score = |r: u32| Hit(dot(&matrix[r as usize * dim..][..dim], query), r);
    const CHUNK: usize = 16 * 1024;
    let merge = |mut a: BinaryHeap<Hit>, b: BinaryHeap<Hit>| {
        for hit in b {
            keep(&mut a, hit, k);
        }
        a
    };
    let heap = match rows {
        Some(rows) => rows
            .par_chunks(CHUNK)
            .map(|chunk| {
                chunk.iter().fold(BinaryHeap::new(), |mut h, &r| {
                    keep(&mut h, score(r), k);
                    h
                })
            })
            .reduce(BinaryHeap::new, merge),
        None => {
            let n = (matrix.len() / dim) as u32;
            (0..n.div_ceil(CHUNK as u32))
                .into_par_iter()
                .map(|c| {
                    let start = c * CHUNK as u32;
                    (start..(start + CHUNK as u32).min(n)).fold(BinaryHeap::new(), |mut h, r| {
                        keep(&mut h, score(r), k);
                        h
                    })
                })
                .reduce(BinaryHeap::new, merge)
        }
    };
    // into_sorted_vec is ascending by Ord, which is best score first here.
    heap.into_sorted_vec().into_iter().map(|Hit(s, r)| (r, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dot_and_cosine_on_known_values() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    proptest! {
        /// The top-k equals sorting every score, with and without a candidate filter.
        #[test]
        fn top_k_equals_a_full_sort(
            values in prop::collection::vec(-1.0f32..1.0, 3..600),
            k in 0usize..12,
            keep_every in 1usize..4,
        ) {
            let dim = 3;
            let n = values.len() / dim;
            let matrix = &values[..n * dim];
            let query = [0.3f32, -0.5, 0.8];
            let rows: Vec<u32> = (0..n as u32).filter(|r| (*r as usize).is_multiple_of(keep_every)).collect();
            let mut expected: Vec<(u32, f32)> =
                rows.iter().map(|&r| (r, dot(&matrix[r as usize * dim..][..dim], &query))).collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            expected.truncate(k);
            prop_assert_eq!(exact_top_k(matrix, dim, &query, k, Some(&rows)), expected.clone());
            if keep_every == 1 {
                prop_assert_eq!(exact_top_k(matrix, dim, &query, k, None), expected);
            }
        }
    }
}
