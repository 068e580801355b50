//! `switchhook calls`: the PostgreSQL call store from the command line.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use jiff::Timestamp;

use super::Exit;
use crate::call_store::{Database, ListFilter, Report, Table};
use crate::config::Config;

/// An instant as a command line gives it: ISO 8601 or a time ago.
fn instant(s: &str) -> Result<Timestamp, String> {
    let ms = super::deliveries::parse_instant(s)?;
    Timestamp::from_millisecond(ms).map_err(|e| e.to_string())
}

/// What to ask the call store.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Calls, newest first: a table on a terminal, one JSON object per line otherwise.
    List {
        /// Started at or after: an ISO 8601 instant (`2026-12-02T09:00:00Z`) or a time ago
        /// (`2h`).
        #[arg(long, value_parser = instant)]
        since: Option<Timestamp>,
        /// Started before, in the same forms.
        #[arg(long, value_parser = instant)]
        until: Option<Timestamp>,
        /// To this DID, as the CDR has it (`ddiNum`, E.164).
        #[arg(long)]
        did: Option<String>,
        /// From this caller (`cliNum`).
        #[arg(long)]
        caller: Option<String>,
        /// Answered by this user (`ansUsrNum` or `lAnsUsrNum`).
        #[arg(long)]
        answered_by: Option<String>,
        /// With this outcome (`answered`, `voicemail`, `abandoned_ringing`, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// Of this tenant (`[[tenants]]`; a call of none has its PBX's id).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One call's CDR: by its id or any of its legs' `Unique-ID`.
    Show {
        /// The call id or a leg's `Unique-ID`.
        id: String,
    },
    /// A canned report over a window (days and hours in `[sessions] time_zone`).
    Report {
        /// Which.
        #[arg(value_enum)]
        report: Report,
        /// Start of the window (default: 7 days ago).
        #[arg(long, value_parser = instant)]
        since: Option<Timestamp>,
        /// End of the window (default: now).
        #[arg(long, value_parser = instant)]
        until: Option<Timestamp>,
    },
    /// Bring the database's schema up to this switchhook's version (or to `--to`) and print
    /// it; `run` and the other actions do so by themselves, this is for doing it ahead, with
    /// a user allowed to change the schema.
    Migrate {
        /// Stop at this version.
        #[arg(long)]
        to: Option<i32>,
    },
    /// Delete calls that started longer ago than this (`90d`): the store's retention.
    Prune {
        /// How old.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
}

/// A result for a person at a terminal, or NDJSON for a program.
fn print(t: &Table) -> ExitCode {
    let mut out = String::new();
    if std::io::stdout().is_terminal() {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        table.set_header(&t.columns);
        for r in &t.rows {
            table.add_row(r.iter().map(|v| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        out.push_str(&format!("{table}\n{} row(s)\n", t.rows.len()));
    } else {
        for r in &t.rows {
            let obj: serde_json::Map<String, serde_json::Value> =
                t.columns.iter().cloned().zip(r.iter().cloned()).collect();
            out.push_str(&serde_json::Value::Object(obj).to_string());
            out.push('\n');
        }
    }
    super::print_bytes(out.as_bytes())
}

/// Runs one action against the store `[call_store]` of `config` names.
pub(super) async fn run(config: Option<&Path>, action: Action) -> ExitCode {
    let cfg = match Config::read(config) {
        (c, problems) if problems.is_empty() => c,
        (_, problems) => {
            super::print_problems(config, &problems);
            return Exit::Config.into();
        }
    };
    if !cfg.call_store.enabled() {
        eprintln!(
            "no call store configured: set [call_store] url (or SWITCHHOOK__CALL_STORE__URL)"
        );
        return Exit::Config.into();
    }
    let problems = cfg.call_store.check();
    if !problems.is_empty() {
        super::print_problems(config, &problems);
        return Exit::Config.into();
    }
    let to = match action {
        Action::Migrate { to } => to,
        _ => None,
    };
    let db = match Database::connect_to(&cfg.call_store, to).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    let tz = cfg.sessions.time_zone.as_str();
    let done: Result<ExitCode, _> = match action {
        Action::List {
            since,
            until,
            did,
            caller,
            answered_by,
            outcome,
            tenant,
            limit,
        } => {
            let filter = ListFilter {
                since,
                until,
                did,
                caller,
                answered_by,
                outcome,
                tenant,
                limit,
            };
            db.list(&filter, tz).await.map(|t| print(&t))
        }
        Action::Show { id } => match db.show(&id).await {
            Ok(Some(call)) => {
                let mut cdr = call.cdr;
                if let Some(o) = cdr.as_object_mut() {
                    o.insert("writtenAt".into(), call.written_at.to_string().into());
                }
                let text = serde_json::to_string_pretty(&cdr).unwrap_or_default() + "\n";
                Ok(super::print_bytes(text.as_bytes()))
            }
            Ok(None) => {
                eprintln!("no call {id:?} in the call store");
                return Exit::Failure.into();
            }
            Err(e) => Err(e),
        },
        Action::Report {
            report,
            since,
            until,
        } => {
            let until = until.unwrap_or_else(Timestamp::now);
            let since = since.unwrap_or_else(|| {
                until
                    .checked_sub(jiff::SignedDuration::from_hours(7 * 24))
                    .unwrap_or(until)
            });
            db.report(report, since, until, tz).await.map(|t| print(&t))
        }
        Action::Migrate { .. } => db.schema_version().await.map(|v| {
            println!(
                "call store schema at version {v} (this switchhook knows {})",
                crate::call_store::known_version()
            );
            ExitCode::SUCCESS
        }),
        Action::Prune { older_than } => {
            let before = jiff::SignedDuration::try_from(older_than)
                .ok()
                .and_then(|d| Timestamp::now().checked_sub(d).ok())
                .unwrap_or(Timestamp::UNIX_EPOCH);
            db.prune(before).await.map(|n| {
                println!("{n} call(s) that started before {before} deleted");
                ExitCode::SUCCESS
            })
        }
    };
    match done {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            Exit::Failure.into()
        }
    }
}

/// `replay --emit store`: every finished call of the captures written to the call store
/// (upserts: loading the same captures twice leaves the same rows), one line per capture.
pub(super) async fn load_captures(
    cfg: &Config,
    settings: std::sync::Arc<crate::session::Settings>,
    files: &[std::path::PathBuf],
) -> ExitCode {
    if !cfg.call_store.enabled() {
        eprintln!("--emit store needs a call store: set [call_store] url in the configuration (or SWITCHHOOK__CALL_STORE__URL)");
        return Exit::Config.into();
    }
    let mut db = match Database::connect(&cfg.call_store).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    let mut failed = false;
    let mut total = 0;
    for file in files {
        let mut rows = Vec::new();
        let progress = crate::replay::Progress::hidden();
        let assembled =
            crate::replay::assemble(file, std::sync::Arc::clone(&settings), &progress, |rec| {
                rows.push(crate::call_store::row(&rec))
            })
            .await;
        if !super::reported(file, assembled) {
            failed = true;
            if rows.is_empty() {
                continue;
            }
        }
        for batch in rows.chunks(cfg.call_store.batch_max.max(1)) {
            if let Err(e) = db.write(batch).await {
                eprintln!("{}: {e}", file.display());
                return Exit::Failure.into();
            }
        }
        total += rows.len();
        println!("{}: {} call(s) written", file.display(), rows.len());
    }
    println!(
        "{total} call(s) from {} capture(s) in the call store",
        files.len()
    );
    if failed {
        Exit::Failure.into()
    } else {
        ExitCode::SUCCESS
    }
}
