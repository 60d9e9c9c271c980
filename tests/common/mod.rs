//! Shared setup of the on-device loop tests: the shipped model, its calibration and a loop.

use std::path::Path;

use thermal_edge::engine::Scorer;
use thermal_edge::export::bundle::Bundle;
use thermal_edge::frame::guard::GuardConfig;
use thermal_edge::pipeline::{Identity, LoopSettings, Pipeline};
use thermal_edge::score::calibration::Calibration;
use thermal_edge::score::drift::DriftConfig;
use thermal_edge::score::zones::ZoneMap;

/// The shipped demo bundle.
pub fn bundle() -> Bundle {
    Bundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/harbor-edge-s")).unwrap()
}

/// The shipped bundle's calibration.
pub fn calibration(bundle: &Bundle) -> Calibration {
    let table = bundle
        .manifest()
        .calibration
        .as_ref()
        .expect("the shipped bundle is calibrated");
    Calibration::from_table(table).unwrap()
}

/// A loop with default settings, no masks or zones, numbering from 1.
pub fn pipeline<'a>(
    scorer: Box<dyn Scorer + 'a>,
    cal: &'a Calibration,
    guard: GuardConfig,
) -> Pipeline<'a> {
    try_pipeline(scorer, cal, guard).unwrap()
}

/// [`pipeline`], or why the loop cannot start.
pub fn try_pipeline<'a>(
    scorer: Box<dyn Scorer + 'a>,
    cal: &'a Calibration,
    guard: GuardConfig,
) -> Result<Pipeline<'a>, thermal_edge::pipeline::PipelineError> {
    let (w, h) = (scorer.config().width, scorer.config().height);
    let zones = ZoneMap::new(Vec::new(), &[], w, h).unwrap();
    let id = Identity {
        site: "test".into(),
        camera: "cam".into(),
        model: "m".into(),
    };
    Pipeline::new(
        id,
        scorer,
        cal,
        zones,
        LoopSettings::default(),
        guard,
        &DriftConfig::default(),
        1,
        1,
    )
}
