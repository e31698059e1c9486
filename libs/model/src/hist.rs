//! The histogram engine: XGBoost-style gradient boosting for binary log loss.
//!
//! Once per fit every column is cut into at most 255 quantile bins (plus one bin for missing
//! values), learned from the training rows only. Trees then grow depth-first on gradient and
//! hessian histograms:
//! - a node's histogram is built only for the smaller child; the larger one is the parent's
//!   minus it (the subtraction trick);
//! - rows are kept as one index array, partitioned in place at every split;
//! - histograms are built from a sparse row-major copy of the bins that leaves out each column's
//!   most frequent bin (that bin is the node total minus the others), so one-hot columns cost
//!   almost nothing;
//! - rows are summed in fixed chunks reduced in a fixed order, and the best split is chosen in
//!   column order, so the model is the same on any number of threads;
//! - every buffer is allocated once per fit.
//!
//! Splits use XGBoost's gain with `lambda`, `min_child_weight` and `gamma`; each split learns
//! where missing values go; monotone constraints bound leaf values as XGBoost does, so every
//! tree, and hence the sum, is monotone in a constrained column.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::train::TrainParams;
use crate::trees::{Ensemble, Node, Tree};
use crate::ModelError;

/// Most bins per column, as XGBoost's `max_bin`: a column with missing values keeps one of them
/// for the missing values, so every bin fits in a `u8`.
pub use crate::train::MAX_BINS;
/// Rows summed into one partial histogram. Fixed, so results do not depend on thread count.
const CHUNK: usize = 4096;
/// Smallest gain that counts as an improvement (XGBoost's `kRtEps`).
const EPS: f64 = 1e-6;

/// Quantile cut points per column and the binned training matrix.
pub struct Binned {
    n: usize,
    width: usize,
    /// `cuts[f][b]` is the smallest value of bin `b + 1`; a value's bin is the number of cuts at
    /// or below it, so "bin <= b" is exactly "x < cuts[f][b]".
    cuts: Vec<Vec<f32>>,
    /// First global histogram slot of each column (`width + 1` entries). Column `f` has
    /// `cuts[f].len() + 1` real bins and then its missing bin.
    offsets: Vec<usize>,
    /// Column-major local bins, `cols[f * n + row]`; the missing bin is `cuts[f].len() + 1`
    /// (at most 255: a column with 256 real bins has no missing values).
    cols: Vec<u8>,
    /// Each column's most frequent local bin: left out of `entries`.
    default_bin: Vec<u8>,
    /// Row-major global slots of each row's other bins: row `r` is `entries[ptr[r]..ptr[r+1]]`.
    ptr: Vec<usize>,
    entries: Vec<u32>,
}

impl Binned {
    /// Bins row-major `x` (`width` columns; NaN = missing) into at most `max_bins` real bins per
    /// column.
    pub fn fit(x: &[f32], width: usize, max_bins: usize) -> Binned {
        let n = x.len() / width;
        let max_bins = max_bins.clamp(2, MAX_BINS);
        let cuts: Vec<Vec<f32>> = (0..width)
            .into_par_iter()
            .map(|f| {
                let col = x.iter().skip(f).step_by(width).copied();
                let real = if col.clone().any(f32::is_nan) {
                    max_bins.min(MAX_BINS - 1)
                } else {
                    max_bins
                };
                column_cuts(col, real)
            })
            .collect();
        let mut offsets = Vec::with_capacity(width + 1);
        let mut total = 0;
        for c in &cuts {
            offsets.push(total);
            total += c.len() + 2;
        }
        offsets.push(total);
        let mut cols = vec![0u8; n * width];
        cols.par_chunks_mut(n.max(1))
            .zip(cuts.par_iter())
            .enumerate()
            .for_each(|(f, (out, c))| {
                for (o, v) in out.iter_mut().zip(x.iter().skip(f).step_by(width)) {
                    *o = bin_of(c, *v);
                }
            });
        let default_bin: Vec<u8> = cols
            .par_chunks(n.max(1))
            .zip(cuts.par_iter())
            .map(|(col, c)| {
                let mut count = vec![0usize; c.len() + 2];
                for b in col {
                    count[*b as usize] += 1;
                }
                // Most frequent; ties to the lowest bin.
                let mut best = 0;
                for (b, k) in count.iter().enumerate() {
                    if *k > count[best] {
                        best = b;
                    }
                }
                best as u8
            })
            .collect();
        let mut ptr = Vec::with_capacity(n + 1);
        let mut entries = Vec::new();
        ptr.push(0);
        for r in 0..n {
            for f in 0..width {
                let b = cols[f * n + r];
                if b != default_bin[f] {
                    entries.push((offsets[f] + b as usize) as u32);
                }
            }
            ptr.push(entries.len());
        }
        Binned {
            n,
            width,
            cuts,
            offsets,
            cols,
            default_bin,
            ptr,
            entries,
        }
    }

    /// Each column's cut points (bin `b + 1` starts at `cuts[f][b]`).
    pub fn cuts(&self) -> &[Vec<f32>] {
        &self.cuts
    }

    fn total_bins(&self) -> usize {
        self.offsets[self.width]
    }

    fn missing_bin(&self, f: usize) -> usize {
        self.cuts[f].len() + 1
    }

    #[inline]
    fn bin(&self, f: usize, row: usize) -> u8 {
        self.cols[f * self.n + row]
    }
}

/// Cut points for one column's values.
fn column_cuts(values: impl Iterator<Item = f32> + Clone, max_bins: usize) -> Vec<f32> {
    // Few distinct values (flags, one-hot columns): every value but the smallest starts a bin.
    let mut distinct: Vec<f32> = Vec::new();
    let mut few = true;
    for v in values.clone().filter(|v| !v.is_nan()) {
        if !distinct.contains(&v) {
            if distinct.len() == max_bins {
                few = false;
                break;
            }
            distinct.push(v);
        }
    }
    if few {
        distinct.sort_by(f32::total_cmp);
        distinct.dedup_by(|a, b| a == b);
        return distinct.into_iter().skip(1).collect();
    }
    let mut sorted: Vec<f32> = values.filter(|v| !v.is_nan()).collect();
    sorted.sort_unstable_by(f32::total_cmp);
    // Distinct values with their counts: XGBoost's exact weighted quantile summary.
    let mut value: Vec<f32> = Vec::new();
    let mut count: Vec<f64> = Vec::new();
    for v in sorted {
        match value.last() {
            Some(last) if *last == v => *count.last_mut().expect("paired") += 1.0,
            _ => {
                value.push(v);
                count.push(1.0);
            }
        }
    }
    let size = value.len();
    let mut rmin = Vec::with_capacity(size);
    let mut seen = 0.0;
    for c in &count {
        rmin.push(seen);
        seen += c;
    }
    let rmax = |i: usize| rmin[i] + count[i];
    // XGBoost's `WQSummary::SetPrune` to `max_bins + 1` entries, then its `AddCutPoint`: the
    // kept entries but the first (the minimum) and the last become the cuts. Same cuts as
    // XGBoost on data its sketch holds exactly (tested on German credit against XGBoost 3.2).
    let n = max_bins as f64;
    let begin = rmax(0);
    let range = rmin[size - 1] - begin;
    let mut kept = vec![0usize];
    let (mut i, mut last) = (1usize, 0usize);
    for k in 1..max_bins {
        let dx2 = 2.0 * ((k as f64 * range) / n + begin);
        while i < size - 1 && dx2 >= rmax(i + 1) + rmin[i + 1] {
            i += 1;
        }
        if i == size - 1 {
            break;
        }
        let pick = if dx2 < (rmin[i] + count[i]) + (rmax(i + 1) - count[i + 1]) {
            i
        } else {
            i + 1
        };
        if pick != last {
            kept.push(pick);
            last = pick;
        }
    }
    if last != size - 1 {
        kept.push(size - 1);
    }
    let take = kept.len().min(max_bins);
    kept[1..take].iter().map(|&j| value[j]).collect()
}

#[inline]
fn bin_of(cuts: &[f32], v: f32) -> u8 {
    if v.is_nan() {
        (cuts.len() + 1) as u8
    } else {
        cuts.partition_point(|c| *c <= v) as u8
    }
}

/// Gradient and hessian sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Gh {
    g: f64,
    h: f64,
}

impl std::ops::AddAssign for Gh {
    fn add_assign(&mut self, o: Gh) {
        self.g += o.g;
        self.h += o.h;
    }
}

impl std::ops::Add for Gh {
    type Output = Gh;
    fn add(self, o: Gh) -> Gh {
        Gh {
            g: self.g + o.g,
            h: self.h + o.h,
        }
    }
}

impl std::ops::Sub for Gh {
    type Output = Gh;
    fn sub(self, o: Gh) -> Gh {
        Gh {
            g: self.g - o.g,
            h: self.h - o.h,
        }
    }
}

/// The regularised objective's pieces.
#[derive(Clone, Copy)]
struct Reg {
    lambda: f64,
    min_child_weight: f64,
    gamma: f64,
}

impl Reg {
    /// The optimal leaf weight, clamped to the node's monotone bounds.
    fn weight(&self, s: Gh, lo: f64, hi: f64) -> f64 {
        (-s.g / (s.h + self.lambda)).clamp(lo, hi)
    }

    /// How much a leaf of weight `w` lowers the objective (`G²/(H+λ)` when unclamped).
    fn gain(&self, s: Gh, w: f64) -> f64 {
        -(2.0 * s.g * w + (s.h + self.lambda) * w * w)
    }
}

/// A chosen split.
#[derive(Debug, Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    /// Rows in bins `0..=bin` go left.
    bin: u8,
    default_left: bool,
    left: Gh,
    right: Gh,
    wl: f64,
    wr: f64,
}

/// A node waiting to be split or made a leaf.
struct Pending {
    node: usize,
    start: usize,
    end: usize,
    depth: u32,
    sum: Gh,
    lo: f64,
    hi: f64,
    /// Pool slot holding this node's full histogram.
    slot: usize,
}

/// Everything allocated once per fit.
struct Work {
    hist: Vec<Vec<Gh>>,
    free: Vec<usize>,
    partial: Vec<Vec<Gh>>,
    rows: Vec<u32>,
    scratch: Vec<u32>,
}

/// What a fit produced.
pub struct HistModel {
    pub ensemble: Ensemble,
    /// With early stopping, the last tree kept (counting from 0).
    pub best_iteration: Option<usize>,
    /// The engine's own margin for every training row, as it summed them while boosting
    /// (without early stopping; with it, the rows were split).
    pub margins: Option<Vec<f32>>,
}

/// Trains on row-major `x` (`width` columns, NaN = missing) with labels `y` (true = default).
/// `monotone[f]` is +1 (increasing), -1 (decreasing) or 0 for each column (empty = none).
/// `progress` is called with the number of trees built so far.
pub fn train(
    x: &[f32],
    y: &[bool],
    width: usize,
    params: &TrainParams,
    monotone: &[i8],
    progress: &mut dyn FnMut(usize),
) -> Result<HistModel, ModelError> {
    params.check()?;
    let n_all = y.len();
    if n_all == 0 || x.len() != n_all * width {
        return Err(ModelError::InvalidParams(
            "training matrix and labels disagree".into(),
        ));
    }
    if x.iter().any(|v| v.is_infinite()) {
        return Err(ModelError::InvalidParams(
            "training data must not hold infinities".into(),
        ));
    }
    if !monotone.is_empty() && monotone.len() != width {
        return Err(ModelError::InvalidParams(
            "monotone constraints must name every column".into(),
        ));
    }
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 || positives == n_all {
        return Err(ModelError::InvalidParams(
            "training labels need both classes".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    // Early stopping watches a stratified, seeded part of the training rows.
    let (fit_rows, watch_rows) = if params.early_stopping_rounds > 0 {
        let (a, b) = crate::split::stratified_split(y, params.validation_fraction, params.seed)?;
        (a, b)
    } else {
        ((0..n_all).collect(), Vec::new())
    };
    let n = fit_rows.len();
    let pick = |rows: &[usize]| -> (Vec<f32>, Vec<bool>) {
        let mut xs = Vec::with_capacity(rows.len() * width);
        for &i in rows {
            xs.extend_from_slice(&x[i * width..(i + 1) * width]);
        }
        (xs, rows.iter().map(|&i| y[i]).collect())
    };
    // Without early stopping every row is fitted: no copy.
    let (xf, yf): (std::borrow::Cow<[f32]>, std::borrow::Cow<[bool]>) = if watch_rows.is_empty() {
        (x.into(), y.into())
    } else {
        let (a, b) = pick(&fit_rows);
        (a.into(), b.into())
    };
    let (xw, yw) = pick(&watch_rows);
    let max_bins = if params.bins == 0 {
        MAX_BINS
    } else {
        params.bins
    };
    let binned = Binned::fit(&xf, width, max_bins);
    let weight_of = |label: bool| if label { params.scale_pos_weight } else { 1.0 };
    // Base score from the (weighted) prior.
    let (wp, wt) = yf.iter().fold((0.0f64, 0.0f64), |(p, t), &v| {
        (p + if v { weight_of(v) } else { 0.0 }, t + weight_of(v))
    });
    let prior = (wp / wt).clamp(1e-6, 1.0 - 1e-6);
    let base_margin = (prior / (1.0 - prior)).ln() as f32;
    let reg = Reg {
        lambda: params.lambda,
        min_child_weight: params.min_child_weight,
        gamma: params.gamma,
    };
    let mono: Vec<i8> = if monotone.is_empty() {
        vec![0; width]
    } else {
        monotone.to_vec()
    };
    let total_bins = binned.total_bins();
    let slots = params.max_depth as usize + 2;
    let mut work = Work {
        hist: vec![vec![Gh::default(); total_bins]; slots],
        free: (0..slots).rev().collect(),
        partial: vec![vec![Gh::default(); total_bins]; n.div_ceil(CHUNK).max(1)],
        rows: Vec::with_capacity(n),
        scratch: vec![0; n],
    };
    let mut margin = vec![base_margin; n];
    let mut watch_margin = vec![base_margin; yw.len()];
    let mut gh = vec![(0.0f32, 0.0f32); n];
    let mut trees = Vec::with_capacity(params.trees);
    let mut best: Option<(f64, usize)> = None;
    let mut leaf_of = vec![0u32; n];
    for t in 0..params.trees {
        gh.par_chunks_mut(CHUNK)
            .zip(margin.par_chunks(CHUNK))
            .zip(yf.par_chunks(CHUNK))
            .for_each(|((gh, margin), yf)| {
                for ((g, m), &label) in gh.iter_mut().zip(margin).zip(yf) {
                    let p = crate::trees::sigmoid(f64::from(*m));
                    let w = weight_of(label);
                    let target = if label { 1.0 } else { 0.0 };
                    *g = (
                        ((p - target) * w) as f32,
                        ((p * (1.0 - p)).max(1e-16) * w) as f32,
                    );
                }
            });
        work.rows.clear();
        if params.row_subsample < 1.0 {
            for r in 0..n {
                if rng.gen::<f64>() < params.row_subsample {
                    work.rows.push(r as u32);
                }
            }
            if work.rows.is_empty() {
                work.rows.push(rng.gen_range(0..n) as u32);
            }
        } else {
            work.rows.extend(0..n as u32);
        }
        let allowed = crate::train::column_mask(width, params.col_subsample, &mut rng);
        let tree = grow(
            &binned,
            &gh,
            &mut work,
            &allowed,
            &mono,
            reg,
            params,
            &mut leaf_of,
        );
        // Advance every row's margin exactly as the predictor sums (in f32, tree by tree).
        if params.row_subsample < 1.0 {
            for (r, m) in margin.iter_mut().enumerate() {
                *m += tree.nodes[leaf_by_bins(&tree, &binned, r)].value;
            }
        } else {
            for (m, l) in margin.iter_mut().zip(&leaf_of) {
                *m += tree.nodes[*l as usize].value;
            }
        }
        for (m, row) in watch_margin.iter_mut().zip(xw.chunks_exact(width)) {
            *m += tree.nodes[tree.leaf_index(row)].value;
        }
        trees.push(tree);
        progress(t + 1);
        if params.early_stopping_rounds > 0 {
            let loss = log_loss(&watch_margin, &yw);
            if best.is_none_or(|(b, _)| loss < b) {
                best = Some((loss, t));
            } else if best.is_some_and(|(_, at)| t - at >= params.early_stopping_rounds) {
                break;
            }
        }
    }
    let best_iteration = best.map(|(_, at)| at);
    if let Some(at) = best_iteration {
        trees.truncate(at + 1);
        progress(params.trees);
    }
    let mut ensemble = Ensemble {
        n_features: width,
        base_margin,
        trees,
    };
    // Covers count training rows; the partition counted the rows each tree saw.
    if params.row_subsample < 1.0 || !watch_rows.is_empty() {
        ensemble.set_covers_from_rows(x);
    }
    ensemble.check()?;
    Ok(HistModel {
        ensemble,
        best_iteration,
        margins: watch_rows.is_empty().then_some(margin),
    })
}

/// Mean log loss of margins.
fn log_loss(margins: &[f32], y: &[bool]) -> f64 {
    let total: f64 = margins
        .iter()
        .zip(y)
        .map(|(m, &label)| {
            let p = crate::trees::sigmoid(f64::from(*m)).clamp(1e-15, 1.0 - 1e-15);
            -(if label { p.ln() } else { (1.0 - p).ln() })
        })
        .sum();
    total / margins.len().max(1) as f64
}

/// Leaf a training row reaches, read from its bins (rows outside a subsample).
fn leaf_by_bins(tree: &Tree, b: &Binned, row: usize) -> usize {
    let mut i = 0;
    loop {
        let n = &tree.nodes[i];
        if n.is_leaf() {
            return i;
        }
        let f = n.feature as usize;
        let bin = b.bin(f, row);
        let left = if bin as usize == b.missing_bin(f) {
            n.default_left
        } else {
            // The threshold is some cut c[s], and bin <= s exactly when the bin starts below it.
            b.cut_low(f, bin) < n.threshold
        };
        i = if left {
            n.left as usize
        } else {
            n.right as usize
        };
    }
}

impl Binned {
    /// Smallest value that falls in `bin` of column `f` (−∞ for bin 0).
    fn cut_low(&self, f: usize, bin: u8) -> f32 {
        if bin == 0 {
            f32::NEG_INFINITY
        } else {
            self.cuts[f][bin as usize - 1]
        }
    }
}

/// Grows one tree over `work.rows`; writes each row's leaf into `leaf_of`.
#[allow(clippy::too_many_arguments)]
fn grow(
    b: &Binned,
    gh: &[(f32, f32)],
    work: &mut Work,
    allowed: &[bool],
    mono: &[i8],
    reg: Reg,
    params: &TrainParams,
    leaf_of: &mut [u32],
) -> Tree {
    let eta = f64::from(params.learning_rate);
    let mut nodes: Vec<Node> = vec![Node::leaf(0.0)];
    let root_slot = work.free.pop().expect("histogram pool");
    let end = work.rows.len();
    let sum = build_hist(
        b,
        gh,
        &work.rows[..],
        &mut work.partial,
        &mut work.hist[root_slot],
    );
    let mut stack = vec![Pending {
        node: 0,
        start: 0,
        end,
        depth: 0,
        sum,
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
        slot: root_slot,
    }];
    while let Some(p) = stack.pop() {
        let split = if p.depth < params.max_depth && p.sum.h >= 2.0 * reg.min_child_weight {
            best_split(b, &work.hist[p.slot], p.sum, p.lo, p.hi, allowed, mono, reg)
        } else {
            None
        };
        let Some(s) = split else {
            let w = reg.weight(p.sum, p.lo, p.hi);
            nodes[p.node] = Node::leaf((eta * w) as f32);
            nodes[p.node].cover = (p.end - p.start) as f64;
            for &r in &work.rows[p.start..p.end] {
                leaf_of[r as usize] = p.node as u32;
            }
            work.free.push(p.slot);
            continue;
        };
        let mid = partition(b, &mut work.rows, &mut work.scratch, p.start, p.end, &s);
        let (l, r) = (nodes.len() as u32, nodes.len() as u32 + 1);
        nodes[p.node] = Node {
            feature: s.feature as u32,
            threshold: b.cuts[s.feature][s.bin as usize],
            left: l,
            right: r,
            default_left: s.default_left,
            value: 0.0,
            cover: (p.end - p.start) as f64,
        };
        nodes.push(Node::leaf(0.0));
        nodes.push(Node::leaf(0.0));
        // Children's bounds: a monotone split puts the midpoint between them.
        let (mut llo, mut lhi, mut rlo, mut rhi) = (p.lo, p.hi, p.lo, p.hi);
        match mono[s.feature] {
            c if c > 0 => {
                let m = 0.5 * (s.wl + s.wr);
                lhi = m;
                rlo = m;
            }
            c if c < 0 => {
                let m = 0.5 * (s.wl + s.wr);
                llo = m;
                rhi = m;
            }
            _ => {}
        }
        // Build the smaller child's histogram; the larger one is the parent's minus it.
        let left_smaller = mid - p.start <= p.end - mid;
        let small_slot = work.free.pop().expect("histogram pool");
        let (ss, se) = if left_smaller {
            (p.start, mid)
        } else {
            (mid, p.end)
        };
        let small_sum = if left_smaller { s.left } else { s.right };
        build_hist_with_sum(
            b,
            gh,
            &work.rows[ss..se],
            small_sum,
            &mut work.partial,
            &mut work.hist[small_slot],
        );
        {
            let (parent, small) = two_mut(&mut work.hist, p.slot, small_slot);
            for (a, s) in parent.iter_mut().zip(small.iter()) {
                *a = *a - *s;
            }
        }
        let (lslot, rslot) = if left_smaller {
            (small_slot, p.slot)
        } else {
            (p.slot, small_slot)
        };
        let child = |node, start, end, sum, lo, hi, slot| Pending {
            node: node as usize,
            start,
            end,
            depth: p.depth + 1,
            sum,
            lo,
            hi,
            slot,
        };
        stack.push(child(r, mid, p.end, s.right, rlo, rhi, rslot));
        stack.push(child(l, p.start, mid, s.left, llo, lhi, lslot));
    }
    Tree { nodes }
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// Builds the full histogram of `rows` into `out` and returns their gradient sums.
fn build_hist(
    b: &Binned,
    gh: &[(f32, f32)],
    rows: &[u32],
    partial: &mut [Vec<Gh>],
    out: &mut [Gh],
) -> Gh {
    let mut sum = Gh::default();
    for &r in rows {
        let (g, h) = gh[r as usize];
        sum += Gh {
            g: f64::from(g),
            h: f64::from(h),
        };
    }
    build_hist_with_sum(b, gh, rows, sum, partial, out);
    sum
}

/// Builds the full histogram of `rows`, whose gradient sums are `sum`, into `out`.
fn build_hist_with_sum(
    b: &Binned,
    gh: &[(f32, f32)],
    rows: &[u32],
    sum: Gh,
    partial: &mut [Vec<Gh>],
    out: &mut [Gh],
) {
    let chunks = rows.chunks(CHUNK);
    let used = chunks.len();
    let add = |part: &mut Vec<Gh>, rows: &[u32]| {
        part.fill(Gh::default());
        for &r in rows {
            let r = r as usize;
            let (g, h) = gh[r];
            let (g, h) = (f64::from(g), f64::from(h));
            for &e in &b.entries[b.ptr[r]..b.ptr[r + 1]] {
                let slot = &mut part[e as usize];
                slot.g += g;
                slot.h += h;
            }
        }
    };
    if used <= 1 {
        out.fill(Gh::default());
        if let Some(first) = rows.chunks(CHUNK).next() {
            add(&mut partial[0], first);
            out.copy_from_slice(&partial[0]);
        }
    } else {
        partial[..used]
            .par_iter_mut()
            .zip(rows.par_chunks(CHUNK))
            .for_each(|(part, rows)| add(part, rows));
        out.copy_from_slice(&partial[0]);
        for part in &partial[1..used] {
            for (o, p) in out.iter_mut().zip(part) {
                *o += *p;
            }
        }
    }
    // Each column's default bin holds what the other bins do not.
    for f in 0..b.width {
        let (start, stop) = (b.offsets[f], b.offsets[f + 1]);
        let mut others = Gh::default();
        for s in &out[start..stop] {
            others += *s;
        }
        out[start + b.default_bin[f] as usize] = sum - others;
    }
}

/// The best split of a node, columns in parallel, ties to the lowest column and bin.
#[allow(clippy::too_many_arguments)]
fn best_split(
    b: &Binned,
    hist: &[Gh],
    sum: Gh,
    lo: f64,
    hi: f64,
    allowed: &[bool],
    mono: &[i8],
    reg: Reg,
) -> Option<Split> {
    let parent_gain = reg.gain(sum, reg.weight(sum, lo, hi));
    let per_column: Vec<Option<Split>> = (0..b.width)
        .into_par_iter()
        .map(|f| {
            if !allowed[f] {
                return None;
            }
            let bins = &hist[b.offsets[f]..b.offsets[f + 1]];
            let (real, missing) = bins.split_at(bins.len() - 1);
            let missing = missing[0];
            let present = sum - missing;
            let mut best: Option<Split> = None;
            let mut left = Gh::default();
            for (bin, s) in real[..real.len() - 1].iter().enumerate() {
                left += *s;
                let right = present - left;
                // Missing values right, then left; with none, the larger side takes them.
                let tries: [(bool, Gh, Gh); 2] = [
                    (false, left, right + missing),
                    (true, left + missing, right),
                ];
                for (default_left, l, r) in tries {
                    if missing.h == 0.0 && default_left != (l.h > r.h) {
                        continue;
                    }
                    if l.h < reg.min_child_weight || r.h < reg.min_child_weight {
                        continue;
                    }
                    let wl = reg.weight(l, lo, hi);
                    let wr = reg.weight(r, lo, hi);
                    let c = mono[f];
                    if (c > 0 && wl > wr) || (c < 0 && wl < wr) {
                        continue;
                    }
                    let gain = reg.gain(l, wl) + reg.gain(r, wr) - parent_gain;
                    if gain > reg.gamma + EPS && best.is_none_or(|x| gain > x.gain) {
                        best = Some(Split {
                            gain,
                            feature: f,
                            bin: bin as u8,
                            default_left,
                            left: l,
                            right: r,
                            wl,
                            wr,
                        });
                    }
                }
            }
            best
        })
        .collect();
    let mut best: Option<Split> = None;
    for s in per_column.into_iter().flatten() {
        if best.is_none_or(|x| s.gain > x.gain) {
            best = Some(s);
        }
    }
    best
}

/// Stable in-place partition of `rows[start..end]` by a split; returns the first right row.
fn partition(
    b: &Binned,
    rows: &mut [u32],
    scratch: &mut [u32],
    start: usize,
    end: usize,
    s: &Split,
) -> usize {
    let missing = b.missing_bin(s.feature);
    let col = &b.cols[s.feature * b.n..(s.feature + 1) * b.n];
    let mut l = start;
    let mut k = 0;
    for i in start..end {
        let r = rows[i];
        let bin = col[r as usize];
        let left = if bin as usize == missing {
            s.default_left
        } else {
            bin <= s.bin
        };
        if left {
            rows[l] = r;
            l += 1;
        } else {
            scratch[k] = r;
            k += 1;
        }
    }
    rows[l..end].copy_from_slice(&scratch[..k]);
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::sigmoid;

    /// A seeded problem: a rises risk, b lowers it when c is set, and d is missing for a fifth of
    /// the rows, mostly defaulters.
    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f32 = rng.gen_range(-2.0..2.0);
            let b: f32 = rng.gen_range(-2.0..2.0);
            let c: f32 = if rng.gen_bool(0.3) { 1.0 } else { 0.0 };
            let missing = rng.gen_bool(0.2);
            let d: f32 = if missing {
                f32::NAN
            } else {
                rng.gen_range(0.0..1.0)
            };
            let z =
                1.2 * a - 0.8 * b * c + if missing { 1.5 } else { -0.3 } + 0.4 * (3.0 * a).sin();
            y.push(rng.gen_bool(sigmoid(f64::from(z))));
            x.extend([a, b, c, d]);
        }
        (x, y)
    }

    fn params() -> TrainParams {
        TrainParams {
            trees: 60,
            max_depth: 4,
            learning_rate: 0.1,
            ..TrainParams::default()
        }
    }

    fn auc(e: &Ensemble, x: &[f32], y: &[bool]) -> f64 {
        let p = crate::Predictor::new(e);
        let probs: Vec<f64> = x
            .chunks(e.n_features)
            .map(|r| sigmoid(f64::from(p.margin(r))))
            .collect();
        crate::metrics::roc_auc(&probs, y)
    }

    #[test]
    fn flat_predictor_is_bit_identical_to_the_engines_own_margins() {
        let (x, y) = data(3000, 1);
        check_margins(&x, &y, &params());
        // With row subsampling the rows a tree did not see are routed by their bins.
        check_margins(
            &x,
            &y,
            &TrainParams {
                row_subsample: 0.6,
                col_subsample: 0.5,
                ..params()
            },
        );
    }

    fn check_margins(x: &[f32], y: &[bool], params: &TrainParams) {
        let m = train(x, y, 4, params, &[], &mut |_| {}).unwrap();
        let p = crate::Predictor::new(&m.ensemble);
        let own = m.margins.unwrap();
        let mut batch = vec![0.0f32; y.len()];
        p.margins(x, &mut batch);
        for (i, row) in x.chunks(4).enumerate() {
            assert_eq!(p.margin(row).to_bits(), own[i].to_bits(), "row {i}");
            assert_eq!(batch[i].to_bits(), own[i].to_bits(), "row {i} (block)");
            assert_eq!(m.ensemble.margin_reference(row).to_bits(), own[i].to_bits());
        }
    }

    #[test]
    fn learns_the_problem_and_where_missing_values_go() {
        let (x, y) = data(6000, 2);
        let (xt, yt) = data(3000, 3);
        let m = train(&x, &y, 4, &params(), &[], &mut |_| {}).unwrap();
        let a = auc(&m.ensemble, &xt, &yt);
        assert!(a > 0.80, "test AUC {a}");
        // Missing d means more risk: the same row scores higher with d missing than with any d.
        let p = crate::Predictor::new(&m.ensemble);
        let mut higher = 0;
        for row in xt.chunks(4).take(500) {
            let mut r = row.to_vec();
            r[3] = f32::NAN;
            let with_missing = p.margin(&r);
            r[3] = 0.5;
            if with_missing > p.margin(&r) {
                higher += 1;
            }
        }
        assert!(
            higher > 450,
            "missing d raised the score for only {higher} of 500 rows"
        );
        // A split that saw missing values sends them the learned way at least once.
        assert!(m
            .ensemble
            .trees
            .iter()
            .flat_map(|t| &t.nodes)
            .any(|n| !n.is_leaf() && n.feature == 3));
    }

    #[test]
    fn same_model_bytes_on_any_number_of_threads() {
        let (x, y) = data(20_000, 4);
        let p = TrainParams {
            row_subsample: 0.8,
            col_subsample: 0.75,
            ..params()
        };
        let fit = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let m = pool.install(|| train(&x, &y, 4, &p, &[], &mut |_| {}).unwrap());
            serde_json::to_string(&m.ensemble).unwrap()
        };
        let one = fit(1);
        assert_eq!(one, fit(2));
        assert_eq!(one, fit(3));
        let other = train(&x, &y, 4, &TrainParams { seed: 7, ..p }, &[], &mut |_| {}).unwrap();
        assert_ne!(one, serde_json::to_string(&other.ensemble).unwrap());
    }

    #[test]
    fn monotone_constraints_hold_for_every_row_over_the_whole_range() {
        let (x, y) = data(4000, 5);
        // a's true effect wiggles (the sine term); b's depends on c. Constrain a up, b down.
        let mono = [1i8, -1, 0, 0];
        let m = train(&x, &y, 4, &params(), &mono, &mut |_| {}).unwrap();
        let p = crate::Predictor::new(&m.ensemble);
        let grid: Vec<f32> = (0..=80).map(|k| -2.2 + k as f32 * 0.055).collect();
        for row in x.chunks(4).take(300) {
            for (f, sign) in [(0usize, 1.0f32), (1, -1.0)] {
                let mut r = row.to_vec();
                let mut last: Option<f32> = None;
                for v in &grid {
                    r[f] = *v;
                    let now = p.margin(&r);
                    if let Some(l) = last {
                        assert!(sign * (now - l) >= 0.0, "feature {f} at {v}: {l} -> {now}");
                    }
                    last = Some(now);
                }
            }
        }
        // Unconstrained, the same data gives a model that does wiggle in a.
        let free = train(&x, &y, 4, &params(), &[], &mut |_| {}).unwrap();
        let p = crate::Predictor::new(&free.ensemble);
        let wiggles = x.chunks(4).take(300).any(|row| {
            let mut r = row.to_vec();
            grid.windows(2).any(|w| {
                r[0] = w[0];
                let a = p.margin(&r);
                r[0] = w[1];
                p.margin(&r) < a
            })
        });
        assert!(wiggles, "the check above would pass without constraints");
    }

    #[test]
    fn early_stopping_keeps_the_best_round() {
        let (x, y) = data(2000, 6);
        let p = TrainParams {
            trees: 400,
            learning_rate: 0.3,
            max_depth: 6,
            early_stopping_rounds: 10,
            ..params()
        };
        let mut seen = 0;
        let m = train(&x, &y, 4, &p, &[], &mut |t| seen = t).unwrap();
        let best = m.best_iteration.unwrap();
        assert!(best < 390, "stopped at {best}");
        assert_eq!(m.ensemble.trees.len(), best + 1);
        assert_eq!(seen, 400, "progress ends at the total");
    }

    #[test]
    fn thresholds_are_training_values_so_bins_and_raw_values_agree() {
        let (x, y) = data(1500, 7);
        let b = Binned::fit(&x, 4, 16);
        for f in 0..4 {
            assert!(b.cuts[f].len() < 16);
            assert!(b.cuts[f].windows(2).all(|w| w[0] < w[1]));
            for r in 0..y.len() {
                let v = x[r * 4 + f];
                let bin = b.bin(f, r);
                if v.is_nan() {
                    assert_eq!(bin as usize, b.missing_bin(f));
                } else {
                    for (s, cut) in b.cuts[f].iter().enumerate() {
                        assert_eq!(bin as usize <= s, v < *cut);
                    }
                }
            }
        }
        // The flag column has two values: one cut.
        assert_eq!(b.cuts[2], vec![1.0]);
    }

    #[test]
    fn rejects_bad_input() {
        let (x, y) = data(100, 8);
        assert!(train(&x, &[false; 100], 4, &params(), &[], &mut |_| {}).is_err());
        assert!(train(&x, &y, 4, &params(), &[1, 0], &mut |_| {}).is_err());
        let mut inf = x.clone();
        inf[0] = f32::INFINITY;
        assert!(train(&inf, &y, 4, &params(), &[], &mut |_| {}).is_err());
        let big = TrainParams {
            bins: 257,
            ..params()
        };
        assert!(train(&x, &y, 4, &big, &[], &mut |_| {}).is_err());
    }
}
