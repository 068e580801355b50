//! Routing-step benchmarks (`cargo bench --bench routing`), everything real over 127.0.0.1:
//! the fake FreeSWITCH of the tests (capture 19's conversation, its pacing switched off so
//! FreeSWITCH's 20 ms application ticks do not hide switchhook's own cost) connects to the
//! routing server, which asks an axum routing server.
//!
//! * latency: one call at a time, from the fake's TCP connect to switchhook's `exit`, minus
//!   the routing server's own delay (0 and 20 ms): the overhead switchhook adds (an upper bound:
//!   it includes the fake FreeSWITCH and the loopback HTTP round trip);
//! * throughput: 5 000 steps, 64 calls at a time: steps/s.
//!
//! Prints `SUMMARY` lines; the README quotes them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_fs::{call, conversation, FakeOptions};
use switchhook::routing::{RouteConfig, RouteTable, Router, RoutingConfig, RoutingServer};
use tokio_util::sync::CancellationToken;

fn fast() -> FakeOptions {
    FakeOptions {
        speed: f64::INFINITY,
        ..Default::default()
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// An axum routing server answering the seed's ACK after `delay_ms`; it records how long each
/// request spent in its handler (the server's own latency, timer slack included).
async fn routing_server(delay_ms: u64) -> (String, Arc<Mutex<Vec<f64>>>) {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&handled);
    let app = axum::Router::new().fallback(move || {
        let h = Arc::clone(&h);
        async move {
            let t0 = Instant::now();
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let reply = (
                [("content-type", "application/x-www-form-urlencoded")],
                "status=ACK&destination=1003&callername=CRM%20Jo%20Bloggs",
            );
            h.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1e3);
            reply
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, handled)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for delay_ms in [0u64, 20] {
            let (base, handled) = routing_server(delay_ms).await;
            let route: RouteConfig = serde_json::from_value(serde_json::json!({
                "name": "crm",
                "url": format!("{base}/route?did={{did}}&callerid={{callerid}}&callername={{callername}}"),
            }))
            .unwrap();
            let routing = RoutingConfig::default();
            let table = RouteTable::compile(&routing, &[route]).unwrap();
            let router = Arc::new(Router::new(&routing, Arc::new(table)));
            let server = RoutingServer::bind("127.0.0.1:0", Arc::clone(&router))
                .await
                .unwrap();
            let addr = server.local_addr().unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(server.serve(stop.clone()));
            let conv = Arc::new(conversation(&["19-routing-crm-ack"]));

            // Warm up (connection pool, allocator).
            for _ in 0..50 {
                call(addr, &conv, fast()).await;
            }
            let n = 2_000;
            let mut over = Vec::with_capacity(n);
            for _ in 0..n {
                handled.lock().unwrap().clear();
                let t0 = Instant::now();
                let t = call(addr, &conv, fast()).await;
                assert!(t.exited);
                let server_ms: f64 = handled.lock().unwrap().iter().sum();
                over.push(t0.elapsed().as_secs_f64() * 1e3 - server_ms);
            }
            println!(
                "SUMMARY routing overhead (routing server answering after {delay_ms} ms; connect to exit minus the server's own handling time): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {n} steps",
                pct(&mut over, 0.5),
                pct(&mut over, 0.99),
                pct(&mut over, 1.0),
            );

            if delay_ms == 0 {
                let total = 5_000;
                let width = 64;
                let t0 = Instant::now();
                let mut set = tokio::task::JoinSet::new();
                let mut started = 0;
                let mut done = 0;
                while done < total {
                    while started < total && set.len() < width {
                        let conv = Arc::clone(&conv);
                        set.spawn(async move { call(addr, &conv, fast()).await.exited });
                        started += 1;
                    }
                    assert!(set.join_next().await.unwrap().unwrap());
                    done += 1;
                }
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "SUMMARY routing throughput: {total} steps ({width} at a time, each: connect, filter, event plain, 8 sendmsg with their completions, an HTTP GET, exit) in {secs:.2} s = {:.0} steps/s",
                    total as f64 / secs
                );
            }
            stop.cancel();
        }
    });
}
