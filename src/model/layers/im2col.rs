//! Convolutions on the CPU as im2col + matrix multiply, with im2col and its adjoint col2im as
//! custom candle ops that are each other's backward.
//!
//! candle's CPU `conv2d` backward runs a naive transposed convolution and a huge-kernel
//! convolution; training spent most of its time there. Here the matrix products go through
//! candle's matmul (the `gemm` crate) and only the gathers/scatters are ours. A tap list lets
//! the masked convolution gather just its 4k′² live taps instead of a mostly-zero kernel.
//! Other devices (CUDA) keep candle's own kernels.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Where a convolution reads: input size, output grid, stride, padding and kernel taps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Channels.
    pub c: usize,
    /// Input (image-side) height.
    pub h: usize,
    /// Input (image-side) width.
    pub w: usize,
    /// Output grid height.
    pub ho: usize,
    /// Output grid width.
    pub wo: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Kernel taps (row, column) within the kernel window.
    pub taps: Arc<Vec<(usize, usize)>>,
}

impl Geometry {
    /// All taps of a dense k×k kernel, row-major.
    pub fn dense_taps(k: usize) -> Vec<(usize, usize)> {
        (0..k).flat_map(|y| (0..k).map(move |x| (y, x))).collect()
    }

    /// Geometry of a convolution over an h×w input with kernel extent `k` (for the output size).
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
        taps: Vec<(usize, usize)>,
    ) -> Self {
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (w + 2 * pad - k) / stride + 1;
        Self {
            c,
            h,
            w,
            ho,
            wo,
            stride,
            pad,
            taps: Arc::new(taps),
        }
    }

    fn rows(&self) -> usize {
        self.c * self.taps.len()
    }

    /// Input-image index for output position `o` and kernel offset `k`, if inside the image.
    #[inline]
    fn src(&self, o: usize, k: usize, n: usize) -> Option<usize> {
        let i = (o * self.stride + k).checked_sub(self.pad)?;
        (i < n).then_some(i)
    }

    fn im2col<T: WithDType>(&self, x: &[T], b: usize) -> Vec<T> {
        let (plane, cols) = (self.h * self.w, self.ho * self.wo);
        let t = self.taps.len();
        let mut out = vec![T::zero(); b * self.rows() * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
            let (bi, rest) = (row / self.rows(), row % self.rows());
            let (c, tap) = (rest / t, rest % t);
            let (ky, kx) = self.taps[tap];
            let src = &x[(bi * self.c + c) * plane..(bi * self.c + c + 1) * plane];
            for oy in 0..self.ho {
                let Some(iy) = self.src(oy, ky, self.h) else {
                    continue;
                };
                let srow = &src[iy * self.w..(iy + 1) * self.w];
                let drow = &mut dst[oy * self.wo..(oy + 1) * self.wo];
                if self.stride == 1 {
                    // Contiguous run of valid columns: ix = ox + kx − pad in [0, w).
                    let lo = self.pad.saturating_sub(kx).min(self.wo);
                    let hi = (self.w + self.pad).saturating_sub(kx).min(self.wo).max(lo);
                    if hi > lo {
                        let s0 = lo + kx - self.pad;
                        drow[lo..hi].copy_from_slice(&srow[s0..s0 + (hi - lo)]);
                    }
                } else {
                    for (ox, d) in drow.iter_mut().enumerate() {
                        if let Some(ix) = self.src(ox, kx, self.w) {
                            *d = srow[ix];
                        }
                    }
                }
            }
        });
        out
    }

    fn col2im<T: WithDType>(&self, col: &[T], b: usize) -> Vec<T> {
        let (plane, cols) = (self.h * self.w, self.ho * self.wo);
        let t = self.taps.len();
        let mut out = vec![T::zero(); b * self.c * plane];
        out.par_chunks_mut(plane).enumerate().for_each(|(bc, dst)| {
            let (bi, c) = (bc / self.c, bc % self.c);
            for (tap, &(ky, kx)) in self.taps.iter().enumerate() {
                let row = (bi * self.c + c) * t + tap;
                let src = &col[row * cols..(row + 1) * cols];
                for oy in 0..self.ho {
                    let Some(iy) = self.src(oy, ky, self.h) else {
                        continue;
                    };
                    let drow = &mut dst[iy * self.w..(iy + 1) * self.w];
                    let srow = &src[oy * self.wo..(oy + 1) * self.wo];
                    for (ox, &v) in srow.iter().enumerate() {
                        if let Some(ix) = self.src(ox, kx, self.w) {
                            drow[ix] += v;
                        }
                    }
                }
            }
        });
        out
    }
}

fn contiguous<'a, T: WithDType>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("im2col/col2im need a contiguous input"),
    }
}

/// (B, C, H, W) → (B, C·T, ho·wo).
struct Im2Col(Geometry);
/// (B, C·T, ho·wo) → (B, C, H, W), summing overlapping taps (the adjoint of [`Im2Col`]).
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let b = l.dims()[0];
        let shape = Shape::from((b, g.rows(), g.ho * g.wo));
        Ok(match s {
            CpuStorage::F32(v) => (CpuStorage::F32(g.im2col(contiguous(v, l)?, b)), shape),
            CpuStorage::F64(v) => (CpuStorage::F64(g.im2col(contiguous(v, l)?, b)), shape),
            _ => candle_core::bail!("im2col supports f32 and f64"),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im(self.0.clone()))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let b = l.dims()[0];
        let shape = Shape::from((b, g.c, g.h, g.w));
        Ok(match s {
            CpuStorage::F32(v) => (CpuStorage::F32(g.col2im(contiguous(v, l)?, b)), shape),
            CpuStorage::F64(v) => (CpuStorage::F64(g.col2im(contiguous(v, l)?, b)), shape),
            _ => candle_core::bail!("col2im supports f32 and f64"),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0.clone()))?))
    }
}

/// Gathers convolution patches: (B, C, H, W) → (B, C·T, ho·wo), rows ordered (channel, tap).
pub fn im2col(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col(g.clone()))
}

/// Scatters patches back, summing overlaps: (B, C·T, ho·wo) → (B, C, H, W).
pub fn col2im(col: &Tensor, g: &Geometry) -> Result<Tensor> {
    col.contiguous()?.apply_op1(Col2Im(g.clone()))
}

/// Stride-1 convolution with weights laid out as (Cout, Cin·T) for the taps of `g`.
pub fn conv_taps(x: &Tensor, wmat: &Tensor, g: &Geometry) -> Result<Tensor> {
    let b = x.dim(0)?;
    let col = im2col(x, g)?;
    let y = wmat.broadcast_matmul(&col)?;
    y.reshape((b, wmat.dim(0)?, g.ho, g.wo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| r.f64() * 2.0 - 1.0).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn conv_matches_candle_forward_and_backward() {
        let x = Var::from_tensor(&rand(&[2, 3, 7, 9], 1)).unwrap();
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 2)).unwrap();
        let weights = rand(&[2, 4, 7, 9], 3);
        let g = Geometry::new(3, 7, 9, 3, 1, 1, Geometry::dense_taps(3));
        let ours = conv_taps(x.as_tensor(), &w.as_tensor().reshape((4, 27)).unwrap(), &g).unwrap();
        let theirs = x.as_tensor().conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-12);
        let go = ours
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gt = theirs
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-12);
        assert!(max_diff(go.get(&w).unwrap(), gt.get(&w).unwrap()) < 1e-12);
    }

    #[test]
    fn col2im_transposed_conv_matches_candle() {
        // ConvTranspose2d(k3, s2, p1, op1): y = col2im(Wᵀ x) on the conv geometry of the output.
        let x = Var::from_tensor(&rand(&[2, 3, 4, 5], 4)).unwrap();
        let w = Var::from_tensor(&rand(&[3, 2, 3, 3], 5)).unwrap();
        let weights = rand(&[2, 2, 8, 10], 6);
        let g = Geometry::new(2, 8, 10, 3, 2, 1, Geometry::dense_taps(3));
        assert_eq!((g.ho, g.wo), (4, 5));
        let wt = w.as_tensor().reshape((3, 18)).unwrap().t().unwrap();
        let cols = wt
            .broadcast_matmul(&x.as_tensor().reshape((2, 3, 20)).unwrap())
            .unwrap();
        let ours = col2im(&cols, &g).unwrap();
        let theirs = x
            .as_tensor()
            .conv_transpose2d(w.as_tensor(), 1, 1, 2, 1)
            .unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-12);
        let go = ours
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gt = theirs
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-12);
        assert!(max_diff(go.get(&w).unwrap(), gt.get(&w).unwrap()) < 1e-12);
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for a sparse tap set and stride 2.
        let g = Geometry::new(2, 6, 7, 5, 2, 2, vec![(0, 0), (4, 0), (0, 4), (4, 4)]);
        let x = rand(&[1, 2, 6, 7], 7);
        let c = rand(&[1, 8, g.ho * g.wo], 8);
        let lhs = im2col(&x, &g)
            .unwrap()
            .mul(&c)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let rhs = x
            .mul(&col2im(&c, &g).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    }
}
