//! Requests from a real `switchhook run` verified by the official Standard Webhooks library
//! (PyPI `standardwebhooks`, which `.ci/run` installs), as a receiver built on it would: JSON
//! and form bodies by POST, JSON by PUT, GET (the query string is the signed payload), and a
//! webhook signing with two secrets while one replaces the other (each verifies alone).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::receiver::{Receiver, Reply};
use serde_json::{json, Value};

/// 33 bytes, with the prefix.
const NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqr";
/// 25 bytes, without the prefix and without its padding (the libraries take both).
const OLD: &str = "c3dpdGNoaG9vay1vbGQtc2VjcmV0LTI0Yg";

#[test]
fn the_official_library_verifies_every_method_format_and_secret() {
    let python_has_it = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        python_has_it,
        "the Python package standardwebhooks is missing: python3 -m pip install standardwebhooks (.ci/run installs it)"
    );
    let rt = common::runtime();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(204)).await;
        let server = common::playback("freeswitch-1.10/01-inbound-answered.esl", "stdwh").await;
        let dir = tempfile::tempdir().unwrap();
        // (name, extra keys, the secrets a receiver may hold)
        let hooks: [(&str, String, Vec<&str>); 5] = [
            ("json_post", format!("secret = \"{NEW}\""), vec![NEW]),
            ("form_post", format!("format = \"form\"\nsecret = \"{OLD}\""), vec![OLD]),
            ("json_put", format!("method = \"PUT\"\nsecret = \"{NEW}\""), vec![NEW]),
            ("get", format!("method = \"GET\"\nsecret = \"{NEW}\""), vec![NEW]),
            ("rotating", format!("secret = [\"{NEW}\", \"{OLD}\"]"), vec![NEW, OLD]),
        ];
        let mut text = format!(
            "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[store]\npath = {:?}\n[egress]\nallow = [\"127.0.0.1\"]\n",
            server.addr().port(),
            dir.path().join("outbox.db").display().to_string()
        );
        for (name, extra, _) in &hooks {
            text += &format!(
                "[[webhooks]]\nname = \"{name}\"\ntriggers = [\"call.received\", \"call.hangup\"]\nurl = \"{}/{name}?tag=x\"\n{extra}\n",
                receiver.base()
            );
        }
        let cfg = dir.path().join("switchhook.toml");
        std::fs::write(&cfg, &text).unwrap();
        let mut run = common::run_command(&cfg, "stdwh")
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(common::ChildGuard)
            .unwrap();
        // Two moments for each webhook.
        let all = receiver
            .wait_for(Duration::from_secs(60), |seen| seen.len() >= 2 * hooks.len())
            .await;
        run.kill().unwrap();
        assert!(all, "{} requests arrived", receiver.seen().len());

        let secrets: HashMap<&str, &Vec<&str>> =
            hooks.iter().map(|(n, _, s)| (*n, s)).collect();
        let mut cases = Vec::new();
        for r in receiver.seen() {
            let name = r.uri.trim_start_matches('/').split('?').next().unwrap().to_owned();
            assert_eq!(r.headers["webhook-signature"].split(' ').count(), secrets[name.as_str()].len());
            for secret in secrets[name.as_str()] {
                cases.push(json!({
                    "secret": secret,
                    "method": r.method,
                    "uri": r.uri,
                    "headers": r.headers,
                    "body": r.body,
                }));
            }
        }
        let methods: std::collections::BTreeSet<&str> =
            cases.iter().map(|c| c["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["GET", "POST", "PUT"].into_iter().collect());
        let file = dir.path().join("requests.json");
        std::fs::write(&file, Value::Array(cases.clone()).to_string()).unwrap();
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standard_webhooks/verify.py"))
            .arg(&file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(&format!("{n} of {n} verified", n = cases.len())), "{said}");
    });
}

/// Where `.ci/run` installs the npm package `standardwebhooks` for the Node example.
fn node_modules() -> std::path::PathBuf {
    match std::env::var_os("SWITCHHOOK_NODE_MODULES") {
        Some(p) => p.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/switchhook-node/node_modules"),
    }
}

/// The example receiver in `docs/examples/` (`receiver.py` or `receiver.js`) gets real
/// webhooks from `run`, verifies them, and acts on each once: a resend of the same webhooks
/// (`deliveries resend`) is recognised by its `webhook-id`.
fn example_receiver_acts_once_per_webhook_id(program: &str, script: &str) {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_addr().port();
    let mut receiver = std::process::Command::new(program)
        .arg(format!("{examples}{script}"))
        .arg(port.to_string())
        .env("WEBHOOK_SECRET", NEW)
        .env("SEEN_DB", dir.path().join("seen.db"))
        .env("NODE_PATH", node_modules())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let mut said = common::LogTail::stdout(&mut receiver);
    let rt = common::runtime();
    rt.block_on(async {
        let server = common::playback("freeswitch-1.10/01-inbound-answered.esl", "example").await;
        let text = format!(
            "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[store]\npath = {:?}\n[egress]\nallow = [\"127.0.0.1\"]\n\
             [[webhooks]]\nname = \"json\"\ntriggers = [\"call.received\", \"call.hangup\"]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{NEW}\"\nretries = 10\n\
             [[webhooks]]\nname = \"get\"\nmethod = \"GET\"\ntriggers = [\"call.hangup\"]\nurl = \"http://127.0.0.1:{port}/hook?x=1\"\nsecret = \"{NEW}\"\nretries = 10\n",
            server.addr().port(),
            dir.path().join("outbox.db").display().to_string()
        );
        let cfg = dir.path().join("switchhook.toml");
        std::fs::write(&cfg, &text).unwrap();
        let mut run = common::run_command(&cfg, "example")
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(common::ChildGuard)
            .unwrap();
        let count = |said: &common::LogTail, new: bool| {
            said.lines
                .iter()
                .filter(|l| l.contains(&format!("\"new\": {new}")) || l.contains(&format!("\"new\":{new}")))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while count(&said, true) < 3 && std::time::Instant::now() < deadline {
            said.wait_for("webhook_id", Duration::from_millis(200));
        }
        assert_eq!(count(&said, true), 3, "{}", said.text());
        // The same three again, as a receiver that lost them would ask.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
            .args(["deliveries", "resend", "--since", "1h", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while count(&said, false) < 3 && std::time::Instant::now() < deadline {
            said.wait_for("webhook_id", Duration::from_millis(200));
        }
        run.kill().unwrap();
        assert_eq!(count(&said, false), 3, "{}", said.text());
        assert_eq!(count(&said, true), 3, "acted on once each: {}", said.text());
        assert!(!said.text().contains("rejected"), "{}", said.text());
    });
}

#[test]
fn the_python_example_receiver_verifies_and_acts_once_per_webhook_id() {
    example_receiver_acts_once_per_webhook_id("python3", "receiver.py");
}

#[test]
fn the_node_example_receiver_verifies_and_acts_once_per_webhook_id() {
    assert!(
        node_modules().join("standardwebhooks").exists(),
        "the npm package standardwebhooks is missing under {} (.ci/run installs it)",
        node_modules().display()
    );
    example_receiver_acts_once_per_webhook_id("node", "receiver.js");
}
