//! Reproduces the crash of concurrent tract int8 scoring: scores the first 30 frames of a clip
//! with each listed backend, one thread per backend at once (`par`) or one after another.
//!
//!     cargo build --release --example concurrent_scorers
//!     B=models/harbor-edge-s; C=<a clip folder or replay file>
//!     target/release/examples/concurrent_scorers $B $C tract-int8,tract-int8 par
//!
//! On this development machine (x86-64 with AMX-INT8) two tract-int8 scorers on two threads
//! crash with SIGSEGV in about half the runs, inside tract-linalg's `avx512amx_mmm_i32_16x16`
//! kernel (gdb backtrace); tract-f32 or candle pairs, and any sequential run, never do.

use std::path::{Path, PathBuf};

use thermal_edge::engine::{open_scorer, score_source, Backend, FrameStack};
use thermal_edge::export::bundle::Bundle;

fn score(backend: Backend, bundle: &Path, clip: &Path) {
    let bundle = Bundle::open(bundle).expect("bundle opens");
    let mut scorer = open_scorer(&bundle, backend, 1).expect("scorer");
    let mut stack = FrameStack::for_bundle(&bundle).expect("stack");
    let mut src = thermal_edge::source::open_source(clip, &Default::default()).expect("source");
    let mut n = 0;
    score_source(scorer.as_mut(), &mut stack, src.as_mut(), Some(30), |_| {
        n += 1
    })
    .expect("scoring");
    println!("{backend}: {n} frames scored");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: concurrent_scorers BUNDLE CLIP BACKEND[,BACKEND...] [par]");
        std::process::exit(2);
    }
    let bundle = PathBuf::from(&args[1]);
    let clip = PathBuf::from(&args[2]);
    let backends: Vec<Backend> = args[3]
        .split(',')
        .map(|b| b.parse().expect("a backend name"))
        .collect();
    if args.get(4).map(String::as_str) == Some("par") {
        let threads: Vec<_> = backends
            .into_iter()
            .map(|b| {
                let (bundle, clip) = (bundle.clone(), clip.clone());
                std::thread::spawn(move || score(b, &bundle, &clip))
            })
            .collect();
        for t in threads {
            t.join().expect("scoring thread");
        }
    } else {
        for b in backends {
            score(b, &bundle, &clip);
        }
    }
}
