//! The FreeSWITCH event socket: the wire protocol, the inbound client and its supervisor.
//!
//! Data flows one way: bytes → [`codec::EslCodec`] → [`message::Message`] → consumers.
//! Replay of a capture file and a live socket go through the same codec.

pub(crate) mod codec;
pub(crate) mod command;
mod config;
pub(crate) mod event;
pub(crate) mod headers;
pub(crate) mod message;
mod names;
mod xml;

pub use codec::{Decoded, EslCodec, FrameError, FrameErrorKind, Limits};
pub use command::{Command, CommandError};
pub use event::{Event, EventError, EventFormat};
pub use headers::{split_array, Headers};
pub use message::{ApiResponse, DisconnectNotice, Disposition, Message, Reply, ReplyStatus};
pub use names::EventName;
pub(crate) mod client;
pub(crate) mod connection;

pub use client::{
    parse_channels, ChannelSnapshot, ClientError, EslClient, EslSignal, GapReason, QueuedEvent,
};
pub use config::{Filter, FreeswitchConfig, Overflow};
