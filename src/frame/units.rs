//! Pixel units and temperature conversions.

use std::fmt;
use std::str::FromStr;

/// Offset between Kelvin and Celsius.
pub const KELVIN_OFFSET: f32 = 273.15;

/// What a frame's 16-bit pixel values mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Units {
    /// Radiometric: hundredths of a kelvin (Lepton TLinear, Boson radiometric).
    Centikelvin,
    /// Raw sensor counts (14-bit Lepton without TLinear); relative, not temperatures.
    Counts,
    /// 8-bit grey levels (AGC output, JPEG datasets), stored in the low byte.
    Gray8,
}

impl Units {
    /// Stable lower-case name, as used on the command line and in config files.
    pub fn name(self) -> &'static str {
        match self {
            Units::Centikelvin => "centikelvin",
            Units::Counts => "counts",
            Units::Gray8 => "gray8",
        }
    }
}

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Units {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "centikelvin" | "ck" => Ok(Units::Centikelvin),
            "counts" | "raw" => Ok(Units::Counts),
            "gray8" | "8bit" | "8-bit" => Ok(Units::Gray8),
            _ => Err(format!(
                "unknown units '{s}' (expected centikelvin, counts or gray8)"
            )),
        }
    }
}

/// Kelvin to degrees Celsius.
pub fn kelvin_to_celsius(k: f32) -> f32 {
    k - KELVIN_OFFSET
}

/// Degrees Celsius to Kelvin.
pub fn celsius_to_kelvin(c: f32) -> f32 {
    c + KELVIN_OFFSET
}

/// A centikelvin pixel value to degrees Celsius.
pub fn centikelvin_to_celsius(ck: u16) -> f32 {
    (f32::from(ck) - 27315.0) / 100.0
}

/// Degrees Celsius to the nearest centikelvin pixel value (saturating at the u16 range).
pub fn celsius_to_centikelvin(c: f32) -> u16 {
    (c * 100.0 + 27315.0).round().clamp(0.0, 65535.0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celsius_round_trips_through_centikelvin() {
        for c in [-40.0f32, -10.5, 0.0, 21.37, 80.0, 150.0] {
            let ck = celsius_to_centikelvin(c);
            assert!(
                (centikelvin_to_celsius(ck) - c).abs() <= 0.005 + 1e-4,
                "{c} -> {ck}"
            );
        }
        assert_eq!(celsius_to_centikelvin(0.0), 27315);
        assert_eq!(celsius_to_centikelvin(-300.0), 0);
        assert!((kelvin_to_celsius(celsius_to_kelvin(12.5)) - 12.5).abs() < 1e-5);
    }

    #[test]
    fn units_parse_and_print() {
        for u in [Units::Centikelvin, Units::Counts, Units::Gray8] {
            assert_eq!(u.name().parse::<Units>().unwrap(), u);
        }
        assert!("kelvin".parse::<Units>().unwrap_err().contains("kelvin"));
    }
}
