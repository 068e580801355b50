//! The prefix rate table behind `rate`, `rateCost`, `rateBand` and `rateName`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[rates]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RatesConfig {
    /// A CSV file: `prefix,name,band,per_minute,connection_fee,increment` (increment in
    /// seconds, default 60). Prefixes are E.164 digits without `+` (`44`, `447`, `1415`).
    pub path: Option<PathBuf>,
}

/// One rate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Rate {
    /// Digits the number starts with.
    pub prefix: String,
    /// `rateName`.
    pub name: String,
    /// `rateBand`.
    #[serde(default)]
    pub band: String,
    /// Cost per minute.
    pub per_minute: f64,
    /// Cost added once per answered call.
    #[serde(default)]
    pub connection_fee: f64,
    /// Billing increment in seconds (talk is rounded up to it).
    #[serde(default = "sixty")]
    pub increment: u32,
}

fn sixty() -> u32 {
    60
}

/// A rated call.
#[derive(Debug, Clone, PartialEq)]
pub struct Rated {
    /// The rate applied.
    pub rate: Rate,
    /// What the call cost.
    pub cost: f64,
}

/// The loaded table, longest prefix first.
#[derive(Debug, Default)]
pub struct RateTable {
    rates: Vec<Rate>,
}

/// The rate file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RatesError {
    /// It cannot be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A row is wrong (rows count from 1, the header included).
    #[error("{file} row {row}: {problem}")]
    Row {
        /// The file.
        file: String,
        /// The row.
        row: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl RateTable {
    /// Loads the configured file; none configured is an empty table.
    pub fn load(cfg: &RatesConfig) -> Result<Self, RatesError> {
        let Some(path) = &cfg.path else {
            return Ok(RateTable::default());
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RatesError::Read {
            file: file.clone(),
            source: e,
        })?;
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut rates = Vec::new();
        for (i, row) in rdr.deserialize::<Rate>().enumerate() {
            let bad = |problem: String| RatesError::Row {
                file: file.clone(),
                row: i + 2,
                problem,
            };
            let rate = row.map_err(|e| bad(e.to_string()))?;
            if rate.prefix.is_empty() || !rate.prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("prefix {:?} must be digits", rate.prefix)));
            }
            if rate.increment == 0 || rate.per_minute < 0.0 || rate.connection_fee < 0.0 {
                return Err(bad("increment must be > 0 and costs >= 0".into()));
            }
            rates.push(rate);
        }
        Ok(RateTable::new(rates))
    }

    /// A table over `rates`.
    pub fn new(mut rates: Vec<Rate>) -> Self {
        rates.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RateTable { rates }
    }

    /// Rates a call to or from `e164` with `talk_ms` of talk; unanswered calls cost nothing.
    pub fn rate(&self, e164: &str, talk_ms: i64) -> Option<Rated> {
        let digits = e164.strip_prefix('+')?;
        let rate = self.rates.iter().find(|r| digits.starts_with(&r.prefix))?;
        let cost = if talk_ms <= 0 {
            0.0
        } else {
            let inc_ms = i64::from(rate.increment) * 1000;
            let billed_ms = (talk_ms + inc_ms - 1) / inc_ms * inc_ms;
            rate.connection_fee + rate.per_minute * billed_ms as f64 / 60_000.0
        };
        Some(Rated {
            rate: rate.clone(),
            cost: (cost * 10_000.0).round() / 10_000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(prefix: &str, name: &str, per_minute: f64, fee: f64, inc: u32) -> Rate {
        Rate {
            prefix: prefix.into(),
            name: name.into(),
            band: "b".into(),
            per_minute,
            connection_fee: fee,
            increment: inc,
        }
    }

    #[test]
    fn longest_prefix_wins_and_talk_rounds_up_to_the_increment() {
        let t = RateTable::new(vec![
            rate("44", "UK", 0.01, 0.0, 60),
            rate("447", "UK mobile", 0.10, 0.05, 30),
        ]);
        let r = t.rate("+447700900123", 31_000).unwrap();
        assert_eq!(r.rate.name, "UK mobile");
        assert!((r.cost - 0.15).abs() < 1e-9, "{}", r.cost); // 31 s bills as 60 s
        let r = t.rate("+441610000000", 5_000).unwrap();
        assert_eq!(r.cost, 0.01);
        assert_eq!(t.rate("+14155550100", 5_000), None);
        assert_eq!(t.rate("1001", 5_000), None);
        assert_eq!(t.rate("+447700900123", 0).unwrap().cost, 0.0);
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "prefix,name,band,per_minute\n44,UK,b,x\n").unwrap();
        let e = RateTable::load(&RatesConfig { path: Some(p) }).unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
    }
}
