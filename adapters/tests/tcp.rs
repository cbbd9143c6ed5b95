//! The tcp adapter against the Python reference server in `--tcp` mode, on loopback.

mod common;

use adapters::tcp::TcpClass;
use adapters::{AdapterError, AdapterKind, ReplyStatus, ServerClass, ServerClassConfig};
use common::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn tcp_config(name: &str, addresses: &[&str]) -> ServerClassConfig {
    let mut config = ServerClassConfig::new(
        name,
        AdapterKind::Tcp {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
        },
    );
    config.request_timeout = Duration::from_secs(5);
    config.restart_backoff = Duration::from_millis(20);
    config.restart_backoff_max = Duration::from_millis(200);
    config
}

/// A loopback port with nothing listening on it.
fn dead_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[tokio::test]
async fn echo_over_tcp_with_concurrent_connections() {
    let server = Server::start("python3", &[PYTHON_SERVER, "--tcp", "0"]);
    let mut config = tcp_config("tcp", &[&server.addr]);
    config.min_workers = 2;
    config.max_workers = 4;
    let class = TcpClass::start(config, runtime()).await.unwrap();
    assert_eq!(class.status().workers.len(), 2);

    let reply = class.call(echo("<a>1</a>")).await.unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(
        text(&reply.payload),
        r#"<EchoResponse xmlns="urn:test"><a>1</a></EchoResponse>"#
    );

    let calls: Vec<_> = (0..16)
        .map(|i| {
            let class = class.clone();
            tokio::spawn(async move { class.call(echo(&format!("<i>{i}</i>"))).await })
        })
        .collect();
    let mut workers = HashSet::new();
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await.unwrap().unwrap();
        assert!(text(&reply.payload).contains(&format!("<i>{i}</i>")));
        workers.insert(reply.worker);
    }
    assert!(workers.len() >= 2, "{workers:?}");
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn nothing_listening_is_unreachable_not_a_hang() {
    let dead = dead_port();
    // Starting does not fail (the servers are someone else's and may come later)...
    let class = TcpClass::start(tcp_config("nobody", &[&dead]), runtime())
        .await
        .unwrap();
    // ...but requests fail fast while no connection can be made.
    let started = Instant::now();
    match class.call(echo("")).await {
        Err(AdapterError::Unreachable { reason, .. }) => {
            assert!(reason.contains(&dead), "{reason}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn fails_over_to_a_live_address_and_reconnects_after_a_restart() {
    let dead = dead_port();
    let server = Server::start("python3", &[PYTHON_SERVER, "--tcp", "0"]);
    let port = server.port();
    let class = TcpClass::start(tcp_config("failover", &[&dead, &server.addr]), runtime())
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(class.call(echo("")).await.unwrap().status, ReplyStatus::Ok);
    }

    // The server goes away: the next request fails, it does not hang.
    drop(server);
    let failed = class.call(echo("")).await;
    assert!(
        matches!(
            failed,
            Err(AdapterError::WorkerLost { .. } | AdapterError::Unreachable { .. })
        ),
        "{failed:?}"
    );

    // It comes back on the same port: the pool reconnects by itself.
    let _server = Server::start("python3", &[PYTHON_SERVER, "--tcp", &port.to_string()]);
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(reply) = class.call(echo("")).await {
            assert_eq!(reply.status, ReplyStatus::Ok);
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no reconnection: {:?}", class.status());
    class.shutdown(Duration::from_secs(1)).await;
}
