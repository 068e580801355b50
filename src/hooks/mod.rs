//! Lifecycle webhooks: from a call's moments to HTTP requests that are never lost.
//!
//! The pieces are separate and testable on their own, in the order data flows:
//! [`webhook`] compiles `[[webhooks]]` (triggers, filters, templates) and turns a
//! [`crate::session::Moment`] into [`request::Request`]s; [`store`] is the durable outbox
//! (SQLite, committed before any attempt); [`delivery`] sends what the outbox holds, per call
//! in order and in parallel across calls and endpoints; [`retry`] judges each attempt;
//! [`sign`] adds the Standard Webhooks signature; [`egress`] keeps requests away from
//! loopback and private networks unless allowed.

pub(crate) mod delivery;
pub(crate) mod egress;
pub(crate) mod filter;
pub(crate) mod moment_data;
pub(crate) mod request;
pub(crate) mod retry;
pub(crate) mod sign;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod webhook;

pub use delivery::{DeliveryOptions, DeliveryQueue};
pub use request::Request;
pub use retry::Schedule;
pub use sign::Signer;
pub use store::{
    Admin, DeadCursor, DeadLetter, DeliveryRef, ListFilter, Outbox, Rerendered, Row, State,
    StoreError,
};
pub use webhook::{WebhookConfig, WebhookSet};
