//! Disabled and failing webhooks shared by a fleet's workers, through a key-value bucket
//! (`STREAM_webhooks`).
//!
//! Each worker's outbox stays the place its delivery queue reads the state from, as without
//! NATS; this keeps the bucket and the outbox in step. A webhook a worker disables (it kept
//! failing, or answered 410) is disabled on every worker; one enabled on any worker
//! (`switchhook deliveries enable`) is enabled on every worker; and a webhook's failing
//! window counts from the first failure any worker saw, so they give up on it together.
//!
//! Keys: `disabled.WEBHOOK` (the reason, who, when) and `failing.WEBHOOK` (since when).
//! Changes are found by comparing the outbox and the bucket with what they were at the last
//! sync, so a change on either side wins over the other side's older state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::config::NatsConfig;
use super::jetstream::bucket;
use super::message::token;
use crate::hooks::{Admin, StoreError};

/// A webhook disabled on every worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisabledWebhook {
    /// The webhook's name.
    pub webhook: String,
    /// Why it was disabled (410, or nothing got through for `disable_after`).
    pub reason: String,
    /// The worker that disabled it.
    pub worker: String,
    /// When (unix ms).
    pub at_ms: i64,
}

/// A webhook failing on some worker, not yet disabled.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailingWebhook {
    /// The webhook's name.
    pub webhook: String,
    /// Its first failure any worker saw (unix ms).
    pub since_ms: i64,
    /// The worker that saw it.
    pub worker: String,
}

/// What the bucket says.
#[derive(Default)]
struct Remote {
    disabled: BTreeMap<String, DisabledWebhook>,
    failing: BTreeMap<String, FailingWebhook>,
}

/// One worker's view of the shared state.
pub(crate) struct WebhookState {
    kv: kv::Store,
    outbox: PathBuf,
    worker: String,
    /// The webhooks disabled as of the last sync (none yet: the first is to come).
    synced: Option<BTreeSet<String>>,
    /// The bucket was empty when opened.
    new: bool,
    /// Failing webhooks this worker put in the bucket.
    announced: BTreeSet<String>,
}

/// Runs `f` on the outbox's admin connection, off the async threads.
pub(crate) async fn with_admin<T: Send + 'static>(
    outbox: &std::path::Path,
    f: impl FnOnce(&Admin) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let path = outbox.to_owned();
    tokio::task::spawn_blocking(move || Admin::open(&path).and_then(|a| f(&a)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Everything the bucket holds.
async fn read(kv: &kv::Store) -> Result<Remote, String> {
    let mut out = Remote::default();
    let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(|e| e.to_string())?);
    }
    for k in names {
        let Some(value) = kv.get(&k).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if k.starts_with("disabled.") {
            if let Ok(d) = serde_json::from_slice::<DisabledWebhook>(&value) {
                out.disabled.insert(d.webhook.clone(), d);
            }
        } else if k.starts_with("failing.") {
            if let Ok(f) = serde_json::from_slice::<FailingWebhook>(&value) {
                out.failing.insert(f.webhook.clone(), f);
            }
        }
    }
    Ok(out)
}

/// The fleet's disabled and failing webhooks, by name; none while no worker has made the
/// bucket yet.
pub(crate) async fn shared(
    js: &jetstream::Context,
    nats: &NatsConfig,
) -> Result<(Vec<DisabledWebhook>, Vec<FailingWebhook>), String> {
    let name = format!("{}_webhooks", nats.stream);
    if super::jetstream::existing_stream(js, &format!("KV_{name}"))
        .await?
        .is_none()
    {
        return Ok((Vec::new(), Vec::new()));
    }
    let kv = js
        .get_key_value(&name)
        .await
        .map_err(|e| format!("key-value bucket {name}: {e}"))?;
    let remote = read(&kv).await?;
    Ok((
        remote.disabled.into_values().collect(),
        remote.failing.into_values().collect(),
    ))
}

impl WebhookState {
    /// Opens the bucket, made when missing.
    pub(crate) async fn open(
        js: &jetstream::Context,
        nats: &NatsConfig,
        outbox: PathBuf,
        worker: String,
    ) -> Result<WebhookState, String> {
        let name = format!("{}_webhooks", nats.stream);
        // Never empty before: a new fleet, or one grown from a single switchhook, whose
        // outbox is then the truth.
        let (kv, new) = bucket(js, &name, std::time::Duration::ZERO, nats.replicas).await?;
        Ok(WebhookState {
            kv,
            outbox,
            worker,
            synced: None,
            new,
            announced: BTreeSet::new(),
        })
    }

    async fn remote(&self) -> Result<Remote, String> {
        read(&self.kv).await
    }

    async fn put<T: Serialize>(&self, key: String, value: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.kv
            .put(key, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, key: String) -> Result<(), String> {
        self.kv.delete(key).await.map_err(|e| e.to_string())
    }

    /// Brings the outbox and the bucket in step. Err: NATS failed (the session starts
    /// again); an outbox that cannot be read is logged and tried at the next sync.
    pub(crate) async fn sync(&mut self) -> Result<(), String> {
        let local = with_admin(&self.outbox, |a| Ok((a.disabled()?, a.failing()?))).await;
        let (disabled, failing) = match local {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook state from the outbox; shared at the next sync");
                return Ok(());
            }
        };
        let local: BTreeMap<String, String> = disabled.into_iter().collect();
        let remote = self.remote().await?;
        let now = crate::hooks::store::now_ms();

        let (put, delete, disable, enable): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = match &self.synced {
            None if self.new => (local.keys().cloned().collect(), vec![], vec![], vec![]),
            // After a start, the fleet's word holds for what changed while this worker was
            // away (a webhook enabled elsewhere stays enabled).
            None => (
                vec![],
                vec![],
                remote
                    .disabled
                    .keys()
                    .filter(|w| !local.contains_key(*w))
                    .cloned()
                    .collect(),
                local
                    .keys()
                    .filter(|w| !remote.disabled.contains_key(*w))
                    .cloned()
                    .collect(),
            ),
            Some(synced) => (
                local
                    .keys()
                    .filter(|w| !synced.contains(*w))
                    .cloned()
                    .collect(),
                synced
                    .iter()
                    .filter(|w| !local.contains_key(*w))
                    .cloned()
                    .collect(),
                remote
                    .disabled
                    .keys()
                    .filter(|w| !synced.contains(*w) && !local.contains_key(*w))
                    .cloned()
                    .collect(),
                synced
                    .iter()
                    .filter(|w| local.contains_key(*w) && !remote.disabled.contains_key(*w))
                    .cloned()
                    .collect(),
            ),
        };
        for webhook in put {
            let reason = local.get(&webhook).cloned().unwrap_or_default();
            tracing::info!(
                webhook,
                reason,
                "webhook disabled here: disabled on every worker"
            );
            let entry = DisabledWebhook {
                webhook: webhook.clone(),
                reason,
                worker: self.worker.clone(),
                at_ms: now,
            };
            self.put(format!("disabled.{}", token(&webhook)), &entry)
                .await?;
            if remote.failing.contains_key(&webhook) {
                self.delete(format!("failing.{}", token(&webhook))).await?;
            }
        }
        for webhook in delete {
            tracing::info!(webhook, "webhook enabled here: enabled on every worker");
            self.delete(format!("disabled.{}", token(&webhook))).await?;
        }
        let mut now_disabled: BTreeSet<String> = local.keys().cloned().collect();
        for webhook in disable {
            let Some(d) = remote.disabled.get(&webhook) else {
                continue;
            };
            let reason = format!("{} (on worker {})", d.reason, d.worker);
            tracing::warn!(
                webhook,
                reason,
                "webhook disabled by another worker: its deliveries are parked here too"
            );
            let (w, r) = (webhook.clone(), reason.clone());
            match with_admin(&self.outbox, move |a| a.disable(&w, &r)).await {
                Ok(()) => {
                    now_disabled.insert(webhook);
                }
                Err(e) => {
                    tracing::warn!(webhook, error = %e, "cannot disable the webhook here; tried at the next sync")
                }
            }
        }
        for webhook in enable {
            tracing::info!(
                webhook,
                "webhook enabled on another worker: its parked deliveries go out here too"
            );
            let w = webhook.clone();
            match with_admin(&self.outbox, move |a| a.enable(&w)).await {
                Ok(_) => {
                    now_disabled.remove(&webhook);
                }
                Err(e) => {
                    tracing::warn!(webhook, error = %e, "cannot enable the webhook here; tried at the next sync")
                }
            }
        }
        self.synced = Some(now_disabled);

        // Failing: the earliest start wins, in the bucket and in each outbox.
        let failing: BTreeMap<String, i64> = failing.into_iter().collect();
        for (webhook, since) in &failing {
            match remote.failing.get(webhook) {
                Some(f) if f.since_ms < *since => {
                    let (w, s) = (webhook.clone(), f.since_ms);
                    if let Err(e) = with_admin(&self.outbox, move |a| a.failing_since(&w, s)).await
                    {
                        tracing::warn!(webhook, error = %e, "cannot note when the webhook started failing");
                    }
                }
                Some(f) if f.since_ms == *since => {}
                _ => {
                    let entry = FailingWebhook {
                        webhook: webhook.clone(),
                        since_ms: *since,
                        worker: self.worker.clone(),
                    };
                    self.put(format!("failing.{}", token(webhook)), &entry)
                        .await?;
                    self.announced.insert(webhook.clone());
                }
            }
        }
        // Delivering again here: the entry this worker made goes (another worker still
        // failing puts its own back).
        let recovered: Vec<String> = self
            .announced
            .iter()
            .filter(|w| !failing.contains_key(*w))
            .cloned()
            .collect();
        for webhook in recovered {
            self.announced.remove(&webhook);
            if remote
                .failing
                .get(&webhook)
                .is_some_and(|f| f.worker == self.worker)
            {
                self.delete(format!("failing.{}", token(&webhook))).await?;
            }
        }
        Ok(())
    }
}
