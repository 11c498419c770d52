//! Insertion, as in the paper (INSERT with SELECT-NEIGHBORS-HEURISTIC) and FAISS's
//! `HNSW::add_with_locks`: descend greedily to the new node's level, then on each level
//! down to 0 search `efConstruction` candidates, keep a diverse subset as its neighbours
//! and link them back, re-pruning a neighbour's list when it overflows.
//!
//! Nodes are inserted in parallel (rayon). Each node has a lock, held only while its own
//! list is written, one lock at a time (so no deadlock); lists are read without locks
//! (see `graph`). New nodes go in level by level, highest first, each level's nodes in a
//! seeded shuffle (FAISS does the same): the first one may raise the top level and is
//! inserted alone, after which the entry point is fixed for the rest.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;

use super::graph::{Graph, NONE, neighbours, random_level, splitmix64};
use super::search::{Scored, View, Visited};
use super::space::Space;

/// Links rows `graph.rows()..space.rows()` of `space` into `graph`.
pub(super) fn extend(graph: &mut Graph, space: Space, ef_construction: usize) {
    let first = graph.rows();
    if space.rows() <= first {
        return;
    }
    let levels: Vec<usize> = (first..space.rows()).map(|id| random_level(id as u32, graph.m)).collect();
    let level_of = |id: u32| levels[id as usize - first];
    let old_top = graph.top();
    graph.grow(&levels);
    let order = insertion_order(first, &levels);
    let head = order[0][0];
    let inserter = Inserter {
        view: View { graph, space },
        locks: (0..space.rows()).map(|_| Mutex::new(())).collect(),
        ef: ef_construction,
    };
    let entry = if graph.entry == NONE {
        head
    } else {
        inserter.insert(head, level_of(head), graph.entry, old_top);
        if level_of(head) > old_top { head } else { graph.entry }
    };
    let top = graph.top();
    for group in &order {
        group.par_iter().filter(|&&id| id != head).for_each(|&id| inserter.insert(id, level_of(id), entry, top));
    }
    graph.entry = entry;
}

/// The new nodes `first..`, grouped by level, highest first, each group shuffled.
fn insertion_order(first: usize, levels: &[usize]) -> Vec<Vec<u32>> {
    let top = levels.iter().copied().max().unwrap_or(0);
    let mut groups = vec![Vec::new(); top + 1];
    for (i, &level) in levels.iter().enumerate() {
        groups[level].push((first + i) as u32);
    }
    // Rows arrive in storage order (often by folder or class); shuffling keeps the
    // threads' concurrent insertions spread over the whole collection.
    let mut state = first as u64;
    for group in &mut groups {
        for i in (1..group.len()).rev() {
            state = splitmix64(state);
            group.swap(i, (state % (i as u64 + 1)) as usize);
        }
    }
    groups.retain(|g| !g.is_empty());
    groups.reverse();
    groups
}

struct Inserter<'a> {
    view: View<'a>,
    /// One per node.
    locks: Vec<Mutex<()>>,
    ef: usize,
}

impl Inserter<'_> {
    fn lock(&self, id: u32) -> MutexGuard<'_, ()> {
        self.locks[id as usize].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Links node `id` (reaching `level`) into the graph whose searches start at `entry`
    /// on level `top`.
    fn insert(&self, id: u32, level: usize, entry: u32, top: usize) {
        let (graph, space) = (self.view.graph, self.view.space);
        let query = space.row(id);
        let mut nearest = self.view.descend(query, entry, top, level);
        Visited::with(|visited| {
            for l in (0..=level.min(top)).rev() {
                let found = self.view.search_layer(query, nearest, self.ef, l, visited, id);
                nearest = found[0];
                let chosen = select(space, found, graph.capacity(l));
                {
                    let _own = self.lock(id);
                    chosen.iter().for_each(|c| self.add_link(id, c.id, l));
                }
                for c in &chosen {
                    let _theirs = self.lock(c.id);
                    self.add_link(c.id, id, l);
                }
            }
        });
    }

    /// Adds `to` to `from`'s neighbours on `level` (the caller holds `from`'s lock): into a
    /// free slot, else the heuristic picks among the old neighbours and `to`.
    fn add_link(&self, from: u32, to: u32, level: usize) {
        if from == to {
            return;
        }
        let (graph, space) = (self.view.graph, self.view.space);
        let slots = graph.slots(level, from);
        let mut len = 0;
        for id in neighbours(slots) {
            if id == to {
                return;
            }
            len += 1;
        }
        if let Some(free) = slots.get(len) {
            free.store(to, Relaxed);
            return;
        }
        let base = space.row(from);
        let mut candidates: Vec<Scored> =
            neighbours(slots).chain([to]).map(|id| Scored { score: space.score(base, id), id }).collect();
        candidates.sort_by(Scored::rank);
        let kept = select(space, candidates, slots.len());
        for (i, slot) in slots.iter().enumerate() {
            slot.store(kept.get(i).map_or(NONE, |k| k.id), Relaxed);
        }
    }
}

/// The neighbour-selection heuristic (the paper's Algorithm 4, FAISS's
/// `shrink_neighbor_list`): from `candidates` (best first, scored against the base node),
/// keeps a candidate only if it is closer to the base than to every candidate kept before
/// it, up to `max`. Links then point in diverse directions, which keeps clusters connected.
/// Fewer than `max` candidates are all kept.
fn select(space: Space, candidates: Vec<Scored>, max: usize) -> Vec<Scored> {
    if candidates.len() < max {
        return candidates;
    }
    let mut kept: Vec<Scored> = Vec::with_capacity(max);
    for c in candidates {
        if kept.iter().all(|k| space.between(k.id, c.id) <= c.score) {
            kept.push(c);
            if kept.len() == max {
                break;
            }
        }
    }
    kept
}
