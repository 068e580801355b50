//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_fs;
pub mod receiver;

use std::path::PathBuf;

/// The path of a capture under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The FreeSWITCH 1.10 scenario captures and their event-frame counts, from
/// `fixtures/README.md` (the same numbers for the plain and json files).
pub const SCENARIOS: &[(&str, usize)] = &[
    ("00-api-session", 4),
    ("01-inbound-answered", 83),
    ("02-inbound-missed", 67),
    ("03-abandoned-short", 69),
    ("04-hold-unhold", 96),
    ("04b-hold-uuid_hold", 92),
    ("05-valet-park", 158),
    ("06-ringgroup-simultaneous", 113),
    ("07-ringgroup-sequential", 96),
    ("08-queue-answered", 94),
    ("08b-queue-abandoned", 70),
    ("09-ivr-dtmf-transfer", 97),
    ("10-voicemail", 103),
    ("11-outbound-carrier", 67),
    ("12-click-to-call", 73),
    ("13-blind-transfer-refer", 139),
    ("13b-blind-transfer-uuid_transfer", 141),
    ("14-attended-transfer-refer-replaces", 181),
    ("15-recorded-call", 86),
    ("16-concurrent-mix", 419),
    ("17-outbound-socket", 93),
    ("18-rejected-busy-voicemail", 98),
    ("19-routing-crm-ack", 104),
    ("20-routing-pin-digits", 126),
    ("21-routing-pin-timeout", 120),
    ("22-routing-caller-hangup", 40),
    ("23-routing-api-linger", 108),
];
