//! Driving a `sample-server` class over the wire protocol, the way the process adapter does, but
//! synchronously and one frame at a time, so a test can say exactly what the broker would send.
#![allow(dead_code)]

use adapters::protocol::{self, Frame, Hello, Message, Reply, Vote, DEFAULT_MAX_FRAME};
use adapters::ReplyStatus;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const SAMPLE_SERVER: &str = env!("CARGO_BIN_EXE_sample-server");

/// One worker process of a sample class, killed when dropped.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    next_id: u64,
}

/// What a request carries besides its operation and payload.
#[derive(Default, Clone)]
pub struct Ctx<'a> {
    pub session: Option<&'a str>,
    pub transaction: Option<&'a str>,
    /// `none` when absent.
    pub dialog: Option<&'a str>,
    pub timeout_ms: Option<u64>,
}

impl Worker {
    /// Start `sample-server ARGS…` and complete the handshake.
    pub fn start(args: &[&str]) -> Worker {
        let mut child = Command::new(SAMPLE_SERVER)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sample-server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("its stdout");
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let hello = Message::Hello(Hello {
            protocol: 1,
            versions: vec![1],
            class: Some("test".into()),
            worker: Some("test#1".into()),
            max_frame: Some(DEFAULT_MAX_FRAME),
            ..Hello::default()
        });
        match worker.exchange(hello.encode(DEFAULT_MAX_FRAME).unwrap()) {
            Some(Message::Hello(h)) => assert_eq!(h.protocol, 1, "{h:?}"),
            other => panic!("expected HELLO, got {other:?}"),
        }
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write one frame and read the answer; `None` when the server closed its stdout (exited).
    pub fn exchange(&mut self, bytes: bytes::Bytes) -> Option<Message> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        // A server that has exited makes the write fail: the read below then sees the end.
        let _ = stdin.write_all(&bytes).and_then(|()| stdin.flush());
        protocol::read_frame_blocking(&mut self.stdout, DEFAULT_MAX_FRAME)
            .expect("a well-formed frame")
            .map(|frame| Message::from_frame(frame).expect("a valid message"))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Send a `REQUEST` and return its reply (panics if the server dies).
    pub fn request(&mut self, operation: &str, payload: &str, ctx: &Ctx) -> Reply {
        let id = self.id();
        // Built as a raw frame so the test states every header it sends.
        let frame = Frame::new("REQUEST", id)
            .header("service", operation)
            .header("operation", operation)
            .header_opt("session", ctx.session)
            .header_opt("transaction", ctx.transaction)
            .header("dialog", ctx.dialog.unwrap_or("none"))
            .header_opt("timeout-ms", ctx.timeout_ms.map(|t| t.to_string()))
            .with_payload(payload.to_string());
        match self.exchange(frame.encode(DEFAULT_MAX_FRAME).unwrap()) {
            Some(Message::Reply(reply)) => {
                assert_eq!(reply.id, id);
                reply
            }
            other => panic!("expected REPLY {id}, got {other:?}"),
        }
    }

    /// Send a control message and return the answer (`None`: the server exited unanswered).
    pub fn control(&mut self, make: impl FnOnce(u64) -> Message) -> Option<Message> {
        let id = self.id();
        let answer = self.exchange(make(id).encode(DEFAULT_MAX_FRAME).unwrap());
        if let Some(answer) = &answer {
            assert_eq!(answer.id(), id, "{answer:?}");
        }
        answer
    }

    pub fn prepare(&mut self, txid: &str) -> Option<(Vote, Option<String>)> {
        match self.control(|id| Message::Prepare {
            id,
            transaction: txid.into(),
        })? {
            Message::Vote { vote, reason, .. } => Some((vote, reason)),
            other => panic!("expected VOTE, got {other:?}"),
        }
    }

    /// COMMIT; `true` for an ACK, `false` when the server exited without answering.
    pub fn commit(&mut self, txid: &str) -> bool {
        match self.control(|id| Message::Commit {
            id,
            transaction: txid.into(),
        }) {
            Some(Message::Ack { transaction, .. }) => {
                assert_eq!(transaction.as_deref(), Some(txid));
                true
            }
            None => false,
            other => panic!("expected ACK, got {other:?}"),
        }
    }

    pub fn abort(&mut self, txid: &str) {
        match self.control(|id| Message::Abort {
            id,
            transaction: txid.into(),
        }) {
            Some(Message::Ack { .. }) => {}
            other => panic!("expected ACK, got {other:?}"),
        }
    }

    pub fn recover(&mut self) -> Vec<String> {
        match self.control(|id| Message::Recover { id }) {
            Some(Message::Recovered { transactions, .. }) => transactions,
            other => panic!("expected RECOVERED, got {other:?}"),
        }
    }

    /// SIGKILL the process and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit (after a crash test aid) and return its exit code.
    pub fn wait(mut self) -> Option<i32> {
        self.stdin = None;
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin is how the broker says goodbye; kill in case it does not listen.
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.payload).into_owned()
}

/// The reply's payload, asserting an `ok` status.
pub fn ok(reply: Reply) -> String {
    assert_eq!(reply.status, ReplyStatus::Ok, "{}", text(&reply));
    text(&reply)
}

/// The fault's (code, string), asserting a fault status.
pub fn fault(reply: Reply) -> (String, String) {
    match &reply.status {
        ReplyStatus::Fault { code, string } => (code.clone(), string.clone()),
        other => panic!("expected a fault, got {other:?}: {}", text(&reply)),
    }
}
