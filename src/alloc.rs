//! A static memory plan for a call that allocates the same way every time (tract's forward
//! pass: 989 allocations, 32 MB in all, per frame, all freed before it returns).
//!
//! tract's CPU plan has no arena, so its intermediate tensors come from the heap on every run.
//! [`MemoryPlan::run`] records the call's allocations once (sizes, alignments, and the exact
//! order of allocations and frees), assigns every block an offset in one arena so that blocks
//! alive at the same time never overlap (greedy, largest first: the arena is close to the peak
//! live size, not the 32 MB total), and from then on serves the same sequence from the arena.
//! The general-purpose heap sees no allocation per frame, and memory use is fixed.
//!
//! Safety does not depend on the call behaving: replay hands out an arena block only while
//! every event so far (each allocation's size and alignment, each free's block) matched the
//! recording, so the memory state is exactly the recorded one, in which live blocks do not
//! overlap. At the first difference the rest of the call goes to the heap (the frame is counted
//! as diverged and the next one records again; five in a row switch the plan off). Blocks that
//! outlive the recorded call (tract-int8 keeps two small buffers until the next run) are served
//! from the heap in replay too. An arena block still alive when a call returns disables the
//! plan for good and leaks the arena, so that block stays valid.
//!
//! It works only when the binary installs [`PlannedAlloc`] as its global allocator (edge-cli
//! does); otherwise the plan notices it saw nothing and switches itself off. Allocations that
//! other threads make during the call (tract's matrix-product pool with `--threads` > 1) are
//! not planned and go to the heap.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Most events (allocations plus frees) one recorded call may make.
const MAX_EVENTS: usize = 1 << 15;
/// Arenas registered at once (one per scorer; more fall back to the heap).
const MAX_ARENAS: usize = 8;
/// Recordings that diverge in a row before the plan gives up on a call.
const MAX_ATTEMPTS: u32 = 5;
/// Least arena alignment (a cache line pair).
const ARENA_ALIGN: usize = 128;
/// Most alignment a planned block may ask for (a page).
const MAX_BLOCK_ALIGN: usize = 4096;

/// A registered arena: address range and blocks alive in it.
struct Slot {
    base: AtomicUsize,
    end: AtomicUsize,
    live: AtomicIsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    base: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    live: AtomicIsize::new(0),
};
static SLOTS: [Slot; MAX_ARENAS] = [EMPTY_SLOT; MAX_ARENAS];
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The plan recording or replaying on this thread, if any.
    static ACTIVE: Cell<*mut PlanState> = const { Cell::new(ptr::null_mut()) };
}

fn active() -> *mut PlanState {
    ACTIVE.try_with(Cell::get).unwrap_or(ptr::null_mut())
}

/// The slot whose arena holds `p`.
fn slot_of(p: *mut u8) -> Option<&'static Slot> {
    if REGISTERED.load(Ordering::Acquire) == 0 {
        return None;
    }
    let a = p as usize;
    SLOTS.iter().find(|s| loop {
        let base = s.base.load(Ordering::Acquire);
        if base == 0 || a < base {
            return false;
        }
        let end = s.end.load(Ordering::Acquire);
        // A slot released and claimed again between the two loads would pair one arena's
        // base with another's end: read until both belong to the same registration.
        if s.base.load(Ordering::Acquire) == base {
            return a < end;
        }
    })
}

/// The global allocator wrapper: plans allocations made inside [`MemoryPlan::run`] on the
/// calling thread, passes everything else to `A`.
pub struct PlannedAlloc<A> {
    inner: A,
}

impl<A> PlannedAlloc<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for PlannedAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let st = active();
        if st.is_null() {
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: ACTIVE points at the PlanState that `run` borrows mutably on this thread for
        // the whole call; nothing else touches it meanwhile.
        unsafe { (*st).alloc(&self.inner, layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let st = active();
        if st.is_null() {
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        unsafe { (*st).alloc(&self.inner, layout, true) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let st = active();
        if !st.is_null() {
            return unsafe { (*st).dealloc(&self.inner, p, layout) };
        }
        match slot_of(p) {
            // A planned block freed outside its call (the plan is off by now).
            Some(slot) => {
                slot.live.fetch_sub(1, Ordering::AcqRel);
            }
            None => unsafe { self.inner.dealloc(p, layout) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if active().is_null() && slot_of(p).is_none() {
            return unsafe { self.inner.realloc(p, layout, new_size) };
        }
        // Inside a call (or a planned block): a new block, a copy, a free, so that recording
        // and replay see the same events.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

const OPEN: u32 = u32::MAX;

/// One allocation made during the recorded call.
#[derive(Debug, Clone, Copy)]
struct Block {
    size: usize,
    align: usize,
    /// Event indices of its allocation and free (`OPEN`: not freed).
    start: u32,
    end: u32,
    /// Heap address while recording; arena offset once planned.
    at: usize,
    /// Outlives the call (freed in a later one): served from the heap, never from the arena.
    heap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Alloc(u32),
    Free(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Recording,
    Replaying,
    Off,
}

/// What a plan has done, for logs and health records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanStats {
    /// Calls served from the arena without a difference.
    pub replayed: u64,
    /// Calls that differed from the recording (the rest went to the heap).
    pub diverged: u64,
    /// Heap allocations made inside calls on the planning thread (recording, divergence,
    /// blocks that outlive the call).
    pub heap_allocs: u64,
    /// Blocks in the plan.
    pub blocks: usize,
    /// Arena size, bytes (0 while none).
    pub arena_bytes: usize,
    /// Bytes the recorded call allocated in all (what the heap served per call before).
    pub recorded_bytes: usize,
}

struct PlanState {
    phase: Phase,
    attempts: u32,
    events: Vec<Ev>,
    blocks: Vec<Block>,
    /// Replay position in `events`.
    pos: usize,
    diverged: bool,
    overflow: bool,
    saw: bool,
    arena: *mut u8,
    arena_layout: Option<Layout>,
    slot: Option<usize>,
    stats: PlanStats,
    why_off: &'static str,
}

impl PlanState {
    unsafe fn alloc<A: GlobalAlloc>(&mut self, inner: &A, layout: Layout, zero: bool) -> *mut u8 {
        self.saw = true;
        if self.phase == Phase::Replaying && !self.diverged {
            if let Some(&Ev::Alloc(k)) = self.events.get(self.pos) {
                let b = self.blocks[k as usize];
                if b.size == layout.size() && b.align == layout.align() && b.heap {
                    self.pos += 1;
                    self.stats.heap_allocs += 1;
                    return unsafe {
                        if zero {
                            inner.alloc_zeroed(layout)
                        } else {
                            inner.alloc(layout)
                        }
                    };
                }
                if b.size == layout.size() && b.align == layout.align() {
                    self.pos += 1;
                    if let Some(s) = self.slot {
                        SLOTS[s].live.fetch_add(1, Ordering::AcqRel);
                    }
                    // SAFETY: the plan placed block k inside the arena, aligned.
                    let p = unsafe { self.arena.add(b.at) };
                    if zero {
                        unsafe { ptr::write_bytes(p, 0, b.size) };
                    }
                    return p;
                }
            }
            self.diverged = true;
        }
        self.stats.heap_allocs += 1;
        let p = unsafe {
            if zero {
                inner.alloc_zeroed(layout)
            } else {
                inner.alloc(layout)
            }
        };
        if self.phase == Phase::Recording && !p.is_null() {
            // Capacity was reserved up front: these pushes never allocate.
            if self.events.len() < self.events.capacity()
                && self.blocks.len() < self.blocks.capacity()
            {
                let k = self.blocks.len() as u32;
                self.blocks.push(Block {
                    size: layout.size(),
                    align: layout.align(),
                    start: self.events.len() as u32,
                    end: OPEN,
                    at: p as usize,
                    heap: false,
                });
                self.events.push(Ev::Alloc(k));
            } else {
                self.overflow = true;
            }
        }
        p
    }

    unsafe fn dealloc<A: GlobalAlloc>(&mut self, inner: &A, p: *mut u8, layout: Layout) {
        self.saw = true;
        if let Some(slot) = slot_of(p) {
            slot.live.fetch_sub(1, Ordering::AcqRel);
            if self.phase == Phase::Replaying && !self.diverged {
                let expected = match self.events.get(self.pos) {
                    Some(&Ev::Free(k)) => {
                        // SAFETY: in-bounds offset of the arena.
                        unsafe { self.arena.add(self.blocks[k as usize].at) == p }
                    }
                    _ => false,
                };
                if expected {
                    self.pos += 1;
                } else {
                    self.diverged = true;
                }
            }
            return;
        }
        if self.phase == Phase::Recording && !self.overflow {
            let a = p as usize;
            if let Some(k) = self.blocks.iter().rposition(|b| b.end == OPEN && b.at == a) {
                if self.events.len() < self.events.capacity() {
                    self.blocks[k].end = self.events.len() as u32;
                    self.events.push(Ev::Free(k as u32));
                } else {
                    self.overflow = true;
                }
            }
        }
        unsafe { inner.dealloc(p, layout) }
    }

    /// Gives the arena back (only when nothing in it is alive).
    fn release_arena(&mut self) {
        if let (Some(layout), false) = (self.arena_layout, self.arena.is_null()) {
            if let Some(s) = self.slot.take() {
                // `base` is the claim: clear it last, or a plan on another thread could claim
                // the slot and then have its range emptied by our late store to `end`.
                REGISTERED.fetch_sub(1, Ordering::AcqRel);
                SLOTS[s].end.store(0, Ordering::Release);
                SLOTS[s].base.store(0, Ordering::Release);
            }
            // SAFETY: allocated in `plan` with this layout; no block in it is alive.
            unsafe { std::alloc::dealloc(self.arena, layout) };
        }
        self.arena = ptr::null_mut();
        self.arena_layout = None;
        self.stats.arena_bytes = 0;
    }

    fn live(&self) -> isize {
        self.slot
            .map_or(0, |s| SLOTS[s].live.load(Ordering::Acquire))
    }

    fn turn_off(&mut self, why: &'static str) {
        self.phase = Phase::Off;
        self.why_off = why;
        self.events = Vec::new();
        self.blocks = Vec::new();
        log::warn!("memory plan off: {why}; the forward pass allocates from the heap");
    }

    /// After a call: check it, and plan or re-record.
    fn after_call(&mut self) {
        match self.phase {
            Phase::Off => {}
            Phase::Recording => {
                if !self.saw {
                    self.phase = Phase::Off;
                    self.why_off = "the global allocator is not PlannedAlloc";
                    self.events = Vec::new();
                    self.blocks = Vec::new();
                    log::debug!("memory plan off: {}", self.why_off);
                } else if self.overflow {
                    self.turn_off("the call makes more allocations than a plan holds");
                } else if self.attempts == 0 && self.blocks.iter().any(|b| b.end == OPEN) {
                    // The first run may fill caches that live on: record again.
                    self.attempts += 1;
                } else {
                    // Blocks that still outlive the call (a buffer tract keeps until the next
                    // run) stay on the heap; the rest is planned.
                    for b in &mut self.blocks {
                        b.heap = b.end == OPEN;
                    }
                    self.plan();
                }
            }
            Phase::Replaying => {
                if self.live() != 0 {
                    // A block outlives the call: never hand the arena out again, never free it.
                    self.slot = None;
                    self.arena = ptr::null_mut();
                    self.turn_off("a planned block outlived the call (arena leaked)");
                } else if self.diverged || self.pos != self.events.len() {
                    self.stats.diverged += 1;
                    self.attempts += 1;
                    if self.attempts >= MAX_ATTEMPTS {
                        self.release_arena();
                        self.turn_off("the call does not allocate the same way twice");
                        return;
                    }
                    log::debug!(
                        "memory plan: call differed from the recording at event {}; recording again",
                        self.pos
                    );
                    self.release_arena();
                    self.phase = Phase::Recording;
                } else {
                    self.stats.replayed += 1;
                    self.attempts = 0;
                }
            }
        }
    }

    /// Places every recorded block in one arena, largest first, at the lowest offset where it
    /// overlaps no block alive at the same time.
    fn plan(&mut self) {
        let n = self.blocks.len();
        let mut order: Vec<usize> = (0..n).filter(|&k| !self.blocks[k].heap).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&self.blocks[a], &self.blocks[b]);
            y.size.cmp(&x.size).then(x.start.cmp(&y.start))
        });
        let mut placed: Vec<usize> = Vec::with_capacity(n);
        let mut offsets = vec![0usize; n];
        let mut size = 0usize;
        let mut busy: Vec<(usize, usize)> = Vec::new();
        for &k in &order {
            let b = self.blocks[k];
            busy.clear();
            busy.extend(
                placed
                    .iter()
                    .map(|&j| (j, &self.blocks[j]))
                    .filter(|(_, o)| o.start < b.end && b.start < o.end)
                    .map(|(j, o)| (offsets[j], offsets[j] + o.size)),
            );
            busy.sort_unstable();
            let align = b.align.max(1);
            let mut off = 0usize;
            for &(lo, hi) in &busy {
                if off + b.size.max(1) <= lo {
                    break;
                }
                off = off.max(hi.next_multiple_of(align));
            }
            offsets[k] = off;
            size = size.max(off + b.size);
            placed.push(k);
        }
        let max_align = self
            .blocks
            .iter()
            .filter(|b| !b.heap)
            .map(|b| b.align)
            .max()
            .unwrap_or(1);
        if max_align > MAX_BLOCK_ALIGN {
            self.turn_off("a block needs more than page alignment");
            return;
        }
        let Ok(layout) = Layout::from_size_align(size.max(1), max_align.max(ARENA_ALIGN)) else {
            self.turn_off("the arena size overflows");
            return;
        };
        let Some(slot) = SLOTS.iter().position(|s| {
            s.base
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) else {
            self.turn_off("too many memory plans at once");
            return;
        };
        // Outside any call: this goes to the heap.
        let arena = unsafe { std::alloc::alloc(layout) };
        if arena.is_null() {
            SLOTS[slot].base.store(0, Ordering::Release);
            self.turn_off("no memory for the arena");
            return;
        }
        SLOTS[slot].live.store(0, Ordering::Release);
        SLOTS[slot]
            .end
            .store(arena as usize + layout.size(), Ordering::Release);
        SLOTS[slot].base.store(arena as usize, Ordering::Release);
        REGISTERED.fetch_add(1, Ordering::AcqRel);
        for (b, off) in self.blocks.iter_mut().zip(offsets) {
            b.at = off;
        }
        // Replay only reads these: give back the recording headroom (about 1.3 MiB).
        self.events.shrink_to_fit();
        self.blocks.shrink_to_fit();
        self.arena = arena;
        self.arena_layout = Some(layout);
        self.slot = Some(slot);
        self.phase = Phase::Replaying;
        self.stats.blocks = n;
        self.stats.arena_bytes = layout.size();
        self.stats.recorded_bytes = self.blocks.iter().map(|b| b.size).sum();
        let kept = self.blocks.iter().filter(|b| b.heap).count();
        log::info!(
            "memory plan: {} of {n} allocations ({:.1} MiB per call) served from a {:.1} MiB \
             arena{}",
            n - kept,
            self.stats.recorded_bytes as f64 / (1 << 20) as f64,
            layout.size() as f64 / (1 << 20) as f64,
            if kept > 0 {
                format!("; {kept} that outlive the call stay on the heap")
            } else {
                String::new()
            }
        );
    }
}

/// Records a repeated call's allocations and serves them from one arena (see the module docs).
pub struct MemoryPlan {
    state: Box<PlanState>,
}

// SAFETY: the raw arena pointer is owned by the plan; the plan is used by one thread at a time.
unsafe impl Send for MemoryPlan {}

impl Default for MemoryPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPlan")
            .field("phase", &self.state.phase)
            .field("stats", &self.state.stats)
            .finish()
    }
}

/// Restores the thread's previous plan pointer even if the call panics.
struct Restore(*mut PlanState);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|c| c.set(self.0));
    }
}

impl MemoryPlan {
    /// A plan that records on its first call (or is off when the environment variable
    /// `THERMAL_EDGE_MEMORY_PLAN` is `off`: the escape hatch if a plan ever misbehaves).
    pub fn new() -> Self {
        let off = std::env::var("THERMAL_EDGE_MEMORY_PLAN").is_ok_and(|v| v == "off");
        Self {
            state: Box::new(PlanState {
                phase: if off { Phase::Off } else { Phase::Recording },
                attempts: 0,
                events: Vec::new(),
                blocks: Vec::new(),
                pos: 0,
                diverged: false,
                overflow: false,
                saw: false,
                arena: ptr::null_mut(),
                arena_layout: None,
                slot: None,
                stats: PlanStats::default(),
                why_off: if off {
                    "switched off by THERMAL_EDGE_MEMORY_PLAN=off"
                } else {
                    ""
                },
            }),
        }
    }

    /// A plan that is off from the start (calls run on the heap), saying why.
    pub fn off(why: &'static str) -> Self {
        let mut p = Self::new();
        p.state.phase = Phase::Off;
        p.state.why_off = why;
        p
    }

    /// Runs `f` with its allocations on this thread planned.
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let st = &mut *self.state;
        if st.phase == Phase::Off || !active().is_null() {
            return f();
        }
        if st.phase == Phase::Recording {
            st.events.clear();
            st.blocks.clear();
            // Room for a whole recording, reserved here: the allocator cannot allocate.
            st.events.reserve(MAX_EVENTS);
            st.blocks.reserve(MAX_EVENTS);
            st.overflow = false;
        }
        st.pos = 0;
        st.diverged = false;
        st.saw = false;
        let ptr: *mut PlanState = st;
        let r = {
            let _restore = Restore(ACTIVE.with(|c| c.replace(ptr)));
            f()
        };
        // SAFETY: the call is over; ACTIVE no longer points here.
        unsafe { (*ptr).after_call() };
        r
    }

    /// What the plan has done.
    pub fn stats(&self) -> PlanStats {
        self.state.stats
    }

    /// Whether calls are served from the arena now.
    pub fn replaying(&self) -> bool {
        self.state.phase == Phase::Replaying
    }

    /// Why the plan switched itself off (empty while it is on).
    pub fn off_reason(&self) -> &'static str {
        self.state.why_off
    }
}

impl Drop for MemoryPlan {
    fn drop(&mut self) {
        if self.state.live() == 0 {
            self.state.release_arena();
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (v2 option enum, value 15).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets how long mimalloc (edge-cli's allocator) waits before returning freed memory to the
/// OS: −1 never (training: a step reuses the same buffer sizes, and re-faulting them cost ~40 %
/// of a CPU step), 0 at once, or milliseconds (mimalloc's default is 10; the environment
/// variable `MIMALLOC_PURGE_DELAY` sets it for a whole run, see docs/performance.md).
pub fn mimalloc_purge_delay(ms: i64) {
    // SAFETY: sets a plain integer option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms as std::ffi::c_long) };
}
