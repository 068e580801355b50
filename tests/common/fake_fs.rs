//! The test kit's outbound-socket FreeSWITCH, on the bundled routing captures.

pub use switchhook::fake_freeswitch::{Conversation, FakeOptions, Transcript};

/// A routing step's conversation from the bundled captures (see
/// [`Conversation::for_step`]).
pub fn conversation(names: &[&str]) -> Conversation {
    Conversation::for_step(&super::fixture("freeswitch-1.10"), names).expect("the routing captures")
}

/// Places one call (see [`switchhook::fake_freeswitch::call`]).
pub async fn call(
    addr: std::net::SocketAddr,
    conv: &Conversation,
    opts: FakeOptions,
) -> Transcript {
    switchhook::fake_freeswitch::call(addr, conv, opts)
        .await
        .expect("the routing server accepts the call")
}
