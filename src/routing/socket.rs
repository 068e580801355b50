//! One call's outbound-socket connection: FreeSWITCH's `socket <addr> async full` connected to
//! switchhook and hands over the channel until switchhook says `exit`.
//!
//! What the captures (19-23) show, and this type relies on:
//! - the `connect` reply is the channel data, with no `Content-Length` (the codec ends it at
//!   the blank line);
//! - in async mode a `sendmsg` is answered `+OK` at once, and the application's end arrives
//!   later as CHANNEL_EXECUTE_COMPLETE whose `Application-UUID` is the sendmsg's `Event-UUID`;
//! - when the caller hangs up, FreeSWITCH sends the hangup events, a disconnect notice, and
//!   closes: a command written after that is never answered. So once the hangup is seen,
//!   nothing more is written, and every wait also ends on EOF.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::esl::{
    Command, CommandError, EslCodec, Event, EventName, Limits, Message, Reply, ReplyStatus,
};

/// Why a conversation with FreeSWITCH ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// The channel hung up (the caller left mid-step).
    #[error("the caller hung up ({cause})")]
    HungUp {
        /// `Hangup-Cause`, e.g. ORIGINATOR_CANCEL.
        cause: String,
    },
    /// FreeSWITCH sent its disconnect notice or closed the connection.
    #[error("FreeSWITCH closed the socket")]
    Closed,
    /// A command was answered `-ERR`.
    #[error("FreeSWITCH refused {what}: {text}")]
    Refused {
        /// Which command.
        what: String,
        /// The reply text.
        text: String,
    },
    /// No answer in time.
    #[error("no answer from FreeSWITCH within {0:?} while {1}")]
    Timeout(Duration, &'static str),
    /// A socket error.
    #[error("socket error: {0}")]
    Io(String),
    /// A command could not be built (a value with a line break).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The first frame was not the channel data.
    #[error("expected the channel data, got {0}")]
    Unexpected(&'static str),
}

impl SocketError {
    /// Whether the call is gone (nothing more can be done for it).
    pub fn call_gone(&self) -> bool {
        matches!(self, SocketError::HungUp { .. } | SocketError::Closed)
    }
}

/// How long replies and completions may take. FreeSWITCH answers a command in well under a
/// millisecond and runs a `set` within one 20 ms tick, so these only bound a stuck peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketTimeouts {
    /// A `command/reply`.
    pub reply: Duration,
}

impl Default for SocketTimeouts {
    fn default() -> Self {
        SocketTimeouts {
            reply: Duration::from_secs(5),
        }
    }
}

/// An application to run on the channel: name and argument.
pub(crate) type App = (&'static str, String);

/// The outbound-socket conversation for one channel.
pub(crate) struct OutboundSocket {
    framed: Framed<TcpStream, EslCodec>,
    uuid: String,
    timeouts: SocketTimeouts,
    replies: VecDeque<Reply>,
    /// Commands sent with [`OutboundSocket::send_early`] whose replies are not checked yet.
    unsettled: VecDeque<&'static str>,
    awaited: HashSet<String>,
    completions: HashMap<String, Event>,
    ended: Option<SocketError>,
}

impl OutboundSocket {
    /// Sends `connect` on a freshly accepted connection and reads the channel data.
    pub(crate) async fn connect(
        stream: TcpStream,
        limits: Limits,
        timeouts: SocketTimeouts,
    ) -> Result<(OutboundSocket, Event), SocketError> {
        let _ = stream.set_nodelay(true);
        let mut sock = OutboundSocket {
            framed: Framed::with_capacity(stream, EslCodec::new(limits), 64 * 1024),
            uuid: String::new(),
            timeouts,
            replies: VecDeque::new(),
            unsettled: VecDeque::new(),
            awaited: HashSet::new(),
            completions: HashMap::new(),
            ended: None,
        };
        sock.write(&Command::Connect).await?;
        let deadline = Instant::now() + timeouts.reply;
        loop {
            match sock
                .next_message(deadline, "waiting for the channel data")
                .await?
            {
                Some(Message::ChannelData(data)) => {
                    sock.uuid = data.unique_id().map(|u| u.into_owned()).unwrap_or_default();
                    return Ok((sock, data));
                }
                Some(other) => return Err(SocketError::Unexpected(other.kind())),
                // A closed stream stays closed: without this check a peer that connects and
                // leaves before the channel data would be polled forever (an ended stream
                // is always ready, so the deadline never fires).
                None => sock.fail_if_ended()?,
            }
            if Instant::now() >= deadline {
                return Err(SocketError::Timeout(
                    timeouts.reply,
                    "waiting for the channel data",
                ));
            }
        }
    }

    /// The channel's `Unique-ID`.
    pub(crate) fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Sends commands in one write without waiting for their replies, so their round trip
    /// overlaps what comes next (the HTTP call). Their replies are checked by the next
    /// [`OutboundSocket::execute_all`] before it writes anything: an `-ERR` fails the step
    /// before any decision reaches the channel.
    pub(crate) async fn send_early(
        &mut self,
        cmds: Vec<(Command, &'static str)>,
    ) -> Result<(), SocketError> {
        let (cmds, whats): (Vec<Command>, Vec<&'static str>) = cmds.into_iter().unzip();
        self.write_all(&cmds).await?;
        self.unsettled.extend(whats);
        Ok(())
    }

    /// Reads the replies of the commands sent early; the first `-ERR` is the error.
    async fn settle(&mut self) -> Result<(), SocketError> {
        while let Some(what) = self.unsettled.pop_front() {
            let reply = self.next_reply().await?;
            if let ReplyStatus::Err(text) = reply.status() {
                return Err(refused(what, text));
            }
        }
        Ok(())
    }

    /// Runs applications in order (`sendmsg` with `event-lock`, all in one write) and waits
    /// until every one has completed; returns their CHANNEL_EXECUTE_COMPLETE events.
    pub(crate) async fn execute_all(
        &mut self,
        apps: &[App],
        limit: Duration,
    ) -> Result<Vec<Event>, SocketError> {
        self.settle().await?;
        let mut ids = Vec::with_capacity(apps.len());
        let mut cmds = Vec::with_capacity(apps.len());
        for (app, arg) in apps {
            let id = uuid::Uuid::new_v4().to_string();
            cmds.push(Command::execute(None, app, arg, Some(&id))?.with_event_lock());
            ids.push(id);
        }
        self.write_all(&cmds).await?;
        self.awaited.extend(ids.iter().cloned());
        for (app, _) in apps {
            let reply = self.next_reply().await?;
            if let ReplyStatus::Err(text) = reply.status() {
                return Err(refused(&format!("execute {app}"), text));
            }
        }
        let deadline = Instant::now() + limit;
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            loop {
                if let Some(ev) = self.completions.remove(&id) {
                    done.push(ev);
                    break;
                }
                self.fail_if_ended()?;
                self.next_message(deadline, "waiting for an application to complete")
                    .await?;
            }
        }
        Ok(done)
    }

    /// Runs one application and waits for its completion.
    pub(crate) async fn execute(
        &mut self,
        app: &'static str,
        arg: String,
        limit: Duration,
    ) -> Result<Event, SocketError> {
        let mut done = self.execute_all(&[(app, arg)], limit).await?;
        Ok(done.remove(0))
    }

    /// Awaits `work` (an HTTP call) while reading the socket, so a hangup in the meantime ends
    /// the wait at once instead of after the routing server answers.
    pub(crate) async fn while_connected<F: Future>(
        &mut self,
        work: F,
    ) -> Result<F::Output, SocketError> {
        tokio::pin!(work);
        loop {
            self.fail_if_ended()?;
            tokio::select! {
                out = &mut work => return Ok(out),
                r = self.framed.next() => { self.take(r); }
            }
        }
    }

    /// Ends the conversation: `exit`, then FreeSWITCH's `+OK bye` and disconnect notice. The
    /// dial plan goes on (with `socket_resume=true`). Does nothing once the call is gone.
    pub(crate) async fn exit(&mut self) -> Result<(), SocketError> {
        self.fail_if_ended()?;
        // The reply and notice are a courtesy: FreeSWITCH closes either way, and after a
        // transfer it may already have.
        let closing = async {
            self.write(&Command::Exit).await?;
            let deadline = Instant::now() + self.timeouts.reply;
            while self.ended.is_none() {
                self.next_message(deadline, "closing").await?;
            }
            Ok::<(), SocketError>(())
        };
        match closing.await {
            Ok(()) | Err(SocketError::Io(_) | SocketError::Closed | SocketError::Timeout(..)) => {}
            Err(other) => return Err(other),
        }
        // The decision is on the channel; a hangup from here on is the call's business.
        Ok(())
    }

    fn fail_if_ended(&self) -> Result<(), SocketError> {
        match &self.ended {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    async fn write(&mut self, cmd: &Command) -> Result<(), SocketError> {
        self.write_all(std::slice::from_ref(cmd)).await
    }

    /// Writes commands back to back and flushes once: one segment instead of one per command.
    async fn write_all(&mut self, cmds: &[Command]) -> Result<(), SocketError> {
        // A command after the hangup would never be answered (capture 22): do not send it.
        self.fail_if_ended()?;
        let io = |e: std::io::Error| SocketError::Io(e.to_string());
        for cmd in cmds {
            self.framed.feed(cmd).await.map_err(io)?;
        }
        self.framed.flush().await.map_err(io)
    }

    async fn next_reply(&mut self) -> Result<Reply, SocketError> {
        let deadline = Instant::now() + self.timeouts.reply;
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Ok(r);
            }
            self.fail_if_ended()?;
            self.next_message(deadline, "waiting for a command reply")
                .await?;
        }
    }

    /// Reads one frame and files it; returns the frame when it is not one this type files.
    async fn next_message(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Option<Message>, SocketError> {
        let limit = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout_at(deadline, self.framed.next())
            .await
            .map_err(|_| SocketError::Timeout(limit, what))?;
        Ok(self.take(item))
    }

    fn take(
        &mut self,
        item: Option<Result<crate::esl::Decoded, std::io::Error>>,
    ) -> Option<Message> {
        let msg = match item {
            None => {
                self.end(SocketError::Closed);
                return None;
            }
            Some(Err(e)) => {
                self.end(SocketError::Io(e.to_string()));
                return None;
            }
            Some(Ok(Err(e))) => {
                tracing::warn!(call_id = %self.uuid, error = %e, "malformed frame on the outbound socket");
                return None;
            }
            Some(Ok(Ok(m))) => m,
        };
        match msg {
            Message::Reply(r) => self.replies.push_back(r),
            Message::Event(ev) => self.file_event(ev),
            Message::Disconnect(n) if n.keep_reading() => {}
            Message::Disconnect(_) => self.end(SocketError::Closed),
            other => return Some(other),
        }
        None
    }

    fn file_event(&mut self, ev: Event) {
        let ours = ev.unique_id().is_none_or(|u| u == self.uuid);
        match ev.kind() {
            EventName::ChannelExecuteComplete => {
                // Only completions of our own sendmsgs are kept (the dial plan's own
                // applications complete on this socket too).
                let id = ev.get("Application-UUID").map(|id| id.into_owned());
                if let Some(id) = id.filter(|id| self.awaited.remove(id)) {
                    self.completions.insert(id, ev);
                }
            }
            EventName::ChannelHangup | EventName::ChannelHangupComplete if ours => {
                let cause = ev
                    .get("Hangup-Cause")
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|| "unknown".into());
                self.end(SocketError::HungUp { cause });
            }
            _ => {}
        }
    }

    /// Keeps the first reason: a hangup stays a hangup when the disconnect notice follows.
    fn end(&mut self, why: SocketError) {
        if self.ended.is_none() {
            self.ended = Some(why);
        }
    }
}

fn refused(what: &str, text: String) -> SocketError {
    SocketError::Refused {
        what: what.to_owned(),
        text,
    }
}
