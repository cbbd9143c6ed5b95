//! # The process adapter: a Pathway-style pool of child processes
//!
//! The broker starts the workers itself, from the class's `command`, and talks to each over its
//! stdin (requests) and stdout (replies) with the wire protocol (`adapters/PROTOCOL.md`). The pool
//! (`pool/`) does the scheduling; this file only knows how to start one child:
//!
//! - `kill_on_drop(true)`: whatever path drops a worker, its process does not outlive it;
//! - stdin and stdout piped for the protocol; **stderr piped and forwarded line by line** to
//!   `tracing` (target `worker`, with the class and worker id as fields), so a worker's complaints
//!   land in the broker's log next to the requests they concern;
//! - its own process group (Unix), so a Ctrl-C in the broker's terminal reaches only the broker,
//!   which then drains requests and stops the workers in order instead of having them die mid-reply.
//!
//! Dialogs and transactions pin a worker process (see the pool's module docs): its memory holds
//! their state, so the pool routes their later requests and control messages to it alone.
//!
//! And the contract the worker keeps: answer `HELLO`, serve one request at a time, and **exit when
//! stdin closes**. That last rule is what cleans up after a broker killed with `kill -9`: its end
//! of every pipe closes, every worker reads end-of-file and leaves.

use async_trait::async_trait;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::runtime::Handle;

use crate::pool::{Connector, Link, PoolClass, Transport};
use crate::{AdapterError, AdapterKind};
use crate::{ServerClassConfig, WorkerId};

pub use crate::pool::{PoolStatus, WorkerStatus};

/// Longest stderr line forwarded as one log event; longer ones are split.
const MAX_LOG_LINE: u64 = 8 * 1024;

/// A server class whose workers are child processes of the broker.
pub type ProcessClass = PoolClass<ProcessConnector>;

impl ProcessClass {
    /// Start `min_workers` workers (each handshaken) and return the class.
    ///
    /// Fails with [`AdapterError::Unreachable`], naming the command and the OS error, when no
    /// worker can be started (a missing program, a program that exits at once).
    pub async fn start(
        config: ServerClassConfig,
        runtime: Handle,
    ) -> Result<Arc<ProcessClass>, AdapterError> {
        let AdapterKind::Process { command, env, cwd } = config.adapter.clone() else {
            return Err(AdapterError::Unsupported {
                class: config.name.clone(),
                reason: "not a process adapter configuration".to_string(),
            });
        };
        if command.is_empty() {
            return Err(AdapterError::Unreachable {
                class: config.name.clone(),
                reason: "the process adapter's command is empty".to_string(),
            });
        }
        let connector = ProcessConnector {
            runtime: runtime.clone(),
            class: config.name.clone(),
            display: display_command(&command),
            command,
            env,
            cwd,
        };
        PoolClass::launch(config, connector, runtime, true).await
    }
}

/// The command as an operator would type it, for error messages.
fn display_command(command: &[String]) -> String {
    command
        .iter()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("{arg:?}")
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a process class's workers: the class's command, with its pipes.
pub struct ProcessConnector {
    /// The class's own runtime: the child's exit and its stderr are watched there.
    runtime: Handle,
    class: String,
    command: Vec<String>,
    display: String,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

#[async_trait]
impl Connector for ProcessConnector {
    async fn connect(&self, worker: &WorkerId) -> Result<Link, String> {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        #[cfg(unix)]
        cmd.process_group(0);

        // Spawned in the class runtime's context, so that the child's exit (tokio's pidfd or
        // SIGCHLD reaper) and its stderr are watched by the runtime that outlives every caller:
        // a worker whose home runtime ended is still waited for, then killed (see the pool's
        // `ChildProcess`). Only stdin and stdout, the request path, move to the home runtime.
        let spawned = {
            let _class_runtime = self.runtime.enter();
            cmd.spawn()
        };
        let mut child = spawned.map_err(|e| format!("cannot start `{}`: {e}", self.display))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("`{}`: the child's pipes are missing", self.display));
        };
        self.runtime
            .spawn(forward_stderr(stderr, self.class.clone(), worker.clone()));
        // Re-registered with the reactor of the runtime this runs on, the worker's home (see the
        // pool's "Homes"): its task then reads and writes them without waking another thread.
        let pipes = || -> std::io::Result<_> {
            let writer = tokio::net::unix::pipe::Sender::from_owned_fd(stdin.into_owned_fd()?)?;
            let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into_owned_fd()?)?;
            Ok((reader, writer))
        };
        let (reader, writer) =
            pipes().map_err(|e| format!("`{}`: cannot take over its pipes: {e}", self.display))?;
        Ok(Link {
            transport: Transport::Stream {
                reader: Box::new(reader),
                writer: Box::new(writer),
            },
            child: Some(child),
            pid,
            peer: pid.map_or_else(|| "exited process".to_string(), |p| format!("pid {p}")),
        })
    }
}

/// Copy a worker's stderr to the log, one event per line, until the pipe closes.
async fn forward_stderr(stderr: impl AsyncRead + Unpin, class: String, worker: WorkerId) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        // `take` bounds a line, so a worker printing without newlines cannot grow our memory.
        match (&mut reader)
            .take(MAX_LOG_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\r', '\n']);
                if !text.is_empty() {
                    tracing::info!(target: "worker", class = %class, worker = %worker, "{text}");
                }
            }
        }
    }
}
