//! Scoring footage for calibration and evaluation: runs a scorer over a source and returns each
//! scored frame's terms — MNAD's whole-frame PSNR, the prediction-error term pooled and masked
//! as the calibration says, the feature distance — with its time, scene temperature and label.

use crate::engine::{score_source_inspect, split_stack, EngineError, FrameStack, Scorer};
use crate::score::calibration::Calibration;
use crate::score::evaluate::TermFrame;
use crate::score::terms::{frame_psnr_with, TermScratch, TermsConfig, ZonePixels};
use crate::score::zones::{Polygon, Zone, ZoneError, ZoneMap};
use crate::source::{label, FrameSource};

/// How a frame's prediction-error terms are taken on the model grid: the pooling, the masked
/// pixels and each zone's pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TermLayout {
    /// Pooling of the frame's term.
    pub terms: TermsConfig,
    /// Pixels left out (H·W, true = ignore); None without masks.
    pub masked: Option<Vec<bool>>,
    /// Each zone's unmasked pixels.
    pub zones: ZonePixels,
}

impl TermLayout {
    /// Rasterizes `masks` and `zones` on a `width`×`height` grid; a bad polygon is an error
    /// naming it, and so is a zone left without an unmasked pixel (it could never be scored).
    pub fn new(
        terms: TermsConfig,
        masks: &[Polygon],
        zones: &[Zone],
        width: usize,
        height: usize,
    ) -> Result<Self, ZoneError> {
        let map = ZoneMap::new(zones.to_vec(), masks, width, height)?;
        let masked = (!masks.is_empty()).then(|| {
            (0..width * height)
                .map(|i| map.is_masked(i))
                .collect::<Vec<_>>()
        });
        let polygons: Vec<Polygon> = zones.iter().map(|z| z.polygon.clone()).collect();
        let pixels = ZonePixels::new(&polygons, width, height, masked.as_deref());
        if let Some((z, _)) = zones.iter().zip(pixels.counts()).find(|(_, n)| *n == 0) {
            return Err(ZoneError::Empty(z.name.clone()));
        }
        Ok(Self {
            terms,
            masked,
            zones: pixels,
        })
    }

    /// The layout a calibration was fitted with, on a `width`×`height` grid.
    pub fn for_calibration(
        cal: &Calibration,
        width: usize,
        height: usize,
    ) -> Result<Self, ZoneError> {
        Self::new(cal.terms, &cal.masks, &cal.zones, width, height)
    }

    /// Whether the frame's term is MNAD's whole-frame PSNR with nothing masked and no zones,
    /// which the scorer already computes.
    pub fn is_plain(&self) -> bool {
        self.terms == TermsConfig::PAPER && self.masked.is_none() && self.zones.is_empty()
    }
}

/// Scores `source` from the start (the stack is cleared; the scorer's memory carries over) and
/// returns every scored frame's terms, taken as `layout` says.
pub fn score_terms(
    scorer: &mut dyn Scorer,
    stack: &mut FrameStack,
    source: &mut dyn FrameSource,
    layout: &TermLayout,
) -> Result<Vec<TermFrame>, EngineError> {
    stack.clear();
    let cfg = scorer.config().clone();
    let plain = layout.is_plain();
    // Set by `inspect`, which runs before `on_frame` for the same frame.
    let pooled = std::cell::Cell::new(f64::NAN);
    let zone_psnr = std::cell::RefCell::new(Vec::new());
    let mut scratch = TermScratch::default();
    let mut frames = Vec::new();
    score_source_inspect(
        scorer,
        stack,
        source,
        None,
        |f| {
            if !plain {
                let (_, target) = split_stack(&cfg, f.stack)?;
                pooled.set(frame_psnr_with(
                    &mut scratch,
                    &f.out.pred,
                    target,
                    cfg.width,
                    cfg.height,
                    &layout.terms,
                    layout.masked.as_deref(),
                ));
                layout
                    .zones
                    .psnrs_into(scratch.squared_error(), &mut zone_psnr.borrow_mut());
            }
            Ok(())
        },
        |f| {
            let psnr_frame = f64::from(f.psnr);
            frames.push(TermFrame {
                seq: f.seq,
                t_us: f.t_us,
                scene_c: f.scene_c.map(f64::from),
                psnr_frame,
                psnr: if plain { psnr_frame } else { pooled.get() },
                distance: f64::from(f.feature_distance),
                zones: zone_psnr.borrow().clone(),
                anomalous: f.label == Some(label::EVENT),
            });
        },
    )?;
    Ok(frames)
}
