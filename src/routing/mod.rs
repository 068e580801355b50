//! Routing control: the dial-plan routing step of seeds 003/004, answered over FreeSWITCH's
//! outbound socket.
//!
//! [`reply`] reads what the routing server answered and validates every value before it can
//! reach a channel variable or a FreeSWITCH command. (The outbound-socket server, the digit
//! menu and the resilience pieces build on it.)

pub mod config;
pub mod reply;

pub use config::{RouteConfig, RoutingConfig};
pub use reply::{Decision, ReplyRules, RoutingStatus};
