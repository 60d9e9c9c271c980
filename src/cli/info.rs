//! `edge-cli info`: describe a source or a dataset.

use std::path::PathBuf;

use anyhow::Context;

use crate::frame::Units;
use crate::source::summary::{
    is_dataset, summarize_dataset, summarize_source, DatasetSummary, LabelCounts, SourceSummary,
};
use crate::source::{open_source, tre, OpenOptions};

/// Arguments of `edge-cli info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A source (.cptv, .npy, .npy.xz, .y16, image or image folder) or a Thermal Rare Event
    /// dataset (its root, or its train/ or test/ folder).
    #[arg(required_unless_present = "preset")]
    pub path: Option<PathBuf>,
    /// Describe a model preset instead (paper, edge-m, edge-s): parameters, GMAC per frame,
    /// activation memory.
    #[arg(long, conflicts_with = "path")]
    pub preset: Option<String>,
    /// With --preset: the SSMCTB variant (paper, reference-code, sspcab, none).
    #[arg(long, default_value = "paper")]
    pub block: crate::model::BlockVariant,
    /// Units of 16-bit pixels: centikelvin, counts or gray8.
    #[arg(long)]
    pub units: Option<Units>,
    /// Frame width, for raw Y16 files.
    #[arg(long)]
    pub width: Option<u32>,
    /// Frame height, for raw Y16 files.
    #[arg(long)]
    pub height: Option<u32>,
    /// Frame rate of image folders and raw files.
    #[arg(long)]
    pub fps: Option<f32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn labels_line(l: &LabelCounts) -> String {
    format!(
        "{} event, {} normal, {} ignore",
        l.event, l.normal, l.ignore
    )
}

fn print_source(s: &SourceSummary) {
    println!("source:   {}", s.info.name);
    println!("kind:     {}", s.info.kind);
    println!("frames:   {}", s.frames);
    println!("size:     {}×{}", s.info.width, s.info.height);
    println!("units:    {}", s.info.units);
    println!("range:    {}..{}", s.min, s.max);
    if let Some((lo, hi)) = s.celsius {
        println!("celsius:  {lo:.2}..{hi:.2} °C");
    }
    match s.info.fps {
        Some(fps) => {
            println!("fps:      {fps:.2}");
            println!("duration: {:.1} s", s.duration_s);
        }
        None => println!("fps:      unknown (give --fps)"),
    }
    match &s.labels {
        Some(l) => println!("labels:   {}", labels_line(l)),
        None => println!("labels:   none"),
    }
}

fn print_dataset(d: &DatasetSummary) {
    println!("dataset:  {} (Thermal Rare Event layout)", d.root);
    println!("size:     {}×{}", d.width, d.height);
    println!("units:    {}", d.units);
    println!("range:    {}..{}", d.min, d.max);
    if let Some((lo, hi)) = d.celsius {
        println!("celsius:  {lo:.2}..{hi:.2} °C");
    }
    for (name, s) in [("train", &d.train), ("test", &d.test)] {
        if s.clips == 0 {
            continue;
        }
        println!(
            "{name}:    {} clips, {} frames; labels {}; {} clips with events",
            s.clips,
            s.frames,
            labels_line(&s.labels),
            s.clips_with_events
        );
    }
    if d.test.clips > 0 {
        println!(
            "\n{:<32} {:>7} {:>7} {:>7}",
            "test clip", "frames", "event", "normal"
        );
        for c in &d.test.per_clip {
            println!(
                "{:<32} {:>7} {:>7} {:>7}",
                c.id, c.frames, c.labels.event, c.labels.normal
            );
        }
    }
}

fn print_preset(name: &str, block: crate::model::BlockVariant, json: bool) -> anyhow::Result<()> {
    let cfg = crate::model::ModelConfig::preset(name)?.with_block(block);
    let c = crate::model::cost::cost(&cfg);
    if json {
        let v = serde_json::json!({"config": cfg, "params": c.params, "macs": c.macs, "activation_bytes": c.activation_bytes, "layers": c.layers});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("preset:      {name}");
    println!(
        "input:       {}×{} (H×W), {} frame(s) in, {:?}",
        cfg.height,
        cfg.width,
        cfg.input_frames(),
        cfg.mode
    );
    println!(
        "width:       ×{} (channels {}/{}/{}/{})",
        cfg.width_mult,
        cfg.ch(64),
        cfg.ch(128),
        cfg.ch(256),
        cfg.ch(512)
    );
    println!(
        "memory:      {} items × {}",
        cfg.memory_items,
        cfg.memory_dim()
    );
    println!("block:       {}", cfg.block.variant.name());
    println!(
        "parameters:  {} ({:.2} MB f32)",
        c.params,
        c.params as f64 * 4.0 / 1e6
    );
    println!(
        "compute:     {:.3} GMAC per frame ({:.3} GFLOP)",
        c.macs as f64 / 1e9,
        2.0 * c.macs as f64 / 1e9
    );
    println!(
        "activations: {:.1} MB per frame (all layer outputs, f32)",
        c.activation_bytes as f64 / 1e6
    );
    Ok(())
}

/// Runs `edge-cli info`.
pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.preset {
        return print_preset(p, args.block, args.json);
    }
    let path = args
        .path
        .as_ref()
        .expect("clap requires a path without --preset");
    if is_dataset(path) {
        let ds = tre::open_dataset(path)?;
        let s = summarize_dataset(&ds, args.units.unwrap_or(Units::Counts))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print_dataset(&s);
        }
        return Ok(());
    }
    let opts = OpenOptions {
        units: args.units,
        width: args.width,
        height: args.height,
        fps: args.fps,
    };
    let mut src = open_source(path, &opts)?;
    let s =
        summarize_source(src.as_mut()).with_context(|| format!("reading {}", path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_source(&s);
    }
    Ok(())
}
