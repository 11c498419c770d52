//! The graph's memory layout, after FAISS's `HNSW`: level 0 (every node) is one flat array
//! of `2·M` neighbour slots per node; each upper level (reached by about one node in M of
//! the level below) is the ascending ids of its nodes with `M` slots each. Empty slots hold
//! [`NONE`] and come last, so a node's neighbours are its slots up to the first empty one.
//!
//! Slots are atomics so that the threads of a batch insertion can write lists through a
//! shared graph (each list by one thread; see `build`). Relaxed loads and stores compile
//! to plain ones.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::space::{prefetch, with_huge_pages};

/// An empty neighbour slot (and "no entry point").
pub(super) const NONE: u32 = u32::MAX;

/// Levels stop here (a node reaches level 16 with probability M^-16).
pub(super) const MAX_LEVEL: usize = 16;

/// The HNSW graph over rows `0..rows()` of a matrix.
pub(super) struct Graph {
    /// Neighbours per node on the upper levels; twice as many on level 0.
    pub m: usize,
    /// Level 0: `2·m` slots per node.
    pub level0: Vec<AtomicU32>,
    /// Levels 1, 2, …: `upper[l - 1]` is level l.
    pub upper: Vec<Level>,
    /// Where searches start: a node of the top level ([`NONE`] while empty).
    pub entry: u32,
}

/// One upper level.
#[derive(Default)]
pub(super) struct Level {
    /// Its nodes, ascending.
    pub nodes: Vec<u32>,
    /// `m` slots per node, in the order of `nodes`.
    pub links: Vec<AtomicU32>,
}

impl Graph {
    pub(super) fn new(m: usize) -> Self {
        Graph { m, level0: Vec::new(), upper: Vec::new(), entry: NONE }
    }

    /// Nodes in the graph (including any added by [`Graph::grow`] and not linked yet).
    pub(super) fn rows(&self) -> usize {
        self.level0.len() / (2 * self.m)
    }

    /// The highest level.
    pub(super) fn top(&self) -> usize {
        self.upper.len()
    }

    /// Neighbour slots a node has on `level`.
    pub(super) fn capacity(&self, level: usize) -> usize {
        if level == 0 { 2 * self.m } else { self.m }
    }

    /// Node `id`'s neighbour slots on `level` (none when it does not reach that level).
    #[inline]
    pub(super) fn slots(&self, level: usize, id: u32) -> &[AtomicU32] {
        if level == 0 {
            let width = 2 * self.m;
            return &self.level0[id as usize * width..][..width];
        }
        let level = &self.upper[level - 1];
        match level.nodes.binary_search(&id) {
            Ok(i) => &level.links[i * self.m..][..self.m],
            Err(_) => &[],
        }
    }

    /// Starts loading node `id`'s level-0 slots (upper levels are small and cached).
    #[inline]
    pub(super) fn prefetch_slots(&self, level: usize, id: u32) {
        if level == 0 {
            let slots = self.slots(0, id);
            prefetch(slots.as_ptr());
            prefetch(slots[slots.len() - 1..].as_ptr());
        }
    }

    /// Adds nodes `rows()..rows() + levels.len()`, the i-th reaching `levels[i]`, with no
    /// neighbours yet.
    pub(super) fn grow(&mut self, levels: &[usize]) {
        let first = self.rows();
        let slots = (first + levels.len()) * 2 * self.m;
        if slots > self.level0.capacity() {
            let mut level0 = with_huge_pages(slots);
            level0.append(&mut self.level0);
            self.level0 = level0;
        }
        self.level0.resize_with(slots, || AtomicU32::new(NONE));
        for (i, &top) in levels.iter().enumerate() {
            if self.upper.len() < top {
                self.upper.resize_with(top, Level::default);
            }
            for level in &mut self.upper[..top] {
                level.nodes.push((first + i) as u32);
                level.links.resize_with(level.nodes.len() * self.m, || AtomicU32::new(NONE));
            }
        }
    }

    /// Bytes the graph takes in memory (the vectors are not part of it).
    pub(super) fn bytes(&self) -> usize {
        let slot = size_of::<AtomicU32>();
        self.level0.len() * slot
            + self.upper.iter().map(|l| l.nodes.len() * size_of::<u32>() + l.links.len() * slot).sum::<usize>()
    }
}

/// The ids in a node's neighbour slots.
#[inline]
pub(super) fn neighbours(slots: &[AtomicU32]) -> impl Iterator<Item = u32> + '_ {
    slots.iter().map(|s| s.load(Relaxed)).take_while(|&id| id != NONE)
}

/// Node `id`'s level: floor(−ln U · 1/ln M) for a uniform U drawn from a seeded hash of the
/// id, so that a graph's levels do not depend on how its rows were split between build
/// and extend calls.
pub(super) fn random_level(id: u32, m: usize) -> usize {
    let u = (splitmix64(u64::from(id) ^ 0x5EED_0F1E_7E15) >> 11) as f64 / (1u64 << 53) as f64;
    let mult = 1.0 / (m.max(2) as f64).ln();
    ((-(1.0 - u).ln() * mult) as usize).min(MAX_LEVEL)
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_node_in_m_reaches_each_next_level() {
        let levels: Vec<usize> = (0..100_000).map(|id| random_level(id, 16)).collect();
        let at_least = |l: usize| levels.iter().filter(|&&x| x >= l).count() as f64;
        assert!((at_least(1) / 100_000.0 - 1.0 / 16.0).abs() < 0.005, "{}", at_least(1));
        assert!((at_least(2) / at_least(1) - 1.0 / 16.0).abs() < 0.02, "{}", at_least(2));
    }
}
