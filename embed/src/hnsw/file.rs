//! The graph file: a header, then the neighbour slots as written in memory, all
//! little-endian.
//!
//! ```text
//! magic "STHNSW\0\0" · dim u32 · m u32 · rows u64 · entry u32 · levels u32 · per upper level: nodes u64
//! level 0: rows · 2m slots (u32)
//! per upper level: its node ids (u32, ascending), then nodes · m slots (u32)
//! ```
//!
//! Reading checks everything a search relies on (lengths, ids in range, upper levels
//! nested and holding the entry point), so a damaged file is an error, never a panic or a
//! wrong answer.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::graph::{Graph, Level, MAX_LEVEL, NONE};
use super::space::with_huge_pages;

const MAGIC: &[u8; 8] = b"STHNSW\0\0";

/// Bytes before the per-level counts.
const FIXED_HEADER: usize = 8 + 4 + 4 + 8 + 4 + 4;

/// Writes `graph` (of `dim`-dimensional rows) to `path`.
pub(super) fn write(path: &Path, graph: &Graph, dim: usize) -> std::io::Result<()> {
    let too_big = |what| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} exceeds u32"));
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    w.write_all(MAGIC)?;
    w.write_all(&u32::try_from(dim).map_err(|_| too_big("dim"))?.to_le_bytes())?;
    w.write_all(&u32::try_from(graph.m).map_err(|_| too_big("M"))?.to_le_bytes())?;
    w.write_all(&(graph.rows() as u64).to_le_bytes())?;
    w.write_all(&graph.entry.to_le_bytes())?;
    w.write_all(&(graph.top() as u32).to_le_bytes())?;
    for level in &graph.upper {
        w.write_all(&(level.nodes.len() as u64).to_le_bytes())?;
    }
    write_u32s(&mut w, graph.level0.iter().map(|s| s.load(Relaxed)))?;
    for level in &graph.upper {
        write_u32s(&mut w, level.nodes.iter().copied())?;
        write_u32s(&mut w, level.links.iter().map(|s| s.load(Relaxed)))?;
    }
    w.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

fn write_u32s(w: &mut impl Write, values: impl Iterator<Item = u32>) -> std::io::Result<()> {
    values.into_iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
}

/// Reads the graph in `path`: the graph and its rows' dimension.
pub(super) fn read(path: &Path) -> Result<(Graph, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut r = Reader { bytes: &bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not an HNSW graph file of this version".into());
    }
    let (dim, m, rows, entry, levels) = (r.u32()? as usize, r.u32()? as usize, r.u64()?, r.u32()?, r.u32()? as usize);
    if m < 2 || levels > MAX_LEVEL || rows >= u64::from(NONE) {
        return Err(format!("implausible header (M {m}, {levels} levels, {rows} rows)"));
    }
    let rows = rows as usize;
    let counts: Vec<usize> = (0..levels).map(|_| r.u64().map(|c| c as usize)).collect::<Result<_, _>>()?;
    let expected = expected_len(rows, m, &counts).ok_or("implausible level sizes")?;
    if bytes.len() != expected {
        return Err(format!("{} bytes where the header implies {expected} (truncated or damaged)", bytes.len()));
    }
    let mut level0 = with_huge_pages(rows * 2 * m);
    level0.extend(r.u32s(rows * 2 * m).map(AtomicU32::new));
    let upper = counts
        .iter()
        .map(|&count| Level { nodes: r.u32s(count).collect(), links: r.u32s(count * m).map(AtomicU32::new).collect() })
        .collect();
    let graph = Graph { m, level0, upper, entry };
    validate(&graph).map_err(|e| format!("damaged graph: {e}"))?;
    Ok((graph, dim))
}

/// The file length for these sizes (None on overflow).
fn expected_len(rows: usize, m: usize, counts: &[usize]) -> Option<usize> {
    let slots = counts.iter().try_fold(rows.checked_mul(2 * m)?, |sum, &c| sum.checked_add(c.checked_mul(1 + m)?))?;
    slots.checked_mul(4)?.checked_add(FIXED_HEADER + 8 * counts.len())
}

/// Checks the invariants searching relies on.
fn validate(graph: &Graph) -> Result<(), String> {
    let rows = graph.rows();
    let in_range = |id: u32| id == NONE || (id as usize) < rows;
    if (rows == 0) != (graph.entry == NONE) || !in_range(graph.entry) {
        return Err(format!("entry point {} with {rows} rows", graph.entry));
    }
    if let Some(bad) = graph.level0.iter().map(|s| s.load(Relaxed)).find(|&id| !in_range(id)) {
        return Err(format!("neighbour {bad} of {rows} rows"));
    }
    let mut below: Option<&[u32]> = None;
    for (l, level) in graph.upper.iter().enumerate() {
        let level_no = l + 1;
        if level.nodes.windows(2).any(|w| w[0] >= w[1]) || level.nodes.last().is_some_and(|&id| id as usize >= rows) {
            return Err(format!("level {level_no}'s nodes are not ascending ids of rows"));
        }
        if below.is_some_and(|below| level.nodes.iter().any(|id| below.binary_search(id).is_err())) {
            return Err(format!("level {level_no} has nodes that level {} lacks", level_no - 1));
        }
        let member = |id: u32| id == NONE || level.nodes.binary_search(&id).is_ok();
        if let Some(bad) = level.links.iter().map(|s| s.load(Relaxed)).find(|&id| !member(id)) {
            return Err(format!("level {level_no} links to {bad}, not a node of it"));
        }
        below = Some(&level.nodes);
    }
    if let Some(top) = graph.upper.last()
        && top.nodes.binary_search(&graph.entry).is_err()
    {
        return Err("the entry point is not on the top level".into());
    }
    Ok(())
}

/// Little-endian values from a byte slice whose length was checked beforehand.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let slice = self.bytes.get(self.at..self.at + n).ok_or("truncated header")?;
        self.at += n;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// The next `n` u32s (the file length was checked against the header).
    fn u32s(&mut self, n: usize) -> impl Iterator<Item = u32> + use<'a> {
        let slice = &self.bytes[self.at..self.at + 4 * n];
        self.at += 4 * n;
        slice.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
    }
}
