//! A stand-in FreeSWITCH event socket that plays real captures over TCP.
//!
//! It speaks the inbound protocol as mod_event_socket does (`auth/request`, `auth`/`userauth`,
//! `event`, `filter`, `nixevent`, `api`, `bgapi`, `exit`) and streams the event frames of
//! capture files byte for byte. Like a real switch it keeps running while a client is away:
//! the capture position and the set of live channels (for `show channels as json`) are shared
//! across connections. Scripted faults (drop, stall, disconnect notice, ACL rejection, events
//! that happen during an outage) exercise the client's recovery. The tests and `switchhook
//! demo` both use it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::esl::{EslCodec, Event, EventFormat, EventName, Limits, Message};

/// One event frame of a capture: its exact bytes and the parsed event.
#[derive(Clone)]
pub struct CapturedFrame {
    /// The frame's bytes as FreeSWITCH sent them.
    pub raw: Bytes,
    /// The event inside.
    pub event: Event,
}

/// Reads a capture and keeps its event frames (replies and notices are the server's to send).
pub fn load_capture(path: &Path) -> std::io::Result<Vec<CapturedFrame>> {
    let data = Bytes::from(std::fs::read(path)?);
    let mut buf = BytesMut::from(&data[..]);
    let mut codec = EslCodec::new(Limits::default());
    let mut frames = Vec::new();
    loop {
        let start = codec.offset() as usize;
        let Some(item) = codec.decode_eof(&mut buf)? else {
            break;
        };
        let end = codec.offset() as usize;
        if let Ok(Message::Event(event)) = item {
            frames.push(CapturedFrame {
                raw: data.slice(start..end),
                event,
            });
        }
    }
    Ok(frames)
}

/// How fast frames go out.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the socket takes them.
    Fast,
    /// Following the events' own timestamps, `speed` times faster than real time.
    RealTime {
        /// 1.0 is real time.
        speed: f64,
    },
}

/// Faults to inject, counted in event frames sent.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The first connection is cut (no notice) after this many event frames.
    pub drop_after: Option<usize>,
    /// The first connection sends a plain disconnect notice and closes after this many.
    pub notice_after: Option<usize>,
    /// The notice's text (default: FreeSWITCH's goodbye; mod_event_socket says "killed
    /// listener because of lost events" when the client fell too far behind).
    pub notice_text: Option<String>,
    /// The first connection goes silent (socket open) after this many.
    pub stall_after: Option<usize>,
    /// Event frames that happen while the client is away: applied to the channel list, never
    /// sent.
    pub outage_events: usize,
    /// Refuse every connection with `text/rude-rejection`.
    pub deny: bool,
    /// Start streaming the moment the subscription is acknowledged, so events race the
    /// client's `show channels` (as on a busy FreeSWITCH).
    pub eager: bool,
}

/// What to play and how.
#[derive(Debug, Clone)]
pub struct PlaybackConfig {
    /// The password `auth` must give (and `userauth` must end with).
    pub password: String,
    /// Plain captures, played in order; for json subscriptions the `.json.esl` twin is used.
    pub captures: Vec<PathBuf>,
    /// Frame pacing.
    pub pace: Pace,
    /// Injected faults.
    pub faults: Faults,
}

#[derive(Default)]
struct Shared {
    plain: Vec<CapturedFrame>,
    json: Vec<CapturedFrame>,
    cursor: usize,
    connections: usize,
    channels: ChannelTable,
    commands: Vec<Vec<String>>,
}

/// A running playback server.
pub struct PlaybackServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlaybackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlaybackServer {
    /// Binds `addr` (use port 0 for any) and starts serving.
    pub async fn start(addr: &str, cfg: PlaybackConfig) -> std::io::Result<PlaybackServer> {
        let mut shared = Shared::default();
        for p in &cfg.captures {
            shared.plain.extend(load_capture(p)?);
            let json = json_twin(p);
            if json.exists() {
                shared.json.extend(load_capture(&json)?);
            }
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(shared));
        let task = tokio::spawn(accept_loop(listener, cfg, shared.clone()));
        Ok(PlaybackServer { addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many event frames the captures hold.
    pub fn total_events(&self) -> usize {
        self.shared.lock().expect("lock").plain.len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().expect("lock").connections
    }

    /// The command lines each connection sent (passwords masked), in order.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.shared.lock().expect("lock").commands.clone()
    }

    /// How many event frames have been played (sent or lost to an outage).
    pub fn position(&self) -> usize {
        self.shared.lock().expect("lock").cursor
    }
}

fn json_twin(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    match s.strip_suffix(".esl") {
        Some(stem) if !stem.ends_with(".json") => PathBuf::from(format!("{stem}.json.esl")),
        _ => p.to_path_buf(),
    }
}

async fn accept_loop(listener: TcpListener, cfg: PlaybackConfig, shared: Arc<Mutex<Shared>>) {
    while let Ok((sock, _)) = listener.accept().await {
        let n = {
            let mut s = shared.lock().expect("lock");
            s.connections += 1;
            s.commands.push(Vec::new());
            s.connections
        };
        tokio::spawn(serve(sock, cfg.clone(), shared.clone(), n));
    }
}

fn reply(text: &str) -> Bytes {
    Bytes::from(format!(
        "Content-Type: command/reply\nReply-Text: {text}\n\n"
    ))
}

fn with_body(content_type: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "Content-Type: {content_type}\nContent-Length: {}\n\n{body}",
        body.len()
    ))
}

const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

async fn serve(sock: TcpStream, cfg: PlaybackConfig, shared: Arc<Mutex<Shared>>, conn: usize) {
    if conn > 1 {
        // The switch kept running while the client was away: those events are lost to it,
        // but the channels they created or destroyed are what `show channels` reports.
        let mut s = shared.lock().expect("lock");
        let skip = cfg.faults.outage_events.min(s.plain.len() - s.cursor);
        for i in s.cursor..s.cursor + skip {
            let ev = s.plain[i].event.clone();
            s.channels.track(&ev);
        }
        s.cursor += skip;
    }
    let (rd, mut wr) = sock.into_split();
    if cfg.faults.deny {
        let _ = wr
            .write_all(&with_body(
                "text/rude-rejection",
                "Access Denied, go away.\n",
            ))
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(64);
    // One writer: replies and event frames interleave only at frame boundaries.
    let writer = tokio::spawn(async move {
        while let Some(Some(b)) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let _ = tx
        .send(Some(Bytes::from_static(b"Content-Type: auth/request\n\n")))
        .await;
    let mut lines = BufReader::new(rd);
    let mut authed = false;
    let mut streaming: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let Some(cmd) = read_command(&mut lines).await else {
            break;
        };
        let first = cmd.first().cloned().unwrap_or_default();
        let masked = if first.starts_with("auth ") || first.starts_with("userauth ") {
            format!("{} ****", first.split(' ').next().unwrap_or(""))
        } else {
            first.clone()
        };
        shared.lock().expect("lock").commands[conn - 1].push(masked);
        let (verb, rest) = first.split_once(' ').unwrap_or((first.as_str(), ""));
        let out = match (authed, verb) {
            (false, "auth") | (false, "userauth") => {
                let given = if verb == "auth" {
                    rest
                } else {
                    rest.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
                };
                if given == cfg.password {
                    authed = true;
                    reply("+OK accepted")
                } else {
                    let _ = tx.send(Some(reply("-ERR invalid"))).await;
                    let _ = tx
                        .send(Some(with_body("text/disconnect-notice", GOODBYE)))
                        .await;
                    break;
                }
            }
            (false, _) => reply("-ERR command not found"),
            (true, "event") => {
                let format = if rest.starts_with("json") {
                    EventFormat::Json
                } else {
                    EventFormat::Plain
                };
                if streaming.is_none() {
                    streaming = Some(tokio::spawn(stream_events(
                        tx.clone(),
                        cfg.clone(),
                        shared.clone(),
                        conn,
                        format,
                    )));
                }
                // The reply must precede the first event: the stream task waits for it.
                reply(&format!("+OK event listener enabled {}", format.as_str()))
            }
            (true, "filter") => {
                let (h, v) = rest.split_once(' ').unwrap_or((rest, ""));
                reply(&format!("+OK filter added. [{h}]=[{v}]"))
            }
            (true, "nixevent") | (true, "noevents") => reply("+OK no longer listening for events"),
            (true, "api") => with_body("api/response", &api(rest, &shared)),
            (true, "bgapi") => {
                let job = cmd
                    .iter()
                    .find_map(|l| l.strip_prefix("Job-UUID: "))
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let _ = tx.send(Some(reply(&format!("+OK Job-UUID: {job}")))).await;
                with_body(
                    "text/event-plain",
                    &background_job(&job, rest, &api(rest, &shared)),
                )
            }
            // Async-mode sendmsg is acknowledged at once; the application runs later.
            (true, "sendmsg") => reply("+OK"),
            (true, "exit") => {
                let _ = tx.send(Some(reply("+OK bye"))).await;
                let _ = tx
                    .send(Some(with_body("text/disconnect-notice", GOODBYE)))
                    .await;
                break;
            }
            (true, _) => reply("-ERR command not found"),
        };
        if tx.send(Some(out)).await.is_err() {
            break;
        }
    }
    if let Some(s) = streaming {
        s.abort();
    }
    let _ = tx.send(None).await;
    let _ = writer.await;
}

/// Reads one command: lines up to a blank line. None at EOF.
async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some(lines);
        }
        lines.push(line);
    }
}

fn api(line: &str, shared: &Arc<Mutex<Shared>>) -> String {
    match line.trim() {
        "show channels as json" => shared.lock().expect("lock").channels.show_json(),
        "eval ${domain}" => "127.0.0.1".into(),
        other => format!(
            "-ERR {} Command not found!\n",
            other.split(' ').next().unwrap_or("")
        ),
    }
}

/// A BACKGROUND_JOB event in mod_event_socket's plain form.
fn background_job(job: &str, cmd: &str, result: &str) -> String {
    let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nJob-Command: {}\nJob-Command-Arg: {}\nContent-Length: {}\n\n{result}",
        enc(name),
        enc(arg),
        result.len()
    )
}

/// FreeSWITCH's `channels` table, kept from the events the way its core keeps it
/// (`switch_core_sqldb.c`): a row from CHANNEL_CREATE to CHANNEL_DESTROY; `call_uuid` only once
/// the channel is originated (CHANNEL_ORIGINATE) or bridges (CHANNEL_BRIDGE); the call state
/// from CHANNEL_CALLSTATE and CALL_UPDATE; caller and destination once routed (CS_ROUTING).
#[derive(Debug, Default, Clone)]
pub struct ChannelTable {
    rows: BTreeMap<String, serde_json::Value>,
}

impl ChannelTable {
    /// Applies one event.
    pub fn track(&mut self, ev: &Event) {
        let Some(uuid) = ev.unique_id() else { return };
        let header =
            |h: &str| serde_json::Value::String(ev.get(h).unwrap_or_default().into_owned());
        let name = ev.kind();
        if name == EventName::ChannelCreate {
            let epoch = ev.timestamp_us().map(|t| t / 1_000_000).unwrap_or_default();
            let row = serde_json::json!({
                "uuid": uuid,
                "direction": header("Call-Direction"),
                "created_epoch": epoch.to_string(),
                "name": header("Channel-Name"),
                "state": header("Channel-State"),
                "callstate": header("Channel-Call-State"),
                "context": header("Caller-Context"),
                "call_uuid": "",
            });
            self.rows.insert(uuid.into_owned(), row);
            return;
        }
        if name == EventName::ChannelDestroy {
            self.rows.remove(uuid.as_ref());
            return;
        }
        let Some(row) = self.rows.get_mut(uuid.as_ref()) else {
            return;
        };
        let mut set = |k: &str, h: &str| row[k] = header(h);
        match name {
            EventName::ChannelOriginate | EventName::ChannelBridge => {
                set("call_uuid", "Channel-Call-UUID")
            }
            EventName::ChannelCallstate | EventName::CallUpdate => {
                set("callstate", "Channel-Call-State")
            }
            EventName::ChannelState if ev.get("Channel-State").as_deref() == Some("CS_ROUTING") => {
                set("cid_name", "Caller-Caller-ID-Name");
                set("cid_num", "Caller-Caller-ID-Number");
                set("dest", "Caller-Destination-Number");
                set("context", "Caller-Context");
            }
            _ => {}
        }
    }

    /// What `show channels as json` answers.
    pub fn show_json(&self) -> String {
        if self.rows.is_empty() {
            return "{\"row_count\": 0}\n".into();
        }
        let rows: Vec<_> = self.rows.values().cloned().collect();
        format!(
            "{}\n",
            serde_json::json!({"row_count": rows.len(), "rows": rows})
        )
    }
}

async fn stream_events(
    tx: mpsc::Sender<Option<Bytes>>,
    cfg: PlaybackConfig,
    shared: Arc<Mutex<Shared>>,
    conn: usize,
    format: EventFormat,
) {
    // Let the subscription reply go out first.
    tokio::task::yield_now().await;
    if !cfg.faults.eager {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_conn = conn == 1;
    let mut sent = 0usize;
    let mut prev_ts: Option<i64> = None;
    loop {
        let frame = {
            let mut s = shared.lock().expect("lock");
            if s.cursor >= s.plain.len() {
                return;
            }
            let i = s.cursor;
            let plain = s.plain[i].clone();
            s.channels.track(&plain.event);
            s.cursor += 1;
            match format {
                EventFormat::Json if i < s.json.len() => s.json[i].clone(),
                _ => plain,
            }
        };
        if let Pace::RealTime { speed } = cfg.pace {
            if let (Some(prev), Some(ts)) = (prev_ts, frame.event.timestamp_us()) {
                let gap = ((ts - prev).clamp(0, 3_000_000) as f64 / speed.max(0.001)) as u64;
                tokio::time::sleep(Duration::from_micros(gap)).await;
            }
            prev_ts = frame.event.timestamp_us().or(prev_ts);
        }
        if tx.send(Some(frame.raw)).await.is_err() {
            return;
        }
        sent += 1;
        if first_conn {
            if cfg.faults.drop_after == Some(sent) {
                let _ = tx.send(None).await;
                return;
            }
            if cfg.faults.notice_after == Some(sent) {
                let _ = tx
                    .send(Some(with_body(
                        "text/disconnect-notice",
                        cfg.faults.notice_text.as_deref().unwrap_or(GOODBYE),
                    )))
                    .await;
                let _ = tx.send(None).await;
                return;
            }
            if cfg.faults.stall_after == Some(sent) {
                std::future::pending::<()>().await;
            }
        }
    }
}
