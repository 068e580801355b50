//! `switchhook deliveries`: the outbox from the command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::Exit;
use crate::bus::{DeadFilter, DeadLetterNotice, FleetView};
use crate::config::Config;
use crate::hooks::store::{Admin, DeliveryRef, ListFilter, Row, State};
use crate::pipeline::Compiled;

/// What to do with the outbox.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Deliveries, newest first: a table on a terminal, one JSON object per line otherwise
    /// (with ISO 8601 `created` and `next` beside the epoch milliseconds).
    List {
        /// pending, delivered, dead or parked.
        #[arg(long)]
        state: Option<String>,
        /// Only this webhook.
        #[arg(long)]
        webhook: Option<String>,
        /// Only this call.
        #[arg(long)]
        call: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One delivery with its request and last response.
    Show {
        /// Its number (`rowid` in `list`) or its webhook-id (`msg_…`).
        id: DeliveryRef,
    },
    /// Send again: one delivery, or every dead one (of a webhook).
    Retry {
        /// Its number or webhook-id; without it, every dead delivery.
        id: Option<DeliveryRef>,
        /// Only dead deliveries of this webhook.
        #[arg(long)]
        webhook: Option<String>,
        /// Render each request again from its call's data with the webhook as `--config`
        /// defines it now (a corrected URL, template or header) instead of sending it as it
        /// was first made.
        #[arg(long)]
        render: bool,
    },
    /// Send again what was delivered in a window (a receiver that lost a stretch of data):
    /// every delivered request committed from `--since` until `--until`, in order.
    Resend {
        /// Start of the window: an ISO 8601 instant (`2026-12-02T09:00:00Z`) or a time ago
        /// (`2h`).
        #[arg(long, value_parser = parse_instant)]
        since: i64,
        /// End of the window (default: now), in the same forms.
        #[arg(long, value_parser = parse_instant)]
        until: Option<i64>,
        /// Only this webhook.
        #[arg(long)]
        webhook: Option<String>,
    },
    /// Delete finished deliveries.
    Purge {
        /// Delete delivered ones.
        #[arg(long)]
        delivered: bool,
        /// Delete dead letters.
        #[arg(long)]
        dead: bool,
        /// Only those finished at least this long ago.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        older_than: Duration,
    },
    /// Enable a disabled webhook: its parked deliveries are sent, in order.
    Enable {
        /// The webhook's name.
        webhook: String,
    },
    /// Counts by state and the disabled webhooks.
    Status,
    /// A fleet's shared state, read from NATS (`[nats]` of the configuration): the webhooks
    /// disabled or failing on every worker, and the dead letters the workers announced,
    /// newest first, whichever worker's outbox holds them (`list`, `show` and `retry` work
    /// on that worker's outbox).
    Fleet {
        /// Only this tenant's dead letters (`_`: calls of no tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this webhook.
        #[arg(long)]
        webhook: Option<String>,
        /// Only dead letters announced since: an ISO 8601 instant or a time ago (`2h`).
        #[arg(long, value_parser = parse_instant)]
        since: Option<i64>,
        /// At most this many dead letters (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Write a consistent copy of the outbox to a new file (safe while `run` runs).
    Backup {
        /// The new file.
        to: PathBuf,
    },
}

/// An instant in epoch milliseconds as ISO 8601 in UTC (`2026-12-02T14:30:05.123Z`).
fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// A row as NDJSON: its fields, with the instants in ISO 8601 as well.
fn json_line(r: &Row) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("created".into(), iso(r.created_ms).into());
        if r.state == "pending" {
            o.insert("next".into(), iso(r.next_ms).into());
        }
    }
    v.to_string()
}

/// A table for a person at a terminal, with these column names.
fn new_table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(header);
    t
}

/// A last attempt's outcome in a table cell: its status, else the start of its error.
fn last_outcome(status: Option<u16>, error: Option<&str>) -> String {
    match (status, error) {
        (Some(status), _) => status.to_string(),
        (None, Some(e)) => e.chars().take(40).collect(),
        (None, None) => String::new(),
    }
}

/// A call id short enough for a table cell.
fn short_call(call_id: &str) -> String {
    call_id.get(..8).unwrap_or(call_id).to_owned()
}

/// Rows as a table for a person at a terminal.
fn table(rows: &[Row]) -> comfy_table::Table {
    let mut t = new_table([
        "#",
        "state",
        "webhook",
        "trigger",
        "call",
        "tries",
        "created (UTC)",
        "last outcome",
    ]);
    for r in rows {
        let last = last_outcome(r.last_status, r.last_error.as_deref());
        let state = match r.state.as_str() {
            "pending" => format!("pending (next {})", iso(r.next_ms)),
            s => s.to_owned(),
        };
        t.add_row([
            r.rowid.to_string(),
            state,
            r.webhook.clone(),
            r.trigger.clone(),
            short_call(&r.call_id),
            r.attempts.to_string(),
            iso(r.created_ms),
            last,
        ]);
    }
    t
}

/// An instant as unix ms: ISO 8601 (`2026-12-02T09:00:00Z`), or a time ago (`90m`).
pub(super) fn parse_instant(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an ISO 8601 instant (2026-12-02T09:00:00Z) nor a time ago (2h)")
    })?;
    Ok(crate::hooks::store::now_ms() - ago.as_millis() as i64)
}

/// Nothing in the outbox matched what was named: said on stderr, exit 1.
fn nothing_matched(what: &str) -> ExitCode {
    eprintln!("{what}");
    Exit::Failure.into()
}

/// Runs one action.
pub(super) async fn run(config: Option<&Path>, db: Option<&Path>, action: Action) -> ExitCode {
    if let Action::Fleet {
        tenant,
        webhook,
        since,
        limit,
    } = action
    {
        let filter = DeadFilter {
            tenant: tenant.map(|t| if t == "_" { String::new() } else { t }),
            webhook,
            since_ms: since,
            limit,
        };
        return fleet(config, &filter).await;
    }
    let path = match db {
        Some(p) => p.to_owned(),
        None => match Config::read(config) {
            (c, problems) if problems.is_empty() => c.store.path,
            (_, problems) => {
                super::print_problems(config, &problems);
                return Exit::Config.into();
            }
        },
    };
    if !path.exists() {
        eprintln!(
            "{}: no outbox here (set [store] path or --db)",
            path.display()
        );
        return Exit::Failure.into();
    }
    let admin = match Admin::open(&path) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    let result = match action {
        Action::List {
            state,
            webhook,
            call,
            limit,
        } => {
            let state = match state.as_deref().map(|s| State::parse(s).ok_or(s)) {
                Some(Err(s)) => {
                    eprintln!("--state {s:?}: one of pending, delivered, dead, parked");
                    return Exit::Usage.into();
                }
                Some(Ok(s)) => Some(s),
                None => None,
            };
            admin
                .list(&ListFilter {
                    state,
                    webhook,
                    call_id: call,
                    limit,
                })
                .map(|rows| {
                    if std::io::stdout().is_terminal() {
                        println!("{}", table(&rows));
                    } else {
                        for r in &rows {
                            println!("{}", json_line(r));
                        }
                    }
                })
        }
        Action::Show { id } => match admin.show(&id) {
            Ok(Some(r)) => {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                Ok(())
            }
            Ok(None) => return nothing_matched(&format!("no delivery {id}")),
            Err(e) => Err(e),
        },
        Action::Retry {
            id,
            webhook,
            render: false,
        } => match admin.retry(id.as_ref(), webhook.as_deref()) {
            Ok(0) if id.is_some() => {
                return nothing_matched(&format!(
                    "no delivery {} that is not already pending",
                    id.as_ref().map(ToString::to_string).unwrap_or_default()
                ))
            }
            Ok(n) => {
                println!("{n} delivery(ies) queued again");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Action::Retry {
            id,
            webhook,
            render: true,
        } => {
            let hooks = match Compiled::load(config) {
                Ok((_, compiled)) => compiled.hooks,
                Err(problems) => {
                    super::print_problems(config, &problems);
                    return Exit::Config.into();
                }
            };
            match admin.retry_rendered(id.as_ref(), webhook.as_deref(), &hooks) {
                Ok(done) => {
                    for (rowid, why) in &done.left {
                        eprintln!("delivery {rowid} left as it was: {why}");
                    }
                    if done.queued == 0 && (id.is_some() || !done.left.is_empty()) {
                        return nothing_matched(&match &id {
                            Some(id) if done.left.is_empty() => {
                                format!("no delivery {id} that is not already pending")
                            }
                            _ => "nothing was rendered again".into(),
                        });
                    }
                    println!("{} delivery(ies) rendered again and queued", done.queued);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Action::Resend {
            since,
            until,
            webhook,
        } => {
            let until = until.unwrap_or(i64::MAX);
            match admin.resend_delivered(since, until, webhook.as_deref()) {
                Ok(0) => return nothing_matched("nothing was delivered in that window"),
                Ok(n) => {
                    println!("{n} delivery(ies) queued again, in order");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Action::Purge {
            delivered,
            dead,
            older_than,
        } => {
            let mut states = Vec::new();
            if delivered {
                states.push(State::Delivered);
            }
            if dead {
                states.push(State::Dead);
            }
            if states.is_empty() {
                eprintln!("say what to purge: --delivered and/or --dead");
                return Exit::Usage.into();
            }
            admin
                .purge(&states, older_than.as_millis() as i64)
                .map(|n| println!("{n} delivery(ies) deleted"))
        }
        Action::Enable { webhook } => match admin.enable(&webhook) {
            Ok(Some(n)) => {
                println!("{webhook} enabled; {n} parked delivery(ies) queued in order");
                Ok(())
            }
            Ok(None) => return nothing_matched(&format!("no webhook {webhook:?} in the outbox")),
            Err(e) => Err(e),
        },
        Action::Backup { to } => admin
            .backup(&to)
            .map(|()| println!("outbox backed up to {}", to.display())),
        Action::Fleet { .. } => unreachable!("answered from NATS above"),
        Action::Status => admin.counts().and_then(|counts| {
            for (state, n) in counts {
                println!("{state}: {n}");
            }
            for (name, why) in admin.disabled()? {
                println!("disabled: {name} ({why})");
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `deliveries fleet`: the fleet's shared state, a table on a terminal, one JSON object per
/// line otherwise (`kind` disabled, failing or dead; instants in ISO 8601 as well).
async fn fleet(config: Option<&Path>, filter: &DeadFilter) -> ExitCode {
    let nats = match Config::read(config) {
        (c, problems) if problems.is_empty() => c.nats,
        (_, problems) => {
            super::print_problems(config, &problems);
            return Exit::Config.into();
        }
    };
    if !nats.enabled() {
        eprintln!("no [nats] servers in the configuration: a fleet shares its state through NATS");
        return Exit::Usage.into();
    }
    let view = match FleetView::read(&nats, filter).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    if std::io::stdout().is_terminal() {
        for d in &view.disabled {
            println!(
                "disabled: {} since {} by {} ({})",
                d.webhook,
                iso(d.at_ms),
                d.worker,
                d.reason
            );
        }
        for f in &view.failing {
            println!(
                "failing: {} since {} (first seen by {})",
                f.webhook,
                iso(f.since_ms),
                f.worker
            );
        }
        println!("{}", dead_table(&view.dead));
    } else {
        let lines = view
            .disabled
            .iter()
            .map(|d| with_instant(d, "disabled", "at", d.at_ms))
            .chain(
                view.failing
                    .iter()
                    .map(|f| with_instant(f, "failing", "since", f.since_ms)),
            )
            .chain(
                view.dead
                    .iter()
                    .rev()
                    .map(|d| with_instant(d, "dead", "at", d.at_ms)),
            );
        for line in lines {
            println!("{line}");
        }
    }
    ExitCode::SUCCESS
}

/// `value` as a JSON line with its `kind` and an instant in ISO 8601 under `key`.
fn with_instant(value: &impl serde::Serialize, kind: &str, key: &str, ms: i64) -> String {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), kind.into());
        o.insert(key.into(), iso(ms).into());
    }
    v.to_string()
}

/// Announced dead letters, newest first, as a table for a person at a terminal.
fn dead_table(dead: &[DeadLetterNotice]) -> comfy_table::Table {
    let mut t = new_table([
        "dead since (UTC)",
        "tenant",
        "webhook",
        "trigger",
        "call",
        "tries",
        "last outcome",
        "worker",
    ]);
    for d in dead.iter().rev() {
        t.add_row([
            iso(d.at_ms),
            d.tenant_id.clone(),
            d.webhook.clone(),
            d.trigger.clone(),
            short_call(&d.call_id),
            d.attempts.to_string(),
            last_outcome(d.status, d.error.as_deref()),
            d.worker.clone(),
        ]);
    }
    t
}
