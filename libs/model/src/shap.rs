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

/// One distinct feature on a path: the path's split nodes on it (as bits of the tree's split
/// list), which of those the path takes to the left, and the encoded column.
#[derive(Debug, Clone, Copy)]
struct Slot {
    node_mask: u32,
    left_mask: u32,
    column: u32,
}

/// `Entry::pair_bit` of an entry that is a single leaf.
const SINGLE: u8 = u8::MAX;

/// One leaf, or two sibling leaves sharing their path up to their parent split.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Distinct features on the path.
    depth: u8,
    /// For a sibling pair, the bit of the parent split: which way the row went there
    /// selects the half of the table; `SINGLE` otherwise.
    pair_bit: u8,
}

/// TreeSHAP with the work that does not depend on the row done up front. For each leaf, the
/// contributions for every subset of its path features that a row can follow (at most 2^depth)
/// are precomputed, so explaining a row is one comparison per split and a few bit operations
/// and additions per leaf. Sibling leaves share one entry (their paths differ only in the last
/// split), which halves the work on complete trees. The layout is compact: entries are visited
/// in order and carry only their feature count (offsets are running sums), and tables hold
/// `f32` (contributions are summed in `f64`). Agrees with [`Explainer`] to about 1e-6; falls
/// back to it for trees with more than 32 splits or very large tables.
#[derive(Debug, Clone)]
pub struct FastExplainer {
    bias: f64,
    /// Where each tree's splits, entries, slots and table start.
    trees: Vec<TreeAt>,
    splits: Vec<(u32, f32, bool)>,
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    /// Per entry `2^d` rows (`2^(d+1)` for a pair) of `d` contributions, indexed by the set of
    /// path features whose splits the row follows (and, for a pair, the parent's direction).
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
            entries: Vec::new(),
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
            let splits: Vec<u32> = (0..t.nodes.len() as u32)
                .filter(|&i| !t.nodes[i as usize].is_leaf())
                .collect();
            let mut entries = Vec::new();
            collect(t, &splits, 0, &mut Vec::new(), &mut entries);
            for &id in &splits {
                let n = &t.nodes[id as usize];
                fast.splits.push((n.feature, n.threshold, n.default_left));
            }
            fast.trees.push(TreeAt {
                split: fast.splits.len() - splits.len(),
                n_splits: splits.len(),
                entry: fast.entries.len(),
                n_entries: entries.len(),
                slot: fast.slots.len(),
                table: fast.table.len(),
            });
            for e in entries {
                fast.entries.push(Entry {
                    depth: e.slots.len() as u8,
                    pair_bit: e.pair_bit.unwrap_or(SINGLE),
                });
                fast.slots.extend_from_slice(&e.slots);
                fast.table.extend(e.table.iter().map(|v| *v as f32));
            }
        }
        fast
    }

    pub fn bias(&self) -> f64 {
        self.bias
    }

    #[inline(always)]
    fn add_entry<const D: usize>(
        &self,
        left_bits: u32,
        extra: usize,
        slot: usize,
        table: usize,
        phi: &mut [f64],
    ) {
        let slots: &[Slot; D] = self.slots[slot..slot + D].try_into().expect("D slots");
        let mut set = extra;
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
        for t in &self.trees {
            self.add_tree(t, row, phi);
        }
    }

    /// [`FastExplainer::contributions`] for many rows at once: `rows` holds rows of `width`
    /// encoded columns, `phi` receives `width` contributions per row. Tree by tree over groups
    /// of rows in lanes, so a tree's tables are read once per group (the tables of 200 depth-4
    /// trees are larger than a core's L2) and its fixed work is shared by the group. Each row's
    /// sums are made in the same order as row by row, so the results are identical to the bit.
    pub fn contributions_block(
        &self,
        ensemble: &Ensemble,
        rows: &[f32],
        width: usize,
        phi: &mut [f64],
    ) {
        let width = width.max(1);
        if let Some(exact) = &self.fallback {
            for (row, p) in rows.chunks_exact(width).zip(phi.chunks_exact_mut(width)) {
                exact.contributions(ensemble, row, p);
            }
            return;
        }
        // Full groups of the widest lanes, then the rest in the narrowest lanes that hold it
        // (a few rows are cheaper one by one than padded out to a group).
        let n = rows.len() / width;
        let full = n / LANES * LANES;
        self.block_lanes::<LANES>(&rows[..full * width], width, &mut phi[..full * width]);
        let (rows, phi) = (&rows[full * width..], &mut phi[full * width..]);
        match n - full {
            0 => {}
            k if k <= ONE_BY_ONE => {
                for (row, p) in rows.chunks_exact(width).zip(phi.chunks_exact_mut(width)) {
                    self.contributions(ensemble, row, p);
                }
            }
            k if k <= 8 => self.block_lanes::<8>(rows, width, phi),
            k if k <= 16 => self.block_lanes::<16>(rows, width, phi),
            k if k <= 32 => self.block_lanes::<32>(rows, width, phi),
            _ => self.block_lanes::<LANES>(rows, width, phi),
        }
    }

    /// [`FastExplainer::contributions_block`] in groups of `L` rows (the last one padded).
    fn block_lanes<const L: usize>(&self, rows: &[f32], width: usize, phi: &mut [f64]) {
        // Rows in lanes: L rows at a time, stored column by column (a column's L values side by
        // side), so one split test, one slot test and one addition serve every row, and the
        // compiler can use vector instructions; padding lanes are zeros. The group's values
        // and sums (about 42 KB for 55 columns and 64 lanes) stay in cache beside one tree's
        // tables.
        if rows.is_empty() {
            return;
        }
        let stride = width * L;
        let mut xs = vec![0.0f32; stride];
        let mut acc = vec![0.0f64; stride];
        for (rows, phi) in rows.chunks(stride).zip(phi.chunks_mut(stride)) {
            xs.fill(0.0);
            acc.fill(0.0);
            for (l, row) in rows.chunks_exact(width).enumerate() {
                for (c, x) in row.iter().enumerate() {
                    xs[c * L + l] = *x;
                }
            }
            for t in &self.trees {
                self.add_tree_lanes::<L>(t, &xs, &mut acc);
            }
            for (l, p) in phi.chunks_exact_mut(width).enumerate() {
                for (c, v) in p.iter_mut().enumerate() {
                    *v = acc[c * L + l];
                }
            }
        }
    }

    /// [`FastExplainer::add_tree`] for L rows at once; `xs` and `acc` hold one column's
    /// L values side by side. Each lane's sums are made in the same order as one row's.
    #[inline(always)]
    fn add_tree_lanes<const L: usize>(&self, t: &TreeAt, xs: &[f32], acc: &mut [f64]) {
        let mut bits = [0u32; L];
        for (b, &(column, threshold, default_left)) in self.splits[t.split..t.split + t.n_splits]
            .iter()
            .enumerate()
        {
            let x: &[f32; L] = xs[column as usize * L..][..L].try_into().expect("L values");
            for (bits, x) in bits.iter_mut().zip(x) {
                let left = if x.is_nan() {
                    default_left
                } else {
                    *x < threshold
                };
                *bits |= u32::from(left) << b;
            }
        }
        let (mut slot, mut table) = (t.slot, t.table);
        for e in &self.entries[t.entry..t.entry + t.n_entries] {
            let d = usize::from(e.depth);
            let mut set = [0u32; L];
            let rows_log2 = if e.pair_bit == SINGLE {
                d
            } else {
                for (s, b) in set.iter_mut().zip(&bits) {
                    *s = ((b >> e.pair_bit) & 1) << d;
                }
                d + 1
            };
            let tab = &self.table[table..table + (d << rows_log2)];
            let slots = &self.slots[slot..slot + d];
            match d {
                1 => add_entry_lanes::<1, L>(&bits, set, slots, tab, acc),
                2 => add_entry_lanes::<2, L>(&bits, set, slots, tab, acc),
                3 => add_entry_lanes::<3, L>(&bits, set, slots, tab, acc),
                4 => add_entry_lanes::<4, L>(&bits, set, slots, tab, acc),
                _ => {
                    for (k, s) in slots.iter().enumerate() {
                        for (set, b) in set.iter_mut().zip(&bits) {
                            *set |= u32::from((b & s.node_mask) == s.left_mask) << k;
                        }
                    }
                    for (k, s) in slots.iter().enumerate() {
                        let col = &mut acc[s.column as usize * L..][..L];
                        for (a, set) in col.iter_mut().zip(&set) {
                            *a += f64::from(tab[*set as usize * d + k]);
                        }
                    }
                }
            }
            slot += d;
            table += d << rows_log2;
        }
    }

    /// Adds one tree's contributions for `row` to `phi`.
    #[inline(always)]
    fn add_tree(&self, t: &TreeAt, row: &[f32], phi: &mut [f64]) {
        let mut left_bits = 0u32;
        for (b, &(column, threshold, default_left)) in self.splits[t.split..t.split + t.n_splits]
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
        let (mut slot, mut table) = (t.slot, t.table);
        for e in &self.entries[t.entry..t.entry + t.n_entries] {
            let d = usize::from(e.depth);
            let (extra, rows_log2) = if e.pair_bit == SINGLE {
                (0, d)
            } else {
                ((((left_bits >> e.pair_bit) & 1) as usize) << d, d + 1)
            };
            match d {
                // Trees of depth 4 or less: fixed-size paths, unrolled.
                1 => self.add_entry::<1>(left_bits, extra, slot, table, phi),
                2 => self.add_entry::<2>(left_bits, extra, slot, table, phi),
                3 => self.add_entry::<3>(left_bits, extra, slot, table, phi),
                4 => self.add_entry::<4>(left_bits, extra, slot, table, phi),
                _ => {
                    let slots = &self.slots[slot..slot + d];
                    let mut set = extra;
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
            table += d << rows_log2;
        }
    }
}

/// One entry's contributions for L rows: the set of path features each row follows, then
/// that row of the entry's table added to each feature's column.
#[inline(always)]
fn add_entry_lanes<const D: usize, const L: usize>(
    bits: &[u32; L],
    mut set: [u32; L],
    slots: &[Slot],
    tab: &[f32],
    acc: &mut [f64],
) {
    let slots: &[Slot; D] = slots.try_into().expect("D slots");
    for (k, s) in slots.iter().enumerate() {
        for (set, b) in set.iter_mut().zip(bits) {
            *set |= u32::from((b & s.node_mask) == s.left_mask) << k;
        }
    }
    for (k, s) in slots.iter().enumerate() {
        let col: &mut [f64; L] = (&mut acc[s.column as usize * L..][..L])
            .try_into()
            .expect("L sums");
        for (a, set) in col.iter_mut().zip(&set) {
            *a += f64::from(tab[*set as usize * D + k]);
        }
    }
}

/// Rows explained together by [`FastExplainer::contributions_block`], one lane each. More
/// lanes spread each entry's fixed work over more rows: 256 rows took 2.44 ms one by one,
/// 1.47 ms with 8 lanes, 1.00 ms with 32, 0.88 ms with 64 and 0.86 ms with 128
/// (`cargo bench -p model --bench scorer -- treeshap_256`).
const LANES: usize = 64;

/// Rows left over from full groups that are explained one by one rather than in padded lanes.
const ONE_BY_ONE: usize = 4;

/// Where one tree starts in the explainer's flat arrays.
#[derive(Debug, Clone, Copy)]
struct TreeAt {
    split: usize,
    n_splits: usize,
    entry: usize,
    n_entries: usize,
    slot: usize,
    table: usize,
}

/// An entry while building.
struct Built {
    slots: Vec<Slot>,
    pair_bit: Option<u8>,
    table: Vec<f64>,
}

/// Walks to every leaf (stopping at parents of two leaves), keeping the path.
fn collect(
    tree: &Tree,
    splits: &[u32],
    node: usize,
    path: &mut Vec<(u32, bool)>,
    out: &mut Vec<Built>,
) {
    let n = &tree.nodes[node];
    if n.is_leaf() {
        if !path.is_empty() {
            out.push(single(tree, splits, path, n.value));
        }
        return;
    }
    let (l, r) = (&tree.nodes[n.left as usize], &tree.nodes[n.right as usize]);
    if l.is_leaf() && r.is_leaf() {
        out.push(pair(tree, splits, path, node));
        return;
    }
    path.push((node as u32, true));
    collect(tree, splits, n.left as usize, path, out);
    path.pop();
    path.push((node as u32, false));
    collect(tree, splits, n.right as usize, path, out);
    path.pop();
}

fn bit_of(splits: &[u32], id: u32) -> u32 {
    1u32 << splits.iter().position(|s| *s == id).unwrap_or(0)
}

/// Distinct features on a path, with their zero fractions (products of cover ratios).
fn path_slots(tree: &Tree, splits: &[u32], path: &[(u32, bool)]) -> (Vec<Slot>, Vec<f64>) {
    let mut slots: Vec<Slot> = Vec::new();
    let mut zero: Vec<f64> = Vec::new();
    for &(id, left) in path {
        let p = &tree.nodes[id as usize];
        let child = if left { p.left } else { p.right } as usize;
        let ratio = cover_ratio(tree, id as usize, child);
        let bit = bit_of(splits, id);
        let k = match slots.iter().position(|s| s.column == p.feature) {
            Some(k) => {
                zero[k] *= ratio;
                k
            }
            None => {
                slots.push(Slot {
                    node_mask: 0,
                    left_mask: 0,
                    column: p.feature,
                });
                zero.push(ratio);
                slots.len() - 1
            }
        };
        slots[k].node_mask |= bit;
        if left {
            slots[k].left_mask |= bit;
        }
    }
    (slots, zero)
}

fn cover_ratio(tree: &Tree, parent: usize, child: usize) -> f64 {
    let c = tree.nodes[parent].cover;
    if c > 0.0 {
        tree.nodes[child].cover / c
    } else {
        0.5
    }
}

/// The contributions of one leaf for one set of followed path features (TreeSHAP at a leaf;
/// the result does not depend on the order in which features were met).
fn leaf_contributions(
    zero: &[f64],
    set: usize,
    value: f32,
    buf: &mut [PathElement],
    out: &mut [f64],
) {
    let d = zero.len();
    extend(buf, 0, 1.0, 1.0, -1);
    for (k, z) in zero.iter().enumerate() {
        let one = if set & (1 << k) != 0 { 1.0 } else { 0.0 };
        extend(buf, k + 1, *z, one, k as i64);
    }
    for (k, o) in out.iter_mut().enumerate().take(d) {
        let el = buf[k + 1];
        *o += unwound_sum(buf, d, k + 1) * (el.one_fraction - el.zero_fraction) * f64::from(value);
    }
}

fn single(tree: &Tree, splits: &[u32], path: &[(u32, bool)], value: f32) -> Built {
    let (slots, zero) = path_slots(tree, splits, path);
    let d = slots.len();
    let mut table = vec![0.0; d << d];
    let mut buf = vec![PathElement::default(); d + 1];
    for set in 0..(1usize << d) {
        leaf_contributions(
            &zero,
            set,
            value,
            &mut buf,
            &mut table[set * d..(set + 1) * d],
        );
    }
    Built {
        slots,
        pair_bit: None,
        table,
    }
}

/// Two sibling leaves under `parent`. The parent's feature keeps one slot whose masks leave the
/// parent out (earlier splits on the feature only); the parent's direction is the extra bit.
fn pair(tree: &Tree, splits: &[u32], path: &[(u32, bool)], parent: usize) -> Built {
    let p = &tree.nodes[parent];
    let (mut slots, mut zero) = path_slots(tree, splits, path);
    let kf = match slots.iter().position(|s| s.column == p.feature) {
        Some(k) => k,
        None => {
            slots.push(Slot {
                node_mask: 0,
                left_mask: 0,
                column: p.feature,
            });
            zero.push(1.0);
            slots.len() - 1
        }
    };
    let d = slots.len();
    let base = zero[kf];
    let (left, right) = (p.left as usize, p.right as usize);
    let mut zl = zero.clone();
    zl[kf] = base * cover_ratio(tree, parent, left);
    let mut zr = zero;
    zr[kf] = base * cover_ratio(tree, parent, right);
    let (vl, vr) = (tree.nodes[left].value, tree.nodes[right].value);
    let mut table = vec![0.0; d << (d + 1)];
    let mut buf = vec![PathElement::default(); d + 1];
    for idx in 0..(1usize << (d + 1)) {
        let low = idx & ((1 << d) - 1);
        let went_left = idx >> d == 1;
        let earlier = low & (1 << kf) != 0;
        let without = low & !(1 << kf);
        let set_l = without | (usize::from(earlier && went_left) << kf);
        let set_r = without | (usize::from(earlier && !went_left) << kf);
        let row = &mut table[idx * d..(idx + 1) * d];
        leaf_contributions(&zl, set_l, vl, &mut buf, row);
        leaf_contributions(&zr, set_r, vr, &mut buf, row);
    }
    let bit = splits.iter().position(|s| *s == parent as u32).unwrap_or(0) as u8;
    Built {
        slots,
        pair_bit: Some(bit),
        table,
    }
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

    #[test]
    fn hist_engine_trees_with_missing_values_match_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let a: f32 = rng.gen_range(-1.0..1.0);
            let b: f32 = if rng.gen_bool(0.25) {
                f32::NAN
            } else {
                rng.gen_range(-1.0..1.0)
            };
            let c: f32 = rng.gen_range(-1.0..1.0);
            let z = 2.0 * a
                + if b.is_nan() {
                    1.0
                } else {
                    f64::from(b) as f32 * c
                };
            y.push(rng.gen_bool(crate::trees::sigmoid(f64::from(z))));
            x.extend([a, b, c]);
        }
        let params = crate::train::TrainParams {
            trees: 8,
            max_depth: 3,
            ..Default::default()
        };
        let e = crate::hist::train(&x, &y, 3, &params, &[], &mut |_| {})
            .unwrap()
            .ensemble;
        let ex = Explainer::new(&e);
        let fast = FastExplainer::new(&e);
        for row in x.chunks(3).take(40) {
            let mut phi = vec![0.0; 3];
            ex.contributions(&e, row, &mut phi);
            let mut want = [0.0; 3];
            for t in &e.trees {
                for (w, b) in want.iter_mut().zip(brute(t, row, 3)) {
                    *w += b;
                }
            }
            let mut phi_fast = vec![0.0; 3];
            fast.contributions(&e, row, &mut phi_fast);
            for j in 0..3 {
                assert!((phi[j] - want[j]).abs() < 1e-9, "row {row:?} feature {j}");
                assert!((phi_fast[j] - want[j]).abs() < 1e-6, "fast, row {row:?}");
            }
            let total = ex.bias() + phi.iter().sum::<f64>();
            assert!((total - f64::from(e.margin_reference(row))).abs() < 1e-5);
        }
        // Rows at once give the same bits, whatever lanes they take: one by one (up to
        // ONE_BY_ONE), 8, 16, 32 or 64 lanes, full groups with a partial rest.
        for n in [1, 2, 4, 5, 8, 9, 16, 17, 32, 33, 63, 64, 65, 70, 150] {
            let rows = &x[..n * 3];
            let mut block = vec![f64::NAN; n * 3];
            fast.contributions_block(&e, rows, 3, &mut block);
            let mut one = vec![0.0; 3];
            for (i, row) in rows.chunks(3).enumerate() {
                fast.contributions(&e, row, &mut one);
                let got = &block[i * 3..(i + 1) * 3];
                assert!(
                    one.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{n} rows, row {i}: {one:?} one by one, {got:?} in a block"
                );
            }
        }
    }
}
