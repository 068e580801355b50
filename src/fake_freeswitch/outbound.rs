//! FreeSWITCH's `socket` application, played back from captured conversations (19-23).
//!
//! It connects to switchhook as `socket <addr> async full` does and answers each command with
//! the frames FreeSWITCH sent for the same command in a capture, at the capture's pace (scaled
//! by `speed`): the connect reply byte for byte, `+OK` at once for a `sendmsg`, then its
//! CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE with switchhook's `Event-UUID` as
//! `Application-UUID`, applications running one after the other like a channel's queue; the
//! captured DTMF and `play_and_get_digits` result; `+OK bye` and the disconnect notice on
//! `exit`. With a hangup scheduled it sends capture 22's hangup events and disconnect notice,
//! closes, and answers nothing more (quirks 15 and 16). Events go out only as subscribed:
//! every channel event after `myevents`, only the named ones after `event plain …` (capture 23
//! holds no CHANNEL_EXECUTE), none before either.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One record of a `.log`: seconds since accept, direction, the exact bytes.
#[derive(Debug, Clone)]
pub struct Record {
    /// Seconds since the connection was accepted.
    pub at: f64,
    /// FreeSWITCH → app.
    pub from_fs: bool,
    /// The frame's bytes.
    pub bytes: Vec<u8>,
}

/// Parses a capture's `.log` (`=== <utc> +<s> <DIR> <N> bytes ===`, N bytes, newline).
pub fn load_log(path: &Path) -> io::Result<Vec<Record>> {
    let raw = std::fs::read(path)?;
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let end = raw[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| i + p);
        let line = String::from_utf8_lossy(&raw[i..end]).into_owned();
        i = end + 1;
        let Some(head) = line.strip_prefix("=== ") else {
            continue;
        };
        let parts: Vec<&str> = head.split_whitespace().collect();
        // [utc, +secs, DIR, N, bytes, ===]
        let (Some(at), Some(dir), Some(n)) = (parts.get(1), parts.get(2), parts.get(3)) else {
            return Err(bad(&format!("record header {line:?}")));
        };
        let at: f64 = at
            .trim_start_matches('+')
            .parse()
            .map_err(|_| bad(&format!("time in {line:?}")))?;
        let n: usize = n.parse().map_err(|_| bad(&format!("length in {line:?}")))?;
        let bytes = raw
            .get(i..i + n)
            .ok_or_else(|| bad("a record runs past the end"))?;
        out.push(Record {
            at,
            from_fs: *dir == "FS->APP",
            bytes: bytes.to_vec(),
        });
        i += n + 1;
    }
    Ok(out)
}

/// A command as sent: its key (`connect`, `sendmsg:set`…) and headers.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Seconds since the fake connected.
    pub at: f64,
    /// The exact text.
    pub text: String,
}

impl Sent {
    fn key(&self) -> String {
        key_of(&self.text)
    }
}

fn key_of(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    if first.starts_with("sendmsg") {
        let app = header(text, "execute-app-name").unwrap_or_default();
        format!("sendmsg:{app}")
    } else {
        first.split_whitespace().next().unwrap_or("").to_owned()
    }
}

fn header(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(": "))
            .map(str::to_owned)
    })
}

/// One captured command and what FreeSWITCH answered: (delay after the command, frame).
#[derive(Debug, Clone)]
struct Response {
    command: String,
    frames: Vec<(f64, Vec<u8>)>,
}

/// What the fake knows from a capture.
#[derive(Debug, Clone)]
pub struct Conversation {
    responses: HashMap<String, Response>,
    hangup: Vec<(f64, Vec<u8>)>,
    /// FreeSWITCH's own `-ERR command not found` reply (capture 23).
    refusal: Vec<u8>,
}

/// The capture that holds FreeSWITCH's answers to `filter` and `event plain …`, which a step
/// sends first; the other routing captures were recorded with `myevents`.
const SUBSCRIPTION_CAPTURE: &str = "23-routing-api-linger";

impl Conversation {
    /// A routing step's conversation: the named captures in `dir` first (later ones only add
    /// commands the earlier ones lack), then capture 23 for the subscription and the refusal.
    pub fn for_step(dir: &Path, names: &[&str]) -> io::Result<Conversation> {
        let mut all: Vec<PathBuf> = names.iter().map(|n| dir.join(format!("{n}.log"))).collect();
        all.push(dir.join(format!("{SUBSCRIPTION_CAPTURE}.log")));
        Conversation::from_captures(&all)
    }

    fn from_captures(names: &[PathBuf]) -> io::Result<Conversation> {
        let mut responses: HashMap<String, Response> = HashMap::new();
        let mut hangup = Vec::new();
        let mut refusal = Vec::new();
        for name in names {
            let recs = load_log(name)?;
            let mut current: Option<(f64, Response)> = None;
            let mut done = Vec::new();
            for r in &recs {
                if !r.from_fs {
                    if let Some((_, resp)) = current.take() {
                        done.push(resp);
                    }
                    current = Some((
                        r.at,
                        Response {
                            command: String::from_utf8_lossy(&r.bytes).into_owned(),
                            frames: Vec::new(),
                        },
                    ));
                } else if let Some((at, resp)) = current.as_mut() {
                    resp.frames.push((r.at - *at, r.bytes.clone()));
                }
            }
            if let Some((_, resp)) = current.take() {
                done.push(resp);
            }
            // The hangup: from the first CHANNEL_HANGUP to the end of what FreeSWITCH sent.
            if hangup.is_empty() {
                let fs: Vec<&Record> = recs.iter().filter(|r| r.from_fs).collect();
                if let Some(first) = fs
                    .iter()
                    .position(|r| contains(&r.bytes, b"Event-Name: CHANNEL_HANGUP\n"))
                {
                    let t0 = fs[first].at;
                    hangup = fs[first..]
                        .iter()
                        .map(|r| (r.at - t0, r.bytes.clone()))
                        .collect();
                }
            }
            if refusal.is_empty() {
                if let Some(r) = recs
                    .iter()
                    .find(|r| r.from_fs && contains(&r.bytes, b"Reply-Text: -ERR"))
                {
                    refusal = r.bytes.clone();
                }
            }
            for resp in done {
                let key = key_of(&resp.command);
                // A command the hangup interrupted has no answer to learn from.
                if resp.frames.is_empty()
                    || resp
                        .frames
                        .iter()
                        .any(|(_, f)| contains(f, b"Event-Name: CHANNEL_HANGUP\n"))
                {
                    continue;
                }
                responses.entry(key).or_insert(resp);
            }
        }
        if refusal.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no -ERR reply in {names:?}"),
            ));
        }
        Ok(Conversation {
            responses,
            hangup,
            refusal,
        })
    }
}

/// Which events FreeSWITCH sends on the socket so far.
#[derive(Debug, Clone, PartialEq)]
enum Subscription {
    /// Nothing asked for yet.
    Nothing,
    /// `myevents`: every event of the channel.
    Channel,
    /// `event plain A B …`: only these.
    Names(Vec<String>),
}

impl Subscription {
    /// After `command`, or None when it does not change the subscription.
    fn after(command: &str) -> Option<Subscription> {
        let first = command.lines().next().unwrap_or("").trim();
        let mut words = first.split_whitespace();
        match words.next()? {
            "myevents" => Some(Subscription::Channel),
            "event" => {
                words.next()?; // the format
                Some(Subscription::Names(words.map(str::to_owned).collect()))
            }
            _ => None,
        }
    }

    /// Whether a frame FreeSWITCH would send goes out: replies and notices always, events only
    /// when subscribed.
    fn passes(&self, frame: &[u8]) -> bool {
        let text = String::from_utf8_lossy(frame);
        if !text.contains("Content-Type: text/event-") {
            return true;
        }
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("Event-Name: "))
            .unwrap_or("");
        match self {
            Subscription::Nothing => false,
            Subscription::Channel => true,
            Subscription::Names(names) => names.iter().any(|n| n == name || n == "ALL"),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// 1.0: the capture's pace; 10.0: ten times faster.
    pub speed: f64,
    /// The caller hangs up this long after the connection (capture 22's frames).
    pub hangup_after: Option<Duration>,
    /// Commands (by first word, e.g. `filter`) answered with FreeSWITCH's captured
    /// `-ERR command not found` instead of their own reply.
    pub refuse: Vec<&'static str>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            speed: 1.0,
            hangup_after: None,
            refuse: Vec::new(),
        }
    }
}

/// What happened on one fake call.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// Every command switchhook sent, in order.
    pub commands: Vec<Sent>,
    /// Commands that arrived after the caller hung up (FreeSWITCH never answers them).
    pub after_hangup: Vec<Sent>,
    /// Commands the captures hold no answer for.
    pub unknown: Vec<String>,
    /// Whether the fake closed because of `exit` (false: hangup or switchhook closed).
    pub exited: bool,
}

impl Transcript {
    /// The commands with every `Event-UUID` replaced by `<uuid>` and the latency by `<ms>`.
    pub fn normalized(&self) -> Vec<String> {
        self.commands
            .iter()
            .map(|c| {
                c.text
                    .lines()
                    .map(|l| {
                        if l.starts_with("Event-UUID: ") {
                            "Event-UUID: <uuid>".to_owned()
                        } else if l
                            .strip_prefix("execute-app-arg: switchhook_latency_ms=")
                            .is_some_and(|ms| ms.bytes().all(|b| b.is_ascii_digit()))
                        {
                            "execute-app-arg: switchhook_latency_ms=<ms>".to_owned()
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    }
}

/// FreeSWITCH's url-encoding of header values, as seen in the captures.
fn fs_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'(),$/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rewrites a captured response frame for the command switchhook sent.
fn rewrite(frame: &[u8], captured: &str, ours: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(frame).into_owned();
    if !text.contains("text/event-plain") {
        return frame.to_vec();
    }
    let mut lines: Vec<String> = Vec::new();
    let (env, body) = text.split_once("\n\n").unwrap();
    let cap_app = header(captured, "execute-app-name").unwrap_or_default();
    let our_app = header(ours, "execute-app-name").unwrap_or_default();
    let cap_arg = fs_encode(&header(captured, "execute-app-arg").unwrap_or_default());
    let our_arg = fs_encode(&header(ours, "execute-app-arg").unwrap_or_default());
    let cap_id = header(captured, "Event-UUID").unwrap_or_default();
    let our_id = header(ours, "Event-UUID").unwrap_or_default();
    for l in body.split('\n') {
        let l = match l.split_once(": ") {
            Some(("Application-UUID", v)) if v == cap_id => format!("Application-UUID: {our_id}"),
            Some(("Application", v)) if v == cap_app => format!("Application: {our_app}"),
            Some(("variable_current_application", v)) if v == cap_app => {
                format!("variable_current_application: {our_app}")
            }
            Some((k @ ("Application-Data" | "variable_current_application_data"), v))
                if v == cap_arg =>
            {
                format!("{k}: {our_arg}")
            }
            _ => l.to_owned(),
        };
        lines.push(l);
    }
    let body = lines.join("\n");
    let env: Vec<String> = env
        .lines()
        .map(|l| {
            if l.starts_with("Content-Length: ") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_owned()
            }
        })
        .collect();
    format!("{}\n\n{}", env.join("\n"), body).into_bytes()
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: std::cmp::Reverse<Instant>,
    seq: std::cmp::Reverse<u64>,
    bytes: Vec<u8>,
    close: bool,
}

/// Places one call: connects to `addr`, answers switchhook from `conv`, returns what it sent.
pub async fn call(
    addr: SocketAddr,
    conv: &Conversation,
    opts: FakeOptions,
) -> io::Result<Transcript> {
    let stream = TcpStream::connect(addr).await?;
    // FreeSWITCH's event socket sets TCP_NODELAY too; without it, Nagle and delayed ACKs add
    // 40 ms to every exchange of small frames.
    stream.set_nodelay(true)?;
    let start = Instant::now();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut app_clock = start;
    let mut t = Transcript::default();
    let scale = |secs: f64| Duration::from_secs_f64((secs / opts.speed).max(0.0));
    let mut hangup_at = opts.hangup_after.map(|d| start + d);
    let mut hung_up = false;
    let mut subscription = Subscription::Nothing;
    let mut pending = String::new();
    // read_until is cancel-safe: a partial line stays in `line` across select! rounds.
    let mut line: Vec<u8> = Vec::new();
    'conversation: loop {
        // Frames already due go out now: a timer, even an expired one, waits for the next
        // millisecond tick of tokio's clock.
        while heap.peek().is_some_and(|d| d.at.0 <= Instant::now())
            && hangup_at.is_none_or(|h| Instant::now() < h)
        {
            let Some(due) = heap.pop() else { break };
            if wr.write_all(&due.bytes).await.is_err() {
                break 'conversation;
            }
            if due.close {
                let _ = wr.shutdown().await;
                break 'conversation;
            }
        }
        let next_due = heap.peek().map(|d| d.at.0);
        let wake = match (next_due, hangup_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                if hangup_at.is_some_and(|h| Instant::now() >= h) {
                    // The caller hangs up: whatever was queued is lost; FreeSWITCH sends the
                    // hangup events and the notice, then closes.
                    hangup_at = None;
                    hung_up = true;
                    heap.clear();
                    let now = Instant::now();
                    let n = conv.hangup.len();
                    for (i, (d, f)) in conv.hangup.iter().enumerate() {
                        if i + 1 < n && !subscription.passes(f) {
                            continue;
                        }
                        seq += 1;
                        heap.push(Due { at: std::cmp::Reverse(now + scale(*d)), seq: std::cmp::Reverse(seq), bytes: f.clone(), close: i + 1 == n });
                    }
                    continue;
                }
                let Some(due) = heap.pop() else { continue };
                if wr.write_all(&due.bytes).await.is_err() {
                    break;
                }
                if due.close {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
            n = rd.read_until(b'\n', &mut line) => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    break;
                }
                pending.push_str(&String::from_utf8_lossy(&line));
                let blank = line == b"\n";
                line.clear();
                if !blank {
                    continue;
                }
                let sent = Sent { at: start.elapsed().as_secs_f64(), text: std::mem::take(&mut pending) };
                if hung_up {
                    t.after_hangup.push(sent);
                    continue;
                }
                let key = sent.key();
                if opts.refuse.contains(&key.as_str()) {
                    seq += 1;
                    heap.push(Due {
                        at: std::cmp::Reverse(Instant::now()),
                        seq: std::cmp::Reverse(seq),
                        bytes: conv.refusal.clone(),
                        close: false,
                    });
                    t.commands.push(sent);
                    continue;
                }
                if let Some(now_subscribed) = Subscription::after(&sent.text) {
                    subscription = now_subscribed;
                }
                let resp = conv.responses.get(&key).or_else(|| {
                    key.starts_with("sendmsg:").then(|| conv.responses.get("sendmsg:set")).flatten()
                });
                let Some(resp) = resp else {
                    t.unknown.push(sent.text.clone());
                    t.commands.push(sent);
                    continue;
                };
                let now = Instant::now();
                let is_exit = key == "exit";
                let n = resp.frames.len();
                let reply_delay = resp.frames.first().map(|f| f.0).unwrap_or(0.0);
                // Applications run one after the other, like the channel's message queue.
                let base = app_clock.max(now);
                for (i, (d, f)) in resp.frames.iter().enumerate() {
                    if !subscription.passes(f) {
                        continue;
                    }
                    let at = if i == 0 || !key.starts_with("sendmsg:") {
                        now + scale(*d)
                    } else {
                        base + scale(*d - reply_delay)
                    };
                    if i > 0 && key.starts_with("sendmsg:") {
                        app_clock = app_clock.max(at);
                    }
                    seq += 1;
                    heap.push(Due {
                        at: std::cmp::Reverse(at),
                        seq: std::cmp::Reverse(seq),
                        bytes: rewrite(f, &resp.command, &sent.text),
                        close: is_exit && i + 1 == n,
                    });
                }
                if is_exit {
                    t.exited = true;
                }
                t.commands.push(sent);
            }
        }
    }
    if hung_up {
        // FreeSWITCH has closed, but the app's kernel still accepts what it writes (capture
        // 22 holds a late sendmsg FreeSWITCH never read). Keep reading a while, so a command
        // written after the hangup shows in `after_hangup` instead of vanishing.
        let drain = async {
            loop {
                match rd.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        pending.push_str(&String::from_utf8_lossy(&line));
                        if line == b"\n" {
                            t.after_hangup.push(Sent {
                                at: start.elapsed().as_secs_f64(),
                                text: std::mem::take(&mut pending),
                            });
                        }
                        line.clear();
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    }
    Ok(t)
}
