//! The routing step on the rig's real dial plan: extensions 7100 (route `crm`) and 7101 (route
//! `pin`, a digit menu) hand the call to switchhook over the outbound socket, and the call must
//! end bridged where the routing server said, or in the failure branch. `routing_check.py`
//! places each call from the carrier and reports, from the PBX's events, where it went.

use std::time::Duration;

use serde_json::Value;

use crate::common::receiver::{Receiver, Reply};
use crate::live::{run_config, runtime};
use crate::rig::{listening, wait_until, Rig, Switchhook, ROUTING_LISTEN};

const CRM_DID: &str = "+441610007100";
const PIN_DID: &str = "+441610007101";

/// `run` with the routing server on the rig's port and both routes asking `lookup`.
fn routing_run(lookup: &Receiver) -> Switchhook {
    let run = Switchhook::start(&run_config(&format!(
        r#"[routing]
listen = "{ROUTING_LISTEN}"
[[routes]]
name = "crm"
url = "{base}/crm/{{callerid}}"
deadline = "2s"
retries = 0
[[routes]]
name = "pin"
url = "{base}/pin/{{code}}"
deadline = "2s"
[routes.menu]
enabled = true
timeout = "3s"
attempts = 2
min_digits = 4
max_digits = 10
"#,
        base = lookup.base()
    )));
    assert!(
        wait_until(Duration::from_secs(30), || listening(8084)),
        "the routing server did not listen: {}",
        run.log()
    );
    run
}

/// One call through `routing_check.py ARGS`; requires its expectations to hold.
fn check(rig: &Rig, what: &str, args: &[&str]) -> Value {
    let (code, reports) = rig.routing_check(args);
    assert_eq!(
        (code, reports.len()),
        (0, 1),
        "{what}: routing_check {args:?} -> {reports:?}"
    );
    reports.into_iter().next().unwrap()
}

const CALLER_LEFT: &str = "routing step ended: the caller left";

/// The call in report `r` ended with the caller: nothing set, no branch, and `run` logged it
/// (its `before + 1`th such line).
fn caller_left(run: &Switchhook, r: &Value, before: usize) {
    assert_eq!(
        (&r["bridged"], &r["fallback_ran"], &r["status"]),
        (&Value::Bool(false), &Value::Bool(false), &Value::Null),
        "{r}"
    );
    assert!(
        run.wait_for(CALLER_LEFT, before + 1, Duration::from_secs(10)),
        "{}",
        run.log()
    );
}

/// A form reply.
fn form(body: &str) -> Reply {
    Reply::body("application/x-www-form-urlencoded", body)
}

pub fn routing_steps_end_where_the_reply_says(rig: &Rig) {
    let rt = runtime();
    let lookup = rt.block_on(Receiver::start(|_, _| Reply::status(404)));
    let run = routing_run(&lookup);
    let pwned = run.dir().join("pwned");

    lookup.set_script(|_, _| form("status=ACK&destination=1003&callername=VIP%20Jo%20Bloggs"));
    let r = check(
        rig,
        "ACK to an extension",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900300",
            "--expect-dest",
            "1003",
            "--expect-name",
            "VIP Jo Bloggs",
        ],
    );
    assert_eq!(r["callername"], "VIP Jo Bloggs", "{r}");

    lookup.set_script(|_, _| form("status=ACK&destination=%2B441619990000"));
    check(
        rig,
        "ACK to an E.164 number",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900301",
            "--expect-dest",
            "+441619990000",
        ],
    );

    lookup.set_script(|_, _| form("status=NAK"));
    check(
        rig,
        "NAK",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900302",
            "--expect-status",
            "NAK",
            "--expect-fallback",
        ],
    );

    lookup.set_script(|_, _| Reply {
        delay: Duration::from_secs(4),
        ..form("status=ACK&destination=1003")
    });
    check(
        rig,
        "a reply after the deadline",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900303",
            "--expect-status",
            "TIMEOUT",
            "--expect-fallback",
        ],
    );

    lookup.set_script(|_, _| Reply::body("text/html", "<html><body>502 Bad Gateway</body></html>"));
    check(
        rig,
        "garbage",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900304",
            "--expect-status",
            "INVALID",
            "--expect-fallback",
        ],
    );

    let hostile = format!(
        "status=ACK&destination=1003%24%7Bsystem(touch%20{})%7D&callername=%24%7Bsystem(id)%7D",
        pwned.display()
    );
    lookup.set_script(move |_, _| form(&hostile));
    let r = check(
        rig,
        "a hostile destination",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900305",
            "--expect-status",
            "INVALID",
            "--expect-fallback",
        ],
    );
    assert!(!pwned.exists(), "FreeSWITCH ran the reply's command");
    for set in r["set_by_socket_app"].as_array().unwrap() {
        assert!(!set.as_str().unwrap().contains("${"), "{r}");
    }

    // The caller gives up while the routing server is still thinking: nothing is set, no
    // branch runs, and switchhook says so.
    lookup.set_script(|_, _| Reply {
        delay: Duration::from_secs(5),
        ..form("status=ACK&destination=1003")
    });
    let left_before = run.lines(CALLER_LEFT).len();
    let r = check(
        rig,
        "the caller hangs up during the HTTP call",
        &[
            "--did",
            CRM_DID,
            "--cli",
            "+447700900306",
            "--max-wait",
            "1",
        ],
    );
    caller_left(&run, &r, left_before);
}

pub fn routing_digit_menus_on_the_real_dial_plan(rig: &Rig) {
    let rt = runtime();
    // The routing server knows codes 1001-1004: the destination is the code.
    let lookup = rt.block_on(Receiver::start(|path, _| {
        match path.strip_prefix("/pin/") {
            Some(code @ ("1001" | "1002" | "1003" | "1004")) => {
                form(&format!("status=ACK&destination={code}"))
            }
            _ => form("status=NAK"),
        }
    }));
    let run = routing_run(&lookup);

    check(
        rig,
        "digits ended with #",
        &[
            "--did",
            PIN_DID,
            "--cli",
            "+447700900310",
            "--digits",
            "1002#",
            "--expect-dest",
            "1002",
        ],
    );
    // No terminator: FreeSWITCH ends the read at the digit timeout and keeps the code, with
    // read_result=timeout.
    check(
        rig,
        "digits ended by the digit timeout",
        &[
            "--did",
            PIN_DID,
            "--cli",
            "+447700900311",
            "--digits",
            "1004",
            "--expect-dest",
            "1004",
        ],
    );
    check(
        rig,
        "no digits",
        &[
            "--did",
            PIN_DID,
            "--cli",
            "+447700900312",
            "--talk",
            "25",
            "--expect-status",
            "TIMEOUT",
            "--expect-fallback",
        ],
    );
    let left_before = run.lines(CALLER_LEFT).len();
    let r = check(
        rig,
        "the caller hangs up during the menu",
        &["--did", PIN_DID, "--cli", "+447700900313", "--talk", "1.5"],
    );
    caller_left(&run, &r, left_before);
    // Only the codes entered reached the routing server; nothing was asked for the calls
    // without one.
    let asked: Vec<String> = lookup.seen().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(asked, ["/pin/1002", "/pin/1004"], "{asked:?}");
}
