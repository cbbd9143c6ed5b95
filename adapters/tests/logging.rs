//! A worker's stderr lands in the broker's log, one event per line, naming the class and worker.
//! (Its own test binary: it installs the global tracing subscriber.)

mod common;

use adapters::process::ProcessClass;
use adapters::ServerClass;
use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn worker_stderr_is_logged_with_class_and_worker() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let script = format!("echo 'disk on fire' >&2; exec {SAMPLE_SERVER} echo");
    let class = ProcessClass::start(process_config("logs", &["sh", "-c", &script]), runtime())
        .await
        .unwrap();
    let logged = || String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        wait_for(Duration::from_secs(3), || logged().contains("disk on fire")).await,
        "{}",
        logged()
    );
    let line = logged()
        .lines()
        .find(|l| l.contains("disk on fire"))
        .unwrap()
        .to_string();
    assert!(line.contains("worker:"), "target missing: {line}");
    assert!(line.contains("class=logs"), "{line}");
    assert!(line.contains("worker=logs#1"), "{line}");
    assert!(logged().contains("worker ready"));
    class.shutdown(Duration::from_secs(1)).await;
    assert!(logged().contains("worker stopped"), "{}", logged());
}
