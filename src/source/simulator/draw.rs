//! Anti-aliased drawing of simple convex shapes into a temperature buffer (°C).
//!
//! Moving objects are drawn far to near; static objects that stand up from the ground (lamp
//! posts, bollards, moored boats) leave an occluder map, so an actor farther away than such an
//! object is hidden behind it. The same code can count pixels instead of drawing them, which is
//! how labels know whether an anomaly is actually visible.

/// Coverage below this is not drawn (and not counted), so labels and pixels agree exactly.
pub(crate) const MIN_ALPHA: f32 = 1.0 / 64.0;

/// Where shapes go: a temperature buffer, or nothing (only counting covered pixels).
pub(crate) struct Canvas<'a> {
    w: usize,
    h: usize,
    temp: Option<&'a mut [f32]>,
    occ: Option<&'a [f32]>,
    depth: f32,
    marks: Option<(&'a mut [u8], &'a mut [f32])>,
    mark_region: u8,
    mark_occ: f32,
    /// Pixels drawn (or that would have been drawn) since creation.
    pub painted: usize,
}

impl<'a> Canvas<'a> {
    /// Draws into `temp` without occlusion (background layers, sensor-independent effects).
    pub(crate) fn plain(w: usize, h: usize, temp: &'a mut [f32]) -> Self {
        Self {
            w,
            h,
            temp: Some(temp),
            occ: None,
            depth: 0.0,
            marks: None,
            mark_region: 0,
            mark_occ: 0.0,
            painted: 0,
        }
    }

    /// Draws actors into `temp`, hidden where a static occluder is nearer than `depth`.
    pub(crate) fn actors(w: usize, h: usize, temp: &'a mut [f32], occ: &'a [f32]) -> Self {
        Self {
            w,
            h,
            temp: Some(temp),
            occ: Some(occ),
            depth: 0.0,
            marks: None,
            mark_region: 0,
            mark_occ: 0.0,
            painted: 0,
        }
    }

    /// Only counts the pixels an actor would cover (for labels).
    pub(crate) fn counter(w: usize, h: usize, occ: &'a [f32]) -> Self {
        Self {
            w,
            h,
            temp: None,
            occ: Some(occ),
            depth: 0.0,
            marks: None,
            mark_region: 0,
            mark_occ: 0.0,
            painted: 0,
        }
    }

    /// Draws static objects, recording their region code and occluder depth where mostly covered.
    pub(crate) fn marking(
        w: usize,
        h: usize,
        temp: &'a mut [f32],
        region: &'a mut [u8],
        occ: &'a mut [f32],
    ) -> Self {
        Self {
            w,
            h,
            temp: Some(temp),
            occ: None,
            depth: 0.0,
            marks: Some((region, occ)),
            mark_region: 0,
            mark_occ: f32::NEG_INFINITY,
            painted: 0,
        }
    }

    /// Sets the ground row (normalized) of the actor being drawn; nearer objects have larger rows.
    pub(crate) fn set_depth(&mut self, depth: f32) {
        self.depth = depth;
    }

    /// Sets what static drawing records: region code and occluder row (−∞: does not occlude).
    pub(crate) fn set_mark(&mut self, region: u8, occ_row: f32) {
        self.mark_region = region;
        self.mark_occ = occ_row;
    }

    fn visible(&self, idx: usize) -> bool {
        self.occ.is_none_or(|o| o[idx] <= self.depth)
    }

    fn paint(&mut self, idx: usize, alpha: f32, t: f32) {
        if alpha < MIN_ALPHA || !self.visible(idx) {
            return;
        }
        self.painted += 1;
        if let Some(buf) = self.temp.as_deref_mut() {
            buf[idx] += (t - buf[idx]) * alpha;
        }
        if alpha >= 0.5 {
            if let Some((region, occ)) = self.marks.as_mut() {
                region[idx] = self.mark_region;
                occ[idx] = occ[idx].max(self.mark_occ);
            }
        }
    }

    fn add(&mut self, idx: usize, delta: f32) {
        if !self.visible(idx) {
            return;
        }
        self.painted += 1;
        if let Some(buf) = self.temp.as_deref_mut() {
            buf[idx] += delta;
        }
    }

    /// Clipped pixel range covering `[lo, hi]` along an axis of `n` pixels.
    fn span(lo: f32, hi: f32, n: usize) -> Option<(usize, usize)> {
        let a = lo.floor().max(0.0);
        let b = (hi.ceil()).min(n as f32);
        if b <= a || !a.is_finite() || !b.is_finite() {
            return None;
        }
        Some((a as usize, b as usize))
    }

    /// A segment from `a` to `b` with round caps of radius `r` (limbs, poles, torsos).
    pub(crate) fn capsule(&mut self, a: (f32, f32), b: (f32, f32), r: f32, t: f32) {
        let Some((x0, x1)) = Self::span(a.0.min(b.0) - r - 1.0, a.0.max(b.0) + r + 1.0, self.w)
        else {
            return;
        };
        let Some((y0, y1)) = Self::span(a.1.min(b.1) - r - 1.0, a.1.max(b.1) + r + 1.0, self.h)
        else {
            return;
        };
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in y0..y1 {
            let py = y as f32 + 0.5;
            for x in x0..x1 {
                let px = x as f32 + 0.5;
                let (qx, qy) = (px - a.0, py - a.1);
                let s = if len2 > 0.0 {
                    ((qx * dx + qy * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (qx - s * dx, qy - s * dy);
                let d = (ex * ex + ey * ey).sqrt();
                let alpha = (r + 0.5 - d).clamp(0.0, 1.0);
                self.paint(y * self.w + x, alpha, t);
            }
        }
    }

    /// An axis-aligned ellipse.
    pub(crate) fn ellipse(&mut self, c: (f32, f32), rx: f32, ry: f32, t: f32) {
        let (rx, ry) = (rx.max(0.35), ry.max(0.35));
        let Some((x0, x1)) = Self::span(c.0 - rx - 1.0, c.0 + rx + 1.0, self.w) else {
            return;
        };
        let Some((y0, y1)) = Self::span(c.1 - ry - 1.0, c.1 + ry + 1.0, self.h) else {
            return;
        };
        let rmin = rx.min(ry);
        for y in y0..y1 {
            let ny = (y as f32 + 0.5 - c.1) / ry;
            for x in x0..x1 {
                let nx = (x as f32 + 0.5 - c.0) / rx;
                let q = (nx * nx + ny * ny).sqrt();
                let alpha = (0.5 - (q - 1.0) * rmin).clamp(0.0, 1.0);
                self.paint(y * self.w + x, alpha, t);
            }
        }
    }

    /// A convex polygon (either winding).
    pub(crate) fn polygon(&mut self, pts: &[(f32, f32)], t: f32) {
        if pts.len() < 3 {
            return;
        }
        let (mut lx, mut hx, mut ly, mut hy) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in pts {
            lx = lx.min(p.0);
            hx = hx.max(p.0);
            ly = ly.min(p.1);
            hy = hy.max(p.1);
        }
        let Some((x0, x1)) = Self::span(lx - 1.0, hx + 1.0, self.w) else {
            return;
        };
        let Some((y0, y1)) = Self::span(ly - 1.0, hy + 1.0, self.h) else {
            return;
        };
        let area: f32 = (0..pts.len())
            .map(|i| pts[i].0 * pts[(i + 1) % pts.len()].1 - pts[(i + 1) % pts.len()].0 * pts[i].1)
            .sum();
        let sgn = if area >= 0.0 { 1.0 } else { -1.0 };
        let edges: Vec<(f32, f32, f32)> = (0..pts.len())
            .filter_map(|i| {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                let (ex, ey) = (b.0 - a.0, b.1 - a.1);
                let len = (ex * ex + ey * ey).sqrt();
                if len < 1e-6 {
                    return None;
                }
                // Inward unit normal, so that the signed distance is positive inside.
                let (nx, ny) = (-ey * sgn / len, ex * sgn / len);
                Some((nx, ny, -(nx * a.0 + ny * a.1)))
            })
            .collect();
        for y in y0..y1 {
            let py = y as f32 + 0.5;
            for x in x0..x1 {
                let px = x as f32 + 0.5;
                let d = edges
                    .iter()
                    .fold(f32::MAX, |m, (nx, ny, c)| m.min(nx * px + ny * py + c));
                let alpha = (0.5 + d).clamp(0.0, 1.0);
                self.paint(y * self.w + x, alpha, t);
            }
        }
    }

    /// Adds a smooth bump of `delta` °C with radii `rx`, `ry` (heat halos, plumes, wakes).
    pub(crate) fn glow(&mut self, c: (f32, f32), rx: f32, ry: f32, delta: f32) {
        let (rx, ry) = (rx.max(0.5), ry.max(0.5));
        let Some((x0, x1)) = Self::span(c.0 - rx, c.0 + rx, self.w) else {
            return;
        };
        let Some((y0, y1)) = Self::span(c.1 - ry, c.1 + ry, self.h) else {
            return;
        };
        for y in y0..y1 {
            let ny = (y as f32 + 0.5 - c.1) / ry;
            for x in x0..x1 {
                let nx = (x as f32 + 0.5 - c.0) / rx;
                let q2 = nx * nx + ny * ny;
                if q2 >= 1.0 {
                    continue;
                }
                let f = (1.0 - q2) * (1.0 - q2);
                if f >= 0.01 {
                    self.add(y * self.w + x, delta * f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_their_area_and_respect_occluders() {
        let (w, h) = (20, 10);
        let mut buf = vec![0.0f32; w * h];
        let mut occ = vec![f32::NEG_INFINITY; w * h];
        occ[5 * w + 5] = 0.9;
        let mut c = Canvas::actors(w, h, &mut buf, &occ);
        c.set_depth(0.5);
        c.polygon(&[(2.0, 2.0), (8.0, 2.0), (8.0, 8.0), (2.0, 8.0)], 10.0);
        assert_eq!(c.painted, 35, "6×6 square minus the occluded pixel");
        assert_eq!(buf[5 * w + 5], 0.0);
        assert_eq!(buf[3 * w + 3], 10.0);
        assert_eq!(buf[3 * w + 12], 0.0);
        let mut count = Canvas::counter(w, h, &occ);
        count.ellipse((15.0, 5.0), 3.0, 2.0, 1.0);
        assert!((15..=32).contains(&count.painted), "{}", count.painted);
    }

    #[test]
    fn offscreen_shapes_draw_nothing() {
        let mut buf = vec![0.0f32; 16];
        let mut c = Canvas::plain(4, 4, &mut buf);
        c.capsule((-10.0, -10.0), (-5.0, -5.0), 1.0, 3.0);
        c.glow((100.0, 2.0), 3.0, 3.0, 1.0);
        assert_eq!(c.painted, 0);
    }
}
