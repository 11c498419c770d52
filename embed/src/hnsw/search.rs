//! Searching one level of the graph: greedy descent (upper levels) and the ef-bounded
//! best-first search (the paper's SEARCH-LAYER), shared by queries and insertion.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::graph::{Graph, neighbours};
use super::space::{Space, prefetch};

/// A node and its similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scored {
    pub score: f32,
    pub id: u32,
}

impl Scored {
    /// Ranking order: higher score first, ties to the lower id (so results are reproducible).
    pub(super) fn rank(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }

    /// Whether `self` ranks before `other`.
    pub(super) fn better(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Less
    }
}

// Heaps order by rank, best first: a `BinaryHeap<Scored>` keeps the worst on top (the
// results kept so far), a `BinaryHeap<Reverse<Scored>>` the best (candidates to expand).
impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which nodes a search has seen: a stamp per node, equal to the current generation when
/// seen. Starting a search bumps the generation instead of clearing (all stamps are
/// cleared once every 255 searches), and each thread keeps its own set across searches.
/// One byte per node keeps the stamps of a million nodes in 1 MB of cache.
#[derive(Default)]
pub(super) struct Visited {
    stamps: Vec<u8>,
    generation: u8,
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::default();
}

impl Visited {
    /// Runs `f` with this thread's set.
    pub(super) fn with<T>(f: impl FnOnce(&mut Visited) -> T) -> T {
        VISITED.with_borrow_mut(f)
    }

    /// Forgets every node, for a search over `rows` nodes.
    fn start(&mut self, rows: usize) {
        if self.stamps.len() < rows {
            self.stamps.resize(rows, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.fill(0);
            self.generation = 1;
        }
    }

    /// Starts loading `id`'s stamp.
    #[inline]
    fn prefetch(&self, id: u32) {
        if let Some(stamp) = self.stamps.get(id as usize) {
            prefetch(stamp);
        }
    }

    /// Marks `id` seen; whether it was new.
    #[inline]
    fn insert(&mut self, id: u32) -> bool {
        let stamp = &mut self.stamps[id as usize];
        let new = *stamp != self.generation;
        *stamp = self.generation;
        new
    }
}

/// A graph over the rows of a matrix.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub graph: &'a Graph,
    pub space: Space<'a>,
}

impl View<'_> {
    /// The node greedy descent reaches from `entry` (on level `top`) down through every
    /// level above `above`: where a search or an insertion on level `above` starts.
    pub(super) fn descend(&self, query: &[f32], entry: u32, top: usize, above: usize) -> Scored {
        let mut nearest = Scored { score: self.space.score(query, entry), id: entry };
        for level in (above + 1..=top).rev() {
            nearest = self.greedy(query, level, nearest);
        }
        nearest
    }

    /// Moves from `start` to a better neighbour on `level` until none is better.
    fn greedy(&self, query: &[f32], level: usize, start: Scored) -> Scored {
        let mut best = start;
        loop {
            let from = best.id;
            let slots = self.graph.slots(level, from);
            neighbours(slots).for_each(|id| self.space.prefetch_row(id));
            self.score_all(query, neighbours(slots), |s| {
                if s.better(&best) {
                    best = s;
                }
            });
            if best.id == from {
                return best;
            }
        }
    }

    /// Scores `ids` against `query`, four rows at a time (their loads overlap, where one
    /// row at a time waits for each in turn; a short last group repeats its first row).
    fn score_all(&self, query: &[f32], ids: impl IntoIterator<Item = u32>, mut each: impl FnMut(Scored)) {
        let mut score_group = |group: &[u32]| {
            let padded = [0, 1, 2, 3].map(|i| group.get(i).copied().unwrap_or(group[0]));
            for (&id, score) in group.iter().zip(self.space.score4(query, padded)) {
                each(Scored { score, id });
            }
        };
        let (mut group, mut len) = ([0u32; 4], 0);
        for id in ids {
            group[len] = id;
            len += 1;
            if len == 4 {
                score_group(&group);
                len = 0;
            }
        }
        if len > 0 {
            score_group(&group[..len]);
        }
    }

    /// The (up to) `ef` best nodes reachable on `level` from `entry`, best first: expands
    /// the best unexpanded candidate until it ranks below the worst of `ef` results.
    pub(super) fn search_layer(
        &self,
        query: &[f32],
        entry: Scored,
        ef: usize,
        level: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let ef = ef.max(1);
        visited.start(self.graph.rows());
        visited.insert(entry.id);
        let mut candidates = BinaryHeap::with_capacity(4 * ef);
        let mut results = BinaryHeap::with_capacity(ef + 1);
        candidates.push(Reverse(entry));
        results.push(entry);
        let mut fresh = Vec::with_capacity(self.graph.capacity(level));
        while let Some(Reverse(c)) = candidates.pop() {
            let worst = *results.peek().expect("holds the entry at least");
            if results.len() >= ef && worst.better(&c) {
                break;
            }
            // The next candidate is likely expanded next: start loading its list.
            if let Some(next) = candidates.peek() {
                self.graph.prefetch_slots(level, next.0.id);
            }
            self.unvisited(level, c.id, visited, &mut fresh);
            self.score_all(query, fresh.iter().copied(), |s| {
                let worst = *results.peek().expect("holds the entry at least");
                if results.len() < ef || s.better(&worst) {
                    candidates.push(Reverse(s));
                    results.push(s);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            });
        }
        results.into_sorted_vec()
    }

    /// Node `id`'s neighbours on `level` not seen yet, marked seen now, into `fresh`.
    fn unvisited(&self, level: usize, id: u32, visited: &mut Visited, fresh: &mut Vec<u32>) {
        let slots = self.graph.slots(level, id);
        // Start loading every neighbour's row (its start, see `Space::prefetch_row`: the
        // hardware streams the rest; prefetching whole f32 rows was measured slower) and
        // stamp before looking at any stamp, so that no load waits for another. Rows seen
        // already were read recently and are mostly in cache, so their prefetch is cheap.
        for n in neighbours(slots) {
            self.space.prefetch_row(n);
            visited.prefetch(n);
        }
        fresh.clear();
        fresh.extend(neighbours(slots).filter(|&n| visited.insert(n)));
    }
}
