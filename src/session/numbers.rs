//! Phone numbers: E.164 normalisation and what a number says about where it is (country,
//! area, US state), with libphonenumber's metadata (the `phonenumber` crate) and country names
//! from `keshvar`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use phonenumber::metadata::DATABASE;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// `[numbers]`: how dialled and presented numbers are read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    /// Region for numbers written nationally (`01614960000`): an ISO 3166 alpha-2 code.
    pub default_region: String,
    /// Numbers with at most this many digits and no `+`/`00` are extensions, left as they are.
    pub extension_max_digits: usize,
    /// A caller's number they asked to withhold (`Caller-Privacy-Hide-Number`, an
    /// `anonymous` CLI): `hide` leaves the CLI fields empty in every record and webhook,
    /// `send` passes the number on (receivers that may see it, such as an emergency desk).
    pub withheld_cli: WithheldCli,
}

/// What becomes of a withheld caller's number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithheldCli {
    /// Left out: `cliNum` empty, no name, location or directory match; `cliWithheld` 1.
    #[default]
    Hide,
    /// Sent as FreeSWITCH knows it, with `cliWithheld` 1.
    Send,
}

impl NumbersConfig {
    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        match self.default_region.parse::<phonenumber::country::Id>() {
            Ok(_) => Vec::new(),
            Err(_) => vec![Problem::new(
                "numbers.default_region",
                format!(
                    "{:?} is not an ISO 3166 alpha-2 region",
                    self.default_region
                ),
            )],
        }
    }
}

impl Default for NumbersConfig {
    fn default() -> Self {
        NumbersConfig {
            default_region: "GB".into(),
            extension_max_digits: 6,
            withheld_cli: WithheldCli::Hide,
        }
    }
}

/// What a number says about its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberInfo {
    /// E.164 (`+447700900123`), or the input unchanged for extensions and unparsable input.
    pub e164: String,
    /// Whether `e164` really is E.164.
    pub is_e164: bool,
    /// ISO 3166 alpha-2 country.
    pub country: Option<String>,
    /// The country's English common name (`United Kingdom`).
    pub location: Option<String>,
    /// The geographic area code (`161` for Manchester), for fixed lines.
    pub area: Option<String>,
    /// US state (two letters) for North American numbers whose area code is known.
    pub state: Option<String>,
}

/// Reads numbers with a configured default region.
#[derive(Debug, Clone)]
pub struct NumberReader {
    region: Option<phonenumber::country::Id>,
    extension_max_digits: usize,
}

impl NumberReader {
    /// A reader for `cfg`; an unknown region is reported by [`NumbersConfig::check`].
    pub fn new(cfg: &NumbersConfig) -> Self {
        // Load libphonenumber's metadata now, not on the first call's record.
        let _ = DATABASE.by_code(&44);
        NumberReader {
            region: cfg.default_region.parse().ok(),
            extension_max_digits: cfg.extension_max_digits,
        }
    }

    /// Normalises `raw` and looks up where it is.
    pub fn read(&self, raw: &str) -> NumberInfo {
        let cleaned: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let mut info = NumberInfo {
            e164: raw.trim().to_owned(),
            ..Default::default()
        };
        let digits = cleaned.trim_start_matches('+');
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return info;
        }
        let international = cleaned.starts_with('+') || cleaned.starts_with("00");
        if !international && digits.len() <= self.extension_max_digits {
            return info;
        }
        let text = match cleaned.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => cleaned,
        };
        let Ok(number) = phonenumber::parse(self.region, &text) else {
            return info;
        };
        let code = number.code().value();
        info.e164 = format!("+{code}{}", number.national().value());
        info.is_e164 = true;
        // A number libphonenumber calls invalid (fictional ranges) still belongs to the main
        // country of its calling code.
        let region = number
            .country()
            .id()
            .map(|id| id.as_ref().to_owned())
            .or_else(|| main_region(code));
        if let Some(r) = &region {
            info.location = country_name(r);
        }
        if number.is_valid() {
            let kind = number.number_type(&DATABASE);
            if matches!(
                kind,
                phonenumber::Type::FixedLine | phonenumber::Type::FixedLineOrMobile
            ) {
                info.area = area_code(&number);
            }
        }
        if code == 1 {
            let national = number.national().value().to_string();
            if national.len() == 10 {
                let npa = &national[..3];
                info.area.get_or_insert_with(|| npa.to_owned());
                info.state = us_state(npa).map(str::to_owned);
            }
        }
        info.country = region;
        info
    }
}

fn main_region(code: u16) -> Option<String> {
    let metas = DATABASE.by_code(&code)?;
    metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or_else(|| metas.first())
        .map(|m| m.id().to_owned())
        .filter(|id| id != "001")
}

/// The first group of the national format, without the national prefix: the area code of a
/// geographic number (`0161 496 0000` → `161`).
fn area_code(number: &phonenumber::PhoneNumber) -> Option<String> {
    let national = number
        .format()
        .mode(phonenumber::Mode::National)
        .to_string();
    let first = national
        .split(|c: char| !c.is_ascii_digit())
        .find(|g| !g.is_empty())?;
    let first = first.strip_prefix('0').unwrap_or(first);
    let whole = number.national().value().to_string();
    (!first.is_empty() && first.len() < whole.len()).then(|| first.to_owned())
}

/// The English common name of a country (`GB` → `United Kingdom`), cached: keshvar builds the
/// whole record on every lookup.
pub(crate) fn country_name(alpha2: &str) -> Option<String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(alpha2.to_owned())
        .or_insert_with(|| {
            let a2 = keshvar::Alpha2::try_from(alpha2).ok()?;
            let country = a2.to_country();
            Some(
                country
                    .translations()
                    .get("en")
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| country.iso_short_name().to_owned()),
            )
        })
        .clone()
}

/// US area codes (NPA) and their states (`NPA|place|ST` lines), generated from
/// libphonenumber's geocoding data by `tools/us-area-codes.py`.
const US_AREA_CODES: &str = include_str!("us_area_codes.txt");

/// The state of a US area code (NPA), for `cliState`. North American numbers outside the US
/// (Canada, Puerto Rico, the Caribbean) get none.
fn us_state(npa: &str) -> Option<&'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        US_AREA_CODES
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut fields = l.split('|');
                let npa = fields.next()?;
                let state = fields.nth(1)?;
                Some((npa, state))
            })
            .collect()
    })
    .get(npa)
    .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> NumberReader {
        NumberReader::new(&NumbersConfig::default())
    }

    #[test]
    fn the_documented_example_is_gb_united_kingdom() {
        let n = reader().read("+447000000000");
        assert_eq!(n.e164, "+447000000000");
        assert_eq!(n.country.as_deref(), Some("GB"));
        assert_eq!(n.location.as_deref(), Some("United Kingdom"));
    }

    #[test]
    fn fictional_drama_range_still_gets_its_country() {
        let n = reader().read("+447700900123");
        assert!(n.is_e164);
        assert_eq!(n.country.as_deref(), Some("GB"));
        assert_eq!(n.area, None, "a mobile has no area");
    }

    #[test]
    fn national_and_00_forms_become_e164_with_areas() {
        let n = reader().read("0161 496 0000");
        assert_eq!(n.e164, "+441614960000");
        assert_eq!(n.area.as_deref(), Some("161"));
        let n = reader().read("0044 20 7946 0000");
        assert_eq!(n.e164, "+442079460000");
        assert_eq!(n.area.as_deref(), Some("20"));
    }

    #[test]
    fn us_numbers_get_area_and_state() {
        let n = reader().read("+14155550100");
        assert_eq!(n.country.as_deref(), Some("US"));
        assert_eq!(n.location.as_deref(), Some("United States"));
        assert_eq!(n.area.as_deref(), Some("415"));
        assert_eq!(n.state.as_deref(), Some("CA"));
    }

    #[test]
    fn the_area_code_table_is_well_formed_and_has_the_newer_codes() {
        let mut lines = 0;
        for l in US_AREA_CODES.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 3, "{l}");
            assert!(
                f[0].len() == 3 && f[0].bytes().all(|b| b.is_ascii_digit()),
                "{l}"
            );
            assert!(
                f[2].len() == 2 && f[2].bytes().all(|b| b.is_ascii_uppercase()),
                "{l}"
            );
            lines += 1;
        }
        assert!(lines > 300, "{lines} area codes");
        for (npa, state) in [
            ("369", "CA"),
            ("738", "CA"),
            ("748", "CO"),
            ("212", "NY"),
            ("206", "WA"),
        ] {
            assert_eq!(us_state(npa), Some(state), "{npa}");
        }
        // Canada is not the US.
        assert_eq!(us_state("604"), None);
    }

    #[test]
    fn extensions_and_garbage_are_left_alone() {
        for raw in ["1001", "", "anonymous", "+", "12ab"] {
            let n = reader().read(raw);
            assert!(!n.is_e164, "{raw}");
            assert_eq!(n.e164, raw.trim());
            assert_eq!(n.country, None);
        }
    }
}
