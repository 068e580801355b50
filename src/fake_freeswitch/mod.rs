//! FreeSWITCH played back from real captures: the test kit that `demo`, the tests and the
//! benchmarks talk to instead of a PBX. `run` never uses it.
//!
//! [`inbound`] is the event socket (mod_event_socket): it authenticates a client, answers its
//! subscription and `show channels` the way FreeSWITCH's core keeps its channels table, and
//! streams captured events at their recorded pace or as fast as the socket takes them, with
//! faults on request. [`outbound`] is the `socket` dial-plan application: it connects to a
//! routing server and answers its commands with the frames FreeSWITCH sent in a capture.

pub mod inbound;
pub mod outbound;

pub use inbound::{
    load_capture, CapturedFrame, ChannelTable, Faults, Pace, PlaybackConfig, PlaybackServer,
};
pub use outbound::{call, Conversation, FakeOptions, Transcript};
