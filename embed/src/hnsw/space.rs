//! The vectors a graph indexes: rows of the caller's row-major matrix, compared by dot
//! product (cosine similarity of unit vectors), with an AVX-512 or AVX2+FMA kernel where
//! the CPU has one and software prefetch of rows about to be compared.
//!
//! A search may compare against a copy of the rows rounded to f16 instead ([`to_f16`]):
//! half the bytes per row, and a graph walk is bound by loading rows, not by arithmetic
//! (a 512-d row is 32 cache lines in f32 and about 1,000 FMAs). The query stays f32 and
//! the halves widen to f32 in registers (`vcvtph2ps`), so each score is off by the rows'
//! rounding only (relative 2^-11 per value).

/// Dot-product kernels, chosen once for the running CPU: one row, and four rows at once.
#[derive(Clone, Copy)]
struct Dot(fn(&[f32], &[f32]) -> f32, fn(&[f32], [&[f32]; 4]) -> [f32; 4]);

/// Whether the AVX-512 kernels run: the CPU has AVX-512F and `SLICETEST_CPU_KERNEL=avx2`
/// does not rule them out.
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    is_x86_feature_detected!("avx512f") && !crate::cpu::avx512_ruled_out()
}

/// The instruction set the graph's dot products run on here: `avx512`, `avx2` or
/// `portable` (for bench output and logs).
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        return "avx512";
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
        return "avx2";
    }
    "portable"
}

impl Dot {
    /// AVX-512F, else AVX2+FMA where the CPU has them, else the portable eight-lane
    /// [`crate::index::dot`].
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            return Dot(x86::dot512_checked, x86::dot4_512_checked);
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Dot(x86::dot_checked, x86::dot4_checked);
        }
        Dot(crate::index::dot, |q, rows| rows.map(|r| crate::index::dot(q, r)))
    }
}

/// The same for an f32 query against rows of f16 bits.
#[derive(Clone, Copy)]
struct DotF16(fn(&[f32], &[u16]) -> f32, fn(&[f32], [&[u16]; 4]) -> [f32; 4]);

impl DotF16 {
    /// AVX-512F, else AVX2+FMA+F16C, else a portable loop.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            return DotF16(x86::dot512_f16_checked, x86::dot4_512_f16_checked);
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return DotF16(x86::dot_f16_checked, x86::dot4_f16_checked);
        }
        DotF16(tail_f16, |q, rows| rows.map(|r| tail_f16(q, r)))
    }
}

/// The portable f32 × f16 dot product (and the kernels' tails).
fn tail_f16(q: &[f32], row: &[u16]) -> f32 {
    q.iter().zip(row).map(|(x, &h)| x * half::f16::from_bits(h).to_f32()).sum()
}

/// `matrix` rounded to f16 (to nearest, ties to even), as bits.
pub(super) fn to_f16(matrix: &[f32]) -> Vec<u16> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    let mut bits = with_huge_pages(matrix.len());
    // Converted through a small buffer that stays in L1, so that the copy (a GB at a
    // million 512-d rows) is written once, not zero-filled first.
    let mut chunk = [0u16; 4096];
    for values in matrix.chunks(chunk.len()) {
        let chunk = &mut chunk[..values.len()];
        chunk.reinterpret_cast_mut::<half::f16>().convert_from_f32_slice(values);
        bits.extend_from_slice(chunk);
    }
    bits
}

/// The rows of a row-major matrix with `dim` columns.
#[derive(Clone, Copy)]
pub(super) struct Space<'a> {
    matrix: &'a [f32],
    /// The same rows rounded to f16 and their kernels: when present, `score` and `score4`
    /// compare with these.
    halves: Option<(&'a [u16], DotF16)>,
    dim: usize,
    dot: Dot,
}

impl<'a> Space<'a> {
    /// Scores against the f32 rows.
    pub(super) fn new(matrix: &'a [f32], dim: usize) -> Self {
        Space { matrix, halves: None, dim, dot: Dot::detect() }
    }

    /// Scores against `halves`, the rows of `matrix` rounded by [`to_f16`].
    pub(super) fn with_halves(matrix: &'a [f32], halves: &'a [u16], dim: usize) -> Self {
        Space { halves: Some((halves, DotF16::detect())), ..Space::new(matrix, dim) }
    }

    /// Complete rows in the matrix.
    pub(super) fn rows(&self) -> usize {
        self.matrix.len() / self.dim.max(1)
    }

    /// Row `id` in f32.
    pub(super) fn row(&self, id: u32) -> &'a [f32] {
        &self.matrix[id as usize * self.dim..][..self.dim]
    }

    fn half_row(halves: &'a [u16], dim: usize, id: u32) -> &'a [u16] {
        &halves[id as usize * dim..][..dim]
    }

    /// Similarity of `query` and row `id`.
    #[inline]
    pub(super) fn score(&self, query: &[f32], id: u32) -> f32 {
        match self.halves {
            Some((halves, dot)) => (dot.0)(query, Self::half_row(halves, self.dim, id)),
            None => (self.dot.0)(query, self.row(id)),
        }
    }

    /// Similarities of `query` and four rows.
    #[inline]
    pub(super) fn score4(&self, query: &[f32], ids: [u32; 4]) -> [f32; 4] {
        match self.halves {
            Some((halves, dot)) => (dot.1)(query, ids.map(|id| Self::half_row(halves, self.dim, id))),
            None => (self.dot.1)(query, ids.map(|id| self.row(id))),
        }
    }

    /// Similarity of rows `a` and `b` (in f32).
    pub(super) fn between(&self, a: u32, b: u32) -> f32 {
        (self.dot.0)(self.row(a), self.row(b))
    }

    /// Asks the CPU to start loading the start of row `id` (so that the loads of many rows
    /// overlap): the first cache line of an f32 row, the first four of an f16 row (7%
    /// faster than one on 512-d rows; all 16 was no better; the hardware streams the rest).
    #[inline]
    pub(super) fn prefetch_row(&self, id: u32) {
        match self.halves {
            Some((halves, _)) => {
                for line in Self::half_row(halves, self.dim, id).chunks(32).take(4) {
                    prefetch(line.as_ptr());
                }
            }
            None => prefetch(self.row(id).as_ptr()),
        }
    }
}

/// Asks the CPU to start loading the cache line holding `at` (a hint; no-op elsewhere).
#[inline(always)]
pub(super) fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// An empty vector with room for `len` values whose memory the kernel is asked to back
/// with 2 MiB pages (Linux transparent huge pages, which many distributions grant only on
/// request, `madvise` mode). A search reads rows and neighbour lists at random all over
/// arrays of up to a gigabyte; with 4 KiB pages nearly every such read also misses the
/// TLB and walks the page tables, with 2 MiB pages a gigabyte is 512 TLB entries. Must be
/// asked before the memory is first written (pages are chosen at the first touch). A
/// hint: elsewhere, or when the kernel refuses, the pages are ordinary.
pub(super) fn with_huge_pages<T>(len: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * size_of::<T>();
        let first = start.next_multiple_of(HUGE);
        if end >= first + HUGE {
            // SAFETY: the range lies inside the vector's own untouched allocation, and
            // MADV_HUGEPAGE changes only how it is backed, never its contents.
            unsafe { libc::madvise(first as *mut libc::c_void, (end - first) / HUGE * HUGE, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::transmute;

    /// [`dot`], callable through a safe function pointer: [`super::Dot::detect`] hands it
    /// out only after checking that the CPU has AVX2 and FMA.
    pub(super) fn dot_checked(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: see above; only reachable on a CPU with AVX2 and FMA.
        unsafe { dot(a, b) }
    }

    /// [`dot4`], like [`dot_checked`].
    pub(super) fn dot4_checked(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: as for dot_checked.
        unsafe { dot4(q, rows) }
    }

    /// [`dot512`], like [`dot_checked`] for a CPU with AVX-512F.
    pub(super) fn dot512_checked(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only handed out on a CPU with AVX-512F.
        unsafe { dot512(a, b) }
    }

    /// [`dot4_512`], like [`dot512_checked`].
    pub(super) fn dot4_512_checked(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: as for dot512_checked.
        unsafe { dot4_512(q, rows) }
    }

    /// [`dot_f16`], callable through a safe function pointer: handed out only after
    /// checking that the CPU has AVX2, FMA and F16C.
    pub(super) fn dot_f16_checked(q: &[f32], row: &[u16]) -> f32 {
        // SAFETY: only reachable on a CPU with AVX2, FMA and F16C.
        unsafe { dot_f16(q, row) }
    }

    /// [`dot4_f16`], like [`dot_f16_checked`].
    pub(super) fn dot4_f16_checked(q: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
        // SAFETY: as for dot_f16_checked.
        unsafe { dot4_f16(q, rows) }
    }

    /// [`dot512_f16`], like [`dot_checked`] for a CPU with AVX-512F.
    pub(super) fn dot512_f16_checked(q: &[f32], row: &[u16]) -> f32 {
        // SAFETY: only handed out on a CPU with AVX-512F.
        unsafe { dot512_f16(q, row) }
    }

    /// [`dot4_512_f16`], like [`dot512_f16_checked`].
    pub(super) fn dot4_512_f16_checked(q: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
        // SAFETY: as for dot512_f16_checked.
        unsafe { dot4_512_f16(q, rows) }
    }

    /// An f32 query against a row of f16 bits: each block of 16 halves widens to 16
    /// floats in one instruction (`vcvtph2ps`), then the same FMAs as [`dot512`].
    #[target_feature(enable = "avx512f")]
    fn dot512_f16(q: &[f32], row: &[u16]) -> f32 {
        let n = q.len().min(row.len());
        let ((blocks_q, tail_q), (blocks_r, tail_r)) = (q[..n].as_chunks::<32>(), row[..n].as_chunks::<32>());
        let mut acc = [_mm512_setzero_ps(); 2];
        for (x, y) in blocks_q.iter().zip(blocks_r) {
            // SAFETY: same sizes ([f32; 32] / [__m512; 2], [u16; 32] / [__m256i; 2]); all
            // bits are valid.
            let (x, y) = unsafe { (transmute::<[f32; 32], [__m512; 2]>(*x), transmute::<[u16; 32], [__m256i; 2]>(*y)) };
            acc[0] = _mm512_fmadd_ps(x[0], _mm512_cvtph_ps(y[0]), acc[0]);
            acc[1] = _mm512_fmadd_ps(x[1], _mm512_cvtph_ps(y[1]), acc[1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + super::tail_f16(tail_q, tail_r)
    }

    /// [`dot512_f16`] for four rows at once.
    #[target_feature(enable = "avx512f")]
    fn dot4_512_f16(q: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let (qb, qt) = q[..n].as_chunks::<32>();
        let [b0, b1, b2, b3] = rows.map(|r| r[..n].as_chunks::<32>().0);
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for ((((q, r0), r1), r2), r3) in qb.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
            // SAFETY: as in dot512_f16.
            let q = unsafe { transmute::<[f32; 32], [__m512; 2]>(*q) };
            for (acc, r) in acc.iter_mut().zip([r0, r1, r2, r3]) {
                let r = unsafe { transmute::<[u16; 32], [__m256i; 2]>(*r) };
                acc[0] = _mm512_fmadd_ps(q[0], _mm512_cvtph_ps(r[0]), acc[0]);
                acc[1] = _mm512_fmadd_ps(q[1], _mm512_cvtph_ps(r[1]), acc[1]);
            }
        }
        let tail = n - qt.len();
        let mut out = [0f32; 4];
        for ((out, acc), row) in out.iter_mut().zip(acc).zip(rows) {
            *out = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + super::tail_f16(qt, &row[tail..n]);
        }
        out
    }

    /// [`dot512_f16`] with 8-lane registers (F16C's `vcvtph2ps`).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_f16(q: &[f32], row: &[u16]) -> f32 {
        let n = q.len().min(row.len());
        let ((blocks_q, tail_q), (blocks_r, tail_r)) = (q[..n].as_chunks::<32>(), row[..n].as_chunks::<32>());
        let mut acc = [_mm256_setzero_ps(); 4];
        for (x, y) in blocks_q.iter().zip(blocks_r) {
            // SAFETY: same sizes ([f32; 32] / [__m256; 4], [u16; 32] / [__m128i; 4]); all
            // bits are valid.
            let (x, y) = unsafe { (transmute::<[f32; 32], [__m256; 4]>(*x), transmute::<[u16; 32], [__m128i; 4]>(*y)) };
            for j in 0..4 {
                acc[j] = _mm256_fmadd_ps(x[j], _mm256_cvtph_ps(y[j]), acc[j]);
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        horizontal_sum(sum) + super::tail_f16(tail_q, tail_r)
    }

    /// [`dot_f16`] for four rows at once.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot4_f16(q: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let (qb, qt) = q[..n].as_chunks::<16>();
        let [b0, b1, b2, b3] = rows.map(|r| r[..n].as_chunks::<16>().0);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for ((((q, r0), r1), r2), r3) in qb.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
            // SAFETY: as in dot_f16.
            let q = unsafe { transmute::<[f32; 16], [__m256; 2]>(*q) };
            for (acc, r) in acc.iter_mut().zip([r0, r1, r2, r3]) {
                let r = unsafe { transmute::<[u16; 16], [__m128i; 2]>(*r) };
                acc[0] = _mm256_fmadd_ps(q[0], _mm256_cvtph_ps(r[0]), acc[0]);
                acc[1] = _mm256_fmadd_ps(q[1], _mm256_cvtph_ps(r[1]), acc[1]);
            }
        }
        let tail = n - qt.len();
        let mut out = [0f32; 4];
        for ((out, acc), row) in out.iter_mut().zip(acc).zip(rows) {
            *out = horizontal_sum(_mm256_add_ps(acc[0], acc[1])) + super::tail_f16(qt, &row[tail..n]);
        }
        out
    }

    /// [`dot`] with 16-lane registers: two accumulators over 32-float blocks.
    #[target_feature(enable = "avx512f")]
    fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let ((blocks_a, tail_a), (blocks_b, tail_b)) = (a[..n].as_chunks::<32>(), b[..n].as_chunks::<32>());
        let mut acc = [_mm512_setzero_ps(); 2];
        for (x, y) in blocks_a.iter().zip(blocks_b) {
            // SAFETY: [f32; 32] and [__m512; 2] have the same size; all bits are valid.
            let (x, y) = unsafe { (transmute::<[f32; 32], [__m512; 2]>(*x), transmute::<[f32; 32], [__m512; 2]>(*y)) };
            acc[0] = _mm512_fmadd_ps(x[0], y[0], acc[0]);
            acc[1] = _mm512_fmadd_ps(x[1], y[1], acc[1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + tail_a.iter().zip(tail_b).map(|(x, y)| x * y).sum::<f32>()
    }

    /// [`dot4`] with 16-lane registers.
    #[target_feature(enable = "avx512f")]
    fn dot4_512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let (qb, qt) = q[..n].as_chunks::<32>();
        let [b0, b1, b2, b3] = rows.map(|r| r[..n].as_chunks::<32>().0);
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for ((((q, r0), r1), r2), r3) in qb.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
            // SAFETY: [f32; 32] and [__m512; 2] have the same size; all bits are valid.
            let q = unsafe { transmute::<[f32; 32], [__m512; 2]>(*q) };
            for (acc, r) in acc.iter_mut().zip([r0, r1, r2, r3]) {
                let r = unsafe { transmute::<[f32; 32], [__m512; 2]>(*r) };
                acc[0] = _mm512_fmadd_ps(q[0], r[0], acc[0]);
                acc[1] = _mm512_fmadd_ps(q[1], r[1], acc[1]);
            }
        }
        let tail = n - qt.len();
        let mut out = [0f32; 4];
        for ((out, acc), row) in out.iter_mut().zip(acc).zip(rows) {
            let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
            *out = sum + qt.iter().zip(&row[tail..n]).map(|(x, y)| x * y).sum::<f32>();
        }
        out
    }

    /// Four dot products at once: each query block is loaded once for four rows, and the
    /// four rows stream from memory side by side.
    #[target_feature(enable = "avx2,fma")]
    fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let (qb, qt) = q[..n].as_chunks::<16>();
        let [b0, b1, b2, b3] = rows.map(|r| r[..n].as_chunks::<16>().0);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for ((((q, r0), r1), r2), r3) in qb.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
            // SAFETY: [f32; 16] and [__m256; 2] have the same size; all bits are valid.
            let q = unsafe { transmute::<[f32; 16], [__m256; 2]>(*q) };
            for (acc, r) in acc.iter_mut().zip([r0, r1, r2, r3]) {
                let r = unsafe { transmute::<[f32; 16], [__m256; 2]>(*r) };
                acc[0] = _mm256_fmadd_ps(q[0], r[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(q[1], r[1], acc[1]);
            }
        }
        let tail = n - qt.len();
        let mut out = [0f32; 4];
        for ((out, acc), row) in out.iter_mut().zip(acc).zip(rows) {
            let sum = _mm256_add_ps(acc[0], acc[1]);
            *out = horizontal_sum(sum) + qt.iter().zip(&row[tail..n]).map(|(x, y)| x * y).sum::<f32>();
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)))
    }

    /// Dot product with four 8-lane FMA accumulators (independent chains hide the FMA
    /// latency) over 32-float blocks, then a scalar tail. Blocks become registers by
    /// transmuting arrays: `_mm256_loadu_ps` carries debug precondition checks in the dev
    /// profile, where the benches run, that made it several times slower.
    #[target_feature(enable = "avx2,fma")]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let ((blocks_a, tail_a), (blocks_b, tail_b)) = (a[..n].as_chunks::<32>(), b[..n].as_chunks::<32>());
        let mut acc = [_mm256_setzero_ps(); 4];
        for (x, y) in blocks_a.iter().zip(blocks_b) {
            // SAFETY: [f32; 32] and [__m256; 4] have the same size and every bit pattern
            // is valid for both.
            let (x, y) = unsafe { (transmute::<[f32; 32], [__m256; 4]>(*x), transmute::<[f32; 32], [__m256; 4]>(*y)) };
            for j in 0..4 {
                acc[j] = _mm256_fmadd_ps(x[j], y[j], acc[j]);
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        horizontal_sum(sum) + tail_a.iter().zip(tail_b).map(|(x, y)| x * y).sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs (AVX-512 machines run the AVX2 one here too).
    fn kernels() -> Vec<Dot> {
        let mut kernels = vec![Dot::detect()];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push(Dot(x86::dot_checked, x86::dot4_checked));
        }
        kernels
    }

    /// Every f16 kernel this CPU runs.
    fn f16_kernels() -> Vec<DotF16> {
        let mut kernels = vec![DotF16::detect(), DotF16(tail_f16, |q, rows| rows.map(|r| tail_f16(q, r)))];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            kernels.push(DotF16(x86::dot_f16_checked, x86::dot4_f16_checked));
        }
        kernels
    }

    #[test]
    fn f16_rows_round_to_nearest_and_score_like_the_f32_rows() {
        // One f16 step at 1.0 is 1/1024: a quarter step rounds down, three quarters up,
        // half steps to the even neighbour.
        let steps = [1.0, 3.0, 2.0, 6.0].map(|quarters: f32| 1.0 + quarters / 4096.0);
        assert_eq!(to_f16(&[-2.0, 0.0, 65504.0]), [0xC000, 0, 0x7BFF]);
        assert_eq!(to_f16(&steps), [0x3C00, 0x3C01, 0x3C00, 0x3C02]);
        // Longer than the conversion's buffer, and not a multiple of it.
        let long: Vec<f32> = (0..10_001).map(|i| (i as f32 * 0.013).sin() * 3.0).collect();
        let one_by_one: Vec<u16> = long.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
        assert_eq!(to_f16(&long), one_by_one);
        for dim in [1, 3, 15, 16, 17, 31, 32, 33, 512, 515] {
            let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let rows: Vec<f32> = (0..4 * dim).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
            let halves = to_f16(&rows);
            let rounded: Vec<f32> = halves.iter().map(|&h| half::f16::from_bits(h).to_f32()).collect();
            let row = |r: usize| &halves[r * dim..][..dim];
            for DotF16(one, four) in f16_kernels() {
                let scores = four(&q, [row(0), row(1), row(2), row(3)]);
                for r in 0..4 {
                    // Against the f32 product of the rounded values: only the order of
                    // the additions differs.
                    let want = crate::index::dot(&q, &rounded[r * dim..][..dim]);
                    let tolerance = 1e-5 * (dim as f32).max(1.0);
                    assert!(
                        (one(&q, row(r)) - want).abs() <= tolerance,
                        "{dim} row {r}: {} vs {want}",
                        one(&q, row(r))
                    );
                    assert!((scores[r] - want).abs() <= tolerance, "{dim} row {r}: {scores:?} vs {want}");
                    // And close to the unrounded rows (relative 2^-11 per value).
                    let exact = crate::index::dot(&q, &rows[r * dim..][..dim]);
                    assert!((scores[r] - exact).abs() <= 1e-3 * (dim as f32).sqrt(), "{dim}: {} vs {exact}", scores[r]);
                }
            }
        }
    }

    #[test]
    fn the_fast_kernels_agree_with_the_portable_one() {
        for dim in [1, 3, 8, 31, 32, 33, 512, 515] {
            let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
            let portable = crate::index::dot(&a, &b);
            for Dot(one, four) in kernels() {
                let fast = one(&a, &b);
                assert!((fast - portable).abs() <= 1e-4 * portable.abs().max(1.0), "{dim}: {fast} vs {portable}");
                let four = four(&a, [&b, &a, &b, &a]);
                assert!((four[2] - portable).abs() <= 1e-4 * portable.abs().max(1.0), "{dim}: {four:?} vs {portable}");
                assert!((four[3] - crate::index::dot(&a, &a)).abs() <= 1e-4 * four[3].abs().max(1.0));
            }
        }
    }
}
