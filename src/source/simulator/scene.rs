//! The harbor as the fixed camera sees it: geometry, weather and time-of-day levels, the static
//! background, and the parts of the background that move on their own (clouds, waves, a vent
//! plume).
//!
//! The camera stands high on the far side of the harbor basin, looking across the water at the
//! quay front. From the top of the image down: sky, town and hills, a one-way road, the paved quay
//! (pedestrians), the quay wall, then water up to the bottom edge. A wooden pier runs from the
//! quay towards the camera on the right; its outer end is the restricted zone.

use super::draw::Canvas;
use super::rng::{derive, fbm, hash_unit, lerp, smoothstep, value_noise, Rng, SinTable};

/// Normalized image row of the (hidden) horizon: ground rows shrink towards it.
pub(crate) const HORIZON: f32 = 0.04;
/// Pixels per metre at ground row `yn` are `height * SCALE * (yn - HORIZON)`.
pub(crate) const SCALE: f32 = 0.08;
/// Far edge of the road.
pub(crate) const ROAD_FAR: f32 = 0.29;
/// Near edge of the road.
pub(crate) const ROAD_NEAR: f32 = 0.343;
/// Ground row of the near wheels of cars in the (single, one-way) lane.
pub(crate) const LANE: f32 = 0.324;
/// Far edge of the quay (behind it the curb and the road).
pub(crate) const QUAY_FAR: f32 = 0.356;
/// The quay edge above the water.
pub(crate) const QUAY_EDGE: f32 = 0.535;
/// Rows where pedestrians walk.
pub(crate) const WALK_ROWS: (f32, f32) = (0.372, 0.526);
/// Lateral extent of the pier, metres from the camera axis.
pub(crate) const PIER_X: (f32, f32) = (4.0, 7.5);
/// Row of the pier's outer end (nearest the camera).
pub(crate) const PIER_TIP: f32 = 0.86;
/// The restricted zone is the pier beyond this row (a barrier with a sign marks it).
pub(crate) const ZONE_START: f32 = 0.70;
/// Ladder in the quay wall (metres from the camera axis).
pub(crate) const LADDER_X: f32 = -0.8;
/// Ladder on the pier's left side (row).
pub(crate) const PIER_LADDER_ROW: f32 = 0.64;
/// Row of the benches on the quay.
pub(crate) const BENCH_ROW: f32 = 0.374;
/// Benches (metres from the camera axis).
pub(crate) const BENCHES: [f32; 2] = [-7.0, 15.0];
/// Rows where boats pass beyond the pier end.
pub(crate) const BOAT_ROWS: (f32, f32) = (0.885, 0.93);
/// Spots along the quay edge clear of moored boats and the pier (metres).
pub(crate) const EDGE_SPOTS: (f32, f32) = (-2.0, 2.8);

/// Region codes of the static scene.
pub(crate) mod region {
    pub(crate) const SKY: u8 = 0;
    pub(crate) const HILL: u8 = 1;
    pub(crate) const BUILDING: u8 = 2;
    pub(crate) const ROAD: u8 = 3;
    pub(crate) const CURB: u8 = 4;
    pub(crate) const QUAY: u8 = 5;
    pub(crate) const WALL: u8 = 6;
    pub(crate) const WATER: u8 = 7;
    pub(crate) const PIER: u8 = 8;
    pub(crate) const OBJECT: u8 = 9;
}

/// Perspective of the fixed camera over the ground plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct View {
    /// Image width in pixels.
    pub w: f32,
    /// Image height in pixels.
    pub h: f32,
}

impl View {
    /// View for an image of `width` × `height` pixels.
    pub(crate) fn new(width: u32, height: u32) -> Self {
        Self {
            w: width as f32,
            h: height as f32,
        }
    }

    /// Pixels per metre for an object standing on ground row `yn`.
    pub(crate) fn ppm(&self, yn: f32) -> f32 {
        self.h * SCALE * (yn - HORIZON).max(1e-3)
    }

    fn d0(&self) -> f32 {
        self.w / (self.h * SCALE)
    }

    /// Distance from the camera (metres) of ground row `yn`.
    pub(crate) fn depth(&self, yn: f32) -> f32 {
        self.d0() / (yn - HORIZON).max(1e-3)
    }

    /// Ground row at distance `d` metres.
    pub(crate) fn row_at_depth(&self, d: f32) -> f32 {
        HORIZON + self.d0() / d.max(1e-3)
    }

    /// Ground row `metres` nearer to the camera than row `yn` (negative: farther).
    pub(crate) fn row_towards(&self, yn: f32, metres: f32) -> f32 {
        self.row_at_depth(self.depth(yn) - metres)
    }

    /// Pixel position of ground point (`x_m` metres right of the axis, row `yn`).
    pub(crate) fn px(&self, x_m: f32, yn: f32) -> (f32, f32) {
        (self.w * 0.5 + x_m * self.ppm(yn), yn * self.h)
    }

    /// Lateral metres of pixel column `px` on ground row `yn`.
    pub(crate) fn x_m(&self, px: f32, yn: f32) -> f32 {
        (px - self.w * 0.5) / self.ppm(yn)
    }

    /// Lateral range (metres) visible on row `yn`, widened by `margin` metres on both sides.
    pub(crate) fn visible_x(&self, yn: f32, margin: f32) -> (f32, f32) {
        (self.x_m(0.0, yn) - margin, self.x_m(self.w, yn) + margin)
    }

    /// First image row of open water (below the quay wall face).
    pub(crate) fn water_top(&self) -> f32 {
        QUAY_EDGE + 1.0 * SCALE * (QUAY_EDGE - HORIZON)
    }

    /// Outline (pixels) of the open water: everything below the quay wall except the pier,
    /// which is cut out as a notch down to its tip.
    pub(crate) fn water_polygon(&self) -> Vec<(f32, f32)> {
        let wt = self.water_top();
        let (l_top, l_tip) = (self.px(PIER_X.0, wt), self.px(PIER_X.0, PIER_TIP));
        let (r_top, r_tip) = (self.px(PIER_X.1, wt), self.px(PIER_X.1, PIER_TIP));
        let top = wt * self.h;
        vec![
            (0.0, top),
            (l_top.0.clamp(0.0, self.w), top),
            (l_tip.0.clamp(0.0, self.w), l_tip.1),
            (r_tip.0.clamp(0.0, self.w), r_tip.1),
            (r_top.0.clamp(0.0, self.w), top),
            (self.w, top),
            (self.w, self.h),
            (0.0, self.h),
        ]
    }

    /// Corners (pixels) of the restricted pier-end zone, clockwise from the far left.
    pub(crate) fn zone_polygon(&self) -> Vec<(f32, f32)> {
        vec![
            self.px(PIER_X.0, ZONE_START),
            self.px(PIER_X.1, ZONE_START),
            self.px(PIER_X.1, PIER_TIP),
            self.px(PIER_X.0, PIER_TIP),
        ]
    }
}

/// Weather and time-of-day levels of one clip.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SceneConditions {
    /// Local time at the clip start, hours since midnight.
    pub hour: f32,
    /// Air temperature (°C).
    pub air_c: f32,
    /// Water temperature (°C).
    pub water_c: f32,
    /// Solar heating now, 0 (night or thick cloud) to 1 (clear midday).
    pub sun: f32,
    /// Heat stored in stone and asphalt from the last hours of sun, 0 to 1.
    pub residual: f32,
    /// 0 at night, 1 in daylight.
    pub daylight: f32,
    /// Cloud cover, 0 (clear) to 1 (overcast).
    pub overcast: f32,
    /// Wind, 0 (calm water) to 1 (choppy).
    pub wind: f32,
    /// People and traffic level, 0 (empty night) to about 1.3 (busy afternoon).
    pub activity: f32,
    /// Apparent sky temperature at the top of the image (°C).
    pub sky_zenith_c: f32,
    /// Apparent sky temperature just above the skyline (°C).
    pub sky_horizon_c: f32,
    /// Street lamps and lit windows are on.
    pub lights_on: bool,
}

fn solar_elevation(hour: f32) -> f32 {
    // August at 57° N: sunrise about 05:30, sunset about 20:45.
    if !(5.5..20.75).contains(&hour) {
        return 0.0;
    }
    super::rng::sin(std::f64::consts::PI * f64::from((hour - 5.5) / 15.25)) as f32
}

fn activity_curve(hour: f32) -> f32 {
    const KNOTS: [(f32, f32); 8] = [
        (0.0, 0.12),
        (4.0, 0.06),
        (6.0, 0.3),
        (9.0, 0.8),
        (12.0, 1.0),
        (18.0, 1.0),
        (22.0, 0.4),
        (24.0, 0.12),
    ];
    for k in KNOTS.windows(2) {
        if hour <= k[1].0 {
            return lerp(k[0].1, k[1].1, (hour - k[0].0) / (k[1].0 - k[0].0));
        }
    }
    KNOTS[KNOTS.len() - 1].1
}

impl SceneConditions {
    /// Draws the weather of one clip starting at `hour` (0..24).
    pub(crate) fn sample(hour: f32, rng: &mut Rng) -> Self {
        let overcast = match rng.weighted(&[0.4, 0.35, 0.25]) {
            0 => rng.range(0.0, 0.2),
            1 => rng.range(0.3, 0.65),
            _ => rng.range(0.7, 1.0),
        };
        let elev = solar_elevation(hour);
        let daylight = smoothstep(0.0, 0.12, elev).max(if (4.8..21.5).contains(&hour) {
            0.15
        } else {
            0.0
        });
        let residual = (1..=4)
            .map(|k| solar_elevation((hour - k as f32 + 24.0) % 24.0))
            .sum::<f32>()
            / 4.0;
        let phase = std::f64::consts::TAU * f64::from((hour - 15.0) / 24.0);
        let air_c =
            15.5 + 4.5 * super::rng::cos(phase) as f32 + 1.2 * rng.normal() - 1.5 * overcast * elev;
        let clear_zenith = -34.0 + 6.0 * elev;
        let sky_zenith_c = lerp(clear_zenith, air_c - 9.0, overcast);
        let sky_horizon_c = lerp(air_c - 13.0, air_c - 4.0, overcast);
        Self {
            hour,
            air_c,
            water_c: 17.0 + 0.6 * rng.normal(),
            sun: elev * (1.0 - 0.75 * overcast),
            residual: residual * (1.0 - 0.5 * overcast),
            daylight,
            overcast,
            wind: rng.range(0.05, 1.0),
            activity: activity_curve(hour) * rng.range(0.75, 1.25),
            sky_zenith_c,
            sky_horizon_c,
            lights_on: elev < 0.08,
        }
    }

    /// Surface temperature of a material that gains `a` °C in full sun, `r` °C from stored heat
    /// and loses `b` °C to a clear night sky.
    pub(crate) fn surface(&self, a: f32, r: f32, b: f32) -> f32 {
        self.air_c + a * self.sun + r * self.residual
            - b * (1.0 - self.daylight) * (1.0 - self.overcast)
    }

    /// Clothing surface temperature for a person (before individual variation).
    pub(crate) fn clothing(&self) -> f32 {
        self.air_c + (33.0 - self.air_c) * 0.65 + 1.5 * self.sun
    }

    /// Car glass reflects the sky.
    pub(crate) fn glass(&self) -> f32 {
        lerp(self.air_c, self.sky_horizon_c, 0.45)
    }

    /// Metal parts (bollards, posts, car bodies at rest).
    pub(crate) fn metal(&self) -> f32 {
        self.surface(11.0, 1.0, 3.0)
    }

    /// Air temperature change per second around the clip start (the day's slow drift).
    pub(crate) fn drift_c_per_s(&self) -> f32 {
        let phase = std::f64::consts::TAU * f64::from((self.hour - 15.0) / 24.0);
        (-4.5 * std::f64::consts::TAU / 24.0 / 3600.0 * super::rng::sin(phase)) as f32
    }
}

/// A building of the town behind the road (x in fractions of the image width).
#[derive(Debug, Clone)]
struct Building {
    x0: f32,
    x1: f32,
    top: f32,
    offset_c: f32,
    sun_factor: f32,
    cols: u32,
    rows: u32,
    seed: u64,
}

/// Layout of the site; fixed by the site seed so every clip shows the same harbor.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    buildings: Vec<Building>,
    hill_seed: u64,
    texture_seed: u64,
    vent: (f32, f32),
}

impl Site {
    /// Lays out the town skyline from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = Rng::new(derive(seed, 0x517E));
        let mut buildings = Vec::new();
        let mut x = -rng.range(0.0, 0.05);
        while x < 1.0 {
            let width = rng.range(0.05, 0.15);
            let gap = if rng.chance(0.25) {
                rng.range(0.01, 0.04)
            } else {
                0.0
            };
            buildings.push(Building {
                x0: x,
                x1: x + width,
                top: rng.range(0.105, 0.225),
                offset_c: rng.range(-1.0, 1.0),
                sun_factor: rng.range(0.2, 1.0),
                cols: 2 + rng.below(6) as u32,
                rows: 2 + rng.below(4) as u32,
                seed: rng.next_u64(),
            });
            x += width + gap;
        }
        // The HVAC vent sits on the building nearest to 30 % of the width, below its roof.
        let b = buildings
            .iter()
            .min_by(|a, b| {
                (0.5 * (a.x0 + a.x1) - 0.3)
                    .abs()
                    .total_cmp(&(0.5 * (b.x0 + b.x1) - 0.3).abs())
            })
            .expect("at least one building");
        let vent = (
            b.x0 + 0.25 * (b.x1 - b.x0),
            b.top + 0.35 * (ROAD_FAR - b.top),
        );
        Self {
            buildings,
            hill_seed: rng.next_u64(),
            texture_seed: rng.next_u64(),
            vent,
        }
    }

    fn building_at(&self, xn: f32) -> Option<&Building> {
        self.buildings.iter().find(|b| xn >= b.x0 && xn < b.x1)
    }

    fn hill_top(&self, xn: f32) -> f32 {
        0.095 + 0.06 * fbm(self.hill_seed, xn * 4.0, 0.5, 3)
    }
}

/// A water pixel and its ground coordinates (for waves).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaterPx {
    idx: u32,
    x_m: f32,
    d_m: f32,
    weight: f32,
}

/// One component of the wave field.
#[derive(Debug, Clone, Copy)]
struct Wave {
    kx: f32,
    kd: f32,
    freq: f32,
    phase: f32,
    amp: f32,
}

/// The background of one clip: fixed pixels plus what moves on its own.
#[derive(Debug, Clone)]
pub(crate) struct StaticScene {
    /// Temperatures (°C) without clouds, waves and plume.
    pub base: Vec<f32>,
    /// Per pixel: ground row of the nearest static object covering it (−∞: none).
    pub occ: Vec<f32>,
    /// Per pixel: region code.
    #[cfg_attr(not(test), allow(dead_code))]
    pub region: Vec<u8>,
    water: Vec<WaterPx>,
    sky: Vec<u32>,
    waves: Vec<Wave>,
    wave_amp: f32,
    cloud_seed: u64,
    cloud_cover: f32,
    cloud_speed: f32,
    cloud_c: f32,
    vent_px: (f32, f32, f32),
    vent_c: f32,
    flicker_seed: u64,
    w: usize,
    h: usize,
}

struct Builder<'a> {
    view: View,
    cond: &'a SceneConditions,
    w: usize,
    h: usize,
    base: Vec<f32>,
    region: Vec<u8>,
    occ: Vec<f32>,
}

impl Builder<'_> {
    fn canvas(&mut self, region: u8, occ_row: f32) -> Canvas<'_> {
        let mut c = Canvas::marking(
            self.w,
            self.h,
            &mut self.base,
            &mut self.region,
            &mut self.occ,
        );
        c.set_mark(region, occ_row);
        c
    }
}

/// Pixel position of a point `v` metres above ground point (`x_m`, `yn`).
fn up(view: &View, x_m: f32, yn: f32, v: f32) -> (f32, f32) {
    let (x, y) = view.px(x_m, yn);
    (x, y - v * view.ppm(yn))
}

impl StaticScene {
    /// Renders the background for `cond` at `view` size; `clip` drives per-clip details.
    pub(crate) fn build(site: &Site, view: View, cond: &SceneConditions, clip: &mut Rng) -> Self {
        let (w, h) = (view.w as usize, view.h as usize);
        let mut b = Builder {
            view,
            cond,
            w,
            h,
            base: vec![0.0; w * h],
            region: vec![region::SKY; w * h],
            occ: vec![f32::NEG_INFINITY; w * h],
        };
        let lit_seed = clip.next_u64();
        ground(&mut b, site, lit_seed);
        pier(&mut b);
        street_furniture(&mut b);
        let engine_running = clip.chance(0.15);
        moored_boats(&mut b, engine_running);
        let vent_c = clip.range(36.0, 44.0);
        let vent_px = {
            let (x, y) = (site.vent.0 * view.w, site.vent.1 * view.h);
            let r = (0.007 * view.w).max(0.8);
            b.canvas(region::OBJECT, f32::NEG_INFINITY).polygon(
                &[
                    (x - r, y - r),
                    (x + r, y - r),
                    (x + r, y + r),
                    (x - r, y + r),
                ],
                vent_c,
            );
            (x, y, r)
        };

        let water_top = view.water_top();
        let mut water = Vec::new();
        let mut sky = Vec::new();
        for y in 0..h {
            let yn = (y as f32 + 0.5) / view.h;
            for x in 0..w {
                let idx = y * w + x;
                match b.region[idx] {
                    region::WATER => {
                        let s = ((yn - water_top) / (1.0 - water_top)).clamp(0.0, 1.0);
                        water.push(WaterPx {
                            idx: idx as u32,
                            x_m: view.x_m(x as f32 + 0.5, yn),
                            d_m: view.depth(yn),
                            weight: 0.7 + 0.6 * (1.0 - s),
                        });
                    }
                    region::SKY => sky.push(idx as u32),
                    _ => {}
                }
            }
        }

        let mut waves = Vec::new();
        for i in 0..3 {
            let lambda = clip.range(2.5, 8.0);
            let theta = clip.range(-1.0, 1.0);
            waves.push(Wave {
                kx: super::rng::sin(f64::from(theta)) as f32 / lambda,
                kd: super::rng::cos(f64::from(theta)) as f32 / lambda,
                freq: clip.range(0.04, 0.15) * if i == 1 { -1.0 } else { 1.0 },
                phase: clip.unit(),
                amp: clip.range(0.3, 0.6),
            });
        }
        // Fine ripples move too fast to follow at 1 frame per second: they only add texture.
        let lambda = clip.range(0.9, 1.4);
        waves.push(Wave {
            kx: 0.3 / lambda,
            kd: 0.95 / lambda,
            freq: clip.range(0.31, 0.45),
            phase: clip.unit(),
            amp: 0.2,
        });
        let wave_amp =
            (0.25 + 0.9 * cond.wind) * (cond.water_c - cond.sky_horizon_c).max(4.0) * 0.06;

        let cloud_cover = if cond.overcast > 0.85 {
            0.0
        } else {
            (cond.overcast * 1.2).min(0.9)
        };
        Self {
            base: b.base,
            occ: b.occ,
            region: b.region,
            water,
            sky,
            waves,
            wave_amp,
            cloud_seed: clip.next_u64(),
            cloud_cover,
            cloud_speed: clip.range(0.15, 0.8) * clip.sign() * view.w / 384.0,
            cloud_c: cond.air_c - clip.range(7.0, 10.0),
            vent_px,
            vent_c,
            flicker_seed: clip.next_u64(),
            w,
            h,
        }
    }

    /// Writes the background at time `t` (seconds from the clip start) into `out`.
    pub(crate) fn render_into(&self, out: &mut [f32], t: f32, drift_c: f32, sin: &SinTable) {
        out.copy_from_slice(&self.base);
        if self.cloud_cover > 0.0 {
            let (sx, sy) = (1.0 / (0.22 * self.w as f32), 1.0 / (0.07 * self.h as f32));
            let lo = 1.0 - self.cloud_cover - 0.1;
            for &i in &self.sky {
                let (x, y) = ((i as usize % self.w) as f32, (i as usize / self.w) as f32);
                let n = fbm(self.cloud_seed, (x - self.cloud_speed * t) * sx, y * sy, 3);
                let d = smoothstep(lo, lo + 0.35, n);
                let p = &mut out[i as usize];
                *p = lerp(*p, self.cloud_c, d * 0.85);
            }
        }
        for px in &self.water {
            let mut s = 0.0;
            for wv in &self.waves {
                s += wv.amp
                    * sin.sin_turns(wv.kx * px.x_m + wv.kd * px.d_m - wv.freq * t + wv.phase);
            }
            out[px.idx as usize] += self.wave_amp * px.weight * s;
        }
        // The vent's warm plume rises and flickers.
        let (vx, vy, r) = self.vent_px;
        let f = t as i64;
        let mut c = Canvas::plain(self.w, self.h, out);
        for k in 0..3 {
            let jitter = hash_unit(self.flicker_seed, f, k) - 0.5;
            let strength =
                (self.vent_c - 20.0) * 0.12 * (0.7 + 0.6 * hash_unit(self.flicker_seed, f, k + 10));
            let up = r * (2.0 + 2.5 * k as f32);
            c.glow(
                (vx + jitter * r * 1.5, vy - up),
                r * (1.6 + 0.6 * k as f32),
                r * (2.2 + 0.4 * k as f32),
                strength,
            );
        }
        if drift_c != 0.0 {
            out.iter_mut().for_each(|p| *p += drift_c);
        }
    }
}

/// Sky, town, road, quay, wall and water, row by row.
fn ground(b: &mut Builder<'_>, site: &Site, lit_seed: u64) {
    let (view, cond) = (b.view, *b.cond);
    let water_top = view.water_top();
    let tex = site.texture_seed;
    let asphalt = cond.surface(12.0, 5.0, 1.5);
    let curb = cond.surface(9.0, 3.0, 2.0);
    let paving = cond.surface(4.5, 2.0, 2.2);
    let coping = cond.surface(4.5, 2.0, 2.0) + 0.3;
    let wall_top = cond.surface(5.0, 2.0, 1.5);
    let hill_c = lerp(cond.air_c - 2.0 + 2.0 * cond.sun, cond.sky_horizon_c, 0.45);
    let coping_row = view.row_towards(QUAY_EDGE, -0.5);
    let slab = 1.2;
    for y in 0..b.h {
        let yn = (y as f32 + 0.5) / view.h;
        let ppm = view.ppm(yn);
        let depth = view.depth(yn);
        // Metres of depth per pixel row, to draw joints one pixel wide.
        let dd_px = view.depth(yn - 0.5 / view.h) - view.depth(yn + 0.5 / view.h);
        for x in 0..b.w {
            let xn = (x as f32 + 0.5) / view.w;
            let x_m = view.x_m(x as f32 + 0.5, yn);
            let idx = y * b.w + x;
            let (t, r) = if yn < ROAD_FAR {
                let hill = site.hill_top(xn);
                match site.building_at(xn) {
                    Some(bd) if yn >= bd.top => {
                        (facade(bd, xn, yn, &cond, lit_seed), region::BUILDING)
                    }
                    _ if yn >= hill => (
                        hill_c + 0.8 * (value_noise(tex, xn * 60.0, yn * 80.0) - 0.5),
                        region::HILL,
                    ),
                    _ => {
                        let s = (yn / 0.2).clamp(0.0, 1.0);
                        (
                            lerp(cond.sky_zenith_c, cond.sky_horizon_c, s * s.sqrt()),
                            region::SKY,
                        )
                    }
                }
            } else if yn < ROAD_NEAR {
                let mut t = asphalt + 0.3 * (value_noise(tex ^ 1, x_m * 0.7, depth * 0.7) - 0.5);
                // Warm polished wheel tracks and painted (low-emissivity) lines.
                let track = |row: f32| ((yn - row) * view.h).abs() < 0.045 * ppm;
                if track(LANE - 0.002) || track(view.row_towards(LANE, -1.6)) {
                    t += 0.2 + 0.9 * cond.sun;
                }
                let line = ((yn - (ROAD_NEAR - 0.004)) * view.h).abs() < (0.06 * ppm).max(0.5);
                if line && (x_m / 3.0).rem_euclid(2.0) < 1.0 {
                    t -= 0.3 + 1.4 * cond.sun;
                }
                (t, region::ROAD)
            } else if yn < QUAY_FAR {
                let edge = ((yn - ROAD_NEAR) * view.h) < (0.12 * ppm).max(0.8);
                (curb + if edge { 0.6 } else { 0.0 }, region::CURB)
            } else if yn < QUAY_EDGE {
                if yn > coping_row {
                    let gap = ((yn - coping_row) * view.h) < 0.7;
                    (coping - if gap { 0.5 } else { 0.0 }, region::QUAY)
                } else {
                    let (i, j) = ((x_m / slab).floor() as i64, (depth / slab).floor() as i64);
                    let mut t = paving + (hash_unit(tex ^ 2, i, j) - 0.5) * 0.5 * (0.5 + cond.sun);
                    let jx = (x_m - (x_m / slab).round() * slab).abs() * ppm < 0.5;
                    let jy = (depth - (depth / slab).round() * slab).abs() < 0.5 * dd_px;
                    if jx || jy {
                        t -= 0.35;
                    }
                    (t, region::QUAY)
                }
            } else if yn < water_top {
                let tz = (yn - QUAY_EDGE) / (water_top - QUAY_EDGE);
                let mut t = lerp(wall_top, cond.water_c - 0.5, tz);
                if tz > 0.75 {
                    t = cond.water_c - 1.5;
                }
                let rail = (x_m - LADDER_X).abs();
                if (rail - 0.22).abs() * ppm < 0.6 || (rail < 0.22 && ((tz * 4.0).fract() < 0.2)) {
                    t = lerp(cond.air_c, cond.water_c, 0.5) - 1.0;
                }
                (t, region::WALL)
            } else {
                let s = ((yn - water_top) / (1.0 - water_top)).clamp(0.0, 1.0);
                let refl = 0.04 + 0.3 * (1.0 - s) * (1.0 - s);
                (
                    cond.water_c * (1.0 - refl) + cond.sky_horizon_c * refl,
                    region::WATER,
                )
            };
            b.base[idx] = t;
            b.region[idx] = r;
        }
    }
}

fn facade(bd: &Building, xn: f32, yn: f32, cond: &SceneConditions, lit_seed: u64) -> f32 {
    let wall = cond.air_c
        + bd.offset_c
        + 5.0 * bd.sun_factor * cond.sun
        + 1.5 * cond.residual
        + (1.0 - cond.daylight);
    let u = (xn - bd.x0) / (bd.x1 - bd.x0);
    let v = (yn - bd.top) / (ROAD_FAR - bd.top);
    if v < 0.06 {
        return wall - 2.0 * (1.0 - cond.overcast);
    }
    let (cu, cv) = (u * bd.cols as f32, (v - 0.12) / 0.8 * bd.rows as f32);
    if cv >= 0.0
        && cv < bd.rows as f32
        && (0.25..0.75).contains(&cu.fract())
        && (0.3..0.75).contains(&cv.fract())
    {
        let lit = cond.lights_on && hash_unit(bd.seed ^ lit_seed, cu as i64, cv as i64) < 0.35;
        return if lit {
            wall + 1.2
        } else {
            lerp(wall, cond.sky_horizon_c, 0.35)
        };
    }
    wall
}

/// The wooden pier: deck with planks, the visible left side and end faces, piles and ladder.
fn pier(b: &mut Builder<'_>) {
    let (view, cond) = (b.view, *b.cond);
    let deck = cond.surface(5.0, 2.0, 2.5);
    let side = cond.surface(4.0, 1.0, 2.0) - 0.8;
    let wet = cond.water_c - 1.0;
    for y in 0..b.h {
        let yn = (y as f32 + 0.5) / view.h;
        if !(QUAY_EDGE..PIER_TIP).contains(&yn) {
            continue;
        }
        let (xl, _) = view.px(PIER_X.0, yn);
        let (xr, _) = view.px(PIER_X.1, yn);
        let depth = view.depth(yn);
        let plank_gap = (depth / 0.3).fract() < 0.18;
        for x in 0..b.w {
            let px = x as f32 + 0.5;
            let cover = (px - xl + 0.5)
                .clamp(0.0, 1.0)
                .min((xr - px + 0.5).clamp(0.0, 1.0));
            if cover <= 0.0 {
                continue;
            }
            let idx = y * b.w + x;
            let t = deck
                + if plank_gap { -0.45 } else { 0.0 }
                + 0.2 * (hash_unit(7, (depth / 0.3) as i64, 0) - 0.5);
            b.base[idx] += (t - b.base[idx]) * cover;
            if cover >= 0.5 {
                b.region[idx] = region::PIER;
            }
        }
    }
    let down = |yn: f32, m: f32| {
        let (x, y) = view.px(PIER_X.0, yn);
        (x, y + m * view.ppm(yn))
    };
    let (e, t) = (QUAY_EDGE, PIER_TIP);
    let face = [
        view.px(PIER_X.0, e),
        view.px(PIER_X.0, t),
        down(t, 0.9),
        down(e, 0.9),
    ];
    b.canvas(region::OBJECT, f32::NEG_INFINITY)
        .polygon(&face, side);
    let tip = {
        let (x1, y1) = view.px(PIER_X.1, t);
        [
            view.px(PIER_X.0, t),
            (x1, y1),
            (x1, y1 + 0.9 * view.ppm(t)),
            down(t, 0.9),
        ]
    };
    b.canvas(region::OBJECT, f32::NEG_INFINITY)
        .polygon(&tip, side - 0.4);
    // Piles under the faces, and the ladder down the left side.
    let mut piles: Vec<(f32, f32)> = Vec::new();
    let (d0, d1) = (view.depth(e), view.depth(t));
    let mut d = d0 - 2.5;
    while d > d1 {
        piles.push((PIER_X.0, view.row_at_depth(d)));
        d -= 3.0;
    }
    piles.push((PIER_X.0 + 0.15, t));
    piles.push((PIER_X.1 - 0.15, t));
    for (xm, yn) in piles {
        let (x, y) = view.px(xm, yn);
        let s = view.ppm(yn);
        b.canvas(region::OBJECT, f32::NEG_INFINITY).capsule(
            (x, y + 0.9 * s),
            (x, y + 1.4 * s),
            0.14 * s,
            wet,
        );
    }
    let (lx, ly) = view.px(PIER_X.0, PIER_LADDER_ROW);
    let s = view.ppm(PIER_LADDER_ROW);
    let metal = lerp(cond.air_c, cond.water_c, 0.5) - 1.0;
    for dx in [-0.2, 0.2] {
        b.canvas(region::OBJECT, f32::NEG_INFINITY).capsule(
            (lx + dx * s, ly),
            (lx + dx * s, ly + 1.3 * s),
            0.04 * s,
            metal,
        );
    }

    // The barrier and sign at the start of the restricted zone.
    let metal = cond.metal();
    let zs = view.ppm(ZONE_START);
    let post = |xm: f32| view.px(xm, ZONE_START);
    let (p0, p1) = (post(PIER_X.0 + 0.25), post(PIER_X.1 - 0.25));
    let h = 1.1 * zs;
    let mut c = b.canvas(region::OBJECT, ZONE_START);
    c.capsule(p0, (p0.0, p0.1 - h), 0.06 * zs, metal);
    c.capsule(p1, (p1.0, p1.1 - h), 0.06 * zs, metal);
    let mid = (0.5 * (p0.0 + p1.0), p0.1 - h + 0.25 * zs);
    c.capsule((p0.0, p0.1 - h), mid, 0.025 * zs, metal);
    c.capsule(mid, (p1.0, p1.1 - h), 0.025 * zs, metal);
    let sign_c = cond.surface(12.0, 0.5, 3.0);
    c.polygon(
        &[
            (p0.0 - 0.3 * zs, p0.1 - 0.95 * zs),
            (p0.0 + 0.3 * zs, p0.1 - 0.95 * zs),
            (p0.0 + 0.3 * zs, p0.1 - 0.55 * zs),
            (p0.0 - 0.3 * zs, p0.1 - 0.55 * zs),
        ],
        sign_c,
    );
}

/// Lamp posts, bollards, benches and the harbor kiosk with its air-conditioning unit.
fn street_furniture(b: &mut Builder<'_>) {
    let (view, cond) = (b.view, *b.cond);
    let metal = cond.metal();
    let bollard_row = QUAY_EDGE - 0.004;
    for xm in [-22.0f32, -16.0, -10.0, -4.0, 1.5, 10.0, 16.0, 22.0] {
        let s = view.ppm(bollard_row);
        let (x, y) = view.px(xm, bollard_row);
        let mut c = b.canvas(region::OBJECT, bollard_row);
        c.capsule((x, y - 0.1 * s), (x, y - 0.45 * s), 0.17 * s, metal);
        c.ellipse((x, y - 0.55 * s), 0.22 * s, 0.08 * s, metal + 0.5);
    }
    let lamp_row = 0.364;
    let head_c = if cond.lights_on {
        cond.air_c + 22.0
    } else {
        metal
    };
    for xm in [-26.0f32, -14.0, -2.0, 10.0, 22.0] {
        let s = view.ppm(lamp_row);
        let foot = view.px(xm, lamp_row);
        let top = up(&view, xm, lamp_row, 4.4);
        let mut c = b.canvas(region::OBJECT, lamp_row);
        c.capsule(foot, top, 0.07 * s, metal);
        c.capsule(top, (top.0 + 0.6 * s, top.1 - 0.1 * s), 0.05 * s, metal);
        c.ellipse((top.0 + 0.65 * s, top.1), 0.3 * s, 0.13 * s, head_c);
    }
    if cond.lights_on {
        // Lamps warm the air around their heads a little.
        for xm in [-26.0f32, -14.0, -2.0, 10.0, 22.0] {
            let s = view.ppm(lamp_row);
            let top = up(&view, xm, lamp_row, 4.4);
            Canvas::plain(b.w, b.h, &mut b.base).glow(
                (top.0 + 0.65 * s, top.1),
                0.9 * s,
                0.6 * s,
                2.0,
            );
        }
    }
    let wood = cond.surface(7.0, 1.0, 2.5);
    for xm in BENCHES {
        let s = view.ppm(BENCH_ROW);
        let p = |u: f32, v: f32| up(&view, xm + u, BENCH_ROW, v);
        let seat = [p(-0.9, 0.4), p(0.9, 0.4), p(0.9, 0.48), p(-0.9, 0.48)];
        let back = [p(-0.9, 0.58), p(0.9, 0.58), p(0.9, 0.85), p(-0.9, 0.85)];
        let legs = [p(-0.8, 0.0), p(-0.8, 0.4), p(0.8, 0.0), p(0.8, 0.4)];
        let mut c = b.canvas(region::OBJECT, BENCH_ROW);
        c.polygon(&back, wood);
        c.polygon(&seat, wood);
        c.capsule(legs[0], legs[1], 0.05 * s, metal);
        c.capsule(legs[2], legs[3], 0.05 * s, metal);
    }
    let kiosk_row = 0.40;
    let (x0, x1) = (-19.5f32, -15.5f32);
    let wall = cond.surface(6.0, 1.5, 1.0) + 2.0;
    let p = |u: f32, v: f32| up(&view, u, kiosk_row, v);
    let front = [p(x0, 0.0), p(x1, 0.0), p(x1, 2.8), p(x0, 2.8)];
    let roof = [
        p(x0 - 0.25, 2.8),
        p(x1 + 0.25, 2.8),
        p(x1 + 0.25, 3.05),
        p(x0 - 0.25, 3.05),
    ];
    let window = [
        p(x0 + 0.4, 1.0),
        p(x0 + 2.0, 1.0),
        p(x0 + 2.0, 2.0),
        p(x0 + 0.4, 2.0),
    ];
    let door = [
        p(x0 + 2.4, 0.0),
        p(x0 + 3.2, 0.0),
        p(x0 + 3.2, 2.1),
        p(x0 + 2.4, 2.1),
    ];
    let ac = [
        p(x1 - 0.9, 2.05),
        p(x1 - 0.2, 2.05),
        p(x1 - 0.2, 2.6),
        p(x1 - 0.9, 2.6),
    ];
    let s = view.ppm(kiosk_row);
    let mut c = b.canvas(region::OBJECT, kiosk_row);
    c.polygon(&front, wall);
    c.polygon(&roof, cond.surface(10.0, 1.0, 3.5));
    c.polygon(&window, lerp(wall, cond.sky_horizon_c, 0.4));
    c.polygon(&door, wall - 1.0);
    c.polygon(&ac, cond.air_c + 12.0);
    let (ax, ay) = p(x1 - 0.55, 2.33);
    c.ellipse((ax, ay), 0.2 * s, 0.2 * s, cond.air_c + 18.0);
}

/// Boats moored in front of the quay wall: lateral extent (metres) and waterline row.
const MOORED: [(f32, f32, f32); 2] = [(-14.5, -8.0, 0.606), (-6.8, -3.0, 0.59)];

/// Two boats moored in front of the quay wall on the left.
fn moored_boats(b: &mut Builder<'_>, engine_running: bool) {
    let (view, cond) = (b.view, *b.cond);
    // Glossy gelcoat reflects the sky, so hulls look colder than the stone behind them.
    let hull_c = lerp(cond.surface(6.0, 1.0, 2.5), cond.sky_horizon_c, 0.3);
    let cabin_c = cond.surface(5.0, 1.0, 1.0) + 1.5;
    let glass = lerp(cabin_c, cond.sky_horizon_c, 0.4);
    let metal = cond.metal();
    for (i, (x0, x1, row)) in MOORED.into_iter().enumerate() {
        let s = view.ppm(row);
        let p = |u: f32, v: f32| up(&view, u, row, v);
        let hull = [
            p(x0, 0.0),
            p(x1 - 1.3, 0.0),
            p(x1, 1.15),
            p(x0 + 0.15, 1.15),
        ];
        let band = [
            p(x0, 0.0),
            p(x1 - 1.3, 0.0),
            p(x1 - 1.05, 0.25),
            p(x0 + 0.05, 0.25),
        ];
        let cab_len = (x1 - x0) * 0.45;
        let cabin = [
            p(x0 + 1.0, 1.15),
            p(x0 + 1.0 + cab_len, 1.15),
            p(x0 + 0.8 + cab_len, 2.1),
            p(x0 + 1.2, 2.1),
        ];
        let win = [
            p(x0 + 1.4, 1.45),
            p(x0 + 0.6 + cab_len, 1.45),
            p(x0 + 0.6 + cab_len, 1.8),
            p(x0 + 1.4, 1.8),
        ];
        let mut c = b.canvas(region::OBJECT, row);
        c.polygon(&hull, hull_c);
        c.polygon(&band, cond.water_c - 0.5);
        c.capsule(p(x0 + 0.15, 1.15), p(x1, 1.15), 0.06 * s, hull_c + 2.0);
        c.polygon(&cabin, cabin_c);
        c.polygon(&win, glass);
        if i == 0 {
            c.capsule(
                p(x0 + 0.55 * (x1 - x0), 2.1),
                p(x0 + 0.55 * (x1 - x0), 9.0),
                0.06 * s,
                metal,
            );
        } else if engine_running {
            let (ex, ey) = p(x0 + 0.1, 0.5);
            c.ellipse((ex, ey), 0.22 * s, 0.18 * s, cond.air_c + 28.0);
        }
    }
    if engine_running {
        let (x0, _, row) = MOORED[1];
        let (ex, ey) = up(&view, x0 - 0.1, row, 0.6);
        let s = view.ppm(row);
        Canvas::plain(b.w, b.h, &mut b.base).glow(
            (ex - 0.4 * s, ey - 0.3 * s),
            0.9 * s,
            0.5 * s,
            4.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(hour: f32, seed: u64) -> SceneConditions {
        SceneConditions::sample(hour, &mut Rng::new(seed))
    }

    #[test]
    fn perspective_round_trips() {
        let v = View::new(384, 288);
        for yn in [0.3f32, 0.5, 0.8] {
            assert!((v.row_at_depth(v.depth(yn)) - yn).abs() < 1e-5);
            let (x, _) = v.px(3.0, yn);
            assert!((v.x_m(x, yn) - 3.0).abs() < 1e-4);
        }
        assert!(v.ppm(0.8) > v.ppm(0.4), "nearer rows are larger");
        assert!(
            v.row_towards(0.5, 2.0) > 0.5,
            "towards the camera is further down"
        );
    }

    #[test]
    fn days_are_warmer_than_nights_and_quay_warms_in_sun() {
        let (mut day, mut night) = (0.0, 0.0);
        for s in 0..20 {
            let d = cond(14.0, s);
            let n = cond(3.0, s);
            day += d.surface(9.0, 3.0, 2.2) - d.air_c;
            night += n.surface(9.0, 3.0, 2.2) - n.air_c;
            assert!(n.lights_on && !d.lights_on);
            assert!(n.sky_zenith_c < n.air_c - 5.0);
        }
        assert!(day > 20.0 * 3.0 && night < 0.0, "day {day} night {night}");
    }

    #[test]
    fn static_scene_has_all_regions_in_order() {
        let view = View::new(192, 144);
        let c = cond(12.0, 1);
        let s = StaticScene::build(&Site::new(0), view, &c, &mut Rng::new(2));
        let col = 40;
        let at = |yn: f32| s.region[(yn * view.h) as usize * 192 + col];
        assert_eq!(at(0.01), region::SKY);
        assert_eq!(at(0.31), region::ROAD);
        assert_eq!(at(0.45), region::QUAY);
        assert_eq!(at(0.95), region::WATER);
        let (px, _) = view.px(5.75, 0.8);
        assert_eq!(
            s.region[(0.8 * view.h) as usize * 192 + px as usize],
            region::PIER
        );
        assert!(s.base.iter().all(|t| (-45.0..80.0).contains(t)));
        let mut out = vec![0.0; s.base.len()];
        let sin = SinTable::new();
        s.render_into(&mut out, 3.0, 0.0, &sin);
        let moved = s
            .water
            .iter()
            .filter(|p| out[p.idx as usize] != s.base[p.idx as usize])
            .count();
        assert!(moved > s.water.len() / 2, "waves move the water");
    }
}
