//! 2-D convolution and transposed convolution (stride 1 / stride 2 upsampling), NCHW.

use candle_core::{Result, Tensor};

use super::im2col::{col2im, conv_taps, Geometry};

use crate::model::params::{Builder, Init, ParamError};

/// Conv2d with bias, stride 1, "same" padding for odd kernels unless given.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Weight (out, in, k, k).
    pub weight: Tensor,
    /// Bias (out).
    pub bias: Tensor,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation of the kernel.
    pub dilation: usize,
}

impl Conv2d {
    /// A k×k convolution `cin → cout` with PyTorch's default init (U(±1/√fan_in)).
    pub fn new(
        b: Builder<'_>,
        cin: usize,
        cout: usize,
        k: usize,
    ) -> std::result::Result<Self, ParamError> {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        Ok(Self {
            weight: b.param("weight", &[cout, cin, k, k], Init::Uniform(bound))?,
            bias: b.param("bias", &[cout], Init::Uniform(bound))?,
            padding: k / 2,
            dilation: 1,
        })
    }

    /// Applies the convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight, &self.bias)
    }

    /// Applies this convolution's geometry with another weight and bias of the same shapes
    /// (quantization-aware training runs it with folded, fake-quantized weights).
    pub fn forward_with(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let y = if x.device().is_cpu() && self.dilation == 1 {
            let (_, cin, h, w) = x.dims4()?;
            let (cout, _, k, _) = weight.dims4()?;
            let g = Geometry::new(cin, h, w, k, 1, self.padding, Geometry::dense_taps(k));
            conv_taps(x, &weight.reshape((cout, cin * k * k))?, &g)?
        } else {
            x.conv2d(weight, self.padding, 1, self.dilation, 1)?
        };
        y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
    }
}

/// ConvTranspose2d(k3, s2, p1, output_padding 1): doubles height and width, as MNAD's decoder.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    /// Weight (in, out, 3, 3), PyTorch's layout.
    pub weight: Tensor,
    /// Bias (out).
    pub bias: Tensor,
}

impl ConvTranspose2d {
    /// A ×2 upsampling transposed convolution `cin → cout`.
    pub fn new(b: Builder<'_>, cin: usize, cout: usize) -> std::result::Result<Self, ParamError> {
        // PyTorch computes fan_in of a transposed conv from weight.size(1) = cout.
        let bound = 1.0 / ((cout * 9) as f32).sqrt();
        Ok(Self {
            weight: b.param("weight", &[cin, cout, 3, 3], Init::Uniform(bound))?,
            bias: b.param("bias", &[cout], Init::Uniform(bound))?,
        })
    }

    /// Applies the transposed convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight, &self.bias)
    }

    /// Applies the transposed convolution with another weight (in, out, 3, 3) and bias (out).
    pub fn forward_with(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let y = if x.device().is_cpu() {
            let (b, cin, h, w) = x.dims4()?;
            let cout = weight.dim(1)?;
            // The transposed conv is the adjoint of a stride-2 conv on the output grid.
            let g = Geometry::new(cout, 2 * h, 2 * w, 3, 2, 1, Geometry::dense_taps(3));
            let wt = weight.reshape((cin, cout * 9))?.t()?;
            col2im(&wt.broadcast_matmul(&x.reshape((b, cin, h * w))?)?, &g)?
        } else {
            x.conv_transpose2d(weight, 1, 1, 2, 1)?
        };
        y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
    }
}
