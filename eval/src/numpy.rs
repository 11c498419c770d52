//! The few numpy computations whose exact bits COCOeval's results depend on.
//!
//! pycocotools builds its thresholds with `np.linspace` and averages with `np.mean`; a
//! different but "equivalent" formula moves results in the last bits (e.g. `i / 100`
//! instead of `linspace(0, 1, 101)` differs for 10 of the 101 recall thresholds).

/// `np.linspace(start, stop, num)` (endpoint included): `i * step + start` with
/// `step = (stop - start) / (num - 1)`, and the last value exactly `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            values[num - 1] = stop;
            values
        }
    }
}

/// numpy's pairwise summation of a contiguous float64 array (`np.add.reduce`): runs of
/// fewer than 8 summed in order, up to 128 in eight interleaved accumulators, longer
/// runs split in two at a multiple of 8.
pub fn pairwise_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        values.iter().fold(0.0, |sum, &v| sum + v)
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&values[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += values[i + j];
            }
            i += 8;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[i..] {
            sum += v;
        }
        sum
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
    }
}

/// `np.mean` of a 1-D float64 array: the pairwise sum (started from 0.0) over the count.
/// `None` for an empty array (numpy returns NaN with a warning).
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() { None } else { Some((0.0 + pairwise_sum(values)) / values.len() as f64) }
}

/// `np.nanmean` of a 1-D float64 array with `None` for NaN: numpy replaces the NaNs by 0,
/// takes the pairwise sum of the whole array and divides by the count of the others.
/// `None` when every value is NaN.
pub fn nanmean(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut count = 0usize;
    let zeroed: Vec<f64> = values
        .into_iter()
        .map(|v| {
            count += v.is_some() as usize;
            v.unwrap_or(0.0)
        })
        .collect();
    (count > 0).then(|| (0.0 + pairwise_sum(&zeroed)) / count as f64)
}

/// `np.spacing(1)`: the distance from 1.0 to the next float64.
pub const SPACING_1: f64 = f64::EPSILON;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_bits() {
        // Where np.linspace(0, 1, 101) differs from i / 100 (checked with numpy 2.4).
        let recall = linspace(0.0, 1.0, 101);
        let differ: Vec<usize> = (0..101).filter(|&i| recall[i].to_bits() != (i as f64 / 100.0).to_bits()).collect();
        assert_eq!(differ, [35, 41, 47, 57, 69, 70, 82, 83, 94, 95]);
        assert_eq!(recall[100], 1.0);
        let iou = linspace(0.5, 0.95, 10);
        assert_eq!(iou[0], 0.5);
        assert_eq!(iou[5], 0.75);
        assert_eq!(iou[8], 0.8999999999999999);
        assert_eq!(iou[9], 0.95);
    }

    #[test]
    fn pairwise_sum_is_not_a_plain_loop() {
        // 1e16 + 1 + ... cancels differently in a left-to-right loop than in numpy's blocks.
        let mut values = vec![1.0; 200];
        values[0] = 1e16;
        values[130] = -1e16;
        // numpy 2.4: np.add.reduce gives 178.0, a left-to-right sum 69.0.
        assert_eq!(values.iter().sum::<f64>(), 69.0);
        assert_eq!(pairwise_sum(&values), 178.0);
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }
}
