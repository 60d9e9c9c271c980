//! Cost of a configuration: parameters, multiply–accumulates per frame and activation memory,
//! counted layer by layer from the architecture (no tensors are run).

use super::config::{BlockVariant, Mode, ModelConfig, Upsample};

/// One layer's share of the cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerCost {
    /// Layer name as in the weights (`enc.b1.c1`, ...).
    pub name: String,
    /// Multiply–accumulates for one frame.
    pub macs: u64,
    /// Elements of the layer's output for one frame.
    pub output_elems: u64,
}

/// The whole network's cost for one frame (batch 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cost {
    /// Trainable parameters (weights and biases).
    pub params: u64,
    /// Multiply–accumulates per frame.
    pub macs: u64,
    /// Bytes of all layer outputs in f32 (an upper bound on inference activation memory).
    pub activation_bytes: u64,
    /// Per-layer breakdown.
    pub layers: Vec<LayerCost>,
}

struct Counter {
    layers: Vec<LayerCost>,
    params: u64,
}

impl Counter {
    fn conv(&mut self, name: &str, h: usize, w: usize, cin: usize, cout: usize, k: usize) {
        let macs = (h * w * cin * cout * k * k) as u64;
        self.params += (cin * cout * k * k + cout) as u64;
        self.layers.push(LayerCost {
            name: name.into(),
            macs,
            output_elems: (h * w * cout) as u64,
        });
    }

    fn other(&mut self, name: &str, macs: u64, out: u64, params: u64) {
        self.params += params;
        self.layers.push(LayerCost {
            name: name.into(),
            macs,
            output_elems: out,
        });
    }

    fn bn(&mut self, name: &str, h: usize, w: usize, c: usize) {
        self.other(name, (h * w * c) as u64, (h * w * c) as u64, 2 * c as u64);
    }

    fn basic(&mut self, name: &str, h: usize, w: usize, cin: usize, cout: usize, tail: bool) {
        self.conv(&format!("{name}.c1"), h, w, cin, cout, 3);
        self.bn(&format!("{name}.bn1"), h, w, cout);
        self.conv(&format!("{name}.c2"), h, w, cout, cout, 3);
        if tail {
            self.bn(&format!("{name}.bn2"), h, w, cout);
        }
    }

    fn up(&mut self, name: &str, h: usize, w: usize, cin: usize, cout: usize, kind: Upsample) {
        match kind {
            // A transposed conv does its 3×3 work on the input grid.
            Upsample::Transpose => self.conv(&format!("{name}.t"), h, w, cin, cout, 3),
            Upsample::NearestConv => self.conv(&format!("{name}.conv"), 2 * h, 2 * w, cin, cout, 3),
        }
        if kind == Upsample::Transpose {
            // conv() counted the output on the input grid; the real output is 4× larger.
            if let Some(l) = self.layers.last_mut() {
                l.output_elems *= 4;
            }
        }
        self.bn(&format!("{name}.bn"), 2 * h, 2 * w, cout);
    }
}

/// Counts the cost of a configuration.
pub fn cost(cfg: &ModelConfig) -> Cost {
    let mut c = Counter {
        layers: Vec::new(),
        params: 0,
    };
    let (h, w) = (cfg.height, cfg.width);
    let (c1, c2, c3, c4) = (cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512));
    c.basic("enc.b1", h, w, cfg.input_channels(), c1, true);
    c.basic("enc.b2", h / 2, w / 2, c1, c2, true);
    c.basic("enc.b3", h / 4, w / 4, c2, c3, true);
    c.basic("enc.b4", h / 8, w / 8, c3, c4, false);
    let n = (h / 8 * w / 8) as u64;
    c.other(
        "memory.read",
        2 * n * (cfg.memory_items * c4) as u64,
        n * 2 * c4 as u64,
        0,
    );
    c.basic("dec.b0", h / 8, w / 8, 2 * c4, c4, true);
    let u = cfg.upsample;
    let gen_in = match cfg.mode {
        Mode::Prediction => {
            c.up("dec.up4", h / 8, w / 8, c4, c3, u);
            c.basic("dec.b3", h / 4, w / 4, 2 * c3, c3, true);
            c.up("dec.up3", h / 4, w / 4, c3, c2, u);
            c.basic("dec.b2", h / 2, w / 2, 2 * c2, c2, true);
            c.up("dec.up2", h / 2, w / 2, c2, c1, u);
            2 * c1
        }
        Mode::Reconstruction => {
            c.up("dec.up4", h / 8, w / 8, c4, c4, u);
            c.basic("dec.b3", h / 4, w / 4, c4, c3, true);
            c.up("dec.up3", h / 4, w / 4, c3, c3, u);
            c.basic("dec.b2", h / 2, w / 2, c3, c2, true);
            c.up("dec.up2", h / 2, w / 2, c2, c2, u);
            c2
        }
    };
    let nc = c1;
    c.conv("dec.gen.c1", h, w, gen_in, nc, 3);
    c.bn("dec.gen.bn1", h, w, nc);
    let b = &cfg.block;
    let hw = (h * w) as u64;
    match b.variant {
        BlockVariant::None => c.conv("dec.gen.c2", h, w, nc, nc, 3),
        v => {
            let kp = b.k_prime;
            // Four k'×k' sub-kernels: the arithmetic the masked convolution really needs.
            c.other(
                "dec.gen.block.mask",
                hw * (4 * nc * nc * kp * kp) as u64,
                hw * nc as u64,
                (4 * (nc * nc * kp * kp + nc)) as u64,
            );
            let (dt, cc) = (b.token_dim as u64, nc as u64);
            let (macs, params) = match v {
                BlockVariant::Sspcab => {
                    let r = (nc / 8).max(1) as u64;
                    (2 * cc * r, 2 * cc * r + r + cc)
                }
                BlockVariant::ReferenceCode => {
                    let hd = b.heads as u64 * dt;
                    (
                        cc * dt
                            + cc * dt * 3 * hd
                            + 2 * b.heads as u64 * cc * cc * dt
                            + cc * hd * dt,
                        dt * 2 + cc * dt + dt * 3 * hd + hd * dt + dt,
                    )
                }
                _ => {
                    let (hq, hv, m) = (dt, b.heads as u64 * dt, b.mlp_dim as u64);
                    let per_layer = cc * dt * (2 * hq + hv)
                        + b.heads as u64 * cc * cc * (dt / b.heads as u64 + dt)
                        + 2 * cc * dt * m;
                    let per_params = dt * (2 * hq + hv) + 2 * dt * m + m + dt + 4 * dt;
                    (
                        cc * dt + b.layers as u64 * per_layer,
                        dt * 2 + cc * dt + b.layers as u64 * per_params,
                    )
                }
            };
            c.other("dec.gen.block.attn", macs + hw * cc, hw * cc, params);
        }
    }
    if b.variant == BlockVariant::None || b.keep_bn_after {
        c.bn("dec.gen.bn2", h, w, nc);
    }
    c.conv("dec.gen.c3", h, w, nc, cfg.channels, 3);
    let macs = c.layers.iter().map(|l| l.macs).sum();
    let activation_bytes = 4 * c.layers.iter().map(|l| l.output_elems).sum::<u64>();
    Cost {
        params: c.params,
        macs,
        activation_bytes,
        layers: c.layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ParamStore;
    use crate::model::Mnad;
    use candle_core::Device;

    #[test]
    fn parameter_count_matches_the_built_network() {
        for name in ["tiny", "edge-s"] {
            for v in BlockVariant::ALL {
                let cfg = ModelConfig::preset(name).unwrap().with_block(v);
                let store = ParamStore::new(Device::Cpu, 1);
                Mnad::new(&store, &cfg).unwrap();
                assert_eq!(
                    cost(&cfg).params,
                    store.param_count() as u64,
                    "{name} {v:?}"
                );
            }
        }
        let cfg = ModelConfig::preset("tiny").unwrap().reconstruction();
        let store = ParamStore::new(Device::Cpu, 1);
        Mnad::new(&store, &cfg).unwrap();
        assert_eq!(cost(&cfg).params, store.param_count() as u64);
    }

    #[test]
    fn paper_prediction_cost_is_near_the_reference_table() {
        // product.md: 256×256, 4 frames × 3 ch, width 1.0 ≈ 46.5 GMAC (3×3 convs, MNAD layer list).
        let mut cfg = ModelConfig::preset("paper")
            .unwrap()
            .with_block(BlockVariant::None);
        cfg.channels = 3;
        let g = cost(&cfg).macs as f64 / 1e9;
        assert!((g - 46.5).abs() < 2.5, "{g} GMAC");
    }
}
