//! Relays: what the pipeline hands to a system beyond the machine (the PostgreSQL call store,
//! NATS JetStream) goes first to a queue in the local outbox, then, in order and in batches,
//! to its destination, and leaves the queue only once the destination has it. Event
//! processing never waits for the destination; while it is down, items wait on disk.

mod drain;
mod queue;

pub(crate) use drain::{Drain, DrainStats, Sink};
pub use queue::Queue;
pub(crate) use queue::Table;

/// Shuts a relay down: commits what was handed to `queue`, then lets `drain` write what its
/// destination takes within `limit`; the rest stays queued for the next start.
pub(crate) async fn close<T: Send + 'static>(
    mut queue: Queue<T>,
    drain: Drain,
    limit: std::time::Duration,
) {
    tokio::task::spawn_blocking(move || queue.close())
        .await
        .ok();
    drain.finish(limit).await;
}
