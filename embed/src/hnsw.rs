//! Approximate nearest neighbours: an HNSW graph (Malkov & Yashunin) over the rows of the
//! caller's matrix of L2-normalised vectors, saved beside the embeddings and extended when
//! new vectors are appended.
//!
//! The graph holds only neighbour ids, laid out like FAISS's `IndexHNSWFlat` (`graph`);
//! the vectors stay in the matrix the caller already has, which every call takes. Building
//! inserts batches of nodes in parallel, giving the same graph whatever the number of
//! threads (`build`); searching descends greedily through the upper levels and runs an
//! ef-bounded best-first search on level 0 (`search`), with AVX-512 or AVX2 dot products
//! and prefetched rows (`space`). Searches walk an f16 copy of the rows (half the memory
//! traffic; [`Traversal`]) made on the first search, and rescore the candidates they end
//! with in f32.
//!
//! The index is a cache: its directory holds the graph file (`file`) and an `index.json`,
//! written last, that says which rows (by a key over their ids and content hashes) the
//! graph covers, in which format. Anything missing, of another format or not matching is
//! rebuilt, so a crash mid-save costs a rebuild, never a wrong answer.

mod build;
mod file;
mod graph;
mod search;
mod space;
pub use space::kernel_name as dot_kernel;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EmbedError, Result};
use graph::{Graph, NONE};
use search::{View, Visited};
use space::Space;

const GRAPH_FILE: &str = "graph.bin";
const INDEX_FILE: &str = "index.json";

/// The version of the saved graph. Directories without one (hnsw_rs dumps) or with another
/// are not read, so the caller rebuilds them.
const FORMAT: u32 = 1;

/// The graph's shape and search effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours per node on the upper levels (M, at least 2); level 0 has 2·M.
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
    /// The graph file's format (0: written before formats were recorded, by hnsw_rs).
    #[serde(default)]
    pub format: u32,
}

/// An HNSW graph whose node ids are row numbers of a vector matrix the caller keeps.
pub struct HnswIndex {
    graph: Graph,
    dim: usize,
    params: HnswParams,
    /// The graph's rows rounded to f16 (bits), made from the caller's matrix on the first
    /// [`Traversal::F16`] search and dropped when the graph grows.
    halves: std::sync::OnceLock<Vec<u16>>,
}

/// What a search compares the query with while it walks the graph. Either way, the
/// candidates it ends with are scored again on the f32 rows, so the scores returned are
/// exact and the same as an exact scan's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Traversal {
    /// A copy of the rows rounded to f16 (2 bytes per value, held by the index): half the
    /// bytes loaded per visited row.
    #[default]
    F16,
    /// The caller's f32 rows: no copy.
    F32,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("rows", &self.rows())
            .field("dim", &self.dim)
            .field("params", &self.params)
            .finish()
    }
}

/// An empty buffer with room for `len` values, for a matrix an index is built over or
/// searched with: the kernel is asked to back it with 2 MiB pages (Linux transparent huge
/// pages on request), since building and rescoring read its rows at random. Fill it with
/// `extend`; a hint only, so any `Vec<f32>` works as a matrix too.
pub fn matrix_buffer(len: usize) -> Vec<f32> {
    space::with_huge_pages(len)
}

/// Runs `work` on a pool of as many threads as the CPU has, each at a lower scheduling
/// priority (on Linux: nice 10 above the thread that calls this, at most 19), so that the parallel work inside it — an index build a
/// server starts in the background — yields the cores to the server's requests while
/// they run and takes them all while they do not. The calling thread keeps its priority.
/// Where no pool can be started, `work` runs on the caller's.
pub fn at_low_priority<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("low-priority-{i}"))
        .start_handler(|_| lower_this_threads_priority())
        .build();
    match pool {
        Ok(pool) => pool.install(work),
        Err(_) => work(),
    }
}

/// Raises the calling thread's nice value by 10, to at most 19 (on Linux a thread's nice
/// value is its own; a new thread starts with its creator's).
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority on the calling thread (who = 0) only read and
    // change its scheduling.
    unsafe {
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (nice + 10).min(19));
    }
}

impl HnswIndex {
    /// Builds a graph over every row of `matrix` (row-major, `dim` columns), in parallel.
    ///
    /// # Panics
    /// If `params.m` is below 2.
    pub fn build(matrix: &[f32], dim: usize, params: HnswParams) -> Self {
        assert!(params.m >= 2, "HNSW needs M >= 2, got {}", params.m);
        let mut index = HnswIndex { graph: Graph::new(params.m), dim, params, halves: Default::default() };
        index.extend(matrix);
        index
    }

    /// Inserts the rows of `matrix` beyond those already in the graph; the rows before
    /// them must be the ones the graph was built from.
    pub fn extend(&mut self, matrix: &[f32]) {
        let _ = self.extend_reporting(matrix, &mut |_| ControlFlow::Continue(()));
    }

    /// [`HnswIndex::extend`], calling `progress(rows linked)` after each batch of
    /// insertions (a progress bar's position; its length is the matrix's rows). When
    /// `progress` breaks (the user cancelled), the build stops after that batch and the
    /// index is left empty: a partly linked graph cannot be searched, nor extended.
    pub fn extend_reporting(
        &mut self,
        matrix: &[f32],
        progress: &mut dyn FnMut(usize) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let space = Space::new(matrix, self.dim);
        let outcome = build::extend(&mut self.graph, space, self.params.ef_construction, progress);
        if outcome.is_break() {
            self.graph = Graph::new(self.params.m);
        }
        self.halves = Default::default();
        outcome
    }

    /// Rows in the graph.
    pub fn rows(&self) -> usize {
        self.graph.rows()
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The graph's parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Sets how many candidates a search examines (raised to k when k is larger): more is
    /// slower and finds more of the true nearest.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Bytes the graph takes in memory, the vectors (the caller's matrix) not included:
    /// about 2·M·4 bytes per row for level 0 plus a few for the upper levels.
    pub fn graph_bytes(&self) -> usize {
        self.graph.bytes()
    }

    /// Bytes of the f16 copy of the rows (2 per value) once a search has made it, else 0.
    pub fn f16_copy_bytes(&self) -> usize {
        self.halves.get().map_or(0, |h| h.len() * size_of::<u16>())
    }

    /// The (about) `k` nearest rows to `query` with their cosine similarity (the dot
    /// product, as [`crate::index::dot`] computes it), best first, ties by lower row.
    /// `matrix` is the one the graph was built from (more rows after them are ignored).
    ///
    /// # Panics
    /// If `query` has not `dim` values or `matrix` has fewer rows than the graph.
    pub fn search(&self, matrix: &[f32], query: &[f32], k: usize) -> Vec<(u32, f32)> {
        self.search_with(matrix, query, k, Traversal::default())
    }

    /// [`HnswIndex::search`], walking the graph as `traversal` says.
    ///
    /// # Panics
    /// As [`HnswIndex::search`].
    pub fn search_with(&self, matrix: &[f32], query: &[f32], k: usize, traversal: Traversal) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "query dimension");
        assert!(matrix.len() >= self.rows() * self.dim, "the matrix has fewer rows than the graph");
        let entry = self.graph.entry;
        if k == 0 || entry == NONE {
            return Vec::new();
        }
        let matrix = &matrix[..self.rows() * self.dim];
        let space = match traversal {
            Traversal::F16 => Space::with_halves(matrix, self.halves.get_or_init(|| space::to_f16(matrix)), self.dim),
            Traversal::F32 => Space::new(matrix, self.dim),
        };
        let view = View { graph: &self.graph, space };
        let nearest = view.descend(query, entry, self.graph.top(), 0);
        let ef = self.params.ef_search.max(k);
        let found = Visited::with(|visited| view.search_layer(query, nearest, ef, 0, visited));
        // Rescored on the f32 rows with the exact scan's kernel, so that a row scores the
        // same here as in `exact_top_k` (and SQL's `clip_similarity`) to the last bit. After
        // an f16 walk, every candidate that could be among the k best once exact is
        // rescored: rounding a row to f16 moves its score by at most 2^-11·|q|·|r| (plus
        // summation error), so none scoring more than twice that (for rows of norm ≤ 1.01)
        // below the k-th can overtake it.
        let reach = match traversal {
            Traversal::F32 => k,
            Traversal::F16 => {
                let kth = found.get(k - 1).map_or(f32::NEG_INFINITY, |s| s.score);
                let margin = 2.0 * (1.0 / 2048.0 + 1.0 / 65536.0) * 1.01 * crate::index::dot(query, query).sqrt();
                found.iter().take_while(|s| s.score >= kth - margin).count()
            }
        };
        let mut hits: Vec<(u32, f32)> =
            found.iter().take(reach).map(|s| (s.id, crate::index::dot(query, view.space.row(s.id)))).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }

    /// Saves the graph into `dir` (replaced), `index.json` last. The files are written to
    /// a directory of this call's own and swapped in by renames, so a reader sees the old
    /// index or the new one, and two saves into one `dir` at once (a retired vector set's
    /// and its successor's) each swap in a whole index: the last to finish stays.
    pub fn save(&self, dir: &Path, key: &str) -> Result<()> {
        let bad = |message: String| EmbedError::Model { path: dir.to_path_buf(), message };
        remove_abandoned_work(dir);
        let tmp = sibling(dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| bad(format!("creating {}: {e}", tmp.display())))?;
        file::write(&tmp.join(GRAPH_FILE), &self.graph, self.dim).map_err(|e| bad(format!("saving the index: {e}")))?;
        let record = IndexRecord { rows: self.rows(), key: key.to_string(), params: self.params, format: FORMAT };
        let json = serde_json::to_vec_pretty(&record).expect("serialisable");
        std::fs::write(tmp.join(INDEX_FILE), json).map_err(|e| bad(format!("writing index.json: {e}")))?;
        let old = sibling(dir, "old");
        // A rename onto a directory fails when it is not empty: another save may put its
        // index at `dir` between our two renames, and then we move that one aside too.
        let mut tries = 0;
        let swapped = loop {
            if dir.exists() {
                match std::fs::rename(dir, &old) {
                    Ok(()) => {}
                    // Moved away by the other save since we looked.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => break Err(e),
                }
            }
            match std::fs::rename(&tmp, dir) {
                Err(_) if tries < 8 && dir.exists() => {
                    let _ = std::fs::remove_dir_all(&old);
                    tries += 1;
                }
                result => break result,
            }
        };
        let _ = std::fs::remove_dir_all(&old);
        if swapped.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        swapped.map_err(|e| bad(format!("replacing: {e}")))
    }

    /// What the index saved in `dir` covers, if there is one this version can read.
    pub fn saved_record(dir: &Path) -> Option<IndexRecord> {
        let record: IndexRecord = serde_json::from_slice(&std::fs::read(dir.join(INDEX_FILE)).ok()?).ok()?;
        (record.format == FORMAT).then_some(record)
    }

    /// Loads the graph saved in `dir`; a missing, old-format or damaged one is an error.
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |message: String| EmbedError::Model { path: dir.to_path_buf(), message };
        let record = Self::saved_record(dir).ok_or_else(|| bad(format!("no {INDEX_FILE} of format {FORMAT}")))?;
        let (graph, dim) = file::read(&dir.join(GRAPH_FILE)).map_err(|e| bad(format!("{GRAPH_FILE}: {e}")))?;
        if graph.rows() != record.rows || graph.m != record.params.m {
            return Err(bad(format!(
                "{INDEX_FILE} says {} rows and M {}, the graph has {} and {}",
                record.rows,
                record.params.m,
                graph.rows(),
                graph.m
            )));
        }
        Ok(HnswIndex { graph, dim, params: record.params, halves: Default::default() })
    }
}

/// How old a dead process's work directory must be before a save removes it. The age
/// keeps a live save apart from a dead one where process ids do not tell (a directory
/// shared by two hosts); a whole save takes seconds.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the work directories ([`sibling`]) that saves into `dir` by processes no
/// longer running left behind (killed between writing and swapping in): each holds a
/// whole graph, and nothing else would ever remove it. A directory of a live process,
/// or one younger than [`ABANDONED_AFTER`], is left alone.
fn remove_abandoned_work(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefixes = ["tmp", "old"].map(|suffix| format!(".{}-{suffix}-", name.to_string_lossy()));
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(rest) = prefixes.iter().find_map(|p| file_name.strip_prefix(p.as_str())) else { continue };
        let Some(pid) = rest.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok()) else { continue };
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= ABANDONED_AFTER));
        if pid != std::process::id() && old_enough && !process_is_running(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id runs on this host; `true` where that cannot be told.
fn process_is_running(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
        // SAFETY: signal 0 sends nothing; kill only checks that the process exists (EPERM:
        // it exists but belongs to someone else).
        let found = unsafe { libc::kill(pid, 0) } == 0;
        found || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    // The process id keeps processes apart, the count the calls of one process.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}-{suffix}-{}-{call}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn low_priority_work_runs_10_nicer_and_leaves_the_caller_as_it_was() {
        use rayon::prelude::*;
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let inside: Vec<i32> = at_low_priority(|| (0..16).into_par_iter().map(|_| nice()).collect());
        assert!(inside.iter().all(|&n| n == (before + 10).min(19)), "{inside:?} from {before}");
        assert_eq!(nice(), before);
    }
    use crate::index::{dot, exact_top_k};

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
            found += index.search(matrix, q, 10).iter().filter(|h| exact.contains(&h.0)).count();
        }
        found as f64 / (queries.len() / dim * 10) as f64
    }

    /// A directory for one test's index, removed with the returned guard.
    fn index_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        (tmp, dir)
    }

    #[test]
    fn recall_at_10_on_20k_vectors_and_a_saved_extended_index() {
        let dim = 64;
        let matrix = structured(20_000, dim, 1);
        let queries = structured(100, dim, 2);
        let params = HnswParams::default();
        // Built in two steps (the second as when new images were embedded).
        let mut index = HnswIndex::build(&matrix[..15_000 * dim], dim, params);
        index.extend(&matrix);
        assert_eq!(index.rows(), 20_000);
        let r = recall(&index, &matrix, &queries, dim);
        assert!(r >= 0.95, "recall@10 {r}");
        assert!(index.graph_bytes() < 20_000 * 160, "{} bytes", index.graph_bytes());

        let (_tmp, dir) = index_dir();
        index.save(&dir, "key-1").unwrap();
        assert_eq!(HnswIndex::saved_record(&dir).unwrap().key, "key-1");
        let loaded = HnswIndex::load(&dir).unwrap();
        assert_eq!((loaded.rows(), loaded.dim(), loaded.params()), (20_000, dim, params));
        for q in queries.chunks(dim).take(10) {
            assert_eq!(loaded.search(&matrix, q, 10), index.search(&matrix, q, 10));
        }
    }

    /// Two saves of different graphs into one directory at once, over and over: each
    /// succeeds, what is left loads as one whole index (its record and graph agree), and
    /// no work directory is left beside it.
    #[test]
    fn saves_into_one_directory_at_once_each_leave_a_whole_index() {
        let dim = 16;
        let matrix = structured(1_200, dim, 9);
        let small = HnswIndex::build(&matrix[..600 * dim], dim, HnswParams::default());
        let large = HnswIndex::build(&matrix, dim, HnswParams::default());
        let (tmp, dir) = index_dir();
        for _ in 0..20 {
            std::thread::scope(|s| {
                let a = s.spawn(|| small.save(&dir, "small"));
                let b = s.spawn(|| large.save(&dir, "large"));
                a.join().unwrap().unwrap();
                b.join().unwrap().unwrap();
            });
            let record = HnswIndex::saved_record(&dir).unwrap();
            let loaded = HnswIndex::load(&dir).unwrap();
            let want = if record.key == "small" { 600 } else { 1_200 };
            assert_eq!((record.rows, loaded.rows()), (want, want), "{}", record.key);
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["index"], "work directories left: {names:?}");
    }

    /// Work directories a killed save left beside the index: a dead process's old one is
    /// removed by the next save; a live process's, a young one, and other names stay.
    #[cfg(unix)]
    #[test]
    fn a_save_removes_the_work_directories_of_dead_processes_only() {
        let dim = 16;
        let index = HnswIndex::build(&structured(300, dim, 4), dim, HnswParams::default());
        let (tmp, dir) = index_dir();
        // A process id no process has: past the largest Linux allows (2^22).
        let dead = 4_194_304 + 17;
        let live = std::os::unix::process::parent_id();
        let backdate = |name: &str, hours: u64| {
            let path = tmp.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join(GRAPH_FILE), b"partial").unwrap();
            let then = std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600);
            std::fs::File::open(&path).unwrap().set_modified(then).unwrap();
        };
        backdate(&format!(".index-tmp-{dead}-0"), 2);
        backdate(&format!(".index-old-{dead}-3"), 2);
        backdate(&format!(".index-tmp-{live}-1"), 2);
        backdate(&format!(".index-tmp-{dead}-2"), 0);
        backdate(&format!(".other-tmp-{dead}-0"), 2);
        backdate(".index-tmp-notapid-0", 2);
        index.save(&dir, "k").unwrap();
        let mut names: Vec<_> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut want = vec![
            format!(".index-tmp-{live}-1"),
            format!(".index-tmp-{dead}-2"),
            ".index-tmp-notapid-0".to_string(),
            format!(".other-tmp-{dead}-0"),
            "index".to_string(),
        ];
        want.sort();
        assert_eq!(names, want);
        assert_eq!(HnswIndex::load(&dir).unwrap().rows(), 300);
    }

    #[test]
    fn the_f16_walk_finds_what_the_f32_walk_finds_with_exact_scores_and_follows_growth() {
        let dim = 64;
        let matrix = structured(12_000, dim, 5);
        let queries = structured(100, dim, 6);
        let mut index = HnswIndex::build(&matrix[..8_000 * dim], dim, HnswParams::default());
        let first = &matrix[..8_000 * dim];
        assert_eq!(index.f16_copy_bytes(), 0, "made on the first search only");
        let (mut same, mut total) = (0, 0);
        for q in queries.chunks(dim) {
            let (half, full) = (index.search(first, q, 10), index.search_with(first, q, 10, Traversal::F32));
            // Scores are the exact kernel's, whichever walk found the row.
            for &(row, score) in &half {
                assert_eq!(score.to_bits(), dot(q, &first[row as usize * dim..][..dim]).to_bits());
            }
            same += half.iter().filter(|h| full.contains(h)).count();
            total += full.len();
        }
        assert!(same as f64 >= 0.97 * total as f64, "{same} of {total} hits in common");
        assert_eq!(index.f16_copy_bytes(), 8_000 * dim * 2);

        // Growing drops the copy; the next search copies every row, new ones included.
        index.extend(&matrix);
        assert_eq!(index.f16_copy_bytes(), 0);
        let new_row = &matrix[11_000 * dim..][..dim];
        assert_eq!(index.search(&matrix, new_row, 1)[0].0, 11_000);
        assert_eq!(index.f16_copy_bytes(), 12_000 * dim * 2);
        let r = recall(&index, &matrix, &queries, dim);
        assert!(r >= 0.95, "recall@10 {r}");
    }

    /// The entry point, level 0's slots, then each upper level's nodes and slots.
    fn links(index: &HnswIndex) -> Vec<Vec<u32>> {
        let load = |slots: &[std::sync::atomic::AtomicU32]| {
            slots.iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>()
        };
        let graph = &index.graph;
        let mut all = vec![vec![graph.entry], load(&graph.level0)];
        for level in &graph.upper {
            all.extend([level.nodes.clone(), load(&level.links)]);
        }
        all
    }

    #[test]
    fn the_graph_is_the_same_whatever_the_number_of_threads() {
        let dim = 32;
        let matrix = structured(6_000, dim, 7);
        let built_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut index = HnswIndex::build(&matrix[..4_000 * dim], dim, HnswParams::default());
                index.extend(&matrix);
                index
            })
        };
        let one = built_on(1);
        assert!(one.graph.top() >= 2, "the set reaches a few levels");
        for threads in [2, 3, 8] {
            assert!(links(&built_on(threads)) == links(&one), "{threads} threads built another graph");
        }
    }

    #[test]
    fn a_build_stopped_by_its_progress_leaves_an_empty_index_that_builds_again_the_same() {
        let dim = 16;
        let matrix = structured(3_000, dim, 8);
        let whole = HnswIndex::build(&matrix, dim, HnswParams::default());
        let mut index = HnswIndex::build(&matrix[..1_000 * dim], dim, HnswParams::default());
        let mut reports = Vec::new();
        let outcome = index.extend_reporting(&matrix, &mut |linked| {
            reports.push(linked);
            if linked >= 1_500 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        assert!(outcome.is_break());
        assert!(reports.len() > 1 && reports.iter().all(|&r| r > 1_000 && r < 3_000), "{reports:?}");
        assert!(reports.windows(2).all(|w| w[0] < w[1]), "{reports:?}");
        assert_eq!(index.rows(), 0, "a partly linked graph is dropped");
        assert_eq!(index.search(&matrix, &matrix[..dim], 5), vec![]);

        let mut last = 0;
        let outcome = index.extend_reporting(&matrix, &mut |linked| {
            last = linked;
            ControlFlow::Continue(())
        });
        assert!(outcome.is_continue());
        assert_eq!(last, 3_000);
        assert!(links(&index) == links(&whole), "rebuilt from empty: the same graph as one build");
    }

    #[test]
    fn small_sets_are_searched_exhaustively_even_for_k_beyond_the_rows() {
        let dim = 16;
        let matrix = structured(40, dim, 3);
        let index = HnswIndex::build(&matrix, dim, HnswParams::default());
        for q in structured(5, dim, 4).chunks(dim).chain([&matrix[..dim]]) {
            assert_eq!(index.search(&matrix, q, 100), exact_top_k(&matrix, dim, q, 100, None));
            assert_eq!(index.search(&matrix, q, 0), vec![]);
        }
        // A row finds itself first.
        assert_eq!(index.search(&matrix, &matrix[7 * dim..8 * dim], 1)[0].0, 7);
    }

    #[test]
    fn an_empty_index_finds_nothing_and_can_be_saved_and_extended() {
        let dim = 8;
        let mut index = HnswIndex::build(&[], dim, HnswParams::default());
        assert_eq!(index.search(&[], &[0.5; 8], 10), vec![]);
        let (_tmp, dir) = index_dir();
        index.save(&dir, "empty").unwrap();
        assert_eq!(HnswIndex::load(&dir).unwrap().rows(), 0);
        let matrix = structured(3, dim, 5);
        index.extend(&matrix);
        assert_eq!(index.search(&matrix, &matrix[..dim], 10), exact_top_k(&matrix, dim, &matrix[..dim], 10, None));
    }

    #[test]
    fn a_truncated_or_damaged_graph_file_is_an_error_not_a_panic() {
        let dim = 16;
        let matrix = structured(2_000, dim, 6);
        let index = HnswIndex::build(&matrix, dim, HnswParams::default());
        let (_tmp, dir) = index_dir();
        index.save(&dir, "k").unwrap();
        let graph = dir.join(GRAPH_FILE);
        let good = std::fs::read(&graph).unwrap();
        let damaged = |bytes: &[u8]| {
            std::fs::write(&graph, bytes).unwrap();
            match HnswIndex::load(&dir) {
                Err(EmbedError::Model { message, .. }) => message,
                other => panic!("{other:?}"),
            }
        };
        assert!(damaged(&good[..good.len() - 3]).contains("truncated"));
        assert!(damaged(&good[..20]).contains("truncated"));
        assert!(damaged(b"").contains("truncated"));
        let mut bad_id = good.clone();
        let last = bad_id.len() - 4;
        bad_id[last..].copy_from_slice(&5_000u32.to_le_bytes());
        assert!(damaged(&bad_id).contains("damaged graph"), "{}", damaged(&bad_id));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(damaged(&bad_magic).contains("not an HNSW graph"));
        let mut huge = good;
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(damaged(&huge).contains("implausible"));
    }

    #[test]
    fn an_index_saved_by_hnsw_rs_is_rebuilt_not_read() {
        let (_tmp, dir) = index_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let old = r#"{"rows": 3, "key": "k", "params": {"m": 16, "ef_construction": 200, "ef_search": 64}}"#;
        std::fs::write(dir.join(INDEX_FILE), old).unwrap();
        std::fs::write(dir.join("graph.hnsw.graph"), b"hnsw_rs dump").unwrap();
        assert_eq!(HnswIndex::saved_record(&dir), None);
        assert!(HnswIndex::load(&dir).unwrap_err().to_string().contains("format"));
    }
}
