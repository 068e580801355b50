//! The bus: every lifecycle moment and every finished call's CDR published to NATS
//! JetStream, for consumers beyond this process (other services, a fleet's workers).
//!
//! Publishing is a transactional outbox: a message is queued in the local outbox (SQLite)
//! the moment it happens and leaves it once JetStream has acknowledged it, so a NATS outage
//! loses nothing and the backlog goes out in order when NATS answers again. Each message
//! carries a deterministic id as `Nats-Msg-Id` (the call and the trigger, or the call for a
//! CDR): a message published twice (a kill between the acknowledgement and the dequeue, two
//! switchhooks on one FreeSWITCH, a replay after a restart) is stored once by the stream
//! within its duplicate window.

mod config;
mod dead_letters;
mod fleet_view;
mod jetstream;
mod message;
mod publisher;
mod webhook_state;
mod worker;

pub use config::{NatsConfig, WebhookDelivery, WorkerConfig};
pub use dead_letters::DeadFilter;
pub use fleet_view::FleetView;
pub use message::{cdr_id, moment_id, DeadLetterNotice};
pub use publisher::Publisher;
pub use webhook_state::{DisabledWebhook, FailingWebhook};
pub use worker::{Hooks, Worker, WorkerStats};
