//! Model configuration (stored with every checkpoint and bundle) and the named presets.

use std::fmt;
use std::str::FromStr;

use crate::frame::Normalizer;

/// Current version of the serialized configuration.
pub const CONFIG_VERSION: u32 = 1;

/// What the network learns to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Predict the next frame from the `t_length − 1` frames before it (MNAD's default).
    Prediction,
    /// Reconstruct the input frame (no skip connections).
    Reconstruction,
}

/// Which block replaces the penultimate convolution of the last decoder block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockVariant {
    /// SSMCTB as in the paper: masked conv + channel transformer (L pre-norm layers, H summed heads).
    Paper,
    /// SSMCTB as in the official torch code: one attention layer, 5×64 concatenated heads.
    ReferenceCode,
    /// SSPCAB: masked conv + squeeze-and-excitation (r = 8), MSE block loss.
    Sspcab,
    /// A plain 3×3 convolution: the ablation baseline, no block loss.
    None,
}

impl BlockVariant {
    /// All variants, for parity tests and ablations.
    pub const ALL: [BlockVariant; 4] = [
        BlockVariant::Paper,
        BlockVariant::ReferenceCode,
        BlockVariant::Sspcab,
        BlockVariant::None,
    ];

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BlockVariant::Paper => "paper",
            BlockVariant::ReferenceCode => "reference-code",
            BlockVariant::Sspcab => "sspcab",
            BlockVariant::None => "none",
        }
    }
}

impl FromStr for BlockVariant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockVariant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown SSMCTB variant '{s}' (expected paper, reference-code, sspcab or none)"
                )
            })
    }
}

/// The loss between the block's output and its input.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BlockLoss {
    /// Huber loss with threshold `delta` (the paper's choice, δ = 1).
    Huber {
        /// Threshold between the quadratic and linear parts.
        delta: f32,
    },
    /// Mean squared error (what the official code returns, and SSPCAB's loss).
    Mse,
}

/// How the decoder doubles its resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsample {
    /// ConvTranspose2d(k3, s2, p1, output_padding 1), as MNAD.
    Transpose,
    /// Nearest-neighbour ×2 then a 3×3 convolution (int8-friendly: no quantized ConvTranspose in ONNX).
    NearestConv,
}

/// Settings of the SSMCTB / SSPCAB block.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockConfig {
    /// Which block.
    pub variant: BlockVariant,
    /// Sub-kernel size k′ of the masked convolution.
    pub k_prime: usize,
    /// Distance d between the masked centre and the sub-kernels.
    pub dilation: usize,
    /// Token size d_t of the channel transformer.
    pub token_dim: usize,
    /// Attention heads H (paper: 4, summed; reference code: 5, concatenated).
    pub heads: usize,
    /// Transformer layers L (paper: 2).
    pub layers: usize,
    /// Hidden width of the transformer MLP (not in the paper; the TF example uses 128).
    pub mlp_dim: usize,
    /// Layer-norm epsilon (not in the paper; the TF example uses 1e-6).
    pub ln_eps: f64,
    /// Loss between block output and block input.
    pub loss: BlockLoss,
    /// Weight λ of the block loss in the total loss.
    pub loss_weight: f32,
    /// Keep the BN + ReLU that followed the replaced convolution (the paper does not say).
    pub keep_bn_after: bool,
}

impl BlockConfig {
    /// The configuration a variant is used with in its source.
    pub fn for_variant(variant: BlockVariant) -> Self {
        let (heads, layers, loss) = match variant {
            BlockVariant::Paper => (4, 2, BlockLoss::Huber { delta: 1.0 }),
            BlockVariant::ReferenceCode => (5, 1, BlockLoss::Huber { delta: 1.0 }),
            BlockVariant::Sspcab | BlockVariant::None => (4, 2, BlockLoss::Mse),
        };
        Self {
            variant,
            k_prime: 1,
            dilation: 1,
            token_dim: 64,
            heads,
            layers,
            mlp_dim: 128,
            ln_eps: 1e-6,
            loss,
            loss_weight: 0.1,
            keep_bn_after: true,
        }
    }

    /// Receptive field of the masked convolution, 2k′ + 2d + 1.
    pub fn kernel_size(&self) -> usize {
        2 * self.k_prime + 2 * self.dilation + 1
    }
}

/// Everything that defines a network: stored with each checkpoint so it reloads exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// Version of this structure.
    pub version: u32,
    /// Preset it came from, if any.
    pub preset: Option<String>,
    /// Input height in pixels (a multiple of 8).
    pub height: usize,
    /// Input width in pixels (a multiple of 8).
    pub width: usize,
    /// Channels per frame (1 for thermal).
    pub channels: usize,
    /// Prediction or reconstruction.
    pub mode: Mode,
    /// Frames per training sample t: prediction reads t − 1 frames and predicts the t-th.
    pub t_length: usize,
    /// Multiplier on every convolution's channel count (1.0 = MNAD).
    pub width_mult: f32,
    /// Memory items M.
    pub memory_items: usize,
    /// The SSMCTB block.
    pub block: BlockConfig,
    /// Weight of the memory compactness loss.
    pub compactness_weight: f32,
    /// Weight of the memory separateness (triplet) loss.
    pub separateness_weight: f32,
    /// Decoder upsampling.
    pub upsample: Upsample,
    /// How frames become the network's [−1, 1] input.
    pub normalizer: Normalizer,
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid model config: {0}")]
pub struct ConfigError(pub String);

impl ModelConfig {
    /// A configuration from a named preset: `paper`, `edge-m` or `edge-s`.
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let (h, w, width_mult) = match name {
            "paper" => (256, 256, 1.0),
            "edge-m" => (192, 256, 0.5),
            "edge-s" => (128, 160, 0.25),
            "tiny" => (32, 32, 0.125),
            _ => {
                return Err(ConfigError(format!(
                    "unknown preset '{name}' (expected paper, edge-m or edge-s)"
                )))
            }
        };
        Ok(Self {
            version: CONFIG_VERSION,
            preset: Some(name.to_string()),
            height: h,
            width: w,
            channels: 1,
            mode: Mode::Prediction,
            t_length: 5,
            width_mult,
            memory_items: 10,
            block: BlockConfig::for_variant(BlockVariant::Paper),
            compactness_weight: 0.1,
            separateness_weight: 0.1,
            upsample: Upsample::Transpose,
            normalizer: Normalizer::gray8(),
        })
    }

    /// Names of the presets users pick from.
    pub const PRESETS: [&'static str; 3] = ["paper", "edge-m", "edge-s"];

    /// Switches to reconstruction mode with MNAD's reconstruction loss weights.
    pub fn reconstruction(mut self) -> Self {
        self.mode = Mode::Reconstruction;
        self.t_length = 1;
        self.compactness_weight = 0.01;
        self.separateness_weight = 0.01;
        self
    }

    /// Replaces the block with another variant's default settings.
    pub fn with_block(mut self, variant: BlockVariant) -> Self {
        self.block = BlockConfig::for_variant(variant);
        self
    }

    /// Channel count for MNAD's `base` channels scaled by the width multiplier (at least 2).
    pub fn ch(&self, base: usize) -> usize {
        ((base as f32 * self.width_mult).round() as usize).max(2)
    }

    /// Frames fed to the network per sample.
    pub fn input_frames(&self) -> usize {
        match self.mode {
            Mode::Prediction => self.t_length - 1,
            Mode::Reconstruction => 1,
        }
    }

    /// Input channels of the first convolution.
    pub fn input_channels(&self) -> usize {
        self.channels * self.input_frames()
    }

    /// Dimension of memory items (= encoder output channels).
    pub fn memory_dim(&self) -> usize {
        self.ch(512)
    }

    /// Spatial size of the query map (input / 8).
    pub fn query_size(&self) -> (usize, usize) {
        (self.height / 8, self.width / 8)
    }

    /// Checks that the configuration can be built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = |m: String| Err(ConfigError(m));
        if self.version != CONFIG_VERSION {
            return e(format!(
                "config version {} is not supported (this build reads version {CONFIG_VERSION})",
                self.version
            ));
        }
        if self.height == 0
            || self.width == 0
            || !self.height.is_multiple_of(8)
            || !self.width.is_multiple_of(8)
        {
            return e(format!(
                "input {}×{} must be non-zero multiples of 8",
                self.height, self.width
            ));
        }
        if self.channels == 0 {
            return e("channels must be at least 1".into());
        }
        match self.mode {
            Mode::Prediction if self.t_length < 2 => {
                return e(format!(
                    "prediction needs t_length ≥ 2, got {}",
                    self.t_length
                ))
            }
            Mode::Reconstruction if self.t_length != 1 => {
                return e(format!(
                    "reconstruction uses t_length 1, got {}",
                    self.t_length
                ))
            }
            _ => {}
        }
        if self.width_mult.is_nan() || self.width_mult <= 0.0 || self.width_mult > 4.0 {
            return e(format!(
                "width multiplier {} is outside (0, 4]",
                self.width_mult
            ));
        }
        if self.memory_items < 2 {
            return e(format!(
                "memory needs at least 2 items (separateness uses the 2nd best), got {}",
                self.memory_items
            ));
        }
        let b = &self.block;
        if b.k_prime == 0 {
            return e("block k' must be at least 1".into());
        }
        if b.variant == BlockVariant::Paper
            && (b.heads == 0 || !b.token_dim.is_multiple_of(b.heads))
        {
            return e(format!(
                "token dim {} must be divisible by {} heads",
                b.token_dim, b.heads
            ));
        }
        if b.variant != BlockVariant::None
            && (b.token_dim == 0 || b.layers == 0 || b.mlp_dim == 0 || b.heads == 0)
        {
            return e("block token dim, heads, layers and MLP width must be non-zero".into());
        }
        if let BlockLoss::Huber { delta } = b.loss {
            if delta.is_nan() || delta <= 0.0 {
                return e(format!("Huber delta must be positive, got {delta}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}×{} {:?} t={} width×{} memory {}×{} block {}",
            self.preset.as_deref().unwrap_or("custom"),
            self.height,
            self.width,
            self.mode,
            self.t_length,
            self.width_mult,
            self.memory_items,
            self.memory_dim(),
            self.block.variant.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_shapes() {
        let p = ModelConfig::preset("paper").unwrap();
        assert_eq!(
            (p.height, p.width, p.memory_dim(), p.input_channels()),
            (256, 256, 512, 4)
        );
        let m = ModelConfig::preset("edge-m").unwrap();
        assert_eq!((m.height, m.width, m.memory_dim()), (192, 256, 256));
        let s = ModelConfig::preset("edge-s").unwrap();
        assert_eq!(
            (s.height, s.width, s.memory_dim(), s.ch(64)),
            (128, 160, 128, 16)
        );
        for name in ModelConfig::PRESETS {
            ModelConfig::preset(name).unwrap().validate().unwrap();
        }
        assert!(ModelConfig::preset("huge").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = ModelConfig::preset("edge-s").unwrap();
        c.height = 100;
        assert!(c.validate().unwrap_err().0.contains("multiples of 8"));
        let r = ModelConfig::preset("edge-s").unwrap().reconstruction();
        r.validate().unwrap();
        assert_eq!(r.input_channels(), 1);
        let mut v = ModelConfig::preset("edge-s").unwrap();
        v.version = 99;
        assert!(v.validate().unwrap_err().0.contains("version 99"));
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = ModelConfig::preset("edge-s")
            .unwrap()
            .with_block(BlockVariant::Sspcab);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&s).unwrap(), c);
        assert_eq!(
            "reference-code".parse::<BlockVariant>().unwrap(),
            BlockVariant::ReferenceCode
        );
    }
}
