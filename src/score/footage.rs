//! Scoring footage for calibration and evaluation: runs a scorer over a source and returns each
//! scored frame's terms — MNAD's whole-frame PSNR, the prediction-error term pooled and masked
//! as the calibration says, the feature distance — with its time, scene temperature and label.

use crate::engine::{score_source_inspect, split_stack, EngineError, FrameStack, Scorer};
use crate::score::evaluate::TermFrame;
use crate::score::terms::{frame_psnr_with, TermScratch, TermsConfig, ZonePixels};
use crate::source::{label, FrameSource};

/// Scores `source` from the start (the stack is cleared; the scorer's memory carries over) and
/// returns every scored frame's terms; `masked` (H·W of the model input, true = ignore);
/// `zones`: the calibrated zones' pixels, each scored on its own.
pub fn score_terms(
    scorer: &mut dyn Scorer,
    stack: &mut FrameStack,
    source: &mut dyn FrameSource,
    terms: &TermsConfig,
    masked: Option<&[bool]>,
    zones: &ZonePixels,
) -> Result<Vec<TermFrame>, EngineError> {
    stack.clear();
    let cfg = scorer.config().clone();
    let plain = *terms == TermsConfig::PAPER && masked.is_none() && zones.is_empty();
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
                    terms,
                    masked,
                ));
                zones.psnrs_into(scratch.squared_error(), &mut zone_psnr.borrow_mut());
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
