//! Sending what the outbox holds: per call in order, in parallel across calls and
//! endpoints, with the retry rules of [`super::retry`].
//!
//! Deliveries are grouped into chains, one per (webhook, call). A chain sends its head,
//! waits out retries on it, and only then moves on, so a call's "answered" never arrives after
//! its "hangup". Every chain is its own task and every webhook has its own concurrency limit,
//! so a dead or hanging endpoint holds up nothing but its own deliveries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::request::Request;
use super::retry::{judge, Attempt, Verdict};
use super::store::{now_ms, After, AttemptRecord, Outbox, Stored};
use super::webhook::WebhookSet;

/// How much of a response body is kept with the attempt.
const KEEP_RESPONSE: usize = 2048;

/// Tuning for the sender.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Requests in flight per webhook at most.
    pub per_webhook: usize,
    /// How often the outbox is checked for changes made by `switchhook deliveries`.
    pub rescan_every: Duration,
    /// At [`DeliveryQueue::close`], how long attempts already in flight may take to finish
    /// and be recorded; what is still in flight then is abandoned (pending, resent on the
    /// next start, so the receiver may see it twice).
    pub drain: Duration,
    /// While the outbox cannot commit (a full disk), new requests wait in memory and are
    /// committed when it can again: at most this many bytes of them; past it the newest are
    /// given up, counted and logged.
    pub hold_max_bytes: usize,
    /// Requests waiting their turn are kept in memory up to this many bytes; the rest wait
    /// in the outbox only and are read back when they are next to go, so a receiver that is
    /// down for long costs disk, not memory.
    pub pending_memory_bytes: usize,
}

/// A delivery waiting in its chain: its row, and its request while within
/// [`DeliveryOptions::pending_memory_bytes`].
struct Queued {
    rowid: i64,
    stored: Option<Stored>,
}

/// The first wait before an outbox write is tried again; it doubles up to [`OUTBOX_RETRY_MAX`].
const OUTBOX_RETRY_MIN: Duration = Duration::from_millis(100);
const OUTBOX_RETRY_MAX: Duration = Duration::from_secs(5);

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            per_webhook: 64,
            rescan_every: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            hold_max_bytes: 64 << 20,
            pending_memory_bytes: 64 << 20,
        }
    }
}

pub(crate) use super::stats::{DeliveryStats, Outcome};

type ChainKey = (String, String);

struct Inner {
    outbox: Outbox,
    client: reqwest::Client,
    hooks: RwLock<Arc<WebhookSet>>,
    /// The egress policy of the current webhooks, read by the client's resolver.
    egress: Arc<RwLock<Arc<super::egress::Egress>>>,
    chains: Mutex<HashMap<ChainKey, VecDeque<Queued>>>,
    /// Bytes of requests the chains hold in memory.
    held_bytes: std::sync::atomic::AtomicUsize,
    known: Mutex<HashSet<i64>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    disabled: Mutex<HashMap<String, String>>,
    failing: Mutex<HashMap<String, (i64, bool)>>,
    opts: DeliveryOptions,
    stats: Arc<DeliveryStats>,
    idle: Notify,
    /// Cancelled by [`DeliveryQueue::close`]: no attempt starts after it.
    stop: tokio_util::sync::CancellationToken,
    /// Cancelled when the drain is over: attempts still in flight are abandoned.
    abandon: tokio_util::sync::CancellationToken,
    /// Attempts sent and not yet recorded.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Notified when an attempt has been recorded.
    recorded: Notify,
    /// Submitted and not yet committed.
    intake_backlog: std::sync::atomic::AtomicUsize,
}

/// The sender: submit requests, and it delivers them.
pub struct DeliveryQueue {
    inner: Arc<Inner>,
    intake: mpsc::UnboundedSender<Batch>,
    intake_done: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DeliveryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryQueue")
            .field("outbox", &self.inner.outbox.path())
            .finish_non_exhaustive()
    }
}

impl DeliveryQueue {
    /// Starts sending: resumes every pending delivery in the outbox, then takes new ones.
    pub async fn start(
        outbox: Outbox,
        hooks: Arc<WebhookSet>,
        opts: DeliveryOptions,
    ) -> Result<DeliveryQueue, super::store::StoreError> {
        let egress = Arc::new(RwLock::new(Arc::clone(hooks.egress())));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(super::egress::Resolver::new(Arc::clone(&egress))))
            .pool_max_idle_per_host(opts.per_webhook)
            .build()
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            outbox,
            client,
            hooks: RwLock::new(hooks),
            egress,
            chains: Mutex::new(HashMap::new()),
            held_bytes: std::sync::atomic::AtomicUsize::new(0),
            known: Mutex::new(HashSet::new()),
            limits: Mutex::new(HashMap::new()),
            disabled: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
            opts,
            stats: Arc::default(),
            idle: Notify::new(),
            intake_backlog: std::sync::atomic::AtomicUsize::new(0),
            stop: tokio_util::sync::CancellationToken::new(),
            abandon: tokio_util::sync::CancellationToken::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            recorded: Notify::new(),
        });
        // Read before the first scan, so a change made in between is picked up by the poll.
        let generation = inner.outbox.generation().await?;
        let resumed = rescan(&inner).await?;
        if resumed > 0 {
            tracing::info!(
                resumed,
                "resuming pending webhook deliveries from the outbox"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let intake = tokio::spawn(intake_loop(Arc::clone(&inner), rx));
        tokio::spawn(rescan_loop(Arc::downgrade(&inner), generation));
        Ok(DeliveryQueue {
            inner,
            intake: tx,
            intake_done: intake,
        })
    }

    /// Hands requests over; they are committed to the outbox (in submission order) and then
    /// sent. Never blocks.
    pub fn submit(&self, requests: Vec<Request>) {
        self.hand_over(requests, None);
    }

    /// Hands requests over and waits until the outbox has committed them: true then, false
    /// when they were given up (stopping, or the memory bound while the disk fails). What a
    /// consumer acknowledges its source after.
    pub async fn submit_committed(&self, requests: Vec<Request>) -> bool {
        if requests.is_empty() {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        self.hand_over(requests, Some(tx));
        rx.await.unwrap_or(false)
    }

    fn hand_over(&self, requests: Vec<Request>, committed: Option<oneshot::Sender<bool>>) {
        if requests.is_empty() {
            return;
        }
        let n = requests.len();
        self.inner.intake_backlog.fetch_add(n, Ordering::SeqCst);
        if self
            .intake
            .send(Batch {
                requests,
                committed,
            })
            .is_err()
        {
            self.inner.intake_backlog.fetch_sub(n, Ordering::SeqCst);
            tracing::error!("webhook intake is closed: switchhook is stopping");
        }
    }

    /// Which of these `webhook-id`s are not finished with yet (neither delivered, dead nor
    /// parked): what a consumer acknowledges its source after.
    pub async fn unfinished(
        &self,
        ids: Vec<String>,
    ) -> Result<HashSet<String>, super::store::StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.inner.outbox.unfinished(ids).await
    }

    /// Uses a reloaded configuration for new requests and for signing.
    pub fn set_hooks(&self, hooks: Arc<WebhookSet>) {
        if let Ok(mut e) = self.inner.egress.write() {
            *e = Arc::clone(hooks.egress());
        }
        if let Ok(mut h) = self.inner.hooks.write() {
            *h = hooks;
        }
    }

    /// Totals so far.
    pub fn stats(&self) -> &DeliveryStats {
        &self.inner.stats
    }

    /// The counters, shared (the admin endpoint reads them at each scrape).
    pub fn shared_stats(&self) -> Arc<DeliveryStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Deliveries held in memory (pending, including waiting retries, and submitted ones not
    /// yet committed).
    pub fn in_memory(&self) -> usize {
        self.inner.known.lock().map(|k| k.len()).unwrap_or(0)
            + self.inner.intake_backlog.load(Ordering::SeqCst)
    }

    /// Stops taking requests and waits until everything submitted is committed to the
    /// outbox; no new attempt starts. Attempts already in flight get [`DeliveryOptions::drain`]
    /// to finish and be recorded, so a receiver that answered is not sent the same request
    /// again after a restart; what is still in flight then is abandoned (pending in the
    /// outbox, resumed on the next start).
    pub async fn close(self) {
        let DeliveryQueue {
            inner,
            intake,
            intake_done,
        } = self;
        drop(intake);
        let _ = intake_done.await;
        inner.stop.cancel();
        let drained = async {
            loop {
                let recorded = inner.recorded.notified();
                if inner.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                recorded.await;
            }
        };
        if tokio::time::timeout(inner.opts.drain, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = inner.in_flight.load(Ordering::SeqCst),
                "webhook attempts still in flight at shutdown: abandoned, resent on the next start"
            );
        }
        inner.abandon.cancel();
    }

    /// Bytes of pending requests held in memory (within
    /// [`DeliveryOptions::pending_memory_bytes`]).
    pub fn pending_memory(&self) -> usize {
        self.inner.held_bytes.load(Ordering::SeqCst)
    }

    /// Waits until no delivery is pending in memory (tests, benchmarks, `demo`).
    pub async fn idle(&self) {
        loop {
            let wait = self.inner.idle.notified();
            if self.in_memory() == 0 {
                return;
            }
            wait.await;
        }
    }
}

/// Requests handed over together, and who waits for their commit.
struct Batch {
    requests: Vec<Request>,
    committed: Option<oneshot::Sender<bool>>,
}

/// Requests submitted and not yet committed, in submission order, bounded by bytes.
#[derive(Default)]
struct Held {
    requests: VecDeque<Request>,
    bytes: usize,
    /// Requests taken in and committed so far, to tell waiters when theirs are.
    taken: u64,
    committed: u64,
    /// Who waits, and how many requests must be committed for them.
    waiting: VecDeque<(u64, oneshot::Sender<bool>)>,
}

impl Held {
    /// Takes new requests; those beyond the bound are given up (and counted).
    fn take(&mut self, batch: Batch) {
        for r in batch.requests {
            self.bytes += r.memory();
            self.requests.push_back(r);
            self.taken += 1;
        }
        if let Some(tx) = batch.committed {
            self.waiting.push_back((self.taken, tx));
        }
    }

    /// While the outbox cannot commit: the newest requests beyond the memory bound are given
    /// up (and counted), the oldest kept. A burst taken while the outbox commits is not
    /// trimmed: it goes to the outbox in turn.
    fn trim(&mut self, inner: &Inner) {
        let mut lost = 0;
        while self.bytes > inner.opts.hold_max_bytes && self.requests.len() > 1 {
            let Some(r) = self.requests.pop_back() else {
                break;
            };
            tracing::error!(webhook = %r.webhook, id = %r.id, call_id = %r.call_id, trigger = %r.trigger,
                held = self.requests.len(), "outbox cannot commit and the memory bound is reached: webhook request given up");
            self.bytes -= r.memory();
            self.taken -= 1;
            lost += 1;
        }
        if lost == 0 {
            return;
        }
        inner.stats.lost.fetch_add(lost as u64, Ordering::Relaxed);
        forget_submitted(inner, lost);
        // Whoever waits for a request given up is told so.
        while let Some((mark, _)) = self.waiting.back() {
            if *mark <= self.taken {
                break;
            }
            if let Some((_, tx)) = self.waiting.pop_back() {
                let _ = tx.send(false);
            }
        }
    }

    /// The oldest `n` requests, leaving them held until they are committed.
    fn front(&self, n: usize) -> Vec<Request> {
        self.requests.iter().take(n).cloned().collect()
    }

    /// The oldest `n` requests are committed.
    fn pop(&mut self, n: usize) {
        for r in self.requests.drain(..n.min(self.requests.len())) {
            self.bytes -= r.memory();
            self.committed += 1;
        }
        while let Some((mark, _)) = self.waiting.front() {
            if *mark > self.committed {
                break;
            }
            if let Some((_, tx)) = self.waiting.pop_front() {
                let _ = tx.send(true);
            }
        }
    }

    /// Every held request is given up.
    fn give_up(&mut self) {
        self.requests.clear();
        self.bytes = 0;
        for (_, tx) in self.waiting.drain(..) {
            let _ = tx.send(false);
        }
    }
}

/// `n` submitted requests have left the intake (committed or given up).
fn forget_submitted(inner: &Inner, n: usize) {
    let drained = inner.intake_backlog.fetch_sub(n, Ordering::SeqCst) == n;
    if drained && inner.known.lock().map(|k| k.is_empty()).unwrap_or(false) {
        inner.idle.notify_waiters();
    }
}

/// Commits submitted requests in order, grouping whatever has queued up, then queues the
/// new rows for sending. When the outbox cannot commit (a full disk), the requests wait in
/// memory, within [`DeliveryOptions::hold_max_bytes`], and the commit is tried again with a
/// growing pause; requests submitted meanwhile queue behind them, so order holds.
async fn intake_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Batch>) {
    let mut held = Held::default();
    let mut open = true;
    let mut pause = OUTBOX_RETRY_MIN;
    let mut closed_at: Option<std::time::Instant> = None;
    loop {
        if held.requests.is_empty() {
            match rx.recv().await {
                Some(b) => held.take(b),
                None => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(b) => held.take(b),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let disabled: HashSet<String> = inner
            .disabled
            .lock()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        let batch = held.front(4096);
        let n = batch.len();
        let rows: Vec<(Request, bool)> = batch
            .into_iter()
            .map(|r| {
                let parked = disabled.contains(&r.webhook);
                (r, parked)
            })
            .collect();
        match inner.outbox.enqueue(rows).await {
            Ok(stored) => {
                if pause > OUTBOX_RETRY_MIN {
                    tracing::info!(
                        committed = n,
                        still_held = held.requests.len() - n,
                        "the outbox commits again"
                    );
                }
                pause = OUTBOX_RETRY_MIN;
                held.pop(n);
                inner
                    .stats
                    .held
                    .store(held.requests.len() as u64, Ordering::Relaxed);
                inner.stats.enqueued.fetch_add(n as u64, Ordering::Relaxed);
                for s in stored {
                    push(&inner, s);
                }
                forget_submitted(&inner, n);
            }
            Err(e) => {
                held.trim(&inner);
                let waiting = held.requests.len();
                inner.stats.outbox_failed(&e.to_string());
                inner.stats.held.store(waiting as u64, Ordering::Relaxed);
                if pause == OUTBOX_RETRY_MIN {
                    tracing::error!(error = %e, held = waiting, "cannot commit webhook requests to the outbox: they wait in memory and the commit is tried again");
                }
                if !open {
                    // Stopping: keep trying for as long as in-flight attempts get.
                    let since = *closed_at.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= inner.opts.drain {
                        tracing::error!(error = %e, lost = waiting, "switchhook is stopping and the outbox still cannot commit: webhook requests given up");
                        inner
                            .stats
                            .lost
                            .fetch_add(waiting as u64, Ordering::Relaxed);
                        inner.stats.held.store(0, Ordering::Relaxed);
                        held.give_up();
                        forget_submitted(&inner, waiting);
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    b = rx.recv(), if open => match b {
                        Some(b) => {
                            held.take(b);
                            held.trim(&inner);
                        }
                        None => open = false,
                    },
                }
                pause = (pause * 2).min(OUTBOX_RETRY_MAX);
            }
        }
    }
}

/// Picks up changes other processes made (retry, enable) when the generation moves.
async fn rescan_loop(inner: std::sync::Weak<Inner>, generation: i64) {
    let mut seen = generation;
    loop {
        let every = match inner.upgrade() {
            Some(i) => i.opts.rescan_every,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stop.is_cancelled() {
            return;
        }
        let generation = match inner.outbox.generation().await {
            Ok(g) => g,
            Err(_) => return,
        };
        if seen != generation {
            match rescan(&inner).await {
                Ok(n) if n > 0 => {
                    tracing::info!(picked_up = n, "outbox changed: deliveries queued")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox rescan failed"),
            }
        }
        seen = generation;
    }
}

/// Loads pending deliveries not already in memory, the disabled webhooks, and since when
/// webhooks have been failing (as noted before a restart).
async fn rescan(inner: &Arc<Inner>) -> Result<usize, super::store::StoreError> {
    let super::store::PendingSet {
        pending,
        disabled,
        failing_since,
    } = inner.outbox.load_pending().await?;
    if let Ok(mut d) = inner.disabled.lock() {
        *d = disabled.into_iter().collect();
    }
    if let Ok(mut f) = inner.failing.lock() {
        // The earliest wins: another worker of a fleet may have seen it fail first.
        for (name, since) in failing_since {
            let entry = f.entry(name).or_insert((since, false));
            entry.0 = entry.0.min(since);
        }
    }
    let fresh: Vec<super::store::PendingRow> = {
        let known = inner.known.lock().map(|k| k.clone()).unwrap_or_default();
        pending
            .into_iter()
            .filter(|s| !known.contains(&s.rowid))
            .collect()
    };
    let n = fresh.len();
    for row in fresh {
        queue_row(
            inner,
            (row.webhook, row.call_id),
            Queued {
                rowid: row.rowid,
                stored: None,
            },
        );
    }
    Ok(n)
}

/// Adds a freshly committed delivery to its chain, with its request while the chains hold
/// less than [`DeliveryOptions::pending_memory_bytes`].
fn push(inner: &Arc<Inner>, s: Stored) {
    let key = (s.request.webhook.clone(), s.request.call_id.clone());
    let rowid = s.rowid;
    let bytes = s.request.memory();
    let kept = inner
        .held_bytes
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            (held + bytes <= inner.opts.pending_memory_bytes).then_some(held + bytes)
        })
        .is_ok();
    let stored = kept.then_some(s);
    queue_row(inner, key, Queued { rowid, stored });
}

/// Gives back what a chain entry held in memory.
fn release(inner: &Inner, q: &Queued) {
    if let Some(s) = &q.stored {
        inner
            .held_bytes
            .fetch_sub(s.request.memory(), Ordering::SeqCst);
    }
}

/// Adds a delivery to its chain (in row order) and starts the chain if it was idle.
fn queue_row(inner: &Arc<Inner>, key: ChainKey, s: Queued) {
    if let Ok(mut k) = inner.known.lock() {
        k.insert(s.rowid);
    }
    let start = {
        let Ok(mut chains) = inner.chains.lock() else {
            return;
        };
        let start = !chains.contains_key(&key);
        let chain = chains.entry(key.clone()).or_default();
        let at = chain
            .iter()
            .position(|c| c.rowid > s.rowid)
            .unwrap_or(chain.len());
        // The head may be in flight: never jump ahead of it.
        chain.insert(at.max(usize::from(!start && !chain.is_empty())), s);
        start
    };
    if start {
        tokio::spawn(run_chain(Arc::clone(inner), key));
    }
}

fn limit_for(inner: &Inner, webhook: &str) -> Arc<Semaphore> {
    let mut limits = inner.limits.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        limits
            .entry(webhook.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(inner.opts.per_webhook))),
    )
}

fn forget(inner: &Inner, rowid: i64) {
    let empty = inner
        .known
        .lock()
        .map(|mut k| {
            k.remove(&rowid);
            k.is_empty()
        })
        .unwrap_or(false);
    if empty {
        inner.idle.notify_waiters();
    }
}

/// Sends one chain's deliveries in order until it is empty.
async fn run_chain(inner: Arc<Inner>, key: ChainKey) {
    loop {
        let (rowid, stored) = {
            let Ok(mut chains) = inner.chains.lock() else {
                return;
            };
            match chains.get(&key).and_then(|c| c.front()) {
                Some(h) => (h.rowid, h.stored.clone()),
                None => {
                    chains.remove(&key);
                    return;
                }
            }
        };
        let done = match stored {
            Some(s) => deliver(&inner, s).await,
            // Waited in the outbox only: read it back now that it is next.
            None => match load(&inner, rowid).await {
                Some(Some(s)) => deliver(&inner, s).await,
                // No longer pending (a `deliveries purge`, say): nothing to send.
                Some(None) => None,
                None => Some(Stop),
            },
        };
        let Ok(mut chains) = inner.chains.lock() else {
            return;
        };
        match done {
            // Finished (delivered, dead or parked): the next one.
            None => {
                if let Some(q) = chains.get_mut(&key).and_then(|c| c.pop_front()) {
                    release(&inner, &q);
                }
                drop(chains);
                forget(&inner, rowid);
            }
            // Parked with its whole webhook, or stopping: drop the chain from memory.
            Some(Stop) => {
                let rows: Vec<Queued> = chains
                    .remove(&key)
                    .map(|c| c.into_iter().collect())
                    .unwrap_or_default();
                drop(chains);
                for q in rows {
                    release(&inner, &q);
                    forget(&inner, q.rowid);
                }
                return;
            }
        }
    }
}

/// Reads a delivery back from the outbox, trying again while it does not answer; None when
/// the queue closes first.
async fn load(inner: &Inner, rowid: i64) -> Option<Option<Stored>> {
    let mut pause = OUTBOX_RETRY_MIN;
    loop {
        match inner.outbox.load(rowid).await {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(rowid, error = %e, "cannot read a delivery back from the outbox; trying again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = inner.stop.cancelled() => return None,
        }
        pause = (pause * 2).min(OUTBOX_RETRY_MAX);
    }
}

/// The chain must stop: its webhook is disabled, or the queue is closing.
struct Stop;

/// An attempt from its send to its record; [`DeliveryQueue::close`] waits for these.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.recorded.notify_waiters();
    }
}

/// Delivers one request, with every retry it takes. `None` when it is finished with.
async fn deliver(inner: &Arc<Inner>, mut s: Stored) -> Option<Stop> {
    let webhook = s.request.webhook.clone();
    loop {
        // Closing: nothing new goes out (a zero wait below would race the stop).
        if inner.stop.is_cancelled() {
            return Some(Stop);
        }
        if inner
            .disabled
            .lock()
            .map(|d| d.contains_key(&webhook))
            .unwrap_or(false)
        {
            let _ = inner
                .outbox
                .record(s.rowid, s.attempts, AttemptRecord::default(), After::Parked)
                .await;
            inner
                .stats
                .note(&s.request, Outcome::Parked, s.attempts, None, None, None);
            return Some(Stop);
        }
        let wait = Duration::from_millis((s.next_ms - now_ms()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.stop.cancelled() => return Some(Stop),
        }
        let hooks = inner
            .hooks
            .read()
            .map(|h| Arc::clone(&h))
            .unwrap_or_default();
        let hook = hooks.get(&webhook);
        let signer = hook.and_then(|h| h.signer.clone());
        let secret_headers = hook.map_or(&[][..], |h| &h.secret_headers.0[..]);
        let attempt_no = s.attempts + 1;
        let mut in_flight = None;
        let refused = match hooks.egress().check_url(&s.request.url) {
            Err(why) => Some(why.to_string()),
            Ok(()) if s.request.signed && signer.is_none() => {
                Some("the webhook's secret is no longer configured: cannot sign".into())
            }
            Ok(()) => None,
        };
        // Never sent: a dead letter at once (`deliveries retry` once the configuration
        // lets it through).
        let (outcome, rec, took) = if let Some(why) = refused {
            let rec = AttemptRecord {
                error: Some(why),
                ..Default::default()
            };
            (None, rec, None)
        } else {
            let permit = tokio::select! {
                p = limit_for(inner, &webhook).acquire_owned() => p.ok(),
                _ = inner.stop.cancelled() => return Some(Stop),
            };
            inner.stats.attempts.fetch_add(1, Ordering::Relaxed);
            in_flight = Some(InFlight::new(inner));
            let sent = std::time::Instant::now();
            let r = tokio::select! {
                r = attempt(&inner.client, &s.request, signer.as_ref(), secret_headers) => r,
                // Abandoned after the drain: still pending in the outbox, resumed on the next
                // start.
                _ = inner.abandon.cancelled() => return Some(Stop),
            };
            drop(permit);
            (Some(r.0), r.1, Some(sent.elapsed()))
        };
        let verdict = match &outcome {
            Some(o) => judge(
                o,
                attempt_no,
                s.request.max_attempts,
                s.request.schedule,
                now_ms() / 1000,
            ),
            None => Verdict::Dead,
        };
        let (after, counted) = match verdict {
            Verdict::Delivered => (After::Delivered, Outcome::Delivered),
            Verdict::Retry(d) => (
                After::RetryAt(now_ms() + d.as_millis() as i64),
                Outcome::Retried,
            ),
            Verdict::Dead => (After::Dead, Outcome::Dead),
            Verdict::Disable => (After::Parked, Outcome::Parked),
        };
        if !record(inner, &s, attempt_no, &rec, after).await {
            // Abandoned at shutdown before the outbox could record it: pending, resent.
            return Some(Stop);
        }
        drop(in_flight);
        let log_status = rec.status.map(|c| c.to_string()).unwrap_or_default();
        inner.stats.note(
            &s.request,
            counted,
            attempt_no,
            rec.status,
            rec.error.as_deref(),
            took,
        );
        match verdict {
            Verdict::Delivered => {
                succeeded(inner, &webhook);
                tracing::debug!(webhook, id = %s.request.id, call_id = %s.request.call_id, attempt = attempt_no, "webhook delivered");
                return None;
            }
            Verdict::Retry(d) => {
                tracing::info!(webhook, id = %s.request.id, call_id = %s.request.call_id, attempt = attempt_no,
                    status = %log_status, error = rec.error.as_deref().unwrap_or(""), retry_in_ms = d.as_millis() as u64,
                    "webhook attempt failed; will retry");
                s.attempts = attempt_no;
                s.next_ms = now_ms() + d.as_millis() as i64;
                if failed(inner, &webhook).await {
                    return Some(Stop);
                }
            }
            Verdict::Dead => {
                tracing::warn!(webhook, id = %s.request.id, call_id = %s.request.call_id, attempts = attempt_no,
                    status = %log_status, error = rec.error.as_deref().unwrap_or(""), "webhook delivery failed for good: dead letter");
                return if failed(inner, &webhook).await {
                    Some(Stop)
                } else {
                    None
                };
            }
            Verdict::Disable => {
                disable(inner, &webhook, "the receiver answered 410 Gone").await;
                return Some(Stop);
            }
        }
    }
}

/// Records an attempt, trying again while the outbox cannot commit (a full disk), so a
/// delivered request is not sent again after a restart. False: abandoned at shutdown first.
async fn record(
    inner: &Inner,
    s: &Stored,
    attempt_no: u32,
    rec: &AttemptRecord,
    after: After,
) -> bool {
    let mut pause = OUTBOX_RETRY_MIN;
    let mut waiting = false;
    let recorded = loop {
        let e = match inner
            .outbox
            .record(s.rowid, attempt_no, rec.clone(), after)
            .await
        {
            Ok(()) => break true,
            Err(e) => e,
        };
        inner.stats.outbox_failed(&e.to_string());
        if !waiting {
            waiting = true;
            inner.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
            tracing::error!(webhook = %s.request.webhook, id = %s.request.id, call_id = %s.request.call_id, error = %e,
                "cannot record a webhook attempt: tried again until the outbox commits");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = inner.abandon.cancelled() => break false,
        }
        pause = (pause * 2).min(OUTBOX_RETRY_MAX);
    };
    if waiting {
        inner.stats.unrecorded.fetch_sub(1, Ordering::Relaxed);
    }
    recorded
}

fn succeeded(inner: &Arc<Inner>, webhook: &str) {
    let was_failing = inner
        .failing
        .lock()
        .map(|mut f| f.remove(webhook).is_some())
        .unwrap_or(false);
    if was_failing {
        inner.outbox.set_failing(webhook, None);
        tracing::info!(webhook, "webhook is delivering again");
        let replay = inner
            .hooks
            .read()
            .ok()
            .and_then(|h| h.get(webhook).map(|w| w.config.replay_dead_letters))
            .unwrap_or(false);
        if replay {
            tokio::spawn(replay_dead_letters(Arc::clone(inner), webhook.to_owned()));
        }
    }
}

/// Sends a webhook's dead letters again now that it answers (`replay_dead_letters`).
async fn replay_dead_letters(inner: Arc<Inner>, webhook: String) {
    match inner.outbox.requeue_dead(&webhook).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                webhook,
                dead_letters = n,
                "webhook answers again: its dead letters are sent again"
            );
            if let Err(e) = rescan(&inner).await {
                tracing::warn!(webhook, error = %e, "cannot pick up the requeued dead letters; they go out at the next rescan");
            }
        }
        Err(e) => tracing::warn!(webhook, error = %e, "cannot requeue the dead letters"),
    }
}

/// Notes a failure; disables the webhook when it has failed for its whole window (true).
async fn failed(inner: &Arc<Inner>, webhook: &str) -> bool {
    let window = inner
        .hooks
        .read()
        .ok()
        .and_then(|h| h.get(webhook).map(|w| w.config.disable_after))
        .unwrap_or(Duration::from_secs(24 * 3600))
        .as_millis() as i64;
    let now = now_ms();
    let (since, warn) = {
        let Ok(mut f) = inner.failing.lock() else {
            return false;
        };
        let entry = f.entry(webhook.to_owned()).or_insert((now, false));
        let warn = !entry.1 && now - entry.0 >= window / 2;
        entry.1 |= warn;
        (entry.0, warn)
    };
    if since == now {
        inner.outbox.set_failing(webhook, Some(now));
    }
    if now - since >= window {
        disable(
            inner,
            webhook,
            &format!("no successful delivery for {} s", (now - since) / 1000),
        )
        .await;
        return true;
    }
    if warn {
        tracing::warn!(
            webhook,
            failing_for_s = (now - since) / 1000,
            disable_after_s = window / 1000,
            "webhook keeps failing: it will be disabled if nothing gets through"
        );
    }
    false
}

async fn disable(inner: &Arc<Inner>, webhook: &str, reason: &str) {
    if let Ok(mut d) = inner.disabled.lock() {
        d.insert(webhook.to_owned(), reason.to_owned());
    }
    if let Ok(mut f) = inner.failing.lock() {
        f.remove(webhook);
    }
    if let Err(e) = inner.outbox.disable(webhook, reason).await {
        tracing::error!(error = %e, webhook, "cannot record the webhook as disabled");
    }
    tracing::error!(webhook, reason, "webhook disabled; its deliveries are parked until `switchhook deliveries enable {webhook}`");
}

/// One HTTP attempt.
async fn attempt(
    client: &reqwest::Client,
    req: &Request,
    signer: Option<&super::sign::Signer>,
    secret_headers: &[(String, String)],
) -> (Attempt, AttemptRecord) {
    let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => reqwest::Method::POST,
    };
    let mut rb = client
        .request(method, &req.url)
        .timeout(Duration::from_millis(req.timeout_ms));
    for (k, v) in req
        .headers
        .iter()
        .cloned()
        .chain(req.signature_headers(signer, now_ms() / 1000))
        .chain(secret_headers.iter().cloned())
    {
        rb = rb.header(k, v);
    }
    if req.method != "GET" {
        rb = rb.body(req.body.clone());
    }
    match rb.send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut kept = Vec::new();
            while kept.len() < KEEP_RESPONSE {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        kept.extend_from_slice(&c[..c.len().min(KEEP_RESPONSE - kept.len())])
                    }
                    _ => break,
                }
            }
            (
                Attempt::Response {
                    status,
                    retry_after,
                },
                AttemptRecord {
                    status: Some(status),
                    error: None,
                    response: Some(String::from_utf8_lossy(&kept).into_owned()),
                },
            )
        }
        Err(e) => {
            let refused =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .find_map(|e| e.downcast_ref::<super::egress::ResolveRefused>());
            let why = if let Some(r) = refused {
                format!("refused by [egress]: {r}")
            } else if e.is_timeout() {
                format!("timed out after {} ms", req.timeout_ms)
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                // reqwest's message names the URL, which may hold a key: keep only the kind.
                e.without_url().to_string()
            };
            (
                Attempt::Failed,
                AttemptRecord {
                    error: Some(why),
                    ..Default::default()
                },
            )
        }
    }
}
