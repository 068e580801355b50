//! `switchhook deliver`: a worker that takes lifecycle moments from the stream and delivers
//! the webhooks they make, with the same rules as `run` (its own outbox, retries, schedules,
//! dead letters, order per call).
//!
//! Work is shared by partition. A call's moments are all in one partition, and a partition
//! is consumed by one worker at a time: the one holding its lease, a key in a KV bucket
//! (`STREAM_leases`) that expires unless renewed. Each worker takes its fair share of the
//! partitions (or `max_partitions`) among the live workers, which announce themselves in
//! the same bucket; when one dies, its leases expire and the others take its partitions
//! over. A moment is acknowledged once its requests are committed to the worker's outbox,
//! so a worker killed before that gets it again, and the outbox drops what it already has
//! (the webhook-id is its key).

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, AckKind};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{NatsConfig, WorkerConfig};
use super::dead_letters;
use super::jetstream::{bucket, JetStream};
use super::webhook_state::WebhookState;
use crate::hooks::moment_data::MomentData;
use crate::hooks::{DeliveryQueue, WebhookSet};

/// The webhooks to render with, replaced when the configuration is reloaded.
pub type Hooks = tokio::sync::watch::Receiver<Arc<WebhookSet>>;

/// A worker's figures.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Whether its NATS session is up.
    pub connected: AtomicBool,
    /// Partitions it holds.
    pub partitions: AtomicI64,
    /// Moments taken and not yet acknowledged.
    pub unfinished: AtomicI64,
    /// Moments taken from the stream (again after a hand-over too).
    pub taken: AtomicU64,
    /// Moments acknowledged.
    pub acknowledged: AtomicU64,
    /// Dead letters announced on the bus.
    pub dead_letters: AtomicU64,
}

/// The first pause after NATS failed; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The most moments taken from a partition at once (all handled before the next batch, so
/// a partition handed over leaves nothing taken and not acknowledged behind).
const BATCH: usize = 64;

/// A worker.
pub struct Worker {
    nats: NatsConfig,
    cfg: WorkerConfig,
    name: String,
    hooks: Hooks,
    queue: Arc<DeliveryQueue>,
    stats: Arc<WorkerStats>,
    /// The outbox `queue` uses (the webhook state and dead letters are read from it).
    outbox: PathBuf,
}

/// A partition this worker holds: its lease's revision and its consumer.
struct Held {
    revision: u64,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Worker {
    /// A worker rendering with the webhooks `hooks` holds (a reloaded configuration's from
    /// the next moment on) and delivering through `queue`, whose outbox is at `outbox`.
    pub fn new(
        nats: NatsConfig,
        cfg: WorkerConfig,
        hooks: Hooks,
        queue: Arc<DeliveryQueue>,
        outbox: PathBuf,
    ) -> Worker {
        let name = cfg.name();
        Worker {
            nats,
            cfg,
            name,
            hooks,
            queue,
            stats: Arc::default(),
            outbox,
        }
    }

    /// Its figures (the admin endpoint reads them at each scrape).
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Works until `stop`; reconnects with a growing pause while NATS fails.
    pub async fn run(&self, stop: CancellationToken) {
        tracing::info!(worker = %self.name, partitions = self.nats.partitions, "delivering webhooks from NATS");
        let mut pause = RETRY_MIN;
        loop {
            match self.session(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(worker = %self.name, error = %e, "NATS: connecting again after a pause");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One connection: leases and consumers until stopped (Ok) or NATS fails (Err). The
    /// partitions held are handed back either way.
    async fn session(&self, stop: &CancellationToken) -> Result<(), String> {
        let js = JetStream(self.nats.clone())
            .context()
            .await
            .map_err(|e| e.to_string())?;
        let leases = self.leases(&js).await?;
        let stream = js
            .get_stream(&self.nats.stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut shared =
            WebhookState::open(&js, &self.nats, self.outbox.clone(), self.name.clone()).await?;
        self.stats.connected.store(true, Ordering::Relaxed);
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let result = loop {
            let ticked = self.tick(&leases, &stream, &js.client(), &mut held).await;
            self.stats
                .partitions
                .store(held.len() as i64, Ordering::Relaxed);
            if let Err(e) = ticked {
                break Err(e);
            }
            if let Err(e) = shared.sync().await {
                break Err(format!("webhook state: {e}"));
            }
            match dead_letters::announce(&js, &self.nats, &self.outbox, &self.name).await {
                Ok(0) => {}
                Ok(n) => {
                    self.stats
                        .dead_letters
                        .fetch_add(n as u64, Ordering::Relaxed);
                    tracing::info!(worker = %self.name, dead_letters = n, "dead letters announced on the bus")
                }
                Err(e) => break Err(format!("dead letters: {e}")),
            }
            if let Some(p) = held
                .iter()
                .find(|(_, h)| h.task.is_finished())
                .map(|(p, _)| *p)
            {
                let ended = held.remove(&p).map(|h| h.task);
                let why = match ended {
                    Some(task) => match task.await {
                        Ok(Err(e)) => e,
                        _ => "its consumer ended".into(),
                    },
                    None => "its consumer ended".into(),
                };
                break Err(format!("partition {p}: {why}"));
            }
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = tokio::time::sleep(self.cfg.lease / 3) => {}
            }
        };
        if result.is_ok() {
            // Stopping: the partitions go to the others at once.
            self.release(&leases, std::mem::take(&mut held).into_iter().collect())
                .await;
            let _ = leases.delete(self.worker_key()).await;
        } else {
            // NATS failed: the leases cannot be given back; they expire.
            for (_, h) in std::mem::take(&mut held) {
                h.stop.cancel();
                let _ = h.task.await;
            }
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        self.stats.partitions.store(0, Ordering::Relaxed);
        result
    }

    /// The lease bucket, made when missing; a lease not renewed expires after `lease`.
    async fn leases(&self, js: &jetstream::Context) -> Result<kv::Store, String> {
        let name = format!("{}_leases", self.nats.stream);
        bucket(js, &name, self.cfg.lease, self.nats.replicas)
            .await
            .map(|(kv, _)| kv)
    }

    fn worker_key(&self) -> String {
        format!("w.{}", self.name)
    }

    /// Announces the worker, renews its leases, and sheds or takes partitions to hold its
    /// share.
    async fn tick(
        &self,
        leases: &kv::Store,
        stream: &jetstream::stream::Stream,
        client: &async_nats::Client,
        held: &mut BTreeMap<u32, Held>,
    ) -> Result<(), String> {
        let name = bytes::Bytes::from(self.name.clone());
        leases
            .put(self.worker_key(), name.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut live = 0u32;
        let mut keys = leases.keys().await.map_err(|e| e.to_string())?;
        while let Some(k) = keys.next().await {
            if k.map_err(|e| e.to_string())?.starts_with("w.") {
                live += 1;
            }
        }
        let all = self.nats.partitions;
        let share = match self.cfg.max_partitions {
            0 => all.div_ceil(live.max(1)),
            n => n.min(all),
        } as usize;
        let mut lost = Vec::new();
        for (p, h) in held.iter_mut() {
            match leases.update(lease_key(*p), name.clone(), h.revision).await {
                Ok(rev) => h.revision = rev,
                Err(e) => lost.push((*p, e.to_string())),
            }
        }
        for (p, why) in lost {
            tracing::warn!(worker = %self.name, partition = p, error = %why, "lost the partition's lease; another worker has it");
            if let Some(h) = held.remove(&p) {
                h.stop.cancel();
                let _ = h.task.await;
            }
        }
        let mut shed = Vec::new();
        while held.len() > share {
            let Some((p, h)) = held.pop_last() else { break };
            tracing::info!(worker = %self.name, partition = p, live, "handing a partition over");
            shed.push((p, h));
        }
        self.release(leases, shed).await;
        // Each worker starts looking at a place of its own, so they do not all race for
        // the same partitions.
        let mut h = fnv::FnvHasher::default();
        h.write(self.name.as_bytes());
        let start = (h.finish() % u64::from(all)) as u32;
        for i in 0..all {
            if held.len() >= share {
                break;
            }
            let p = (start + i) % all;
            if held.contains_key(&p) {
                continue;
            }
            let taken = match leases.create(lease_key(p), name.clone()).await {
                Ok(revision) => Some(revision),
                // Still ours from before a reconnect or a restart under the same name.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match leases.entry(lease_key(p)).await {
                        Ok(Some(entry)) if entry.value == name => leases
                            .update(lease_key(p), name.clone(), entry.revision)
                            .await
                            .ok(),
                        _ => None,
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            let Some(revision) = taken else { continue };
            tracing::info!(worker = %self.name, partition = p, "took a partition");
            let stop = CancellationToken::new();
            let task = tokio::spawn(
                Partition {
                    stream: stream.clone(),
                    client: client.clone(),
                    prefix: self.nats.subject_prefix.clone(),
                    cfg: self.cfg.clone(),
                    p,
                    hooks: self.hooks.clone(),
                    stats: Arc::clone(&self.stats),
                    queue: Arc::clone(&self.queue),
                }
                .consume(stop.clone()),
            );
            held.insert(
                p,
                Held {
                    revision,
                    stop,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Stops consuming these partitions, lets their deliveries under way finish (for up to
    /// a sixth of `lease`, all at once), and gives their leases back.
    async fn release(&self, leases: &kv::Store, partitions: Vec<(u32, Held)>) {
        for (_, h) in &partitions {
            h.stop.cancel();
        }
        for (p, h) in partitions {
            let _ = h.task.await;
            let _ = leases.delete(lease_key(p)).await;
        }
    }
}

fn lease_key(p: u32) -> String {
    format!("p.{p}")
}

/// A partition being consumed.
struct Partition {
    stream: jetstream::stream::Stream,
    /// The connection, flushed when the partition is let go so its acknowledgements reach
    /// the server before the next holder reads where they got to.
    client: async_nats::Client,
    prefix: String,
    cfg: WorkerConfig,
    p: u32,
    hooks: Hooks,
    queue: Arc<DeliveryQueue>,
    stats: Arc<WorkerStats>,
}

/// Partition `p`'s durable consumer.
fn consumer_name(p: u32) -> String {
    format!("deliver-p{p}")
}

/// A moment taken and not yet acknowledged: the `webhook-id`s of its requests, when it was
/// taken, and when JetStream was last told it is still being worked on.
struct Taken {
    message: jetstream::Message,
    ids: Vec<String>,
    at: Instant,
    kept: Instant,
}

/// How often the moments taken are checked for finished deliveries, at most: every 100 ms,
/// and more seldom as more wait (each check looks each of their requests up in the outbox),
/// up to every 2 s for a thousand.
fn settle_every(waiting: usize) -> Duration {
    Duration::from_millis(100 * (1 + waiting as u64 / 50)).min(Duration::from_secs(2))
}

impl Partition {
    /// The partition's durable consumer, made again from its acknowledgement floor: every
    /// moment not acknowledged (a dead or former holder's, still being delivered or not) is
    /// offered again, in stream order, before any later one, so each call's webhooks go out
    /// in order here whatever the former holder had done with them.
    async fn consumer(&self) -> Result<consumer::PullConsumer, String> {
        let name = consumer_name(self.p);
        let fail = |e: &dyn std::fmt::Display| format!("consumer {name}: {e}");
        let start = match self.stream.consumer_info(&name).await {
            Ok(info) => {
                // Where the last holder got to: its acknowledgement floor; everything it
                // was given when nothing waits for an acknowledgement; and never before
                // where it was told to start (a consumer that has acknowledged nothing yet
                // reports no floor).
                let mut done = info.ack_floor.stream_sequence;
                if info.num_ack_pending == 0 {
                    done = done.max(info.delivered.stream_sequence);
                }
                if let consumer::DeliverPolicy::ByStartSequence { start_sequence } =
                    info.config.deliver_policy
                {
                    done = done.max(start_sequence.saturating_sub(1));
                }
                self.stream
                    .delete_consumer(&name)
                    .await
                    .map_err(|e| fail(&e))?;
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: done + 1,
                }
            }
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                consumer::DeliverPolicy::All
            }
            Err(e) => return Err(fail(&e)),
        };
        self.stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{}.moment.*.*.{}.>", self.prefix, self.p),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.cfg.ack_wait,
                max_ack_pending: self.cfg.max_unfinished as i64,
                deliver_policy: start,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))
    }

    /// Consumes the partition's moments in order until `stop`, each acknowledged once its
    /// deliveries are finished with (delivered, dead or parked) or after `ack_after`. Then
    /// the deliveries under way get a sixth of `lease` to finish; what is left is offered to
    /// the next holder.
    async fn consume(self, stop: CancellationToken) -> Result<(), String> {
        let mut taken: VecDeque<Taken> = VecDeque::new();
        let result = self.work(&stop, &mut taken).await;
        // Left unacknowledged: offered to the next holder.
        self.stats
            .unfinished
            .fetch_sub(taken.len() as i64, Ordering::Relaxed);
        result
    }

    async fn work(
        &self,
        stop: &CancellationToken,
        taken: &mut VecDeque<Taken>,
    ) -> Result<(), String> {
        let consumer = self.consumer().await?;
        let mut settled = Instant::now();
        while !stop.is_cancelled() {
            let room = self
                .cfg
                .max_unfinished
                .saturating_sub(taken.len())
                .min(BATCH);
            let mut got = 0;
            if room > 0 {
                let mut batch = consumer
                    .batch()
                    .max_messages(room)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(m) = batch.next().await {
                    got += 1;
                    if let Some(t) = self.take(m.map_err(|e| e.to_string())?).await? {
                        taken.push_back(t);
                    }
                }
            } else {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(settle_every(taken.len())) => {}
                }
            }
            if got == 0 || settled.elapsed() >= settle_every(taken.len()) {
                self.settle(taken).await?;
                settled = Instant::now();
            }
        }
        // A third of `lease` in all (the holder's other leases wait for their renewal
        // meanwhile): half for the deliveries under way, the rest for the acknowledgements.
        let until = Instant::now() + self.cfg.lease / 3;
        let drained = Instant::now() + self.cfg.lease / 6;
        self.settle(taken).await?;
        while !taken.is_empty() && Instant::now() < drained {
            // The shortest pause whatever waits: the next holder waits on this.
            tokio::time::sleep(
                settle_every(0).min(drained.saturating_duration_since(Instant::now())),
            )
            .await;
            self.settle(taken).await?;
        }
        // The server takes acknowledgements in on its own time: hand over once it has, so
        // the next holder starts after them rather than offering them all again.
        self.client.flush().await.map_err(|e| e.to_string())?;
        let name = consumer_name(self.p);
        while Instant::now() < until {
            match self.stream.consumer_info(&name).await {
                Ok(info) if info.num_ack_pending > taken.len() => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// One moment: its requests committed to the outbox (None when it makes none, or is
    /// not a moment: acknowledged at once).
    async fn take(&self, m: jetstream::Message) -> Result<Option<Taken>, String> {
        let data = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()
            .and_then(|mut v| serde_json::from_value::<MomentData>(v["moment"].take()).ok());
        let Some(data) = data else {
            tracing::error!(subject = %m.subject, "NATS: not a lifecycle moment; dropped");
            m.ack_with(AckKind::Term).await.map_err(|e| e.to_string())?;
            return Ok(None);
        };
        self.stats.taken.fetch_add(1, Ordering::Relaxed);
        let hooks = Arc::clone(&self.hooks.borrow());
        let requests = hooks.plan_data(&Arc::new(data));
        if requests.is_empty() {
            m.ack().await.map_err(|e| e.to_string())?;
            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let ids = requests.iter().map(|r| r.id.clone()).collect();
        if !self.queue.submit_committed(requests).await {
            // The outbox's disk is failing: stop here, and start again from this moment
            // once the session is made again, so the partition's order holds.
            return Err("the outbox cannot commit the moment's requests".into());
        }
        let now = Instant::now();
        self.stats.unfinished.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Taken {
            message: m,
            ids,
            at: now,
            kept: now,
        }))
    }

    /// Acknowledges the moments whose deliveries are finished with (or that waited
    /// `ack_after`), and tells JetStream the others are still being worked on.
    async fn settle(&self, taken: &mut VecDeque<Taken>) -> Result<(), String> {
        if taken.is_empty() {
            return Ok(());
        }
        let ids = taken.iter().flat_map(|t| t.ids.iter().cloned()).collect();
        let open = match self.queue.unfinished(ids).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(partition = self.p, error = %e, "cannot read the outbox's deliveries; acknowledged later");
                return Ok(());
            }
        };
        let now = Instant::now();
        let mut left = VecDeque::with_capacity(taken.len());
        for mut t in taken.drain(..) {
            let finished = t.ids.iter().all(|id| !open.contains(id));
            if finished || now - t.at >= self.cfg.ack_after {
                t.message.ack().await.map_err(|e| e.to_string())?;
                self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.stats.unfinished.fetch_sub(1, Ordering::Relaxed);
            } else {
                if now - t.kept >= self.cfg.ack_wait / 3 {
                    t.message
                        .ack_with(AckKind::Progress)
                        .await
                        .map_err(|e| e.to_string())?;
                    t.kept = now;
                }
                left.push_back(t);
            }
        }
        *taken = left;
        Ok(())
    }
}
