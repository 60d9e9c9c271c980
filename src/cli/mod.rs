//! The `edge-cli` command line: parse, call the library, print. One file per subcommand.

pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod export;
pub mod infer;
pub mod info;
pub mod listen;
pub mod run;
pub mod simulate;
pub mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for commands that are planned but not built yet, and for usage errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a command that ran and failed.
pub const EXIT_FAILURE: u8 = 1;

/// thermal-edge: anomaly detection for fixed thermal cameras at harbor sites.
#[derive(Debug, Parser)]
#[command(name = "edge-cli", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `edge-cli`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch a camera (or a replay) at 1 FPS and raise alerts.
    Run(run::RunArgs),
    /// Train the anomaly model on normal footage.
    Train(train::TrainArgs),
    /// Export a checkpoint to a model bundle (f32 + int8 ONNX, f16 weights, parity report).
    Export(export::ExportArgs),
    /// Score footage with a bundle and print per-frame scores.
    Infer(infer::InferArgs),
    /// Set alert thresholds from normal footage to a false-alarm budget.
    Calibrate(calibrate::CalibrateArgs),
    /// Measure detection on labelled clips.
    Eval(eval::EvalArgs),
    /// Measure speed and memory of a bundle on this machine.
    Bench(bench::BenchArgs),
    /// Write a simulated harbor dataset (Thermal Rare Event layout) with labelled anomalies.
    Simulate(simulate::SimulateArgs),
    /// Receive alerts over MQTT or a serial line (the consumer side).
    Listen(listen::ListenArgs),
    /// Describe a source or dataset: frames, size, units, value range, labels.
    Info(info::InfoArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Train(_) => "train",
            Command::Export(_) => "export",
            Command::Infer(_) => "infer",
            Command::Calibrate(_) => "calibrate",
            Command::Eval(_) => "eval",
            Command::Bench(_) => "bench",
            Command::Simulate(_) => "simulate",
            Command::Listen(_) => "listen",
            Command::Info(_) => "info",
        }
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let name = cli.command.name();
    let result = match cli.command {
        Command::Simulate(a) => simulate::run(&a),
        Command::Info(a) => info::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Infer(a) => infer::run(&a),
        Command::Calibrate(a) => calibrate::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Listen(a) => listen::run(&a),
        Command::Bench(a) => bench::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-cli {name}: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
