//! Site configuration (`site.toml`): what a harbor site tells the detector about its view —
//! masked areas (water with waves, flags, ropes) and named zones with their own sensitivity.
//! Polygons are in normalised image coordinates (x right, y down, both in [0, 1]), so one file
//! serves any model input size.
//!
//! ```toml
//! [[mask]]
//! name = "water"
//! polygon = [[0.0, 0.72], [1.0, 0.72], [1.0, 1.0], [0.0, 1.0]]
//!
//! [[zone]]
//! name = "pier-end"
//! polygon = [[0.66, 0.70], [0.80, 0.70], [0.87, 0.86], [0.70, 0.86]]
//! sensitivity = 1.5
//! ```

use std::path::{Path, PathBuf};

use crate::score::zones::{Polygon, Zone, ZoneError, ZoneMap};

/// A masked area.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// What it covers, for people reading the file.
    #[serde(default)]
    pub name: Option<String>,
    /// Outline.
    pub polygon: Polygon,
}

/// A site's configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Areas whose pixels never count.
    #[serde(default, rename = "mask")]
    pub masks: Vec<Mask>,
    /// Named zones, scored on their own.
    #[serde(default, rename = "zone")]
    pub zones: Vec<Zone>,
}

/// Why a site configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A mask or zone is unusable.
    #[error("{path}: {source}")]
    Zone {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: ZoneError,
    },
}

impl SiteConfig {
    /// Reads and checks a site file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks site TOML; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let c: SiteConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        c.zone_map(4, 4).map_err(|source| ConfigError::Zone {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(c)
    }

    /// The mask polygons.
    pub fn mask_polygons(&self) -> Vec<Polygon> {
        self.masks.iter().map(|m| m.polygon.clone()).collect()
    }

    /// Masks and zones rasterised for a `width`×`height` error map.
    pub fn zone_map(&self, width: usize, height: usize) -> Result<ZoneMap, ZoneError> {
        ZoneMap::new(self.zones.clone(), &self.mask_polygons(), width, height)
    }
}

/// The pixels of a `width`×`height` grid under any of `masks` (row-major, true = masked).
pub fn mask_grid(masks: &[Polygon], width: usize, height: usize) -> Result<Vec<bool>, ZoneError> {
    let map = ZoneMap::new(Vec::new(), masks, width, height)?;
    Ok((0..width * height).map(|i| map.is_masked(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_zones() {
        let c = SiteConfig::parse(
            r#"
[[mask]]
name = "water"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]

[[zone]]
name = "pier-end"
polygon = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]
sensitivity = 2.0
"#,
            Path::new("site.toml"),
        )
        .unwrap();
        assert_eq!(c.masks.len(), 1);
        assert_eq!(c.zones[0].name, "pier-end");
        assert_eq!(c.zones[0].sensitivity, 2.0);
        // The lower half of a 4×4 grid is masked.
        let g = mask_grid(&c.mask_polygons(), 4, 4).unwrap();
        assert_eq!(g.iter().filter(|&&m| m).count(), 8);
        assert!(g[15] && !g[0]);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let p = Path::new("harbor/site.toml");
        let e = SiteConfig::parse("[[mask]]\npolygon = [[0.0, 0.0], [1.0, 0.0]]\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("harbor/site.toml") && e.contains("at least 3 points"),
            "{e}"
        );
        let e = SiteConfig::parse(
            "[[zone]]\nname = \"a\"\npolygon = [[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]\n",
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("zone a") && e.contains("1.5"), "{e}");
        let e = SiteConfig::parse("[[masks]]\n", p).unwrap_err().to_string();
        assert!(e.contains("harbor/site.toml") && e.contains("masks"), "{e}");
        let e = SiteConfig::load(Path::new("/nonexistent/site.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/site.toml"), "{e}");
    }
}
