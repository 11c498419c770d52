//! The tests that confirm a discovered slice: is its error rate above the rest's?
//!
//! 0/1 errors: Fisher's exact test, one-sided (the hypergeometric upper tail), exact for any
//! slice size. A loss: Welch's t-test, one-sided. Many slices are tested at once, so their
//! p-values are adjusted by Benjamini–Hochberg. Checked against SciPy in the unit tests.

use super::sliceline::Bitmap;

/// One-sided p-value that the rows in `rows` have a higher mean error than the others.
pub fn excess_error_p_value(rows: &Bitmap, errors: &[f64], binary: bool) -> f64 {
    let member = |r: usize| rows[r / 64] >> (r % 64) & 1 == 1;
    if binary {
        let n_total = errors.len() as u64;
        let errors_total = errors.iter().filter(|&&e| e == 1.0).count() as u64;
        let (mut size, mut hits) = (0u64, 0u64);
        for (r, &e) in errors.iter().enumerate() {
            if member(r) {
                size += 1;
                hits += (e == 1.0) as u64;
            }
        }
        return fisher_greater(n_total, errors_total, size, hits);
    }
    let (inside, outside): (Vec<f64>, Vec<f64>) = {
        let mut inside = Vec::new();
        let mut outside = Vec::new();
        for (r, &e) in errors.iter().enumerate() {
            if member(r) { inside.push(e) } else { outside.push(e) }
        }
        (inside, outside)
    };
    welch_greater(&inside, &outside)
}

/// P(X ≥ hits) for X ~ Hypergeometric(population `n`, `successes` in it, `draws`): Fisher's
/// exact test that the drawn rows hold more successes than chance.
pub fn fisher_greater(n: u64, successes: u64, draws: u64, hits: u64) -> f64 {
    let highest = successes.min(draws);
    let lowest = draws.saturating_sub(n - successes);
    if hits <= lowest {
        return 1.0;
    }
    if hits > highest {
        return 0.0;
    }
    let ln_choose =
        |a: u64, b: u64| ln_gamma(a as f64 + 1.0) - ln_gamma(b as f64 + 1.0) - ln_gamma((a - b) as f64 + 1.0);
    let ln_first = ln_choose(successes, hits) + ln_choose(n - successes, draws - hits) - ln_choose(n, draws);
    // Sum the upper tail from its first term by the ratio of consecutive terms.
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    let (n, s, d) = (n as f64, successes as f64, draws as f64);
    let mut x = hits as f64;
    while x < highest as f64 {
        term *= (s - x) * (d - x) / ((x + 1.0) * (n - s - d + x + 1.0));
        sum += term;
        x += 1.0;
        if term < sum * 1e-17 {
            break;
        }
    }
    (ln_first.exp() * sum).min(1.0)
}

/// One-sided Welch's t-test that `a`'s mean is above `b`'s.
pub fn welch_greater(a: &[f64], b: &[f64]) -> f64 {
    let moments = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    if a.len() < 2 || b.len() < 2 {
        return 1.0;
    }
    let ((na, ma, va), (nb, mb, vb)) = (moments(a), moments(b));
    let se2 = va / na + vb / nb;
    if se2 == 0.0 {
        return if ma > mb { 0.0 } else { 1.0 };
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    student_t_upper(t, df)
}

/// P(T > t) for Student's t with `df` degrees of freedom.
pub fn student_t_upper(t: f64, df: f64) -> f64 {
    let tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5);
    if t > 0.0 { tail } else { 1.0 - tail }
}

/// Benjamini–Hochberg adjusted p-values, in the input order.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b) (continued fraction, Numerical
/// Recipes' betacf).
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn fisher_matches_scipy() {
        // scipy.stats.fisher_exact([[8, 2], [1, 5]], alternative="greater").pvalue
        assert!(close(fisher_greater(16, 9, 10, 8), 0.024_475_524_475_524_483, 1e-12));
        // scipy.stats.fisher_exact([[30, 70], [200, 1700]], alternative="greater").pvalue
        let p = fisher_greater(2000, 230, 100, 30);
        assert!(close(p, 2.187_723_254_121_552e-7, 1e-9), "{p}");
        // scipy.stats.hypergeom.sf(2999, 100000, 8000, 30000): a large, unremarkable slice.
        let p = fisher_greater(100_000, 8_000, 30_000, 3_000);
        assert!(close(p, 6.199_934_669_662_839e-51, 1e-6), "{p}");
        assert_eq!(fisher_greater(10, 5, 4, 0), 1.0);
        assert_eq!(fisher_greater(10, 5, 4, 5), 0.0);
    }

    #[test]
    fn welch_matches_scipy() {
        let a = [1.2, 3.4, 2.2, 5.0, 4.1, 3.3];
        let b = [0.5, 1.1, 0.9, 2.0, 1.4, 0.2, 0.7];
        // scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
        let p = welch_greater(&a, &b);
        assert!(close(p, 0.003_948_151_223_189_971, 1e-9), "{p}");
        assert!(close(welch_greater(&b, &a), 1.0 - 0.003_948_151_223_189_971, 1e-9));
    }

    #[test]
    fn benjamini_hochberg_matches_statsmodels() {
        // statsmodels' multipletests(p, method="fdr_bh")[1] (computed with NumPy)
        let p = [0.01, 0.04, 0.03, 0.005, 0.5];
        let expected = [0.025, 0.05, 0.05, 0.025, 0.5];
        for (a, e) in benjamini_hochberg(&p).iter().zip(expected) {
            assert!(close(*a, e, 1e-12), "{a} vs {e}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }
}
