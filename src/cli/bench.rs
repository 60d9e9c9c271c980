//! `edge-cli bench`: speed and memory of a bundle on this machine, and sizing for a board.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::bench::sizing::{sweep, BoardProfile, Sizing, SweepOptions};
use crate::bench::{
    bench_backend, bench_train, peak, profile_backend, read_frames, simulated_frames, BenchOptions,
    Host, ModelInfo, Report, Run, Summary, SCHEMA,
};
use crate::engine::tract::NodeTime;
use crate::engine::Backend;
use crate::export::bundle::Bundle;
use crate::model::ModelConfig;
use crate::source::{open_source, OpenOptions};

/// Arguments of `edge-cli bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Bundle folder (with bundle.toml).
    #[arg(long, default_value = "models/harbor-edge-s")]
    pub bundle: PathBuf,
    /// Backend to time; repeat for several (default: tract-f32 and tract-int8).
    #[arg(long = "backend")]
    pub backends: Vec<Backend>,
    /// Threads for the model (tract's pool; candle and the peak multiply use as many).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed frames per backend.
    #[arg(long, default_value_t = 50)]
    pub frames: usize,
    /// Untimed frames before them.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Footage to bench with (default: the harbor simulator, 384×288).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Also measure this CPU's peak f32 GFLOP/s with a large matrix multiply.
    #[arg(long)]
    pub peak: bool,
    /// Also time candle CPU training steps of the bundle's model on random data.
    #[arg(long)]
    pub train: bool,
    /// Samples per training step.
    #[arg(long, default_value_t = 4)]
    pub train_batch: usize,
    /// Timed training steps (after one untimed).
    #[arg(long, default_value_t = 5)]
    pub train_steps: usize,
    /// Also time every operator of the tract models and print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// Operators listed by --profile (the slowest).
    #[arg(long, default_value_t = 12)]
    pub profile_top: usize,
    /// Print the report as JSON (the shape tools/peers/peers.py also emits).
    #[arg(long)]
    pub json: bool,
    /// Time every preset and precision and recommend the largest that fits the board.
    #[arg(long, requires = "board")]
    pub sweep: bool,
    /// Board profile for the sweep (speed factor and threads), e.g. boards/raspberry-pi-4.toml.
    #[arg(long)]
    pub board: Option<PathBuf>,
    /// Frame budget of the sweep, ms (1 FPS: 1000).
    #[arg(long, default_value_t = 1000.0)]
    pub budget_ms: f64,
    /// Safety margin of the sweep: predicted p99 × margin must fit the budget.
    #[arg(long, default_value_t = 1.5)]
    pub margin: f64,
    /// Presets the sweep times (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "edge-s,edge-m,paper")]
    pub presets: Vec<String>,
    /// Where the sweep keeps its timing bundles (random weights; built once).
    #[arg(long)]
    pub sweep_dir: Option<PathBuf>,
}

impl BenchArgs {
    /// The backends asked for, tract f32 and int8 when none was.
    fn backends(&self) -> Vec<Backend> {
        if self.backends.is_empty() {
            vec![Backend::TractF32, Backend::TractInt8]
        } else {
            self.backends.clone()
        }
    }
}

/// Candle and gemm size their thread pools from RAYON_NUM_THREADS; it must be set before the
/// first pool starts.
fn pin_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    if rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .is_err()
    {
        log::debug!("rayon's global pool was already running");
    }
}

fn frames(a: &BenchArgs, n: usize) -> anyhow::Result<Vec<crate::frame::ThermalFrame>> {
    match &a.source {
        Some(p) => {
            let mut s = open_source(p, &OpenOptions::default())
                .with_context(|| format!("opening {}", p.display()))?;
            read_frames(s.as_mut(), n).with_context(|| format!("reading {}", p.display()))
        }
        None => Ok(simulated_frames(n, 1)?),
    }
}

/// Runs the benchmark and prints its report.
pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    if a.threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    pin_threads(a.threads);
    if a.sweep {
        return run_sweep(a);
    }
    let bundle = Bundle::open(&a.bundle)
        .with_context(|| format!("opening the bundle {}", a.bundle.display()))?;
    let cfg = bundle.config().clone();
    let backends = a.backends();
    let peak = if a.peak {
        eprintln!("bench: peak f32 rate, threads {}…", a.threads);
        Some(peak::measure(1024, a.threads, Duration::from_secs(2))?)
    } else {
        None
    };
    // At most 64 distinct frames are held (cycled): they count in the baseline RSS.
    let frames = frames(a, (a.warmup + a.frames + cfg.t_length).min(64))?;
    let mut runs = Vec::new();
    for b in backends {
        eprintln!("bench: {b}, threads {}, {} frames…", a.threads, a.frames);
        let opts = BenchOptions {
            threads: a.threads,
            frames: a.frames,
            warmup: a.warmup,
        };
        let mut r = bench_backend(&bundle, b, &frames, opts).with_context(|| format!("{b}"))?;
        if let (Some(p), Some(g)) = (&peak, r.gflops) {
            r.fraction_of_peak = Some(g / p.gflops);
        }
        runs.push(r);
    }
    let mut profiles = Vec::new();
    if a.profile {
        for b in runs.iter().filter_map(|r| r.name.parse::<Backend>().ok()) {
            if matches!(b, Backend::TractF32 | Backend::TractInt8) {
                eprintln!("bench: profiling {b}…");
                profiles.push((b, profile_backend(&bundle, b, &frames, a.threads, 10)?));
            }
        }
    }
    let mut train = Vec::new();
    if a.train {
        eprintln!("bench: candle training step, batch {}…", a.train_batch);
        // As `edge-cli train` runs: freed tensor memory is kept for the next step.
        crate::alloc::mimalloc_purge_delay(-1);
        train.push(bench_train(
            &cfg,
            a.train_batch,
            a.train_steps,
            1,
            a.threads,
        )?);
    }
    let report = Report {
        schema: SCHEMA.into(),
        tool: format!("edge-cli bench {}", env!("CARGO_PKG_VERSION")),
        host: Host::detect(),
        model: ModelInfo::of(&a.bundle.display().to_string(), &cfg),
        peak,
        runs,
        train,
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if a.profile {
            v["profile"] = profiles
                .iter()
                .map(|(b, p)| serde_json::json!({"backend": b.name(), "nodes": p}))
                .collect();
        }
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report, &cfg)?;
        for (b, p) in &profiles {
            print_profile(&mut out, *b, p, a.profile_top)?;
        }
    }
    Ok(())
}

fn print_profile(
    out: &mut impl Write,
    backend: Backend,
    nodes: &[NodeTime],
    top: usize,
) -> std::io::Result<()> {
    let total: f64 = nodes.iter().map(|n| n.ms).sum();
    writeln!(
        out,
        "\n{backend}: {total:.2} ms in {} operators",
        nodes.len()
    )?;
    let mut by_op: Vec<(String, f64, usize)> = Vec::new();
    for n in nodes {
        match by_op.iter_mut().find(|(op, _, _)| *op == n.op) {
            Some(e) => {
                e.1 += n.ms;
                e.2 += 1;
            }
            None => by_op.push((n.op.clone(), n.ms, 1)),
        }
    }
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    writeln!(out, "  by operator:")?;
    for (op, ms, count) in by_op.iter().take(top) {
        writeln!(
            out,
            "  {ms:>8.2} ms {:>5.1}%  {op} ×{count}",
            100.0 * ms / total.max(1e-12)
        )?;
    }
    let mut slow: Vec<&NodeTime> = nodes.iter().collect();
    slow.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    writeln!(out, "  slowest nodes:")?;
    for n in slow.iter().take(top) {
        writeln!(
            out,
            "  {:>8.2} ms {:>5.1}%  {} ({})",
            n.ms,
            100.0 * n.ms / total.max(1e-12),
            n.node,
            n.op
        )?;
    }
    Ok(())
}

fn ms(s: &Option<Summary>) -> String {
    s.map_or_else(
        || "—".into(),
        |s| format!("{:.2} / {:.2}", s.p50_ms, s.p99_ms),
    )
}

fn print_report(out: &mut impl Write, r: &Report, cfg: &ModelConfig) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({}), input {:?}, {:.3} GMAC/frame, {} parameters",
        r.model.bundle,
        cfg,
        r.model.input,
        r.model.macs as f64 / 1e9,
        r.model.params
    )?;
    writeln!(
        out,
        "host: {}, {} logical CPUs",
        r.host.cpu, r.host.logical_cpus
    )?;
    if let Some(p) = &r.peak {
        writeln!(
            out,
            "peak f32 (threads {}, {n}×{n} matmul): {:.1} GFLOP/s (tract {:.1}, gemm {:.1})",
            p.threads,
            p.gflops,
            p.tract_gflops,
            p.gemm_gflops,
            n = p.n
        )?;
    }
    writeln!(
        out,
        "\n{:<12} {:>3} {:>15} {:>15} {:>15} {:>15} {:>7} {:>8} {:>6} {:>11}",
        "backend",
        "thr",
        "preprocess ms",
        "inference ms",
        "scoring ms",
        "frame ms",
        "fps",
        "GFLOP/s",
        "%peak",
        "RSS MiB"
    )?;
    writeln!(
        out,
        "{:>36}{:>16}{:>16}{:>16}{:>42}",
        "p50 / p99", "p50 / p99", "p50 / p99", "p50 / p99", "peak (base)"
    )?;
    for run in &r.runs {
        print_run(out, run)?;
    }
    for t in &r.train {
        writeln!(
            out,
            "\n{}: batch {}, threads {}: p50 {:.1} ms, p99 {:.1} ms ({} steps)",
            t.name, t.batch, t.threads, t.step.p50_ms, t.step.p99_ms, t.steps
        )?;
    }
    Ok(())
}

fn print_run(out: &mut impl Write, run: &Run) -> std::io::Result<()> {
    let s = &run.stages;
    writeln!(
        out,
        "{:<12} {:>3} {:>15} {:>15} {:>15} {:>15} {:>7.1} {:>8} {:>6} {:>11}",
        run.name,
        run.threads,
        ms(&s.preprocess),
        ms(&s.inference),
        ms(&s.scoring),
        ms(&s.frame),
        run.fps,
        run.gflops.map_or("—".into(), |g| format!("{g:.1}")),
        run.fraction_of_peak
            .map_or("—".into(), |f| format!("{:.0}%", 100.0 * f)),
        match (run.peak_rss_mib, run.baseline_rss_mib) {
            (Some(p), Some(b)) => format!("{p:.0} ({b:.0})"),
            (Some(p), None) => format!("{p:.0}"),
            _ => "—".into(),
        },
    )
}

fn run_sweep(a: &BenchArgs) -> anyhow::Result<()> {
    let board_path = a.board.as_ref().context("--sweep needs --board")?;
    let board = BoardProfile::load(board_path)?;
    for p in &a.presets {
        ModelConfig::preset(p).with_context(|| format!("--presets: {p}"))?;
    }
    let backends = a.backends();
    let dir = match &a.sweep_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/thermal-edge/sweep"),
    };
    let opts = SweepOptions {
        presets: a.presets.clone(),
        backends,
        budget_ms: a.budget_ms,
        margin: a.margin,
        dir,
        frames: a.frames,
        warmup: a.warmup,
    };
    let frames = frames(a, (a.warmup + a.frames + 8).min(64))?;
    let sizing = sweep(board, &opts, &frames, |what| {
        eprintln!("bench: sweep {what}…")
    })?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &sizing)?;
        writeln!(out)?;
    } else {
        print_sizing(&mut out, &sizing)?;
    }
    Ok(())
}

fn print_sizing(out: &mut impl Write, s: &Sizing) -> std::io::Result<()> {
    writeln!(
        out,
        "board {}: speed factor {} per thread, {} threads, budget {} ms, margin {}×",
        s.board.board, s.board.speed_factor, s.board.threads, s.budget_ms, s.margin
    )?;
    writeln!(
        out,
        "\n{:<8} {:<11} {:>7} {:>17} {:>17} {:>6} {:>15} {:>5}",
        "preset",
        "backend",
        "GMAC",
        "here 1 thr ms",
        "here 2 thr ms",
        "gain",
        "board p99 ms",
        "fits"
    )?;
    writeln!(out, "{:>45}{:>18}", "p50 / p99", "p50 / p99")?;
    for c in &s.candidates {
        writeln!(
            out,
            "{:<8} {:<11} {:>7.2} {:>17} {:>17} {:>6.2} {:>15.0} {:>5}",
            c.preset,
            c.backend,
            c.macs as f64 / 1e9,
            ms(&c.one_thread.stages.frame),
            c.two_threads
                .as_ref()
                .map_or("—".into(), |t| ms(&t.stages.frame)),
            c.thread_gain,
            c.predicted_p99_ms,
            if c.fits { "yes" } else { "no" }
        )?;
    }
    match &s.recommended {
        Some((p, b)) => writeln!(
            out,
            "\nrecommended: {p} with {b} (the largest model whose predicted p99 × {} fits {} ms)",
            s.margin, s.budget_ms
        ),
        None => writeln!(
            out,
            "\nno preset fits {} ms with a {}× margin on this board: use a smaller input or width",
            s.budget_ms, s.margin
        ),
    }
}
