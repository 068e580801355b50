//! What `switchhook calls` asks the store: a filtered list of calls and a few canned reports.
//! Every value a user gives reaches SQL as a parameter, never as text of the statement.

use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use super::database::{within, Database, DatabaseError};

/// Which calls `calls list` shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    /// Started at or after.
    pub(crate) since: Option<Timestamp>,
    /// Started before.
    pub(crate) until: Option<Timestamp>,
    /// To this DID (`ddi_num`).
    pub(crate) did: Option<String>,
    /// From this caller (`cli_num`).
    pub(crate) caller: Option<String>,
    /// Answered by this user (`ans_usr_num` or `l_ans_usr_num`).
    pub(crate) answered_by: Option<String>,
    /// With this outcome.
    pub(crate) outcome: Option<String>,
    /// Of this tenant.
    pub(crate) tenant: Option<String>,
    /// At most this many, newest first.
    pub(crate) limit: i64,
}

/// A result: column names and rows of values (numbers stay numbers, times and dates are
/// text, NULL is null).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    /// The column names.
    pub(crate) columns: Vec<String>,
    /// The rows.
    pub(crate) rows: Vec<Vec<serde_json::Value>>,
}

/// The columns `calls list` prints.
const LIST_COLUMNS: &str =
    "id, to_char(start_time AT TIME ZONE $1, 'YYYY-MM-DD HH24:MI:SS') AS start, \
     kind, cli_num AS caller, ddi_num AS did, outcome, ring, talk, \
     COALESCE(l_ans_usr_num, ans_usr_num) AS answered_by, f_rng_group_name AS ring_group, partial";

impl ListFilter {
    /// The statement and its parameters; `$1` is the time zone the times are shown in.
    fn statement(&self, tz: &str) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tz.to_owned())];
        let mut wheres = Vec::new();
        let mut add = |cond: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            wheres.push(cond.replace('?', &format!("${}", params.len())));
        };
        if let Some(t) = self.since {
            add("start_time >= ?", Box::new(t));
        }
        if let Some(t) = self.until {
            add("start_time < ?", Box::new(t));
        }
        if let Some(n) = &self.did {
            add("ddi_num = ?", Box::new(n.clone()));
        }
        if let Some(n) = &self.caller {
            add("cli_num = ?", Box::new(n.clone()));
        }
        if let Some(n) = &self.answered_by {
            add(
                "(ans_usr_num = ? OR l_ans_usr_num = ?)",
                Box::new(n.clone()),
            );
        }
        if let Some(o) = &self.outcome {
            add("outcome = ?", Box::new(o.clone()));
        }
        if let Some(t) = &self.tenant {
            add("tenant_id = ?", Box::new(t.clone()));
        }
        let filter = if wheres.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", wheres.join(" AND "))
        };
        params.push(Box::new(self.limit.max(1)));
        let sql = format!(
            "SELECT {LIST_COLUMNS} FROM calls {filter} ORDER BY start_time DESC LIMIT ${}",
            params.len()
        );
        (sql, params)
    }
}

/// The canned reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Report {
    /// Incoming calls per DID and day: how many, missed (nobody talked), abandoned.
    MissedByDid,
    /// Calls offered to each ring group per hour: answered, answer rate, average ring time.
    Groups,
    /// Calls answered per user: how many, average and total talk time.
    AnsweredBy,
    /// Calls per outcome and day.
    Outcomes,
}

impl Report {
    /// The statement: `$1` the time zone days and hours are counted in, `$2`..`$3` the
    /// window.
    fn sql(self) -> &'static str {
        match self {
            Report::MissedByDid => {
                "SELECT ddi_num AS did, (start_time AT TIME ZONE $1)::date AS day, \
                 count(*) AS calls, count(*) FILTER (WHERE lost) AS missed, \
                 count(*) FILTER (WHERE aban) AS abandoned \
                 FROM calls WHERE kind = 'inbound' AND in_progress IS NOT TRUE \
                 AND start_time >= $2 AND start_time < $3 \
                 GROUP BY 1, 2 ORDER BY 2, 1"
            }
            Report::Groups => {
                "SELECT f_rng_group_name AS ring_group, \
                 date_trunc('hour', start_time AT TIME ZONE $1) AS hour, \
                 count(*) AS calls, count(*) FILTER (WHERE ans) AS answered, \
                 round(100.0 * count(*) FILTER (WHERE ans) / count(*), 1) AS answer_rate_pct, \
                 round(avg(ring_ms) / 1000.0, 1) AS avg_ring_s \
                 FROM calls WHERE f_rng_group_name IS NOT NULL AND in_progress IS NOT TRUE \
                 AND start_time >= $2 AND start_time < $3 \
                 GROUP BY 1, 2 ORDER BY 2, 1"
            }
            Report::AnsweredBy => {
                "SELECT COALESCE(ans_usr_num, ans_dev_num) AS answered_by, \
                 max(ans_usr_name) AS name, count(*) AS calls, \
                 round(avg(talk_ms) / 1000.0, 1) AS avg_talk_s, sum(talk) AS talk_s \
                 FROM calls WHERE ans AND start_time >= $2 AND start_time < $3 \
                 AND $1::text IS NOT NULL \
                 GROUP BY 1 ORDER BY 3 DESC, 1"
            }
            Report::Outcomes => {
                "SELECT (start_time AT TIME ZONE $1)::date AS day, outcome, count(*) AS calls \
                 FROM calls WHERE in_progress IS NOT TRUE \
                 AND start_time >= $2 AND start_time < $3 \
                 GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
            }
        }
    }
}

/// Wraps a statement so every row comes back as one JSON object, columns in order, whatever
/// their types.
fn as_text(sql: &str) -> String {
    format!("SELECT to_json(r) FROM ({sql}) r")
}

/// The rows of `sql`.
async fn query_text(
    db: &Database,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Table, DatabaseError> {
    let rows = within(db.timeout() * 6, db.client().query(&as_text(sql), params)).await??;
    let mut out = Table::default();
    for r in &rows {
        let tokio_postgres::types::Json(obj): tokio_postgres::types::Json<
            serde_json::Map<String, serde_json::Value>,
        > = r.get(0);
        if out.columns.is_empty() {
            out.columns = obj.keys().cloned().collect();
        }
        out.rows.push(obj.into_iter().map(|(_, v)| v).collect());
    }
    Ok(out)
}

impl Database {
    /// The calls `filter` picks, newest first, times in `tz`.
    pub(crate) async fn list(&self, filter: &ListFilter, tz: &str) -> Result<Table, DatabaseError> {
        let (sql, params) = filter.statement(tz);
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        query_text(self, &sql, &refs).await
    }

    /// A canned report over calls started in `[since, until)`, days and hours in `tz`.
    pub(crate) async fn report(
        &self,
        report: Report,
        since: Timestamp,
        until: Timestamp,
        tz: &str,
    ) -> Result<Table, DatabaseError> {
        let tz = tz.to_owned();
        query_text(self, report.sql(), &[&tz, &since, &until]).await
    }
}
