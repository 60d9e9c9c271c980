//! Normalizers: turn a thermal frame into the model's f32 input in [−1, 1] at the model's size.
//!
//! Each pixel is first mapped to [−1, 1] (clamped), then the plane is resized, so the result
//! stays within [−1, 1] whichever way it is resized.

use super::resize::Resizer;
use super::{ThermalFrame, Units};

/// How raw pixel values map to the model's [−1, 1] input range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Normalizer {
    /// Fixed temperature window for radiometric (centikelvin) cameras: `min_c` → −1, `max_c` → +1.
    KelvinWindow {
        /// Coldest temperature of the window, °C.
        min_c: f32,
        /// Warmest temperature of the window, °C.
        max_c: f32,
    },
    /// Robust stretch per frame: the `low` percentile → −1, the `high` percentile → +1
    /// (for relative/AGC cameras whose levels wander).
    Percentile {
        /// Lower percentile, 0–100.
        low: f32,
        /// Upper percentile, 0–100.
        high: f32,
    },
    /// Fixed raw range `lo` → −1, `hi` → +1: 0..255 for 8-bit footage (the paper's x/127.5 − 1),
    /// or a clip's own min–max (see [`Normalizer::clip_min_max`]).
    MinMax {
        /// Raw value mapped to −1.
        lo: f32,
        /// Raw value mapped to +1.
        hi: f32,
    },
}

/// Why a frame could not be normalized.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NormalizeError {
    /// The normalizer needs radiometric frames.
    #[error("normalizer kelvin-window needs radiometric (centikelvin) frames, got {0}")]
    NotRadiometric(Units),
    /// The normalizer's parameters are unusable.
    #[error("invalid normalizer parameters: {0}")]
    InvalidParameters(String),
    /// Output buffer length does not match the output size.
    #[error("output buffer holds {got} values but {width}×{height} needs {expected}")]
    OutputSize {
        /// Output width.
        width: usize,
        /// Output height.
        height: usize,
        /// Expected length.
        expected: usize,
        /// Supplied length.
        got: usize,
    },
}

impl Normalizer {
    /// The paper's 8-bit mapping x/127.5 − 1.
    pub fn gray8() -> Self {
        Normalizer::MinMax { lo: 0.0, hi: 255.0 }
    }

    /// Per-clip min–max over all frames of a clip (the paper's offline protocol).
    pub fn clip_min_max<'a>(frames: impl IntoIterator<Item = &'a ThermalFrame>) -> Self {
        let (lo, hi) = frames.into_iter().fold((u16::MAX, 0u16), |(lo, hi), f| {
            let (a, b) = f.min_max();
            (lo.min(a), hi.max(b))
        });
        Normalizer::MinMax {
            lo: f32::from(lo.min(hi)),
            hi: f32::from(hi),
        }
    }

    /// A sensible default for frames of the given units.
    pub fn default_for(units: Units) -> Self {
        match units {
            // A harbor scene from a cold night sky to sun-warmed quay stone and people.
            Units::Centikelvin => Normalizer::KelvinWindow {
                min_c: -20.0,
                max_c: 40.0,
            },
            Units::Counts => Normalizer::Percentile {
                low: 1.0,
                high: 99.0,
            },
            Units::Gray8 => Normalizer::gray8(),
        }
    }

    fn validate(&self) -> Result<(), NormalizeError> {
        let ok = match *self {
            Normalizer::KelvinWindow { min_c, max_c } => {
                min_c.is_finite() && max_c.is_finite() && max_c > min_c
            }
            Normalizer::Percentile { low, high } => {
                (0.0..=100.0).contains(&low) && (0.0..=100.0).contains(&high) && high > low
            }
            Normalizer::MinMax { lo, hi } => lo.is_finite() && hi.is_finite() && hi >= lo,
        };
        if ok {
            Ok(())
        } else {
            Err(NormalizeError::InvalidParameters(format!("{self:?}")))
        }
    }
}

/// The raw-value range a frame maps onto [−1, 1] under a normalizer.
fn raw_range(
    norm: &Normalizer,
    frame: &ThermalFrame,
    hist: &mut Vec<u32>,
) -> Result<(f32, f32), NormalizeError> {
    match *norm {
        Normalizer::KelvinWindow { min_c, max_c } => {
            if frame.meta.units != Units::Centikelvin {
                return Err(NormalizeError::NotRadiometric(frame.meta.units));
            }
            Ok((min_c * 100.0 + 27315.0, max_c * 100.0 + 27315.0))
        }
        Normalizer::MinMax { lo, hi } => Ok((lo, hi)),
        Normalizer::Percentile { low, high } => {
            let (lo, hi) = frame.min_max();
            let span = usize::from(hi - lo) + 1;
            hist.clear();
            hist.resize(span, 0);
            for &p in frame.pixels() {
                hist[usize::from(p - lo)] += 1;
            }
            let n = frame.pixels().len() as f64;
            let find = |q: f32| -> f32 {
                // Smallest value v with at least q% of pixels <= v.
                let target = (f64::from(q) / 100.0 * n).ceil().max(1.0);
                let mut acc = 0f64;
                for (i, &c) in hist.iter().enumerate() {
                    acc += f64::from(c);
                    if acc >= target {
                        return f32::from(lo) + i as f32;
                    }
                }
                f32::from(hi)
            };
            Ok((find(low), find(high)))
        }
    }
}

/// Turns frames into model input: normalizer plus resizer, with scratch space kept between
/// frames so steady-state preprocessing allocates nothing.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    normalizer: Normalizer,
    out_w: usize,
    out_h: usize,
    resizer: Option<Resizer>,
    hist: Vec<u32>,
}

impl Preprocessor {
    /// A preprocessor producing `out_w×out_h` planes.
    pub fn new(normalizer: Normalizer, out_w: usize, out_h: usize) -> Result<Self, NormalizeError> {
        normalizer.validate()?;
        if out_w == 0 || out_h == 0 {
            return Err(NormalizeError::InvalidParameters(format!(
                "output size {out_w}×{out_h}"
            )));
        }
        Ok(Self {
            normalizer,
            out_w,
            out_h,
            resizer: None,
            hist: Vec::new(),
        })
    }

    /// The normalizer in use.
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    /// Output size (width, height).
    pub fn output_size(&self) -> (usize, usize) {
        (self.out_w, self.out_h)
    }

    /// Writes the normalized, resized frame into `out` (row-major, output size).
    pub fn run(&mut self, frame: &ThermalFrame, out: &mut [f32]) -> Result<(), NormalizeError> {
        let expected = self.out_w * self.out_h;
        if out.len() != expected {
            return Err(NormalizeError::OutputSize {
                width: self.out_w,
                height: self.out_h,
                expected,
                got: out.len(),
            });
        }
        let (lo, hi) = raw_range(&self.normalizer, frame, &mut self.hist)?;
        let (iw, ih) = (frame.width() as usize, frame.height() as usize);
        if self.resizer.as_ref().map(|r| r.input_size()) != Some((iw, ih)) {
            // Only on the first frame or a change of camera resolution.
            self.resizer = Some(Resizer::new(iw, ih, self.out_w, self.out_h));
        }
        let resizer = self.resizer.as_mut().expect("resizer set above");
        let span = hi - lo;
        if span <= 0.0 {
            // A flat frame (or a degenerate clip range): map to the middle of the range.
            out.fill(0.0);
            return Ok(());
        }
        // Divide rather than multiply by a reciprocal so the window's ends map exactly to ±1.
        resizer.resize_map(frame.pixels(), out, |p| {
            ((2.0 * (f32::from(p) - lo) - span) / span).clamp(-1.0, 1.0)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;

    fn frame(w: u32, h: u32, px: Vec<u16>, units: Units) -> ThermalFrame {
        let meta = FrameMeta {
            units,
            ..FrameMeta::default()
        };
        ThermalFrame::new(w, h, px, meta).unwrap()
    }

    #[test]
    fn gray8_maps_like_the_paper() {
        let f = frame(3, 1, vec![0, 255, 51], Units::Gray8);
        let mut out = vec![0.0; 3];
        Preprocessor::new(Normalizer::gray8(), 3, 1)
            .unwrap()
            .run(&f, &mut out)
            .unwrap();
        let expect = [-1.0, 1.0, 51.0 / 127.5 - 1.0];
        for (o, e) in out.iter().zip(expect) {
            assert!((o - e).abs() < 1e-6);
        }
    }

    #[test]
    fn kelvin_window_clamps_and_needs_radiometric_frames() {
        let n = Normalizer::KelvinWindow {
            min_c: 0.0,
            max_c: 20.0,
        };
        let f = frame(
            4,
            1,
            vec![27315 - 500, 27315, 27315 + 1000, 27315 + 5000],
            Units::Centikelvin,
        );
        let mut out = vec![0.0; 4];
        let mut p = Preprocessor::new(n, 4, 1).unwrap();
        p.run(&f, &mut out).unwrap();
        assert_eq!(out, vec![-1.0, -1.0, 0.0, 1.0]);
        let counts = frame(4, 1, vec![1; 4], Units::Counts);
        assert_eq!(
            p.run(&counts, &mut out),
            Err(NormalizeError::NotRadiometric(Units::Counts))
        );
    }

    #[test]
    fn percentile_stretch_ignores_outliers() {
        // 98 pixels ramp 1000..1097, plus two hot outliers.
        let mut px: Vec<u16> = (1000..1098).collect();
        px.extend([60000, 61000]);
        let f = frame(100, 1, px, Units::Counts);
        let mut out = vec![0.0; 100];
        Preprocessor::new(
            Normalizer::Percentile {
                low: 1.0,
                high: 98.0,
            },
            100,
            1,
        )
        .unwrap()
        .run(&f, &mut out)
        .unwrap();
        assert_eq!(out[0], -1.0);
        assert_eq!(out[97], 1.0);
        assert_eq!(out[98], 1.0);
        assert!(out[48] > -0.1 && out[48] < 0.1, "{}", out[48]);
    }

    #[test]
    fn clip_min_max_spans_all_frames() {
        let a = frame(2, 1, vec![100, 200], Units::Counts);
        let b = frame(2, 1, vec![50, 150], Units::Counts);
        assert_eq!(
            Normalizer::clip_min_max([&a, &b]),
            Normalizer::MinMax {
                lo: 50.0,
                hi: 200.0
            }
        );
    }

    #[test]
    fn resizes_and_stays_in_range_and_is_deterministic() {
        let px: Vec<u16> = (0..160 * 120)
            .map(|i| (2000 + (i * 7919) % 2000) as u16)
            .collect();
        let f = frame(160, 120, px, Units::Counts);
        let mut p = Preprocessor::new(
            Normalizer::Percentile {
                low: 1.0,
                high: 99.0,
            },
            64,
            48,
        )
        .unwrap();
        let mut a = vec![0.0; 64 * 48];
        let mut b = vec![0.0; 64 * 48];
        p.run(&f, &mut a).unwrap();
        p.run(&f, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        let mut up = vec![0.0; 320 * 240];
        Preprocessor::new(Normalizer::gray8(), 320, 240)
            .unwrap()
            .run(&f, &mut up)
            .unwrap();
        assert!(up.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn bad_parameters_and_buffers_are_errors() {
        assert!(Preprocessor::new(
            Normalizer::Percentile {
                low: 50.0,
                high: 10.0
            },
            4,
            4
        )
        .is_err());
        assert!(Preprocessor::new(Normalizer::gray8(), 0, 4).is_err());
        let f = frame(2, 2, vec![0; 4], Units::Gray8);
        let mut out = vec![0.0; 3];
        assert!(matches!(
            Preprocessor::new(Normalizer::gray8(), 2, 2)
                .unwrap()
                .run(&f, &mut out),
            Err(NormalizeError::OutputSize { .. })
        ));
    }

    #[test]
    fn normalizer_serializes_with_a_kind_tag() {
        let n = Normalizer::KelvinWindow {
            min_c: -5.0,
            max_c: 30.0,
        };
        let s = serde_json::to_string(&n).unwrap();
        assert!(s.contains("\"kind\":\"kelvin-window\""), "{s}");
        assert_eq!(serde_json::from_str::<Normalizer>(&s).unwrap(), n);
    }
}
