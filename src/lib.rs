//! switchhook: a FreeSWITCH event-socket adapter that assembles calls into sessions, delivers
//! lifecycle webhooks and answers routing steps.
//!
//! The modules follow the data: [`esl`] (the wire) feeds everything else; [`config`] and the
//! CLI sit at the edge.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod admin;
pub mod bus;
pub mod call_store;
pub mod cli;
pub mod config;

pub mod esl;
pub mod fake_freeswitch;
pub mod hooks;
mod logging;
mod memory;
pub mod pipeline;
pub mod problem;
pub mod record;
pub mod relay;
pub mod replay;
pub mod routing;
pub mod secrets;
pub mod session;
pub mod template;
