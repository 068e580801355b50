//! Routing control: the dial-plan routing step (a digit menu, an HTTP lookup, success and failure branches), answered over FreeSWITCH's
//! outbound socket.
//!
//! Data flows: [`server`] accepts FreeSWITCH's `socket` connection → [`socket`] speaks the
//! outbound protocol → [`step`] runs the step (menu, ask, hand back) → [`lookup`] asks the
//! routing server under a deadline, [`breaker`] and a last-known-good cache → [`reply`] judges
//! what it answered, so every value is validated before it reaches a channel variable.

pub mod breaker;
pub mod config;
pub mod lookup;
pub mod reply;
pub mod server;
pub mod socket;
pub mod step;

pub use config::{RouteConfig, RoutingConfig};
pub use reply::{Decision, ReplyRules, RoutingStatus};
pub use server::{RouteTable, Router, RoutingServer};
pub use socket::{OutboundSocket, SocketError};
pub use step::StepReport;
