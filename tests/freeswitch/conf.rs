//! The FreeSWITCH configuration switchhook ships (`freeswitch-conf/`), loaded into the rig's PBX
//! as a user installs it, and exercised by real calls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::receiver::{Receiver, Reply};
use crate::live::{run_config, runtime};
use crate::rig::{listening, wait_until, Rig, Switchhook, PASSWORD, PBX_ESL, ROUTING_LISTEN};

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("freeswitch-conf")
        .join(rel)
}

/// The rig's runtime files this case replaces, put back on drop (also when the case fails).
struct Installed<'a> {
    rig: &'a Rig,
    saved: Vec<(PathBuf, Option<String>)>,
}

impl<'a> Installed<'a> {
    fn write(&mut self, path: PathBuf, text: &str) {
        self.saved
            .push((path.clone(), std::fs::read_to_string(&path).ok()));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `reloadxml`, and mod_event_socket reloaded from a background job; whether both
    /// worked (never panics: it also runs while a failed case unwinds).
    fn reload(&self) -> bool {
        if !self.rig.fs_cli(PBX_ESL, "reloadxml").contains("+OK") {
            return false;
        }
        self.rig.reload_event_socket()
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        for (path, text) in self.saved.drain(..).rev() {
            match text {
                Some(t) => std::fs::write(&path, t).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
        }
        if !self.reload() {
            eprintln!("the rig's own configuration could not be reloaded");
        }
    }
}

pub fn bundled_freeswitch_conf_loads_and_routes_a_call(rig: &Rig) {
    let rt = runtime();
    let lookup = rt.block_on(Receiver::start(|_, nth| {
        Reply::body(
            "application/x-www-form-urlencoded",
            match nth {
                1 => "status=ACK&destination=1002&callername=Shipped%20Config",
                // An outside number, as the routing server's own example has it.
                2 => "status=ACK&destination=%2B31502102544",
                _ => "status=NAK",
            },
        )
    }));
    let mut installed = Installed {
        rig,
        saved: Vec::new(),
    };
    // The event socket file as a user installs it: their own password in place of the
    // placeholder (the rig's, so its tools keep working).
    let socket =
        std::fs::read_to_string(shipped("autoload_configs/event_socket.conf.xml")).unwrap();
    assert!(socket.contains("change-me-not-ClueCon"));
    installed.write(
        rig.pbx_conf()
            .join("autoload_configs/event_socket.conf.xml"),
        &socket.replace("change-me-not-ClueCon", PASSWORD),
    );
    // The routing extension into dialplan/default/, included at the top of the default
    // context as a stock FreeSWITCH dial plan does.
    let ours = rig
        .pbx_conf()
        .join("dialplan/default/00_switchhook_routing.xml");
    installed.write(
        ours.clone(),
        &std::fs::read_to_string(shipped("dialplan/default/00_switchhook_routing.xml")).unwrap(),
    );
    // The DID into dialplan/public/, included at the top of the public context: the
    // carrier's call reaches the routing step through it, not through the rig's own DID.
    let did = rig.pbx_conf().join("dialplan/public/00_switchhook_did.xml");
    installed.write(
        did.clone(),
        &std::fs::read_to_string(shipped("dialplan/public/00_switchhook_did.xml")).unwrap(),
    );
    for (context, file, dir) in [
        ("default", "default.xml", ours.parent().unwrap()),
        ("public", "public.xml", did.parent().unwrap()),
    ] {
        let path = rig.pbx_conf().join("dialplan").join(file);
        let plan = std::fs::read_to_string(&path).unwrap();
        let open = format!("<context name=\"{context}\">");
        assert!(plan.contains(&open), "{file}");
        installed.write(
            path,
            &plan.replacen(
                &open,
                &format!(
                    "{open}\n<X-PRE-PROCESS cmd=\"include\" data=\"{}/*.xml\"/>",
                    dir.display()
                ),
                1,
            ),
        );
    }
    assert!(
        installed.reload(),
        "the shipped configuration did not load: see {}",
        rig.dir().join("pbx/log/freeswitch.log").display()
    );

    let run = Switchhook::start(&run_config(&format!(
        "[routing]\nlisten = \"{ROUTING_LISTEN}\"\n[[routes]]\nname = \"crm-lookup\"\n\
         url = \"{}/lookup?did={{did}}\"\n",
        lookup.base()
    )));
    assert!(
        run.wait_for("subscribed", 1, Duration::from_secs(30)),
        "{}",
        run.log()
    );
    assert!(wait_until(Duration::from_secs(30), || listening(8084)));

    // ACK: the shipped success branch bridges the extension the server chose.
    let (code, r) = rig.routing_check(&[
        "--did",
        "+441610007100",
        "--cli",
        "+447700900700",
        "--expect-dest",
        "1002",
        "--expect-name",
        "Shipped Config",
    ]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r[0]["route"], "crm-lookup", "{r:?}");

    // ACK to an outside number: the shipped E.164 branch bridges it through the carrier.
    let (code, r) = rig.routing_check(&[
        "--did",
        "+441610007100",
        "--cli",
        "+447700900702",
        "--expect-dest",
        "+31502102544",
    ]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r[0]["fallback_ran"], Value::Bool(false), "{r:?}");

    // NAK: the shipped failure branch (not the rig's, which transfers to its own fallback
    // extension) answers and records the status as the fallback.
    let (_, r) = rig.routing_check(&["--did", "+441610007100", "--cli", "+447700900701"]);
    let r: &Value = &r[0];
    assert_eq!(
        (
            &r["status"],
            &r["fallback"],
            &r["bridged"],
            &r["fallback_ran"]
        ),
        (
            &"NAK".into(),
            &"NAK".into(),
            &Value::Bool(false),
            &Value::Bool(false)
        ),
        "{r}"
    );
    assert_eq!(lookup.seen().len(), 3);
    // Every call came in through the shipped DID file: the routing server was asked with
    // the DID it names.
    for r in lookup.seen() {
        assert!(r.uri.ends_with("?did=%2B441610007100"), "{}", r.uri);
    }
    drop(installed);
}
