//! `edge-cli`: the thermal-edge command line. Thin: parse, call the library, print.

use std::process::ExitCode;

use clap::Parser;

// Training allocates and frees many tensors of tens of MB per step; glibc hands them back to
// the kernel each time and the page faults cost more than the arithmetic. PlannedAlloc serves
// tract's per-frame forward-pass allocations from a recorded plan (thermal_edge::alloc).
#[global_allocator]
static GLOBAL: thermal_edge::alloc::PlannedAlloc<mimalloc::MiMalloc> =
    thermal_edge::alloc::PlannedAlloc::new(mimalloc::MiMalloc);

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    thermal_edge::cli::run(thermal_edge::cli::Cli::parse())
}
