//! The memory plan (`thermal_edge::alloc`) under a real global allocator: replayed calls reach
//! the heap zero times and compute the same results; a call that allocates differently, frees
//! in a different order, or lets a block escape is detected, falls back to the heap, and never
//! hands out overlapping memory (every block is filled with a pattern and checked).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use thermal_edge::alloc::{MemoryPlan, PlannedAlloc};

struct Counting;

thread_local! {
    /// Heap allocations of this thread while counting (tests run on threads of their own).
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
    static HEAP: Cell<u64> = const { Cell::new(0) };
}

fn counted() -> bool {
    COUNT_HERE.try_with(Cell::get).unwrap_or(false)
}

fn bump() {
    let _ = HEAP.try_with(|h| h.set(h.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            bump();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            bump();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            bump();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PlannedAlloc<Counting> = PlannedAlloc::new(Counting);

/// Heap allocations `f` makes on this thread.
fn heap_allocs<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT_HERE.with(|c| c.set(true));
    let before = HEAP.with(Cell::get);
    let r = f();
    let n = HEAP.with(Cell::get) - before;
    COUNT_HERE.with(|c| c.set(false));
    (r, n)
}

/// A forward-pass-like workload: buffers of several sizes and alignments, some alive together,
/// some freed early, a growing vector (reallocations), each filled with its own pattern and
/// checked before it is freed. Returns a checksum.
fn workload(scale: usize, swap_frees: bool) -> u64 {
    let fill = |v: &mut Vec<u32>, tag: u32| {
        for (i, x) in v.iter_mut().enumerate() {
            *x = tag.wrapping_mul(2_654_435_761).wrapping_add(i as u32);
        }
    };
    let check = |v: &Vec<u32>, tag: u32| {
        for (i, x) in v.iter().enumerate() {
            assert_eq!(
                *x,
                tag.wrapping_mul(2_654_435_761).wrapping_add(i as u32),
                "block {tag} was overwritten at {i}"
            );
        }
        v.iter().map(|&x| u64::from(x)).sum::<u64>()
    };
    let mut sum = 0u64;
    let mut a = vec![0u32; 1000 * scale];
    fill(&mut a, 1);
    let mut b = vec![0u32; 5000];
    fill(&mut b, 2);
    let mut grow: Vec<u32> = Vec::new();
    for i in 0..3000 {
        grow.push(i);
    }
    let boxed: Box<[u64; 64]> = Box::new([7; 64]);
    let mut c = vec![0u32; 300];
    fill(&mut c, 3);
    if swap_frees {
        sum += check(&b, 2);
        drop(b);
        sum += check(&a, 1);
        drop(a);
    } else {
        sum += check(&a, 1);
        drop(a);
        sum += check(&b, 2);
        drop(b);
    }
    // Allocated after the frees: the plan may put these where a and b were.
    let mut d = vec![0u32; 2000];
    fill(&mut d, 4);
    let mut e = vec![0u32; 800];
    fill(&mut e, 5);
    sum += check(&c, 3) + check(&d, 4) + check(&e, 5);
    sum += grow.iter().map(|&x| u64::from(x)).sum::<u64>();
    sum += boxed.iter().sum::<u64>();
    sum
}

#[test]
fn replayed_calls_never_reach_the_heap_and_compute_the_same() {
    let mut plan = MemoryPlan::new();
    let expected = workload(1, false);
    let (first, n0) = heap_allocs(|| plan.run(|| workload(1, false)));
    assert_eq!(first, expected);
    assert!(n0 > 5, "the recording call uses the heap ({n0})");
    assert!(plan.replaying(), "{plan:?}");
    for _ in 0..10 {
        let (r, n) = heap_allocs(|| plan.run(|| workload(1, false)));
        assert_eq!(r, expected);
        assert_eq!(n, 0, "a replayed call reached the heap");
    }
    let s = plan.stats();
    assert_eq!((s.replayed, s.diverged), (10, 0));
    // Blocks that are never alive together share memory: less arena than bytes allocated.
    assert!(s.arena_bytes < s.recorded_bytes, "{s:?}");
}

#[test]
fn a_plan_made_off_leaves_every_call_on_the_heap() {
    let mut plan = MemoryPlan::off("a thread pool");
    let expected = workload(1, false);
    for _ in 0..3 {
        let (r, n) = heap_allocs(|| plan.run(|| workload(1, false)));
        assert_eq!(r, expected);
        assert!(n > 5, "an off plan serves nothing ({n})");
    }
    assert!(!plan.replaying());
    assert_eq!(plan.off_reason(), "a thread pool");
    let s = plan.stats();
    assert_eq!((s.replayed, s.arena_bytes), (0, 0), "{s:?}");
}

#[test]
fn a_call_that_allocates_differently_falls_back_to_the_heap_and_records_again() {
    let mut plan = MemoryPlan::new();
    plan.run(|| workload(1, false));
    assert!(plan.replaying());
    // Bigger first buffer: the first allocation already differs.
    let (r, n) = heap_allocs(|| plan.run(|| workload(3, false)));
    assert_eq!(r, workload(3, false));
    assert!(n > 0);
    assert_eq!(plan.stats().diverged, 1);
    // The next call records the new pattern, the one after replays it.
    plan.run(|| workload(3, false));
    assert!(plan.replaying(), "{plan:?} {}", plan.off_reason());
    let (r, n) = heap_allocs(|| plan.run(|| workload(3, false)));
    assert_eq!(
        (r, n),
        (workload(3, false), 0),
        "{plan:?} {}",
        plan.off_reason()
    );
    // A call that never allocates the same way twice in a row: the plan gives up.
    let mut flapping = MemoryPlan::new();
    for i in 0..12 {
        let scale = 1 + i % 2;
        assert_eq!(
            flapping.run(|| workload(scale, false)),
            workload(scale, false)
        );
    }
    assert!(!flapping.replaying());
    assert!(
        flapping.off_reason().contains("same way twice"),
        "{}",
        flapping.off_reason()
    );
}

#[test]
fn the_same_sizes_freed_in_another_order_are_caught_without_overlap() {
    let mut plan = MemoryPlan::new();
    plan.run(|| workload(1, false));
    assert!(plan.replaying());
    // Same allocations, frees swapped: the blocks allocated after them must not land on
    // memory still in use (the pattern checks inside would fail).
    let r = plan.run(|| workload(1, true));
    assert_eq!(r, workload(1, true));
    assert_eq!(plan.stats().diverged, 1);

    // Recorded: A freed before B is allocated, so B is planned on A's memory. Replayed with A
    // still alive when B comes: B must not get A's memory.
    let reuse = |keep_a: bool| {
        let a = vec![0xAAAA_AAAA_u64; 1000];
        let kept = if keep_a {
            Some(a)
        } else {
            drop(a);
            None
        };
        let b = vec![0xBBBB_BBBB_u64; 1000];
        let a_ok = kept.is_none_or(|a| a.iter().all(|&x| x == 0xAAAA_AAAA));
        (a_ok, b.iter().all(|&x| x == 0xBBBB_BBBB))
    };
    let mut plan = MemoryPlan::new();
    plan.run(|| reuse(false));
    assert!(plan.replaying());
    assert!(
        plan.stats().arena_bytes < 2 * 8000,
        "B was not planned on A's memory"
    );
    assert_eq!(plan.run(|| reuse(false)), (true, true));
    assert_eq!(plan.run(|| reuse(true)), (true, true), "B overwrote A");
    assert_eq!(plan.stats().diverged, 1);
}

#[test]
fn a_block_that_outlives_the_call_switches_the_plan_off_and_stays_valid() {
    let mut plan = MemoryPlan::new();
    let recorded = plan.run(|| (0..500u32).collect::<Vec<u32>>().len());
    assert_eq!(recorded, 500);
    assert!(plan.replaying());
    // The same allocation, but this time the call keeps the block: it lives in the arena,
    // which must never be handed out again.
    let escaped: Vec<u32> = plan.run(|| (0..500u32).collect());
    assert!(!plan.replaying());
    assert!(
        plan.off_reason().contains("outlived"),
        "{}",
        plan.off_reason()
    );
    for _ in 0..5 {
        let n = plan.run(|| vec![9u32; 500].iter().sum::<u32>());
        assert_eq!(n, 4500);
    }
    assert_eq!(escaped, (0..500u32).collect::<Vec<u32>>());
    drop(escaped);
    // A call that keeps a block every time: that block stays on the heap, the rest is planned.
    let mut other = MemoryPlan::new();
    let mut held = Vec::new();
    let mut heap = Vec::new();
    for i in 0..8u32 {
        let (v, n) = heap_allocs(|| {
            other.run(|| {
                let scratch = vec![i; 2000];
                let kept = vec![i; 100];
                assert!(scratch.iter().all(|&x| x == i));
                kept
            })
        });
        held.push(v);
        heap.push(n);
    }
    assert!(other.replaying(), "{other:?} {}", other.off_reason());
    assert_eq!(
        &heap[3..],
        &[1; 5],
        "only the kept block reaches the heap: {heap:?}"
    );
    for (i, v) in held.iter().enumerate() {
        assert!(v.iter().all(|&x| x == i as u32));
    }
}
