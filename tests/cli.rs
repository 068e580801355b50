//! The `switchhook` binary, run as a process.

mod common;

use std::io::Write;
use std::process::Command;

use common::fixture;

fn switchhook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchhook"))
}

/// A temporary `.toml` file holding `text`.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn replay_prints_one_json_object_per_event() {
    let out = switchhook()
        .args(["replay", "--emit", "events"])
        .arg(fixture("freeswitch-1.10/01-inbound-answered.esl"))
        .arg(fixture("freeswitch-1.10/01-inbound-answered.json.esl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 166);
    // The plain and json halves decode to the same values.
    assert_eq!(lines[0]["Event-Name"], "CHANNEL_STATE");
    assert_eq!(
        lines[0]["Channel-Name"],
        "sofia/external/+447700900123@127.0.0.1"
    );
    assert_eq!(lines[0], lines[83]);
    assert!(out.stderr.is_empty());
}

#[test]
fn replay_reports_bad_frames_with_offsets_and_keeps_going() {
    let out = switchhook()
        .arg("replay")
        .arg(fixture("public/fsock-test-data.esl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 44);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fsock-test-data.esl: at byte 91756: text/event-plain frame has no body"),
        "{err}"
    );
}

#[test]
fn replay_of_a_missing_file_fails_clearly() {
    let out = switchhook()
        .args(["replay", "/nonexistent/capture.esl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.esl"));
}

#[test]
fn check_config_lists_every_error_with_its_key_path() {
    let f = config_file("[freeswitch]\nport = 0\nformat = \"yaml\"\nevents = [\"channel create\"]\n[log]\nlevel = \"info\"");
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("freeswitch.format:"), "{err}");
    let good = config_file("[freeswitch]\nport = 0\nevents = [\"channel create\"]");
    let out = switchhook()
        .arg("check-config")
        .arg(good.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("freeswitch.port: must be 1-65535"), "{err}");
    assert!(err.contains("freeswitch.events[0]:"), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let f = config_file("[freeswitch]\nport = 8021");
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .env("SWITCHHOOK__FREESWITCH__PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("freeswitch.port"));
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .env(
            "SWITCHHOOK__FREESWITCH__EVENTS",
            "CHANNEL_CREATE,CHANNEL_ANSWER",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_connects_to_a_live_socket_and_logs_events() {
    use std::process::Stdio;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(switchhook::playback::PlaybackServer::start(
            "127.0.0.1:0",
            switchhook::playback::PlaybackConfig {
                password: "s3cret-run".into(),
                captures: vec![fixture("freeswitch-1.10/03-abandoned-short.esl")],
                pace: switchhook::playback::Pace::Fast,
                faults: Default::default(),
            },
        ))
        .unwrap();
    let f = config_file(&format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[log]\nformat = \"json\"",
        server.addr().port()
    ));
    let mut child = switchhook()
        .args(["run", "--config"])
        .arg(f.path())
        .env("SWITCHHOOK__FREESWITCH__PASSWORD", "s3cret-run")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.position() < server.total_events() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let events = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"event\""))
        .count();
    assert_eq!(events, 69, "{logs}");
    assert!(!logs.contains("s3cret-run"));
}
