//! The configuration file, watched: a good edit is compiled and handed to the pipeline; a bad
//! one is logged and the running configuration stays. SIGHUP forces a look.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::Compiled;
use crate::config::Config;

/// How often the configuration file is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A changed configuration, compiled.
pub(super) struct Reloaded {
    pub cfg: Config,
    pub compiled: Compiled,
    /// `[freeswitch]` differs from the running one (applies at a restart only).
    pub freeswitch_changed: bool,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches `path` (nothing without one); sends each good new configuration.
pub(super) fn watch(path: Option<PathBuf>, current: &Config) -> mpsc::UnboundedReceiver<Reloaded> {
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(path) = path else {
        return rx;
    };
    let mut running = serde_json::to_value(&current.freeswitch).ok();
    tokio::spawn(async move {
        let mut last = stamp(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => false,
                    _ = h.recv() => true,
                },
                None => {
                    tokio::time::sleep(WATCH_EVERY).await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(WATCH_EVERY).await;
                false
            };
            let now = stamp(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match Compiled::load(Some(&path)) {
                Ok((cfg, compiled)) => {
                    let fs = serde_json::to_value(&cfg.freeswitch).ok();
                    let freeswitch_changed = fs != running;
                    running = fs;
                    let reloaded = Reloaded {
                        cfg,
                        compiled,
                        freeswitch_changed,
                    };
                    if tx.send(reloaded).is_err() {
                        return;
                    }
                }
                Err(problems) => tracing::error!(
                    file = %path.display(),
                    error = %problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    "configuration change rejected; the running configuration stays"
                ),
            }
        }
    });
    rx
}
