//! Masks, zones and anomaly regions on the per-pixel error map.
//!
//! Polygons are given in normalised image coordinates (x right, y down, both in [0, 1]), so a
//! site's configuration holds whatever size the model runs at. Masked pixels (water with
//! waves, flags, ropes) never count; each zone (e.g. `pier-end`) gets its own score and
//! sensitivity; regions are the connected components of above-threshold error.

/// A closed polygon in normalised image coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Polygon(pub Vec<[f64; 2]>);

impl Polygon {
    /// Whether the point (x, y) lies inside (even–odd rule).
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let p = &self.0;
        let mut inside = false;
        let mut j = p.len().wrapping_sub(1);
        for i in 0..p.len() {
            let (xi, yi) = (p[i][0], p[i][1]);
            let (xj, yj) = (p[j][0], p[j][1]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    /// The pixels of a `width`×`height` grid whose centres lie inside, row-major.
    pub fn rasterize(&self, width: usize, height: usize) -> Vec<bool> {
        let mut out = vec![false; width * height];
        for y in 0..height {
            let fy = (y as f64 + 0.5) / height as f64;
            for x in 0..width {
                let fx = (x as f64 + 0.5) / width as f64;
                out[y * width + x] = self.contains(fx, fy);
            }
        }
        out
    }
}

/// A named zone with its own sensitivity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Zone {
    /// Name reported with its events, e.g. `pier-end`.
    pub name: String,
    /// Outline.
    pub polygon: Polygon,
    /// Multiplier on the zone's score (> 1: more sensitive).
    #[serde(default = "one")]
    pub sensitivity: f64,
}

fn one() -> f64 {
    1.0
}

/// Why a zone layout is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZoneError {
    /// A polygon has fewer than three points.
    #[error("{0}: a polygon needs at least 3 points")]
    TooFewPoints(String),
    /// A coordinate is outside [0, 1] or not finite.
    #[error("{what}: point ({x}, {y}) is outside the normalised image [0, 1]²")]
    OutOfRange {
        /// The zone or mask.
        what: String,
        /// x.
        x: f64,
        /// y.
        y: f64,
    },
    /// A zone has no unmasked pixel on the model grid.
    #[error("zone {0}: no unmasked pixel on the model grid (remove it or unmask it)")]
    Empty(String),
    /// A zone's sensitivity is not positive.
    #[error("zone {0}: sensitivity must be a positive number")]
    Sensitivity(String),
    /// Two zones share a name.
    #[error("zone name {0} is used twice")]
    Duplicate(String),
}

fn check(what: &str, p: &Polygon) -> Result<(), ZoneError> {
    if p.0.len() < 3 {
        return Err(ZoneError::TooFewPoints(what.to_string()));
    }
    for &[x, y] in &p.0 {
        if !(x.is_finite() && y.is_finite() && (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y))
        {
            return Err(ZoneError::OutOfRange {
                what: what.to_string(),
                x,
                y,
            });
        }
    }
    Ok(())
}

/// Masks and zones rasterized for one grid size.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneMap {
    width: usize,
    height: usize,
    masked: Vec<bool>,
    /// Zone index per pixel (the first zone listed wins where zones overlap).
    zone_of: Vec<Option<usize>>,
    zones: Vec<Zone>,
}

/// One connected region of above-threshold error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    /// Bounding box (x0, y0, x1, y1), inclusive, in grid pixels.
    pub bbox: [usize; 4],
    /// Pixels in the region.
    pub area: usize,
    /// Highest error in the region.
    pub peak_error: f32,
    /// Mean error in the region.
    pub mean_error: f32,
    /// Zone holding most of the region's pixels, if any.
    pub zone: Option<String>,
    /// Highest and mean temperature (°C) when temperatures were given.
    pub temperature_c: Option<[f32; 2]>,
}

impl ZoneMap {
    /// Rasterizes `zones` and `masks` for a `width`×`height` error map.
    pub fn new(
        zones: Vec<Zone>,
        masks: &[Polygon],
        width: usize,
        height: usize,
    ) -> Result<Self, ZoneError> {
        let n = width * height;
        let mut masked = vec![false; n];
        for (i, m) in masks.iter().enumerate() {
            check(&format!("mask {}", i + 1), m)?;
            for (p, inside) in masked.iter_mut().zip(m.rasterize(width, height)) {
                *p |= inside;
            }
        }
        let mut zone_of = vec![None; n];
        for (zi, z) in zones.iter().enumerate() {
            check(&format!("zone {}", z.name), &z.polygon)?;
            if !(z.sensitivity.is_finite() && z.sensitivity > 0.0) {
                return Err(ZoneError::Sensitivity(z.name.clone()));
            }
            if zones[..zi].iter().any(|o| o.name == z.name) {
                return Err(ZoneError::Duplicate(z.name.clone()));
            }
            for (p, inside) in zone_of.iter_mut().zip(z.polygon.rasterize(width, height)) {
                if inside && p.is_none() {
                    *p = Some(zi);
                }
            }
        }
        Ok(Self {
            width,
            height,
            masked,
            zone_of,
            zones,
        })
    }

    /// The zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Whether pixel `i` (row-major) is masked.
    pub fn is_masked(&self, i: usize) -> bool {
        self.masked[i]
    }

    /// Mean of `error_map` over the unmasked pixels (0 when everything is masked).
    pub fn masked_mean(&self, error_map: &[f32]) -> f64 {
        let (mut sum, mut n) = (0f64, 0usize);
        for (e, &m) in error_map.iter().zip(&self.masked) {
            if !m {
                sum += f64::from(*e);
                n += 1;
            }
        }
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    /// Per zone: its name and the mean unmasked error inside it times its sensitivity.
    pub fn zone_means(&self, error_map: &[f32]) -> Vec<(String, f64)> {
        let mut sum = vec![0f64; self.zones.len()];
        let mut n = vec![0usize; self.zones.len()];
        for (i, e) in error_map.iter().enumerate() {
            if let (Some(z), false) = (self.zone_of[i], self.masked[i]) {
                sum[z] += f64::from(*e);
                n[z] += 1;
            }
        }
        self.zones
            .iter()
            .enumerate()
            .map(|(z, zone)| {
                let mean = if n[z] == 0 { 0.0 } else { sum[z] / n[z] as f64 };
                (zone.name.clone(), mean * zone.sensitivity)
            })
            .collect()
    }

    /// Connected (4-neighbour) regions of unmasked pixels with error ≥ `threshold`, at least
    /// `min_area` pixels, largest first; `temps_c` (°C per pixel) adds temperatures.
    pub fn regions(
        &self,
        error_map: &[f32],
        threshold: f32,
        min_area: usize,
        temps_c: Option<&[f32]>,
    ) -> Vec<Region> {
        let (w, h) = (self.width, self.height);
        let hot: Vec<bool> = error_map
            .iter()
            .zip(&self.masked)
            .map(|(e, &m)| !m && *e >= threshold)
            .collect();
        let mut seen = vec![false; w * h];
        let mut out = Vec::new();
        let mut stack = Vec::new();
        for start in 0..w * h {
            if !hot[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let mut pixels = Vec::new();
            while let Some(i) = stack.pop() {
                pixels.push(i);
                let (x, y) = (i % w, i / w);
                let mut visit = |j: usize| {
                    if hot[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < w {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - w);
                }
                if y + 1 < h {
                    visit(i + w);
                }
            }
            if pixels.len() < min_area {
                continue;
            }
            out.push(self.describe(&pixels, error_map, temps_c));
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.area));
        out
    }

    fn describe(&self, pixels: &[usize], error_map: &[f32], temps_c: Option<&[f32]>) -> Region {
        let w = self.width;
        let mut bbox = [usize::MAX, usize::MAX, 0, 0];
        let (mut peak, mut sum) = (f32::MIN, 0f64);
        let mut votes = vec![0usize; self.zones.len()];
        for &i in pixels {
            let (x, y) = (i % w, i / w);
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
            peak = peak.max(error_map[i]);
            sum += f64::from(error_map[i]);
            if let Some(z) = self.zone_of[i] {
                votes[z] += 1;
            }
        }
        let zone = votes
            .iter()
            .enumerate()
            .filter(|(_, &v)| v > 0)
            .max_by_key(|(_, &v)| v)
            .map(|(z, _)| self.zones[z].name.clone());
        let temperature_c = temps_c.map(|t| {
            let max = pixels.iter().map(|&i| t[i]).fold(f32::MIN, f32::max);
            let mean = pixels.iter().map(|&i| f64::from(t[i])).sum::<f64>() / pixels.len() as f64;
            [max, mean as f32]
        });
        Region {
            bbox,
            area: pixels.len(),
            peak_error: peak,
            mean_error: (sum / pixels.len() as f64) as f32,
            zone,
            temperature_c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::events::{EventConfig, EventDetector, Phase};

    fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> Polygon {
        Polygon(vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    }

    /// A 20×10 error map of 0.001 with a square blob of 0.5 at (x, y), 3×3.
    fn blob(x: usize, y: usize) -> Vec<f32> {
        let mut e = vec![0.001f32; 200];
        for dy in 0..3 {
            for dx in 0..3 {
                e[(y + dy) * 20 + x + dx] = 0.5;
            }
        }
        e
    }

    #[test]
    fn polygons_rasterize_by_pixel_centres() {
        // Left half of a 4×2 grid.
        let r = rect(0.0, 0.0, 0.5, 1.0).rasterize(4, 2);
        assert_eq!(r, vec![true, true, false, false, true, true, false, false]);
        // A triangle over the lower-left half of a 10×10 grid: 45 pixel centres strictly below
        // the diagonal (the 10 on it fall either way, by the even–odd rule's half-open edges).
        let tri = Polygon(vec![[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        let n = tri.rasterize(10, 10).iter().filter(|&&b| b).count();
        assert!((45..=55).contains(&n), "{n}");
    }

    #[test]
    fn regions_have_boxes_areas_zones_and_temperatures() {
        let zones = vec![Zone {
            name: "pier-end".into(),
            polygon: rect(0.0, 0.0, 0.5, 1.0),
            sensitivity: 2.0,
        }];
        let map = ZoneMap::new(zones, &[], 20, 10).unwrap();
        let mut e = blob(2, 2);
        for (i, v) in blob(14, 5).iter().enumerate() {
            e[i] = e[i].max(*v);
        }
        e[0] = 0.5; // a single pixel: below min_area
        let temps: Vec<f32> = (0..200).map(|i| 10.0 + (i % 20) as f32).collect();
        let r = map.regions(&e, 0.1, 2, Some(&temps));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].area, 9);
        let pier = r.iter().find(|r| r.zone.is_some()).unwrap();
        assert_eq!(pier.bbox, [2, 2, 4, 4]);
        assert_eq!(pier.zone.as_deref(), Some("pier-end"));
        assert_eq!(pier.temperature_c, Some([14.0, 13.0]));
        let other = r.iter().find(|r| r.zone.is_none()).unwrap();
        assert_eq!(other.bbox, [14, 5, 16, 7]);
        // The zone's mean carries its sensitivity.
        let means = map.zone_means(&e);
        assert_eq!(means[0].0, "pier-end");
        // Left half: 10 pixels of 0.5 (blob + e[0]) and 90 of 0.001, times sensitivity 2.
        assert!((means[0].1 - 2.0 * 5.09 / 100.0).abs() < 1e-6, "{means:?}");
    }

    #[test]
    fn an_anomaly_under_a_mask_raises_no_event_and_one_in_a_zone_names_it() {
        let zones = vec![Zone {
            name: "pier-end".into(),
            polygon: rect(0.0, 0.0, 0.5, 1.0),
            sensitivity: 1.0,
        }];
        // The water (right half) is masked.
        let map = ZoneMap::new(zones, &[rect(0.5, 0.0, 1.0, 1.0)], 20, 10).unwrap();
        let cfg = EventConfig {
            enter: 0.02,
            exit: 0.01,
            min_frames: 2,
            cooldown_frames: 0,
            zone: None,
        };
        let mut whole = EventDetector::new(cfg.clone(), 0).unwrap();
        let mut pier = EventDetector::new(
            EventConfig {
                zone: Some("pier-end".into()),
                ..cfg
            },
            100,
        )
        .unwrap();
        // Frames 0–4: a blob on the masked water; frames 5–9: a blob on the pier end.
        let mut events = Vec::new();
        for f in 0..12u64 {
            let e = match f {
                0..=4 => blob(14, 4),
                5..=9 => blob(3, 4),
                _ => vec![0.001; 200],
            };
            assert!(map.regions(&e, 0.1, 1, None).iter().all(|r| r.area == 9));
            if f <= 4 {
                assert!(
                    map.regions(&e, 0.1, 1, None).is_empty(),
                    "masked blob found"
                );
            }
            if let Some(u) = whole.push(f, 0, map.masked_mean(&e)) {
                events.push(("whole", f, u));
            }
            let zone_score = map.zone_means(&e)[0].1;
            if let Some(u) = pier.push(f, 0, zone_score) {
                events.push(("pier", f, u));
            }
        }
        assert!(
            events.iter().all(|(_, f, _)| *f >= 5),
            "the masked blob raised an event: {events:?}"
        );
        let start = events
            .iter()
            .find(|(who, _, u)| *who == "pier" && u.phase == Phase::Start)
            .expect("the pier-end blob starts an event");
        assert_eq!(start.2.zone.as_deref(), Some("pier-end"));
        assert_eq!(start.2.first_frame, 5);
    }

    #[test]
    fn bad_layouts_are_refused_with_the_name() {
        let bad = Zone {
            name: "quay".into(),
            polygon: Polygon(vec![[0.0, 0.0], [1.2, 0.0], [0.0, 1.0]]),
            sensitivity: 1.0,
        };
        let e = ZoneMap::new(vec![bad], &[], 4, 4).unwrap_err();
        assert!(e.to_string().contains("quay"), "{e}");
        let e = ZoneMap::new(vec![], &[Polygon(vec![[0.0, 0.0], [1.0, 1.0]])], 4, 4).unwrap_err();
        assert_eq!(e, ZoneError::TooFewPoints("mask 1".into()));
        let z = |n: &str| Zone {
            name: n.into(),
            polygon: rect(0.0, 0.0, 1.0, 1.0),
            sensitivity: 1.0,
        };
        assert_eq!(
            ZoneMap::new(vec![z("a"), z("a")], &[], 4, 4).unwrap_err(),
            ZoneError::Duplicate("a".into())
        );
        let mut s = z("b");
        s.sensitivity = 0.0;
        assert!(ZoneMap::new(vec![s], &[], 4, 4).is_err());
    }
}
