//! `switchhook diff`: what a configuration change changes, call by call, on captures.
//!
//! Each capture is replayed under both configurations; the CDRs are compared field by field
//! and the webhook requests by their `webhook-id` (added, removed, changed). A difference
//! exits 1, like `diff`, so the command can gate a deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use super::{load, reported, Exit};
use crate::pipeline::Compiled;
use crate::replay;

/// What `diff` was asked for.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The configuration in use, then the new one (`--config OLD --config NEW`).
    #[arg(long, short, required = true, num_args = 1, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Capture files to replay under both.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One capture under one configuration: CDRs by call id, requests by webhook-id.
struct Outcome {
    cdrs: BTreeMap<String, Value>,
    requests: BTreeMap<String, (String, Value)>,
}

async fn replay_under(c: &Compiled, file: &Path) -> Option<Outcome> {
    let mut cdrs = BTreeMap::new();
    let mut requests = BTreeMap::new();
    let hooks = &c.hooks;
    let replayed = replay::records_and_moments(
        file,
        Arc::clone(&c.settings),
        &replay::Progress::hidden(),
        |r| {
            if let Ok(v) = serde_json::to_value(&r.cdr) {
                cdrs.insert(r.cdr.id.clone(), v);
            }
        },
        |m| {
            for req in hooks.plan(&m) {
                let signer = hooks.get(&req.webhook).and_then(|h| h.signer.as_ref());
                let label = format!(
                    "{} {} call {}",
                    req.webhook,
                    req.trigger,
                    short(&req.call_id)
                );
                let shown = req.to_printable(signer, m.at_us / 1_000_000);
                requests.insert(req.id.clone(), (label, shown));
            }
        },
    )
    .await;
    reported(file, replayed).then_some(Outcome { cdrs, requests })
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A JSON value in one line, cut to a readable length.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The lines saying how `new` differs from `old`.
fn differences(old: &Outcome, new: &Outcome) -> Vec<String> {
    let mut lines = Vec::new();
    let ids: std::collections::BTreeSet<&String> = old.cdrs.keys().chain(new.cdrs.keys()).collect();
    for id in ids {
        match (old.cdrs.get(id), new.cdrs.get(id)) {
            (Some(_), None) => lines.push(format!("call {}: no record any more", short(id))),
            (None, Some(_)) => lines.push(format!("call {}: a new record", short(id))),
            (Some(a), Some(b)) if a != b => {
                let empty = serde_json::Map::new();
                let (a, b) = (
                    a.as_object().unwrap_or(&empty),
                    b.as_object().unwrap_or(&empty),
                );
                let fields: std::collections::BTreeSet<&String> =
                    a.keys().chain(b.keys()).collect();
                let changes: Vec<String> = fields
                    .into_iter()
                    .filter_map(|f| match (a.get(f), b.get(f)) {
                        (Some(x), Some(y)) if x != y => {
                            Some(format!("{f} {} → {}", shown(x), shown(y)))
                        }
                        (Some(x), None) => Some(format!("{f} {} → (absent)", shown(x))),
                        (None, Some(y)) => Some(format!("{f} (absent) → {}", shown(y))),
                        _ => None,
                    })
                    .collect();
                lines.push(format!("call {}: {}", short(id), changes.join("; ")));
            }
            _ => {}
        }
    }
    let ids: std::collections::BTreeSet<&String> =
        old.requests.keys().chain(new.requests.keys()).collect();
    for id in ids {
        match (old.requests.get(id), new.requests.get(id)) {
            (Some((label, _)), None) => lines.push(format!("webhook {label}: no longer sent")),
            (None, Some((label, _))) => lines.push(format!("webhook {label}: sent now")),
            (Some((label, a)), Some((_, b))) if a != b => {
                let parts: Vec<&str> = ["method", "url", "headers", "body"]
                    .into_iter()
                    .filter(|k| a.get(*k) != b.get(*k))
                    .collect();
                lines.push(format!("webhook {label}: {} changed", parts.join(", ")));
            }
            _ => {}
        }
    }
    lines
}

/// Replays every capture under both configurations and prints what differs.
pub(super) async fn run(args: DiffArgs) -> ExitCode {
    let [old_path, new_path] = args.config.as_slice() else {
        eprintln!(
            "diff takes two configurations: --config OLD --config NEW ({} given)",
            args.config.len()
        );
        return Exit::Usage.into();
    };
    let (old, new) = match (load(Some(old_path)), load(Some(new_path))) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let mut differ = false;
    for file in &args.files {
        let (Some(a), Some(b)) = (
            replay_under(&old, file).await,
            replay_under(&new, file).await,
        ) else {
            return Exit::Failure.into();
        };
        let lines = differences(&a, &b);
        println!(
            "{}: {} calls, {} webhook requests; {}",
            file.display(),
            a.cdrs.len().max(b.cdrs.len()),
            a.requests.len().max(b.requests.len()),
            if lines.is_empty() {
                "no difference".to_owned()
            } else {
                format!("{} differences", lines.len())
            }
        );
        for l in &lines {
            println!("  {l}");
        }
        differ |= !lines.is_empty();
    }
    if differ {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
