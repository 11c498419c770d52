//! exp for whole rows at a time: the quick-GELU activation and the attention softmax.
//!
//! `f32::exp` is a libm call per value, which no compiler vectorises; for ViT-B/32 that is
//! 2.4 M calls per image batch layer in the activation alone, and profiles put it near a
//! tenth of the CPU forward pass. [`exp`] here is branch-free arithmetic (Cephes' expf
//! polynomial, relative error ≤ 2e-7 over the clamped range) that the compiler turns into
//! 16-lane AVX-512 or 8-lane AVX2 code through `vectorised!`.

/// e^x for x clamped to [-87.3, 88] (where f32's e^x and its 2ⁿ factor are normal), in
/// plain arithmetic.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is subtracted without rounding error.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x.mul_add(LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p.mul_add(r, c);
    }
    let er = (p * r).mul_add(r, r) + 1.0;
    // 2ⁿ: n + 127 in the exponent bits (n is in the low bits of `shifted`).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    er * f32::from_bits((n_bits.wrapping_add(127) as u32) << 23)
}

/// Defines `pub(super) fn $name(args) -> ret` running `$portable` (an `#[inline(always)]`
/// function) compiled for AVX-512 or AVX2 + FMA when the CPU has them, so that its loops
/// vectorise 16 or 8 lanes wide; elsewhere as it is. (Every lane does the same fused
/// arithmetic, so the results do not depend on the width.) Each width gets a named
/// function with the target features that `$portable` inlines into: a closure handed to
/// a generic runner was not always inlined there, and compiled on its own, without FMA,
/// every `mul_add` became a call to the C library's software `fmaf` (5% of an image
/// batch in a perf profile).
macro_rules! vectorised {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $portable:ident) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx2") && has!("fma") && !crate::cpu::avx512_ruled_out() {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    fn avx512($($arg: $ty),*) $(-> $ret)? {
                        $portable($($arg),*)
                    }
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $portable($($arg),*)
                    }
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

vectorised! {
    /// Each x in `row` becomes quickgelu(x + bias) = (x + b)·σ(1.702·(x + b)).
    fn bias_quick_gelu(row: &mut [f32], bias: Option<&[f32]>) = bias_quick_gelu_portable
}

vectorised! {
    /// `scores` become e^(s − max), their sum returned: softmax without the division.
    fn exp_shifted(scores: &mut [f32], max: f32) -> f32 = exp_shifted_portable
}

#[inline(always)]
fn bias_quick_gelu_portable(row: &mut [f32], bias: Option<&[f32]>) {
    let gelu = |x: f32| x / (1.0 + exp(-1.702 * x));
    match bias {
        Some(bias) => row.iter_mut().zip(bias).for_each(|(x, b)| *x = gelu(*x + b)),
        None => row.iter_mut().for_each(|x| *x = gelu(*x)),
    }
}

#[inline(always)]
fn exp_shifted_portable(scores: &mut [f32], max: f32) -> f32 {
    // Eight partial sums, so that the sum does not serialise the vectorised loop.
    let mut sums = [0f32; 8];
    let mut chunks = scores.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (s, sum) in chunk.iter_mut().zip(&mut sums) {
            *s = exp(*s - max);
            *sum += *s;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for s in chunks.into_remainder() {
        *s = exp(*s - max);
        sum += *s;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exp_is_within_a_few_ulps_of_libm_over_the_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.001_3;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_saturates_instead_of_wrapping() {
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    proptest! {
        #[test]
        fn quick_gelu_rows_match_the_scalar_formula(row in proptest::collection::vec(-30f32..30.0, 0..70), b in -2f32..2.0) {
            let bias = vec![b; row.len()];
            let mut fast = row.clone();
            bias_quick_gelu(&mut fast, Some(&bias));
            for (f, x) in fast.iter().zip(&row) {
                let x = x + b;
                let reference = x / (1.0 + (-1.702 * x).exp());
                prop_assert!((f - reference).abs() <= 1e-6 * (1.0 + reference.abs()), "{x}: {f} vs {reference}");
            }
        }

        #[test]
        fn shifted_exps_and_their_sum_match_libm(scores in proptest::collection::vec(-50f32..50.0, 1..90)) {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut fast = scores.clone();
            let sum = exp_shifted(&mut fast, max);
            let reference: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            for (f, r) in fast.iter().zip(&reference) {
                prop_assert!((f - r).abs() <= 1e-6 * r.max(1e-30), "{f} vs {r}");
            }
            let reference_sum: f32 = reference.iter().sum();
            prop_assert!((sum - reference_sum).abs() <= 1e-5 * reference_sum);
        }
    }
}
