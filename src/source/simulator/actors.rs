//! Moving things (people, cyclists, dogs, cars, trucks, boats): the paths of normal activity and
//! of each anomaly, and how each is drawn.
//!
//! A path is a list of timed waypoints; the waypoint that starts a segment says what the actor
//! does on it and whether that is anomalous (`flag` = event index). An anomalous person walks
//! up like anyone else; only the frames of the anomalous behaviour itself are flagged, so the
//! labels cover exactly what an observer would call the event.

use super::draw::Canvas;
use super::rng::{hash_unit, lerp, Rng, SinTable};
use super::scene::{
    SceneConditions, View, BENCHES, BENCH_ROW, BOAT_ROWS, EDGE_SPOTS, LADDER_X, LANE,
    PIER_LADDER_ROW, PIER_TIP, PIER_X, QUAY_EDGE, WALK_ROWS, ZONE_START,
};
use super::AnomalyKind;

/// What an actor is doing on a path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Walk,
    Run,
    Stand,
    Sit,
    BenchSit,
    Jump,
    Dive,
    Splash,
    Swim,
    Climb,
    Ride,
    Drive,
}

/// A timed point of a path; it also sets what happens until the next waypoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waypoint {
    t: f32,
    x: f32,
    yn: f32,
    act: Act,
    flag: Option<usize>,
    dir: f32,
    dist: f32,
}

/// How a person looks in the thermal image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PersonLook {
    height: f32,
    build: f32,
    head_c: f32,
    cloth_c: f32,
    legs_c: f32,
    /// From this time on the clothes are wet (after a swim) and cold.
    wet_from: f32,
}

/// How a road or quay vehicle looks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VehicleLook {
    length: f32,
    height: f32,
    body_c: f32,
    engine_c: f32,
    tire_c: f32,
    exhaust_c: f32,
    glass_c: f32,
    cargo_c: f32,
    /// +1: front towards +x (the allowed driving direction), −1: front towards −x.
    face: f32,
    van: bool,
}

/// How a passing boat looks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoatLook {
    length: f32,
    hull_c: f32,
    cabin_c: f32,
    engine_c: f32,
    glass_c: f32,
    cabin: bool,
}

/// What an actor is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    Person(PersonLook),
    Cyclist(PersonLook),
    Dog { body_c: f32, size: f32 },
    Car(VehicleLook),
    Truck(VehicleLook),
    Boat(BoatLook),
}

/// Something that moves through the scene along a path.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub(crate) body: Body,
    path: Vec<Waypoint>,
    seed: u64,
}

/// Where an actor is and what it does at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pose {
    pub x: f32,
    pub yn: f32,
    pub act: Act,
    pub flag: Option<usize>,
    pub dir: f32,
    /// Fraction of the current segment done.
    pub u: f32,
    /// Metres walked so far (drives the gait).
    pub dist: f32,
    pub t: f32,
}

impl Actor {
    /// Pose at time `t` (seconds from the clip start); `None` before the path starts or after it ends.
    pub(crate) fn pose_at(&self, t: f32, view: &View) -> Option<Pose> {
        let p = &self.path;
        let (first, last) = (p.first()?, p.last()?);
        if t < first.t || t > last.t {
            return None;
        }
        let i = p
            .partition_point(|w| w.t <= t)
            .saturating_sub(1)
            .min(p.len().saturating_sub(2));
        let a = p[i];
        let b = *p.get(i + 1).unwrap_or(&a);
        let u = if b.t > a.t {
            ((t - a.t) / (b.t - a.t)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let d = lerp(view.depth(a.yn), view.depth(b.yn), u);
        Some(Pose {
            x: lerp(a.x, b.x, u),
            yn: view.row_at_depth(d),
            act: a.act,
            flag: a.flag,
            dir: a.dir,
            u,
            dist: lerp(a.dist, b.dist, u),
            t,
        })
    }

    /// Whether any part of the path is flagged as anomalous.
    #[cfg(test)]
    pub(crate) fn is_anomalous(&self) -> bool {
        self.path.iter().any(|w| w.flag.is_some())
    }

    /// Vehicle facing (+1 allowed direction) for cars and trucks; `None` for others.
    #[cfg(test)]
    pub(crate) fn vehicle_face(&self) -> Option<f32> {
        match self.body {
            Body::Car(v) | Body::Truck(v) => Some(v.face),
            _ => None,
        }
    }

    /// Net lateral displacement (metres) while visible between `t0` and `t1`.
    #[cfg(test)]
    pub(crate) fn displacement(&self, t0: f32, t1: f32, view: &View) -> Option<f32> {
        let a = self.pose_at(t0.max(self.path.first()?.t), view)?;
        let b = self.pose_at(t1.min(self.path.last()?.t), view)?;
        Some(b.x - a.x)
    }
}

/// Builds a path waypoint by waypoint at given speeds.
struct PathBuilder {
    view: View,
    pts: Vec<Waypoint>,
}

impl PathBuilder {
    fn new(view: View, t: f32, x: f32, yn: f32, act: Act, flag: Option<usize>, dir: f32) -> Self {
        Self {
            view,
            pts: vec![Waypoint {
                t,
                x,
                yn,
                act,
                flag,
                dir,
                dist: 0.0,
            }],
        }
    }

    fn last(&self) -> Waypoint {
        *self.pts.last().expect("paths start with a waypoint")
    }

    /// Moves to (`x`, `yn`) at `speed` m/s doing the current activity; then does `then`.
    fn to(&mut self, x: f32, yn: f32, speed: f32, then: Act, flag: Option<usize>) -> &mut Self {
        let a = self.last();
        let dx = x - a.x;
        let dd = self.view.depth(yn) - self.view.depth(a.yn);
        let dist = (dx * dx + dd * dd).sqrt();
        let dir = if dx.abs() > 0.05 { dx.signum() } else { a.dir };
        self.pts.last_mut().expect("non-empty").dir = dir;
        let t = a.t + dist / speed.max(0.05);
        self.pts.push(Waypoint {
            t,
            x,
            yn,
            act: then,
            flag,
            dir,
            dist: a.dist + dist,
        });
        self
    }

    /// Keeps doing the current activity in place for `secs`; then does `then`.
    fn hold(&mut self, secs: f32, then: Act, flag: Option<usize>) -> &mut Self {
        let a = self.last();
        self.pts.push(Waypoint {
            t: a.t + secs.max(0.0),
            act: then,
            flag,
            ..a
        });
        self
    }

    /// Jumps (teleports) to a new spot at the same time, e.g. from the top of a ladder onto the quay.
    fn place(&mut self, x: f32, yn: f32, then: Act, flag: Option<usize>) -> &mut Self {
        let a = self.last();
        self.pts.push(Waypoint {
            t: a.t + 1e-3,
            x,
            yn,
            act: then,
            flag,
            ..a
        });
        self
    }

    /// Time of the last waypoint.
    fn end(&self) -> f32 {
        self.last().t
    }

    fn shift(&mut self, dt: f32) {
        self.pts.iter_mut().for_each(|w| w.t += dt);
    }

    fn build(self, body: Body, seed: u64) -> Actor {
        Actor {
            body,
            path: self.pts,
            seed,
        }
    }
}

fn person_look(rng: &mut Rng, cond: &SceneConditions) -> PersonLook {
    let cloth = cond.clothing() + rng.range(-2.0, 2.0);
    PersonLook {
        height: (1.73 + 0.09 * rng.normal()).clamp(1.5, 1.98),
        build: rng.range(0.85, 1.2),
        head_c: rng.range(30.5, 33.5) - 0.08 * (15.0 - cond.air_c).max(0.0),
        cloth_c: cloth,
        legs_c: cloth - rng.range(0.0, 2.0),
        wet_from: f32::INFINITY,
    }
}

fn vehicle_look(rng: &mut Rng, cond: &SceneConditions, face: f32, van: bool) -> VehicleLook {
    let (length, height) = if van {
        (rng.range(4.8, 5.6), rng.range(1.9, 2.3))
    } else {
        (rng.range(4.0, 4.9), rng.range(1.4, 1.55))
    };
    VehicleLook {
        length,
        height,
        body_c: cond.air_c + 1.5 + cond.sun * rng.range(3.0, 10.0),
        engine_c: cond.air_c + rng.range(18.0, 32.0),
        tire_c: cond.air_c + rng.range(6.0, 14.0),
        exhaust_c: cond.air_c + rng.range(25.0, 45.0),
        glass_c: cond.glass(),
        cargo_c: cond.air_c + 1.0 + cond.sun * rng.range(3.0, 9.0),
        face,
        van,
    }
}

fn truck_look(rng: &mut Rng, cond: &SceneConditions, face: f32) -> VehicleLook {
    VehicleLook {
        length: rng.range(7.0, 9.0),
        height: rng.range(3.0, 3.4),
        body_c: cond.air_c + 4.0 + cond.sun * rng.range(3.0, 7.0),
        engine_c: cond.air_c + rng.range(32.0, 45.0),
        tire_c: cond.air_c + rng.range(10.0, 18.0),
        exhaust_c: cond.air_c + rng.range(45.0, 70.0),
        glass_c: cond.glass(),
        cargo_c: cond.air_c + 1.0 + cond.sun * rng.range(4.0, 10.0),
        face,
        van: false,
    }
}

/// Visible lateral range at row `yn`, with `m` metres to spare for the actor's own size.
fn edges(view: &View, yn: f32, m: f32) -> (f32, f32) {
    view.visible_x(yn, m)
}

/// Generates one clip's normal activity over `frames` seconds (plus a lead-in, so the quay is
/// already busy at the first frame).
pub(crate) fn normal_activity(
    view: &View,
    cond: &SceneConditions,
    rng: &mut Rng,
    frames: usize,
    density: f32,
) -> Vec<Actor> {
    let mut out = Vec::new();
    let lead = -75.0;
    let end = frames as f32 + 2.0;
    let a = cond.activity * density;

    let mut t = lead + rng.exp_interval((0.02 + 0.13 * a).max(1e-3));
    while t < end {
        walkers(&mut out, view, cond, rng, t);
        t += rng.exp_interval(0.02 + 0.13 * a);
    }

    let mut t = lead + rng.exp_interval(0.004 + 0.025 * a);
    while t < end {
        let dir = rng.sign();
        let yn = rng.range(WALK_ROWS.0 + 0.01, WALK_ROWS.1 - 0.01);
        let (l, r) = edges(view, yn, 1.2);
        let (x0, x1) = if dir > 0.0 { (l, r) } else { (r, l) };
        let mut p = PathBuilder::new(*view, t, x0, yn, Act::Ride, None, dir);
        p.to(
            x1,
            yn + rng.range(-0.01, 0.01),
            rng.range(2.8, 4.2),
            Act::Ride,
            None,
        );
        out.push(p.build(Body::Cyclist(person_look(rng, cond)), rng.next_u64()));
        t += rng.exp_interval(0.004 + 0.025 * a);
    }

    if rng.chance((0.2 + 0.4 * a).min(0.75)) {
        standing_group(&mut out, view, cond, rng, frames);
    }
    let visitors = (0..2)
        .filter(|_| rng.chance((0.15 + 0.35 * a) * (frames as f32 / 120.0).min(1.5)))
        .count();
    for _ in 0..visitors {
        pier_visitor(&mut out, view, cond, rng, frames);
    }

    // Road traffic: one lane, always towards +x; a follower never overtakes.
    let mut t = lead + rng.exp_interval(0.012 + 0.07 * a);
    let mut last_exit = f32::MIN;
    while t < end {
        let kind = rng.weighted(&[0.8, 0.15, 0.05]);
        let look = if kind == 2 {
            truck_look(rng, cond, 1.0)
        } else {
            vehicle_look(rng, cond, 1.0, kind == 1)
        };
        let yn = LANE + rng.range(-0.003, 0.003);
        let (l, r) = edges(view, yn, look.length * 0.5 + 0.5);
        let mut speed = if rng.chance(0.3) {
            rng.range(4.0, 6.0)
        } else {
            rng.range(6.0, 11.0)
        };
        let exit = t + (r - l) / speed;
        if exit < last_exit + 1.5 {
            speed = (r - l) / (last_exit + 1.5 - t).max(1.0);
        }
        last_exit = t + (r - l) / speed;
        let mut p = PathBuilder::new(*view, t, l, yn, Act::Drive, None, 1.0);
        p.to(r, yn, speed, Act::Drive, None);
        let body = if kind == 2 {
            Body::Truck(look)
        } else {
            Body::Car(look)
        };
        out.push(p.build(body, rng.next_u64()));
        t += rng.exp_interval(0.012 + 0.07 * a).max(1.5);
    }

    if rng.chance((0.15 + 0.25 * a).min(0.5)) {
        let dir = rng.sign();
        let yn = rng.range(BOAT_ROWS.0, BOAT_ROWS.1);
        let look = BoatLook {
            length: rng.range(5.0, 9.0),
            hull_c: cond.surface(5.0, 0.5, 2.0),
            cabin_c: cond.surface(5.0, 0.5, 2.0) + 1.0,
            engine_c: cond.air_c + rng.range(25.0, 40.0),
            glass_c: cond.glass(),
            cabin: rng.chance(0.6),
        };
        let (l, r) = edges(view, yn, look.length * 0.5 + 3.0);
        let (x0, x1) = if dir > 0.0 { (l, r) } else { (r, l) };
        let mut p = PathBuilder::new(
            *view,
            rng.range(-20.0, frames as f32),
            x0,
            yn,
            Act::Drive,
            None,
            dir,
        );
        p.to(x1, yn, rng.range(2.0, 4.0), Act::Drive, None);
        out.push(p.build(Body::Boat(look), rng.next_u64()));
    }
    out
}

/// One pedestrian arrival: a single walker or a small group, maybe with a dog, maybe stopping
/// to look at the water or to sit on a bench.
fn walkers(out: &mut Vec<Actor>, view: &View, cond: &SceneConditions, rng: &mut Rng, t: f32) {
    let group = 1 + rng.weighted(&[0.7, 0.25, 0.05]);
    let dir = rng.sign();
    let speed = (1.3 + 0.15 * rng.normal()).clamp(0.85, 1.75);
    let yn = rng.range(WALK_ROWS.0, WALK_ROWS.1 - 0.012 * group as f32);
    let yn_end =
        (yn + rng.range(-0.015, 0.015)).clamp(WALK_ROWS.0, WALK_ROWS.1 - 0.012 * group as f32);
    let stop = if rng.chance(0.15) {
        Some((rng.range(0.25, 0.75), rng.range(4.0, 25.0)))
    } else {
        None
    };
    let bench = group == 1 && stop.is_none() && rng.chance(0.08 * cond.daylight);
    let dog = rng.chance(0.08);
    for k in 0..group {
        let row = yn + 0.012 * k as f32;
        let row_end = yn_end + 0.012 * k as f32;
        let (l, r) = edges(view, row.max(row_end), 0.8);
        let (x0, x1) = if dir > 0.0 { (l, r) } else { (r, l) };
        let lag = 0.35 * k as f32 / speed;
        let mut p = PathBuilder::new(*view, t + lag, x0, row, Act::Walk, None, dir);
        if bench {
            let bx = BENCHES[rng.below(BENCHES.len())] + rng.range(-0.5, 0.5);
            let seat = BENCH_ROW + 0.002;
            p.to(bx, seat, speed, Act::BenchSit, None)
                .hold(rng.range(10.0, 90.0), Act::Walk, None);
        } else if let Some((f, dur)) = stop {
            let xs = lerp(x0, x1, f);
            let rs = lerp(row, row_end, f);
            p.to(xs, rs, speed, Act::Stand, None)
                .hold(dur, Act::Walk, None);
        }
        p.to(x1, row_end, speed, Act::Walk, None);
        let look = person_look(rng, cond);
        if dog && k == 0 {
            let mut d = PathBuilder::new(
                *view,
                t + lag - 0.6 / speed,
                x0,
                row + 0.006,
                Act::Walk,
                None,
                dir,
            );
            for w in p.pts.iter().skip(1) {
                let ahead = if w.act == Act::Walk || w.act == Act::Run {
                    0.0
                } else {
                    0.6 * dir
                };
                d.to(
                    w.x + ahead,
                    w.yn + 0.006,
                    speed,
                    if w.act == Act::Walk {
                        Act::Walk
                    } else {
                        Act::Stand
                    },
                    None,
                );
                let gap = w.t - d.end();
                if gap > 0.0 {
                    d.hold(gap, w.act, None);
                }
            }
            let size = rng.range(0.7, 1.2);
            out.push(d.build(
                Body::Dog {
                    body_c: rng.range(26.0, 29.0),
                    size,
                },
                rng.next_u64(),
            ));
        }
        out.push(p.build(Body::Person(look), rng.next_u64()));
    }
}

/// People standing and talking somewhere on the quay for a while.
fn standing_group(
    out: &mut Vec<Actor>,
    view: &View,
    cond: &SceneConditions,
    rng: &mut Rng,
    frames: usize,
) {
    let n = 1 + rng.weighted(&[0.35, 0.45, 0.2]);
    let yn = rng.range(WALK_ROWS.0 + 0.02, WALK_ROWS.1 - 0.03);
    let (l, r) = edges(view, yn, -2.0);
    let xs = rng.range(l, r);
    let arrive = rng.range(-200.0, frames as f32 * 0.6);
    let stay = rng.range(20.0, 220.0);
    for k in 0..n {
        let dir_in = rng.sign();
        let (el, er) = edges(view, yn, 1.0);
        let x0 = if dir_in > 0.0 { el } else { er };
        let spot = (
            xs + 0.6 * k as f32 - 0.3 * n as f32,
            yn + 0.008 * (k % 2) as f32,
        );
        let speed = rng.range(1.0, 1.5);
        let mut p = PathBuilder::new(*view, 0.0, x0, spot.1, Act::Walk, None, dir_in);
        p.to(spot.0, spot.1, speed, Act::Stand, None);
        let at = p.end();
        p.shift(arrive - at + rng.range(-4.0, 4.0));
        p.hold(stay + rng.range(-5.0, 5.0), Act::Walk, None);
        let x1 = if rng.chance(0.5) { el } else { er };
        p.to(x1, spot.1, speed, Act::Walk, None);
        out.push(p.build(Body::Person(person_look(rng, cond)), rng.next_u64()));
    }
}

/// Walks along the quay and onto the pier up to (not past) the barrier, looks out, comes back.
fn pier_visitor(
    out: &mut Vec<Actor>,
    view: &View,
    cond: &SceneConditions,
    rng: &mut Rng,
    frames: usize,
) {
    let quay_row = rng.range(0.47, 0.52);
    let (l, r) = edges(view, quay_row, 0.8);
    let from_left = rng.chance(0.5);
    let x0 = if from_left { l } else { r };
    let xp = rng.range(PIER_X.0 + 0.7, PIER_X.1 - 0.7);
    let root = QUAY_EDGE - 0.004;
    let stop_row = rng.range(0.59, ZONE_START - 0.016);
    let speed = rng.range(1.0, 1.5);
    let mut p = PathBuilder::new(
        *view,
        0.0,
        x0,
        quay_row,
        Act::Walk,
        None,
        if from_left { 1.0 } else { -1.0 },
    );
    p.to(xp, root, speed, Act::Walk, None).to(
        xp + rng.range(-0.4, 0.4),
        stop_row,
        speed,
        Act::Stand,
        None,
    );
    p.hold(rng.range(5.0, 40.0), Act::Walk, None);
    p.to(xp, root, speed, Act::Walk, None);
    let x1 = if rng.chance(0.5) { l } else { r };
    p.to(x1, quay_row, speed, Act::Walk, None);
    let mid = p.pts[2].t;
    p.shift(rng.range(-30.0, frames as f32) - mid);
    out.push(p.build(Body::Person(person_look(rng, cond)), rng.next_u64()));
}

/// Generates the actors of one anomaly whose anomalous part starts at `ts` seconds; returns
/// them with a short variant name for the manifest.
pub(crate) fn anomaly(
    kind: AnomalyKind,
    event: usize,
    ts: f32,
    view: &View,
    cond: &SceneConditions,
    rng: &mut Rng,
) -> (Vec<Actor>, &'static str) {
    let flag = Some(event);
    match kind {
        AnomalyKind::RestrictedZone => {
            let xp = rng.range(PIER_X.0 + 0.8, PIER_X.1 - 0.8);
            let quay_row = rng.range(0.47, 0.52);
            let (l, r) = edges(view, quay_row, 0.8);
            let from_left = rng.chance(0.5);
            let speed = rng.range(1.0, 1.5);
            let root = QUAY_EDGE - 0.004;
            let mut p = PathBuilder::new(
                *view,
                0.0,
                if from_left { l } else { r },
                quay_row,
                Act::Walk,
                None,
                1.0,
            );
            p.to(xp, root, speed, Act::Walk, None).to(
                xp,
                ZONE_START - 0.012,
                speed,
                Act::Stand,
                None,
            );
            p.hold(rng.range(1.0, 4.0), Act::Walk, None);
            p.to(xp, ZONE_START, speed, Act::Walk, flag);
            let cross = p.end();
            let target = |rng: &mut Rng| {
                (
                    rng.range(PIER_X.0 + 0.5, PIER_X.1 - 0.5),
                    rng.range(0.76, PIER_TIP - 0.015),
                )
            };
            let (tx, ty) = target(rng);
            let dwell = rng.range(8.0, 35.0);
            let variant = match rng.weighted(&[0.4, 0.35, 0.25]) {
                0 => {
                    p.to(tx, ty, speed, Act::Stand, flag)
                        .hold(dwell, Act::Walk, flag);
                    "stand"
                }
                1 => {
                    p.to(tx, ty, speed, Act::Sit, flag)
                        .hold(dwell, Act::Walk, flag);
                    "sit"
                }
                _ => {
                    p.to(tx, ty, 0.7, Act::Stand, flag)
                        .hold(dwell * 0.3, Act::Walk, flag);
                    let (ux, uy) = target(rng);
                    p.to(ux, uy, 0.7, Act::Stand, flag)
                        .hold(dwell * 0.3, Act::Walk, flag);
                    "wander"
                }
            };
            let back = xp + rng.range(-0.4, 0.4);
            p.to(back, ZONE_START, speed, Act::Walk, None)
                .to(back, root, speed, Act::Walk, None);
            let x1 = if rng.chance(0.5) { l } else { r };
            p.to(x1, quay_row, speed, Act::Walk, None);
            p.shift(ts - cross);
            (
                vec![p.build(Body::Person(person_look(rng, cond)), rng.next_u64())],
                variant,
            )
        }
        AnomalyKind::Jumping => {
            let on_pier = rng.chance(0.35);
            let (jx, jy) = if on_pier {
                (PIER_X.0 + 0.35, rng.range(0.58, 0.67))
            } else {
                (rng.range(EDGE_SPOTS.0, EDGE_SPOTS.1), QUAY_EDGE - 0.006)
            };
            let quay_row = rng.range(0.46, 0.5);
            let (l, r) = edges(view, quay_row, 0.8);
            let from_left = rng.chance(0.5);
            let speed = rng.range(1.0, 1.5);
            let mut p = PathBuilder::new(
                *view,
                0.0,
                if from_left { l } else { r },
                quay_row,
                Act::Walk,
                None,
                1.0,
            );
            if on_pier {
                p.to(PIER_X.0 + 0.6, QUAY_EDGE - 0.004, speed, Act::Walk, None);
            }
            p.to(jx, jy, speed, Act::Jump, flag);
            let start = p.end();
            p.hold(rng.range(6.0, 14.0), Act::Jump, flag);
            let mut look = person_look(rng, cond);
            let variant = if rng.chance(0.7) {
                let (lx, ly) = if on_pier {
                    (PIER_X.0 - 1.8, jy)
                } else {
                    (jx - 0.3, view.row_towards(QUAY_EDGE, 2.2))
                };
                p.pts.last_mut().expect("non-empty").act = Act::Dive;
                p.to(lx, ly, 2.5, Act::Splash, flag);
                look.wet_from = p.end() - start + ts;
                p.hold(2.0, Act::Swim, flag);
                let (ladder_x, ladder_row) = if on_pier {
                    (PIER_X.0 - 0.45, PIER_LADDER_ROW)
                } else {
                    (LADDER_X, view.row_towards(QUAY_EDGE, 0.45))
                };
                let swim = rng.range(0.5, 0.85);
                if rng.chance(0.5) {
                    p.to(
                        lx + rng.range(-3.0, -1.0),
                        view.row_towards(ly, rng.range(0.5, 2.0)),
                        swim,
                        Act::Swim,
                        flag,
                    );
                }
                p.to(ladder_x, ladder_row, swim, Act::Climb, flag)
                    .hold(2.5, Act::Walk, None);
                let (sx, sy) = if on_pier {
                    (PIER_X.0 + 0.35, PIER_LADDER_ROW)
                } else {
                    (LADDER_X, QUAY_EDGE - 0.006)
                };
                p.place(sx, sy, Act::Walk, None);
                if on_pier {
                    p.to(PIER_X.0 + 0.6, QUAY_EDGE - 0.004, speed, Act::Walk, None);
                }
                "into-water"
            } else {
                p.pts.last_mut().expect("non-empty").act = Act::Jump;
                p.hold(0.0, Act::Walk, None);
                "on-the-spot"
            };
            let x1 = if rng.chance(0.5) { l } else { r };
            p.to(x1, quay_row, speed, Act::Walk, None);
            p.shift(ts - start);
            (vec![p.build(Body::Person(look), rng.next_u64())], variant)
        }
        AnomalyKind::CarReversing => {
            let yn = LANE + rng.range(-0.002, 0.002);
            if rng.chance(0.5) {
                let van = rng.chance(0.2);
                let look = vehicle_look(rng, cond, 1.0, van);
                let (l, r) = edges(view, yn, look.length * 0.5);
                let mut p = PathBuilder::new(*view, ts, r - 0.3, yn, Act::Drive, flag, -1.0);
                let stop_x = lerp(r, l, rng.range(0.3, 0.75));
                p.to(stop_x, yn, rng.range(1.5, 3.0), Act::Drive, flag);
                p.hold(rng.range(2.0, 5.0), Act::Drive, None);
                p.to(r + 1.0, yn, rng.range(5.0, 8.0), Act::Drive, None);
                (vec![p.build(Body::Car(look), rng.next_u64())], "reversing")
            } else {
                let van = rng.chance(0.2);
                let look = vehicle_look(rng, cond, -1.0, van);
                let (l, r) = edges(view, yn, look.length * 0.5);
                let mut p = PathBuilder::new(*view, ts, r - 0.3, yn, Act::Drive, flag, -1.0);
                p.to(l, yn, rng.range(5.0, 9.0), Act::Drive, flag);
                (vec![p.build(Body::Car(look), rng.next_u64())], "wrong-way")
            }
        }
        AnomalyKind::TruckOnQuay => {
            let dir = rng.sign();
            let yn = rng.range(0.43, 0.5);
            let look = truck_look(rng, cond, dir);
            let (l, r) = edges(view, yn, look.length * 0.5);
            let (x0, x1) = if dir > 0.0 {
                (l + 0.3, r)
            } else {
                (r - 0.3, l)
            };
            let speed = rng.range(1.5, 3.5);
            let mut p = PathBuilder::new(*view, ts, x0, yn, Act::Drive, flag, dir);
            let variant = if rng.chance(0.55) {
                let xs = lerp(x0, x1, rng.range(0.35, 0.65));
                p.to(xs, yn, speed, Act::Drive, flag)
                    .hold(rng.range(6.0, 20.0), Act::Drive, flag);
                "delivery-stop"
            } else {
                "drive-through"
            };
            p.to(x1, yn, speed, Act::Drive, flag);
            (vec![p.build(Body::Truck(look), rng.next_u64())], variant)
        }
        AnomalyKind::Running => {
            let n = 1 + rng.weighted(&[0.3, 0.45, 0.25]);
            let dir = rng.sign();
            let row0 = rng.range(WALK_ROWS.0 + 0.01, WALK_ROWS.1 - 0.03);
            let row1 = (row0 + rng.range(-0.06, 0.06)).clamp(WALK_ROWS.0, WALK_ROWS.1 - 0.02);
            let speed = rng.range(5.2, 7.0);
            let mut delay = 0.0;
            let mut out = Vec::new();
            for k in 0..n {
                let off = if k == 0 {
                    0.0
                } else {
                    rng.range(-0.015, 0.015)
                };
                let (l, r) = edges(view, row0.max(row1) + off, 0.6);
                let (x0, x1) = if dir > 0.0 {
                    (l + 0.8, r)
                } else {
                    (r - 0.8, l)
                };
                let mut p =
                    PathBuilder::new(*view, ts + delay, x0, row0 + off, Act::Run, flag, dir);
                p.to(x1, row1 + off, speed + rng.range(-0.3, 0.3), Act::Run, flag);
                out.push(p.build(Body::Person(person_look(rng, cond)), rng.next_u64()));
                delay += rng.range(0.8, 2.5);
            }
            (out, if n == 1 { "single" } else { "chase" })
        }
    }
}

/// Maps body coordinates (metres: `u` forward, `v` up) to pixels.
#[derive(Clone, Copy)]
struct Frame {
    fx: f32,
    fy: f32,
    s: f32,
    dir: f32,
}

impl Frame {
    fn p(&self, u: f32, v: f32) -> (f32, f32) {
        (self.fx + u * self.s * self.dir, self.fy - v * self.s)
    }
}

/// A stick figure in metres for a 1.75 m person.
struct Skeleton {
    hip: (f32, f32),
    neck: (f32, f32),
    head: (f32, f32),
    knees: [(f32, f32); 2],
    feet: [(f32, f32); 2],
    elbows: [(f32, f32); 2],
    hands: [(f32, f32); 2],
}

fn standing() -> Skeleton {
    Skeleton {
        hip: (0.0, 0.92),
        neck: (0.0, 1.45),
        head: (0.0, 1.63),
        knees: [(0.03, 0.5), (-0.03, 0.5)],
        feet: [(0.08, 0.04), (-0.08, 0.04)],
        elbows: [(0.05, 1.15), (-0.05, 1.15)],
        hands: [(0.07, 0.87), (-0.07, 0.87)],
    }
}

fn skeleton(act: Act, pose: &Pose, seed: u64) -> Skeleton {
    let gait =
        |stride: f32| super::rng::sin(std::f64::consts::TAU * f64::from(pose.dist / stride)) as f32;
    let hop = |t: f32| {
        let h = hash_unit(seed, t.round() as i64, 3);
        if h < 0.25 {
            0.0
        } else {
            0.2 + 0.45 * hash_unit(seed, t.round() as i64, 4)
        }
    };
    let mut s = standing();
    match act {
        Act::Walk => {
            let sw = gait(1.5);
            s.feet = [(0.3 * sw, 0.04), (-0.3 * sw, 0.04 + 0.06 * sw.abs())];
            s.knees = [(0.17 * sw + 0.04, 0.5), (-0.15 * sw + 0.04, 0.5)];
            s.hands = [(-0.22 * sw, 0.88), (0.22 * sw, 0.88)];
            s.elbows = [(-0.1 * sw, 1.15), (0.1 * sw, 1.15)];
        }
        Act::Run => {
            let sw = gait(3.2);
            let a = 0.6 + 0.4 * sw.abs();
            s.hip = (0.0, 0.98);
            s.neck = (0.2, 1.47);
            s.head = (0.26, 1.64);
            s.knees = [(0.38 * a, 0.68), (-0.12 * a, 0.48)];
            s.feet = [(0.32 * a, 0.2), (-0.55 * a, 0.42)];
            s.elbows = [(0.28, 1.2), (-0.22, 1.12)];
            s.hands = [(0.38, 1.4), (-0.3, 0.95)];
        }
        Act::Jump => {
            let h = hop(pose.t);
            if h > 0.0 {
                s.hip = (0.0, 0.95 + h);
                s.neck = (0.0, 1.47 + h);
                s.head = (0.0, 1.65 + h);
                s.knees = [(0.18, 0.52 + h), (-0.18, 0.52 + h)];
                s.feet = [(0.3, 0.08 + h), (-0.3, 0.08 + h)];
                s.elbows = [(0.26, 1.72 + h), (-0.26, 1.72 + h)];
                s.hands = [(0.32, 2.08 + h), (-0.32, 2.08 + h)];
            } else {
                s.hip = (-0.12, 0.62);
                s.neck = (0.12, 1.12);
                s.head = (0.18, 1.3);
                s.knees = [(0.28, 0.5), (0.22, 0.48)];
                s.feet = [(0.05, 0.03), (-0.02, 0.03)];
                s.elbows = [(-0.15, 0.85), (-0.1, 0.9)];
                s.hands = [(-0.38, 0.7), (-0.34, 0.72)];
            }
        }
        Act::Sit | Act::BenchSit => {
            let seat = if act == Act::BenchSit { 0.45 } else { 0.05 };
            s.hip = (0.0, seat + 0.05);
            s.knees = [(0.45, seat + 0.12), (0.42, seat + 0.1)];
            s.feet = [
                (0.55, (seat - 0.4).max(0.03)),
                (0.5, (seat - 0.4).max(0.03)),
            ];
            s.neck = (-0.05, seat + 0.6);
            s.head = (-0.03, seat + 0.78);
            s.elbows = [(0.05, seat + 0.3), (0.0, seat + 0.3)];
            s.hands = [(0.3, seat + 0.15), (0.26, seat + 0.15)];
        }
        Act::Climb => {
            let off = -1.0 + 0.9 * pose.u;
            s.hip.1 += off;
            s.neck.1 += off;
            s.head.1 += off;
            for i in 0..2 {
                s.knees[i] = (0.1, 0.55 + off);
                s.feet[i] = (0.05, 0.08 + off + 0.25 * i as f32);
                s.elbows[i] = (0.15, 1.6 + off);
                s.hands[i] = (0.25, (2.0 + off).min(1.0 + 0.06 * i as f32).max(1.6 + off));
            }
        }
        _ => {}
    }
    s
}

/// Draws one actor at its pose.
pub(crate) fn draw(
    c: &mut Canvas<'_>,
    view: &View,
    cond: &SceneConditions,
    sin: &SinTable,
    actor: &Actor,
    pose: &Pose,
) {
    c.set_depth(pose.yn);
    let (fx, fy) = view.px(pose.x, pose.yn);
    let ppm = view.ppm(pose.yn);
    match actor.body {
        Body::Person(look) => draw_person(c, cond, sin, actor.seed, &look, pose, fx, fy, ppm),
        Body::Cyclist(look) => draw_cyclist(
            c,
            cond,
            &look,
            pose,
            Frame {
                fx,
                fy,
                s: ppm * look.height / 1.75,
                dir: pose.dir,
            },
        ),
        Body::Dog { body_c, size } => draw_dog(
            c,
            body_c,
            pose,
            Frame {
                fx,
                fy,
                s: ppm * size,
                dir: pose.dir,
            },
        ),
        Body::Car(v) => draw_car(
            c,
            cond,
            &v,
            Frame {
                fx,
                fy,
                s: ppm,
                dir: v.face,
            },
        ),
        Body::Truck(v) => draw_truck(
            c,
            cond,
            &v,
            Frame {
                fx,
                fy,
                s: ppm,
                dir: v.face,
            },
        ),
        Body::Boat(b) => draw_boat(
            c,
            cond,
            &b,
            Frame {
                fx,
                fy,
                s: ppm,
                dir: pose.dir,
            },
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_person(
    c: &mut Canvas<'_>,
    cond: &SceneConditions,
    sin: &SinTable,
    seed: u64,
    look: &PersonLook,
    pose: &Pose,
    fx: f32,
    fy: f32,
    ppm: f32,
) {
    let k = look.height / 1.75;
    let f = Frame {
        fx,
        fy,
        s: ppm * k,
        dir: pose.dir,
    };
    let wet = pose.t >= look.wet_from;
    let (cloth, legs) = if wet {
        (cond.water_c + 5.0, cond.water_c + 4.0)
    } else {
        (look.cloth_c, look.legs_c)
    };
    let head_c = if wet { look.head_c - 1.5 } else { look.head_c };
    let skin = head_c - 2.0;
    match pose.act {
        Act::Swim | Act::Splash => {
            let water = cond.water_c;
            if pose.act == Act::Splash {
                c.glow(f.p(0.0, 0.1), 1.6 * f.s, 0.6 * f.s, 1.6);
                c.ellipse(f.p(0.0, 0.25), 0.9 * f.s, 0.35 * f.s, water + 1.2);
                c.capsule(f.p(0.15, 0.1), f.p(0.3, 0.65), 0.05 * f.s, skin);
                c.ellipse(f.p(-0.1, 0.12), 0.11 * f.s, 0.1 * f.s, head_c);
            } else {
                let ph = sin.sin_turns(pose.dist / 1.2);
                c.glow(f.p(-0.5, 0.0), 1.1 * f.s, 0.3 * f.s, 0.9);
                c.ellipse(f.p(0.0, 0.03), 0.28 * f.s, 0.07 * f.s, cloth + 2.0);
                c.capsule(
                    f.p(0.1, 0.06),
                    f.p(0.1 + 0.45 * ph, 0.06 + 0.25 * ph.max(0.0)),
                    0.05 * f.s,
                    skin,
                );
                c.ellipse(f.p(0.0, 0.13), 0.11 * f.s, 0.11 * f.s, head_c);
            }
            return;
        }
        Act::Dive => {
            let a = pose.u * 1.9;
            let (sa, ca) = (
                super::rng::sin(f64::from(a)) as f32,
                super::rng::cos(f64::from(a)) as f32,
            );
            let lift = 0.4 + 0.6 * super::rng::sin(std::f64::consts::PI * f64::from(pose.u)) as f32
                - 1.2 * pose.u;
            let ctr = (0.0, 0.95 + lift);
            let at = |r: f32| (ctr.0 + r * sa, ctr.1 + r * ca);
            c.capsule(
                f.p(at(-0.9).0, at(-0.9).1),
                f.p(ctr.0, ctr.1),
                0.08 * f.s,
                legs,
            );
            c.capsule(
                f.p(ctr.0, ctr.1),
                f.p(at(0.5).0, at(0.5).1),
                0.16 * f.s * look.build,
                cloth,
            );
            c.capsule(
                f.p(at(0.5).0, at(0.5).1),
                f.p(at(1.15).0, at(1.15).1),
                0.05 * f.s,
                skin,
            );
            let h = at(0.68);
            c.ellipse(f.p(h.0, h.1), 0.105 * f.s, 0.105 * f.s, head_c);
            return;
        }
        _ => {}
    }
    let s = skeleton(pose.act, pose, seed);
    let p = |q: (f32, f32)| f.p(q.0, q.1);
    for i in 0..2 {
        c.capsule(p(s.hip), p(s.knees[i]), 0.08 * f.s, legs);
        c.capsule(p(s.knees[i]), p(s.feet[i]), 0.07 * f.s, legs);
    }
    let chest = (s.neck.0 * 0.9 + s.hip.0 * 0.1, s.neck.1 - 0.08);
    c.capsule(
        p((s.hip.0, s.hip.1 + 0.08)),
        p(chest),
        0.16 * f.s * look.build,
        cloth,
    );
    let shoulder = (s.neck.0, s.neck.1 - 0.07);
    for i in 0..2 {
        c.capsule(p(shoulder), p(s.elbows[i]), 0.055 * f.s, cloth);
        c.capsule(p(s.elbows[i]), p(s.hands[i]), 0.05 * f.s, cloth - 0.5);
        c.ellipse(p(s.hands[i]), 0.045 * f.s, 0.045 * f.s, skin);
    }
    c.ellipse(p(s.head), 0.1 * f.s, 0.115 * f.s, head_c);
    // Hair insulates: the top of the head is cooler than the face.
    c.ellipse(
        p((s.head.0 - 0.02, s.head.1 + 0.06)),
        0.08 * f.s,
        0.05 * f.s,
        head_c - 3.5,
    );
}

fn draw_cyclist(
    c: &mut Canvas<'_>,
    cond: &SceneConditions,
    look: &PersonLook,
    pose: &Pose,
    f: Frame,
) {
    let metal = cond.metal();
    let tire = cond.air_c + 4.0;
    for hub in [(-0.52, 0.34), (0.55, 0.34)] {
        let n = 10;
        for i in 0..n {
            let (a0, a1) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            let pt = |a: f64| {
                let ang = std::f64::consts::TAU * a;
                f.p(
                    hub.0 + 0.34 * super::rng::cos(ang) as f32,
                    hub.1 + 0.34 * super::rng::sin(ang) as f32,
                )
            };
            c.capsule(pt(a0), pt(a1), 0.035 * f.s, tire);
        }
    }
    c.capsule(f.p(-0.52, 0.34), f.p(-0.1, 0.9), 0.03 * f.s, metal);
    c.capsule(f.p(-0.1, 0.9), f.p(0.45, 1.0), 0.03 * f.s, metal);
    c.capsule(f.p(0.45, 1.0), f.p(0.55, 0.34), 0.03 * f.s, metal);
    c.capsule(f.p(-0.1, 0.9), f.p(0.0, 0.32), 0.03 * f.s, metal);
    let ang = std::f64::consts::TAU * f64::from(pose.dist / 2.2);
    let pedal = |off: f64| {
        (
            0.17 * super::rng::cos(ang + off) as f32,
            0.32 + 0.17 * super::rng::sin(ang + off) as f32,
        )
    };
    let hip = (-0.12, 0.98);
    for off in [0.0, std::f64::consts::PI] {
        let (px, py) = pedal(off);
        let knee = (0.12 + 0.5 * px, 0.62 + 0.4 * (py - 0.32));
        c.capsule(
            f.p(hip.0, hip.1),
            f.p(knee.0, knee.1),
            0.08 * f.s,
            look.legs_c,
        );
        c.capsule(f.p(knee.0, knee.1), f.p(px, py), 0.065 * f.s, look.legs_c);
    }
    c.capsule(
        f.p(hip.0, hip.1 + 0.05),
        f.p(0.12, 1.42),
        0.16 * f.s * look.build,
        look.cloth_c,
    );
    c.capsule(f.p(0.12, 1.38), f.p(0.44, 1.05), 0.05 * f.s, look.cloth_c);
    c.ellipse(f.p(0.2, 1.58), 0.1 * f.s, 0.115 * f.s, look.head_c);
    c.ellipse(f.p(0.18, 1.64), 0.09 * f.s, 0.05 * f.s, look.head_c - 4.0);
}

fn draw_dog(c: &mut Canvas<'_>, body_c: f32, pose: &Pose, f: Frame) {
    let sw = if pose.act == Act::Walk {
        super::rng::sin(std::f64::consts::TAU * f64::from(pose.dist / 0.9)) as f32
    } else {
        0.0
    };
    for (hx, ph) in [(0.25, 1.0), (-0.25, -1.0)] {
        c.capsule(
            f.p(hx, 0.4),
            f.p(hx + 0.12 * sw * ph, 0.02),
            0.045 * f.s,
            body_c - 1.5,
        );
        c.capsule(
            f.p(hx - 0.05, 0.4),
            f.p(hx - 0.05 - 0.12 * sw * ph, 0.02),
            0.045 * f.s,
            body_c - 1.5,
        );
    }
    c.ellipse(f.p(0.0, 0.45), 0.38 * f.s, 0.14 * f.s, body_c);
    c.capsule(f.p(-0.36, 0.5), f.p(-0.5, 0.62), 0.035 * f.s, body_c - 2.0);
    c.ellipse(f.p(0.42, 0.58), 0.12 * f.s, 0.1 * f.s, body_c + 2.5);
}

fn draw_car(c: &mut Canvas<'_>, cond: &SceneConditions, v: &VehicleLook, f: Frame) {
    let (h2, l2) = (v.height, v.length * 0.5);
    let belt = if v.van { 1.15 } else { 0.95 };
    let p = |u: f32, w: f32| f.p(u, w);
    // Warm underbody and the road just below it.
    c.polygon(
        &[
            p(-l2 + 0.3, 0.05),
            p(l2 - 0.3, 0.05),
            p(l2 - 0.3, 0.3),
            p(-l2 + 0.3, 0.3),
        ],
        cond.air_c + 6.0,
    );
    c.polygon(
        &[
            p(-l2, 0.28),
            p(l2, 0.28),
            p(l2, belt - 0.1),
            p(l2 - 0.9, belt),
            p(-l2, belt),
        ],
        v.body_c,
    );
    let cabin = if v.van {
        [
            p(-l2 + 0.1, belt),
            p(l2 - 1.0, belt),
            p(l2 - 1.5, h2),
            p(-l2 + 0.1, h2),
        ]
    } else {
        [
            p(-l2 + 0.35, belt),
            p(l2 - 1.2, belt),
            p(l2 - 1.9, h2),
            p(-l2 + 0.85, h2),
        ]
    };
    c.polygon(&cabin, if v.van { v.cargo_c } else { v.glass_c });
    if v.van {
        c.polygon(
            &[
                p(l2 - 1.45, belt + 0.1),
                p(l2 - 1.05, belt + 0.1),
                p(l2 - 1.5, h2 - 0.1),
                p(l2 - 1.8, h2 - 0.1),
            ],
            v.glass_c,
        );
    }
    c.capsule(cabin[3], cabin[2], 0.04 * f.s, v.body_c);
    // The engine is at the front: that asymmetry shows which way a car faces.
    c.polygon(
        &[
            p(l2 - 1.25, 0.45),
            p(l2, 0.45),
            p(l2, belt - 0.1),
            p(l2 - 0.9, belt),
            p(l2 - 1.25, belt),
        ],
        v.engine_c,
    );
    c.glow(f.p(l2 - 0.3, 0.6), 0.6 * f.s, 0.35 * f.s, 3.0);
    for u in [-(l2 - 0.8), l2 - 0.8] {
        c.ellipse(f.p(u, 0.31), 0.31 * f.s, 0.31 * f.s, v.tire_c);
    }
    c.ellipse(f.p(l2 - 0.8, 0.31), 0.12 * f.s, 0.12 * f.s, v.tire_c + 8.0);
    c.ellipse(f.p(-l2 + 0.12, 0.24), 0.08 * f.s, 0.07 * f.s, v.exhaust_c);
    c.glow(f.p(-l2 - 0.35, 0.25), 0.6 * f.s, 0.22 * f.s, 5.0);
}

fn draw_truck(c: &mut Canvas<'_>, cond: &SceneConditions, v: &VehicleLook, f: Frame) {
    let (l2, h) = (v.length * 0.5, v.height);
    let p = |u: f32, w: f32| f.p(u, w);
    c.polygon(
        &[
            p(-l2 + 0.3, 0.05),
            p(l2 - 0.3, 0.05),
            p(l2 - 0.3, 0.5),
            p(-l2 + 0.3, 0.5),
        ],
        cond.air_c + 7.0,
    );
    c.polygon(
        &[p(-l2, 0.5), p(l2, 0.5), p(l2, 0.95), p(-l2, 0.95)],
        v.body_c,
    );
    c.polygon(
        &[p(-l2, 0.95), p(l2 - 2.4, 0.95), p(l2 - 2.4, h), p(-l2, h)],
        v.cargo_c,
    );
    c.polygon(
        &[
            p(l2 - 2.3, 0.55),
            p(l2, 0.55),
            p(l2, 2.2),
            p(l2 - 0.3, 2.75),
            p(l2 - 2.3, 2.75),
        ],
        v.body_c,
    );
    c.polygon(
        &[
            p(l2 - 1.0, 1.75),
            p(l2 - 0.1, 1.75),
            p(l2 - 0.3, 2.6),
            p(l2 - 1.0, 2.6),
        ],
        v.glass_c,
    );
    c.polygon(
        &[
            p(l2 - 1.5, 0.55),
            p(l2, 0.55),
            p(l2, 1.45),
            p(l2 - 1.5, 1.45),
        ],
        v.engine_c,
    );
    c.glow(f.p(l2 - 0.5, 1.0), 1.0 * f.s, 0.7 * f.s, 5.0);
    for u in [l2 - 1.2, -l2 + 2.7, -l2 + 1.6] {
        c.ellipse(f.p(u, 0.5), 0.5 * f.s, 0.5 * f.s, v.tire_c);
        c.ellipse(f.p(u, 0.5), 0.2 * f.s, 0.2 * f.s, v.tire_c + 6.0);
    }
    c.capsule(
        f.p(l2 - 2.45, 1.0),
        f.p(l2 - 2.45, h + 0.1),
        0.09 * f.s,
        v.exhaust_c,
    );
    c.glow(f.p(l2 - 2.5, h + 0.5), 0.5 * f.s, 0.7 * f.s, 6.0);
}

fn draw_boat(c: &mut Canvas<'_>, cond: &SceneConditions, b: &BoatLook, f: Frame) {
    let l2 = b.length * 0.5;
    let p = |u: f32, w: f32| f.p(u, w);
    // Churned water behind the stern brings up warmer water; the bow pushes a small wave.
    for i in 0..4 {
        let u = -l2 - 1.0 - 1.6 * i as f32;
        c.glow(
            f.p(u, 0.0),
            (1.2 + 0.5 * i as f32) * f.s,
            (0.35 + 0.1 * i as f32) * f.s,
            1.4 - 0.3 * i as f32,
        );
    }
    c.glow(f.p(l2 + 0.3, 0.05), 0.8 * f.s, 0.25 * f.s, 0.8);
    c.polygon(
        &[p(-l2, 0.0), p(l2 - 1.0, 0.0), p(l2, 0.95), p(-l2, 0.95)],
        b.hull_c,
    );
    c.polygon(
        &[p(-l2, 0.0), p(l2 - 1.0, 0.0), p(l2 - 0.8, 0.2), p(-l2, 0.2)],
        cond.water_c + 0.5,
    );
    if b.cabin {
        let cab = [
            p(-l2 + 0.6, 0.95),
            p(0.3, 0.95),
            p(0.0, 2.0),
            p(-l2 + 0.8, 2.0),
        ];
        c.polygon(&cab, b.cabin_c);
        c.polygon(
            &[
                p(-l2 + 1.0, 1.35),
                p(0.0, 1.35),
                p(-0.15, 1.75),
                p(-l2 + 1.0, 1.75),
            ],
            b.glass_c,
        );
    } else {
        c.ellipse(f.p(-l2 + 1.2, 1.35), 0.2 * f.s, 0.3 * f.s, cond.clothing());
        c.ellipse(f.p(-l2 + 1.2, 1.75), 0.1 * f.s, 0.11 * f.s, 32.0);
    }
    c.capsule(
        f.p(-l2 - 0.15, 1.0),
        f.p(-l2 - 0.25, -0.1),
        0.16 * f.s,
        b.engine_c,
    );
    c.glow(f.p(-l2 - 0.2, 0.6), 0.6 * f.s, 0.5 * f.s, 4.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(hour: f32) -> (View, SceneConditions) {
        (
            View::new(384, 288),
            SceneConditions::sample(hour, &mut Rng::new(5)),
        )
    }

    #[test]
    fn normal_cars_drive_one_way_and_people_stay_out_of_the_zone() {
        let (view, cond) = setup(13.0);
        for seed in 0..20 {
            let actors = normal_activity(&view, &cond, &mut Rng::new(seed), 120, 1.5);
            assert!(actors.len() > 10, "busy afternoon");
            for a in &actors {
                assert!(!a.is_anomalous());
                if let Some(face) = a.vehicle_face() {
                    assert_eq!(face, 1.0);
                    assert!(a.displacement(-100.0, 300.0, &view).unwrap() > 0.0);
                }
                let mut prev: Option<Pose> = None;
                for t in -80..130 {
                    if let Some(p) = a.pose_at(t as f32, &view) {
                        if let (Body::Person(_), Some(q)) = (a.body, prev) {
                            let (dx, dd) = (p.x - q.x, view.depth(p.yn) - view.depth(q.yn));
                            assert!((dx * dx + dd * dd).sqrt() < 1.8, "normal people walk");
                        }
                        prev = Some(p);
                        assert!(
                            !((ZONE_START..=PIER_TIP).contains(&p.yn)
                                && (PIER_X.0..PIER_X.1).contains(&p.x)),
                            "normal actor in zone"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn restricted_zone_is_flagged_exactly_inside_the_zone() {
        let (view, cond) = setup(10.0);
        for seed in 0..10 {
            let (actors, _) = anomaly(
                AnomalyKind::RestrictedZone,
                0,
                30.0,
                &view,
                &cond,
                &mut Rng::new(seed),
            );
            let a = &actors[0];
            let mut flagged = 0;
            for t in 0..200 {
                if let Some(p) = a.pose_at(t as f32, &view) {
                    let inside = p.yn >= ZONE_START - 1e-4;
                    assert_eq!(p.flag.is_some(), inside, "t={t} yn={}", p.yn);
                    flagged += usize::from(inside);
                }
            }
            assert!(flagged >= 8, "{flagged}");
            assert!(a.pose_at(30.0, &view).unwrap().flag.is_some());
            assert!(a.pose_at(29.0, &view).unwrap().flag.is_none());
        }
    }

    #[test]
    fn runners_are_faster_than_walkers_and_wrong_way_cars_drive_backwards() {
        let (view, cond) = setup(15.0);
        let (runners, _) = anomaly(
            AnomalyKind::Running,
            0,
            10.0,
            &view,
            &cond,
            &mut Rng::new(1),
        );
        for r in &runners {
            let p0 = r.pose_at(12.0, &view).unwrap();
            let p1 = r.pose_at(13.0, &view).unwrap();
            assert!((p1.x - p0.x).abs() > 4.8);
        }
        for seed in 0..6 {
            let (cars, _) = anomaly(
                AnomalyKind::CarReversing,
                0,
                10.0,
                &view,
                &cond,
                &mut Rng::new(seed),
            );
            let c = &cars[0];
            let p0 = c.pose_at(10.0, &view).unwrap();
            let p1 = c.pose_at(11.0, &view).unwrap();
            assert!(p1.x < p0.x && p0.flag == Some(0));
        }
    }
}
