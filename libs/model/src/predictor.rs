//! The fast predictor: each tree laid out as a complete binary tree in flat arrays, so that
//! descent is branch-free (`next = 2·i + 1 + go_right`) and a block of rows steps through one
//! tree at a time while that tree is hot in cache.

use rayon::prelude::*;

use crate::trees::{Ensemble, Tree};

/// Rows evaluated together per tree.
const BLOCK: usize = 64;

#[derive(Debug, Clone)]
struct FlatTree {
    depth: u32,
    /// Offset of this tree's internal nodes (2^depth - 1 of them).
    inner: usize,
    /// Offset of this tree's leaves (2^depth of them).
    leaves: usize,
}

/// Flattened trees, evaluated without allocation. Margins are accumulated in `f32` in tree
/// order, exactly as the `gbdt` crate does, so the result is bit-identical to it.
#[derive(Debug, Clone)]
pub struct Predictor {
    n_features: usize,
    base: f32,
    trees: Vec<FlatTree>,
    feature: Vec<u32>,
    threshold: Vec<f32>,
    /// 1 where a missing value goes right.
    missing_right: Vec<bool>,
    leaf: Vec<f32>,
}

impl Predictor {
    /// Lays the ensemble out; call `Ensemble::check` first (it bounds the depth).
    pub fn new(ensemble: &Ensemble) -> Predictor {
        let mut p = Predictor {
            n_features: ensemble.n_features,
            base: ensemble.base_margin,
            trees: Vec::with_capacity(ensemble.trees.len()),
            feature: Vec::new(),
            threshold: Vec::new(),
            missing_right: Vec::new(),
            leaf: Vec::new(),
        };
        for t in &ensemble.trees {
            let depth = t.depth();
            let inner = p.feature.len();
            let leaves = p.leaf.len();
            let n_inner = (1usize << depth) - 1;
            p.feature.resize(inner + n_inner, 0);
            // NaN threshold and missing-left: a padding node sends every value left.
            p.threshold.resize(inner + n_inner, f32::NAN);
            p.missing_right.resize(inner + n_inner, false);
            p.leaf.resize(leaves + (1usize << depth), 0.0);
            p.fill(t, 0, 0, depth, inner, leaves);
            p.trees.push(FlatTree {
                depth: depth as u32,
                inner,
                leaves,
            });
        }
        p
    }

    /// Copies node `node` of `t` to complete-tree position `pos` (at `level`).
    fn fill(
        &mut self,
        t: &Tree,
        node: usize,
        pos: usize,
        depth: usize,
        inner: usize,
        leaves: usize,
    ) {
        let n = &t.nodes[node];
        let level = usize::BITS as usize - 1 - (pos + 1).leading_zeros() as usize;
        if level == depth {
            self.leaf[leaves + pos - ((1 << depth) - 1)] = n.value;
            return;
        }
        if n.is_leaf() {
            // A shallow leaf: pad with always-left nodes; every leaf below it carries its value.
            let span = 1usize << (depth - level);
            let first = ((pos + 1) << (depth - level)) - 1 - ((1 << depth) - 1);
            self.leaf[leaves + first..leaves + first + span].fill(n.value);
            return;
        }
        self.feature[inner + pos] = n.feature;
        self.threshold[inner + pos] = n.threshold;
        self.missing_right[inner + pos] = !n.default_left;
        self.fill(t, n.left as usize, 2 * pos + 1, depth, inner, leaves);
        self.fill(t, n.right as usize, 2 * pos + 2, depth, inner, leaves);
    }

    /// Number of encoded input columns.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    #[inline]
    fn leaf_of(&self, t: &FlatTree, row: &[f32]) -> f32 {
        let mut i = 0usize;
        for _ in 0..t.depth {
            let k = t.inner + i;
            let x = row[self.feature[k] as usize];
            // NaN compares false, so a missing value goes right only where its default says so.
            let right = (x >= self.threshold[k]) | (x.is_nan() & self.missing_right[k]);
            i = 2 * i + 1 + usize::from(right);
        }
        self.leaf[t.leaves + i - ((1usize << t.depth) - 1)]
    }

    /// Raw margin (log-odds) of one encoded row.
    pub fn margin(&self, row: &[f32]) -> f32 {
        debug_assert_eq!(row.len(), self.n_features);
        let mut m = self.base;
        for t in &self.trees {
            m += self.leaf_of(t, row);
        }
        m
    }

    /// Margins of row-major `rows` into `out`, one block of rows per tree pass.
    pub fn margins(&self, rows: &[f32], out: &mut [f32]) {
        let w = self.n_features;
        assert_eq!(rows.len(), out.len() * w, "rows and output sizes disagree");
        for (block, o) in rows.chunks(BLOCK * w).zip(out.chunks_mut(BLOCK)) {
            o.fill(self.base);
            for t in &self.trees {
                for (row, m) in block.chunks_exact(w).zip(o.iter_mut()) {
                    *m += self.leaf_of(t, row);
                }
            }
        }
    }

    /// Like [`Predictor::margins`], spread over the rayon thread pool.
    pub fn margins_parallel(&self, rows: &[f32], out: &mut [f32]) {
        let w = self.n_features;
        const CHUNK: usize = BLOCK * 16;
        rows.par_chunks(CHUNK * w)
            .zip(out.par_chunks_mut(CHUNK))
            .for_each(|(r, o)| self.margins(r, o));
    }
}

/// Checks the flat layout against node-list descent (used by tests and on bundle load).
pub fn agrees_with_reference(ensemble: &Ensemble, predictor: &Predictor, row: &[f32]) -> bool {
    let fast = predictor.margin(row);
    let slow = ensemble.margin_reference(row);
    fast == slow || (fast - slow).abs() <= 1e-6 * (1.0 + slow.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::Node;

    fn leaf(v: f32) -> Node {
        Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: true,
            value: v,
            cover: 1.0,
        }
    }
    fn split(f: u32, t: f32, l: u32, r: u32, dl: bool) -> Node {
        Node {
            feature: f,
            threshold: t,
            left: l,
            right: r,
            default_left: dl,
            value: 0.0,
            cover: 2.0,
        }
    }

    /// An unbalanced tree: root splits on x0; left is a leaf, right splits on x1 (missing right).
    fn ensemble() -> Ensemble {
        Ensemble {
            n_features: 2,
            base_margin: 0.5,
            trees: vec![
                Tree {
                    nodes: vec![
                        split(0, 1.0, 1, 2, true),
                        leaf(-1.0),
                        split(1, 5.0, 3, 4, false),
                        leaf(2.0),
                        leaf(3.0),
                    ],
                },
                Tree {
                    nodes: vec![leaf(0.25)],
                },
            ],
        }
    }

    #[test]
    fn flat_layout_matches_node_walk_including_missing_values() {
        let e = ensemble();
        e.check().unwrap();
        let p = Predictor::new(&e);
        let rows = [
            [0.0, 0.0],
            [1.0, 4.9],
            [1.0, 5.0],
            [7.0, f32::NAN],
            [f32::NAN, 9.0],
            [f32::INFINITY, -1.0],
        ];
        let expected = [-0.25, 2.75, 3.75, 3.75, -0.25, 2.75];
        for (row, want) in rows.iter().zip(expected) {
            assert_eq!(p.margin(row), want, "row {row:?}");
            assert_eq!(e.margin_reference(row), want);
        }
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut out = vec![0.0; rows.len()];
        p.margins_parallel(&flat, &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn check_rejects_cycles_and_out_of_range_features() {
        let mut e = ensemble();
        e.trees[0].nodes[2].left = 0;
        assert!(e.check().is_err());
        let mut e = ensemble();
        e.trees[0].nodes[2].feature = 9;
        assert!(e.check().is_err());
    }
}
