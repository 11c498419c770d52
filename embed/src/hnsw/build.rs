//! Insertion, as in the paper (INSERT with SELECT-NEIGHBORS-HEURISTIC) and FAISS's
//! `HNSW::add_with_locks`: descend greedily to the new node's level, then on each level
//! down to 0 search `efConstruction` candidates, keep a diverse subset as its neighbours
//! and link them back, re-pruning a neighbour's list when it overflows.
//!
//! New nodes go in level by level, highest first, each level's nodes in a seeded shuffle
//! (FAISS does the same): the first one may raise the top level and is inserted alone,
//! after which the entry point is fixed for the rest.
//!
//! The graph must not depend on how threads are scheduled (the same vectors give the same
//! graph, so the same search results, on every run), so nodes go in in batches rather
//! than each as a thread gets to it, as FAISS and hnswlib do:
//! 1. every node of the batch, in parallel, searches the graph as it was before the batch
//!    and adds the batch's earlier nodes (which no search can reach yet) by scoring them
//!    directly; it chooses its neighbours from both, as if inserted alone in batch order;
//! 2. each new node's lists are written (in parallel: no two nodes share a list);
//! 3. the links back are grouped by the node they go into, and each group is applied in
//!    batch order (in parallel over groups: one list, one thread).
//!
//! Nothing in a step reads what another thread of the same step writes, so the result is
//! the sequential algorithm's on the batch order whatever the number of threads.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering::Relaxed;

use rayon::prelude::*;

use super::graph::{Graph, NONE, neighbours, random_level, splitmix64};
use super::search::{Scored, View, Visited};
use super::space::Space;

/// The largest batch: a node scores this many batch-mates at most directly (a few percent
/// of its search's work at efConstruction 200), and it keeps 16 threads busy.
const MAX_BATCH: usize = 512;

/// Links rows `graph.rows()..space.rows()` of `space` into `graph`, telling `progress`
/// the rows linked after each batch. When `progress` breaks, the build stops there and
/// the graph is left partly linked (the caller discards it).
pub(super) fn extend(
    graph: &mut Graph,
    space: Space,
    ef_construction: usize,
    progress: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let first = graph.rows();
    if space.rows() <= first {
        return ControlFlow::Continue(());
    }
    let levels: Vec<usize> = (first..space.rows()).map(|id| random_level(id as u32, graph.m)).collect();
    let old_top = graph.top();
    graph.grow(&levels);
    let order = insertion_order(first, &levels);
    let head = order[0][0];
    let inserter = Inserter { view: View { graph, space }, first, levels: &levels, ef: ef_construction };
    let entry = if graph.entry == NONE {
        head
    } else {
        inserter.insert_batch(&[head], graph.entry, old_top);
        if inserter.level_of(head) > old_top { head } else { graph.entry }
    };
    let top = graph.top();
    let mut linked = first + 1;
    for group in &order {
        let mut rest: &[u32] = if group[0] == head { &group[1..] } else { group };
        while !rest.is_empty() {
            // Small while the graph is: a batch is a small share of what it can link to.
            let size = (linked / 16).clamp(1, MAX_BATCH).min(rest.len());
            inserter.insert_batch(&rest[..size], entry, top);
            (linked, rest) = (linked + size, &rest[size..]);
            progress(linked)?;
        }
    }
    graph.entry = entry;
    ControlFlow::Continue(())
}

/// The new nodes `first..`, grouped by level, highest first, each group shuffled.
fn insertion_order(first: usize, levels: &[usize]) -> Vec<Vec<u32>> {
    let top = levels.iter().copied().max().unwrap_or(0);
    let mut groups = vec![Vec::new(); top + 1];
    for (i, &level) in levels.iter().enumerate() {
        groups[level].push((first + i) as u32);
    }
    // Rows arrive in storage order (often by folder or class); shuffling spreads each
    // batch over the whole collection.
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
    /// The first new node; `levels[i]` is node `first + i`'s level.
    first: usize,
    levels: &'a [usize],
    ef: usize,
}

/// A link to add: into node `into`'s list on `level`, pointing at `to`.
#[derive(Clone, Copy)]
struct Link {
    level: usize,
    into: u32,
    to: u32,
}

impl Inserter<'_> {
    fn level_of(&self, id: u32) -> usize {
        self.levels[id as usize - self.first]
    }

    /// Links the nodes of `batch` (unlinked so far) into the graph whose searches start
    /// at `entry` on level `top`, as if one after the other in batch order.
    fn insert_batch(&self, batch: &[u32], entry: u32, top: usize) {
        let graph = self.view.graph;
        let chosen: Vec<Vec<Vec<Scored>>> =
            batch.par_iter().enumerate().map(|(i, &id)| self.neighbours_of(id, &batch[..i], entry, top)).collect();
        batch.par_iter().zip(&chosen).for_each(|(&id, levels)| {
            for (level, chosen) in levels.iter().enumerate() {
                let slots = graph.slots(level, id);
                slots.iter().zip(chosen).for_each(|(slot, c)| slot.store(c.id, Relaxed));
            }
        });
        let mut back: Vec<Link> = batch
            .iter()
            .zip(&chosen)
            .flat_map(|(&id, levels)| {
                levels
                    .iter()
                    .enumerate()
                    .flat_map(move |(level, chosen)| chosen.iter().map(move |c| Link { level, into: c.id, to: id }))
            })
            .collect();
        // Stable: each list's links keep batch order.
        back.sort_by_key(|link| (link.level, link.into));
        let lists: Vec<&[Link]> = back.chunk_by(|a, b| (a.level, a.into) == (b.level, b.into)).collect();
        lists.par_iter().for_each(|links| links.iter().for_each(|link| self.add_link(link.into, link.to, link.level)));
    }

    /// The neighbours node `id` takes on each of its levels (index = level), from a search
    /// of the graph and from `earlier`, the nodes inserted before it that no search can
    /// reach yet.
    fn neighbours_of(&self, id: u32, earlier: &[u32], entry: u32, top: usize) -> Vec<Vec<Scored>> {
        let (graph, space) = (self.view.graph, self.view.space);
        let level = self.level_of(id).min(top);
        let query = space.row(id);
        let mut nearest = self.view.descend(query, entry, top, level);
        let mut chosen = vec![Vec::new(); level + 1];
        Visited::with(|visited| {
            for l in (0..=level).rev() {
                // The node itself is not reached: nothing links to it before step 3.
                let mut found = self.view.search_layer(query, nearest, self.ef, l, visited);
                nearest = found[0];
                let reaching = earlier.iter().filter(|&&e| self.level_of(e) >= l);
                found.extend(reaching.map(|&e| Scored { score: space.score(query, e), id: e }));
                found.sort_by(Scored::rank);
                chosen[l] = select(space, found, graph.capacity(l));
            }
        });
        chosen
    }

    /// Adds `to` to `from`'s neighbours on `level`: into a free slot, else the heuristic
    /// picks among the old neighbours and `to`. Only one thread writes `from`'s list.
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
