//! The pipeline's start and stop: a part that cannot start stops the parts already started.

use std::net::TcpListener;

use switchhook::config::Config;
use switchhook::pipeline::{Compiled, Pipeline, StartError};

/// A loopback address nobody listens on (bound, read, released).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(dir: &tempfile::TempDir) -> Config {
    let mut cfg = Config::default();
    cfg.store.path = dir.path().join("outbox.db");
    // FreeSWITCH is never reached: start fails before the client is spawned.
    cfg.freeswitch.port = 9;
    cfg
}

#[tokio::test]
async fn an_admin_endpoint_that_cannot_listen_stops_the_routing_server_already_started() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(&dir);
    let routing = free_addr();
    cfg.routing.listen = routing.clone();
    cfg.admin.listen = busy.local_addr().unwrap().to_string();
    let compiled = Compiled::new(&cfg).unwrap();
    let err = match Pipeline::start(cfg, compiled, None).await {
        Err(e) => e,
        Ok(_) => panic!("the admin port is taken: start must fail"),
    };
    assert!(matches!(err, StartError::Admin { .. }), "{err}");
    assert!(err.to_string().starts_with("admin.listen "), "{err}");
    // The routing server had started; it has let go of its port.
    TcpListener::bind(&routing).expect("the routing server was stopped");
    // The outbox was closed cleanly: a new pipeline opens it and starts.
    let mut cfg = config(&dir);
    cfg.routing.listen = routing;
    let compiled = Compiled::new(&cfg).unwrap();
    let pipeline = Pipeline::start(cfg, compiled, None).await.unwrap();
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_routing_server_that_cannot_listen_fails_the_start_and_leaves_the_outbox_usable() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(&dir);
    cfg.routing.listen = busy.local_addr().unwrap().to_string();
    let compiled = Compiled::new(&cfg).unwrap();
    let err = match Pipeline::start(cfg, compiled, None).await {
        Err(e) => e,
        Ok(_) => panic!("the routing port is taken: start must fail"),
    };
    assert!(matches!(err, StartError::Routing { .. }), "{err}");
    // The outbox was opened before the failure: it exists, and a new pipeline starts on it.
    assert!(dir.path().join("outbox.db").exists());
    let cfg = config(&dir);
    let compiled = Compiled::new(&cfg).unwrap();
    let pipeline = Pipeline::start(cfg, compiled, None).await.unwrap();
    pipeline.shutdown().await;
}
