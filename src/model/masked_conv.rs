//! The masked convolution of SSPCAB/SSMCTB: four k′×k′ sub-kernels at the corners of a
//! (2k′+2d+1)² receptive field whose centre is masked, summed, then one ReLU.
//!
//! The four sub-kernels are stored as the official code's four convolutions (`conv1`..`conv4`:
//! top-left, bottom-left, top-right, bottom-right) and run as one convolution with a zero
//! centre, which is what the ONNX exporter writes too.

use candle_core::{Result, Tensor};

use super::layers::im2col::{conv_taps, Geometry};
use super::layers::Conv2d;
use super::params::{Builder, ParamError};

/// Masked convolution C → C.
#[derive(Debug, Clone)]
pub struct MaskedConv {
    /// The four corner convolutions (top-left, bottom-left, top-right, bottom-right).
    pub subs: [Conv2d; 4],
    /// Sub-kernel size k′.
    pub k_prime: usize,
    /// Gap d between centre and sub-kernels.
    pub dilation: usize,
}

impl MaskedConv {
    /// A masked convolution over `c` channels.
    pub fn new(
        b: Builder<'_>,
        c: usize,
        k_prime: usize,
        dilation: usize,
    ) -> std::result::Result<Self, ParamError> {
        let mk = |name: &str| -> std::result::Result<Conv2d, ParamError> {
            Conv2d::new(b.pp(name).b(), c, c, k_prime)
        };
        Ok(Self {
            subs: [mk("conv1")?, mk("conv2")?, mk("conv3")?, mk("conv4")?],
            k_prime,
            dilation,
        })
    }

    /// Full kernel size 2k′ + 2d + 1.
    pub fn kernel_size(&self) -> usize {
        2 * self.k_prime + 2 * self.dilation + 1
    }

    /// The equivalent single (C, C, k, k) kernel with zeros outside the corners, and its bias.
    pub fn full_kernel(&self) -> Result<(Tensor, Tensor)> {
        let gap = self.kernel_size() - self.k_prime;
        // (top pad, left pad) of each corner block: conv1 top-left, conv2 bottom-left,
        // conv3 top-right, conv4 bottom-right (the official code's slicing).
        let places = [(0, 0), (gap, 0), (0, gap), (gap, gap)];
        let mut kernel: Option<Tensor> = None;
        let mut bias: Option<Tensor> = None;
        for (sub, (top, left)) in self.subs.iter().zip(places) {
            let k = sub
                .weight
                .pad_with_zeros(2, top, gap - top)?
                .pad_with_zeros(3, left, gap - left)?;
            kernel = Some(match kernel {
                Some(acc) => (acc + k)?,
                None => k,
            });
            bias = Some(match bias {
                Some(acc) => (acc + &sub.bias)?,
                None => sub.bias.clone(),
            });
        }
        Ok((
            kernel.expect("four sub-kernels"),
            bias.expect("four biases"),
        ))
    }

    /// Applies the masked convolution and the ReLU; output shape = input shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mapped(x, |k, b| Ok((k.clone(), b.clone())))
    }

    /// Applies the masked convolution with its kernel and summed bias first passed through
    /// `map`, which gets the kernel with the output channel on axis 0 — the live taps
    /// (C, C·4k′²) on the CPU, the full (C, C, k, k) kernel elsewhere; zeros outside the corners
    /// do not change a per-output-channel maximum — and the bias (C). Quantization-aware
    /// training folds and fake-quantizes here.
    pub fn forward_mapped(
        &self,
        x: &Tensor,
        map: impl FnOnce(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let pad = self.k_prime + self.dilation;
        let y = if x.device().is_cpu() {
            // Gather only the 4k′² live taps instead of running the mostly-zero k×k kernel.
            let (_, c, h, w) = x.dims4()?;
            let kp = self.k_prime;
            let gap = self.kernel_size() - kp;
            let places = [(0, 0), (gap, 0), (0, gap), (gap, gap)];
            let taps: Vec<(usize, usize)> = places
                .iter()
                .flat_map(|&(t, l)| (0..kp).flat_map(move |i| (0..kp).map(move |j| (t + i, l + j))))
                .collect();
            let cout = self.subs[0].weight.dim(0)?;
            let parts = self
                .subs
                .iter()
                .map(|s| s.weight.reshape((cout, c, kp * kp)))
                .collect::<Result<Vec<_>>>()?;
            let wmat = Tensor::cat(&parts, 2)?.reshape((cout, c * taps.len()))?;
            let g = Geometry::new(c, h, w, self.kernel_size(), 1, pad, taps);
            let bias = self
                .subs
                .iter()
                .skip(1)
                .try_fold(self.subs[0].bias.clone(), |acc, s| acc + &s.bias)?;
            let (wmat, bias) = map(&wmat, &bias)?;
            conv_taps(x, &wmat, &g)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?
        } else {
            let (k, b) = self.full_kernel()?;
            let (k, b) = map(&k, &b)?;
            x.conv2d(&k, pad, 1, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1, 1))?)?
        };
        y.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ParamStore;
    use candle_core::{Device, IndexOp};

    fn input(c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..c * h * w).map(|_| r.f32() * 2.0 - 1.0).collect()
    }

    fn run(mc: &MaskedConv, x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let t = Tensor::from_slice(x, (1, c, h, w), &Device::Cpu).unwrap();
        // Before the ReLU, so that changes are never hidden by clipping.
        let (k, b) = mc.full_kernel().unwrap();
        let y = t
            .conv2d(&k, mc.k_prime + mc.dilation, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn output_ignores_the_masked_centre_and_sees_the_corners() {
        for (kp, d) in [(1, 1), (2, 1), (1, 2)] {
            let (c, h, w) = (3, 9, 11);
            let s = ParamStore::new(Device::Cpu, 5);
            let mc = MaskedConv::new(s.root(), c, kp, d).unwrap();
            let x = input(c, h, w, 1);
            let base = run(&mc, &x, c, h, w);
            let (y0, x0) = (4usize, 5usize);
            // Changing every channel at (y0, x0) leaves the output at (·, y0, x0) unchanged.
            let mut xc = x.clone();
            for ch in 0..c {
                xc[ch * h * w + y0 * w + x0] += 3.0;
            }
            let changed = run(&mc, &xc, c, h, w);
            for ch in 0..c {
                let i = ch * h * w + y0 * w + x0;
                assert!(
                    (changed[i] - base[i]).abs() < 1e-5,
                    "k'={kp} d={d}: centre leaked"
                );
            }
            // Changing an input on each sub-kernel (corner taps at offset ±(d+1)) changes it.
            for (dy, dx) in [(-1i64, -1i64), (1, -1), (-1, 1), (1, 1)] {
                let off = (d + 1) as i64;
                let (yy, xx) = (
                    (y0 as i64 + dy * off) as usize,
                    (x0 as i64 + dx * off) as usize,
                );
                let mut xs = x.clone();
                xs[yy * w + xx] += 3.0;
                let out = run(&mc, &xs, c, h, w);
                let i = y0 * w + x0;
                assert!(
                    (out[i] - base[i]).abs() > 1e-4,
                    "k'={kp} d={d}: corner ({dy},{dx}) not seen"
                );
            }
            // Inputs inside the gap (distance ≤ d, not the centre) are not seen either.
            let mut xg = x.clone();
            xg[(y0 - d) * w + x0] += 3.0;
            let out = run(&mc, &xg, c, h, w);
            assert!((out[y0 * w + x0] - base[y0 * w + x0]).abs() < 1e-5);
        }
    }

    #[test]
    fn single_kernel_equals_four_sliced_convolutions() {
        // The official form: pad k'+d, conv1 on [:H+k'-1, :W+k'-1], conv2 rows [b:], cols [:-b], ...
        let (c, h, w, kp, d) = (2, 6, 7, 1, 1);
        let s = ParamStore::new(Device::Cpu, 9);
        let mc = MaskedConv::new(s.root(), c, kp, d).unwrap();
        let x = Tensor::from_vec(input(c, h, w, 2), (1, c, h, w), &Device::Cpu).unwrap();
        let p = kp + d;
        let xp = x
            .pad_with_zeros(2, p, p)
            .unwrap()
            .pad_with_zeros(3, p, p)
            .unwrap();
        let b = kp + 2 * d + 1;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let sl = |t: &Tensor, r0: usize, r1: usize, c0: usize, c1: usize| {
            t.i((.., .., r0..r1, c0..c1)).unwrap()
        };
        let parts = [
            sl(&xp, 0, h + kp - 1, 0, w + kp - 1),
            sl(&xp, b, hp, 0, wp - b),
            sl(&xp, 0, hp - b, b, wp),
            sl(&xp, b, hp, b, wp),
        ];
        let mut sum: Option<Tensor> = None;
        for (part, sub) in parts.iter().zip(&mc.subs) {
            let y = part
                .conv2d(&sub.weight, 0, 1, 1, 1)
                .unwrap()
                .broadcast_add(&sub.bias.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            sum = Some(match sum {
                Some(a) => (a + y).unwrap(),
                None => y,
            });
        }
        let official = sum
            .unwrap()
            .relu()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = mc
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(official.len(), ours.len());
        for (a, b) in official.iter().zip(&ours) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
