//! Routing control: the dial-plan routing step (a digit menu, an HTTP lookup, success and failure branches), answered over FreeSWITCH's
//! outbound socket.
//!
//! Data flows: [`server`] accepts FreeSWITCH's `socket` connection → [`socket`] speaks the
//! outbound protocol → [`step`] runs the step (menu, ask, hand back) → [`lookup`] asks the
//! routing server under a deadline, [`breaker`] and a last-known-good cache → [`reply`] judges
//! what it answered, so every value is validated before it reaches a channel variable.

pub(crate) mod breaker;
pub(crate) mod config;
pub(crate) mod lookup;
pub(crate) mod reply;
pub(crate) mod server;
pub(crate) mod socket;
pub(crate) mod step;

pub use config::{CallerIdForwarding, CallerNameMode, RouteConfig, RoutingConfig};
pub use reply::{judge, Decision, ReplyRules, RoutingStatus};
pub use server::{RouteTable, Router, RoutingServer};
pub use socket::SocketError;
pub use step::StepReport;
