//! MNAD's memory module: M unit-norm items of dimension D, read by cosine similarity, trained
//! through compactness and separateness losses on the queries, and updated without gradients
//! by the query-weighted rule (during training, and at test time for frames that score normal).

use candle_core::{Result, Tensor, Var, D};
use candle_nn::ops::softmax;

use super::params::{Builder, Init, ParamError};

/// Memory items (a buffer named `memory.items`, shape (M, D)).
#[derive(Debug, Clone)]
pub struct Memory {
    /// The items; replaced by [`Memory::update`].
    pub items: Var,
}

/// Result of reading the memory with a set of queries.
#[derive(Debug, Clone)]
pub struct MemoryRead {
    /// Cosine similarities S = Q·Mᵀ (N, M), detached.
    pub scores: Tensor,
    /// Softmax over items (N, M), detached (MNAD stops gradients through the read weights).
    pub weights: Tensor,
    /// Weighted sum of items (N, D).
    pub read: Tensor,
}

impl Memory {
    /// A memory of `items` × `dim`, initialised uniform[0,1) with unit rows.
    pub fn new(b: Builder<'_>, items: usize, dim: usize) -> std::result::Result<Self, ParamError> {
        b.buffer("items", &[items, dim], Init::UnitRows)?;
        Ok(Self {
            items: b.var("items").expect("just created"),
        })
    }

    /// Current items as a detached tensor. It shares storage with the variable, so it changes
    /// when [`Memory::update`] runs: use [`Memory::snapshot`] to keep the values across an update.
    pub fn items(&self) -> Tensor {
        self.items.as_detached_tensor()
    }

    /// A copy of the current items that later updates do not change.
    pub fn snapshot(&self) -> Result<Tensor> {
        self.items.as_tensor().copy()
    }

    /// Reads the memory with L2-normalised queries (N, D).
    pub fn read(&self, q: &Tensor) -> Result<MemoryRead> {
        let m = self.items();
        let scores = q.matmul(&m.t()?)?.detach();
        let weights = softmax(&scores, D::Minus1)?.detach();
        let read = weights.matmul(&m)?;
        Ok(MemoryRead {
            scores,
            weights,
            read,
        })
    }

    /// Compactness (MSE to the top-1 item, mean over N·D) and separateness (triplet margin 1,
    /// positive = top-1, negative = top-2 item) losses of the queries.
    pub fn losses(&self, q: &Tensor, read: &MemoryRead) -> Result<(Tensor, Tensor)> {
        let (top1, top2) = top2_indices(&read.scores)?;
        let dev = q.device();
        let m = self.items();
        let pos = m.index_select(&Tensor::from_vec(top1, q.dim(0)?, dev)?, 0)?;
        let neg = m.index_select(&Tensor::from_vec(top2, q.dim(0)?, dev)?, 0)?;
        let compact = (q - &pos)?.sqr()?.mean_all()?;
        // torch.nn.TripletMarginLoss: d(a, b) = ‖a − b + eps‖₂, eps = 1e-6.
        let dist =
            |o: &Tensor| -> Result<Tensor> { ((q - o)? + 1e-6)?.sqr()?.sum(D::Minus1)?.sqrt() };
        let separate = ((dist(&pos)? - dist(&neg)?)? + 1.0)?.relu()?.mean_all()?;
        Ok((compact, separate))
    }

    /// Per-frame feature distance: mean squared distance of each frame's queries to their top-1
    /// items. `q` is (B·h·w, D) in frame-major order; returns B values.
    pub fn feature_distance(
        &self,
        q: &Tensor,
        read: &MemoryRead,
        frames: usize,
    ) -> Result<Vec<f32>> {
        let (top1, _) = top2_indices(&read.scores)?;
        let pos = self
            .items()
            .index_select(&Tensor::from_vec(top1, q.dim(0)?, q.device())?, 0)?;
        let per_query = (q - pos)?.sqr()?.mean(D::Minus1)?;
        per_query.reshape((frames, ()))?.mean(1)?.to_vec1::<f32>()
    }

    /// Applies MNAD's update with (detached) queries and their scores against the current items.
    pub fn update(&self, q: &Tensor, scores: &Tensor) -> Result<()> {
        let (m, d) = self.items.as_tensor().dims2()?;
        let mut items = self.items.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let qv = q.detach().flatten_all()?.to_vec1::<f32>()?;
        let sv = scores.flatten_all()?.to_vec1::<f32>()?;
        update_items(&mut items, m, d, &qv, &sv);
        self.items
            .set(&Tensor::from_vec(items, (m, d), self.items.device())?)
    }
}

/// Indices of the best and second-best item per query (u32, for `index_select`).
pub fn top2_indices(scores: &Tensor) -> Result<(Vec<u32>, Vec<u32>)> {
    let (_, m) = scores.dims2()?;
    let s = scores.flatten_all()?.to_vec1::<f32>()?;
    let mut t1 = Vec::with_capacity(s.len() / m.max(1));
    let mut t2 = Vec::with_capacity(t1.capacity());
    for row in s.chunks(m) {
        let (mut a, mut b) = (0usize, usize::MAX);
        for (i, &v) in row.iter().enumerate().skip(1) {
            if v > row[a] {
                b = a;
                a = i;
            } else if b == usize::MAX || v > row[b] {
                b = i;
            }
        }
        if b == usize::MAX {
            b = a;
        }
        t1.push(a as u32);
        t2.push(b as u32);
    }
    Ok((t1, t2))
}

/// MNAD's memory update on plain slices: `items` (M×D, updated in place), `queries` (N×D),
/// `scores` (N×M, cosine similarities of queries and the current items).
///
/// For item i, with U_i the queries whose top-1 item is i and score_query the softmax of the
/// scores over all N queries: Δ_i = Σ_{q∈U_i} score_query[q,i] / max_q' score_query[q',i] · q;
/// then every row of M + Δ is L2-normalised.
pub fn update_items(items: &mut [f32], m: usize, d: usize, queries: &[f32], scores: &[f32]) {
    update_items_with(&mut UpdateScratch::default(), items, m, d, queries, scores);
}

/// Working buffers of [`update_items_with`], kept between frames so that the on-device loop's
/// memory update allocates nothing once they have their size.
#[derive(Debug, Clone, Default)]
pub struct UpdateScratch {
    sq: Vec<f64>,
    colmax: Vec<f64>,
    delta: Vec<f64>,
    row: Vec<f64>,
}

/// Scratch space holds no state: any two are interchangeable.
impl PartialEq for UpdateScratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn zeroed(v: &mut Vec<f64>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// [`update_items`] with reusable working buffers.
pub fn update_items_with(
    scratch: &mut UpdateScratch,
    items: &mut [f32],
    m: usize,
    d: usize,
    queries: &[f32],
    scores: &[f32],
) {
    let n = queries.len() / d;
    debug_assert_eq!(scores.len(), n * m);
    let UpdateScratch {
        sq,
        colmax,
        delta,
        row,
    } = scratch;
    // Softmax over the queries, per item (column), computed in f64 for stability.
    zeroed(sq, n * m);
    for i in 0..m {
        let max = (0..n)
            .map(|q| f64::from(scores[q * m + i]))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0f64;
        for q in 0..n {
            let e = (f64::from(scores[q * m + i]) - max).exp();
            sq[q * m + i] = e;
            sum += e;
        }
        for q in 0..n {
            sq[q * m + i] /= sum;
        }
    }
    zeroed(colmax, m);
    for q in 0..n {
        for i in 0..m {
            colmax[i] = colmax[i].max(sq[q * m + i]);
        }
    }
    zeroed(delta, m * d);
    for q in 0..n {
        let r = &scores[q * m..(q + 1) * m];
        let top = r
            .iter()
            .enumerate()
            .fold(0usize, |best, (i, &v)| if v > r[best] { i } else { best });
        let w = sq[q * m + top] / colmax[top];
        for k in 0..d {
            delta[top * d + k] += w * f64::from(queries[q * d + k]);
        }
    }
    for i in 0..m {
        row.clear();
        row.extend((0..d).map(|k| f64::from(items[i * d + k]) + delta[i * d + k]));
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        for k in 0..d {
            items[i * d + k] = (row[k] / norm) as f32;
        }
    }
}

/// Index of each query's best item by cosine score (first one on ties, like argmax).
fn top1(q: &[f32], memory: &[f32], dim: usize) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, item) in memory.chunks_exact(dim).enumerate() {
        let s: f32 = q.iter().zip(item).map(|(a, b)| a * b).sum();
        if s > best.1 {
            best = (i, s);
        }
    }
    best.0
}

/// MNAD's feature distance on plain slices: the mean over queries (N×D) and dimensions of
/// (q − its most similar memory item)², items (M×D) chosen by dot product (cosine for unit
/// vectors).
pub fn feature_distance_slices(queries: &[f32], memory: &[f32], dim: usize) -> f32 {
    if queries.is_empty() || dim == 0 {
        return 0.0;
    }
    let mut sum = 0f64;
    for q in queries.chunks_exact(dim) {
        let i = top1(q, memory, dim);
        let item = &memory[i * dim..(i + 1) * dim];
        sum += q
            .iter()
            .zip(item)
            .map(|(a, b)| f64::from(a - b) * f64::from(a - b))
            .sum::<f64>();
    }
    (sum / queries.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_matches_a_hand_computed_example() {
        // Two items in 2-D: e1 and e2. Three queries: q0 = e1, q1 = (0.6, 0.8), q2 = e2.
        let mut items = vec![1.0, 0.0, 0.0, 1.0];
        let q = vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        // Cosine scores (items are unit): q0 (1, 0), q1 (0.6, 0.8), q2 (0, 1).
        let s = vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        update_items(&mut items, 2, 2, &q, &s);
        // Item 0: column softmax of (1, .6, 0): e^1, e^.6, e^0 -> max weight is q0's, so
        // only q0 (top-1 = item 0) contributes with weight 1: M0 + q0 = (2, 0) -> (1, 0).
        // Item 1: column (0, .8, 1): q1 and q2 have top-1 = item 1; weights e^.8/e^1 and 1:
        // M1 + e^-0.2 q1 + q2 = (0.6 e^-0.2, 1 + 0.8 e^-0.2 + 1), then normalised.
        let w = (-0.2f64).exp();
        let (x, y) = (0.6 * w, 2.0 + 0.8 * w);
        let n = (x * x + y * y).sqrt();
        let expect = [1.0, 0.0, x / n, y / n];
        for (a, b) in items.iter().zip(expect) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{items:?} vs {expect:?}");
        }
    }

    #[test]
    fn top2_picks_best_and_second() {
        let s = Tensor::new(
            &[[0.1f32, 0.9, 0.5], [0.7, 0.2, 0.3]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(top2_indices(&s).unwrap(), (vec![1, 0], vec![2, 2]));
    }
}
