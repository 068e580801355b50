//! The FreeSWITCH event socket: the wire protocol, the inbound client and its supervisor.
//!
//! Data flows one way: bytes → [`codec::EslCodec`] → [`message::Message`] → consumers.
//! Replay of a capture file and a live socket go through the same codec.

pub mod codec;
pub mod command;
mod config;
pub mod event;
pub mod headers;
pub mod message;
mod names;
mod xml;

pub use codec::{Decoded, EslCodec, FrameError, FrameErrorKind, Limits};
pub use command::{Command, CommandError};
pub use event::{Event, EventError, EventFormat};
pub use headers::Headers;
pub use message::{ApiResponse, DisconnectNotice, Disposition, Message, Reply, ReplyStatus};
pub use names::EventName;
pub mod client;
pub mod connection;

pub use client::{ChannelSnapshot, ClientError, EslClient, EslSignal, GapReason, QueuedEvent};
pub use config::{Filter, FreeswitchConfig, Overflow};
pub use connection::Auth;
