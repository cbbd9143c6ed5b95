//! # Serving the wire protocol on stdin/stdout
//!
//! The whole life of a process-adapter worker, as a legacy team would write it:
//!
//! 1. read the broker's `HELLO`, answer with ours (protocol 1);
//! 2. loop: read a frame, serve it, write the answer, flush;
//! 3. when stdin reaches end-of-file, exit 0: the broker has closed our pipe (it is stopping us,
//!    or it died; either way nobody will read our answers any more).
//!
//! stdout carries only frames; every diagnostic goes to stderr, which the broker logs. A
//! malformed frame is fatal (exit 2): after a framing error the byte stream cannot be trusted.

use super::{Action, SampleClass};
use crate::protocol::{self, Hello, Message, Reply};
use crate::ReplyStatus;
use bytes::Bytes;
use std::io::{Read, Write};

/// Every kind the broker may send in protocol 1.
const KNOWN_KINDS: &[&str] = &[
    "HELLO",
    "REQUEST",
    "PREPARE",
    "COMMIT",
    "ABORT",
    "RECOVER",
    "DIALOG-ABORT",
];

/// Serve until stdin closes; returns the process exit code.
pub fn serve(class: &mut dyn SampleClass) -> i32 {
    serve_on(class, std::io::stdin().lock(), std::io::stdout().lock())
}

/// Serve on any byte stream until it closes (stdin/stdout, or one TCP connection of the tcp
/// adapter); returns the exit code the process would have.
pub fn serve_on(class: &mut dyn SampleClass, mut input: impl Read, mut output: impl Write) -> i32 {
    let mut max_frame = protocol::DEFAULT_MAX_FRAME;
    let name = class.server_name();

    let mut send = |message: Message, max_frame: usize| -> Result<(), String> {
        let bytes = message
            .encode(max_frame)
            .or_else(|e| {
                // An answer we cannot encode (too large, a line break in a header) becomes an
                // error reply, so the broker's caller hears about it instead of timing out.
                Message::Reply(Reply {
                    open_transaction: None,
                    id: message.id(),
                    status: ReplyStatus::Error(format!("cannot encode the answer: {e}")),
                    payload: Bytes::new(),
                })
                .encode(max_frame)
            })
            .map_err(|e| format!("cannot encode the answer: {e}"))?;
        output
            .write_all(&bytes)
            .and_then(|()| output.flush())
            .map_err(|e| format!("cannot write the answer: {e}"))
    };

    // 1. The handshake.
    let hello = match protocol::read_frame_blocking(&mut input, max_frame) {
        Ok(Some(frame)) => Message::from_frame(frame),
        Ok(None) => return 0,
        Err(e) => Err(e),
    };
    let hello = match hello {
        Ok(Message::Hello(hello)) => hello,
        Ok(other) => {
            eprintln!("{name}: expected HELLO, got {}; exiting", other.kind());
            return 2;
        }
        Err(e) => {
            eprintln!("{name}: bad handshake: {e}; exiting");
            return 2;
        }
    };
    let offered = hello.protocol == protocol::PROTOCOL_VERSION
        || hello.versions.contains(&protocol::PROTOCOL_VERSION);
    if !offered {
        let reason = format!(
            "this server speaks protocol {}, the broker offered {:?}",
            protocol::PROTOCOL_VERSION,
            hello.versions
        );
        eprintln!("{name}: {reason}; exiting");
        let _ = send(
            Message::Hello(Hello {
                protocol: protocol::PROTOCOL_VERSION,
                server: Some(name.clone()),
                error: Some(reason),
                ..Hello::default()
            }),
            max_frame,
        );
        return 2;
    }
    if let Some(theirs) = hello.max_frame {
        max_frame = max_frame.min(theirs);
    }
    let ours = Message::Hello(Hello {
        protocol: protocol::PROTOCOL_VERSION,
        server: Some(name.clone()),
        max_frame: Some(max_frame),
        ..Hello::default()
    });
    if let Err(e) = send(ours, max_frame) {
        eprintln!("{name}: {e}; exiting");
        return 1;
    }

    // 2. One request at a time, until stdin closes.
    loop {
        let message = match protocol::read_frame_blocking(&mut input, max_frame) {
            Ok(None) => return 0, // 3. the broker closed our stdin
            Ok(Some(frame)) if !KNOWN_KINDS.contains(&frame.kind.as_str()) => {
                // Well framed but from a newer protocol: say so and carry on (PROTOCOL.md §6).
                let answer = Message::Reply(Reply {
                    open_transaction: None,
                    id: frame.id,
                    status: ReplyStatus::Error(format!("unsupported message {}", frame.kind)),
                    payload: Bytes::new(),
                });
                if let Err(e) = send(answer, max_frame) {
                    eprintln!("{name}: {e}; exiting");
                    return 1;
                }
                continue;
            }
            Ok(Some(frame)) => Message::from_frame(frame),
            Err(e) => Err(e),
        };
        let answer = match message {
            Ok(Message::Request(request)) => match class.request(&request) {
                Action::Reply {
                    status,
                    payload,
                    delay,
                } => {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    Message::Reply(Reply {
                        open_transaction: None,
                        id: request.id,
                        status,
                        payload,
                    })
                }
                Action::Exit(code) => {
                    eprintln!("{name}: exiting with status {code} as asked (test aid)");
                    std::process::exit(code);
                }
            },
            Ok(
                control @ (Message::Prepare { .. }
                | Message::Commit { .. }
                | Message::Abort { .. }
                | Message::Recover { .. }
                | Message::DialogAbort { .. }),
            ) => class.control(&control),
            Ok(other) => {
                eprintln!(
                    "{name}: unexpected {} from the broker; exiting",
                    other.kind()
                );
                return 2;
            }
            Err(e) => {
                eprintln!("{name}: {e}; exiting");
                return 2;
            }
        };
        if let Err(e) = send(answer, max_frame) {
            eprintln!("{name}: {e}; exiting");
            return 1;
        }
    }
}
