//! Tests of the simulator as a whole: determinism, labels against pixels, the written layout.

use std::fs;
use std::path::Path;

use super::*;
use crate::source::npy::{read_npy, NpyData};
use crate::source::read_all;

fn small(anomalies: Vec<AnomalyKind>, hour: f32) -> SimConfig {
    SimConfig {
        width: 96,
        height: 72,
        frames: 10,
        anomalies,
        start_hour: hour,
        ..SimConfig::default()
    }
}

/// A contact sheet of one normal day and night frame and one frame per anomaly kind (full size).
fn contact_sheet() -> image::GrayImage {
    let mut cases: Vec<(Vec<AnomalyKind>, f32, u64)> = vec![(vec![], 13.5, 11), (vec![], 1.5, 12)];
    for (i, k) in AnomalyKind::ALL.into_iter().enumerate() {
        cases.push((vec![k], [10.0, 16.0, 22.5, 8.0, 19.0][i], 20 + i as u64));
    }
    let (w, h) = (384u32, 288u32);
    let cols = 3;
    let rows = cases.len().div_ceil(cols) as u32;
    let mut sheet =
        image::GrayImage::from_pixel(cols as u32 * (w + 4), rows * (h + 4), image::Luma([255]));
    for (n, (anoms, hour, seed)) in cases.into_iter().enumerate() {
        let cfg = SimConfig {
            frames: 60,
            anomalies: anoms,
            start_hour: hour,
            ..SimConfig::default()
        };
        let sim = HarborSimulator::new(cfg, seed).unwrap();
        let idx = sim.events().first().map_or(30, |e| {
            let mid = (e.first_frame + e.last_frame) / 2;
            if sim.labels().unwrap()[mid] == 1 {
                mid
            } else {
                e.first_frame
            }
        });
        let g = sim.to_gray8(&sim.frame(idx).unwrap());
        if std::env::var_os("SIM_DUMP").is_some() {
            g.save(format!("/tmp/sim_case_{n}.png")).unwrap();
            if let Some(e) = sim.events().first() {
                // Four consecutive frames of the event's region, stacked, to check motion.
                let mut strip = image::GrayImage::new(384, 4 * 110);
                for k in 0..4 {
                    let f = sim.to_gray8(&sim.frame((e.first_frame + k).min(59)).unwrap());
                    let part = image::imageops::crop_imm(&f, 0, 80, 384, 110).to_image();
                    image::imageops::replace(&mut strip, &part, 0, 110 * k as i64);
                }
                strip.save(format!("/tmp/sim_seq_{n}.png")).unwrap();
            }
            let crop = image::imageops::crop_imm(&g, 0, 80, 384, 180).to_image();
            image::imageops::resize(&crop, 768, 360, image::imageops::FilterType::Nearest)
                .save(format!("/tmp/sim_zoom_{n}.png"))
                .unwrap();
        }
        let (ox, oy) = (
            (n % cols) as u32 * (w + 4) + 2,
            (n / cols) as u32 * (h + 4) + 2,
        );
        for (x, y, p) in g.enumerate_pixels() {
            sheet.put_pixel(ox + x, oy + y, *p);
        }
    }
    sheet
}

#[test]
#[ignore = "writes /tmp/sim_contact.png for a visual check"]
fn write_contact_sheet() {
    contact_sheet().save("/tmp/sim_contact.png").unwrap();
}

#[test]
fn same_seed_same_frames_different_seed_different_frames() {
    let cfg = small(vec![AnomalyKind::Running], 14.0);
    let a = read_all(&mut HarborSimulator::new(cfg.clone(), 7).unwrap()).unwrap();
    let mut sim_b = HarborSimulator::new(cfg.clone(), 7).unwrap();
    let b = read_all(&mut sim_b).unwrap();
    assert_eq!(a.len(), 10);
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.pixels() == y.pixels() && x.meta == y.meta));
    assert_eq!(
        sim_b.labels(),
        HarborSimulator::new(cfg.clone(), 7).unwrap().labels()
    );
    let c = read_all(&mut HarborSimulator::new(cfg, 8).unwrap()).unwrap();
    assert!(a.iter().zip(&c).all(|(x, y)| x.pixels() != y.pixels()));
    // Random access gives the same frames as the replay.
    let sim = HarborSimulator::new(small(vec![], 3.0), 9).unwrap();
    let replay = read_all(&mut HarborSimulator::new(small(vec![], 3.0), 9).unwrap()).unwrap();
    assert_eq!(sim.frame(4).unwrap(), replay[4]);
    assert!(sim.frame(10).is_none());
}

#[test]
fn labels_are_one_exactly_where_the_anomaly_is_drawn() {
    let n = 96 * 72;
    let (mut with, mut without) = (vec![0.0; n], vec![0.0; n]);
    for kind in AnomalyKind::ALL {
        let mut strong = 0;
        let mut labelled = 0;
        for seed in 0..4 {
            let sim = HarborSimulator::new(
                small(vec![kind], [2.0, 9.0, 15.0, 21.0][seed as usize]),
                seed,
            )
            .unwrap();
            let labels = sim.labels().unwrap();
            assert_eq!(sim.events().len(), 1);
            let e = &sim.events()[0];
            assert_eq!((e.kind, e.zone), (kind, kind.zone()));
            assert_eq!(
                labels.iter().filter(|&&l| l == label::EVENT).count(),
                e.frames,
                "{kind} seed {seed}"
            );
            for (i, &l) in labels.iter().enumerate() {
                let event = l == label::EVENT;
                sim.render_celsius(i, true, &mut with);
                sim.render_celsius(i, false, &mut without);
                let max = with
                    .iter()
                    .zip(&without)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert_eq!(
                    max > 0.0,
                    event,
                    "{kind} seed {seed} frame {i}: max diff {max}"
                );
                assert_eq!(
                    event,
                    (e.first_frame..=e.last_frame).contains(&i) && max > 0.0
                );
                if event {
                    labelled += 1;
                    strong += usize::from(max > 2.0);
                }
            }
        }
        assert!(
            labelled > 0 && strong * 10 >= labelled * 7,
            "{kind}: only {strong} of {labelled} frames stand out"
        );
    }
}

#[test]
fn normal_clips_have_no_events_and_cars_drive_one_way() {
    for seed in 0..6 {
        let sim = HarborSimulator::new(small(vec![], 4.0 * seed as f32), seed).unwrap();
        assert!(sim.labels().unwrap().iter().all(|&l| l == label::NORMAL));
        assert!(sim.events().is_empty());
        for a in &sim.actors {
            assert!(!a.is_anomalous());
            if let Some(face) = a.vehicle_face() {
                assert_eq!(face, 1.0, "cars face the allowed direction");
                assert!(
                    a.displacement(-100.0, 200.0, &sim.view).unwrap() > 0.0,
                    "and move that way"
                );
            }
        }
    }
}

#[test]
fn source_reports_info_timestamps_and_ffc() {
    let date = SimDate::new(2020, 8, 17).unwrap();
    assert_eq!(date.days_since_epoch(), 18_491);
    assert_eq!(
        SimDate::new(2000, 2, 29).unwrap().days_since_epoch(),
        11_016
    );
    assert_eq!(SimDate::new(1969, 12, 31).unwrap().days_since_epoch(), -1);
    assert!(SimDate::new(2021, 2, 29).is_none());
    let cfg = SimConfig {
        clock: Clock::UnixEpoch,
        start_hour: 6.5,
        ..small(vec![AnomalyKind::TruckOnQuay], 0.0)
    };
    let mut sim = HarborSimulator::new(cfg, 3).unwrap();
    let info = sim.info().clone();
    assert_eq!(
        (info.kind, info.units, info.fps, info.frame_count),
        ("simulator", Units::Centikelvin, Some(1.0), Some(10))
    );
    assert_eq!(sim.labels().unwrap().len(), 10);
    let frames = read_all(&mut sim).unwrap();
    let t0 = (18_491 * 86_400 + 6 * 3600 + 1800) * 1_000_000;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.meta.seq, i as u64);
        assert_eq!(f.meta.timestamp_us, t0 + i as i64 * 1_000_000);
        assert_eq!(f.meta.units, Units::Centikelvin);
        assert!(f.meta.ffc.is_some());
        let (lo, hi) = f.min_max();
        assert!(
            crate::frame::centikelvin_to_celsius(lo) > -45.0
                && crate::frame::centikelvin_to_celsius(hi) < 90.0
        );
    }
    sim.rewind();
    assert_eq!(sim.next_frame().unwrap().unwrap(), frames[0]);
    // A frozen FFC frame repeats the previous frame exactly.
    let mut seen = false;
    for seed in 0..30 {
        let sim = HarborSimulator::new(
            SimConfig {
                frames: 30,
                ..small(vec![], 12.0)
            },
            seed,
        )
        .unwrap();
        for e in sim
            .sensor_events()
            .iter()
            .filter(|e| e.kind == SensorEventKind::Ffc)
        {
            let (a, b) = (sim.frame(e.frame - 1).unwrap(), sim.frame(e.frame).unwrap());
            assert_eq!(a.pixels(), b.pixels());
            assert_eq!(b.meta.ffc, Some(crate::frame::FfcState::InProgress));
            seen = true;
        }
    }
    assert!(seen);
}

#[test]
fn invalid_configs_are_rejected_with_reasons() {
    let e = HarborSimulator::new(
        SimConfig {
            width: 8,
            ..SimConfig::default()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("frame size 8×288"), "{e}");
    let e = HarborSimulator::new(
        SimConfig {
            start_hour: 25.0,
            ..SimConfig::default()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("start hour"), "{e}");
    assert_eq!(
        "truck-on-quay".parse::<AnomalyKind>().unwrap(),
        AnomalyKind::TruckOnQuay
    );
    assert!("boat"
        .parse::<AnomalyKind>()
        .unwrap_err()
        .contains("restricted-zone"));
    let mut d = DatasetConfig::new("/nonexistent/x");
    assert!(d
        .validate()
        .unwrap_err()
        .to_string()
        .contains("nothing to write"));
    d.train_clips = 1;
    d.frames = 4;
    assert!(d.validate().unwrap_err().to_string().contains("4 frames"));
    d.frames = 5;
    d.units = Units::Counts;
    assert!(d.validate().unwrap_err().to_string().contains("counts"));
}

fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn written_dataset_has_the_thermal_rare_event_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let cfg = DatasetConfig {
        train_clips: 1,
        test_clips: 2,
        seed: 5,
        frames: 6,
        threads: 2,
        ..DatasetConfig::new(&out)
    };
    let summary = write_dataset(&cfg, &|_, _| {}).unwrap();
    assert_eq!(
        (summary.train_clips, summary.test_clips, summary.frames),
        (1, 2, 18)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 5);
    assert_eq!(
        (manifest["width"].as_u64(), manifest["height"].as_u64()),
        (Some(384), Some(288))
    );
    assert_eq!(manifest["units"], "gray8");
    let clips = manifest["clips"].as_array().unwrap();
    assert_eq!(clips.len(), 3);
    let mut anomalous = 0;
    for clip in clips {
        let rel = clip["path"].as_str().unwrap();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 3, "{rel}");
        assert_eq!(parts[0], clip["split"].as_str().unwrap());
        assert!(
            parts[1].starts_with("202008") && ("20200817".."20200824").contains(&parts[1]),
            "{rel}"
        );
        assert!(
            parts[2].starts_with("clip_") && parts[2].len() >= "clip_1_0000".len(),
            "{rel}"
        );
        let mut names: Vec<String> = fs::read_dir(out.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            (1..=6)
                .map(|i| format!("image_{i:04}.jpg"))
                .collect::<Vec<_>>()
        );
        let img = image::open(out.join(rel).join(&names[0])).unwrap();
        assert_eq!(
            (img.width(), img.height(), img.color()),
            (384, 288, image::ColorType::L8)
        );
        if clip["split"] == "test" {
            let labels = out.join(clip["labels"].as_str().unwrap());
            assert_eq!(
                labels,
                out.join("test_annotations_anomalies")
                    .join(parts[1])
                    .join(format!("{}.npy", parts[2]))
            );
            let arr = read_npy(&labels).unwrap();
            assert_eq!(arr.shape, vec![6]);
            let NpyData::U8(v) = arr.data else {
                panic!("labels must be u8")
            };
            let ones = v.iter().filter(|&&x| x != 0).count();
            assert_eq!(ones as u64, clip["anomalous_frames"].as_u64().unwrap());
            anomalous += ones;
            for ev in clip["events"].as_array().unwrap() {
                assert!(AnomalyKind::ALL.iter().any(|k| k.name() == ev["type"]));
                let (a, b) = (
                    ev["first_frame"].as_u64().unwrap() as usize,
                    ev["last_frame"].as_u64().unwrap() as usize,
                );
                assert!(a <= b && b < 6 && v[a] == 1 && v[b] == 1);
            }
        } else {
            assert!(clip.get("labels").is_none() && clip["events"].as_array().unwrap().is_empty());
        }
    }
    assert_eq!(anomalous, summary.anomalous_frames);
    assert!(anomalous > 0, "test clips carry anomalies");
    assert!(!out
        .join("test_annotations_anomalies")
        .join("..")
        .join("train")
        .join("x")
        .exists());

    // Refuses a non-empty directory; --force replaces only the dataset's own entries.
    let e = write_dataset(&cfg, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    fs::write(out.join("notes.txt"), "keep").unwrap();
    fs::create_dir_all(out.join("train/20200101/clip_99_0000")).unwrap();
    let forced = DatasetConfig {
        overwrite: true,
        train_clips: 2,
        ..cfg.clone()
    };
    write_dataset(&forced, &|_, _| {}).unwrap();
    assert!(out.join("notes.txt").exists() && !out.join("train/20200101").exists());
}

#[test]
fn same_seed_writes_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |dir: &str, seed: u64, threads: usize| {
        let out = tmp.path().join(dir);
        let cfg = DatasetConfig {
            train_clips: 1,
            test_clips: 2,
            seed,
            frames: 5,
            width: 96,
            height: 72,
            threads,
            ..DatasetConfig::new(&out)
        };
        write_dataset(&cfg, &|_, _| {}).unwrap();
        files_under(&out)
            .into_iter()
            .map(|p| (p.clone(), fs::read(out.join(p)).unwrap()))
            .collect::<Vec<_>>()
    };
    let a = write("a", 11, 1);
    let b = write("b", 11, 2);
    assert_eq!(
        a.len(),
        2 + 3 * 5 + 2,
        "manifest, site file, frames, labels"
    );
    assert_eq!(a, b);
    let c = write("c", 12, 2);
    assert_ne!(a, c);
}

#[test]
fn centikelvin_output_is_16_bit_with_plausible_temperatures() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ck");
    let cfg = DatasetConfig {
        train_clips: 1,
        test_clips: 1,
        frames: 5,
        width: 96,
        height: 72,
        units: Units::Centikelvin,
        ..DatasetConfig::new(&out)
    };
    write_dataset(&cfg, &|_, _| {}).unwrap();
    let pngs: Vec<_> = files_under(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(pngs.len(), 10);
    for p in pngs {
        let img = image::open(out.join(&p)).unwrap();
        assert_eq!(img.color(), image::ColorType::L16, "{}", p.display());
        let px = img.into_luma16();
        assert_eq!(px.dimensions(), (96, 72));
        for v in px.as_raw() {
            let c = crate::frame::centikelvin_to_celsius(*v);
            assert!(
                (-30.0..60.0).contains(&c) || c < -30.0 && c > -45.0,
                "{c} °C in {}",
                p.display()
            );
        }
        let warm = px
            .as_raw()
            .iter()
            .filter(|&&v| crate::frame::centikelvin_to_celsius(v) > 0.0)
            .count();
        assert!(
            warm > px.as_raw().len() / 2,
            "most of the scene is above 0 °C"
        );
    }
}

#[test]
fn plans_spread_over_day_and_night_and_cycle_anomaly_kinds() {
    let cfg = DatasetConfig {
        train_clips: 8,
        test_clips: 12,
        seed: 3,
        ..DatasetConfig::new("/x")
    };
    let plans = plan_clips(&cfg);
    assert_eq!(plans.len(), 20);
    let names: std::collections::HashSet<_> = plans.iter().map(|p| p.rel_dir()).collect();
    assert_eq!(names.len(), 20);
    for split in [Split::Train, Split::Test] {
        let hours: Vec<u32> = plans
            .iter()
            .filter(|p| p.split == split)
            .map(|p| p.start_seconds / 3600)
            .collect();
        assert!(
            hours.iter().any(|&h| !(6..20).contains(&h))
                && hours.iter().any(|&h| (9..17).contains(&h)),
            "{hours:?}"
        );
    }
    assert!(plans
        .iter()
        .filter(|p| p.split == Split::Train)
        .all(|p| p.anomalies.is_empty()));
    let test: Vec<_> = plans.iter().filter(|p| p.split == Split::Test).collect();
    assert_eq!(test.iter().filter(|p| p.anomalies.is_empty()).count(), 2);
    for k in AnomalyKind::ALL {
        assert!(test.iter().any(|p| p.anomalies.contains(&k)), "{k}");
    }
    // Train clips do not depend on how many test clips there are.
    let fewer = plan_clips(&DatasetConfig {
        test_clips: 1,
        ..cfg
    });
    assert_eq!(fewer[..8], plans[..8]);
}

/// How much each anomaly kind changes the image: pixels changed by more than 2 °C and the peak
/// change per labelled frame (against the same frame rendered without the anomaly).
#[test]
#[ignore = "report: cargo test --release --lib footprint_report -- --ignored --nocapture"]
fn footprint_report() {
    let n = 384 * 288;
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    for kind in AnomalyKind::ALL {
        let (mut px, mut frames, mut maxd) = (0usize, 0usize, 0.0f32);
        let mut small = 0;
        for seed in 0..6u64 {
            let cfg = SimConfig {
                frames: 120,
                anomalies: vec![kind],
                start_hour: (seed as f32 * 4.1) % 24.0,
                ..SimConfig::default()
            };
            let sim = HarborSimulator::new(cfg, 300 + seed).unwrap();
            for (i, &l) in sim.labels().unwrap().iter().enumerate() {
                if l != 1 {
                    continue;
                }
                sim.render_celsius(i, true, &mut a);
                sim.render_celsius(i, false, &mut b);
                let big = a
                    .iter()
                    .zip(&b)
                    .filter(|(x, y)| (*x - *y).abs() > 2.0)
                    .count();
                let m = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                px += big;
                frames += 1;
                maxd += m;
                small += usize::from(big < 10);
            }
        }
        println!("{kind:>16}: {frames} frames, mean {:.0} px >2°C, mean max diff {:.1} °C, {small} frames under 10 px", px as f32 / frames as f32, maxd / frames as f32);
    }
}
