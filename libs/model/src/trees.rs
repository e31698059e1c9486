//! The tree ensemble in its portable form (what a bundle stores), whatever trained it.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Deepest tree the fast predictor lays out as a complete array (2^16 leaves).
pub const MAX_DEPTH: usize = 16;

/// One node. A leaf has `left == right == 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Encoded column compared at this split.
    #[serde(default)]
    pub feature: u32,
    /// `x < threshold` goes left; `x >= threshold` goes right.
    #[serde(default)]
    pub threshold: f32,
    #[serde(default)]
    pub left: u32,
    #[serde(default)]
    pub right: u32,
    /// Where a missing (NaN) value goes.
    #[serde(default)]
    pub default_left: bool,
    /// Leaf output in margin (log-odds) units; unused on internal nodes.
    #[serde(default)]
    pub value: f32,
    /// Training weight that reached this node (row count or hessian sum), for TreeSHAP.
    pub cover: f64,
}

impl Node {
    /// A leaf with this output and no cover yet.
    pub fn leaf(value: f32) -> Node {
        Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: true,
            value,
            cover: 0.0,
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.left == 0 && self.right == 0
    }
}

/// A tree as a node list; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Index of the leaf that `row` reaches.
    pub fn leaf_index(&self, row: &[f32]) -> usize {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.is_leaf() {
                return i;
            }
            i = if goes_left(n, row[n.feature as usize]) {
                n.left as usize
            } else {
                n.right as usize
            };
        }
    }

    /// Depth of the deepest leaf (a lone leaf has depth 0).
    pub fn depth(&self) -> usize {
        fn walk(t: &Tree, i: usize) -> usize {
            let n = &t.nodes[i];
            if n.is_leaf() {
                0
            } else {
                1 + walk(t, n.left as usize).max(walk(t, n.right as usize))
            }
        }
        walk(self, 0)
    }

    /// The cover-weighted mean leaf value: the tree's expected output.
    pub fn expected_value(&self) -> f64 {
        fn walk(t: &Tree, i: usize) -> f64 {
            let n = &t.nodes[i];
            if n.is_leaf() {
                return f64::from(n.value);
            }
            let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
            let total = l.cover + r.cover;
            if total <= 0.0 {
                return 0.5 * (walk(t, n.left as usize) + walk(t, n.right as usize));
            }
            (l.cover * walk(t, n.left as usize) + r.cover * walk(t, n.right as usize)) / total
        }
        walk(self, 0)
    }
}

/// The split rule shared by every evaluator.
#[inline]
pub fn goes_left(n: &Node, x: f32) -> bool {
    if x.is_nan() {
        n.default_left
    } else {
        x < n.threshold
    }
}

/// Trees plus the starting margin; `p = sigmoid(base_margin + sum of leaves)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// Number of encoded input columns the trees read.
    pub n_features: usize,
    pub base_margin: f32,
    pub trees: Vec<Tree>,
}

impl Ensemble {
    /// Checks structure: child indices in range, no cycles, features within `n_features`,
    /// depth within what the fast predictor supports.
    pub fn check(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidModel(m));
        if self.trees.is_empty() {
            return bad("the model has no trees".into());
        }
        if !self.base_margin.is_finite() {
            return bad("base margin is not finite".into());
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let n = tree.nodes.len();
            if n == 0 {
                return bad(format!("tree {t} is empty"));
            }
            // Children must point forward: this rules out cycles and makes depth() terminate.
            for (i, node) in tree.nodes.iter().enumerate() {
                if node.is_leaf() {
                    if !node.value.is_finite() {
                        return bad(format!("tree {t} node {i}: leaf value is not finite"));
                    }
                    continue;
                }
                let (l, r) = (node.left as usize, node.right as usize);
                if l <= i || r <= i || l >= n || r >= n || l == r {
                    return bad(format!("tree {t} node {i}: invalid children {l}, {r}"));
                }
                if node.feature as usize >= self.n_features {
                    return bad(format!(
                        "tree {t} node {i} splits on column {} but the model has {} columns",
                        node.feature, self.n_features
                    ));
                }
            }
            let d = tree.depth();
            if d > MAX_DEPTH {
                return bad(format!(
                    "tree {t} has depth {d}; at most {MAX_DEPTH} is supported"
                ));
            }
        }
        Ok(())
    }

    /// Margin by walking the node lists: the reference the fast predictor is tested against.
    pub fn margin_reference(&self, row: &[f32]) -> f32 {
        let mut m = self.base_margin;
        for t in &self.trees {
            m += t.nodes[t.leaf_index(row)].value;
        }
        m
    }

    /// Deepest tree.
    pub fn max_depth(&self) -> usize {
        self.trees.iter().map(Tree::depth).max().unwrap_or(0)
    }

    /// Sets every node's cover to the number of `rows` (row-major, `n_features` wide) reaching it.
    pub fn set_covers_from_rows(&mut self, rows: &[f32]) {
        for t in &mut self.trees {
            for n in &mut t.nodes {
                n.cover = 0.0;
            }
            for row in rows.chunks_exact(self.n_features) {
                let mut i = 0usize;
                loop {
                    t.nodes[i].cover += 1.0;
                    let n = &t.nodes[i];
                    if n.is_leaf() {
                        break;
                    }
                    i = if goes_left(n, row[n.feature as usize]) {
                        n.left as usize
                    } else {
                        n.right as usize
                    };
                }
            }
        }
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
