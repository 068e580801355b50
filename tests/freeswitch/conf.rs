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
            if nth == 1 {
                "status=ACK&destination=1002&callername=Shipped%20Config"
            } else {
                "status=NAK"
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
    let default = rig.pbx_conf().join("dialplan/default.xml");
    let plan = std::fs::read_to_string(&default).unwrap();
    installed.write(
        default,
        &plan.replacen(
            "<context name=\"default\">",
            &format!(
                "<context name=\"default\">\n<X-PRE-PROCESS cmd=\"include\" data=\"{}/*.xml\"/>",
                ours.parent().unwrap().display()
            ),
            1,
        ),
    );
    assert!(
        installed.reload(),
        "the shipped configuration did not load: see {}",
        rig.dir().join("pbx/log/freeswitch.log").display()
    );

    let run = Switchhook::start(&run_config(&format!(
        "[routing]\nlisten = \"{ROUTING_LISTEN}\"\n[[routes]]\nname = \"crm-lookup\"\n\
         url = \"{}/lookup\"\n",
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
    assert_eq!(lookup.seen().len(), 2);
    drop(installed);
}
