//! `edge-cli info`. (Being written.)

/// Arguments of `edge-cli info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {}

/// Runs `edge-cli info`.
pub fn run(_args: &InfoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet available")
}
