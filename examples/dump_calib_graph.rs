//! Writes the calibration-form f32 graph of a checkpoint with every activation site exposed as
//! an output, and prints the site → value map (for layer-by-layer int8 debugging).
//! `cargo run --release --example dump_calib_graph -- CHECKPOINT OUT.onnx`

use prost::Message;
use thermal_edge::export::graph::{build_graph_with, GraphMode};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (store, net) = thermal_edge::model::train::load_model(
        std::path::Path::new(&args[1]),
        &candle_core::Device::Cpu,
    )?;
    let (mut b, sites) = build_graph_with(&net, &store, GraphMode::Calibrate)?;
    let mut seen = Vec::new();
    for s in &sites {
        println!("{} {}", s.name, s.value);
        if s.value != "frames" && !seen.contains(&s.value) {
            b.output_any_shape(&s.value);
            seen.push(s.value.clone());
        }
    }
    std::fs::write(&args[2], b.finish("calib", "").encode_to_vec())?;
    Ok(())
}
