//! `edge-cli`: the thermal-edge command line. Thin: parse, call the library, print.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    thermal_edge::cli::run(thermal_edge::cli::Cli::parse())
}
