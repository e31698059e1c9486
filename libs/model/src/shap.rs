//! Exact path-dependent TreeSHAP (Lundberg et al. 2018, Algorithm 2), the same algorithm
//! behind XGBoost's `pred_contribs`: per-column contributions whose sum plus the bias equals
//! the margin.

use crate::trees::{goes_left, Ensemble, Tree};

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i64,
    zero_fraction: f64,
    one_fraction: f64,
    pweight: f64,
}

/// Computes contributions for one ensemble; reuses its scratch space across calls.
#[derive(Debug, Clone)]
pub struct Explainer {
    /// Sum of the trees' expected values plus the base margin.
    bias: f64,
    max_depth: usize,
}

impl Explainer {
    pub fn new(ensemble: &Ensemble) -> Explainer {
        let bias = f64::from(ensemble.base_margin)
            + ensemble.trees.iter().map(Tree::expected_value).sum::<f64>();
        Explainer {
            bias,
            max_depth: ensemble.max_depth(),
        }
    }

    /// The expected margin: what the contributions are measured from.
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// Scratch buffer size for the deepest tree.
    fn scratch_len(&self) -> usize {
        let d = self.max_depth + 2;
        d * (d + 1) / 2
    }

    /// Writes one contribution per encoded column into `phi` (zeroed first).
    pub fn contributions(&self, ensemble: &Ensemble, row: &[f32], phi: &mut [f64]) {
        phi.fill(0.0);
        let mut path = vec![PathElement::default(); self.scratch_len()];
        for tree in &ensemble.trees {
            if tree.nodes[0].is_leaf() {
                continue;
            }
            recurse(tree, row, phi, &mut path, 0, 0, 0, 1.0, 1.0, -1);
        }
    }
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f64 / (depth + 1) as f64;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f64 / (depth + 1) as f64;
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let mut next_one = path[depth].pweight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].pweight;
            path[i].pweight = next_one * (depth + 1) as f64 / ((i + 1) as f64 * one);
            next_one = tmp - path[i].pweight * zero * (depth - i) as f64 / (depth + 1) as f64;
        } else {
            path[i].pweight = path[i].pweight * (depth + 1) as f64 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let mut next_one = path[depth].pweight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next_one * (depth + 1) as f64 / ((i + 1) as f64 * one);
            total += tmp;
            next_one = path[i].pweight - tmp * zero * (depth - i) as f64 / (depth + 1) as f64;
        } else if zero != 0.0 {
            total += path[i].pweight / zero / ((depth - i) as f64 / (depth + 1) as f64);
        }
    }
    total
}

/// `offset` is where the parent's path starts in the scratch buffer; each level copies it to
/// just after itself, so the buffer needs (depth+1)(depth+2)/2 elements.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the published algorithm's recursion"
)]
fn recurse(
    tree: &Tree,
    row: &[f32],
    phi: &mut [f64],
    buf: &mut [PathElement],
    node: usize,
    offset: usize,
    depth: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    // The parent's path (depth elements) sits at `offset`; this node's path follows it.
    let start = offset + depth;
    buf.copy_within(offset..offset + depth, start);
    let path = &mut buf[start..start + depth + 1];
    extend(path, depth, zero, one, feature);

    let n = &tree.nodes[node];
    if n.is_leaf() {
        for i in 1..=depth {
            let w = unwound_sum(path, depth, i);
            let el = path[i];
            phi[el.feature as usize] +=
                w * (el.one_fraction - el.zero_fraction) * f64::from(n.value);
        }
        return;
    }
    let (hot, cold) = if goes_left(n, row[n.feature as usize]) {
        (n.left as usize, n.right as usize)
    } else {
        (n.right as usize, n.left as usize)
    };
    let cover = n.cover;
    let ratio = |c: usize| {
        if cover > 0.0 {
            tree.nodes[c].cover / cover
        } else {
            0.5
        }
    };
    let (hot_zero, cold_zero) = (ratio(hot), ratio(cold));
    let mut incoming_zero = 1.0;
    let mut incoming_one = 1.0;
    let mut depth = depth;
    let split = i64::from(n.feature);
    // Undo an earlier split on the same feature so it counts once on this path.
    if let Some(k) = (0..=depth).find(|&k| path[k].feature == split) {
        incoming_zero = path[k].zero_fraction;
        incoming_one = path[k].one_fraction;
        unwind(path, depth, k);
        depth -= 1;
    }
    recurse(
        tree,
        row,
        phi,
        buf,
        hot,
        start,
        depth + 1,
        hot_zero * incoming_zero,
        incoming_one,
        split,
    );
    recurse(
        tree,
        row,
        phi,
        buf,
        cold,
        start,
        depth + 1,
        cold_zero * incoming_zero,
        0.0,
        split,
    );
}

/// Largest table (entries) the precomputed explainer builds before falling back to recursion.
const MAX_TABLE: usize = 8 << 20;

/// One distinct feature on a leaf's path: the path's split nodes on it (as bits of the
/// tree's split list), which of those the path takes to the left, and the encoded column.
#[derive(Debug, Clone, Copy)]
struct Slot {
    node_mask: u32,
    left_mask: u32,
    column: u32,
}

/// TreeSHAP with the work that does not depend on the row done up front: for each leaf, the
/// contributions for every subset of its path features that a row can follow (at most 2^depth)
/// are precomputed, so explaining a row is one comparison per split and a few bit operations
/// and additions per leaf. Explaining is bound by memory traffic, so the layout is compact:
/// leaves are visited in order and carry only their feature count (offsets are running sums),
/// and tables hold `f32` (contributions are summed in `f64`). Agrees with [`Explainer`] to
/// about 1e-6; falls back to it for trees with more than 32 splits or very large tables.
#[derive(Debug, Clone)]
pub struct FastExplainer {
    bias: f64,
    /// Per tree: number of splits and of leaves.
    trees: Vec<(u32, u32)>,
    splits: Vec<(u32, f32, bool)>,
    /// Distinct path features per leaf, in visiting order.
    leaf_depth: Vec<u8>,
    slots: Vec<Slot>,
    /// `2^d` rows of `d` contributions per leaf, indexed by the set of path features whose
    /// splits the row follows.
    table: Vec<f32>,
    fallback: Option<Explainer>,
}

impl FastExplainer {
    pub fn new(ensemble: &Ensemble) -> FastExplainer {
        let exact = Explainer::new(ensemble);
        let mut fast = FastExplainer {
            bias: exact.bias(),
            trees: Vec::new(),
            splits: Vec::new(),
            leaf_depth: Vec::new(),
            slots: Vec::new(),
            table: Vec::new(),
            fallback: None,
        };
        let n_splits = |t: &Tree| t.nodes.iter().filter(|n| !n.is_leaf()).count();
        let size: usize = ensemble
            .trees
            .iter()
            .map(|t| {
                let d = t.depth().min(20);
                (1usize << d).saturating_mul(1usize << d).saturating_mul(d)
            })
            .fold(0usize, usize::saturating_add);
        if size > MAX_TABLE || ensemble.trees.iter().any(|t| n_splits(t) > 32) {
            fast.fallback = Some(exact);
            return fast;
        }
        for t in &ensemble.trees {
            let tables = tree_tables(t);
            for &id in &tables.splits {
                let n = &t.nodes[id as usize];
                fast.splits.push((n.feature, n.threshold, n.default_left));
            }
            fast.trees
                .push((tables.splits.len() as u32, tables.leaves.len() as u32));
            for leaf in tables.leaves {
                fast.leaf_depth.push(leaf.features.len() as u8);
                for k in 0..leaf.features.len() {
                    fast.slots.push(Slot {
                        node_mask: leaf.node_mask[k] as u32,
                        left_mask: leaf.left_mask[k] as u32,
                        column: leaf.features[k],
                    });
                }
                fast.table.extend(leaf.table.iter().map(|v| *v as f32));
            }
        }
        fast
    }

    pub fn bias(&self) -> f64 {
        self.bias
    }

    #[inline(always)]
    fn add_leaf<const D: usize>(&self, left_bits: u32, slot: usize, table: usize, phi: &mut [f64]) {
        let slots: &[Slot; D] = self.slots[slot..slot + D].try_into().expect("D slots");
        let mut set = 0usize;
        for (k, s) in slots.iter().enumerate() {
            set |= usize::from((left_bits & s.node_mask) == s.left_mask) << k;
        }
        let values: &[f32; D] = self.table[table + set * D..table + (set + 1) * D]
            .try_into()
            .expect("D values");
        for (s, v) in slots.iter().zip(values) {
            phi[s.column as usize] += f64::from(*v);
        }
    }

    /// Writes one contribution per encoded column into `phi` (zeroed first).
    pub fn contributions(&self, ensemble: &Ensemble, row: &[f32], phi: &mut [f64]) {
        if let Some(exact) = &self.fallback {
            return exact.contributions(ensemble, row, phi);
        }
        phi.fill(0.0);
        let (mut split, mut leaf, mut slot, mut table) = (0usize, 0usize, 0usize, 0usize);
        for &(n_splits, n_leaves) in &self.trees {
            let mut left_bits = 0u32;
            for (b, &(column, threshold, default_left)) in self.splits
                [split..split + n_splits as usize]
                .iter()
                .enumerate()
            {
                let x = row[column as usize];
                let left = if x.is_nan() {
                    default_left
                } else {
                    x < threshold
                };
                left_bits |= u32::from(left) << b;
            }
            split += n_splits as usize;
            for &d in &self.leaf_depth[leaf..leaf + n_leaves as usize] {
                let d = usize::from(d);
                match d {
                    // Trees of depth 4 or less: fixed-size paths, unrolled.
                    1 => self.add_leaf::<1>(left_bits, slot, table, phi),
                    2 => self.add_leaf::<2>(left_bits, slot, table, phi),
                    3 => self.add_leaf::<3>(left_bits, slot, table, phi),
                    4 => self.add_leaf::<4>(left_bits, slot, table, phi),
                    _ => {
                        let slots = &self.slots[slot..slot + d];
                        let mut set = 0usize;
                        for (k, s) in slots.iter().enumerate() {
                            set |= usize::from((left_bits & s.node_mask) == s.left_mask) << k;
                        }
                        let values = &self.table[table + set * d..table + (set + 1) * d];
                        for (s, v) in slots.iter().zip(values) {
                            phi[s.column as usize] += f64::from(*v);
                        }
                    }
                }
                slot += d;
                table += d << d;
            }
            leaf += n_leaves as usize;
        }
    }
}

/// A leaf's precomputed contributions while building.
struct LeafTable {
    node_mask: Vec<u64>,
    left_mask: Vec<u64>,
    features: Vec<u32>,
    table: Vec<f64>,
}

struct TreeTables {
    splits: Vec<u32>,
    leaves: Vec<LeafTable>,
}

fn tree_tables(tree: &Tree) -> TreeTables {
    let splits: Vec<u32> = (0..tree.nodes.len() as u32)
        .filter(|&i| !tree.nodes[i as usize].is_leaf())
        .collect();
    let mut leaves = Vec::new();
    collect(tree, &splits, 0, &mut Vec::new(), &mut leaves);
    TreeTables { splits, leaves }
}

/// Walks to every leaf, keeping the path, and builds the leaf's table.
fn collect(
    tree: &Tree,
    splits: &[u32],
    node: usize,
    path: &mut Vec<(u32, bool)>,
    out: &mut Vec<LeafTable>,
) {
    let n = &tree.nodes[node];
    if !n.is_leaf() {
        path.push((node as u32, true));
        collect(tree, splits, n.left as usize, path, out);
        path.pop();
        path.push((node as u32, false));
        collect(tree, splits, n.right as usize, path, out);
        path.pop();
        return;
    }
    if path.is_empty() {
        return;
    }
    let mut features: Vec<u32> = Vec::new();
    let mut zero: Vec<f64> = Vec::new();
    let mut node_mask: Vec<u64> = Vec::new();
    let mut left_mask: Vec<u64> = Vec::new();
    for &(id, left) in path.iter() {
        let p = &tree.nodes[id as usize];
        let child = if left { p.left } else { p.right } as usize;
        let ratio = if p.cover > 0.0 {
            tree.nodes[child].cover / p.cover
        } else {
            0.5
        };
        let bit = 1u64 << splits.iter().position(|s| *s == id).unwrap_or(0);
        let k = match features.iter().position(|f| *f == p.feature) {
            Some(k) => {
                zero[k] *= ratio;
                k
            }
            None => {
                features.push(p.feature);
                zero.push(ratio);
                node_mask.push(0);
                left_mask.push(0);
                features.len() - 1
            }
        };
        node_mask[k] |= bit;
        if left {
            left_mask[k] |= bit;
        }
    }
    let d = features.len();
    let mut table = vec![0.0; (1 << d) * d];
    let mut buf = vec![PathElement::default(); d + 1];
    for set in 0..(1usize << d) {
        // The leaf's path as the recursive algorithm holds it at this leaf; the result does
        // not depend on the order in which features were met.
        extend(&mut buf, 0, 1.0, 1.0, -1);
        for (k, z) in zero.iter().enumerate() {
            let one = if set & (1 << k) != 0 { 1.0 } else { 0.0 };
            extend(&mut buf, k + 1, *z, one, k as i64);
        }
        for k in 0..d {
            let el = buf[k + 1];
            let w = unwound_sum(&buf, d, k + 1);
            table[set * d + el.feature as usize] =
                w * (el.one_fraction - el.zero_fraction) * f64::from(n.value);
        }
    }
    out.push(LeafTable {
        node_mask,
        left_mask,
        features,
        table,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::{Node, Tree};

    fn node(f: u32, t: f32, l: u32, r: u32, v: f32, cover: f64) -> Node {
        Node {
            feature: f,
            threshold: t,
            left: l,
            right: r,
            default_left: true,
            value: v,
            cover,
        }
    }

    /// Brute-force Shapley values for one tree with the path-dependent value function.
    fn brute(tree: &Tree, row: &[f32], n_features: usize) -> Vec<f64> {
        fn expect(tree: &Tree, i: usize, row: &[f32], known: &[bool]) -> f64 {
            let n = &tree.nodes[i];
            if n.is_leaf() {
                return f64::from(n.value);
            }
            if known[n.feature as usize] {
                let next = if goes_left(n, row[n.feature as usize]) {
                    n.left
                } else {
                    n.right
                };
                return expect(tree, next as usize, row, known);
            }
            let (l, r) = (&tree.nodes[n.left as usize], &tree.nodes[n.right as usize]);
            (l.cover * expect(tree, n.left as usize, row, known)
                + r.cover * expect(tree, n.right as usize, row, known))
                / n.cover
        }
        let m = n_features;
        let fact = |k: usize| (1..=k).map(|x| x as f64).product::<f64>();
        let mut phi = vec![0.0; m];
        for s in 0u32..(1 << m) {
            let known: Vec<bool> = (0..m).map(|j| s & (1 << j) != 0).collect();
            let size = known.iter().filter(|k| **k).count();
            for j in 0..m {
                if known[j] {
                    continue;
                }
                let mut with = known.clone();
                with[j] = true;
                let w = fact(size) * fact(m - size - 1) / fact(m);
                phi[j] += w * (expect(tree, 0, row, &with) - expect(tree, 0, row, &known));
            }
        }
        phi
    }

    #[test]
    fn contributions_match_brute_force_shapley_values_and_sum_to_margin() {
        // Depth 3, feature 0 used twice on one path, unequal covers.
        let tree = Tree {
            nodes: vec![
                node(0, 0.5, 1, 2, 0.0, 100.0),
                node(1, 0.5, 3, 4, 0.0, 60.0),
                node(2, 0.5, 5, 6, 0.0, 40.0),
                node(0, 0.2, 7, 8, 0.0, 35.0),
                node(0, 0.0, 0, 0, 1.5, 25.0),
                node(0, 0.0, 0, 0, -2.0, 10.0),
                node(0, 0.0, 0, 0, 0.7, 30.0),
                node(0, 0.0, 0, 0, 3.0, 20.0),
                node(0, 0.0, 0, 0, -1.0, 15.0),
            ],
        };
        let e = Ensemble {
            n_features: 3,
            base_margin: 0.1,
            trees: vec![tree.clone(), tree.clone()],
        };
        e.check().unwrap();
        let ex = Explainer::new(&e);
        for row in [
            [0.1f32, 0.9, 0.2],
            [0.3, 0.1, 0.9],
            [0.9, 0.9, 0.9],
            [0.0, 0.0, 0.0],
        ] {
            let mut phi = vec![0.0; 3];
            ex.contributions(&e, &row, &mut phi);
            let want: Vec<f64> = brute(&tree, &row, 3).iter().map(|x| 2.0 * x).collect();
            for j in 0..3 {
                assert!(
                    (phi[j] - want[j]).abs() < 1e-9,
                    "row {row:?} feature {j}: {} vs {}",
                    phi[j],
                    want[j]
                );
            }
            let fast = FastExplainer::new(&e);
            let mut phi_fast = vec![0.0; 3];
            fast.contributions(&e, &row, &mut phi_fast);
            for j in 0..3 {
                assert!(
                    (phi[j] - phi_fast[j]).abs() < 1e-6,
                    "fast explainer differs at {j}: {} vs {}",
                    phi[j],
                    phi_fast[j]
                );
            }
            let total = ex.bias() + phi.iter().sum::<f64>();
            assert!((total - f64::from(e.margin_reference(&row))).abs() < 1e-5);
        }
    }
}
