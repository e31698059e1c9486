//! Stratified, seeded splits of labelled rows (training/test, training/validation).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::ModelError;

/// Stratified, seeded split: returns (train, test) row indices, each sorted.
pub fn stratified_split(
    y: &[bool],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), ModelError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(ModelError::InvalidParams(
            "test fraction must be between 0 and 1".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        idx.shuffle(&mut rng);
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        if n_test == 0 || n_test == idx.len() {
            return Err(ModelError::InvalidParams(format!(
                "too few rows of class {} to split ({} rows)",
                if class { "positive" } else { "negative" },
                idx.len()
            )));
        }
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}
