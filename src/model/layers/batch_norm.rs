//! Batch normalisation over (N, H, W) per channel, with running statistics kept as buffers so
//! they are saved with the checkpoint (candle's own BatchNorm keeps them outside the VarMap).
//!
//! On the CPU the normalisation and its backward are one fused pass each: built from generic
//! broadcast and reduction ops, a full-resolution BN + ReLU took ~176 ms forward and backward,
//! and dominated a training step.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::model::params::{Builder, Init, ParamError};

/// BatchNorm2d (eps 1e-5, momentum 0.1, as PyTorch).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Scale (C).
    pub weight: Tensor,
    /// Shift (C).
    pub bias: Tensor,
    /// Running mean (C).
    pub running_mean: Var,
    /// Running variance (C), unbiased as PyTorch keeps it.
    pub running_var: Var,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistics in the running averages.
    pub momentum: f64,
}

/// y = γ·(x − mean)·invstd + β per channel; backward treats mean/invstd as batch statistics
/// of x (train mode) when `batch_stats` is set.
struct Normalize {
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("batch norm needs contiguous inputs"),
    }
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let dims = l1.dims();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(bc, (yo, xi))| {
                let ch = bc % c;
                let a = g[ch] * self.invstd[ch];
                let off = b[ch] - self.mean[ch] * a;
                for (o, &v) in yo.iter_mut().zip(xi) {
                    *o = v * a + off;
                }
            });
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (bsz, c, h, w) = x.dims4()?;
        let hw = h * w;
        let n = (bsz * hw) as f64;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let dyv = dy.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gv = g.to_vec1::<f32>()?;
        // Per-channel sums of dy and dy·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, is) = (self.mean[ch], self.invstd[ch]);
                let (mut sd, mut sdx) = (0f64, 0f64);
                for bi in 0..bsz {
                    let o = (bi * c + ch) * hw;
                    for (&d, &v) in dyv[o..o + hw].iter().zip(&xv[o..o + hw]) {
                        sd += f64::from(d);
                        sdx += f64::from(d) * f64::from((v - m) * is);
                    }
                }
                (sd, sdx)
            })
            .collect();
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(hw).enumerate().for_each(|(bc, out)| {
            let ch = bc % c;
            let (m, is) = (self.mean[ch], self.invstd[ch]);
            let (sd, sdx) = sums[ch];
            let (md, mdx) = ((sd / n) as f32, (sdx / n) as f32);
            let k = gv[ch] * is;
            let o = bc * hw;
            for ((d, &dyy), &v) in out.iter_mut().zip(&dyv[o..o + hw]).zip(&xv[o..o + hw]) {
                *d = k * (dyy - md - (v - m) * is * mdx);
            }
        });
        let dev = x.device();
        let dgamma = Tensor::from_vec(sums.iter().map(|s| s.1 as f32).collect::<Vec<_>>(), c, dev)?;
        let dbeta = Tensor::from_vec(sums.iter().map(|s| s.0 as f32).collect::<Vec<_>>(), c, dev)?;
        Ok((
            Some(Tensor::from_vec(dx, (bsz, c, h, w), dev)?),
            Some(dgamma),
            Some(dbeta),
        ))
    }
}

impl BatchNorm2d {
    /// A batch norm over `c` channels.
    pub fn new(b: Builder<'_>, c: usize) -> std::result::Result<Self, ParamError> {
        let weight = b.param("weight", &[c], Init::Const(1.0))?;
        let bias = b.param("bias", &[c], Init::Const(0.0))?;
        b.buffer("running_mean", &[c], Init::Const(0.0))?;
        b.buffer("running_var", &[c], Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: b.var("running_mean").expect("just created"),
            running_var: b.var("running_var").expect("just created"),
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: f64) -> Result<()> {
        let m = self.momentum;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
        let unbiased = (var.detach() * (count / (count - 1.0).max(1.0)))?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }

    /// Normalises with batch statistics (`train`, also updating the running ones) or running ones.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            return self.forward_cpu(x, train);
        }
        let shape = (1, (), 1, 1);
        let (mean, var) = if train {
            let (n, _, h, w) = x.dims4()?;
            let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let var = x
                .broadcast_sub(&mean)?
                .sqr()?
                .mean_keepdim(0)?
                .mean_keepdim(2)?
                .mean_keepdim(3)?;
            self.update_running(
                &mean.flatten_all()?,
                &var.flatten_all()?,
                (n * h * w) as f64,
            )?;
            (mean, var)
        } else {
            (
                self.running_mean.as_detached_tensor().reshape(shape)?,
                self.running_var.as_detached_tensor().reshape(shape)?,
            )
        };
        let y = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        y.broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }

    fn forward_cpu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (bsz, c, h, w) = x.dims4()?;
        let (mean, var) = if train {
            let hw = h * w;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let stats: Vec<(f64, f64)> = (0..c)
                .into_par_iter()
                .map(|ch| {
                    let (mut s, mut s2) = (0f64, 0f64);
                    for bi in 0..bsz {
                        for &v in &xv[(bi * c + ch) * hw..(bi * c + ch + 1) * hw] {
                            s += f64::from(v);
                            s2 += f64::from(v) * f64::from(v);
                        }
                    }
                    let n = (bsz * hw) as f64;
                    let m = s / n;
                    (m, (s2 / n - m * m).max(0.0))
                })
                .collect();
            let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
            let var: Vec<f32> = stats.iter().map(|s| s.1 as f32).collect();
            let (mt, vt) = (
                Tensor::from_slice(&mean, c, x.device())?,
                Tensor::from_slice(&var, c, x.device())?,
            );
            self.update_running(&mt, &vt, (bsz * hw) as f64)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().to_vec1::<f32>()?,
                self.running_var.as_tensor().to_vec1::<f32>()?,
            )
        };
        let invstd = var
            .iter()
            .map(|v| 1.0 / (f64::from(*v) + self.eps).sqrt() as f32)
            .collect();
        let op = Normalize {
            mean: Arc::new(mean),
            invstd: Arc::new(invstd),
        };
        let (g, b) = (self.weight.contiguous()?, self.bias.contiguous()?);
        if train {
            x.apply_op3(&g, &b, op)
        } else {
            // Running statistics are constants, so the batch-statistics backward does not apply;
            // eval mode is for scoring, which needs no gradients.
            x.apply_op3_no_bwd(&g, &b, &op)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ParamStore;
    use candle_core::Device;

    fn reference(bn: &BatchNorm2d, x: &Tensor, train: bool) -> Tensor {
        let shape = (1, (), 1, 1);
        let (mean, var) = if train {
            let mean = x
                .mean_keepdim(0)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(3)
                .unwrap();
            let var = x
                .broadcast_sub(&mean)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_keepdim(0)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(3)
                .unwrap();
            (mean, var)
        } else {
            (
                bn.running_mean.as_detached_tensor().reshape(shape).unwrap(),
                bn.running_var.as_detached_tensor().reshape(shape).unwrap(),
            )
        };
        let y = x
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&(var + bn.eps).unwrap().sqrt().unwrap())
            .unwrap();
        y.broadcast_mul(&bn.weight.reshape(shape).unwrap())
            .unwrap()
            .broadcast_add(&bn.bias.reshape(shape).unwrap())
            .unwrap()
    }

    #[test]
    fn fused_cpu_path_matches_tensor_ops_forward_and_backward() {
        let store = ParamStore::new(Device::Cpu, 1);
        let bn = BatchNorm2d::new(store.root(), 3).unwrap();
        bn.weight.to_vec1::<f32>().unwrap();
        let gamma = store.var("weight").unwrap();
        gamma
            .set(&Tensor::new(&[0.5f32, 2.0, -1.0], &Device::Cpu).unwrap())
            .unwrap();
        store
            .var("bias")
            .unwrap()
            .set(&Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap())
            .unwrap();
        let mut r = crate::rng::Rng::new(4);
        let data: Vec<f32> = (0..2 * 3 * 4 * 5).map(|_| r.f32() * 3.0 - 1.0).collect();
        let x = Var::from_vec(data, (2, 3, 4, 5), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(
            (0..120).map(|_| r.f32()).collect::<Vec<_>>(),
            (2, 3, 4, 5),
            &Device::Cpu,
        )
        .unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };

        let ours = bn.forward(x.as_tensor(), true).unwrap();
        let theirs = reference(&bn, x.as_tensor(), true);
        assert!(diff(&ours, &theirs) < 1e-5);
        let go = ours.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = theirs
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-5);
        let (pw, pb) = (store.var("weight").unwrap(), store.var("bias").unwrap());
        assert!(diff(go.get(&pw).unwrap(), gt.get(&pw).unwrap()) < 1e-4);
        assert!(diff(go.get(&pb).unwrap(), gt.get(&pb).unwrap()) < 1e-4);
        // Running statistics moved towards the batch's (one update per train-mode forward).
        let rm = bn.running_mean.as_tensor().to_vec1::<f32>().unwrap();
        assert!(rm.iter().all(|v| *v != 0.0));
        let ours = bn.forward(x.as_tensor(), false).unwrap();
        assert!(diff(&ours, &reference(&bn, x.as_tensor(), false)) < 1e-5);
    }
}
