//! Regimes for regime-aware thresholds: calibration fits one threshold per regime (day and night,
//! cold and warm scenes), and the runtime picks each frame's regime from its timestamp or its
//! scene temperature. Sans-I/O: a spec classifies values it is given.

use std::fmt;

use crate::stats::median;

/// Furthest a time zone lies from UTC (UTC+14, Line Islands; UTC−12 is within it).
const MAX_UTC_OFFSET_H: f64 = 14.0;

const US_PER_HOUR: f64 = 3_600_000_000.0;
const US_PER_DAY: i64 = 86_400_000_000;

/// How frames are split into regimes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RegimeSpec {
    /// One regime, "all".
    #[default]
    None,
    /// "day" from `day_start_h` (inclusive) to `day_end_h` (exclusive) local time, else "night";
    /// a start after the end wraps the day window over midnight.
    DayNight {
        /// Local hour the day starts, in [0, 24].
        #[serde(default = "default_day_start_h")]
        day_start_h: f64,
        /// Local hour the day ends, in [0, 24].
        #[serde(default = "default_day_end_h")]
        day_end_h: f64,
        /// Local time minus UTC, hours (within ±14).
        #[serde(default)]
        utc_offset_h: f64,
    },
    /// "cold" below `split_c` of scene mean temperature, else "warm".
    Temperature {
        /// Scene mean temperature separating the regimes, °C.
        split_c: f64,
    },
}

fn default_day_start_h() -> f64 {
    7.0
}

fn default_day_end_h() -> f64 {
    19.0
}

/// The forms `--regimes` accepts, for error messages.
const CLI_FORMS: &str = "expected none, day-night, day-night:START-END or \
    day-night:START-END:±UTC_OFFSET (hours, e.g. day-night:6-20:+2), or temperature:SPLIT_C \
    (°C, e.g. temperature:12.5)";

/// Why a regime spec is unusable or a frame cannot be classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegimeError {
    /// A day-night hour outside [0, 24].
    #[error("day-night {field} {value} must be an hour in [0, 24]")]
    Hour {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// The day starts when it ends, so one regime would be empty.
    #[error(
        "day-night day_start_h ({start}) and day_end_h ({end}) must differ (modulo 24 h), or the day or the night would be empty"
    )]
    SameHour {
        /// Configured `day_start_h`.
        start: f64,
        /// Configured `day_end_h`.
        end: f64,
    },
    /// A UTC offset that is not finite or beyond ±14 h.
    #[error("day-night utc_offset_h {0} must be a finite offset within ±14 h")]
    Offset(f64),
    /// A temperature split that is not finite.
    #[error("temperature split_c {0} must be a finite temperature (°C)")]
    Split(f64),
    /// `temperature` without a split on the command line; calibration can fit one with
    /// [`RegimeSpec::fit_temperature_split`].
    #[error(
        "the temperature regime needs a split: temperature:SPLIT_C (°C, e.g. temperature:12.5); calibrate can fit one from the footage"
    )]
    SplitNeeded,
    /// A temperature regime and a frame without a scene temperature.
    #[error(
        "the temperature regime needs the scene temperature: the camera must be radiometric or the frame carry a temperature"
    )]
    NoSceneTemperature,
    /// A scene temperature that is not finite.
    #[error("scene temperature {0} °C is not a finite number")]
    SceneTemperature(f64),
    /// A `--regimes` string that is none of the accepted forms.
    #[error("cannot read the regimes '{input}': {why}; {CLI_FORMS}")]
    Parse {
        /// The string given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
}

impl RegimeSpec {
    /// Day 07:00–19:00 UTC.
    fn day_night_default() -> Self {
        Self::DayNight {
            day_start_h: default_day_start_h(),
            day_end_h: default_day_end_h(),
            utc_offset_h: 0.0,
        }
    }

    /// The regimes' names, in the order thresholds are listed.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::None => vec!["all"],
            Self::DayNight { .. } => vec!["day", "night"],
            Self::Temperature { .. } => vec!["cold", "warm"],
        }
    }

    /// Checks the hours, the offset and the split.
    pub fn validate(&self) -> Result<(), RegimeError> {
        match *self {
            Self::None => Ok(()),
            Self::DayNight {
                day_start_h,
                day_end_h,
                utc_offset_h,
            } => {
                for (field, value) in [("day_start_h", day_start_h), ("day_end_h", day_end_h)] {
                    if !(0.0..=24.0).contains(&value) {
                        return Err(RegimeError::Hour { field, value });
                    }
                }
                if day_start_h.rem_euclid(24.0) == day_end_h.rem_euclid(24.0) {
                    return Err(RegimeError::SameHour {
                        start: day_start_h,
                        end: day_end_h,
                    });
                }
                if !(utc_offset_h.is_finite() && utc_offset_h.abs() <= MAX_UTC_OFFSET_H) {
                    return Err(RegimeError::Offset(utc_offset_h));
                }
                Ok(())
            }
            Self::Temperature { split_c } => {
                if split_c.is_finite() {
                    Ok(())
                } else {
                    Err(RegimeError::Split(split_c))
                }
            }
        }
    }

    /// The regime of a frame captured at `t_us` (Unix time, µs) whose scene mean temperature is
    /// `scene_c` (°C, radiometric cameras only). Validates the spec first, since one read from a
    /// file may not have been.
    pub fn classify(&self, t_us: i64, scene_c: Option<f64>) -> Result<&'static str, RegimeError> {
        self.validate()?;
        match *self {
            Self::None => Ok("all"),
            Self::DayNight {
                day_start_h,
                day_end_h,
                utc_offset_h,
            } => {
                // The hour of the UTC day in integer µs first: a whole timestamp in f64 hours
                // would keep less precision than the boundaries need.
                let utc_h = t_us.rem_euclid(US_PER_DAY) as f64 / US_PER_HOUR;
                let mut h = (utc_h + utc_offset_h).rem_euclid(24.0);
                // rem_euclid of a tiny negative rounds up to 24.
                if h >= 24.0 {
                    h = 0.0;
                }
                let day = if day_start_h < day_end_h {
                    day_start_h <= h && h < day_end_h
                } else {
                    h >= day_start_h || h < day_end_h
                };
                Ok(if day { "day" } else { "night" })
            }
            Self::Temperature { split_c } => match scene_c {
                None => Err(RegimeError::NoSceneTemperature),
                Some(c) if !c.is_finite() => Err(RegimeError::SceneTemperature(c)),
                Some(c) => Ok(if c < split_c { "cold" } else { "warm" }),
            },
        }
    }

    /// Parses `--regimes`: `none`, `day-night` (07–19 UTC), `day-night:6-20` (day hours),
    /// `day-night:6-20:+2` (and the local time's UTC offset) or `temperature:12.5` (split, °C).
    /// `temperature` alone gives [`RegimeError::SplitNeeded`], for the caller to fit the split.
    pub fn parse_cli(s: &str) -> Result<Self, RegimeError> {
        let input = s.trim();
        let bad = |why: String| RegimeError::Parse {
            input: input.to_string(),
            why,
        };
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("{what} '{text}' is not a number")))
        };
        let (kind, params) = match input.split_once(':') {
            Some((kind, params)) => (kind, Some(params)),
            None => (input, None),
        };
        let spec = match (kind, params) {
            ("none", None) => Self::None,
            ("none", Some(_)) => return Err(bad("none takes no parameters".into())),
            ("day-night", None) => Self::day_night_default(),
            ("day-night", Some(params)) => {
                let (hours, offset) = match params.split_once(':') {
                    Some((hours, offset)) => (hours, Some(offset)),
                    None => (params, None),
                };
                let (start, end) = hours
                    .split_once('-')
                    .ok_or_else(|| bad(format!("day hours '{hours}' are not START-END")))?;
                Self::DayNight {
                    day_start_h: number(start, "day start hour")?,
                    day_end_h: number(end, "day end hour")?,
                    utc_offset_h: match offset {
                        Some(offset) => number(offset, "UTC offset")?,
                        None => 0.0,
                    },
                }
            }
            ("temperature", None) => return Err(RegimeError::SplitNeeded),
            ("temperature", Some(split)) => Self::Temperature {
                split_c: number(split, "split temperature")?,
            },
            _ => return Err(bad(format!("unknown kind '{kind}'"))),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// A data-driven temperature split: the median of the finite scene temperatures (so that
    /// both regimes get half the calibration footage); None without any.
    pub fn fit_temperature_split(scene_c: &[f64]) -> Option<f64> {
        let finite: Vec<f64> = scene_c.iter().copied().filter(|c| c.is_finite()).collect();
        median(&finite)
    }
}

/// The `--regimes` form, which [`RegimeSpec::parse_cli`] reads back.
impl fmt::Display for RegimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::DayNight {
                day_start_h,
                day_end_h,
                utc_offset_h,
            } => write!(f, "day-night:{day_start_h}-{day_end_h}:{utc_offset_h:+}"),
            Self::Temperature { split_c } => write!(f, "temperature:{split_c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-06-01 `h`:`m`:`s` UTC, µs.
    fn at(h: i64, m: i64, s: i64) -> i64 {
        (1_717_200_000 + h * 3600 + m * 60 + s) * 1_000_000
    }

    fn day_night(start: f64, end: f64, offset: f64) -> RegimeSpec {
        RegimeSpec::DayNight {
            day_start_h: start,
            day_end_h: end,
            utc_offset_h: offset,
        }
    }

    fn regime(spec: &RegimeSpec, t_us: i64) -> &'static str {
        spec.classify(t_us, None).unwrap()
    }

    #[test]
    fn day_night_hour_boundaries() {
        let spec = RegimeSpec::parse_cli("day-night").unwrap();
        assert_eq!(spec, day_night(7.0, 19.0, 0.0));
        assert_eq!(regime(&spec, at(7, 0, 0) - 1), "night");
        assert_eq!(regime(&spec, at(7, 0, 0)), "day");
        assert_eq!(regime(&spec, at(12, 0, 0)), "day");
        assert_eq!(regime(&spec, at(19, 0, 0) - 1), "day");
        assert_eq!(regime(&spec, at(19, 0, 0)), "night");
        assert_eq!(regime(&spec, at(0, 0, 0)), "night");
        // Before 1970: 1969-12-31 23:59:59.999999 and 12:00.
        assert_eq!(regime(&spec, -1), "night");
        assert_eq!(regime(&spec, -12 * 3_600_000_000), "day");
    }

    #[test]
    fn day_windows_wrap_midnight() {
        let spec = day_night(22.0, 6.0, 0.0);
        for (t, want) in [
            (at(21, 59, 59), "night"),
            (at(22, 0, 0), "day"),
            (at(23, 59, 59), "day"),
            (at(0, 0, 0), "day"),
            (at(5, 59, 59), "day"),
            (at(6, 0, 0), "night"),
            (at(12, 0, 0), "night"),
        ] {
            assert_eq!(regime(&spec, t), want, "at {t}");
        }
        // 24 as a start is midnight: day 00:00–07:00.
        let spec = day_night(24.0, 7.0, 0.0);
        assert_eq!(regime(&spec, at(0, 0, 0)), "day");
        assert_eq!(regime(&spec, at(7, 0, 0)), "night");
    }

    #[test]
    fn utc_offsets_shift_the_local_hour() {
        let east = RegimeSpec::parse_cli("day-night:7-19:+2").unwrap();
        assert_eq!(regime(&east, at(4, 59, 59)), "night");
        assert_eq!(regime(&east, at(5, 0, 0)), "day");
        assert_eq!(regime(&east, at(17, 0, 0)), "night");
        // 23:30 UTC is 01:30 the next local day.
        assert_eq!(regime(&east, at(23, 30, 0)), "night");
        let west = day_night(7.0, 19.0, -5.0);
        // 23:30 UTC is 18:30 local; 00:30 UTC is 19:30 the previous local day.
        assert_eq!(regime(&west, at(23, 30, 0)), "day");
        assert_eq!(regime(&west, at(0, 30, 0)), "night");
        assert_eq!(regime(&west, at(12, 0, 0)), "day");
        // Half-hour zones: 01:30 UTC is 07:00 in UTC+5:30.
        let india = day_night(7.0, 19.0, 5.5);
        assert_eq!(regime(&india, at(1, 30, 0) - 1), "night");
        assert_eq!(regime(&india, at(1, 30, 0)), "day");
    }

    #[test]
    fn temperature_regimes_need_a_scene_temperature() {
        let spec = RegimeSpec::parse_cli("temperature:12.5").unwrap();
        assert_eq!(spec, RegimeSpec::Temperature { split_c: 12.5 });
        assert_eq!(spec.classify(0, Some(12.4)), Ok("cold"));
        assert_eq!(spec.classify(0, Some(12.5)), Ok("warm"));
        assert_eq!(spec.classify(0, Some(-30.0)), Ok("cold"));
        let e = spec.classify(0, None).unwrap_err();
        assert_eq!(e, RegimeError::NoSceneTemperature);
        assert!(e.to_string().contains("radiometric"), "{e}");
        assert!(matches!(
            spec.classify(0, Some(f64::NAN)),
            Err(RegimeError::SceneTemperature(_))
        ));
        // The other specs ignore the temperature.
        assert_eq!(RegimeSpec::None.classify(0, None), Ok("all"));
        assert_eq!(RegimeSpec::None.classify(0, Some(f64::NAN)), Ok("all"));
    }

    #[test]
    fn names_list_every_regime_classify_returns() {
        assert_eq!(RegimeSpec::None.names(), ["all"]);
        assert_eq!(day_night(7.0, 19.0, 0.0).names(), ["day", "night"]);
        assert_eq!(
            RegimeSpec::Temperature { split_c: 0.0 }.names(),
            ["cold", "warm"]
        );
    }

    #[test]
    fn parse_cli_accepts_the_documented_forms() {
        for (s, want) in [
            ("none", RegimeSpec::None),
            (" day-night ", day_night(7.0, 19.0, 0.0)),
            ("day-night:6-20", day_night(6.0, 20.0, 0.0)),
            ("day-night:6-20:+2", day_night(6.0, 20.0, 2.0)),
            ("day-night:6.5-20:-5.5", day_night(6.5, 20.0, -5.5)),
            ("day-night:22-6:1", day_night(22.0, 6.0, 1.0)),
            (
                "temperature:12.5",
                RegimeSpec::Temperature { split_c: 12.5 },
            ),
            ("temperature:-3", RegimeSpec::Temperature { split_c: -3.0 }),
        ] {
            assert_eq!(RegimeSpec::parse_cli(s), Ok(want), "{s}");
            // Display writes the same form back.
            assert_eq!(RegimeSpec::parse_cli(&want.to_string()), Ok(want), "{want}");
        }
        assert_eq!(
            RegimeSpec::parse_cli("temperature"),
            Err(RegimeError::SplitNeeded)
        );
    }

    #[test]
    fn parse_cli_refuses_bad_strings_naming_the_forms() {
        for s in [
            "",
            "daynight",
            "none:1",
            "day-night:6",
            "day-night:six-20",
            "day-night:6-20:UTC",
            "temperature:warm",
        ] {
            let e = RegimeSpec::parse_cli(s).unwrap_err();
            assert!(matches!(e, RegimeError::Parse { .. }), "{s}: {e}");
            assert!(e.to_string().contains("day-night:START-END"), "{e}");
        }
        // Numbers that parse but fail validation name the field.
        for (s, field) in [
            ("day-night:6-25", "day_end_h"),
            ("day-night:7-7", "day_start_h"),
            ("day-night:0-24", "day_start_h"),
            ("day-night:6-20:+15", "utc_offset_h"),
            ("day-night:6-20:nan", "utc_offset_h"),
            ("temperature:inf", "split_c"),
        ] {
            let e = RegimeSpec::parse_cli(s).unwrap_err();
            assert!(e.to_string().contains(field), "{s}: {e}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(RegimeSpec::None.validate(), Ok(()));
        assert_eq!(
            day_night(-1.0, 19.0, 0.0).validate(),
            Err(RegimeError::Hour {
                field: "day_start_h",
                value: -1.0
            })
        );
        assert!(matches!(
            day_night(7.0, f64::NAN, 0.0).validate(),
            Err(RegimeError::Hour {
                field: "day_end_h",
                ..
            })
        ));
        assert_eq!(
            day_night(7.0, 19.0, -14.5).validate(),
            Err(RegimeError::Offset(-14.5))
        );
        assert_eq!(day_night(7.0, 19.0, -12.0).validate(), Ok(()));
        // classify refuses an invalid spec rather than answering wrongly.
        assert!(day_night(7.0, 30.0, 0.0).classify(0, None).is_err());
        assert!(RegimeSpec::Temperature { split_c: f64::NAN }
            .classify(0, Some(10.0))
            .is_err());
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Calibration {
        regimes: RegimeSpec,
    }

    #[test]
    fn serde_round_trip_through_toml_and_json() {
        for (spec, kind) in [
            (RegimeSpec::None, "none"),
            (day_night(22.0, 6.0, 2.0), "day-night"),
            (RegimeSpec::Temperature { split_c: 12.5 }, "temperature"),
        ] {
            let doc = Calibration { regimes: spec };
            let text = toml::to_string(&doc).unwrap();
            assert!(text.contains(&format!("kind = \"{kind}\"")), "{text}");
            assert_eq!(toml::from_str::<Calibration>(&text).unwrap(), doc, "{text}");
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<RegimeSpec>(&json).unwrap(), spec);
        }
        // Omitted day-night fields take their defaults; a temperature needs its split.
        let doc: Calibration = toml::from_str("[regimes]\nkind = \"day-night\"").unwrap();
        assert_eq!(doc.regimes, day_night(7.0, 19.0, 0.0));
        assert!(toml::from_str::<Calibration>("[regimes]\nkind = \"temperature\"").is_err());
        assert_eq!(RegimeSpec::default(), RegimeSpec::None);
    }

    #[test]
    fn fitted_temperature_split_is_the_median_of_finite_values() {
        assert_eq!(
            RegimeSpec::fit_temperature_split(&[4.0, f64::NAN, 20.0, 8.0, f64::INFINITY]),
            Some(8.0)
        );
        assert_eq!(
            RegimeSpec::fit_temperature_split(&[4.0, 10.0, 20.0, 8.0]),
            Some(9.0)
        );
        assert_eq!(RegimeSpec::fit_temperature_split(&[f64::NAN]), None);
        assert_eq!(RegimeSpec::fit_temperature_split(&[]), None);
    }
}
