//! The http adapter against `sample-server echo --http` on loopback.

mod common;

use adapters::http::HttpClass;
use adapters::{AdapterError, AdapterKind, DialogMarker, ReplyStatus, ServerClass};
use adapters::{Context, ServerClassConfig};
use common::*;
use std::time::Duration;

fn http_config(name: &str, urls: &[String]) -> ServerClassConfig {
    let mut config = ServerClassConfig::new(
        name,
        AdapterKind::Http {
            urls: urls.to_vec(),
        },
    );
    config.request_timeout = Duration::from_secs(5);
    config
}

fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn echo_over_http() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let url = format!("http://{}/echo", server.addr);
    let class = HttpClass::start(http_config("web", &[url]), runtime())
        .await
        .unwrap();

    for i in 0..3 {
        let reply = class.call(echo(&format!("<n>{i}</n>"))).await.unwrap();
        assert_eq!(reply.status, ReplyStatus::Ok);
        assert_eq!(
            text(&reply.payload),
            format!(r#"<EchoResponse xmlns="urn:test"><n>{i}</n></EchoResponse>"#)
        );
        assert_eq!(reply.worker, "web#1");
    }
    // An unknown operation is a 500 from this backend: an error reply with the body.
    let reply = class.call(request("Nope", "<Nope/>")).await.unwrap();
    match reply.status {
        ReplyStatus::Error(reason) => assert!(reason.contains("500"), "{reason}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_eq!(text(&reply.payload), "unknown operation Nope");

    let mut req = echo("");
    req.dialog = DialogMarker::Begin;
    assert!(matches!(
        class.call(req).await,
        Err(AdapterError::Unsupported { .. })
    ));
    class.shutdown(Duration::from_secs(1)).await;
    assert!(matches!(
        class.call(echo("")).await,
        Err(AdapterError::ShuttingDown { .. })
    ));
}

#[tokio::test]
async fn timeout_and_failover_and_unreachable() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let live = format!("http://{}/echo", server.addr);
    let dead = dead_url();

    let mut config = http_config("web2", &[dead.clone(), live]);
    config.request_timeout = Duration::from_millis(300);
    let class = HttpClass::start(config, runtime()).await.unwrap();
    // Round robin starts on the dead url half the time; a refused connect fails over.
    for _ in 0..4 {
        let reply = class.call(echo("")).await.unwrap();
        assert_eq!(reply.worker, "web2#2");
    }
    match class.call(echo("<sleepMs>3000</sleepMs>")).await {
        Err(AdapterError::Timeout {
            timeout_ms: 300, ..
        }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(class.call(echo("")).await.unwrap().status, ReplyStatus::Ok);

    let class = HttpClass::start(http_config("web3", &[dead]), runtime())
        .await
        .unwrap();
    assert!(matches!(
        class.call(echo("")).await,
        Err(AdapterError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn configuration_errors_at_start() {
    let url = "http://127.0.0.1:1/x".to_string();
    let mut config = http_config("txn", std::slice::from_ref(&url));
    config.transactional = true;
    match HttpClass::start(config, runtime()).await {
        Err(AdapterError::Unsupported { reason, .. }) => {
            assert_eq!(reason, "the http adapter cannot carry transactions")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a transactional http class must be refused"),
    }
    let mut config = http_config("ctx", &[url]);
    config.context = Context::Sensitive;
    assert!(HttpClass::start(config, runtime()).await.is_err());
    for bad in ["https://example.com/", "not a url", "ftp://x/"] {
        let config = http_config("bad", &[bad.to_string()]);
        assert!(HttpClass::start(config, runtime()).await.is_err(), "{bad}");
    }
    assert!(HttpClass::start(http_config("none", &[]), runtime())
        .await
        .is_err());
}
