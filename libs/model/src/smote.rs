//! SMOTE over encoded, scaled rows, with SMOTE-NC's rule for one-hot blocks: a synthetic row
//! takes the most frequent category among the neighbours, so no one-hot value is fractional.

use std::ops::Range;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ModelError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmoteParams {
    /// Neighbours considered per minority row.
    pub k: usize,
    /// Minority count after resampling as a fraction of the majority count (1.0 = balanced).
    pub ratio: f64,
    pub seed: u64,
}

impl Default for SmoteParams {
    fn default() -> Self {
        SmoteParams {
            k: 5,
            ratio: 1.0,
            seed: 42,
        }
    }
}

/// Appends synthetic minority rows to `x`/`y`. `one_hot` lists the column ranges of one-hot
/// blocks; all other columns are interpolated. Returns the number of rows added.
pub fn oversample(
    x: &mut Vec<f32>,
    y: &mut Vec<bool>,
    width: usize,
    one_hot: &[Range<usize>],
    params: &SmoteParams,
) -> Result<usize, ModelError> {
    if params.k == 0 || !(params.ratio > 0.0 && params.ratio <= 1.0) {
        return Err(ModelError::InvalidParams(
            "SMOTE needs k >= 1 and a ratio in (0, 1]".into(),
        ));
    }
    let positives = y.iter().filter(|v| **v).count();
    let minority_label = positives * 2 <= y.len();
    let minority: Vec<usize> = (0..y.len()).filter(|&i| y[i] == minority_label).collect();
    let majority = y.len() - minority.len();
    let target = (majority as f64 * params.ratio).round() as usize;
    if minority.len() < 2 || target <= minority.len() {
        return Ok(0);
    }
    let k = params.k.min(minority.len() - 1);
    let row = |i: usize| &x[i * width..(i + 1) * width];
    // Brute-force neighbours, in parallel: O(m²·width) for m minority rows.
    let neighbours: Vec<Vec<usize>> = minority
        .par_iter()
        .map(|&i| {
            let a = row(i);
            let mut d: Vec<(f32, usize)> = minority
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| {
                    let dist = a
                        .iter()
                        .zip(row(j))
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum::<f32>();
                    (dist, j)
                })
                .collect();
            d.select_nth_unstable_by(k - 1, |p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            let mut nn: Vec<(f32, usize)> = d[..k].to_vec();
            nn.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            nn.into_iter().map(|(_, j)| j).collect()
        })
        .collect();
    let is_one_hot: Vec<bool> = (0..width)
        .map(|c| one_hot.iter().any(|r| r.contains(&c)))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let add = target - minority.len();
    let mut synthetic = Vec::with_capacity(add * width);
    let mut counts = Vec::new();
    for s in 0..add {
        let m = s % minority.len();
        let base = row(minority[m]).to_vec();
        let nn = &neighbours[m];
        let other = row(nn[rng.gen_range(0..nn.len())]);
        let gap: f32 = rng.gen();
        let mut new: Vec<f32> = base
            .iter()
            .zip(other)
            .enumerate()
            .map(|(c, (a, b))| if is_one_hot[c] { *a } else { a + gap * (b - a) })
            .collect();
        for block in one_hot {
            // Most frequent category among the neighbours; ties go to the lowest column.
            counts.clear();
            counts.resize(block.len(), 0usize);
            for &j in nn {
                let r = row(j);
                if let Some(c) = block.clone().find(|&c| r[c] == 1.0) {
                    counts[c - block.start] += 1;
                }
            }
            new[block.clone()].fill(0.0);
            if let Some((best, &n)) = counts
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            {
                if n > 0 {
                    new[block.start + best] = 1.0;
                }
            }
        }
        synthetic.extend(new);
    }
    x.extend(synthetic);
    y.extend(std::iter::repeat_n(minority_label, add));
    Ok(add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_classes_and_keeps_one_hot_blocks_whole() {
        // width 4: two numeric columns, one one-hot block of two.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            let pos = i % 4 == 0;
            let f = i as f32;
            x.extend([
                f,
                -f,
                if i % 3 == 0 { 1.0 } else { 0.0 },
                if i % 3 == 0 { 0.0 } else { 1.0 },
            ]);
            y.push(pos);
        }
        let before = x.clone();
        let added = oversample(
            &mut x,
            &mut y,
            4,
            std::slice::from_ref(&(2..4)),
            &SmoteParams::default(),
        )
        .unwrap();
        assert_eq!(added, 20);
        assert_eq!(y.iter().filter(|v| **v).count(), 30);
        assert_eq!(&x[..before.len()], &before[..]);
        for r in x[before.len()..].chunks(4) {
            assert_eq!(
                r[2] + r[3],
                1.0,
                "one-hot block must hold exactly one 1: {r:?}"
            );
            assert!(r[2] == 0.0 || r[2] == 1.0);
            // Interpolated between two minority rows (multiples of 4 in 0..40).
            assert!((0.0..=36.0).contains(&r[0]) && (r[0] + r[1]).abs() < 1e-4);
        }
        let mut x2 = before.clone();
        let mut y2: Vec<bool> = (0..40).map(|i| i % 4 == 0).collect();
        oversample(
            &mut x2,
            &mut y2,
            4,
            std::slice::from_ref(&(2..4)),
            &SmoteParams::default(),
        )
        .unwrap();
        assert_eq!(x, x2, "seeded: same input, same output");
    }
}
