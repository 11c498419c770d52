//! The classifier's matrix product, with its arithmetic order written in the source.
//!
//! A GEMM library picks its microkernel by the CPU it runs on (the `gemm` crate under
//! candle has SSE, AVX2+FMA and AVX-512 kernels) and each kernel sums a dot product in a
//! different order, so the same training run gives different bytes on different CPUs.
//! Here every output element is `c += a[k]·b[k]` for k = 0, 1, 2, … one product at a time,
//! each a separate multiply and add (Rust never fuses them into an FMA on its own). The
//! loops vectorise *across* output elements, never along k, so the vector width only
//! decides how many independent elements move together: the portable, AVX2 and AVX-512
//! builds of [`matmul_acc`] compute bit-identical results, and the fastest one the CPU has
//! is used. Threads split the output rows, which changes nothing either.

use rayon::prelude::*;

/// Which compiled copy of the kernel runs. All give the same bits; they differ in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// The baseline target (SSE2 on x86-64).
    Portable,
    /// Compiled with AVX2 enabled (8 floats a register).
    Avx2,
    /// Compiled with AVX-512F enabled (16 floats a register).
    Avx512,
}

impl KernelPath {
    /// Every path this CPU can run, slowest first.
    pub fn available() -> Vec<KernelPath> {
        let mut paths = vec![KernelPath::Portable];
        if crate::cpu::has("avx2") {
            paths.push(KernelPath::Avx2);
        }
        if crate::cpu::has("avx512f") {
            paths.push(KernelPath::Avx512);
        }
        paths
    }

    /// The fastest path this CPU has, or the one `SLICETEST_KERNEL` (`portable`, `avx2`,
    /// `avx512`) pins when the CPU has it.
    pub fn detect() -> KernelPath {
        let available = KernelPath::available();
        let pinned = std::env::var("SLICETEST_KERNEL").ok().and_then(|v| KernelPath::parse(&v));
        match pinned {
            Some(p) if available.contains(&p) => p,
            _ => *available.last().expect("portable is always available"),
        }
    }

    /// The path named `name` (`portable`, `avx2`, `avx512`).
    pub fn parse(name: &str) -> Option<KernelPath> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(KernelPath::Portable),
            "avx2" => Some(KernelPath::Avx2),
            "avx512" => Some(KernelPath::Avx512),
            _ => None,
        }
    }

    /// The name [`KernelPath::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }
}

/// Output columns kept in registers while the whole k loop runs over them.
const TILE: usize = 64;
/// Output rows a thread takes at a time.
const ROWS_PER_TASK: usize = 8;

/// `c[m×n] += a[m×k] · b[k×n]`, all row-major. Each element of `c` adds its k products in
/// order, so the result does not depend on `path`, the CPU or the thread count. Zeros of
/// `a` are skipped (adding `0·b` to a finite sum leaves it unchanged up to the sign of a
/// zero, and skipping is the same on every path); images are mostly black pixels.
pub fn matmul_acc(path: KernelPath, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(c.len(), m * n, "c is m×n");
    assert_eq!(a.len(), m * k, "a is m×k");
    assert_eq!(b.len(), k * n, "b is k×n");
    if n == 0 {
        return;
    }
    c.par_chunks_mut(ROWS_PER_TASK * n).zip(a.par_chunks(ROWS_PER_TASK * k.max(1))).for_each(|(c_rows, a_rows)| {
        for (c_row, a_row) in c_rows.chunks_mut(n).zip(a_rows.chunks(k.max(1))) {
            row(path, c_row, &a_row[..k], b);
        }
    });
}

/// One output row on the chosen path.
fn row(path: KernelPath, c_row: &mut [f32], a_row: &[f32], b: &[f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 if crate::cpu::has("avx2") => {
            #[target_feature(enable = "avx2")]
            fn avx2(c_row: &mut [f32], a_row: &[f32], b: &[f32]) {
                row_in_order(c_row, a_row, b)
            }
            // SAFETY: the CPU has AVX2, checked in the match guard.
            unsafe { avx2(c_row, a_row, b) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 if crate::cpu::has("avx512f") => {
            #[target_feature(enable = "avx512f")]
            fn avx512(c_row: &mut [f32], a_row: &[f32], b: &[f32]) {
                row_in_order(c_row, a_row, b)
            }
            // SAFETY: the CPU has AVX-512F, checked in the match guard.
            unsafe { avx512(c_row, a_row, b) }
        }
        _ => row_in_order(c_row, a_row, b),
    }
}

/// `c_row += Σ_k a_row[k] · b[k, ·]` with k ascending for every element. Full tiles of
/// [`TILE`] columns stay in a local array (registers) for the whole k loop, which is the
/// same arithmetic as updating `c_row` in memory after every k.
#[inline(always)]
fn row_in_order(c_row: &mut [f32], a_row: &[f32], b: &[f32]) {
    let n = c_row.len();
    let mut start = 0;
    while start + TILE <= n {
        let mut acc = [0f32; TILE];
        acc.copy_from_slice(&c_row[start..start + TILE]);
        for (kk, &s) in a_row.iter().enumerate() {
            if s == 0.0 {
                continue;
            }
            let b_tile: &[f32; TILE] = b[kk * n + start..][..TILE].try_into().expect("TILE long");
            for j in 0..TILE {
                acc[j] += s * b_tile[j];
            }
        }
        c_row[start..start + TILE].copy_from_slice(&acc);
        start += TILE;
    }
    if start < n {
        let rest = &mut c_row[start..];
        for (kk, &s) in a_row.iter().enumerate() {
            if s == 0.0 {
                continue;
            }
            for (c, &bv) in rest.iter_mut().zip(&b[kk * n + start..(kk + 1) * n]) {
                *c += s * bv;
            }
        }
    }
}

/// Output rows the blocked products keep in registers together.
const BLOCK_ROWS: usize = 4;
/// The column tiles of the blocked products, widest first (what is left of a row after
/// them is summed one column at a time). Measured with rustc 1.94 on AVX-512: 4×48
/// and 4×16 tiles stay in registers (30–45 GMAC/s on 2 cores); some other shapes (8×16,
/// 8×32) spill and run 20 times slower. The shapes change the speed, never the sums.
const WIDE: usize = 48;
const NARROW: usize = 16;
const SMALL: usize = 8;

/// `c[m×n] += a[m×k] · b[k×n]`, all row-major, with exactly [`matmul_acc`]'s sums (each
/// element adds its k products in order, one multiply and one add each), computed on
/// blocks of [`BLOCK_ROWS`] × 48 outputs held in registers while k runs. Zeros are not
/// skipped, which changes no finite sum (adding `±0` to a sum that starts from a finite
/// value and is never `−0` leaves it as it is) and is what makes it fast where zeros are
/// scattered, as after a ReLU: a branch per product costs more than the product. The
/// detector's convolutions use it.
pub fn matmul_blocked_acc(path: KernelPath, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(c.len(), m * n, "c is m×n");
    assert_eq!(a.len(), m * k, "a is m×k");
    assert_eq!(b.len(), k * n, "b is k×n");
    if n == 0 || k == 0 {
        return;
    }
    c.par_chunks_mut(BLOCK_ROWS * n).zip(a.par_chunks(BLOCK_ROWS * k)).for_each(|(c_rows, a_rows)| {
        blocked(path, Product::Plain { a_rows, b }, c_rows, k, n);
    });
}

/// `c[k×n] += aᵀ · b` for `a[m×k]` and `b[m×n]`, all row-major: a layer's weight gradient
/// (inputs transposed times output gradients) without materialising the transpose. Each
/// element of `c` adds its m products in order (p = 0, 1, 2, …), one multiply and one add
/// each, blocked as [`matmul_blocked_acc`] is, so the result does not depend on `path`,
/// the CPU or the thread count. Zeros are not skipped.
pub fn matmul_tn_acc(path: KernelPath, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(c.len(), k * n, "c is k×n");
    assert_eq!(a.len(), m * k, "a is m×k");
    assert_eq!(b.len(), m * n, "b is m×n");
    if n == 0 || k == 0 || m == 0 {
        return;
    }
    c.par_chunks_mut(BLOCK_ROWS * n).enumerate().for_each(|(task, c_rows)| {
        blocked(path, Product::Transposed { a, b, first: task * BLOCK_ROWS }, c_rows, m, n);
    });
}

/// Where the rows of a block's left factor come from.
#[derive(Clone, Copy)]
enum Product<'a> {
    /// `a_rows` (the block's rows of a, `inner` long each) times `b` (`inner × n`).
    Plain { a_rows: &'a [f32], b: &'a [f32] },
    /// Columns `first..` of `a` (`inner × k`) transposed, times `b` (`inner × n`).
    Transposed { a: &'a [f32], b: &'a [f32], first: usize },
}

/// One block of output rows: full [`BLOCK_ROWS`]-row blocks in tiles of 48, 16 and 8
/// columns, then column by column; a short last block one row at a time.
fn blocked(path: KernelPath, product: Product<'_>, c_rows: &mut [f32], inner: usize, n: usize) {
    let rows = c_rows.len() / n;
    if rows == BLOCK_ROWS {
        tiles::<BLOCK_ROWS>(path, product, 0, c_rows, inner, n);
    } else {
        for r in 0..rows {
            tiles::<1>(path, product, r, &mut c_rows[r * n..(r + 1) * n], inner, n);
        }
    }
}

/// `R` output rows starting at row `offset` of the block, tile by tile.
fn tiles<const R: usize>(path: KernelPath, product: Product<'_>, offset: usize, c: &mut [f32], inner: usize, n: usize) {
    let mut col = 0;
    while col + WIDE <= n {
        tile::<R, WIDE>(path, product, offset, c, col, inner, n);
        col += WIDE;
    }
    while col + NARROW <= n {
        tile::<R, NARROW>(path, product, offset, c, col, inner, n);
        col += NARROW;
    }
    if col + SMALL <= n {
        tile::<R, SMALL>(path, product, offset, c, col, inner, n);
        col += SMALL;
    }
    for j in col..n {
        tile::<R, 1>(path, product, offset, c, j, inner, n);
    }
}

/// One tile on the chosen path. Each tile is its own function (per path, rows, width and
/// product), which is what keeps its accumulators in registers.
fn tile<const R: usize, const W: usize>(
    path: KernelPath,
    product: Product<'_>,
    offset: usize,
    c: &mut [f32],
    col: usize,
    inner: usize,
    n: usize,
) {
    let mut acc = [[0f32; W]; R];
    for (r, acc) in acc.iter_mut().enumerate() {
        acc.copy_from_slice(&c[r * n + col..][..W]);
    }
    match (path, product) {
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx2, Product::Plain { a_rows, b }) if crate::cpu::has("avx2") => {
            // SAFETY: the CPU has AVX2, checked in the match guard.
            unsafe { plain_avx2(&mut acc, &a_rows[offset * inner..], b, col, inner, n) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx2, Product::Transposed { a, b, first }) if crate::cpu::has("avx2") => {
            // SAFETY: as above.
            unsafe { transposed_avx2(&mut acc, a, b, first + offset, col, inner, n) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx512, Product::Plain { a_rows, b }) if crate::cpu::has("avx512f") => {
            // SAFETY: the CPU has AVX-512F, checked in the match guard.
            unsafe { plain_avx512(&mut acc, &a_rows[offset * inner..], b, col, inner, n) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx512, Product::Transposed { a, b, first }) if crate::cpu::has("avx512f") => {
            // SAFETY: as above.
            unsafe { transposed_avx512(&mut acc, a, b, first + offset, col, inner, n) }
        }
        (_, Product::Plain { a_rows, b }) => plain_in_order(&mut acc, &a_rows[offset * inner..], b, col, inner, n),
        (_, Product::Transposed { a, b, first }) => transposed_in_order(&mut acc, a, b, first + offset, col, inner, n),
    }
    for (r, acc) in acc.iter().enumerate() {
        c[r * n + col..][..W].copy_from_slice(acc);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plain_avx2<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    col: usize,
    k: usize,
    n: usize,
) {
    plain_in_order(acc, a, b, col, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn plain_avx512<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    col: usize,
    k: usize,
    n: usize,
) {
    plain_in_order(acc, a, b, col, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transposed_avx2<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    first: usize,
    col: usize,
    m: usize,
    n: usize,
) {
    transposed_in_order(acc, a, b, first, col, m, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transposed_avx512<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    first: usize,
    col: usize,
    m: usize,
    n: usize,
) {
    transposed_in_order(acc, a, b, first, col, m, n)
}

/// `acc[r][j] += Σ_kk a[r·k + kk] · b[kk·n + col + j]`, kk ascending.
#[inline(always)]
fn plain_in_order<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    col: usize,
    k: usize,
    n: usize,
) {
    for kk in 0..k {
        let b_tile: &[f32; W] = b[kk * n + col..][..W].try_into().expect("W long");
        for r in 0..R {
            let s = a[r * k + kk];
            for j in 0..W {
                acc[r][j] += s * b_tile[j];
            }
        }
    }
}

/// `acc[r][j] += Σ_p a[p·k + first + r] · b[p·n + col + j]` for `a` of `m` rows, p ascending.
#[inline(always)]
fn transposed_in_order<const R: usize, const W: usize>(
    acc: &mut [[f32; W]; R],
    a: &[f32],
    b: &[f32],
    first: usize,
    col: usize,
    m: usize,
    n: usize,
) {
    let k = a.len() / m;
    for (a_row, b_row) in a.chunks_exact(k).zip(b.chunks_exact(n)) {
        let b_tile: &[f32; W] = b_row[col..col + W].try_into().expect("W long");
        let a_tile: &[f32; R] = a_row[first..first + R].try_into().expect("R long");
        for r in 0..R {
            let s = a_tile[r];
            for j in 0..W {
                acc[r][j] += s * b_tile[j];
            }
        }
    }
}

/// `a` (rows×cols, row-major) transposed into a new cols×rows buffer.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive product with k ascending: the definition every path must equal bit for bit.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.5f32; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    if a[i * k + kk] != 0.0 {
                        c[i * n + j] += a[i * k + kk] * b[kk * n + j];
                    }
                }
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // Mixed magnitudes and exact zeros, so summation order would show.
        (0..len as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed).wrapping_mul(40_503);
                if h.is_multiple_of(7) {
                    0.0
                } else {
                    ((h % 20_001) as f32 - 10_000.0) * 10f32.powi((h % 9) as i32 - 4)
                }
            })
            .collect()
    }

    #[test]
    fn every_path_equals_the_in_order_definition_bit_for_bit() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 784, 256), (9, 130, 64), (20, 33, 10), (5, 0, 3)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let expected = reference(&a, &b, m, k, n);
            for path in KernelPath::available() {
                let mut c = vec![0.5f32; m * n];
                matmul_acc(path, &mut c, &a, &b, m, k, n);
                let same = c.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{path:?} differs from the in-order sum at {m}×{k}×{n}");
            }
        }
    }

    #[test]
    fn the_blocked_products_equal_the_in_order_definition_bit_for_bit() {
        let shapes =
            [(1, 1, 1), (7, 5, 3), (300, 37, 64), (130, 17, 16), (33, 20, 10), (9, 144, 48), (13, 48, 432), (6, 9, 24)];
        for &(m, k, n) in shapes.iter().chain(&[(0, 3, 4), (5, 0, 3)]) {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let expected = reference(&a, &b, m, k, n);
            for path in KernelPath::available() {
                let mut c = vec![0.5f32; m * n];
                matmul_blocked_acc(path, &mut c, &a, &b, m, k, n);
                let same = c.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{path:?} blocked differs from the in-order sum at {m}×{k}×{n}");
            }
            // aᵀ · b' with b' (m×n): c (k×n), each element summed over m in order.
            let b = values(m * n, 4);
            let mut expected = vec![0.5f32; k * n];
            for i in 0..k {
                for j in 0..n {
                    for p in 0..m {
                        expected[i * n + j] += a[p * k + i] * b[p * n + j];
                    }
                }
            }
            for path in KernelPath::available() {
                let mut c = vec![0.5f32; k * n];
                matmul_tn_acc(path, &mut c, &a, &b, m, k, n);
                let same = c.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{path:?} transposed differs from the in-order sum at {m}×{k}×{n}");
            }
        }
    }

    #[test]
    fn paths_parse_by_name() {
        for path in [KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512] {
            assert_eq!(KernelPath::parse(path.name()), Some(path));
        }
        assert_eq!(KernelPath::parse("sse"), None);
        assert!(KernelPath::available().contains(&KernelPath::detect()));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
