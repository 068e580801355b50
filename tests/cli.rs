//! The `switchhook` binary, run as a process.

mod common;

use std::io::Write;
use std::process::Command;
use std::str::FromStr;

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

/// What a shell command shows on a terminal (a pseudo-terminal made by util-linux's
/// `script`, its screen kept in `typescript`); it must succeed.
fn on_a_terminal(command: &str, typescript: &std::path::Path) -> String {
    let status = Command::new("script")
        .args(["-qec", command])
        .arg(typescript)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("util-linux script runs");
    assert!(status.success(), "{command}");
    String::from_utf8_lossy(&std::fs::read(typescript).unwrap()).into_owned()
}

/// Fails with the command's stderr unless it succeeded.
fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replay_prints_one_json_object_per_event() {
    let out = switchhook()
        .args(["replay", "--emit", "events"])
        .arg(fixture("freeswitch-1.10/01-inbound-answered.esl"))
        .arg(fixture("freeswitch-1.10/01-inbound-answered.json.esl"))
        .output()
        .unwrap();
    assert_ok(&out);
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
    assert_eq!(out.status.code(), Some(78));
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
fn webhooks_that_would_reach_loopback_or_take_their_host_from_call_data_are_refused() {
    let check = |text: &str| {
        let f = config_file(text);
        let out = switchhook()
            .arg("check-config")
            .arg(f.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let hook = |url: &str| {
        format!("[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.hangup\"]\nurl = \"{url}\"\n")
    };
    let (code, err) = check(&hook("http://{ddiName}/x"));
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("webhooks[0].url") && err.contains("placeholders"),
        "{err}"
    );
    for (url, kind) in [
        ("http://127.0.0.1:9464/metrics", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.1.2.3/crm", "private"),
    ] {
        let (code, err) = check(&hook(url));
        assert_eq!(code, Some(78), "{url}: {err}");
        assert!(
            err.contains("webhooks[0].url") && err.contains(kind),
            "{url}: {err}"
        );
    }
    let (code, err) = check(&format!(
        "[egress]\nallow = [\"10.0.0.0/8\"]\n{}",
        hook("http://10.1.2.3/crm")
    ));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check("[egress]\nallow = [\"10.0.0.0/33\"]\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("egress.allow[0]"), "{err}");
    // A misspelt key in [admin] is named by check-config, as `run` refuses it.
    let (code, err) = check("[admin]\npasword_env = \"X\"\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("admin") && err.contains("pasword_env"),
        "{err}"
    );
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
    assert_eq!(out.status.code(), Some(78));
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
    assert_ok(&out);
}

#[test]
fn run_assembles_calls_from_a_live_socket_and_logs_their_cdrs() {
    use std::process::Stdio;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::playback(
        "freeswitch-1.10/03-abandoned-short.esl",
        "s3cret-run",
    ));
    let dir = tempfile::tempdir().unwrap();
    let f = config_file(&format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[log]\nformat = \"json\"\n[store]\npath = {:?}",
        server.addr().port(),
        dir.path().join("outbox.db").display().to_string()
    ));
    let mut child = common::run_command(f.path(), "s3cret-run")
        .stderr(Stdio::piped())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    // Read the log as it comes until the call's record appears (or 60 s pass).
    let mut log = common::LogTail::follow(&mut child);
    log.wait_for("call finished", std::time::Duration::from_secs(60));
    child.kill().unwrap();
    let _ = child.wait();
    let logs = log.finish(std::time::Duration::from_secs(10));
    let finished: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "call finished")
        .collect();
    assert_eq!(finished.len(), 1, "{logs}");
    // The CDR is an object in the line, not a string to decode again.
    let cdr = &finished[0]["cdr"];
    assert!(cdr.is_object(), "{logs}");
    assert_eq!(cdr["cliNum"], "+447700900789");
    assert_eq!(cdr["lost"], 1);
    assert_eq!(cdr["aban"], 1);
    assert!(!logs.contains("s3cret-run"));
}

#[test]
fn replay_emit_cdr_prints_one_cdr_per_call_in_end_order() {
    let out = switchhook()
        .args(["replay", "--emit", "cdr"])
        .arg(fixture("freeswitch-1.10/16-concurrent-mix.esl"))
        .output()
        .unwrap();
    assert_ok(&out);
    let cdrs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cdrs.len(), 5);
    let ends: Vec<&str> = cdrs.iter().map(|c| c["end"].as_str().unwrap()).collect();
    let mut sorted = ends.clone();
    sorted.sort();
    assert_eq!(ends, sorted, "end order");
    assert!(cdrs.iter().all(|c| c["dType"] == "CloudSessionCdr"));
}

#[test]
fn a_mapping_change_shows_in_replay_and_explain_names_the_header() {
    // Point user names at the caller-id name FreeSWITCH offers the phone instead.
    let f = config_file(
        "[mapping]\nuser_name = [\"Caller-Callee-ID-Name\"]\n[sessions]\ntime_zone = \"Europe/London\"\n",
    );
    let capture = fixture("freeswitch-1.10/01-inbound-answered.esl");
    let out = switchhook()
        .args(["replay", "--emit", "cdr", "--config"])
        .arg(f.path())
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&out);
    let cdr: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cdr["ansUsrName"], "1001");
    assert_eq!(cdr["tz"], "Europe/London");
    let id = cdr["id"].as_str().unwrap();

    let out = switchhook()
        .args(["explain", &id[..8], "--config"])
        .arg(f.path())
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timeline"), "{text}");
    assert!(text.contains("ring"), "{text}");
    assert!(
        text.contains("Caller-Callee-ID-Name = \"1001\" (mapping.user_name)"),
        "{text}"
    );
    assert!(text.contains("ddiNum = \"+441610001001\""), "{text}");
    assert!(text.contains("variable_inbound_did"), "{text}");

    // The same timeline as a picture: one bar segment per timeline line, in its colours.
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("call.svg");
    let out = switchhook()
        .args(["explain", &id[..8], "--svg"])
        .arg(&svg_path)
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&out);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    let kinds: Vec<&str> = svg
        .split("class=\"seg\" data-kind=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    let timeline: Vec<&str> = cdr["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, timeline);
    assert!(svg.contains(id));
    let out = switchhook()
        .args(["explain", &id[..8], "--svg", "/nonexistent/dir/x.svg"])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/x.svg"));

    let out = switchhook()
        .args(["explain", "nope"])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn check_config_reports_bad_session_keys_by_path() {
    let f = config_file(
        "[sessions]\ntime_zone = \"Mars/Olympus\"\n[numbers]\ndefault_region = \"XX\"\n[mapping]\nuser_name = [\"no spaces\"]\n",
    );
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("sessions.time_zone"), "{err}");
    assert!(err.contains("numbers.default_region"), "{err}");
    assert!(err.contains("mapping.user_name[0]"), "{err}");
}

#[test]
fn the_readme_configuration_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a toml block") + 8;
    let end = start + readme[start..].find("```").unwrap();
    let f = config_file(&readme[start..end]);
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn replay_emit_webhooks_prints_the_requests_that_would_be_sent() {
    let f = config_file(
        "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.hangup\", \"call.answered.extension\"]\n\
         url = \"https://crm.example/hook/{ddiNum}?cli={cli}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         headers = { \"X-Api-Key\" = \"k\" }\ncustom_data = { hook = \"post call\" }\n",
    );
    let out = switchhook()
        .args(["replay", "--emit", "webhooks", "--config"])
        .arg(f.path())
        .arg(fixture("freeswitch-1.10/01-inbound-answered.esl"))
        .output()
        .unwrap();
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let triggers: Vec<&str> = lines
        .iter()
        .map(|l| l["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, vec!["call.answered.extension", "call.hangup"]);
    for l in &lines {
        for key in [
            "webhook", "trigger", "call_id", "method", "url", "headers", "body",
        ] {
            assert!(!l[key].is_null(), "{key} missing in {l}");
        }
        assert_eq!(l["method"], "POST");
        assert!(l["url"]
            .as_str()
            .unwrap()
            .starts_with("https://crm.example/hook/%2B441610001001?cli=%2B447700900123"));
        assert!(l["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,"));
        assert_eq!(l["headers"]["X-Api-Key"], "k");
        let body: serde_json::Value = serde_json::from_str(l["body"].as_str().unwrap()).unwrap();
        for key in [
            "triggerId",
            "id",
            "tenantId",
            "cdr",
            "customData",
            "trigger",
            "sequence",
        ] {
            assert!(!body[key].is_null(), "{key} missing in the body");
        }
        assert_eq!(body["customData"]["hook"], "post call");
        assert_eq!(body["cdr"]["dType"], "CloudSessionCdr");
    }
    // Without a configuration: an example webhook on every trigger, said so on stderr.
    let out = switchhook()
        .args(["replay", "--emit", "webhooks"])
        .arg(fixture("freeswitch-1.10/09-ivr-dtmf-transfer.esl"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[webhooks]] configured"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);
}

#[test]
fn deliveries_commands_work_on_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    // Commit the requests replay computes, as `run` would, without sending them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let settings = std::sync::Arc::new(switchhook::session::Settings::default());
        let hooks = switchhook::hooks::WebhookSet::example();
        let mut reqs = Vec::new();
        switchhook::replay::moments(
            &fixture("freeswitch-1.10/02-inbound-missed.esl"),
            settings,
            &switchhook::replay::Progress::hidden(),
            |m| reqs.extend(hooks.plan(&m).into_iter().map(|r| (r, false))),
        )
        .await
        .unwrap();
        let outbox = switchhook::hooks::Outbox::open(&db).unwrap();
        assert_eq!(outbox.enqueue(reqs).await.unwrap().len(), 5);
    });
    let run = |args: &[&str]| {
        let out = switchhook()
            .arg("deliveries")
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["status"]).trim(), "pending: 5");
    // Resending a window: the rows as a delivery engine leaves them once delivered (set
    // directly here: nothing is sent in this test), then sent again from the command line.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE deliveries SET state = 'delivered', done_ms = created_ms",
            [],
        )
        .unwrap();
    assert_eq!(run(&["status"]).trim(), "delivered: 5");
    assert_eq!(
        run(&["resend", "--since", "1h"]).trim(),
        "5 delivery(ies) queued again, in order"
    );
    assert_eq!(run(&["status"]).trim(), "pending: 5");
    let later = switchhook()
        .args(["deliveries", "--db"])
        .arg(&db)
        .args(["resend", "--since", "2030-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(later.status.code(), Some(1), "nothing delivered then");
    let bad = switchhook()
        .args(["deliveries", "--db"])
        .arg(&db)
        .args(["resend", "--since", "yesterday-ish"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let list = run(&["list", "--state", "pending", "--limit", "2"]);
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["trigger"], "call.hangup", "newest first");
    // Piped: NDJSON, with ISO 8601 instants beside the epoch milliseconds.
    let created = rows[0]["created"].as_str().unwrap();
    assert!(jiff::Timestamp::from_str(created).is_ok(), "{created}");
    assert_eq!(
        jiff::Timestamp::from_str(created).unwrap().as_millisecond(),
        rows[0]["created_ms"].as_i64().unwrap()
    );
    assert!(rows[0]["next"].as_str().unwrap().ends_with('Z'));
    // On a terminal (a pseudo-terminal made by util-linux's `script`): a table.
    let command = format!(
        "{} deliveries --db {} list",
        env!("CARGO_BIN_EXE_switchhook"),
        db.display()
    );
    let screen = on_a_terminal(&command, &dir.path().join("typescript"));
    assert!(screen.contains("created (UTC)"), "{screen}");
    assert!(screen.contains("call.missed_or_answered"), "{screen}");
    assert!(!screen.contains("{\""), "no JSON on a terminal: {screen}");
    let show: serde_json::Value = serde_json::from_str(&run(&["show", "1"])).unwrap();
    assert_eq!(show["trigger"], "call.received");
    assert_eq!(show["request"]["method"], "POST");
    // The webhook-id the logs and the receiver see names the same delivery.
    let msg_id = show["id"].as_str().unwrap().to_owned();
    assert!(msg_id.starts_with("msg_"), "{msg_id}");
    assert_eq!(run(&["show", &msg_id]), run(&["show", "1"]));
    // Options go before or after the action.
    let after = switchhook()
        .args(["deliveries", "status", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_ok(&after);
    assert_eq!(String::from_utf8_lossy(&after.stdout).trim(), "pending: 5");
    // Naming what is not there fails, and says what was not found.
    for (args, says) in [
        (vec!["show", "999"], "no delivery 999"),
        (vec!["show", "msg_nosuch"], "no delivery msg_nosuch"),
        (vec!["retry", "999"], "no delivery 999"),
        (vec!["retry", "1"], "not already pending"),
        (vec!["enable", "nosuch"], "no webhook \"nosuch\""),
    ] {
        let out = switchhook()
            .arg("deliveries")
            .arg("--db")
            .arg(&db)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let bad_id = switchhook()
        .args(["deliveries", "show", "abc", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(bad_id.status.code(), Some(2), "a usage error");
    assert!(run(&["purge", "--dead"]).contains("0 delivery(ies) deleted"));
    assert!(run(&["retry"]).contains("0 delivery(ies) queued again"));
    // A backup is a whole outbox: its own status is the original's; it never overwrites.
    let copy = dir.path().join("backup.db");
    let copy_arg = copy.to_str().unwrap();
    assert!(run(&["backup", copy_arg]).contains("backed up"));
    let status = |db: &std::path::Path| {
        let out = switchhook()
            .args(["deliveries", "--db"])
            .arg(db)
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(status(&copy), status(&db));
    let again = switchhook()
        .args(["deliveries", "--db"])
        .arg(&db)
        .args(["backup", copy_arg])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = switchhook()
        .arg("deliveries")
        .arg("--db")
        .arg(&db)
        .args(["list", "--state", "lost"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let missing = switchhook()
        .args(["deliveries", "--db", "/nonexistent/outbox.db", "status"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    // The fleet's state lives in NATS: without a [nats] section there is none to show.
    let no_nats = dir.path().join("single.toml");
    std::fs::write(&no_nats, "").unwrap();
    let fleet = switchhook()
        .args(["deliveries", "fleet", "--config"])
        .arg(&no_nats)
        .output()
        .unwrap();
    assert_eq!(fleet.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&fleet.stderr).contains("no [nats] servers"));
}

#[test]
fn the_routing_contract_configuration_loads_and_mistakes_are_named() {
    let contract = r#"
[routing]
listen = "127.0.0.1:8084"
[[routes]]
name = "crm-lookup"
url = "https://crm.example/route?code={code}&did={did}&callerid={callerid}&callername={callername}"
method = "GET"
caller_id_forwarding = "caller"
caller_name = "webhook"
caller_name_text = ""
deadline = "2s"
on_success = ""
on_failure = ""
[routes.menu]
enabled = false
timeout = "5s"
attempts = 3
start_message = "ivr/ivr-please_enter_extension_followed_by_pound.wav"
error_message = "ivr/ivr-that_was_an_invalid_entry.wav"
timeout_message = "ivr/ivr-no_valid_entry.wav"
"#;
    let f = config_file(contract);
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    assert_ok(&out);
    let f = config_file(
        &contract
            .replace(
                "caller_id_forwarding = \"caller\"",
                "caller_id_forwarding = \"both\"",
            )
            .replace("deadline = \"2s\"", "deadline = \"5m\""),
    );
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(err.contains("routes[0].caller_id_forwarding"), "{err}");
}

#[test]
fn a_webhook_secret_comes_from_the_environment_and_its_mistakes_are_named() {
    let hook = |secret_lines: &str| {
        config_file(&format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.hangup\"]\nurl = \"https://crm.example/hook\"\n{secret_lines}\n"
        ))
    };
    let secret = "whsec_c3dpdGNoaG9vay1lbnYtc2VjcmV0LXZhbHVl";
    let check = |f: &tempfile::NamedTempFile, value: Option<&str>| {
        let mut cmd = switchhook();
        cmd.arg("check-config").arg(f.path());
        match value {
            Some(v) => cmd.env("CRM_HOOK_SECRET", v),
            None => cmd.env_remove("CRM_HOOK_SECRET"),
        };
        cmd.output().unwrap()
    };
    let from_env = hook("secret_env = \"CRM_HOOK_SECRET\"");
    assert_ok(&check(&from_env, Some(secret)));
    // A header's value from the environment: the same three mistakes, named by key path.
    let header = hook("headers_env = { \"Authorization\" = \"CRM_HOOK_SECRET\" }");
    assert_ok(&check(&header, Some("Bearer abc")));
    let twice = hook(
        "headers = { \"authorization\" = \"x\" }\nheaders_env = { \"Authorization\" = \"CRM_HOOK_SECRET\" }",
    );
    for (f, value, want) in [
        (&header, None, "\"CRM_HOOK_SECRET\" is not set"),
        (&header, Some("Bearer\u{7}bell"), "not a valid header value"),
        (
            &twice,
            Some("Bearer abc"),
            "Authorization is in headers too",
        ),
    ] {
        let out = check(f, value);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(
            err.contains("webhooks[0].headers_env.Authorization"),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("bell") && !err.contains("abc"), "{err}");
    }
    for (f, value, want) in [
        (&from_env, None, "\"CRM_HOOK_SECRET\" is not set"),
        (&from_env, Some("  "), "\"CRM_HOOK_SECRET\" is empty"),
        (
            &hook(&format!(
                "secret = \"{secret}\"\nsecret_env = \"CRM_HOOK_SECRET\""
            )),
            Some(secret),
            "set secret or secret_env, not both",
        ),
    ] {
        let out = check(f, value);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains("webhooks[0].secret_env"), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains(secret), "{err}");
    }
}

/// `switchhook demo --speed 20 [extra]` with its temporary files under `tmp`.
fn demo(tmp: &tempfile::TempDir, extra: &[&str]) -> std::process::Output {
    let out = switchhook()
        .args(["demo", "--speed", "20"])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_ok(&out);
    out
}

#[test]
fn demo_streams_the_bundled_capture_and_prints_its_webhooks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(&tmp, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hangups = stdout
        .lines()
        .filter(|l| l.contains("webhook  call.hangup"))
        .count();
    assert_eq!(hangups, 5, "{stdout}");
    for t in [
        "call.answered.queue",
        "call.answered.ring_group",
        "call.answered.extension",
        "call.missed ",
    ] {
        assert!(stdout.contains(t), "{t} missing:\n{stdout}");
    }
    assert!(stdout.contains("5 of 5 calls delivered their hangup webhook"));
    // Its temporary outbox is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

#[test]
fn demo_keep_leaves_an_outbox_that_deliveries_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(&tmp, &["--keep"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let db = stdout
        .lines()
        .find_map(|l| l.strip_prefix("The outbox is kept: switchhook deliveries --db "))
        .and_then(|l| l.strip_suffix(" status"))
        .unwrap_or_else(|| panic!("no kept outbox in:\n{stdout}"));
    assert!(std::path::Path::new(db).starts_with(tmp.path()), "{db}");
    let status = switchhook()
        .args(["deliveries", "--db", db, "status"])
        .output()
        .unwrap();
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout);
    let counts: Vec<(&str, u64)> = text
        .lines()
        .map(|l| {
            let (state, n) = l.split_once(": ").unwrap();
            (state, n.parse().unwrap())
        })
        .collect();
    // Every request was delivered, at least one per call (the five hangups).
    assert_eq!(counts.len(), 1, "{text}");
    assert_eq!(counts[0].0, "delivered", "{text}");
    assert!(counts[0].1 >= 5, "{text}");
}

/// What an admin-endpoint test runs `switchhook run` with: capture 03 played back, the outbox
/// in a temporary directory, the admin endpoint on a free port.
struct AdminRig {
    _server: switchhook::fake_freeswitch::PlaybackServer,
    _dir: tempfile::TempDir,
    admin: std::net::SocketAddr,
    config: tempfile::NamedTempFile,
}

const ADMIN_RIG_ESL_PASSWORD: &str = "s3cret-admin";

/// An [`AdminRig`] with `admin_extra` lines added to `[admin]`.
fn admin_rig(rt: &tokio::runtime::Runtime, admin_extra: &str) -> AdminRig {
    let server = rt.block_on(common::playback(
        "freeswitch-1.10/03-abandoned-short.esl",
        ADMIN_RIG_ESL_PASSWORD,
    ));
    let admin = common::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[store]\npath = {:?}\n[admin]\nlisten = \"{admin}\"\n{admin_extra}",
        server.addr().port(),
        dir.path().join("outbox.db").display().to_string()
    ));
    AdminRig {
        _server: server,
        _dir: dir,
        admin,
        config,
    }
}

#[test]
fn run_serves_metrics_health_and_readiness() {
    use std::process::Stdio;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = admin_rig(&rt, "");
    let (admin, f) = (rig.admin, &rig.config);
    let mut child = common::run_command(f.path(), ADMIN_RIG_ESL_PASSWORD)
        .stderr(Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let get = |path: &str| {
        let url = format!("http://{admin}{path}");
        rt.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(_) => None,
            }
        })
    };
    // Wait until the call has been assembled (the capture plays at once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut metrics = String::new();
    while std::time::Instant::now() < deadline {
        if let Some((200, text)) = get("/metrics") {
            metrics = text;
            if metrics.contains("switchhook_cdrs_total 1") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let health = get("/healthz");
    let ready = get("/readyz");
    // Prometheus asks for OpenMetrics and gets it.
    let openmetrics = rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("http://{admin}/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        (ct, r.text().await.unwrap())
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        openmetrics.0.starts_with("application/openmetrics-text"),
        "{}",
        openmetrics.0
    );
    assert!(openmetrics.1.ends_with("# EOF\n"));
    assert!(openmetrics
        .1
        .contains("# TYPE switchhook_esl_frames counter"));
    // Anything else gets the classic text format, which promtool checks cleanly.
    assert!(metrics.contains("switchhook_cdrs_total 1"), "{metrics}");
    for line in [
        "switchhook_esl_connected 1",
        "switchhook_active_calls 0",
        "switchhook_partial_cdrs_total 0",
        "# TYPE switchhook_esl_frames_total counter",
        "switchhook_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(!metrics.contains("# EOF"));
    // Series that only repeated others are gone.
    assert!(
        !metrics.contains("switchhook_deliveries_total"),
        "{metrics}"
    );
    assert!(!metrics.contains("switchhook_esl_reconnects"), "{metrics}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(health, Some((200, "ok\n".into())));
    assert_eq!(ready, Some((200, "ready\n".into())));
}

#[test]
fn an_admin_password_guards_call_data_and_metrics_but_not_the_probes() {
    use std::process::Stdio;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = admin_rig(&rt, "password_env = \"ADMIN_PW\"\nuser = \"ops\"\n");
    let (admin, f) = (rig.admin, &rig.config);
    // Without the variable, check-config names the key.
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .env_remove("ADMIN_PW")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.password_env") && err.contains("\"ADMIN_PW\" is not set"),
        "{err}"
    );

    let password = "correct horse";
    let mut child = common::run_command(f.path(), ADMIN_RIG_ESL_PASSWORD)
        .env("ADMIN_PW", password)
        .stderr(Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let get = |path: &str, auth: Option<(&str, &str)>| {
        let url = format!("http://{admin}{path}");
        rt.block_on(async {
            let mut rb = reqwest::Client::new().get(&url);
            if let Some((u, p)) = auth {
                rb = rb.basic_auth(u, Some(p));
            }
            match rb.send().await {
                Ok(r) => Some((
                    r.status().as_u16(),
                    r.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap_or("").to_owned()),
                )),
                Err(_) => None,
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get("/healthz", None).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let results: Vec<_> = ["/metrics", "/", "/live.json"]
        .iter()
        .map(|p| {
            (
                *p,
                get(p, None),
                get(p, Some(("ops", "wrong"))),
                get(p, Some(("switchhook", password))),
                get(p, Some(("ops", password))),
            )
        })
        .collect();
    let probes = (get("/healthz", None), get("/readyz", None));
    child.kill().unwrap();
    let _ = child.wait();
    let challenge = Some("Basic realm=\"switchhook\", charset=\"UTF-8\"".to_owned());
    for (path, none, wrong, other_user, right) in results {
        assert_eq!(none, Some((401, challenge.clone())), "{path}");
        assert_eq!(wrong, Some((401, challenge.clone())), "{path}");
        assert_eq!(other_user, Some((401, challenge.clone())), "{path}");
        assert_eq!(right, Some((200, None)), "{path}");
    }
    assert_eq!(probes.0, Some((200, None)));
    assert!(matches!(probes.1, Some((200 | 503, None))), "{probes:?}");
}

#[test]
fn readyz_says_why_while_freeswitch_is_unreachable() {
    let (nobody, admin) = (common::free_addr(), common::free_addr());
    let dir = tempfile::tempdir().unwrap();
    let f = config_file(&format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[store]\npath = {:?}\n[admin]\nlisten = \"{admin}\"\n",
        nobody.port(),
        dir.path().join("outbox.db").display().to_string()
    ));
    let mut child = common::run_command(f.path(), "")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = None;
    while std::time::Instant::now() < deadline && got.is_none() {
        got = rt.block_on(async {
            let r = reqwest::get(format!("http://{admin}/readyz")).await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        got,
        Some((
            503,
            "not ready: event socket not connected and subscribed\n".into()
        ))
    );
}

/// The example configuration loads, and names every option the configuration has (a new key
/// without an example line fails here).
#[test]
fn the_example_configuration_loads_and_names_every_option() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/switchhook.example.toml");
    let out = switchhook().arg("check-config").arg(path).output().unwrap();
    assert_ok(&out);
    let text = std::fs::read_to_string(path).unwrap();
    let (cfg, _) = switchhook::pipeline::Compiled::load(Some(std::path::Path::new(path))).unwrap();
    assert!(!cfg.webhooks.is_empty() && !cfg.routes.is_empty());
    let named = |key: &str| {
        text.lines().any(|l| {
            let l = l.trim_start().trim_start_matches('#').trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let mut missing = Vec::new();
    let all = serde_json::to_value(&cfg).unwrap();
    for (section, value) in all.as_object().unwrap() {
        let tables: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for table in tables {
            for (key, v) in table.as_object().unwrap() {
                if !named(key) && !text.contains(&format!("[{section}.{key}]")) {
                    missing.push(format!("{section}.{key}"));
                }
                // One level down: [routes.menu].
                if let Some(inner) = v.as_object().filter(|_| key == "menu") {
                    for k in inner.keys() {
                        if !named(k) {
                            missing.push(format!("{section}.{key}.{k}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in switchhook.example.toml: {missing:?}"
    );
}

/// `replay` draws a progress bar on a terminal (here a pseudo-terminal made by util-linux's
/// `script`), and nothing at all when its stderr is piped.
#[test]
fn replay_shows_progress_on_a_terminal_and_nothing_when_piped() {
    let capture = fixture("freeswitch-1.10/16-concurrent-mix.esl");
    let piped = switchhook()
        .args(["replay", "--emit", "cdr"])
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&piped);
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(piped.stdout.iter().filter(|&&b| b == b'\n').count(), 5);

    let dir = tempfile::tempdir().unwrap();
    let (typescript, cdrs) = (dir.path().join("typescript"), dir.path().join("cdrs.jsonl"));
    let command = format!(
        "{} replay --emit cdr {} > {}",
        env!("CARGO_BIN_EXE_switchhook"),
        capture.display(),
        cdrs.display()
    );
    let screen = on_a_terminal(&command, &typescript);
    assert!(
        screen.contains("/2.03 MiB"),
        "no bar over the file's size:\n{screen}"
    );
    assert!(screen.contains("16-concurrent-mix.esl"), "{screen}");
    // The records went to stdout untouched by the bar.
    let out = std::fs::read_to_string(&cdrs).unwrap();
    assert_eq!(out.lines().count(), 5);
    assert!(out
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

/// `check-config` and `run` read and compile the same way: an unknown key in any section is
/// refused by both, with the same problem, before `run` connects anywhere.
#[test]
fn check_config_and_run_agree_on_an_unknown_key_in_every_section() {
    let defaults = serde_json::to_value(switchhook::config::Config::default()).unwrap();
    let sections: Vec<(&String, bool)> = defaults
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k, v.is_array()))
        .collect();
    assert!(sections.len() >= 13, "{sections:?}");
    for (section, is_list) in sections {
        let text = if is_list {
            format!("[[{section}]]\nbogus_key = 1\n")
        } else {
            format!("[{section}]\nbogus_key = 1\n")
        };
        let f = config_file(&text);
        let check = switchhook()
            .arg("check-config")
            .arg(f.path())
            .output()
            .unwrap();
        let run = switchhook()
            .args(["run", "--config"])
            .arg(f.path())
            // A FreeSWITCH that is not there: `run` must stop at the configuration.
            .env("SWITCHHOOK__FREESWITCH__PORT", "9")
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(78), "check-config on {text}");
        assert_eq!(run.status.code(), Some(78), "run on {text}");
        let problems = |out: &std::process::Output| -> Vec<String> {
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains(section.as_str()))
                .map(str::to_owned)
                .collect()
        };
        assert!(!problems(&check).is_empty(), "{section}: {check:?}");
        assert!(
            problems(&check).iter().any(|l| l.contains("bogus_key")),
            "{section}: {check:?}"
        );
        assert_eq!(problems(&check), problems(&run), "{section}");
    }
}

/// `explain` cites only events that arrived: with the first 60 events of a capture cut
/// away (its CHANNEL_CREATEs and CHANNEL_ANSWERs among them), every event it names as a
/// source is one the cut stream holds.
#[test]
fn explain_cites_only_events_that_arrived() {
    let frames = switchhook::fake_freeswitch::load_capture(&fixture(
        "freeswitch-1.10/01-inbound-answered.esl",
    ))
    .unwrap();
    let kept = &frames[60..];
    let arrived: std::collections::HashSet<String> = kept
        .iter()
        .filter_map(|f| f.event.name().map(|n| n.into_owned()))
        .collect();
    let cut_away: std::collections::HashSet<String> = frames[..60]
        .iter()
        .filter_map(|f| f.event.name().map(|n| n.into_owned()))
        .filter(|n| !arrived.contains(n))
        .collect();
    assert!(cut_away.contains("CHANNEL_CREATE") && cut_away.contains("CHANNEL_ANSWER"));
    let mut cut = tempfile::Builder::new().suffix(".esl").tempfile().unwrap();
    for f in kept {
        cut.write_all(&f.raw).unwrap();
    }
    let out = switchhook()
        .args(["replay", "--emit", "cdr"])
        .arg(cut.path())
        .output()
        .unwrap();
    assert_ok(&out);
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(!ids.is_empty());
    for id in ids {
        let out = switchhook()
            .args(["explain", &id])
            .arg(cut.path())
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        let cited: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("<- "))
            .filter_map(|src| src.split_whitespace().next())
            .filter(|w| w.len() > 3 && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .collect();
        assert!(!cited.is_empty(), "{text}");
        for event in cited {
            assert!(
                arrived.contains(event),
                "{event} is cited but never arrived:\n{text}"
            );
        }
    }
}

/// `explain` finds a call by any of its legs' `Unique-ID` (what FreeSWITCH's logs show), or
/// a prefix of one, and explains the same call as by its id.
#[test]
fn explain_finds_a_call_by_any_legs_uuid() {
    let capture = fixture("freeswitch-1.10/01-inbound-answered.esl");
    let frames = switchhook::fake_freeswitch::load_capture(&capture).unwrap();
    let out = switchhook()
        .args(["replay", "--emit", "cdr"])
        .arg(&capture)
        .output()
        .unwrap();
    let cdr: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = cdr["id"].as_str().unwrap().to_owned();
    let other_leg = frames
        .iter()
        .filter_map(|f| f.event.unique_id().map(|u| u.into_owned()))
        .find(|u| *u != id)
        .expect("a second leg");
    let explain = |which: &str| {
        let out = switchhook()
            .args(["explain", which])
            .arg(&capture)
            .output()
            .unwrap();
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    let by_id = explain(&id);
    assert!(by_id.starts_with(&format!("call {id}")), "{by_id}");
    assert_eq!(explain(&other_leg), by_id);
    assert_eq!(explain(&other_leg[..8]), by_id);
}

/// A file that is not a capture (a README, an empty file) is named as such in one line, and
/// the command fails.
#[test]
fn replay_and_explain_say_in_one_line_when_a_file_is_not_a_capture() {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let empty = tempfile::Builder::new().suffix(".esl").tempfile().unwrap();
    for file in [std::path::Path::new(readme), empty.path()] {
        for args in [
            vec!["replay", "--emit", "events"],
            vec!["replay", "--emit", "cdr"],
            vec!["explain", "38371bb1"],
        ] {
            let out = switchhook().args(&args).arg(file).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{args:?} {}", file.display());
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: {err}");
            assert!(lines[0].contains("not an event-socket capture"), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
}

/// `record` over a real socket (an event socket streaming capture 16): the capture it writes
/// replays to the same CDRs as the original, holds no password, and says what it holds;
/// with a filter it keeps that one call whole.
#[test]
fn record_writes_a_capture_that_replays_like_the_original() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let password = "rec0rd-Secret";
    let dir = tempfile::tempdir().unwrap();
    let cdrs = |file: &std::path::Path| -> Vec<serde_json::Value> {
        let out = switchhook()
            .args(["replay", "--emit", "cdr"])
            .arg(file)
            .output()
            .unwrap();
        assert_ok(&out);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let original = cdrs(&fixture("freeswitch-1.10/16-concurrent-mix.esl"));
    for (filter, want_calls) in [(None, 5), (Some(("--did", "01610001001")), 1)] {
        // A stand-in that streams the capture once, to its first subscriber.
        let server = rt.block_on(common::playback(
            "freeswitch-1.10/16-concurrent-mix.esl",
            password,
        ));
        let cfg = dir.path().join("switchhook.toml");
        std::fs::write(
            &cfg,
            format!(
                "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n",
                server.addr().port()
            ),
        )
        .unwrap();
        let out_file = dir.path().join("rec.esl");
        let mut cmd = switchhook();
        cmd.args(["record", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_file)
            .args(["--calls", &want_calls.to_string(), "--duration", "20s"])
            .env("SWITCHHOOK__FREESWITCH__PASSWORD", password);
        if let Some((flag, value)) = filter {
            cmd.args([flag, value]);
        }
        // Bounded by --duration: the command cannot outlive the test.
        let out = cmd.output().unwrap();
        assert_ok(&out);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.starts_with("recorded ")
                && said.contains(&format!(" of {want_calls} calls into ")),
            "{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&out_file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(password));
        let got = cdrs(&out_file);
        match filter {
            None => {
                // Byte for byte what the socket carried, up to the fifth call's end (the
                // stragglers after it, and the capture's `+OK bye`, come after the stop).
                let source =
                    std::fs::read(fixture("freeswitch-1.10/16-concurrent-mix.esl")).unwrap();
                assert!(
                    source.starts_with(&bytes),
                    "the recording differs from the stream"
                );
                assert!(
                    bytes.len() * 10 > source.len() * 9,
                    "{} of {} bytes",
                    bytes.len(),
                    source.len()
                );
                assert_eq!(got, original);
            }
            Some(_) => {
                assert_eq!(got.len(), 1, "{got:#?}");
                assert_eq!(got[0]["ddiNum"], "+441610001001");
                let same = original.iter().find(|c| c["id"] == got[0]["id"]).unwrap();
                assert_eq!(&got[0], same);
            }
        }
    }
}

/// `diff` shows what a mapping and webhook change changes, call by call, and gates on it:
/// 1 when something differs, 0 when nothing does, 2 without two configurations, 78 for a bad
/// one.
#[test]
fn diff_shows_what_a_configuration_change_changes() {
    let old = config_file(
        "[egress]\nallow = [\"127.0.0.1\"]\n[[webhooks]]\nname = \"crm\"\n\
         triggers = [\"call.answered.extension\", \"call.hangup\"]\nurl = \"http://127.0.0.1:9/crm\"\n",
    );
    let new = config_file(
        "[egress]\nallow = [\"127.0.0.1\"]\n[mapping]\ndevice_name = [\"variable_sip_from_display\"]\n\
         [[webhooks]]\nname = \"crm\"\ntriggers = [\"call.hangup\", \"call.missed\"]\nurl = \"http://127.0.0.1:9/crm\"\n",
    );
    let captures = [
        fixture("freeswitch-1.10/01-inbound-answered.esl"),
        fixture("freeswitch-1.10/02-inbound-missed.esl"),
    ];
    let diff = |a: &std::path::Path, b: &std::path::Path| {
        switchhook()
            .arg("diff")
            .arg("--config")
            .arg(a)
            .arg("--config")
            .arg(b)
            .args(&captures)
            .output()
            .unwrap()
    };
    let out = diff(old.path(), new.path());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "01-inbound-answered.esl: 1 calls, 2 webhook requests; 3 differences",
        "  call 38371bb1: ansDevName \"Yealink SIP-T46U 108.86.0.20 (simulated)\" → \"+447700900123\"",
        "  webhook crm call.hangup call 38371bb1: body changed",
        "  webhook crm call.answered.extension call 38371bb1: no longer sent",
        "  webhook crm call.missed call 291d1de5: sent now",
    ] {
        assert!(text.lines().any(|l| l.contains(want)), "{want}\n{text}");
    }
    let same = diff(old.path(), old.path());
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stdout).contains("no difference"));
    let one = switchhook()
        .args(["diff", "--config"])
        .arg(old.path())
        .args(&captures)
        .output()
        .unwrap();
    assert_eq!(one.status.code(), Some(2));
    let bad = config_file("[sessions]\ntime_zone = \"Mars/Olympus\"\n");
    assert_eq!(diff(old.path(), bad.path()).status.code(), Some(78));
}

/// A mistake in a `SWITCHHOOK__…` variable is named as the variable, not blamed on the file;
/// `--env-file` gives a command run by hand the environment of the service's unit.
#[test]
fn variables_are_named_and_env_file_reads_the_units_environment() {
    let f = config_file("[freeswitch]\nport = 8021\n");
    let out = switchhook()
        .arg("check-config")
        .arg(f.path())
        .env("SWITCHHOOK__FREESWITCH__PASWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().next().unwrap();
    assert!(
        line.starts_with(
            "environment variable SWITCHHOOK__FREESWITCH__PASWORD: freeswitch.pasword: "
        ),
        "{err}"
    );

    // The unit as shipped, pointing at files of this test.
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("state/outbox.db");
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, "SWITCHHOOK__SESSIONS__TIME_ZONE=Mars/Olympus\n").unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/switchhook.service"
    ))
    .unwrap()
    .replace(
        "/var/lib/switchhook/outbox.db",
        &outbox.display().to_string(),
    )
    .replace(
        "/etc/switchhook/secrets.env",
        &secrets.display().to_string(),
    );
    let unit_path = dir.path().join("switchhook.service");
    std::fs::write(&unit_path, unit).unwrap();
    // The secrets file's variables are read (and named when they are wrong)...
    let out = switchhook()
        .arg("--env-file")
        .arg(&unit_path)
        .arg("check-config")
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable SWITCHHOOK__SESSIONS__TIME_ZONE: sessions.time_zone"),
        "{err}"
    );
    // ...and the outbox path comes from the unit's own Environment= line.
    let out = switchhook()
        .arg("--env-file")
        .arg(&unit_path)
        .args(["deliveries", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&outbox.display().to_string()), "{err}");
    // A file that is not there is a usage error, said in one line.
    let out = switchhook()
        .args(["--env-file", "/nonexistent/switchhook.env", "check-config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Under systemd (`Type=notify`): `run` says READY=1 once subscribed, feeds the watchdog
/// from its event loop, and says STOPPING=1 on SIGTERM. systemd's side is a datagram socket
/// here, as `NOTIFY_SOCKET` names it.
#[test]
fn run_tells_the_service_manager_it_is_ready_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::playback(
        "freeswitch-1.10/03-abandoned-short.esl",
        "n0tify",
    ));
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("switchhook.toml");
    std::fs::write(
        &cfg,
        format!(
            "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[store]\npath = {:?}\n",
            server.addr().port(),
            dir.path().join("outbox.db").display().to_string()
        ),
    )
    .unwrap();
    // systemd names the watched process: the shell's pid, which `exec` hands to switchhook.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {} run --config {}",
            env!("CARGO_BIN_EXE_switchhook"),
            cfg.display()
        ))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("SWITCHHOOK__FREESWITCH__PASSWORD", "n0tify")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let mut said: Vec<String> = Vec::new();
    let hear_until = |want: &dyn Fn(&[String]) -> bool, said: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut buf = [0u8; 512];
        while !want(said) && std::time::Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                said.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_owned),
                );
            }
        }
        want(said)
    };
    let count = |said: &[String], what: &str| said.iter().filter(|l| *l == what).count();
    assert!(
        hear_until(
            &|s| count(s, "READY=1") == 1 && count(s, "WATCHDOG=1") >= 2,
            &mut said
        ),
        "{said:?}"
    );
    let ready_at = said.iter().position(|l| l == "READY=1").unwrap();
    assert!(said.contains(&"STATUS=subscribed".to_owned()), "{said:?}");
    assert!(!said[..ready_at].contains(&"STOPPING=1".to_owned()));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        hear_until(&|s| count(s, "STOPPING=1") == 1, &mut said),
        "{said:?}"
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(count(&said, "READY=1"), 1, "ready once: {said:?}");
}

/// The manual page and shell completions come from the CLI's own definition, so they name
/// every command; the bash completion is valid bash.
#[test]
fn man_page_and_completions_name_every_command() {
    let man = switchhook().arg("man").output().unwrap();
    assert_ok(&man);
    // roff escapes hyphens.
    let man = String::from_utf8(man.stdout).unwrap().replace("\\-", "-");
    assert!(man.contains(".TH switchhook 1"), "{man}");
    let bash = switchhook().args(["completions", "bash"]).output().unwrap();
    assert_ok(&bash);
    let bash = String::from_utf8(bash.stdout).unwrap();
    for command in [
        "run",
        "demo",
        "replay",
        "explain",
        "record",
        "diff",
        "check-config",
        "deliveries",
    ] {
        assert!(man.contains(command), "man lacks {command}");
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("switchhook.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // An unknown shell is a usage error.
    let bad = switchhook()
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
