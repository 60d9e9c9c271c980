//! Separable resizing of f32 planes: area averaging along an axis that shrinks, bilinear
//! (half-pixel centres, edge clamped) along an axis that grows. Weights are computed once per
//! size pair, so resizing a frame allocates nothing.

/// One output sample's taps along an axis: `len` source samples from `start`, weights at `woff`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
    woff: usize,
}

#[derive(Debug, Clone)]
struct Axis {
    spans: Vec<Span>,
    weights: Vec<f32>,
}

impl Axis {
    fn new(n_in: usize, n_out: usize) -> Self {
        let mut spans = Vec::with_capacity(n_out);
        let mut weights = Vec::new();
        if n_out < n_in {
            // Area: output i covers source interval [i*s, (i+1)*s); weight = overlap / s.
            let s = n_in as f64 / n_out as f64;
            for i in 0..n_out {
                let a = i as f64 * s;
                let b = ((i + 1) as f64 * s).min(n_in as f64);
                let first = a.floor() as usize;
                let last = (b.ceil() as usize).min(n_in);
                let woff = weights.len();
                for j in first..last {
                    let overlap = (b.min((j + 1) as f64) - a.max(j as f64)).max(0.0);
                    weights.push((overlap / s) as f32);
                }
                spans.push(Span {
                    start: first,
                    len: last - first,
                    woff,
                });
            }
        } else {
            let s = n_in as f64 / n_out as f64;
            for i in 0..n_out {
                let src = ((i as f64 + 0.5) * s - 0.5).clamp(0.0, (n_in - 1) as f64);
                let j = src.floor() as usize;
                let t = src - j as f64;
                let woff = weights.len();
                if j + 1 < n_in && t > 0.0 {
                    weights.push((1.0 - t) as f32);
                    weights.push(t as f32);
                    spans.push(Span {
                        start: j,
                        len: 2,
                        woff,
                    });
                } else {
                    weights.push(1.0);
                    spans.push(Span {
                        start: j,
                        len: 1,
                        woff,
                    });
                }
            }
        }
        Self { spans, weights }
    }
}

/// A resizer for one (input size, output size) pair; reusable across frames.
#[derive(Debug, Clone)]
pub struct Resizer {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    x: Axis,
    y: Axis,
    tmp: Vec<f32>,
}

impl Resizer {
    /// Prepares weights and scratch space for resizing `in_w×in_h` to `out_w×out_h`.
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Self {
        assert!(
            in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0,
            "resize sizes must be non-zero"
        );
        Self {
            in_w,
            in_h,
            out_w,
            out_h,
            x: Axis::new(in_w, out_w),
            y: Axis::new(in_h, out_h),
            tmp: vec![0.0; out_w * in_h],
        }
    }

    /// Input size (width, height) this resizer was built for.
    pub fn input_size(&self) -> (usize, usize) {
        (self.in_w, self.in_h)
    }

    /// Output size (width, height).
    pub fn output_size(&self) -> (usize, usize) {
        (self.out_w, self.out_h)
    }

    /// Resizes `src` (row-major, input size) into `out` (row-major, output size), mapping each
    /// source sample through `map` first.
    pub fn resize_map<T: Copy>(&mut self, src: &[T], out: &mut [f32], map: impl Fn(T) -> f32) {
        assert_eq!(src.len(), self.in_w * self.in_h, "resize input length");
        assert_eq!(out.len(), self.out_w * self.out_h, "resize output length");
        // Horizontal pass: in_h rows of out_w samples.
        for r in 0..self.in_h {
            let row = &src[r * self.in_w..(r + 1) * self.in_w];
            let trow = &mut self.tmp[r * self.out_w..(r + 1) * self.out_w];
            for (o, sp) in trow.iter_mut().zip(&self.x.spans) {
                let w = &self.x.weights[sp.woff..sp.woff + sp.len];
                *o = row[sp.start..sp.start + sp.len]
                    .iter()
                    .zip(w)
                    .map(|(&v, &w)| map(v) * w)
                    .sum();
            }
        }
        // Vertical pass.
        for (oy, sp) in self.y.spans.iter().enumerate() {
            let w = &self.y.weights[sp.woff..sp.woff + sp.len];
            let orow = &mut out[oy * self.out_w..(oy + 1) * self.out_w];
            orow.fill(0.0);
            for (k, &wk) in w.iter().enumerate() {
                let trow = &self.tmp[(sp.start + k) * self.out_w..(sp.start + k + 1) * self.out_w];
                for (o, &t) in orow.iter_mut().zip(trow) {
                    *o += wk * t;
                }
            }
        }
    }

    /// Resizes an f32 plane.
    pub fn resize(&mut self, src: &[f32], out: &mut [f32]) {
        self.resize_map(src, out, |v| v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &[f32], iw: usize, ih: usize, ow: usize, oh: usize) -> Vec<f32> {
        let mut out = vec![0.0; ow * oh];
        Resizer::new(iw, ih, ow, oh).resize(src, &mut out);
        out
    }

    #[test]
    fn same_size_is_identity() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(run(&src, 4, 3, 4, 3), src);
    }

    #[test]
    fn halving_averages_blocks() {
        let src = vec![1.0, 3.0, 10.0, 20.0, 5.0, 7.0, 30.0, 40.0];
        assert_eq!(run(&src, 4, 2, 2, 1), vec![4.0, 25.0]);
    }

    #[test]
    fn area_shrink_by_non_integer_factor_weights_overlaps() {
        // 3 -> 2: output 0 covers [0,1.5): (a + b/2)/1.5; output 1 covers [1.5,3): (b/2 + c)/1.5.
        let out = run(&[3.0, 6.0, 9.0], 3, 1, 2, 1);
        assert!(
            (out[0] - 4.0).abs() < 1e-5 && (out[1] - 8.0).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn area_shrink_preserves_mean() {
        let src: Vec<f32> = (0..160 * 120).map(|i| ((i * 37) % 101) as f32).collect();
        let out = run(&src, 160, 120, 64, 48);
        let m_in: f64 = src.iter().map(|&v| v as f64).sum::<f64>() / src.len() as f64;
        let m_out: f64 = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
        assert!((m_in - m_out).abs() < 1e-3, "{m_in} vs {m_out}");
    }

    #[test]
    fn doubling_is_bilinear_with_half_pixel_centres() {
        // Output centres at src coords -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1).
        assert_eq!(run(&[0.0, 4.0], 2, 1, 4, 1), vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn constant_image_stays_constant_both_ways() {
        let src = vec![0.5f32; 7 * 5];
        for (ow, oh) in [(3, 2), (20, 13), (7, 9)] {
            assert!(run(&src, 7, 5, ow, oh)
                .iter()
                .all(|&v| (v - 0.5).abs() < 1e-6));
        }
    }
}
