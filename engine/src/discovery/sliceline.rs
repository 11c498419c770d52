//! SliceLine (Sagadeeva & Boehm, SIGMOD 2021): the exact top-k conjunctions of predicates
//! whose rows have the most errors for their size, by lattice enumeration with pruning.
//!
//! A slice is a conjunction of predicates, at most one per column. Its score is
//! `α·(ē_S/ē − 1) − (1−α)·(n/|S| − 1)`: how much worse than average the slice is, minus a
//! penalty for being small. Level ℓ's candidates are joins of two level-(ℓ−1) slices that
//! share ℓ−2 predicates, kept only if every one of their ℓ parents survived, and evaluated
//! with one bitmap per predicate (a child's rows are its parent's AND the new predicate).
//!
//! Pruning keeps the result exact. A slice's descendants are no larger than it, have no
//! more errors and no larger a maximum error, so the best score any of them can reach is a
//! bound computed from those three numbers (see [`score_upper_bound`]). A slice below
//! `min_support` rows, without errors, or whose bound cannot beat the current k-th score
//! (0 until the top-k is full) has no descendant worth generating. Unlike the published
//! code, the bound uses the row count in the size penalty (the paper's code passes the
//! number of one-hot columns, valid but far looser), and the threshold is 0 rather than
//! the lowest score of a top-k that is not full yet.

use std::collections::HashSet;

use rayon::prelude::*;

/// Rows as bits: bit `r % 64` of word `r / 64`.
pub type Bitmap = Vec<u64>;

/// The per-row errors a search runs on: 0/1 misclassification, or a non-negative loss.
#[derive(Debug, Clone)]
pub struct Errors {
    values: Vec<f64>,
    /// The rows with a 1, when every error is 0 or 1 (sums become popcounts).
    binary: Option<Bitmap>,
}

impl Errors {
    /// Errors from per-row values (each finite and ≥ 0).
    pub fn new(values: Vec<f64>) -> Self {
        let binary =
            values.iter().all(|&e| e == 0.0 || e == 1.0).then(|| bitmap_from(values.iter().map(|&e| e == 1.0)));
        Errors { values, binary }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The per-row values.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// (size, error sum, max error) of the rows in `rows`, summing in row order.
    pub fn stats(&self, rows: &Bitmap) -> Stats {
        if let Some(bits) = &self.binary {
            let size: u64 = rows.iter().map(|w| w.count_ones() as u64).sum();
            let errors: u64 = rows.iter().zip(bits).map(|(w, e)| (w & e).count_ones() as u64).sum();
            return Stats { size, errors: errors as f64, max_error: if errors > 0 { 1.0 } else { 0.0 } };
        }
        let (mut size, mut errors, mut max_error) = (0u64, 0.0f64, 0.0f64);
        for (w, &word) in rows.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let row = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                size += 1;
                errors += self.values[row];
                max_error = max_error.max(self.values[row]);
            }
        }
        Stats { size, errors, max_error }
    }
}

/// A bitmap of `n` rows from one bool per row.
pub fn bitmap_from(bits: impl IntoIterator<Item = bool>) -> Bitmap {
    let mut out = Vec::new();
    for (i, bit) in bits.into_iter().enumerate() {
        if i % 64 == 0 {
            out.push(0);
        }
        if bit {
            *out.last_mut().expect("pushed") |= 1 << (i % 64);
        }
    }
    out
}

/// What the search needs of a slice's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Rows in the slice.
    pub size: u64,
    /// Sum of their errors.
    pub errors: f64,
    /// The largest error among them.
    pub max_error: f64,
}

/// A predicate the search may use: which column it constrains, and its rows.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// Index of its column; a slice has at most one predicate per column.
    pub column: usize,
    /// The rows it holds for.
    pub rows: Bitmap,
}

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    /// How many slices to return.
    pub k: usize,
    /// Most predicates in one slice.
    pub max_level: usize,
    /// Fewest rows a slice may have.
    pub min_support: u64,
    /// Weight of the error term against the size term, in (0, 1].
    pub alpha: f64,
}

/// A slice found: its predicates (indices into the search's predicate list, ascending), its
/// rows' statistics and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The conjunction, as predicate indices in ascending order.
    pub predicates: Vec<usize>,
    /// Size, error sum and max error of its rows.
    pub stats: Stats,
    /// SliceLine's score.
    pub score: f64,
}

/// How much work the search did (for the CLI and the benchmarks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchCounts {
    /// Candidates evaluated per level (level 1 first).
    pub evaluated: Vec<usize>,
    /// Candidates dropped by their bounds before evaluation, per level.
    pub pruned: Vec<usize>,
}

/// SliceLine's score of a slice with `stats`, over `n` rows with mean error `mean_error`.
pub fn score(stats: Stats, n: u64, mean_error: f64, alpha: f64) -> f64 {
    let size = stats.size as f64;
    alpha * ((stats.errors / size) / mean_error - 1.0) - (1.0 - alpha) * (n as f64 / size - 1.0)
}

/// The highest score any slice can have whose size is at most `bound.size` (and at least
/// `min_support`), whose errors sum to at most `bound.errors`, each at most
/// `bound.max_error`. For a size s the best case is errors `min(s·max_error, errors)`;
/// the score is increasing in s up to `errors / max_error` and monotone after it, so the
/// maximum over s is at one of `min_support`, `errors / max_error` or `size`.
pub fn score_upper_bound(bound: Stats, min_support: u64, n: u64, mean_error: f64, alpha: f64) -> f64 {
    let min_support = min_support.max(1) as f64;
    if (bound.size as f64) < min_support || bound.errors <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let turn = (bound.errors / bound.max_error).clamp(min_support, bound.size as f64);
    [min_support, turn, bound.size as f64]
        .into_iter()
        .map(|s| {
            let errors = (s * bound.max_error).min(bound.errors);
            alpha * ((errors / s) / mean_error - 1.0) - (1.0 - alpha) * (n as f64 / s - 1.0)
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Orders found slices: higher score first, then fewer predicates, then the predicate
/// indices, so ties resolve the same way every time.
fn rank(a: &Found, b: &Found) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.predicates.len().cmp(&b.predicates.len()))
        .then_with(|| a.predicates.cmp(&b.predicates))
}

/// The best `k` slices found so far.
struct TopK {
    k: usize,
    slices: Vec<Found>,
}

impl TopK {
    fn offer(&mut self, mut found: Vec<Found>) {
        self.slices.append(&mut found);
        self.slices.sort_by(rank);
        self.slices.truncate(self.k);
    }

    /// Scores below this cannot enter: the k-th score once full, else 0 (a slice must
    /// score above 0 to be reported at all).
    fn threshold(&self) -> f64 {
        if self.slices.len() == self.k { self.slices[self.k - 1].score.max(0.0) } else { 0.0 }
    }

    /// Whether a slice bounded by `upper` might still enter (ties with the k-th kept).
    fn may_enter(&self, upper: f64) -> bool {
        upper > 0.0 && upper >= self.threshold()
    }
}

/// A slice of the current level, kept as a parent for the next.
struct Parent {
    predicates: Vec<usize>,
    rows: Bitmap,
    stats: Stats,
}

/// The exact top-k slices over `predicates` (see the module docs).
pub fn search(predicates: &[Predicate], errors: &Errors, settings: SearchSettings) -> (Vec<Found>, SearchCounts) {
    let n = errors.len() as u64;
    let mut counts = SearchCounts::default();
    let mut top = TopK { k: settings.k.max(1), slices: Vec::new() };
    let total: f64 = errors.values().iter().sum();
    if n == 0 || total <= 0.0 || settings.k == 0 || settings.max_level == 0 {
        return (Vec::new(), counts);
    }
    let mean_error = total / n as f64;
    let min_support = settings.min_support.max(1);
    let found = |predicates: Vec<usize>, stats: Stats| Found {
        score: score(stats, n, mean_error, settings.alpha),
        predicates,
        stats,
    };
    let reportable = |f: &Found| f.stats.size >= min_support && f.score > 0.0;

    // Level 1: every predicate.
    let level1: Vec<Parent> = predicates
        .par_iter()
        .enumerate()
        .map(|(i, p)| Parent { predicates: vec![i], rows: p.rows.clone(), stats: errors.stats(&p.rows) })
        .collect();
    counts.evaluated.push(level1.len());
    counts.pruned.push(0);
    top.offer(level1.iter().map(|p| found(p.predicates.clone(), p.stats)).filter(reportable).collect());
    let mut parents = level1;

    for level in 2..=settings.max_level {
        // Parents: slices with enough rows, some error, and a bound that can still enter.
        let threshold_bound = |stats: Stats| score_upper_bound(stats, min_support, n, mean_error, settings.alpha);
        parents
            .retain(|p| p.stats.size >= min_support && p.stats.errors > 0.0 && top.may_enter(threshold_bound(p.stats)));
        if parents.len() < 2 {
            break;
        }
        parents.sort_by(|a, b| a.predicates.cmp(&b.predicates));
        let present: HashSet<&[usize]> = parents.iter().map(|p| p.predicates.as_slice()).collect();

        // Apriori join: two parents with the same first ℓ−2 predicates and last predicates
        // on different columns make a child; all ℓ of its parents must be present.
        let mut candidates: Vec<(usize, usize, Stats)> = Vec::new();
        let mut pruned = 0;
        let mut start = 0;
        while start < parents.len() {
            let prefix = &parents[start].predicates[..level - 2];
            let mut end = start + 1;
            while end < parents.len() && &parents[end].predicates[..level - 2] == prefix {
                end += 1;
            }
            for a in start..end {
                for b in a + 1..end {
                    let (pa, pb) = (
                        *parents[a].predicates.last().expect("level ≥ 1"),
                        *parents[b].predicates.last().expect("level ≥ 1"),
                    );
                    if predicates[pa].column == predicates[pb].column {
                        continue;
                    }
                    if parents[a].predicates[..level - 2].iter().any(|&p| predicates[p].column == predicates[pb].column)
                    {
                        continue;
                    }
                    let mut child: Vec<usize> = parents[a].predicates.clone();
                    child.push(pb);
                    // Every parent (the child without one predicate) must have survived; the
                    // bound takes the smallest of their statistics.
                    let mut bound = Stats { size: u64::MAX, errors: f64::INFINITY, max_error: f64::INFINITY };
                    let mut complete = true;
                    for skip in 0..child.len() {
                        let parent: Vec<usize> =
                            child.iter().enumerate().filter(|&(i, _)| i != skip).map(|(_, &p)| p).collect();
                        match present.get(parent.as_slice()) {
                            Some(_) => {
                                let stats = parents[parents
                                    .binary_search_by(|p| p.predicates.as_slice().cmp(parent.as_slice()))
                                    .expect("present")]
                                .stats;
                                bound.size = bound.size.min(stats.size);
                                bound.errors = bound.errors.min(stats.errors);
                                bound.max_error = bound.max_error.min(stats.max_error);
                            }
                            None => {
                                complete = false;
                                break;
                            }
                        }
                    }
                    if !complete {
                        continue;
                    }
                    if top.may_enter(threshold_bound(bound)) {
                        candidates.push((a, pb, bound));
                    } else {
                        pruned += 1;
                    }
                }
            }
            start = end;
        }
        counts.pruned.push(pruned);
        counts.evaluated.push(candidates.len());
        if candidates.is_empty() {
            break;
        }
        let children: Vec<Parent> = candidates
            .par_iter()
            .map(|&(a, pb, _)| {
                let rows: Bitmap = parents[a].rows.iter().zip(&predicates[pb].rows).map(|(x, y)| x & y).collect();
                let mut child = parents[a].predicates.clone();
                child.push(pb);
                let stats = errors.stats(&rows);
                Parent { predicates: child, rows, stats }
            })
            .collect();
        top.offer(children.iter().map(|c| found(c.predicates.clone(), c.stats)).filter(reportable).collect());
        parents = children;
    }
    (top.slices, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every conjunction (one predicate per column) up to `max_level`, scored: the
    /// definition the lattice search must reproduce.
    fn exhaustive(predicates: &[Predicate], errors: &Errors, settings: SearchSettings) -> Vec<Found> {
        let n = errors.len() as u64;
        let total: f64 = errors.values().iter().sum();
        if total <= 0.0 {
            return Vec::new();
        }
        let mean = total / n as f64;
        let mut all = Vec::new();
        let mut stack: Vec<(Vec<usize>, Bitmap)> =
            predicates.iter().enumerate().map(|(i, p)| (vec![i], p.rows.clone())).collect();
        while let Some((combo, rows)) = stack.pop() {
            let stats = errors.stats(&rows);
            let s = score(stats, n, mean, settings.alpha);
            if stats.size >= settings.min_support.max(1) && s > 0.0 {
                all.push(Found { predicates: combo.clone(), stats, score: s });
            }
            if combo.len() < settings.max_level {
                let last = *combo.last().expect("non-empty");
                for (j, p) in predicates.iter().enumerate().skip(last + 1) {
                    if combo.iter().all(|&c| predicates[c].column != p.column) {
                        let mut next = combo.clone();
                        next.push(j);
                        stack.push((next, rows.iter().zip(&p.rows).map(|(x, y)| x & y).collect()));
                    }
                }
            }
        }
        all.sort_by(rank);
        all.truncate(settings.k);
        all
    }

    /// A table of `columns` categorical columns (each value one predicate), with errors.
    fn table(values: &[Vec<u8>], errors: Vec<f64>) -> (Vec<Predicate>, Errors) {
        let mut predicates = Vec::new();
        for (c, column) in values.iter().enumerate() {
            let mut distinct: Vec<u8> = column.clone();
            distinct.sort();
            distinct.dedup();
            for v in distinct {
                predicates.push(Predicate { column: c, rows: bitmap_from(column.iter().map(|&x| x == v)) });
            }
        }
        (predicates, Errors::new(errors))
    }

    #[test]
    fn a_planted_two_predicate_slice_comes_first() {
        // Errors exactly where column 0 is 1 and column 1 is 2.
        let n = 600;
        let c0: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let c1: Vec<u8> = (0..n).map(|i| ((i / 3) % 4) as u8).collect();
        let c2: Vec<u8> = (0..n).map(|i| ((i * 7) % 5) as u8).collect();
        let errors: Vec<f64> =
            (0..n).map(|i| if c0[i] == 1 && c1[i] == 2 || i % 50 == 0 { 1.0 } else { 0.0 }).collect();
        let (predicates, errors) = table(&[c0, c1, c2], errors);
        let settings = SearchSettings { k: 3, max_level: 3, min_support: 10, alpha: 0.95 };
        let (top, counts) = search(&predicates, &errors, settings);
        assert_eq!(top[0].predicates.iter().map(|&p| predicates[p].column).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(top[0].stats.size, 50);
        assert!(counts.evaluated.len() >= 2, "{counts:?}");
        assert_eq!(top, exhaustive(&predicates, &errors, settings));
    }

    #[test]
    fn nothing_is_found_without_errors_or_with_errors_everywhere() {
        let c0: Vec<u8> = (0..100).map(|i| (i % 4) as u8).collect();
        let (p, e) = table(std::slice::from_ref(&c0), vec![0.0; 100]);
        assert!(search(&p, &e, SearchSettings { k: 5, max_level: 2, min_support: 1, alpha: 0.9 }).0.is_empty());
        let (p, e) = table(&[c0], vec![1.0; 100]);
        // Every slice has the average error: no score above 0.
        assert!(search(&p, &e, SearchSettings { k: 5, max_level: 2, min_support: 1, alpha: 0.9 }).0.is_empty());
    }

    #[test]
    fn the_upper_bound_bounds_every_feasible_slice() {
        let bound = Stats { size: 200, errors: 40.0, max_error: 1.0 };
        let ub = score_upper_bound(bound, 10, 1000, 0.1, 0.9);
        for size in 10..=200u64 {
            for errors in 0..=(size.min(40)) {
                let s = score(Stats { size, errors: errors as f64, max_error: 1.0 }, 1000, 0.1, 0.9);
                assert!(s <= ub + 1e-12, "size {size} errors {errors}: {s} > {ub}");
            }
        }
        assert_eq!(score_upper_bound(Stats { size: 5, ..bound }, 10, 1000, 0.1, 0.9), f64::NEG_INFINITY);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// On random tables of up to 8 columns, the pruned lattice search returns exactly
        /// the exhaustive top-k: same slices, same order, same statistics.
        #[test]
        fn the_search_equals_the_exhaustive_oracle(
            n in 20usize..300,
            cardinalities in prop::collection::vec(1u8..5, 1..=8),
            seed in any::<u64>(),
            error_rate in 0.02f64..0.6,
            loss in any::<bool>(),
            k in 1usize..12,
            max_level in 1usize..4,
            min_support in 1u64..25,
            alpha in 0.5f64..1.0,
        ) {
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let columns: Vec<Vec<u8>> = cardinalities.iter().map(|&c| (0..n).map(|_| (next() % c as u64) as u8).collect()).collect();
            // Errors depend on the first columns a little, so some slices stand out.
            let errors: Vec<f64> = (0..n).map(|i| {
                let lift = if columns[0][i] == 0 { 2.0 } else { 1.0 };
                let u = (next() % 10_000) as f64 / 10_000.0;
                if loss { if u < error_rate * lift { u * 3.0 } else { 0.0 } } else if u < error_rate * lift { 1.0 } else { 0.0 }
            }).collect();
            let (predicates, errors) = table(&columns, errors);
            let settings = SearchSettings { k, max_level, min_support, alpha };
            let (found, _) = search(&predicates, &errors, settings);
            prop_assert_eq!(found, exhaustive(&predicates, &errors, settings));
        }
    }
}
