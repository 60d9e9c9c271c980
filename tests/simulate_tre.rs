//! `edge-cli simulate` writes the Thermal Rare Event layout; the TRE reader reads it back with
//! the labels the manifest promises, and `edge-cli info` reports it.

use std::process::Command;

use thermal_edge::source::tre::open_dataset;
use thermal_edge::source::FrameSource;

fn edge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-cli"))
}

#[test]
fn simulated_dataset_reads_back_with_matching_labels() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sim");
    let st = edge_cli()
        .args([
            "simulate",
            "--train-clips",
            "4",
            "--test-clips",
            "4",
            "--seed",
            "1",
            "--frames",
            "24",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let ds = open_dataset(&out).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (4, 4));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let clips = manifest["clips"].as_array().unwrap();

    // The site file masks the water and names the pier end; the zone lies outside the mask.
    let site = thermal_edge::config::SiteConfig::load(&out.join("site.toml")).unwrap();
    assert_eq!(site.masks.len(), 1);
    assert_eq!(site.zones[0].name, "pier-end");
    let map = site.zone_map(160, 120).unwrap();
    let masked = (0..160 * 120).filter(|&i| map.is_masked(i)).count();
    assert!((2_000..12_000).contains(&masked), "{masked} water pixels");
    let zone = site.zones[0].polygon.rasterize(160, 120);
    assert!(zone.iter().any(|&z| z));
    assert!(
        zone.iter()
            .enumerate()
            .all(|(i, &z)| !z || !map.is_masked(i)),
        "the pier end must not be masked"
    );
    let mut total_events = 0;
    for clip in ds.train.iter().chain(&ds.test) {
        assert_eq!(clip.frames.len(), 24, "{}", clip.id());
        let m = clips
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(&clip.id()))
            .unwrap_or_else(|| panic!("{} not in manifest", clip.id()));
        assert_eq!(
            clip.event_frames() as u64,
            m["anomalous_frames"].as_u64().unwrap_or(0),
            "{}",
            clip.id()
        );
        total_events += clip.event_frames();
    }
    assert_eq!(
        total_events as u64,
        manifest["anomalous_frames"].as_u64().unwrap()
    );
    assert!(ds.train.iter().all(|c| c.event_frames() == 0));

    let mut src = ds.test[0].open(thermal_edge::frame::Units::Counts).unwrap();
    assert_eq!((src.info().width, src.info().height), (384, 288));
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!(f.meta.units, thermal_edge::frame::Units::Gray8);

    let info = edge_cli()
        .args(["info", "--json"])
        .arg(out.join("test"))
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["test"]["clips"], 4);
    assert_eq!(v["test"]["frames"], 96);
    assert_eq!(
        v["test"]["labels"]["event"].as_u64().unwrap(),
        ds.test.iter().map(|c| c.event_frames() as u64).sum::<u64>()
    );
    assert_eq!(v["width"], 384);
}
