//! The simulated harbor camera as a live 8-bit camera: each frame goes through the camera's
//! 8-bit window exactly as `simulate` writes its datasets (without the JPEG step), so models
//! trained on simulated datasets see what they were trained on.

use super::{HarborSimulator, SimConfig};
use crate::frame::{ThermalFrame, Units};
use crate::source::{FrameSource, SourceError, SourceInfo};

/// A [`HarborSimulator`] clip delivered as gray8 frames (a non-radiometric camera).
#[derive(Debug)]
pub struct Gray8Camera {
    sim: HarborSimulator,
    info: SourceInfo,
    raw: ThermalFrame,
}

impl Gray8Camera {
    /// Prepares clip `seed` of `config`.
    pub fn new(config: SimConfig, seed: u64) -> Result<Self, SourceError> {
        let sim = HarborSimulator::new(config, seed)?;
        let mut info = sim.info().clone();
        info.units = Units::Gray8;
        let raw = ThermalFrame::zeroed(info.width, info.height, Default::default());
        Ok(Self { sim, info, raw })
    }

    /// The simulator behind the camera (staged events, scene conditions).
    pub fn simulator(&self) -> &HarborSimulator {
        &self.sim
    }
}

impl FrameSource for Gray8Camera {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        if !self.sim.next_into(&mut self.raw)? {
            return Ok(false);
        }
        let win = self.sim.gray_window(self.raw.meta.seq as usize);
        frame.reshape(self.raw.width(), self.raw.height());
        frame
            .pixels_mut()
            .iter_mut()
            .zip(self.raw.pixels())
            .for_each(|(g, &ck)| *g = u16::from(win.level_ck(ck)));
        frame.meta.clone_from(&self.raw.meta);
        frame.meta.units = Units::Gray8;
        Ok(true)
    }

    fn labels(&self) -> Option<&[i8]> {
        self.sim.labels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::simulator::AnomalyKind;

    #[test]
    fn frames_match_the_simulators_8_bit_output_and_keep_labels() {
        let cfg = SimConfig {
            width: 96,
            height: 72,
            frames: 30,
            anomalies: vec![AnomalyKind::TruckOnQuay],
            lead_in: 15,
            ..SimConfig::default()
        };
        let mut cam = Gray8Camera::new(cfg.clone(), 5).unwrap();
        let mut sim = HarborSimulator::new(cfg, 5).unwrap();
        assert_eq!(cam.info().units, Units::Gray8);
        let (mut a, mut b) = (
            ThermalFrame::zeroed(1, 1, Default::default()),
            ThermalFrame::zeroed(1, 1, Default::default()),
        );
        let mut n = 0;
        while cam.next_into(&mut a).unwrap() {
            assert!(sim.next_into(&mut b).unwrap());
            let want = sim.to_gray8(&b);
            assert_eq!(a.meta.seq, b.meta.seq);
            assert!(a
                .pixels()
                .iter()
                .zip(want.as_raw())
                .all(|(&g, &w)| g == u16::from(w)));
            n += 1;
        }
        assert_eq!(n, 30);
        let labels = cam.labels().unwrap();
        // The lead-in is normal; the truck is staged after it.
        assert!(labels[..15].iter().all(|&l| l == 0));
        assert!(labels[15..].contains(&1));
    }
}
