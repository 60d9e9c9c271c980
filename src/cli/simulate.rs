//! `edge-cli simulate`. (Being written.)

/// Arguments of `edge-cli simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}

/// Runs `edge-cli simulate`.
pub fn run(_args: &SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet available")
}
