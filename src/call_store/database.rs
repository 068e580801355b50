//! The PostgreSQL side: connecting, bringing the schema up to date (versioned migrations,
//! refinery), writing batches of rows, and reading them back for the `calls` command and
//! the live page.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, NoTls};

use super::columns::{self, COLUMNS};
use super::config::{CallStoreConfig, SettingsError};

refinery::embed_migrations!("src/call_store/migrations");

/// Where refinery records the applied schema versions.
const HISTORY_TABLE: &str = "switchhook_schema_history";

/// Serialises schema changes between switchhook processes sharing a database.
const MIGRATION_LOCK: i64 = 0x5357_4843_4b53_4348; // "SWHCKSCH"

/// Why the call store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The connection settings are unusable.
    #[error("call_store: {0}")]
    Settings(#[from] SettingsError),
    /// The server cannot be reached or refused us.
    #[error("call store: cannot connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// The server did not answer in time.
    #[error("call store: no answer within {0:?}")]
    Timeout(Duration),
    /// The database's schema is newer than this binary knows.
    #[error("call store: the database's schema is version {found}, newer than this switchhook knows ({known}); upgrade switchhook (the database is left as it is)")]
    Newer {
        /// The version found.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// A schema change failed.
    #[error("call store: schema migration failed: {0}")]
    Migration(String),
    /// A statement failed.
    #[error("call store: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl DatabaseError {
    /// Whether waiting and trying again can help (the server is down or busy), as opposed
    /// to something an operator must change.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DatabaseError::Connect(_) | DatabaseError::Timeout(_) => true,
            DatabaseError::Query(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// A stored call, as `calls show` and the live page read it.
#[derive(Debug, Clone)]
pub(crate) struct StoredCall {
    /// The CDR as webhooks carry it.
    pub(crate) cdr: Value,
    /// The call type (`inbound`, ...).
    pub(crate) kind: String,
    /// Start, ms since the epoch.
    pub(crate) start_ms: i64,
    /// When the row was last written.
    pub(crate) written_at: jiff::Timestamp,
}

impl StoredCall {
    /// The call as the live page's finished-calls table shows it.
    pub(crate) fn to_line(&self) -> Option<crate::admin::live::CallLine> {
        crate::admin::live::CallLine::stored(&self.cdr, &self.kind, self.start_ms)
    }
}

/// A connection to the call store, its schema up to date.
pub struct Database {
    client: Client,
    upsert: String,
    timeout: Duration,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Database {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The newest schema version this binary knows.
pub(crate) fn known_version() -> i64 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

impl Database {
    /// Connects and brings the schema to this binary's version; a schema that is newer
    /// is refused, untouched.
    pub async fn connect(cfg: &CallStoreConfig) -> Result<Database, DatabaseError> {
        Self::connect_to(cfg, None).await
    }

    /// Connects and brings the schema up to `version` at most (a test starts from an old
    /// version this way).
    pub(crate) async fn connect_to(
        cfg: &CallStoreConfig,
        version: Option<i32>,
    ) -> Result<Database, DatabaseError> {
        let pg = cfg.connection()?;
        let (client, connection) = within(cfg.timeout, pg.connect(NoTls))
            .await?
            .map_err(DatabaseError::Connect)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "call store connection closed");
            }
        });
        let mut db = Database {
            client,
            upsert: upsert_statement(),
            timeout: cfg.timeout,
            connection,
        };
        within(cfg.timeout * 6, db.migrate(version)).await??;
        Ok(db)
    }

    async fn migrate(&mut self, version: Option<i32>) -> Result<(), DatabaseError> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let done = self.migrate_locked(version).await;
        let unlocked = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        done?;
        unlocked?;
        Ok(())
    }

    async fn migrate_locked(&mut self, version: Option<i32>) -> Result<(), DatabaseError> {
        let found = self.schema_version().await?;
        let known = known_version();
        if found > known {
            return Err(DatabaseError::Newer { found, known });
        }
        let mut runner = migrations::runner();
        runner.set_migration_table_name(HISTORY_TABLE);
        let mut runner = runner.set_abort_divergent(true).set_abort_missing(true);
        if let Some(v) = version {
            runner = runner.set_target(refinery::Target::Version(v as _));
        }
        runner
            .run_async(&mut self.client)
            .await
            .map_err(|e| DatabaseError::Migration(e.to_string()))?;
        Ok(())
    }

    /// The applied schema version (0 for an empty database).
    pub(crate) async fn schema_version(&self) -> Result<i64, DatabaseError> {
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let sql = format!("SELECT COALESCE(MAX(version), 0)::bigint FROM {HISTORY_TABLE}");
        Ok(self.client.query_one(&sql, &[]).await?.get(0))
    }

    /// Writes rows (as [`super::row`] builds them) in one transaction: a row per call id,
    /// a complete record never replaced by a partial one. Rows for one call later in
    /// `rows` win over earlier ones.
    pub async fn write(&mut self, rows: &[Value]) -> Result<u64, DatabaseError> {
        let rows = latest_per_call(rows);
        if rows.is_empty() {
            return Ok(0);
        }
        let batch = Json(Value::Array(rows));
        let n = within(self.timeout, self.client.execute(&self.upsert, &[&batch])).await??;
        Ok(n)
    }

    /// The client, for the reports.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The answer timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The call with this id or with a leg of this `Unique-ID`.
    pub(crate) async fn show(&self, id: &str) -> Result<Option<StoredCall>, DatabaseError> {
        let rows = within(
            self.timeout,
            self.client.query(
                "SELECT cdr, kind, (extract(epoch FROM start_time) * 1000)::bigint, written_at \
                 FROM calls WHERE id = $1 OR legs @> jsonb_build_array($1::text) \
                 ORDER BY id = $1 DESC LIMIT 1",
                &[&id],
            ),
        )
        .await??;
        Ok(rows.first().map(stored))
    }

    /// The latest finished calls, newest first.
    pub(crate) async fn latest(&self, n: i64) -> Result<Vec<StoredCall>, DatabaseError> {
        let rows = within(
            self.timeout,
            self.client.query(
                "SELECT cdr, kind, (extract(epoch FROM start_time) * 1000)::bigint, written_at \
                 FROM calls WHERE in_progress IS NOT TRUE ORDER BY start_time DESC LIMIT $1",
                &[&n],
            ),
        )
        .await??;
        Ok(rows.iter().map(stored).collect())
    }

    /// Deletes calls that started before `before`; how many.
    pub(crate) async fn prune(&self, before: jiff::Timestamp) -> Result<u64, DatabaseError> {
        Ok(within(
            self.timeout * 6,
            self.client
                .execute("DELETE FROM calls WHERE start_time < $1", &[&before]),
        )
        .await??)
    }
}

fn stored(r: &tokio_postgres::Row) -> StoredCall {
    StoredCall {
        cdr: r.get::<_, Json<Value>>(0).0,
        kind: r.get(1),
        start_ms: r.get(2),
        written_at: r.get(3),
    }
}

/// `fut`, or a timeout error after `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, DatabaseError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| DatabaseError::Timeout(limit))
}

/// One row per call id: the last in `rows`, unless it is partial and an earlier one is
/// complete. (PostgreSQL refuses to update one row twice in a statement.)
fn latest_per_call(rows: &[Value]) -> Vec<Value> {
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<Value> = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.get("id").and_then(Value::as_str) else {
            continue;
        };
        match at.get(id) {
            Some(&i) => {
                let kept_complete = out[i].get("partial").is_none_or(Value::is_null);
                let new_partial = row.get("partial").is_some_and(|p| !p.is_null());
                if !(kept_complete && new_partial) {
                    out[i] = row.clone();
                }
            }
            None => {
                at.insert(id, out.len());
                out.push(row.clone());
            }
        }
    }
    out
}

/// The upsert: the batch as one JSON array, read into the table's types by PostgreSQL.
fn upsert_statement() -> String {
    let names = columns::names();
    let updates = COLUMNS
        .iter()
        .filter(|c| c.name != "id")
        .map(|c| format!("{0} = EXCLUDED.{0}", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO calls ({names}) SELECT {names} FROM jsonb_populate_recordset(NULL::calls, $1::jsonb) \
         ON CONFLICT (id) DO UPDATE SET {updates}, written_at = now() \
         WHERE calls.partial IS NOT NULL OR EXCLUDED.partial IS NULL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_keeps_one_row_per_call_and_never_a_partial_over_a_complete() {
        let rows = [
            json!({"id": "a", "partial": "cut", "n": 1}),
            json!({"id": "b", "n": 2}),
            json!({"id": "a", "partial": null, "n": 3}),
            json!({"id": "a", "partial": "shutdown", "n": 4}),
            json!({"id": "b", "n": 5}),
        ];
        let out = latest_per_call(&rows);
        assert_eq!(
            out,
            vec![
                json!({"id": "a", "partial": null, "n": 3}),
                json!({"id": "b", "n": 5})
            ]
        );
    }

    #[test]
    fn the_binary_knows_its_schema_versions() {
        assert_eq!(known_version(), 3);
        let sql = upsert_statement();
        assert!(sql.contains("cli_num = EXCLUDED.cli_num"));
        assert!(!sql.contains("id = EXCLUDED.id,"));
    }
}
