//! The supervised inbound client: it stays connected, and tells consumers when it was not.
//!
//! One task owns the socket. Commands reach it over a channel and their replies come back in
//! order (FreeSWITCH answers commands strictly in sequence), while events keep flowing to the
//! consumer channel. When the socket drops or goes silent past the HEARTBEAT watchdog the task
//! reconnects with jittered exponential backoff, subscribes again, asks FreeSWITCH which
//! channels exist (`show channels as json`) and hands that list downstream as a
//! [`EslSignal::Resync`], after an [`EslSignal::Gap`] that says events may be missing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::{Command, CommandError};
use super::config::{FreeswitchConfig, Overflow};
use super::connection::{self, ConnectError, Framed8021};
use super::event::Event;
use super::message::{ApiResponse, Disposition, Message, Reply};
use super::names::EventName;

/// What consumers receive, in order.
#[derive(Debug)]
pub enum EslSignal {
    /// Authenticated and subscribed (`connection` counts from 1).
    Connected {
        /// Connection number.
        connection: u64,
    },
    /// The channels FreeSWITCH has right now, sent after every (re)connect: after the events
    /// that arrived before the list (they happened before it was made) and before the rest.
    Resync {
        /// Connection number.
        connection: u64,
        /// One row of `show channels as json` per channel.
        channels: Vec<ChannelSnapshot>,
    },
    /// An event.
    Event(QueuedEvent),
    /// Events may be missing from here on: calls in flight are incomplete.
    Gap(GapReason),
}

/// An event handed to the consumer. The bytes it holds count against the client's byte
/// budget ([`FreeswitchConfig::queue_bytes`]) until it is dropped, so the events waiting for a
/// slow consumer are bounded by memory, not only by count.
#[derive(Debug)]
pub struct QueuedEvent {
    event: Event,
    _budget: OwnedSemaphorePermit,
}

impl std::ops::Deref for QueuedEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// The byte budget shared by every connection's events, in KiB permits.
struct Budget {
    permits: Arc<Semaphore>,
    total: u32,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        let total = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Budget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// What `ev` costs; an event larger than the whole budget costs all of it (it passes
    /// alone).
    fn cost(&self, ev: &Event) -> u32 {
        ((ev.memory() / 1024) as u32)
            .saturating_add(1)
            .min(self.total)
    }

    /// The event with its bytes taken, if they are free now.
    fn try_take(&self, ev: Event) -> Result<QueuedEvent, Event> {
        match Arc::clone(&self.permits).try_acquire_many_owned(self.cost(&ev)) {
            Ok(p) => Ok(QueuedEvent {
                event: ev,
                _budget: p,
            }),
            Err(_) => Err(ev),
        }
    }

    /// The event with its bytes taken, waiting until they are free.
    async fn take(&self, ev: Event) -> Option<QueuedEvent> {
        let p = Arc::clone(&self.permits)
            .acquire_many_owned(self.cost(&ev))
            .await
            .ok()?;
        Some(QueuedEvent {
            event: ev,
            _budget: p,
        })
    }
}

/// Events that arrive while subscribing, before `show channels` answers: kept within the
/// byte budget, the rest counted (a gap follows them).
#[derive(Default)]
struct Early {
    events: Vec<QueuedEvent>,
    dropped: u64,
}

/// Why events may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum GapReason {
    /// The connection was lost.
    Disconnected(String),
    /// The consumer fell behind and this many events were dropped (`overflow = "drop"`).
    Dropped(u64),
    /// FreeSWITCH dropped this listener because it fell behind ("lost events").
    LostEvents,
}

/// One channel of `show channels as json`.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSnapshot {
    /// The channel's `uuid`.
    pub uuid: String,
    /// The call's `call_uuid` (the A leg's uuid for bridged legs).
    pub call_uuid: Option<String>,
    /// Every column of the row.
    pub row: serde_json::Map<String, serde_json::Value>,
}

/// Counters, shared with whoever wants to report them.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Successful authentications.
    pub connects: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Frames decoded.
    pub frames: AtomicU64,
    /// Bytes decoded.
    pub bytes: AtomicU64,
    /// Malformed frames skipped.
    pub parse_errors: AtomicU64,
    /// Events delivered downstream.
    pub events: AtomicU64,
    /// Events dropped by the overflow policy.
    pub dropped_events: AtomicU64,
    /// Whether the socket is up and subscribed right now.
    pub connected: AtomicBool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not connected to FreeSWITCH at the moment.
    #[error("not connected to FreeSWITCH")]
    NotConnected,
    /// No reply (or BACKGROUND_JOB) before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection dropped before the reply.
    #[error("connection lost before the reply")]
    ConnectionLost,
    /// The client has been shut down.
    #[error("client is shut down")]
    Shutdown,
    /// The command was refused before sending.
    #[error(transparent)]
    Command(#[from] CommandError),
}

enum Response {
    Reply(Reply),
    Api(ApiResponse),
}

struct Request {
    cmd: Command,
    reply: oneshot::Sender<Result<Response, ClientError>>,
    job: Option<oneshot::Sender<Event>>,
}

/// A cheap, cloneable handle to the supervised connection.
///
/// With `overflow = "block"` the socket task waits for room in the consumer channel, and
/// command replies queue behind the events in front of them. So a task must not both drain
/// the signals and await a command: while the channel is full, each would wait for the other.
/// Issue commands from another task.
#[derive(Clone)]
pub struct EslClient {
    requests: mpsc::Sender<Request>,
    stats: Arc<ClientStats>,
    command_timeout: Duration,
    /// Cancelled by [`EslClient::shutdown`]: ends a connection attempt or a backoff at once
    /// (neither reads commands, so an `exit` would wait them out).
    stop: CancellationToken,
}

impl EslClient {
    /// Starts the supervisor task. Signals arrive on the returned receiver; the task ends when
    /// [`EslClient::shutdown`] is called or every handle and the receiver are dropped.
    pub fn spawn(cfg: FreeswitchConfig) -> (EslClient, mpsc::Receiver<EslSignal>, JoinHandle<()>) {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (sig_tx, sig_rx) = mpsc::channel(cfg.queue.max(1));
        let stats = Arc::new(ClientStats::default());
        let stop = CancellationToken::new();
        let client = EslClient {
            requests: req_tx,
            stats: stats.clone(),
            command_timeout: cfg.command_timeout,
            stop: stop.clone(),
        };
        let task = tokio::spawn(supervise(cfg, req_rx, sig_tx, stats, stop));
        (client, sig_rx, task)
    }

    /// The client's counters.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    async fn request(
        &self,
        cmd: Command,
        job: Option<oneshot::Sender<Event>>,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request {
                cmd,
                reply: tx,
                job,
            })
            .await
            .map_err(|_| ClientError::Shutdown)?;
        match tokio::time::timeout(deadline, rx).await {
            Err(_) => Err(ClientError::Timeout(deadline)),
            Ok(Err(_)) => Err(ClientError::ConnectionLost),
            Ok(Ok(r)) => r,
        }
    }

    /// `api <line>`: blocks until FreeSWITCH answers (events keep flowing meanwhile).
    pub async fn api(&self, line: &str) -> Result<ApiResponse, ClientError> {
        match self
            .request(Command::api(line)?, None, self.command_timeout)
            .await?
        {
            Response::Api(a) => Ok(a),
            Response::Reply(_) => Err(ClientError::ConnectionLost),
        }
    }

    /// `bgapi <line>`: returns the BACKGROUND_JOB event matched by the Job-UUID this client
    /// chose (registered before the command is written, so a fast job cannot be missed).
    pub async fn bgapi(&self, line: &str, deadline: Duration) -> Result<Event, ClientError> {
        let cmd = Command::bgapi(line)?;
        let (job_tx, job_rx) = oneshot::channel();
        let started = Instant::now();
        self.request(cmd, Some(job_tx), deadline).await?;
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, job_rx).await {
            Err(_) => Err(ClientError::Timeout(deadline)),
            Ok(Err(_)) => Err(ClientError::ConnectionLost),
            Ok(Ok(ev)) => Ok(ev),
        }
    }

    /// Any other command (`sendmsg`, `filter`, …); returns its `command/reply`.
    pub async fn command(&self, cmd: Command) -> Result<Reply, ClientError> {
        match self.request(cmd, None, self.command_timeout).await? {
            Response::Reply(r) => Ok(r),
            Response::Api(_) => Err(ClientError::ConnectionLost),
        }
    }

    /// Sends `exit` and stops reconnecting; a connection attempt or a backoff under way ends
    /// at once.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let _ = self
            .request(Command::Exit, None, self.command_timeout)
            .await;
    }
}

/// Why a connection ended.
enum Ended {
    /// `exit` was acknowledged or every handle is gone: stop for good.
    Shutdown,
    /// Reconnect.
    Lost(String),
}

async fn supervise(
    cfg: FreeswitchConfig,
    mut requests: mpsc::Receiver<Request>,
    signals: mpsc::Sender<EslSignal>,
    stats: Arc<ClientStats>,
    stop: CancellationToken,
) {
    let mut attempt: u32 = 0;
    let mut connection: u64 = 0;
    let budget = Budget::new(cfg.queue_bytes);
    let addr = cfg.addr();
    let auth = cfg.auth();
    loop {
        let connecting = connection::connect(&addr, &auth, cfg.limits(), cfg.connect_timeout);
        let connected = tokio::select! {
            c = connecting => c,
            _ = stop.cancelled() => {
                tracing::info!(addr = %addr, "stopped while connecting");
                return;
            }
        };
        let outcome = match connected {
            Ok(framed) => {
                connection += 1;
                stats.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(addr = %addr, connection, "connected to FreeSWITCH event socket");
                let started = Instant::now();
                let ended = run(
                    framed,
                    &cfg,
                    connection,
                    &mut requests,
                    &signals,
                    &stats,
                    &budget,
                )
                .await;
                stats.connected.store(false, Ordering::Relaxed);
                // A connection that stayed up a while resets the backoff.
                if started.elapsed() > cfg.reconnect_max {
                    attempt = 0;
                }
                ended
            }
            Err(e) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                match &e {
                    ConnectError::AuthRefused(_) | ConnectError::AccessDenied(_) => {
                        tracing::error!(addr = %addr, error = %e, "event socket refused us")
                    }
                    _ => {
                        tracing::warn!(addr = %addr, error = %e, "cannot connect to FreeSWITCH")
                    }
                }
                Ended::Lost(e.to_string())
            }
        };
        match outcome {
            Ended::Shutdown => return,
            Ended::Lost(reason) => {
                if connection > 0
                    && signals
                        .send(EslSignal::Gap(GapReason::Disconnected(reason)))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        }
        let delay = backoff(attempt, cfg.reconnect_min, cfg.reconnect_max);
        attempt = attempt.saturating_add(1);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            attempt,
            "reconnecting after backoff"
        );
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                _ = stop.cancelled() => return,
                req = requests.recv() => match req {
                    None if signals.is_closed() => return,
                    None => { wake.as_mut().await; break }
                    Some(r) if r.cmd == Command::Exit => { let _ = r.reply.send(Err(ClientError::Shutdown)); return }
                    Some(r) => { let _ = r.reply.send(Err(ClientError::NotConnected)); }
                },
            }
        }
    }
}

/// Exponential backoff with equal jitter: half the step fixed, half random, so a fleet of
/// clients does not reconnect in lockstep after a FreeSWITCH restart.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let step = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = step / 2;
    half + half.mul_f64(fastrand::f64())
}

struct Pending {
    reply: oneshot::Sender<Result<Response, ClientError>>,
    exit: bool,
}

async fn run(
    mut framed: Framed8021,
    cfg: &FreeswitchConfig,
    connection: u64,
    requests: &mut mpsc::Receiver<Request>,
    signals: &mpsc::Sender<EslSignal>,
    stats: &ClientStats,
    budget: &Budget,
) -> Ended {
    let mut early = Early::default();
    let subscribed = subscribe(&mut framed, cfg, &mut early, budget).await;
    if early.dropped > 0 {
        stats
            .dropped_events
            .fetch_add(early.dropped, Ordering::Relaxed);
        tracing::warn!(
            dropped = early.dropped,
            kept = early.events.len(),
            "events arriving while subscribing exceed the queue's byte budget: the rest are dropped and calls in flight marked partial"
        );
    }
    let mut out = Downstream {
        signals,
        overflow: cfg.overflow,
        dropped: 0,
        stats,
        budget,
    };
    let channels = match subscribed {
        Ok(c) => c,
        Err(e) => {
            // Events that arrived before the connection died are real: deliver them (this
            // connection did exist) before the caller reports the gap.
            if !early.events.is_empty() {
                if !out.control(EslSignal::Connected { connection }).await {
                    return Ended::Shutdown;
                }
                for ev in early.events {
                    if !out.queued(ev).await {
                        return Ended::Shutdown;
                    }
                }
            }
            return Ended::Lost(e);
        }
    };
    stats.connected.store(true, Ordering::Relaxed);
    if !out.control(EslSignal::Connected { connection }).await {
        return Ended::Shutdown;
    }
    // The events that came before `show channels` answered happened before the list was
    // made: they go first, so a call whose first events were in flight at connect is seen
    // from its start, not adopted from the list as if it had been up before.
    for ev in early.events {
        if !out.queued(ev).await {
            return Ended::Shutdown;
        }
    }
    if !out
        .control(EslSignal::Resync {
            connection,
            channels,
        })
        .await
    {
        return Ended::Shutdown;
    }
    if early.dropped > 0
        && !out
            .control(EslSignal::Gap(GapReason::Dropped(early.dropped)))
            .await
    {
        return Ended::Shutdown;
    }
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut jobs: HashMap<String, oneshot::Sender<Event>> = HashMap::new();
    let mut last_rx = Instant::now();
    let mut read_offset = framed.codec().offset();
    let mut handles_gone = false;
    loop {
        let watchdog = tokio::time::sleep_until(last_rx + cfg.silence_timeout);
        tokio::select! {
            item = framed.next() => {
                last_rx = Instant::now();
                let offset = framed.codec().offset();
                stats.bytes.fetch_add(offset - read_offset, Ordering::Relaxed);
                read_offset = offset;
                let msg = match item {
                    None => return lost(pending, "connection closed by FreeSWITCH"),
                    Some(Err(e)) => return lost(pending, &format!("read error: {e}")),
                    Some(Ok(Err(e))) => {
                        stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "skipped a malformed frame");
                        continue;
                    }
                    Some(Ok(Ok(m))) => m,
                };
                stats.frames.fetch_add(1, Ordering::Relaxed);
                match msg {
                    Message::Event(ev) => {
                        // Only look when a job waits: the lookup scans the headers.
                        if !jobs.is_empty() && ev.kind() == EventName::BackgroundJob {
                            if let Some(tx) = ev.get("Job-UUID").and_then(|id| jobs.remove(id.as_ref())) {
                                let _ = tx.send(ev.clone());
                            }
                        }
                        if !out.event(ev).await {
                            return Ended::Shutdown;
                        }
                    }
                    Message::Reply(r) => {
                        if let Some(p) = pending.pop_front() {
                            let exit = p.exit;
                            let _ = p.reply.send(Ok(Response::Reply(r)));
                            if exit {
                                return Ended::Shutdown;
                            }
                        }
                    }
                    Message::ApiResponse(a) => {
                        if let Some(p) = pending.pop_front() {
                            let _ = p.reply.send(Ok(Response::Api(a)));
                        }
                    }
                    Message::Disconnect(d) if d.keep_reading() => {
                        tracing::debug!(linger = ?d.linger_time, "linger notice; still reading");
                    }
                    Message::Disconnect(d) => {
                        if d.disposition == Disposition::LostEvents && !out.control(EslSignal::Gap(GapReason::LostEvents)).await {
                            return Ended::Shutdown;
                        }
                        let why = format!("disconnect notice: {}", d.text.lines().next().unwrap_or(""));
                        return lost(pending, &why);
                    }
                    Message::RudeRejection(t) => return lost(pending, &format!("rude rejection: {}", t.trim())),
                    Message::Log(l) => tracing::debug!(level = ?l.level, text = %l.text.trim_end(), "freeswitch log"),
                    other => tracing::debug!(kind = other.kind(), "ignored message"),
                }
            }
            req = requests.recv(), if !handles_gone => {
                let Some(req) = req else {
                    if signals.is_closed() {
                        let _ = framed.send(&Command::Exit).await;
                        return Ended::Shutdown;
                    }
                    // Every handle is gone but a consumer still listens: keep streaming.
                    handles_gone = true;
                    continue;
                };
                // The job is registered before the command is written: a job that finishes
                // at once cannot slip past.
                if let (Some(tx), Some(id)) = (req.job, req.cmd.job_uuid()) {
                    jobs.insert(id.to_owned(), tx);
                }
                if let Err(e) = framed.send(&req.cmd).await {
                    let _ = req.reply.send(Err(ClientError::ConnectionLost));
                    return lost(pending, &format!("write error: {e}"));
                }
                pending.push_back(Pending {
                    exit: req.cmd == Command::Exit,
                    reply: req.reply,
                });
            }
            _ = watchdog => {
                return lost(pending, &format!("no data for {:?} (HEARTBEAT watchdog)", cfg.silence_timeout));
            }
        }
    }
}

fn lost(pending: VecDeque<Pending>, why: &str) -> Ended {
    for p in pending {
        let _ = p.reply.send(Err(ClientError::ConnectionLost));
    }
    tracing::warn!(reason = why, "event socket connection lost");
    Ended::Lost(why.to_owned())
}

/// Subscribes, applies filters, then asks for the channels in progress. Events arriving in
/// between are kept in `early` so none is lost or reordered.
async fn subscribe(
    framed: &mut Framed8021,
    cfg: &FreeswitchConfig,
    early: &mut Early,
    budget: &Budget,
) -> Result<Vec<ChannelSnapshot>, String> {
    let mut events = cfg.events.clone();
    let heartbeat = EventName::Heartbeat.as_str();
    if !events.iter().any(|e| e == "ALL" || e == heartbeat) {
        events.push(heartbeat.into());
    }
    let mut cmds = vec![Command::event(cfg.format, &events).map_err(|e| e.to_string())?];
    for super::config::Filter {
        header: h,
        value: v,
    } in &cfg.filters
    {
        cmds.push(Command::filter(h, v).map_err(|e| e.to_string())?);
    }
    if !cfg.nixevents.is_empty() {
        cmds.push(Command::nixevent(&cfg.nixevents).map_err(|e| e.to_string())?);
    }
    for cmd in cmds {
        framed.send(&cmd).await.map_err(|e| e.to_string())?;
        match await_answer(framed, cfg.command_timeout, early, budget).await? {
            Message::Reply(r) if r.is_ok() => {}
            Message::Reply(r) => return Err(format!("{cmd:?} refused: {}", r.text())),
            other => return Err(format!("{cmd:?} answered with {}", other.kind())),
        }
    }
    framed
        .send(&Command::api("show channels as json").expect("static"))
        .await
        .map_err(|e| e.to_string())?;
    match await_answer(framed, cfg.command_timeout, early, budget).await? {
        Message::ApiResponse(a) => Ok(parse_channels(&a.text())),
        other => Err(format!("show channels answered with {}", other.kind())),
    }
}

async fn await_answer(
    framed: &mut Framed8021,
    deadline: Duration,
    early: &mut Early,
    budget: &Budget,
) -> Result<Message, String> {
    loop {
        let item = tokio::time::timeout(deadline, framed.next())
            .await
            .map_err(|_| "no reply while subscribing".to_owned())?;
        match item {
            None => return Err("closed while subscribing".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "skipped a malformed frame"),
            // Past the budget, the newest are dropped: `show channels` still tells what the
            // calls are, and the gap marks them partial.
            Some(Ok(Ok(Message::Event(ev)))) => match budget.try_take(ev) {
                Ok(q) if early.dropped == 0 => early.events.push(q),
                _ => early.dropped += 1,
            },
            Some(Ok(Ok(m))) => return Ok(m),
        }
    }
}

/// Parses `show channels as json` (`{"row_count":N,"rows":[…]}`; `{"row_count": 0}` when
/// there are none). Unparsable output yields no rows (and a warning), never an error: a
/// resync that knows nothing still marks the calls in flight partial.
pub fn parse_channels(text: &str) -> Vec<ChannelSnapshot> {
    let value: serde_json::Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "show channels output is not json");
            return Vec::new();
        }
    };
    let rows = value
        .get("rows")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    rows.into_iter()
        .filter_map(|row| {
            let row = row.as_object()?.clone();
            let uuid = row.get("uuid")?.as_str()?.to_owned();
            let call_uuid = row
                .get("call_uuid")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            Some(ChannelSnapshot {
                uuid,
                call_uuid,
                row,
            })
        })
        .collect()
}

/// The consumer channel with its overflow policy.
struct Downstream<'a> {
    signals: &'a mpsc::Sender<EslSignal>,
    overflow: Overflow,
    dropped: u64,
    stats: &'a ClientStats,
    budget: &'a Budget,
}

impl Downstream<'_> {
    /// Control signals are never dropped. Returns false when the consumer is gone.
    async fn control(&mut self, s: EslSignal) -> bool {
        self.signals.send(s).await.is_ok()
    }

    /// An event already within the budget.
    async fn queued(&mut self, ev: QueuedEvent) -> bool {
        if self.signals.send(EslSignal::Event(ev)).await.is_err() {
            return false;
        }
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        true
    }

    async fn event(&mut self, ev: Event) -> bool {
        match self.overflow {
            Overflow::Block => {
                // Backpressure by bytes, then by count: the socket is not read meanwhile.
                let Some(ev) = self.budget.take(ev).await else {
                    return false;
                };
                if self.signals.send(EslSignal::Event(ev)).await.is_err() {
                    return false;
                }
            }
            Overflow::Drop => {
                if self.dropped > 0 {
                    match self
                        .signals
                        .try_send(EslSignal::Gap(GapReason::Dropped(self.dropped)))
                    {
                        Ok(()) => self.dropped = 0,
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.drop_one();
                            return true;
                        }
                    }
                }
                let Ok(ev) = self.budget.try_take(ev) else {
                    self.drop_one();
                    return true;
                };
                match self.signals.try_send(EslSignal::Event(ev)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.drop_one();
                        return true;
                    }
                }
            }
        }
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn drop_one(&mut self) {
        if self.dropped == 0 {
            tracing::warn!("event consumer is behind: dropping events (overflow = \"drop\")");
        }
        self.dropped += 1;
        self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..30 {
            let step = min.saturating_mul(1 << attempt.min(20)).min(max);
            let d = backoff(attempt, min, max);
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(3, min, max)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    #[test]
    fn channels_json_forms() {
        assert!(parse_channels("{\"row_count\": 0}\n").is_empty());
        let rows = parse_channels(
            r#"{"row_count":1,"rows":[{"uuid":"a","call_uuid":"b","name":"sofia/x"}]}"#,
        );
        assert_eq!(rows[0].uuid, "a");
        assert_eq!(rows[0].call_uuid.as_deref(), Some("b"));
        assert!(parse_channels("-ERR nope").is_empty());
    }
}
