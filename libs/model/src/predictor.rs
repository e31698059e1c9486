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

/// One split in 8 bytes: the column (high bit set when a missing value goes right) and the
/// threshold, so one load brings both.
#[derive(Debug, Clone, Copy)]
struct Split {
    column: u32,
    threshold: f32,
}

const MISSING_RIGHT: u32 = 1 << 31;

impl Split {
    /// NaN threshold and missing-left: a padding node that sends every value left.
    const PAD: Split = Split {
        column: 0,
        threshold: f32::NAN,
    };

    #[inline(always)]
    fn goes_right(self, row: &[f32]) -> bool {
        let x = row[(self.column & !MISSING_RIGHT) as usize];
        // NaN compares false, so a missing value goes right only where its default says so.
        (x >= self.threshold) | (x.is_nan() & (self.column & MISSING_RIGHT != 0))
    }
}

/// Flattened trees, evaluated without allocation. Margins are accumulated in `f32` in tree
/// order, exactly as the `gbdt` crate does, so the result is bit-identical to it.
#[derive(Debug, Clone)]
pub struct Predictor {
    n_features: usize,
    base: f32,
    trees: Vec<FlatTree>,
    splits: Vec<Split>,
    leaf: Vec<f32>,
}

impl Predictor {
    /// Lays the ensemble out; call `Ensemble::check` first (it bounds the depth).
    pub fn new(ensemble: &Ensemble) -> Predictor {
        let mut p = Predictor {
            n_features: ensemble.n_features,
            base: ensemble.base_margin,
            trees: Vec::with_capacity(ensemble.trees.len()),
            splits: Vec::new(),
            leaf: Vec::new(),
        };
        for t in &ensemble.trees {
            let depth = t.depth();
            let inner = p.splits.len();
            let leaves = p.leaf.len();
            p.splits.resize(inner + (1usize << depth) - 1, Split::PAD);
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

    /// Copies node `node` of `t` to complete-tree position `pos`.
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
        self.splits[inner + pos] = Split {
            column: n.feature | if n.default_left { 0 } else { MISSING_RIGHT },
            threshold: n.threshold,
        };
        self.fill(t, n.left as usize, 2 * pos + 1, depth, inner, leaves);
        self.fill(t, n.right as usize, 2 * pos + 2, depth, inner, leaves);
    }

    /// Number of encoded input columns.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The tree's splits and leaves as slices (bounds known once per tree).
    #[inline(always)]
    fn parts(&self, t: &FlatTree) -> (&[Split], &[f32]) {
        let n = 1usize << t.depth;
        (
            &self.splits[t.inner..t.inner + n - 1],
            &self.leaf[t.leaves..t.leaves + n],
        )
    }

    /// Raw margin (log-odds) of one encoded row. Trees of equal depth are descended four at
    /// a time so that their independent loads overlap; leaves are still added in tree order.
    pub fn margin(&self, row: &[f32]) -> f32 {
        assert_eq!(row.len(), self.n_features, "row has the wrong width");
        let mut m = self.base;
        let mut quads = self.trees.chunks_exact(4);
        for q in &mut quads {
            let d = q[0].depth;
            if q.iter().all(|t| t.depth == d) {
                let parts = [
                    self.parts(&q[0]),
                    self.parts(&q[1]),
                    self.parts(&q[2]),
                    self.parts(&q[3]),
                ];
                let mut i = [0usize; 4];
                for _ in 0..d {
                    for k in 0..4 {
                        i[k] = 2 * i[k] + 1 + usize::from(parts[k].0[i[k]].goes_right(row));
                    }
                }
                for k in 0..4 {
                    m += parts[k].1[i[k] - parts[k].0.len()];
                }
            } else {
                for t in q {
                    m += self.leaf_value(t, row);
                }
            }
        }
        for t in quads.remainder() {
            m += self.leaf_value(t, row);
        }
        m
    }

    #[inline(always)]
    fn leaf_value(&self, t: &FlatTree, row: &[f32]) -> f32 {
        let (splits, leaves) = self.parts(t);
        let mut i = 0usize;
        for _ in 0..t.depth {
            i = 2 * i + 1 + usize::from(splits[i].goes_right(row));
        }
        leaves[i - splits.len()]
    }

    /// Margins of row-major `rows` into `out`. A block of rows steps through each tree one
    /// level at a time, so the descents of different rows overlap instead of waiting on
    /// each other.
    pub fn margins(&self, rows: &[f32], out: &mut [f32]) {
        let w = self.n_features;
        assert_eq!(rows.len(), out.len() * w, "rows and output sizes disagree");
        let mut idx = [0usize; BLOCK];
        for (block, o) in rows.chunks(BLOCK * w).zip(out.chunks_mut(BLOCK)) {
            let n = o.len();
            let idx = &mut idx[..n];
            o.fill(self.base);
            for t in &self.trees {
                let (splits, leaves) = self.parts(t);
                idx.fill(0);
                for _ in 0..t.depth {
                    for (i, row) in idx.iter_mut().zip(block.chunks_exact(w)) {
                        *i = 2 * *i + 1 + usize::from(splits[*i].goes_right(row));
                    }
                }
                for (m, i) in o.iter_mut().zip(idx.iter()) {
                    *m += leaves[*i - splits.len()];
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
