//! Dense layers over weights packed once at load: an AVX-512 f32 kernel (the default on
//! AVX-512 CPUs) and two bfloat16 ones (opt-in, `--device cpu-bf16`): AMX tiles on Intel,
//! AVX512_BF16 dot products on AMD.
//!
//! The `gemm` crate's AVX-512 kernels sit behind its `x86-v4` feature, which turns on
//! `bytemuck`'s AVX-512 support for the whole dependency tree (arrow and DataFusion
//! included), so without it the fused CPU path ran AVX2 code on AVX-512 machines, where
//! PyTorch's GEMMs use AVX-512: bench-embed measured 0.62–0.75× PyTorch there. This
//! module is the GEMM those layers need and nothing more: y (+)= x·Wᵀ with W fixed, so W
//! is packed once, when the model loads, into panels of 32 outputs laid out the way the
//! kernel reads them (the `gemm` crate packs its operands again on every call).
//!
//! - f32 (AVX-512F): 8 rows × 32 outputs in 16 zmm accumulators, one FMA per (row, 16
//!   outputs) per input. (12 rows, 24 accumulators, would load the panel less often, but
//!   LLVM hoists the 12 broadcasts of x above the FMAs and runs out of the 32 registers:
//!   the accumulators spilled to the stack in the inner loop.) Blocking in BLIS's order:
//!   for each slice of `DEPTH` inputs, for each panel, for each block of 8 rows; a
//!   panel's slice (32 KB) stays in L1 while the blocks of x (copied input by input,
//!   8 rows side by side, once per slice) stream past it from L2.
//! - bf16 (AMX-BF16, Intel Sapphire Rapids and later): W and x rounded to bfloat16 (round
//!   to nearest even), products summed in f32 by the tile unit: `tdpbf16ps` multiplies a
//!   16 × 32 tile of x by a 32 × 16 tile of W in one instruction. Four accumulator tiles
//!   make a 32 × 32 block of the output. The tile instructions are written with `asm!`
//!   (Rust's AMX intrinsics are unstable) and Linux has to grant the process the tile
//!   state first (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); where either is missing the mode
//!   is not offered.
//! - bf16 (AVX512_BF16, AMD Zen 4 and later): the same packing, read by the f32 kernel's
//!   loop with `vdpbf16ps` in place of the FMA: each lane multiplies a pair of bfloat16
//!   inputs by a pair of weights and adds both products to its f32 sum, so one
//!   instruction does 32 multiply-adds where an f32 FMA does 16. On Zen 4 both issue once
//!   per cycle (measured: 117 vs 59 G multiply-adds/s on one core), so this is twice the
//!   f32 kernel's arithmetic rate. On Intel's Xeon `vdpbf16ps` has one port where the FMA
//!   has two, and the kernel ran at 0.7× the f32 one, so Intel CPUs get AMX or nothing
//!   (`CpuKernel::runs_here`).
//!
//! Accuracy of both bf16 kernels is bfloat16's (8 bits of mantissa on the inputs;
//! docs/sql.md has the distance to the f32 reference).

use std::arch::x86_64::*;

/// Outputs per panel: two zmm registers of f32.
pub(super) const PANEL: usize = 32;
/// Rows of x per microkernel call: 8 × 2 accumulators + 2 panel registers + 8 broadcasts.
const ROWS: usize = 8;
/// Inputs per pass over a panel: its slice is DEPTH × 32 values (32 KB of f32), L1-sized.
const DEPTH: usize = 256;

/// The packed kernels: a number format and the unit that computes in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Precision {
    /// f32 products and sums (AVX-512F).
    F32,
    /// bfloat16 inputs, f32 sums (AMX-BF16 tiles).
    Bf16,
    /// bfloat16 inputs, f32 sums (AVX512_BF16's `vdpbf16ps`, pairs of products per lane).
    Bf16Pairs,
}

/// Whether this CPU (and OS) runs [`Precision`]'s kernel.
pub(super) fn supported(precision: Precision) -> bool {
    match precision {
        Precision::F32 => std::arch::is_x86_feature_detected!("avx512f"),
        Precision::Bf16 => amx_granted(),
        Precision::Bf16Pairs => {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
        }
    }
}

/// Whether the CPU has AMX-BF16 (and AVX512_BF16, which rounds x to bfloat16) and the
/// OS let this process use the tile registers. Asked once per process: the grant is
/// process-wide and lasts.
fn amx_granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE. (`is_x86_feature_detected!`
        // does not take the AMX names on stable Rust.)
        let leaf7 = __cpuid_count(7, 0);
        let cpu = (leaf7.edx >> 22) & 1 == 1
            && (leaf7.edx >> 24) & 1 == 1
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16");
        cpu && request_tile_state()
    })
}

/// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, Linux 5.16+); without the grant the first tile instruction
/// kills the process with SIGILL.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this code only changes which register state the kernel
    // saves for this process.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// A buffer whose first element is 64-byte aligned (a cache line, one zmm load).
struct Aligned<T> {
    storage: Vec<T>,
    start: usize,
}

impl<T: Copy + Default> Aligned<T> {
    fn zeroed(len: usize) -> Self {
        let per_line = 64 / std::mem::size_of::<T>();
        let storage = vec![T::default(); len + per_line];
        let start = storage.as_ptr().align_offset(64).min(per_line);
        Aligned { storage, start }
    }

    fn as_mut_slice(&mut self, len: usize) -> &mut [T] {
        &mut self.storage[self.start..][..len]
    }

    fn as_ptr(&self) -> *const T {
        self.storage[self.start..].as_ptr()
    }
}

/// W (outputs × inputs, row-major, as Hugging Face stores it) packed for the kernel.
///
/// f32: panel p holds outputs 32p..32p+32, input by input: `[input][32 outputs]`.
/// bf16: the same panels by pairs of inputs, `[pair][32 outputs][2 inputs]`: each half of
/// a pair row (16 outputs × 2 inputs, 64 bytes) is a row of an AMX B tile in the layout
/// `tdpbf16ps` multiplies, and the zmm operand `vdpbf16ps` multiplies. Pairs are padded
/// to a multiple of 16 (one tile's depth).
/// Outputs and inputs past the last are zeros.
pub(super) struct PackedWeights {
    panels: Panels,
    inputs: usize,
    outputs: usize,
}

/// The packed values, in the precision the kernel computes in.
enum Panels {
    F32(Aligned<f32>),
    /// For the AMX kernel.
    Bf16Tiles(Aligned<u16>),
    /// For the AVX512_BF16 kernel (the same layout).
    Bf16Pairs(Aligned<u16>),
}

/// f32 → bfloat16, rounding to nearest even (as `vcvtne2ps2bf16` does; NaNs stay NaNs).
pub(super) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

impl PackedWeights {
    /// Packs `weight` (outputs × inputs) for `precision`.
    pub(super) fn new(weight: &[f32], inputs: usize, outputs: usize, precision: Precision) -> Self {
        assert_eq!(weight.len(), inputs * outputs, "weight is outputs x inputs");
        let count = outputs.div_ceil(PANEL);
        let panels = match precision {
            Precision::F32 => {
                let mut buf = Aligned::zeroed(count * inputs * PANEL);
                let data = buf.as_mut_slice(count * inputs * PANEL);
                for (o, row) in weight.chunks(inputs).enumerate() {
                    let panel = &mut data[(o / PANEL) * inputs * PANEL..];
                    for (i, &w) in row.iter().enumerate() {
                        panel[i * PANEL + o % PANEL] = w;
                    }
                }
                Panels::F32(buf)
            }
            Precision::Bf16 | Precision::Bf16Pairs => {
                // Also asks for the tile state, which the first tile instruction needs.
                assert!(supported(precision), "{precision:?} weights packed on a CPU or OS without its kernel");
                let pairs = padded_pairs(inputs);
                let len = count * pairs * PANEL * 2;
                let mut buf = Aligned::zeroed(len);
                let data = buf.as_mut_slice(len);
                for (o, row) in weight.chunks(inputs).enumerate() {
                    let panel = &mut data[(o / PANEL) * pairs * PANEL * 2..];
                    for (i, &w) in row.iter().enumerate() {
                        panel[(i / 2) * PANEL * 2 + (o % PANEL) * 2 + i % 2] = to_bf16(w);
                    }
                }
                if precision == Precision::Bf16 { Panels::Bf16Tiles(buf) } else { Panels::Bf16Pairs(buf) }
            }
        };
        PackedWeights { panels, inputs, outputs }
    }

    /// Columns `from..to` of x·Wᵀ for `m` rows of x (m × inputs, row-major) into `out`,
    /// whose rows are `ldc` apart and whose first element is column `from` of row 0;
    /// `out` += that when `accumulate`. Single-threaded.
    ///
    /// # Safety
    /// The CPU supports the packed precision ([`supported`]); `x` points to m × inputs
    /// values; `out` to m rows of ldc values with `to - from` writable from its start;
    /// `from` is a multiple of [`PANEL`] and `from <= to <= outputs`.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        &self,
        m: usize,
        from: usize,
        to: usize,
        x: *const f32,
        out: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        debug_assert!(from.is_multiple_of(PANEL) && from <= to && to <= self.outputs);
        // SAFETY: forwarded from the caller.
        unsafe {
            match &self.panels {
                Panels::F32(w) => gemm_f32(self.inputs, w.as_ptr(), m, from, to, x, out, ldc, accumulate),
                Panels::Bf16Tiles(w) => gemm_amx(self.inputs, w.as_ptr(), m, from, to, x, out, ldc, accumulate),
                Panels::Bf16Pairs(w) => gemm_bf16_pairs(self.inputs, w.as_ptr(), m, from, to, x, out, ldc, accumulate),
            }
        }
    }
}

/// Store masks of the two zmm halves of a panel with `width` (1..=32) live outputs.
fn panel_masks(width: usize) -> [__mmask16; 2] {
    let low = if width >= 16 { 0xffff } else { (1u16 << width) - 1 };
    let high = if width >= 32 {
        0xffff
    } else if width > 16 {
        (1u16 << (width - 16)) - 1
    } else {
        0
    };
    [low, high]
}

/// See [`PackedWeights::gemm`]; `w` is the f32 packing of a k-input layer, x read in
/// slices of `DEPTH` inputs by [`for_each_block`].
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    k: usize,
    w: *const f32,
    m: usize,
    from: usize,
    to: usize,
    x: *const f32,
    out: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: x holds m rows of k values (the caller's bounds).
    let x = unsafe { std::slice::from_raw_parts(x, m * k) };
    // SAFETY: panel column/PANEL holds k × PANEL values, of which inputs start..start +
    // depth are read; the rest is for_each_block's.
    unsafe {
        for_each_block(
            x,
            k,
            from,
            to,
            out,
            ldc,
            accumulate,
            |start, column| w.add((column / PANEL) * k * PANEL + start * PANEL),
            |a, depth, b, c, rows, load, masks, next| kernel_f32(depth, a, b, c, ldc, rows, load, masks, next),
        )
    }
}

/// The blocking both AVX-512 kernels share, over x as m rows of `width` values (inputs,
/// or pairs of them): for each slice of `DEPTH` values, the slice is first copied into
/// blocks of 8 rows laid out value by value (`[block][value][8 rows]`; a last block's
/// missing rows hold whatever the buffer held, harmless because those rows are never
/// stored), so that a kernel's 8 broadcasts per value come from one pointer at fixed
/// offsets (read in place, each row needed its own address arithmetic in the inner loop,
/// about as many integer instructions as FMAs); then for each panel of 32 outputs in
/// `from..to`, `kernel(block, depth, b, c, rows, load, masks, next)` runs on each block in
/// turn (BLIS's order: a panel's slice stays in L1 while the blocks stream past it from
/// L2), `b` being the panel slice (`panel(start, column)`: where the packing holds the
/// panel at `column` from input `start`), `c` the block's first row of `out` at `column`,
/// `load` whether it adds to what `out` holds, and `next` — for the first block only,
/// else null — the panel slice that comes after this one, for the kernel to prefetch
/// while it computes. Panel slices lie a whole panel apart in memory, so the hardware's
/// prefetchers do not see the next one coming; fetched on demand, a batch of one image
/// or sentence (too few rows to reuse a slice much) waited on memory for each: prefetched,
/// on a 2-core Zen 4 one sentence took 11.6 ms instead of 13.5 and one image 52 ms
/// instead of 62 (medians of six rounds each, alternating in one process; in bf16 6.0
/// and 32 ms instead of 6.5 and 37); batches of 16 within noise.
///
/// # Safety
/// `out` points to `x.len() / width` rows of `ldc` values with `to - from` writable from
/// each row's start; `panel` gives valid slice addresses for inputs below `width` and
/// columns in `from..to`, and `kernel` is sound for those arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn for_each_block<T: Copy + Default, W>(
    x: &[T],
    width: usize,
    from: usize,
    to: usize,
    out: *mut f32,
    ldc: usize,
    accumulate: bool,
    panel: impl Fn(usize, usize) -> *const W,
    mut kernel: impl FnMut(*const T, usize, *const W, *mut f32, usize, bool, [__mmask16; 2], *const W),
) {
    let m = x.len() / width;
    let blocks = m.div_ceil(ROWS);
    let mut x_blocks = vec![T::default(); blocks * ROWS * DEPTH.min(width)];
    for start in (0..width).step_by(DEPTH) {
        let depth = DEPTH.min(width - start);
        for (r, row) in x.chunks_exact(width).enumerate() {
            let block = &mut x_blocks[(r / ROWS) * depth * ROWS..][..depth * ROWS];
            for (p, &v) in row[start..start + depth].iter().enumerate() {
                block[p * ROWS + r % ROWS] = v;
            }
        }
        let load = accumulate || start > 0;
        for column in (from..to).step_by(PANEL) {
            let masks = panel_masks(PANEL.min(to - column));
            // The panel slice after this one: the next panel's, else the first panel's of
            // the next slice of inputs.
            let next = if column + PANEL < to {
                panel(start, column + PANEL)
            } else if start + DEPTH < width {
                panel(start + DEPTH, from)
            } else {
                std::ptr::null()
            };
            let b = panel(start, column);
            for block in 0..blocks {
                let rows = ROWS.min(m - block * ROWS);
                let a = x_blocks[block * depth * ROWS..].as_ptr();
                // SAFETY: rows and columns inside what the caller vouched for.
                let c = unsafe { out.add(block * ROWS * ldc + column - from) };
                let next = if block == 0 { next } else { std::ptr::null() };
                kernel(a, depth, b, c, rows, load, masks, next);
            }
        }
    }
}

/// c[rows × 32] (+)= a[8 × depth] · b[depth × 32]: `a` a block of 8 rows input by input,
/// `b` a packed panel slice, `c` rows `ldc` apart, of which the first `rows` are read and
/// written, under `masks`; `next` (or null) a panel slice to prefetch into L2 meanwhile,
/// two cache lines per input (as many inputs as this slice has: a prefetch is a hint,
/// and one past the end of the packing reads nothing and cannot fault).
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_f32(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    load: bool,
    masks: [__mmask16; 2],
    next: *const f32,
) {
    // SAFETY: the caller's bounds (see gemm_f32); masked loads and stores touch only the
    // live columns, and only the live rows are touched at all.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        if load {
            for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                acc[0] = _mm512_maskz_loadu_ps(masks[0], c.add(i * ldc));
                acc[1] = _mm512_maskz_loadu_ps(masks[1], c.add(i * ldc + 16));
            }
        }
        for p in 0..depth {
            if !next.is_null() {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(p * PANEL).cast());
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(p * PANEL + 16).cast());
            }
            let b0 = _mm512_load_ps(b.add(p * PANEL));
            let b1 = _mm512_load_ps(b.add(p * PANEL + 16));
            let a = a.add(p * ROWS);
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*a.add(i));
                acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
            }
        }
        for (i, acc) in acc.iter().enumerate().take(rows) {
            _mm512_mask_storeu_ps(c.add(i * ldc), masks[0], acc[0]);
            _mm512_mask_storeu_ps(c.add(i * ldc + 16), masks[1], acc[1]);
        }
    }
}

/// See [`PackedWeights::gemm`]; `w` is the bf16 packing of a k-input layer, read by
/// `vdpbf16ps`. [`gemm_f32`] over pairs of inputs instead of inputs: x is rounded to
/// bfloat16 pairs (one u32 each) first, and a slice of `DEPTH` pairs is a 32 KB panel
/// slice, as in the f32 kernel.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_bf16_pairs(
    k: usize,
    w: *const u16,
    m: usize,
    from: usize,
    to: usize,
    x: *const f32,
    out: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let pairs = k.div_ceil(2);
    let panel_pairs = padded_pairs(k);
    let mut x_pairs = vec![0u32; m * pairs];
    for (r, row) in x_pairs.chunks_mut(pairs).enumerate() {
        // SAFETY: row r of x holds k values; `row` holds k / 2 (rounded up) pairs.
        unsafe { round_row_to_bf16_pairs(std::slice::from_raw_parts(x.add(r * k), k), row) };
    }
    // SAFETY: panel column/PANEL holds panel_pairs × PANEL × 2 values, of which pairs
    // start..start + depth are read; the rest is for_each_block's.
    unsafe {
        for_each_block(
            &x_pairs,
            pairs,
            from,
            to,
            out,
            ldc,
            accumulate,
            |start, column| w.add((column / PANEL) * panel_pairs * PANEL * 2 + start * PANEL * 2),
            |a, depth, b, c, rows, load, masks, next| kernel_bf16_pairs(depth, a, b, c, ldc, rows, load, masks, next),
        )
    }
}

/// c[rows × 32] (+)= a[8 × depth pairs] · b[depth pairs × 32]: [`kernel_f32`] with a pair
/// of bfloat16 products per lane and instruction.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_bf16_pairs(
    depth: usize,
    a: *const u32,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    load: bool,
    masks: [__mmask16; 2],
    next: *const u16,
) {
    // SAFETY: as kernel_f32's; a panel's pair row is 128 bytes and 64-byte aligned.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        if load {
            for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                acc[0] = _mm512_maskz_loadu_ps(masks[0], c.add(i * ldc));
                acc[1] = _mm512_maskz_loadu_ps(masks[1], c.add(i * ldc + 16));
            }
        }
        for p in 0..depth {
            if !next.is_null() {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(p * PANEL * 2).cast());
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(p * PANEL * 2 + 32).cast());
            }
            let b0: __m512bh = std::mem::transmute(_mm512_load_si512(b.add(p * PANEL * 2).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_load_si512(b.add(p * PANEL * 2 + 32).cast()));
            let a = a.add(p * ROWS);
            for (i, acc) in acc.iter_mut().enumerate() {
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
            }
        }
        for (i, acc) in acc.iter().enumerate().take(rows) {
            _mm512_mask_storeu_ps(c.add(i * ldc), masks[0], acc[0]);
            _mm512_mask_storeu_ps(c.add(i * ldc + 16), masks[1], acc[1]);
        }
    }
}

/// Pairs of inputs a bf16 packing holds for `inputs`: whole tiles of 16 pairs.
fn padded_pairs(inputs: usize) -> usize {
    inputs.div_ceil(2).next_multiple_of(TILE_PAIRS)
}

/// Input pairs per tile (a tile row is 64 bytes: 16 pairs of bf16 in x's tiles, 16
/// outputs × one pair in W's).
const TILE_PAIRS: usize = 16;
/// Rows of an x tile and of an accumulator tile.
const TILE_ROWS: usize = 16;

/// The tile configuration `ldtilecfg` loads (palette 1): tiles 0–3 accumulate a 32 × 32
/// block of the output (16 rows × 16 f32 each), tiles 4–5 hold 16 rows of x each (16
/// pairs), tiles 6–7 the two halves of a panel (16 pairs × 16 outputs). Every tile is 16
/// rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const TILES: TileConfig = {
    let mut config = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
    let mut tile = 0;
    while tile < 8 {
        config.bytes_per_row[tile] = 64;
        config.rows[tile] = TILE_ROWS as u8;
        tile += 1;
    }
    config
};

/// See [`PackedWeights::gemm`]; `w` is the bf16 packing of a k-input layer. x is rounded
/// to bfloat16 first into a buffer padded to whole tiles (32 rows, 16 pairs), so that
/// every tile load is a full one; the output block is stored from the tiles to a 32 × 32
/// buffer and added to (or copied into) `out` where it has rows and columns.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_amx(
    k: usize,
    w: *const u16,
    m: usize,
    from: usize,
    to: usize,
    x: *const f32,
    out: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let pairs = padded_pairs(k);
    let rows = m.next_multiple_of(2 * TILE_ROWS);
    let mut x_bf16 = vec![0u32; rows * pairs];
    for (r, row) in x_bf16.chunks_mut(pairs).take(m).enumerate() {
        // SAFETY: row r of x holds k values; `row` holds at least k / 2 (rounded up) pairs.
        unsafe { round_row_to_bf16_pairs(std::slice::from_raw_parts(x.add(r * k), k), row) };
    }
    let x_stride = pairs * 4; // bytes between rows of x_bf16
    let mut block = Aligned::<f32>::zeroed(PANEL * 2 * TILE_ROWS);
    let block = block.as_mut_slice(PANEL * 2 * TILE_ROWS);
    // SAFETY: the caller checked the CPU and the grant (`supported`); every tile load reads
    // 16 rows of 64 bytes inside x_bf16 (padded to whole tiles) or inside a panel (padded
    // to whole tiles of pairs); the stores write 16 rows of 64 bytes inside `block`.
    unsafe {
        std::arch::asm!("ldtilecfg [{0}]", in(reg) &TILES as *const TileConfig, options(nostack, readonly));
        for column in (from..to).step_by(PANEL) {
            let panel = w.add((column / PANEL) * pairs * PANEL * 2);
            for row in (0..m).step_by(2 * TILE_ROWS) {
                std::arch::asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for pair in (0..pairs).step_by(TILE_PAIRS) {
                    let x0 = x_bf16.as_ptr().add(row * pairs + pair);
                    let x1 = x0.add(TILE_ROWS * pairs);
                    let w0 = panel.add(pair * PANEL * 2);
                    let w1 = w0.add(32); // outputs 16..32: the second 64 bytes of each pair row
                    std::arch::asm!(
                        "tileloadd tmm4, [{x0} + {xs}*1]",
                        "tileloadd tmm5, [{x1} + {xs}*1]",
                        "tileloadd tmm6, [{w0} + {ws}*1]",
                        "tileloadd tmm7, [{w1} + {ws}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        x0 = in(reg) x0,
                        x1 = in(reg) x1,
                        w0 = in(reg) w0,
                        w1 = in(reg) w1,
                        xs = in(reg) x_stride,
                        ws = in(reg) PANEL * 2 * 2,
                        options(nostack, readonly),
                    );
                }
                let b = block.as_mut_ptr();
                std::arch::asm!(
                    "tilestored [{b0} + {bs}*1], tmm0",
                    "tilestored [{b1} + {bs}*1], tmm1",
                    "tilestored [{b2} + {bs}*1], tmm2",
                    "tilestored [{b3} + {bs}*1], tmm3",
                    b0 = in(reg) b,
                    b1 = in(reg) b.add(16),
                    b2 = in(reg) b.add(TILE_ROWS * PANEL),
                    b3 = in(reg) b.add(TILE_ROWS * PANEL + 16),
                    bs = in(reg) PANEL * 4,
                    options(nostack),
                );
                let width = PANEL.min(to - column);
                for r in 0..(2 * TILE_ROWS).min(m - row) {
                    let out = std::slice::from_raw_parts_mut(out.add((row + r) * ldc + column - from), width);
                    let sums = &block[r * PANEL..][..width];
                    if accumulate {
                        out.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
                    } else {
                        out.copy_from_slice(sums);
                    }
                }
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// `row` (f32) rounded to bfloat16, two per u32 (the even input in the low half); an odd
/// last input is paired with zero.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_row_to_bf16_pairs(row: &[f32], pairs: &mut [u32]) {
    let mut chunks = row.chunks_exact(32);
    let mut at = 0;
    for chunk in &mut chunks {
        // SAFETY: chunk holds 32 values; `pairs` holds row.len()/2 (rounded up) u32s and
        // 16 of them are written from `at`.
        unsafe {
            let low = _mm512_loadu_ps(chunk.as_ptr());
            let high = _mm512_loadu_ps(chunk.as_ptr().add(16));
            // Element i of the result is low[i] for i < 16, high[i - 16] after.
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(pairs.as_mut_ptr().add(at).cast(), packed);
        }
        at += 16;
    }
    for (pair, values) in pairs[at..].iter_mut().zip(chunks.remainder().chunks(2)) {
        let low = to_bf16(values[0]) as u32;
        let high = values.get(1).map_or(0, |&v| to_bf16(v) as u32);
        *pair = low | (high << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count).map(|i| (((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0) - 1.0).collect()
    }

    /// out (+)= x·Wᵀ the slow way, columns from..to.
    fn reference(w: &[f32], k: usize, x: &[f32], from: usize, to: usize, start: &[f32]) -> Vec<f32> {
        let m = x.len() / k;
        let n = to - from;
        let mut out = start.to_vec();
        for r in 0..m {
            for o in from..to {
                let dot: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[o * k + i] as f64).sum();
                out[r * n + (o - from)] += dot as f32;
            }
        }
        out
    }

    /// Every shape edge: rows not a multiple of 8, inputs not a multiple of the depth
    /// (nor even, for bf16's pairs), outputs not a multiple of the panel, column ranges
    /// that start at a later panel, overwrite and accumulate.
    fn check(precision: Precision, tolerance: impl Fn(usize) -> f32) {
        if !supported(precision) {
            eprintln!("skipped: this CPU lacks the {precision:?} kernel's features");
            return;
        }
        for (m, k, n) in [(1, 3, 5), (12, 256, 32), (13, 257, 45), (50, 768, 96), (7, 513, 64), (25, 31, 17)] {
            let w = values(n * k, 1);
            let x = values(m * k, 2);
            let packed = PackedWeights::new(&w, k, n, precision);
            for (from, to) in [(0, n), (PANEL.min(n - n % PANEL), n)] {
                let width = to - from;
                for accumulate in [false, true] {
                    let start = if accumulate { values(m * width, 3) } else { vec![0.0; m * width] };
                    let mut out = if accumulate { start.clone() } else { vec![f32::NAN; m * width] };
                    // SAFETY: supported; out is m × width with ldc = width.
                    unsafe { packed.gemm(m, from, to, x.as_ptr(), out.as_mut_ptr(), width, accumulate) };
                    let want = reference(&w, k, &x, from, to, &start);
                    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (got - want).abs() <= tolerance(k),
                            "{precision:?} m {m} k {k} n {n} cols {from}..{to} acc {accumulate} at {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_f32_kernel_equals_the_plain_product_on_every_shape_edge() {
        check(Precision::F32, |k| 1e-6 * k as f32);
    }

    #[test]
    fn the_amx_bf16_kernel_is_within_bfloat16_rounding_of_the_plain_product() {
        // Each product has two inputs rounded to 8 mantissa bits (relative error ≤ 2⁻⁸
        // each); values are ≤ 1, so the sum is off by at most about k · 2⁻⁷.
        check(Precision::Bf16, |k| k as f32 * 2f32.powi(-7));
    }

    #[test]
    fn the_avx512_bf16_kernel_is_within_bfloat16_rounding_of_the_plain_product() {
        check(Precision::Bf16Pairs, |k| k as f32 * 2f32.powi(-7));
    }

    /// Exact where rounding cannot hide a mistake: on inputs that are multiples of 1/8 in
    /// [-1, 1] (exact in bfloat16), every product and partial sum is a multiple of 1/64
    /// below 2¹⁸ and so exact in f32, in any order. Every kernel must then equal the plain
    /// product bit for bit, so a misplaced pair, row or output shows however small.
    #[test]
    fn every_kernel_is_exact_where_the_arithmetic_is() {
        let eighths = |count: usize, seed: usize| -> Vec<f32> {
            (0..count).map(|i| ((i * 7919 + seed * 104_729) % 17) as f32 / 8.0 - 1.0).collect()
        };
        for precision in [Precision::F32, Precision::Bf16, Precision::Bf16Pairs] {
            if !supported(precision) {
                eprintln!("skipped: this CPU lacks the {precision:?} kernel's features");
                continue;
            }
            for (m, k, n) in [(13, 257, 45), (50, 768, 96), (9, 3072, 33)] {
                let (w, x) = (eighths(n * k, 6), eighths(m * k, 7));
                let mut out = vec![f32::NAN; m * n];
                // SAFETY: supported; out is m × n.
                unsafe {
                    PackedWeights::new(&w, k, n, precision).gemm(m, 0, n, x.as_ptr(), out.as_mut_ptr(), n, false)
                };
                assert_eq!(out, reference(&w, k, &x, 0, n, &vec![0.0; m * n]), "{precision:?} m {m} k {k} n {n}");
            }
        }
    }

    /// The two bf16 kernels round x and W the same way; only their order of summing
    /// differs, so they agree to f32 rounding of the sums, far inside bfloat16's error.
    #[test]
    fn the_two_bf16_kernels_agree_where_both_run() {
        if !supported(Precision::Bf16) || !supported(Precision::Bf16Pairs) {
            eprintln!("skipped: this CPU lacks one of the bf16 kernels");
            return;
        }
        let (m, k, n) = (37, 771, 70);
        let (w, x) = (values(n * k, 4), values(m * k, 5));
        let run = |precision| {
            let mut out = vec![0f32; m * n];
            // SAFETY: supported; out is m × n.
            unsafe { PackedWeights::new(&w, k, n, precision).gemm(m, 0, n, x.as_ptr(), out.as_mut_ptr(), n, false) };
            out
        };
        for (tiles, pairs) in run(Precision::Bf16).iter().zip(run(Precision::Bf16Pairs)) {
            assert!((tiles - pairs).abs() <= 1e-6 * k as f32, "{tiles} vs {pairs}");
        }
    }

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even_as_the_instruction_does() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
        if !supported(Precision::Bf16Pairs) {
            return;
        }
        let row: Vec<f32> = values(67, 5).iter().map(|v| v * 3.7).collect();
        let mut pairs = vec![0u32; 34];
        // SAFETY: supported; pairs holds ceil(67 / 2).
        unsafe { round_row_to_bf16_pairs(&row, &mut pairs) };
        for (i, v) in row.iter().enumerate() {
            let half = (pairs[i / 2] >> (16 * (i % 2))) as u16;
            assert_eq!(half, to_bf16(*v), "value {i}: {v}");
        }
        assert_eq!(pairs[33] >> 16, 0, "the odd last input is paired with zero");
    }

    #[test]
    fn panel_masks_cover_exactly_the_live_outputs() {
        assert_eq!(panel_masks(32), [0xffff, 0xffff]);
        assert_eq!(panel_masks(16), [0xffff, 0]);
        assert_eq!(panel_masks(17), [0xffff, 1]);
        assert_eq!(panel_masks(5), [0b11111, 0]);
    }
}
