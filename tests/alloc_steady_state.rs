//! Counting-allocator test of the on-device loop: after warm-up, processing a frame — guards,
//! history, preprocessing, the forward pass, the score, events, drift, the memory update —
//! makes no heap allocation. tract's forward pass allocates its intermediate tensors on every
//! run (989 of them, 32 MB in all); with `PlannedAlloc` installed, as edge-cli installs it, the
//! scorer's memory plan serves them from one arena, so the heap below sees none. The test
//! counts what reaches the heap, separately for our code and for the forward pass.
//!
//! One test in this binary, so no other test thread allocates while it counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use thermal_edge::alloc::PlannedAlloc;
use thermal_edge::engine::{open_scorer, Backend, EngineError, MemoryState, ScoreOutput, Scorer};
use thermal_edge::frame::guard::GuardConfig;
use thermal_edge::frame::ThermalFrame;
use thermal_edge::model::ModelConfig;
use thermal_edge::source::simulator::{dataset::camera_seed, Gray8Camera, SimConfig};
use thermal_edge::source::FrameSource;

use common::{bundle, calibration, pipeline};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

// Counting sits below the plan: it sees what reaches the heap.
#[global_allocator]
static GLOBAL: PlannedAlloc<Counting> = PlannedAlloc::new(Counting);

static ENGINE_ALLOCS: AtomicU64 = AtomicU64::new(0);
static REPLAYED: AtomicU64 = AtomicU64::new(0);

/// Wraps the real scorer and books the allocations made inside its forward pass.
struct Booked(Box<dyn Scorer>);

impl Scorer for Booked {
    fn backend(&self) -> Backend {
        self.0.backend()
    }
    fn config(&self) -> &ModelConfig {
        self.0.config()
    }
    fn score(&mut self, stack: &[f32]) -> Result<ScoreOutput, EngineError> {
        self.0.score(stack)
    }
    fn score_into(&mut self, stack: &[f32], out: &mut ScoreOutput) -> Result<(), EngineError> {
        let before = ALLOCS.load(Ordering::Relaxed);
        let r = self.0.score_into(stack, out);
        ENGINE_ALLOCS.fetch_add(ALLOCS.load(Ordering::Relaxed) - before, Ordering::Relaxed);
        if let Some(plan) = self.0.memory_plan() {
            REPLAYED.store(plan.replayed, Ordering::Relaxed);
        }
        r
    }
    fn memory_state(&self) -> &MemoryState {
        self.0.memory_state()
    }
    fn memory_state_mut(&mut self) -> &mut MemoryState {
        self.0.memory_state_mut()
    }
}

#[test]
fn the_loop_allocates_nothing_per_frame_after_warm_up() {
    let _ = env_logger::builder().is_test(true).try_init();
    let bundle = bundle();
    let cal = calibration(&bundle);
    let scorer = Booked(open_scorer(&bundle, Backend::TractF32, 1).unwrap());
    let mut p = pipeline(Box::new(scorer), &cal, GuardConfig::default());
    // A quiet normal night scene without camera artefacts (the one tests/run_loop.rs guards),
    // rendered up front so the simulator's own allocations do not count.
    let sim = SimConfig {
        frames: 60,
        start_hour: 22.0,
        clock: thermal_edge::frame::Clock::UnixEpoch,
        camera_seed: camera_seed(2024),
        sensor_artifacts: false,
        ..SimConfig::default()
    };
    let mut cam = Gray8Camera::new(sim, 11).unwrap();
    let mut frames = Vec::new();
    let mut f = ThermalFrame::zeroed(1, 1, Default::default());
    while cam.next_into(&mut f).unwrap() {
        frames.push(f.clone());
    }
    let mut alerts = Vec::with_capacity(16);
    let warm_up = 20;
    let mut own = Vec::new();
    let mut engine = Vec::new();
    let mut live = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let (a0, e0) = (
            ALLOCS.load(Ordering::Relaxed),
            ENGINE_ALLOCS.load(Ordering::Relaxed),
        );
        p.process(frame, 0, &mut |a| alerts.push(a)).unwrap();
        let (a1, e1) = (
            ALLOCS.load(Ordering::Relaxed),
            ENGINE_ALLOCS.load(Ordering::Relaxed),
        );
        if i >= warm_up {
            own.push((a1 - a0) - (e1 - e0));
            engine.push(e1 - e0);
            live.push(LIVE_BYTES.load(Ordering::Relaxed));
        }
    }
    assert!(alerts.is_empty(), "a quiet scene raised {alerts:?}");
    assert!(
        p.counters().scored as usize >= frames.len() - warm_up,
        "{:?}",
        p.counters()
    );
    println!(
        "per frame after warm-up: our code {:?} heap allocations; tract forward pass {:?} \
         (served from the memory plan: {} frames)",
        own.iter().max(),
        engine.iter().max(),
        REPLAYED.load(Ordering::Relaxed)
    );
    assert!(own.iter().all(|&n| n == 0), "our code allocated: {own:?}");
    assert!(
        engine.iter().all(|&n| n == 0),
        "the forward pass reached the heap: {engine:?}"
    );
    assert!(REPLAYED.load(Ordering::Relaxed) as usize >= frames.len() - warm_up);
    let (first, last) = (live[0], *live.last().unwrap());
    assert!(
        (last - first).abs() < 64 * 1024,
        "live heap moved from {first} to {last} bytes"
    );
}
