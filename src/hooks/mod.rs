//! Lifecycle webhooks: from a call's moments to HTTP requests that are never lost.
//!
//! The pieces are separate and testable on their own, in the order data flows:
//! [`webhook`] compiles `[[webhooks]]` (triggers, filters, templates) and turns a
//! [`crate::session::Moment`] into [`request::Request`]s; [`store`] is the durable outbox
//! (SQLite, committed before any attempt); [`delivery`] sends what the outbox holds, per call
//! in order and in parallel across calls and endpoints; [`retry`] judges each attempt;
//! [`sign`] adds the Standard Webhooks signature; [`egress`] keeps requests away from
//! loopback and private networks unless allowed.

pub mod delivery;
pub mod egress;
pub mod filter;
pub mod request;
pub mod retry;
pub mod sign;
pub mod stats;
pub mod store;
pub mod webhook;

pub use delivery::DeliveryQueue;
pub use request::Request;
pub use store::Outbox;
pub use webhook::{WebhookConfig, WebhookSet};
