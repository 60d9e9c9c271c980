//! The MNAD network as an f32 ONNX graph, eval mode: batch norm folded into the convolution
//! before it (or a per-channel Mul/Add where a non-linearity sits between), the masked
//! convolution as one k×k convolution with a zero centre, and the memory items as a graph
//! input so that the runtime can own and update them.

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;

use super::onnx::{Attr, Dim, GraphBuilder};
use super::quant::{quant_params, quantize_weight_with_scales, weight_scales};
use super::ExportError;
use crate::model::config::{BlockConfig, BlockVariant, Mode, ModelConfig, Upsample};
use crate::model::{Mnad, ParamStore};

/// Name of the input frames (1, c·(t−1), H, W).
pub const INPUT_FRAMES: &str = "frames";
/// Name of the memory-items input (M, D).
pub const INPUT_MEMORY: &str = "memory";
/// Name of the predicted (or reconstructed) frame output (1, c, H, W).
pub const OUTPUT_PRED: &str = "pred";
/// Name of the L2-normalised queries output (N, D), frame-major.
pub const OUTPUT_QUERIES: &str = "queries";
/// Name of the memory read weights output (N, M), softmax over items.
pub const OUTPUT_READ_WEIGHTS: &str = "read_weights";

/// PyTorch's (and our) batch-norm epsilon.
const BN_EPS: f64 = 1e-5;

/// A tensor read out of the store as plain f32 data.
struct Data {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn to_data(name: &str, t: &Tensor) -> Result<Data, ExportError> {
    let err = |source| ExportError::Tensor {
        name: name.to_string(),
        source,
    };
    let values = t
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)?;
    Ok(Data {
        shape: t.dims().to_vec(),
        values,
    })
}

/// Which graph to write.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphMode {
    /// The f32 graph (ConvTranspose for the transposed convolutions).
    F32 {
        /// Symbolic batch (see `ExportOptions`).
        symbolic_batch: bool,
    },
    /// The f32 graph in the int8 graph's structure (transposed convolutions as a 2×2
    /// convolution + DepthToSpace), whose activation sites calibration observes.
    Calibrate,
    /// The int8 QOperator graph, with the activation range of every site.
    Int8(BTreeMap<String, [f32; 2]>),
}

/// One activation that the int8 graph quantizes: a convolution's input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `<conv>.in` or `<conv>.out` (the conv's parameter prefix).
    pub name: String,
    /// The ONNX value holding it in the f32 / calibration graph.
    pub value: String,
    /// Whether a tanh follows (the network's output): its error counts after the tanh.
    pub then_tanh: bool,
}

/// A uint8 value of the int8 graph and its quantization.
#[derive(Debug, Clone)]
struct QValue {
    scale: f32,
    scale_name: String,
    zp_name: String,
}

/// A uint8 value by name.
#[derive(Debug, Clone)]
struct Quantized {
    name: String,
    q: QValue,
}

/// int8 state: site ranges, quantized values, dequantized copies.
#[derive(Debug, Default)]
struct Quantizer {
    ranges: BTreeMap<String, [f32; 2]>,
    values: HashMap<String, QValue>,
    dequantized: HashMap<String, String>,
}

/// The graph under construction with the weights it reads.
struct Exporter<'a> {
    g: GraphBuilder,
    weights: BTreeMap<String, Tensor>,
    cfg: &'a ModelConfig,
    symbolic_batch: bool,
    /// Transposed convolutions as a 2×2 convolution + DepthToSpace (int8 structure).
    subpixel: bool,
    sites: Vec<Site>,
    quant: Option<Quantizer>,
}

impl Exporter<'_> {
    fn get(&self, name: &str) -> Result<Data, ExportError> {
        let t = self
            .weights
            .get(name)
            .ok_or_else(|| ExportError::Missing(name.to_string()))?;
        to_data(name, t)
    }

    fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Data, ExportError> {
        let d = self.get(name)?;
        if d.shape != shape {
            return Err(ExportError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: d.shape,
            });
        }
        Ok(d)
    }

    /// Per-channel (scale, shift) of an eval-mode batch norm: y = x·scale + shift.
    fn bn_affine(&self, prefix: &str, c: usize) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
        let gamma = self.get_shaped(&format!("{prefix}.weight"), &[c])?.values;
        let beta = self.get_shaped(&format!("{prefix}.bias"), &[c])?.values;
        let mean = self
            .get_shaped(&format!("{prefix}.running_mean"), &[c])?
            .values;
        let var = self
            .get_shaped(&format!("{prefix}.running_var"), &[c])?
            .values;
        // In f64 so that folding adds no rounding beyond the final f32 cast.
        let scale: Vec<f64> = (0..c)
            .map(|i| f64::from(gamma[i]) / (f64::from(var[i]) + BN_EPS).sqrt())
            .collect();
        let shift = (0..c)
            .map(|i| (f64::from(beta[i]) - f64::from(mean[i]) * scale[i]) as f32)
            .collect();
        Ok((scale.iter().map(|&s| s as f32).collect(), shift))
    }

    /// Folds a batch norm into a kernel whose output channel is `out_axis` (0 for Conv, 1 for
    /// ConvTranspose) and into its bias: w′ = w·s, b′ = b·s + shift.
    fn fold(
        &self,
        w: &mut Data,
        b: &mut [f32],
        bn: &str,
        out_axis: usize,
    ) -> Result<(), ExportError> {
        let c = w.shape[out_axis];
        let (scale, shift) = self.bn_affine(bn, c)?;
        let inner: usize = w.shape[out_axis + 1..].iter().product();
        for (i, v) in w.values.iter_mut().enumerate() {
            *v = (f64::from(*v) * f64::from(scale[(i / inner) % c])) as f32;
        }
        for (i, v) in b.iter_mut().enumerate() {
            *v = (f64::from(*v) * f64::from(scale[i]) + f64::from(shift[i])) as f32;
        }
        Ok(())
    }

    /// Conv (same padding) from `{conv}.weight/bias`, BN `bn` folded in, then an optional Relu.
    fn conv(
        &mut self,
        x: &str,
        conv: &str,
        bn: Option<&str>,
        relu: bool,
    ) -> Result<String, ExportError> {
        let mut w = self.get(&format!("{conv}.weight"))?;
        let cout = w.shape[0];
        let mut b = self.get_shaped(&format!("{conv}.bias"), &[cout])?.values;
        if let Some(bn) = bn {
            self.fold(&mut w, &mut b, bn, 0)?;
        }
        let p = (w.shape[2] / 2) as i64;
        self.conv_node(x, conv, &w, &b, [p, p, p, p], 1, None, relu)
    }

    /// One convolution (stride 1, taps `dilation` pixels apart) with an optional ReLU: f32
    /// `Conv` (+ `Relu`), or in int8 mode `QLinearConv` whose saturating uint8 output performs
    /// the ReLU. `scales` overrides the per-output-channel weight scales (the sub-pixel form of
    /// a transposed convolution shares its scales between phases). Records the `<name>.in` /
    /// `<name>.out` sites.
    #[allow(clippy::too_many_arguments)]
    fn conv_node(
        &mut self,
        x: &str,
        name: &str,
        w: &Data,
        b: &[f32],
        pads: [i64; 4],
        dilation: i64,
        scales: Option<Vec<f32>>,
        relu: bool,
    ) -> Result<String, ExportError> {
        let (kh, kw) = (w.shape[2] as i64, w.shape[3] as i64);
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![kh, kw])),
            ("pads", Attr::Ints(pads.to_vec())),
            ("strides", Attr::Ints(vec![1, 1])),
            ("dilations", Attr::Ints(vec![dilation, dilation])),
        ];
        let site_in = format!("{name}.in");
        let site_out = format!("{name}.out");
        if self.quant.is_none() {
            self.sites.push(Site {
                name: site_in,
                value: x.to_string(),
                then_tanh: false,
            });
            let wn = self
                .g
                .constant_f32(&format!("{name}.weight"), &w.shape, &w.values);
            let bn = self.g.constant_f32(&format!("{name}.bias"), &[b.len()], b);
            let y = self.g.node("Conv", &[x, &wn, &bn], &attrs);
            let y = if relu {
                self.g.node("Relu", &[&y], &[])
            } else {
                y
            };
            self.sites.push(Site {
                name: site_out,
                value: y.clone(),
                then_tanh: false,
            });
            return Ok(y);
        }
        let xq = self.quantized(x, &site_in)?;
        let cout = w.shape[0];
        let scales = scales.unwrap_or_else(|| weight_scales(&w.values, &w.shape, 0));
        let wq = quantize_weight_with_scales(&w.values, &w.shape, 0, &scales);
        let bias: Vec<i32> = (0..cout)
            .map(|c| {
                let s = f64::from(xq.q.scale) * f64::from(scales[c]);
                (f64::from(b[c]) / s)
                    .round_ties_even()
                    .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
            })
            .collect();
        let [lo, hi] = self.range(&site_out)?;
        let (ys, yzp) = quant_params(if relu { 0.0 } else { lo }, hi);
        let wn = self
            .g
            .constant_i8(&format!("{name}.weight_q"), &w.shape, &wq);
        let wsn = self
            .g
            .constant_f32(&format!("{name}.weight_scale"), &[cout], &scales);
        let wzp = self
            .g
            .constant_i8(&format!("{name}.weight_zp"), &[cout], &vec![0; cout]);
        let bn = self
            .g
            .constant_i32(&format!("{name}.bias_q"), &[cout], &bias);
        let ysn = self.g.constant_f32(&format!("{name}.y_scale"), &[], &[ys]);
        let yzpn = self.g.constant_u8(&format!("{name}.y_zp"), &[], &[yzp]);
        let y = self.g.node(
            "QLinearConv",
            &[
                &xq.name,
                &xq.q.scale_name,
                &xq.q.zp_name,
                &wn,
                &wsn,
                &wzp,
                &ysn,
                &yzpn,
                &bn,
            ],
            &attrs,
        );
        self.mark_quantized(
            &y,
            QValue {
                scale: ys,
                scale_name: ysn,
                zp_name: yzpn,
            },
        );
        Ok(y)
    }

    /// The activation range of `site` (int8 mode), recorded as a site the graph uses.
    fn range(&mut self, site: &str) -> Result<[f32; 2], ExportError> {
        let q = self.quant.as_ref().expect("int8 mode");
        let r =
            q.ranges.get(site).copied().ok_or_else(|| {
                ExportError::Unsupported(format!("no activation range for {site}"))
            })?;
        self.sites.push(Site {
            name: site.to_string(),
            value: String::new(),
            then_tanh: false,
        });
        Ok(r)
    }

    fn mark_quantized(&mut self, value: &str, q: QValue) {
        if let Some(quant) = self.quant.as_mut() {
            quant.values.insert(value.to_string(), q);
        }
    }

    /// `x` as a uint8 value: itself when it already is one, else `QuantizeLinear` with the
    /// calibrated range of `site`.
    fn quantized(&mut self, x: &str, site: &str) -> Result<Quantized, ExportError> {
        if let Some(q) = self.quant.as_ref().and_then(|q| q.values.get(x)) {
            return Ok(Quantized {
                name: x.to_string(),
                q: q.clone(),
            });
        }
        let [lo, hi] = self.range(site)?;
        let (s, zp) = quant_params(lo, hi);
        let sn = self.g.constant_f32(&format!("{site}.scale"), &[], &[s]);
        let zpn = self.g.constant_u8(&format!("{site}.zp"), &[], &[zp]);
        let y = self.g.node("QuantizeLinear", &[x, &sn, &zpn], &[]);
        let q = QValue {
            scale: s,
            scale_name: sn,
            zp_name: zpn,
        };
        self.mark_quantized(&y, q.clone());
        Ok(Quantized { name: y, q })
    }

    /// `x` as an f32 value: a (shared) `DequantizeLinear` when it is a uint8 value.
    fn f(&mut self, x: &str) -> String {
        let Some(quant) = self.quant.as_ref() else {
            return x.to_string();
        };
        if let Some(d) = quant.dequantized.get(x) {
            return d.clone();
        }
        let Some(q) = quant.values.get(x).cloned() else {
            return x.to_string();
        };
        let d = self
            .g
            .node("DequantizeLinear", &[x, &q.scale_name, &q.zp_name], &[]);
        if let Some(quant) = self.quant.as_mut() {
            quant.dequantized.insert(x.to_string(), d.clone());
        }
        d
    }

    /// An op that commutes with uint8 quantization (max-pooling, data movement): its output
    /// keeps the input's quantization.
    fn passthrough(&mut self, x: &str, y: &str) {
        if let Some(q) = self.quant.as_ref().and_then(|q| q.values.get(x)).cloned() {
            self.mark_quantized(y, q);
        }
    }

    /// `Basic`: conv → BN → ReLU → conv → [BN → ReLU].
    fn basic(&mut self, x: &str, p: &str, tail: bool) -> Result<String, ExportError> {
        let y = self.conv(x, &format!("{p}.c1"), Some(&format!("{p}.bn1")), true)?;
        if tail {
            self.conv(&y, &format!("{p}.c2"), Some(&format!("{p}.bn2")), true)
        } else {
            self.conv(&y, &format!("{p}.c2"), None, false)
        }
    }

    fn max_pool(&mut self, x: &str) -> String {
        let y = self.g.node(
            "MaxPool",
            &[x],
            &[
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
        );
        self.passthrough(x, &y);
        y
    }

    /// `Up`: ConvTranspose (or nearest ×2 + conv) with its BN folded in, then ReLU.
    fn up(&mut self, x: &str, p: &str) -> Result<String, ExportError> {
        let bn = format!("{p}.bn");
        let y = match self.cfg.upsample {
            Upsample::Transpose => {
                let t = format!("{p}.t");
                let mut w = self.get(&format!("{t}.weight"))?;
                let cout = w.shape[1];
                let mut b = self.get_shaped(&format!("{t}.bias"), &[cout])?.values;
                self.fold(&mut w, &mut b, &bn, 1)?;
                if self.subpixel {
                    return self.subpixel_up(x, &t, &w, &b);
                }
                let wn = self
                    .g
                    .constant_f32(&format!("{t}.weight"), &w.shape, &w.values);
                let bname = self.g.constant_f32(&format!("{t}.bias"), &[cout], &b);
                self.g.node(
                    "ConvTranspose",
                    &[x, &wn, &bname],
                    &[
                        ("kernel_shape", Attr::Ints(vec![3, 3])),
                        ("strides", Attr::Ints(vec![2, 2])),
                        ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                        ("output_padding", Attr::Ints(vec![1, 1])),
                    ],
                )
            }
            Upsample::NearestConv => {
                let x = &self.f(x);
                let scales = self
                    .g
                    .constant_f32("up_scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
                // floor(i / 2), as candle's upsample_nearest2d for an exact ×2.
                let up = self.g.node(
                    "Resize",
                    &[x, "", &scales],
                    &[
                        ("mode", Attr::Str("nearest".into())),
                        (
                            "coordinate_transformation_mode",
                            Attr::Str("asymmetric".into()),
                        ),
                        ("nearest_mode", Attr::Str("floor".into())),
                    ],
                );
                return self.conv(&up, &format!("{p}.conv"), Some(&bn), true);
            }
        };
        Ok(self.g.node("Relu", &[&y], &[]))
    }

    /// The transposed convolution (k 3, stride 2, pad 1, output pad 1; weight (I, O, 3, 3), BN
    /// folded) followed by ReLU, as one 2×2 convolution with four phases of O channels each
    /// (padded one row/column at the end) and a DepthToSpace: output pixel (2m+a, 2n+b) is phase
    /// a·2+b at (m, n). Along one axis, phase 0 takes tap 1 at offset 0; phase 1 takes tap 2 at
    /// offset 0 and tap 0 at offset 1. The weight scales are per O channel over all nine taps,
    /// as quantization-aware training computes them.
    fn subpixel_up(
        &mut self,
        x: &str,
        name: &str,
        w: &Data,
        b: &[f32],
    ) -> Result<String, ExportError> {
        let (cin, cout) = (w.shape[0], w.shape[1]);
        // tap(phase, offset) along one axis; None where that phase has no tap.
        let tap = |phase: usize, off: usize| -> Option<usize> {
            match (phase, off) {
                (0, 0) => Some(1),
                (1, 0) => Some(2),
                (1, 1) => Some(0),
                _ => None,
            }
        };
        let mut k = vec![0f32; 4 * cout * cin * 4];
        for a in 0..2 {
            for bb in 0..2 {
                let phase = a * 2 + bb;
                for c in 0..cout {
                    for ci in 0..cin {
                        for u in 0..2 {
                            for v in 0..2 {
                                if let (Some(ky), Some(kx)) = (tap(a, u), tap(bb, v)) {
                                    let src = ((ci * cout + c) * 3 + ky) * 3 + kx;
                                    let dst = (((phase * cout + c) * cin + ci) * 2 + u) * 2 + v;
                                    k[dst] = w.values[src];
                                }
                            }
                        }
                    }
                }
            }
        }
        let scales = weight_scales(&w.values, &w.shape, 1);
        let scales4: Vec<f32> = (0..4).flat_map(|_| scales.iter().copied()).collect();
        let bias4: Vec<f32> = (0..4).flat_map(|_| b.iter().copied()).collect();
        let kd = Data {
            shape: vec![4 * cout, cin, 2, 2],
            values: k,
        };
        let y = self.conv_node(x, name, &kd, &bias4, [0, 0, 1, 1], 1, Some(scales4), true)?;
        let d2s = self.g.node(
            "DepthToSpace",
            &[&y],
            &[
                ("blocksize", Attr::Int(2)),
                ("mode", Attr::Str("DCR".into())),
            ],
        );
        self.passthrough(&y, &d2s);
        Ok(d2s)
    }

    /// Channel concatenation of two feature maps, in f32 (their quantizations differ).
    fn concat(&mut self, a: &str, b: &str) -> String {
        let a = self.f(a);
        let b = self.f(b);
        self.g.node("Concat", &[&a, &b], &[("axis", Attr::Int(1))])
    }

    fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.g.constant_i64("shape", shape);
        self.g.node("Reshape", &[x, &s], &[])
    }

    fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.g
            .node("Transpose", &[x], &[("perm", Attr::Ints(perm.to_vec()))])
    }

    /// x·Wᵀ (+ b) over the last dimension, from a `Linear`'s `{p}.weight` (out, in).
    fn linear(&mut self, x: &str, p: &str, bias: bool) -> Result<String, ExportError> {
        let w = self.get(&format!("{p}.weight"))?;
        let y = self.matmul_t(x, p, &w, 0, w.shape[0])?;
        if !bias {
            return Ok(y);
        }
        let b = self.get_shaped(&format!("{p}.bias"), &[w.shape[0]])?;
        let bn = self
            .g
            .constant_f32(&format!("{p}.bias"), &b.shape, &b.values);
        Ok(self.g.node("Add", &[&y, &bn], &[]))
    }

    /// x·W[rows]ᵀ for the row range `[r0, r1)` of a (out, in) weight.
    fn matmul_t(
        &mut self,
        x: &str,
        hint: &str,
        w: &Data,
        r0: usize,
        r1: usize,
    ) -> Result<String, ExportError> {
        let din = w.shape[1];
        let rows = r1 - r0;
        let mut t = vec![0f32; din * rows];
        for r in 0..rows {
            for c in 0..din {
                t[c * rows + r] = w.values[(r0 + r) * din + c];
            }
        }
        let wn = self
            .g
            .constant_f32(&format!("{hint}.weight_t"), &[din, rows], &t);
        Ok(self.g.node("MatMul", &[x, &wn], &[]))
    }

    fn layer_norm(
        &mut self,
        x: &str,
        p: &str,
        dim: usize,
        eps: f64,
    ) -> Result<String, ExportError> {
        let w = self.get_shaped(&format!("{p}.weight"), &[dim])?;
        let b = self.get_shaped(&format!("{p}.bias"), &[dim])?;
        let wn = self
            .g
            .constant_f32(&format!("{p}.weight"), &[dim], &w.values);
        let bn = self.g.constant_f32(&format!("{p}.bias"), &[dim], &b.values);
        Ok(self.g.node(
            "LayerNormalization",
            &[x, &wn, &bn],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
            ],
        ))
    }

    fn scale(&mut self, x: &str, s: f64) -> String {
        let c = self.g.constant_f32("scale", &[], &[s as f32]);
        self.g.node("Mul", &[x, &c], &[])
    }

    /// (B, C, T) → (B, H, C, T/H): tokens split into heads.
    fn split_heads(&mut self, x: &str, c: usize, heads: usize, d: usize) -> String {
        let r = self.reshape(x, &[0, c as i64, heads as i64, d as i64]);
        self.transpose(&r, &[0, 2, 1, 3])
    }

    /// Softmax(q·kᵀ·scale)·v for (B, H, C, d) queries/keys and (B, H, C, dv) values.
    fn attention(&mut self, q: &str, k: &str, v: &str, scale: f64) -> String {
        let kt = self.transpose(k, &[0, 1, 3, 2]);
        let s = self.g.node("MatMul", &[q, &kt], &[]);
        let s = self.scale(&s, scale);
        let a = self.g.node("Softmax", &[&s], &[("axis", Attr::Int(-1))]);
        self.g.node("MatMul", &[&a, v], &[])
    }

    /// One pre-norm layer of the paper's channel transformer on tokens r (B, C, d_t).
    fn paper_layer(
        &mut self,
        r: &str,
        p: &str,
        c: usize,
        bc: &BlockConfig,
    ) -> Result<String, ExportError> {
        let (dt, h) = (bc.token_dim, bc.heads);
        let dq = dt / h;
        let x = self.layer_norm(r, &format!("{p}.ln1"), dt, bc.ln_eps)?;
        let q = self.linear(&x, &format!("{p}.q"), false)?;
        let k = self.linear(&x, &format!("{p}.k"), false)?;
        let v = self.linear(&x, &format!("{p}.v"), false)?;
        let q = self.split_heads(&q, c, h, dq);
        let k = self.split_heads(&k, c, h, dq);
        let v = self.split_heads(&v, c, h, dt);
        let heads = self.attention(&q, &k, &v, 1.0 / (dq as f64).sqrt());
        // Heads are summed (eq. 4), not concatenated.
        let axes = self.g.constant_i64("axes", &[1]);
        let sum = self
            .g
            .node("ReduceSum", &[&heads, &axes], &[("keepdims", Attr::Int(0))]);
        let pp = self.g.node("Add", &[r, &sum], &[]);
        let m = self.layer_norm(&pp, &format!("{p}.ln2"), dt, bc.ln_eps)?;
        let m = self.linear(&m, &format!("{p}.fc1"), true)?;
        let m = self.g.node("Relu", &[&m], &[]);
        let m = self.linear(&m, &format!("{p}.fc2"), true)?;
        Ok(self.g.node("Add", &[&pp, &m], &[]))
    }

    /// The official code's attention layer on tokens r (B, C, d_t): concatenated heads + output.
    fn reference_attention(
        &mut self,
        r: &str,
        p: &str,
        c: usize,
        bc: &BlockConfig,
    ) -> Result<String, ExportError> {
        let (dt, h) = (bc.token_dim, bc.heads);
        let inner = h * dt;
        let qkv_name = format!("{p}.qkv");
        let w = self.get_shaped(&format!("{qkv_name}.weight"), &[3 * inner, dt])?;
        let mut parts = Vec::with_capacity(3);
        for i in 0..3 {
            let y = self.matmul_t(r, &qkv_name, &w, i * inner, (i + 1) * inner)?;
            parts.push(self.split_heads(&y, c, h, dt));
        }
        let o = self.attention(&parts[0], &parts[1], &parts[2], (dt as f64).powf(-0.5));
        let o = self.transpose(&o, &[0, 2, 1, 3]);
        let o = self.reshape(&o, &[0, c as i64, inner as i64]);
        self.linear(&o, &format!("{p}.out"), true)
    }

    /// The channel transformer's gate σ(mean over d_t of R̂), shaped (B, C, 1, 1).
    fn transformer_gate(&mut self, z: &str, c: usize) -> Result<String, ExportError> {
        let bc = self.cfg.block.clone();
        let p = "dec.gen.block.attn";
        let dt = bc.token_dim;
        let pooled = self.g.node("GlobalAveragePool", &[z], &[]);
        let pooled = self.reshape(&pooled, &[0, c as i64, 1]);
        let proj = self.linear(&pooled, &format!("{p}.proj"), true)?;
        let pos = self.get_shaped(&format!("{p}.pos"), &[c, dt])?;
        let pos = self
            .g
            .constant_f32(&format!("{p}.pos"), &[c, dt], &pos.values);
        let mut r = self.g.node("Add", &[&proj, &pos], &[]);
        match bc.variant {
            BlockVariant::ReferenceCode => r = self.reference_attention(&r, p, c, &bc)?,
            _ => {
                for i in 0..bc.layers {
                    r = self.paper_layer(&r, &format!("{p}.layers.{i}"), c, &bc)?;
                }
            }
        }
        let m = self.g.node(
            "ReduceMean",
            &[&r],
            &[("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(0))],
        );
        let s = self.g.node("Sigmoid", &[&m], &[]);
        Ok(self.reshape(&s, &[0, c as i64, 1, 1]))
    }

    /// SSPCAB's squeeze-and-excitation gate, shaped (B, C, 1, 1).
    fn se_gate(&mut self, z: &str, c: usize) -> Result<String, ExportError> {
        let p = "dec.gen.block.se";
        let pooled = self.g.node("GlobalAveragePool", &[z], &[]);
        let s = self.reshape(&pooled, &[0, c as i64]);
        let s = self.linear(&s, &format!("{p}.fc1"), true)?;
        let s = self.g.node("Relu", &[&s], &[]);
        let s = self.linear(&s, &format!("{p}.fc2"), true)?;
        let s = self.g.node("Sigmoid", &[&s], &[]);
        Ok(self.reshape(&s, &[0, c as i64, 1, 1]))
    }

    /// `Gen`: conv → BN → ReLU → block → [BN → ReLU] → conv → tanh.
    fn gen(&mut self, x: &str, net: &Mnad) -> Result<String, ExportError> {
        let p = "dec.gen";
        let y = self.conv(x, &format!("{p}.c1"), Some(&format!("{p}.bn1")), true)?;
        let bn2 = format!("{p}.bn2");
        let keep_bn = self.cfg.block.keep_bn_after;
        let y = match self.cfg.block.variant {
            // The plain convolution keeps the replaced layer's name and takes BN2 folded in.
            BlockVariant::None => self.conv(&y, &format!("{p}.c2"), Some(&bn2), true)?,
            variant => {
                let mc = net.block().masked_conv().ok_or_else(|| {
                    ExportError::Unsupported(format!(
                        "block variant {} has no masked convolution",
                        variant.name()
                    ))
                })?;
                let name = "dec.gen.block.masked";
                let (k, b) = mc.full_kernel().map_err(|source| ExportError::Tensor {
                    name: name.into(),
                    source,
                })?;
                let (k, b) = (to_data(name, &k)?, to_data(name, &b)?);
                let p = (mc.k_prime + mc.dilation) as i64;
                let z = if mc.k_prime == 1 {
                    // With 1×1 sub-kernels the masked kernel is zero but for its four corners:
                    // a 2×2 kernel dilated to the corners' spacing does the same with 4 taps
                    // instead of (3 + 2d)², e.g. 4 instead of 25 (6× less work at d = 1).
                    let (ks, gap) = (k.shape[2], k.shape[2] - 1);
                    let (co, ci) = (k.shape[0], k.shape[1]);
                    let mut corners = Vec::with_capacity(co * ci * 4);
                    for plane in k.values.chunks_exact(ks * ks) {
                        for (r, c) in [(0, 0), (0, gap), (gap, 0), (gap, gap)] {
                            corners.push(plane[r * ks + c]);
                        }
                    }
                    let k2 = Data {
                        shape: vec![co, ci, 2, 2],
                        values: corners,
                    };
                    self.conv_node(&y, name, &k2, &b.values, [p; 4], gap as i64, None, true)?
                } else {
                    self.conv_node(&y, name, &k, &b.values, [p, p, p, p], 1, None, true)?
                };
                let z = self.f(&z);
                let c = k.shape[0];
                let gate = match variant {
                    BlockVariant::Sspcab => self.se_gate(&z, c)?,
                    _ => self.transformer_gate(&z, c)?,
                };
                let out = self.g.node("Mul", &[&z, &gate], &[]);
                if keep_bn {
                    // A ReLU sits between the conv and this BN: it stays a per-channel affine.
                    let (scale, shift) = self.bn_affine(&bn2, c)?;
                    let s = self.g.constant_f32("bn2.scale", &[1, c, 1, 1], &scale);
                    let t = self.g.constant_f32("bn2.shift", &[1, c, 1, 1], &shift);
                    let y = self.g.node("Mul", &[&out, &s], &[]);
                    let y = self.g.node("Add", &[&y, &t], &[]);
                    self.g.node("Relu", &[&y], &[])
                } else {
                    out
                }
            }
        };
        let y = self.conv(&y, &format!("{p}.c3"), None, false)?;
        if self.quant.is_none() {
            if let Some(site) = self.sites.last_mut() {
                site.then_tanh = true;
            }
        }
        let y = self.f(&y);
        let out = OUTPUT_PRED;
        self.g.node_named("Tanh", &[&y], out, &[]);
        Ok(out.to_string())
    }

    fn build_body(&mut self, net: &Mnad) -> Result<(), ExportError> {
        let cfg = self.cfg;
        let (h, w) = (cfg.height, cfg.width);
        let (m, d) = (cfg.memory_items, cfg.memory_dim());
        let (qh, qw) = cfg.query_size();
        let n = qh * qw;
        // Every Reshape keeps the batch with 0 or -1, so only the declared shapes change.
        let (batch, queries) = if self.symbolic_batch {
            (Dim::Symbol("batch".into()), Dim::Symbol("n_queries".into()))
        } else {
            (Dim::Fixed(1), Dim::Fixed(n))
        };
        let x = self.g.input(
            INPUT_FRAMES,
            &[
                batch.clone(),
                Dim::Fixed(cfg.input_channels()),
                Dim::Fixed(h),
                Dim::Fixed(w),
            ],
        );
        let mem = self.g.input(INPUT_MEMORY, &[Dim::Fixed(m), Dim::Fixed(d)]);

        let s1 = self.basic(&x, "enc.b1", true)?;
        let p1 = self.max_pool(&s1);
        let s2 = self.basic(&p1, "enc.b2", true)?;
        let p2 = self.max_pool(&s2);
        let s3 = self.basic(&p2, "enc.b3", true)?;
        let p3 = self.max_pool(&s3);
        let fea = self.basic(&p3, "enc.b4", false)?;

        // F.normalize over channels: x / max(‖x‖₂, 1e-12).
        let fea = self.f(&fea);
        let sq = self.g.node("Mul", &[&fea, &fea], &[]);
        let axes = self.g.constant_i64("axes", &[1]);
        let ss = self
            .g
            .node("ReduceSum", &[&sq, &axes], &[("keepdims", Attr::Int(1))]);
        let norm = self.g.node("Sqrt", &[&ss], &[]);
        let floor = self.g.constant_f32("norm_floor", &[], &[1e-12]);
        let norm = self.g.node("Max", &[&norm, &floor], &[]);
        let qmap = self.g.node("Div", &[&fea, &norm], &[]);

        let qt = self.transpose(&qmap, &[0, 2, 3, 1]);
        let shape = self.g.constant_i64("shape", &[-1, d as i64]);
        self.g
            .node_named("Reshape", &[&qt, &shape], OUTPUT_QUERIES, &[]);
        let mem_t = self.transpose(&mem, &[1, 0]);
        let scores = self.g.node("MatMul", &[OUTPUT_QUERIES, &mem_t], &[]);
        self.g.node_named(
            "Softmax",
            &[&scores],
            OUTPUT_READ_WEIGHTS,
            &[("axis", Attr::Int(-1))],
        );
        let read = self.g.node("MatMul", &[OUTPUT_READ_WEIGHTS, &mem], &[]);
        let read = self.reshape(&read, &[-1, qh as i64, qw as i64, d as i64]);
        let read_map = self.transpose(&read, &[0, 3, 1, 2]);
        let z = self
            .g
            .node("Concat", &[&qmap, &read_map], &[("axis", Attr::Int(1))]);

        let y = self.basic(&z, "dec.b0", true)?;
        let pred = match cfg.mode {
            Mode::Prediction => {
                let u = self.up(&y, "dec.up4")?;
                let y = self.concat(&s3, &u);
                let y = self.basic(&y, "dec.b3", true)?;
                let u = self.up(&y, "dec.up3")?;
                let y = self.concat(&s2, &u);
                let y = self.basic(&y, "dec.b2", true)?;
                let u = self.up(&y, "dec.up2")?;
                let y = self.concat(&s1, &u);
                self.gen(&y, net)?
            }
            Mode::Reconstruction => {
                let u = self.up(&y, "dec.up4")?;
                let y = self.basic(&u, "dec.b3", true)?;
                let u = self.up(&y, "dec.up3")?;
                let y = self.basic(&u, "dec.b2", true)?;
                let u = self.up(&y, "dec.up2")?;
                self.gen(&u, net)?
            }
        };
        self.g.output(
            &pred,
            &[
                batch,
                Dim::Fixed(cfg.channels),
                Dim::Fixed(h),
                Dim::Fixed(w),
            ],
        );
        self.g
            .output(OUTPUT_QUERIES, &[queries.clone(), Dim::Fixed(d)]);
        self.g
            .output(OUTPUT_READ_WEIGHTS, &[queries, Dim::Fixed(m)]);
        Ok(())
    }
}

/// Builds the ONNX graph of `net` with the weights of `store` (eval mode); with
/// `symbolic_batch` the batch is a symbol `batch` and the query count `n_queries` (= batch·h·w).
pub fn build_graph(
    net: &Mnad,
    store: &ParamStore,
    symbolic_batch: bool,
) -> Result<GraphBuilder, ExportError> {
    Ok(build_graph_with(net, store, GraphMode::F32 { symbolic_batch })?.0)
}

/// Builds the graph of `net` in `mode`; also returns the activation sites in graph order (in
/// int8 mode: the sites whose ranges the graph uses, without values).
pub fn build_graph_with(
    net: &Mnad,
    store: &ParamStore,
    mode: GraphMode,
) -> Result<(GraphBuilder, Vec<Site>), ExportError> {
    let cfg = net.config();
    cfg.validate()
        .map_err(|e| ExportError::Unsupported(e.to_string()))?;
    let (symbolic_batch, subpixel, quant) = match mode {
        GraphMode::F32 { symbolic_batch } => (symbolic_batch, false, None),
        GraphMode::Calibrate => (false, true, None),
        GraphMode::Int8(ranges) => (
            false,
            true,
            Some(Quantizer {
                ranges,
                ..Default::default()
            }),
        ),
    };
    let mut e = Exporter {
        g: GraphBuilder::new(),
        weights: store.tensors(),
        cfg,
        symbolic_batch,
        subpixel,
        sites: Vec::new(),
        quant,
    };
    e.build_body(net)?;
    Ok((e.g, e.sites))
}
