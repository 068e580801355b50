//! The `calls` table's columns and where each value comes from: the one list the row
//! builder, the upsert statement and the schema test read.
//!
//! Column names are the CDR's field names in snake case (`cliNum` is `cli_num`), so SQL needs
//! no quoting; times are `timestamptz`, the CDR's whole seconds stay integers beside exact
//! milliseconds, and 1/0 flags are booleans.

use serde_json::{Map, Value};

use crate::session::cdr::{CallKind, Durations, Times};
use crate::session::{CallRecord, Cdr};

/// Where a column's value comes from.
#[derive(Clone, Copy)]
pub(super) enum Source {
    /// The CDR field of that name, as it is.
    Field(&'static str),
    /// The CDR field of that name, a 1/0 flag, as a boolean.
    Flag(&'static str),
    /// An instant of the record (µs since the epoch), as a timestamp.
    At(fn(&Times, &Map<String, Value>) -> Option<i64>),
    /// An exact duration, ms.
    Ms(fn(&Durations) -> i64),
    /// The call type webhooks filter on (`inbound`, `outbound`, ...).
    Kind,
    /// Every leg's `Unique-ID`, the caller's first.
    Legs,
    /// The call's tenant (its PBX's id when it has none).
    Tenant,
    /// The whole CDR, as webhooks carry it.
    Cdr,
}

/// One column: its name, its SQL type (as the migration that added it declared it), its
/// source.
pub(super) struct Column {
    pub(super) name: &'static str,
    /// Checked against the migrations by a test (the schema is SQL, this list is Rust).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) sql: &'static str,
    pub(super) from: Source,
}

const fn col(name: &'static str, sql: &'static str, from: Source) -> Column {
    Column { name, sql, from }
}

use Source::{Field, Flag, Ms};

/// Every column, in the table's order (`written_at` is the database's own).
pub(super) const COLUMNS: &[Column] = &[
    col("id", "text", Field("id")),
    col("pbx_id", "text", Field("pbxId")),
    col("pbx_name", "text", Field("pbxName")),
    col("tz", "text", Field("tz")),
    col(
        "start_time",
        "timestamptz",
        Source::At(|t, _| Some(t.start_us)),
    ),
    col("answer_time", "timestamptz", Source::At(|t, _| t.answer_us)),
    col(
        "end_time",
        "timestamptz",
        // A record of a call in progress has no end.
        Source::At(|t, cdr| cdr.contains_key("end").then_some(t.end_us)),
    ),
    col("dur", "integer", Field("dur")),
    col("ring", "integer", Field("ring")),
    col("talk", "integer", Field("talk")),
    col("hold", "integer", Field("hold")),
    col("park", "integer", Field("park")),
    col("dur_ms", "bigint", Ms(|d| d.dur)),
    col("ring_ms", "bigint", Ms(|d| d.ring)),
    col("talk_ms", "bigint", Ms(|d| d.talk)),
    col("hold_ms", "bigint", Ms(|d| d.hold)),
    col("park_ms", "bigint", Ms(|d| d.park)),
    col("wait_ms", "bigint", Ms(|d| d.wait)),
    col("lost", "boolean", Flag("lost")),
    col("lost_in_park", "boolean", Flag("lostinPark")),
    col("aban", "boolean", Flag("aban")),
    col("ans", "boolean", Flag("ans")),
    col("short", "boolean", Flag("short")),
    col("outcome", "text", Field("outcome")),
    col("cause", "text", Field("cause")),
    col("dir", "smallint", Field("dir")),
    col("call_type", "smallint", Field("type")),
    col("kind", "text", Source::Kind),
    col("t2t", "boolean", Flag("t2t")),
    col("cli_num", "text", Field("cliNum")),
    col("cli_name", "text", Field("cliName")),
    col("cli_loc", "text", Field("cliLoc")),
    col("cli_area", "text", Field("cliArea")),
    col("cli_state", "text", Field("cliState")),
    col("cli_ctry", "text", Field("cliCtry")),
    col("cli_withheld", "boolean", Flag("cliWithheld")),
    col("ddi_num", "text", Field("ddiNum")),
    col("ddi_name", "text", Field("ddiName")),
    col("f_rng_dev_num", "text", Field("fRngDevNum")),
    col("f_rng_dev_name", "text", Field("fRngDevName")),
    col("l_rng_dev_num", "text", Field("lRngDevNum")),
    col("l_rng_dev_name", "text", Field("lRngDevName")),
    col("ans_dev_num", "text", Field("ansDevNum")),
    col("ans_dev_name", "text", Field("ansDevName")),
    col("l_ans_dev_num", "text", Field("lAnsDevNum")),
    col("l_ans_dev_name", "text", Field("lAnsDevName")),
    col("f_rng_usr_num", "text", Field("fRngUsrNum")),
    col("f_rng_usr_name", "text", Field("fRngUsrName")),
    col("l_rng_usr_num", "text", Field("lRngUsrNum")),
    col("l_rng_usr_name", "text", Field("lRngUsrName")),
    col("ans_usr_num", "text", Field("ansUsrNum")),
    col("ans_usr_name", "text", Field("ansUsrName")),
    col("l_ans_usr_num", "text", Field("lAnsUsrNum")),
    col("l_ans_usr_name", "text", Field("lAnsUsrName")),
    col("f_rng_agt_num", "text", Field("fRngAgtNum")),
    col("f_rng_agt_name", "text", Field("fRngAgtName")),
    col("l_rng_agt_num", "text", Field("lRngAgtNum")),
    col("l_rng_agt_name", "text", Field("lRngAgtName")),
    col("ans_agt_num", "text", Field("ansAgtNum")),
    col("ans_agt_name", "text", Field("ansAgtName")),
    col("l_ans_agt_num", "text", Field("lAnsAgtNum")),
    col("l_ans_agt_name", "text", Field("lAnsAgtName")),
    col("rte_id", "text", Field("rteID")),
    col("rte_name", "text", Field("rteName")),
    col("f_rng_group_name", "text", Field("fRngGroupName")),
    col("l_rng_group_name", "text", Field("lRngGroupName")),
    col("ans_group_name", "text", Field("ansGroupName")),
    col("has_rec", "boolean", Flag("hasRec")),
    col("rate", "boolean", Flag("rate")),
    col("rate_cost", "double precision", Field("rateCost")),
    col("rate_band", "text", Field("rateBand")),
    col("rate_name", "text", Field("rateName")),
    col("recording_ids", "jsonb", Field("recordingIds")),
    col("directory_matches", "jsonb", Field("directoryMatches")),
    col("tags", "jsonb", Field("tags")),
    col("route_step", "text", Field("routeStep")),
    col("route_status", "text", Field("routeStatus")),
    col("route_dest", "text", Field("routeDest")),
    col("route_caller_name", "text", Field("routeCallerName")),
    col("route_reason", "text", Field("routeReason")),
    col("route_source", "text", Field("routeSource")),
    col("route_latency_ms", "bigint", Field("routeLatencyMs")),
    col("route_url", "text", Field("routeUrl")),
    col("timeline", "jsonb", Field("timeline")),
    col("recordings", "jsonb", Field("recordings")),
    col("in_progress", "boolean", Flag("inProgress")),
    col("partial", "text", Field("partial")),
    col("timeline_error", "text", Field("timelineError")),
    col("legs", "jsonb", Source::Legs),
    col("cdr", "jsonb", Source::Cdr),
    col("tenant_id", "text", Source::Tenant),
];

#[cfg(test)]
/// CDR fields with no column of their own: constants of the record type (in `cdr`).
const CONSTANT_FIELDS: &[&str] = &["dType", "sVer"];

/// What of a finished call's record becomes its row: a copy costs the event loop a few
/// microseconds, the row itself is made off it.
#[derive(Debug, Clone)]
pub struct RowSource {
    cdr: Cdr,
    times: Times,
    ms: Durations,
    kind: CallKind,
    leg_ids: Vec<String>,
    tenant: String,
}

impl RowSource {
    /// The parts of `record` its row is made of.
    pub fn new(record: &CallRecord) -> RowSource {
        RowSource {
            cdr: record.cdr.clone(),
            times: record.times,
            ms: record.ms,
            kind: record.kind,
            leg_ids: record.leg_ids.clone(),
            tenant: record.tenant_id().to_owned(),
        }
    }

    /// The call id.
    pub fn id(&self) -> &str {
        &self.cdr.id
    }
}

/// The row `record` becomes: column name → JSON value, as PostgreSQL's
/// `jsonb_populate_recordset` reads it into the table's types.
pub(super) fn row(record: &RowSource) -> Value {
    let cdr = match serde_json::to_value(&record.cdr) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut row = Map::with_capacity(COLUMNS.len());
    for c in COLUMNS {
        let v = match c.from {
            Field(f) => cdr.get(f).cloned().unwrap_or(Value::Null),
            Flag(f) => cdr
                .get(f)
                .and_then(Value::as_u64)
                .map_or(Value::Null, |n| Value::Bool(n != 0)),
            Source::At(at) => at(&record.times, &cdr).map_or(Value::Null, timestamp),
            Ms(ms) => ms(&record.ms).into(),
            Source::Kind => record.kind.as_str().into(),
            Source::Legs => record.leg_ids.clone().into(),
            Source::Tenant => record.tenant.clone().into(),
            // Moved in below, once every other column has read it.
            Source::Cdr => Value::Null,
        };
        row.insert(c.name.to_owned(), v);
    }
    if let Some(c) = COLUMNS.iter().find(|c| matches!(c.from, Source::Cdr)) {
        row.insert(c.name.to_owned(), Value::Object(cdr));
    }
    Value::Object(row)
}

/// µs since the epoch as RFC 3339 in UTC (what `timestamptz` reads).
fn timestamp(us: i64) -> Value {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => t.to_string().into(),
        Err(_) => Value::Null,
    }
}

/// The column names, comma-separated, in the table's order.
pub(super) fn names() -> String {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cdr_field_has_a_column() {
        let covered: Vec<&str> = COLUMNS
            .iter()
            .filter_map(|c| match c.from {
                Field(f) | Flag(f) => Some(f),
                _ => None,
            })
            .chain(["start", "answer", "end"])
            .chain(CONSTANT_FIELDS.iter().copied())
            .collect();
        for f in Cdr::field_names() {
            assert!(covered.contains(&f.as_str()), "no column for CDR field {f}");
        }
        let mut names: Vec<_> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len(), "a column is named twice");
    }

    #[test]
    fn the_migrations_declare_every_column_with_its_type() {
        let v1 = include_str!("migrations/V1__calls.sql");
        let later = [include_str!("migrations/V3__tenant.sql")];
        for c in COLUMNS {
            let decl = format!("    {} {}", c.name, c.sql);
            let added = format!("ADD COLUMN {} {};", c.name, c.sql);
            assert!(
                v1.lines().any(|l| l.starts_with(&decl))
                    || later.iter().any(|m| m.contains(&added)),
                "no migration declares {decl:?}"
            );
        }
    }

    #[test]
    fn a_replayed_record_becomes_a_typed_row() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10/01-inbound-answered.esl");
        let records = rt
            .block_on(crate::replay::records(
                &path,
                std::sync::Arc::new(crate::session::Settings::default()),
            ))
            .unwrap();
        let rec = &records[0];
        let row = row(&RowSource::new(rec));
        assert_eq!(row["id"], rec.cdr.id.as_str());
        assert_eq!(row["ans"], true);
        assert_eq!(row["lost"], false);
        assert_eq!(row["kind"], "inbound");
        assert_eq!(row["talk_ms"], rec.ms.talk);
        let start = row["start_time"].as_str().unwrap();
        assert!(start.ends_with('Z'), "{start}");
        assert!(row["end_time"].is_string());
        assert_eq!(row["cdr"]["cliNum"], rec.cdr.cliNum.as_str());
        assert_eq!(row["legs"].as_array().unwrap().len(), rec.leg_ids.len());
    }
}
