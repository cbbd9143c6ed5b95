//! # `broker admin …`: the admin API from a shell
//!
//! ```text
//! broker admin [--url http://127.0.0.1:8081] [--token T | --user U] [--json] <command>
//!   session show ID       one session (a table; --json: the API's JSON)
//!   session end ID        end it now
//!   sessions list [--endpoint P] [--dialect D] [--principal U] [--holder B]
//!                 [--idle-longer-than 30m] [--limit N] [--after ID]
//!                         a page of sessions (the next page: --after the ID it names)
//!   sessions purge        sweep every expired session now
//!   brokers               the live brokers sharing the store
//!   classes               the server classes and their workers
//!   class resize NAME N   keep N workers of the class on this broker
//!   class grow NAME [N]   N more workers than are live now (default 1)
//!   class shrink NAME [N] N fewer (default 1)
//!   class restart NAME    replace its workers one by one
//!   drain                 stop taking new work, finish what is held here, then exit
//!   reload                read the configuration again; say what changed and what needs a restart
//!   metrics               the Prometheus exposition, as served
//! ```
//!
//! The token comes from `--token` or `BROKER_ADMIN_TOKEN`; with `--user`, an admin principal signs
//! in with HTTP Basic instead, the password read from `BROKER_ADMIN_PASSWORD` (never an argument,
//! which every local user could read in the process list). Every failure is one line on stderr
//! and exit status 1: the broker cannot be reached, the token is refused, the session is unknown,
//! the API answers an error (its `error` text). A usage error is status 2.

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// How long one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct AdminArgs {
    /// The broker's admin listener.
    #[arg(long, default_value = "http://127.0.0.1:8081", value_name = "URL")]
    url: String,
    /// The admin token (default: the environment variable BROKER_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN", conflicts_with = "user")]
    token: Option<String>,
    /// Sign in as this admin principal (admin.principals) with HTTP Basic; the password is read
    /// from the environment variable BROKER_ADMIN_PASSWORD.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// One session.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// All sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// The live brokers sharing the store.
    Brokers,
    /// The server classes and their workers (pid, busy, dialogs, transaction, served).
    Classes,
    /// Change one server class's workers on this broker.
    Class {
        #[command(subcommand)]
        command: ClassCommand,
    },
    /// Drain the broker: no new sessions, dialogs or transactions; it exits once those it holds
    /// are done (or after admin.drain_timeout).
    Drain,
    /// Read the configuration again: new classes and services appear, removed ones drain.
    Reload,
    /// The Prometheus exposition, as served.
    Metrics,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Show it: endpoint, dialect, principal, times, transaction, dialog.
    Show { id: String },
    /// End it now: its dialog aborted, its transaction rolled back.
    End { id: String },
}

#[derive(Subcommand)]
enum ClassCommand {
    /// Keep this many workers (at most the class's max_workers).
    Resize { name: String, workers: usize },
    /// Keep this many more workers than are live now.
    Grow {
        name: String,
        #[arg(default_value_t = 1)]
        by: usize,
    },
    /// Keep this many fewer workers than are live now (idle ones stop at once).
    Shrink {
        name: String,
        #[arg(default_value_t = 1)]
        by: usize,
    },
    /// Replace every worker one by one; the class keeps serving.
    Restart { name: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// A page of sessions, in ID order.
    List(ListArgs),
    /// Sweep every expired session now.
    Purge,
}

#[derive(Args)]
struct ListArgs {
    /// Only sessions of this endpoint path.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only sessions of this dialect (nonstop, dsml, sqlsession).
    #[arg(long)]
    dialect: Option<String>,
    /// Only sessions of this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only sessions whose dialog this broker holds.
    #[arg(long)]
    holder: Option<String>,
    /// Only sessions idle longer than this (30s, 5m, 2h).
    #[arg(long, value_name = "DURATION")]
    idle_longer_than: Option<String>,
    /// Sessions per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this session ID (the `next` of the page before).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
}

impl ListArgs {
    fn query(&self) -> Result<String, String> {
        let mut q = format!("limit={}", self.limit);
        for (key, value) in [
            ("endpoint", &self.endpoint),
            ("dialect", &self.dialect),
            ("principal", &self.principal),
            ("holder", &self.holder),
            ("idle_longer_than", &self.idle_longer_than),
            ("after", &self.after),
        ] {
            if let Some(v) = value {
                q.push_str(&format!("&{key}={}", path_segment(v)?));
            }
        }
        Ok(q)
    }
}

/// Run `broker admin …`.
pub fn run(args: AdminArgs) -> ExitCode {
    match execute(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("broker admin: {message}");
            ExitCode::from(1)
        }
    }
}

/// Where the password of `--user` comes from.
pub const ADMIN_PASSWORD_ENV: &str = "BROKER_ADMIN_PASSWORD";

/// The `Authorization` value: Basic of `--user`, or the bearer token.
fn authorization(args: &AdminArgs) -> Result<String, String> {
    use base64::Engine as _;
    if let Some(user) = &args.user {
        let password = std::env::var(ADMIN_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("--user {user} needs the password in {ADMIN_PASSWORD_ENV}"))?;
        let pair = format!("{user}:{password}");
        return Ok(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ));
    }
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(crate::config::ADMIN_TOKEN_ENV).ok())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            format!(
                "no admin token: give --token or set {} (or sign in with --user)",
                crate::config::ADMIN_TOKEN_ENV
            )
        })?;
    Ok(format!("Bearer {}", token.trim()))
}

fn execute(args: &AdminArgs) -> Result<String, String> {
    let authorization = authorization(args)?;
    let mut body = None;
    let (method, path) = match &args.command {
        AdminCommand::Session {
            command: SessionCommand::Show { id },
        } => ("GET", format!("/sessions/{}", path_segment(id)?)),
        AdminCommand::Session {
            command: SessionCommand::End { id },
        } => ("DELETE", format!("/sessions/{}", path_segment(id)?)),
        AdminCommand::Sessions {
            command: SessionsCommand::Purge,
        } => ("POST", "/sessions/purge".to_string()),
        AdminCommand::Sessions {
            command: SessionsCommand::List(list),
        } => ("GET", format!("/sessions?{}", list.query()?)),
        AdminCommand::Brokers => ("GET", "/brokers".to_string()),
        AdminCommand::Classes => ("GET", "/classes".to_string()),
        AdminCommand::Class { command } => {
            let (name, action) = match command {
                ClassCommand::Resize { name, workers } => {
                    body = Some(serde_json::json!({ "workers": workers }));
                    (name, "workers")
                }
                ClassCommand::Grow { name, by } => {
                    body = Some(serde_json::json!({ "grow": by }));
                    (name, "workers")
                }
                ClassCommand::Shrink { name, by } => {
                    body = Some(serde_json::json!({ "shrink": by }));
                    (name, "workers")
                }
                ClassCommand::Restart { name } => (name, "restart"),
            };
            ("POST", format!("/classes/{}/{action}", path_segment(name)?))
        }
        AdminCommand::Drain => ("POST", "/drain".to_string()),
        AdminCommand::Reload => ("POST", "/reload".to_string()),
        AdminCommand::Metrics => ("GET", "/metrics".to_string()),
    };
    let (status, body) = call(&args.url, method, &path, &authorization, body)?;
    if status == 401 {
        return Err(match &args.user {
            Some(user) => format!(
                "{} refused {user}'s sign-in (HTTP 401): a wrong password, or not one of admin.principals",
                args.url
            ),
            None => format!("{} refused the admin token (HTTP 401)", args.url),
        });
    }
    if matches!(args.command, AdminCommand::Metrics) {
        return match status {
            200 => Ok(body),
            _ => Err(format!("HTTP {status}: {}", body.trim())),
        };
    }
    let json: Value = serde_json::from_str(&body)
        .map_err(|e| format!("{} answered HTTP {status} without JSON ({e})", args.url))?;
    if !(200..300).contains(&status) {
        let text = json["error"].as_str().unwrap_or("(no error text)");
        return Err(format!("{text} (HTTP {status})"));
    }
    if args.json {
        return Ok(format!("{json}\n"));
    }
    Ok(match &args.command {
        AdminCommand::Session {
            command: SessionCommand::Show { .. },
        } => session_table(&json),
        AdminCommand::Session {
            command: SessionCommand::End { .. },
        } => "session ended\n".to_string(),
        AdminCommand::Sessions {
            command: SessionsCommand::List(_),
        } => sessions_table(&json),
        AdminCommand::Sessions {
            command: SessionsCommand::Purge,
        } => format!(
            "examined {}, deleted {}\n",
            json["examined"], json["deleted"]
        ),
        AdminCommand::Brokers => brokers_table(&json),
        AdminCommand::Classes => classes_table(&json),
        AdminCommand::Class {
            command: ClassCommand::Restart { name },
        } => format!(
            "rolling restart of {name} begun: {} workers to replace one by one (progress: broker admin classes)\n",
            json["restart"]["workers"]
        ),
        AdminCommand::Class { .. } => {
            let count = |v: &Value, one: &str, many: &str| match v.as_u64() {
                Some(1) => format!("1 {one}"),
                _ => format!("{} {many}", text(v)),
            };
            format!(
                "{} keeps {} on this broker ({} live)\n",
                text(&json["name"]),
                count(&json["kept"], "worker", "workers"),
                count(&json["live_before"], "was", "were")
            )
        }
        AdminCommand::Drain => format!(
            "draining: {} dialogs and {} transactions still held here; the broker exits when they are done\n",
            json["dialogs"], json["transactions"]
        ),
        AdminCommand::Reload => reload_report(&json),
        AdminCommand::Metrics => String::new(),
    })
}

/// A session ID as a path segment: unreserved characters as they are, the rest (sqlSession's
/// base64 `+`, `/`, `=`) percent-encoded.
fn path_segment(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > 128 || id.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("that is not a session ID".into());
    }
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn session_table(s: &Value) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    for key in [
        "id",
        "endpoint",
        "dialect",
        "principal",
        "client_ip",
        "created",
        "last_access",
        "expires",
    ] {
        row(key, text(&s[key]));
    }
    match &s["transaction"] {
        Value::Null => row("transaction", "-".into()),
        t => {
            let parts: Vec<String> = t["participants"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{} ({})", text(&p["server_class"]), text(&p["worker"])))
                        .collect()
                })
                .unwrap_or_default();
            row("transaction", text(&t["id"]));
            row(
                "participants",
                if parts.is_empty() {
                    "-".into()
                } else {
                    parts.join(", ")
                },
            );
        }
    }
    match &s["subsession"] {
        Value::Null => row("dialog", "-".into()),
        d => row(
            "dialog",
            format!(
                "{} on {} at broker {}",
                text(&d["server_class"]),
                text(&d["worker"]),
                text(&d["broker"])
            ),
        ),
    }
    out
}

fn sessions_table(page: &Value) -> String {
    let mut out = format!(
        "{:<34} {:<10} {:<10} {:<16} {:<24} {}\n",
        "ID", "ENDPOINT", "DIALECT", "PRINCIPAL", "LAST ACCESS", "DIALOG"
    );
    for s in page["sessions"].as_array().into_iter().flatten() {
        let dialog = match &s["subsession"] {
            Value::Null => "-".to_string(),
            d => format!("{} at {}", text(&d["server_class"]), text(&d["broker"])),
        };
        out.push_str(&format!(
            "{:<34} {:<10} {:<10} {:<16} {:<24} {}\n",
            text(&s["id"]),
            text(&s["endpoint"]),
            text(&s["dialect"]),
            text(&s["principal"]),
            text(&s["last_access"]),
            dialog
        ));
    }
    if let Value::String(next) = &page["next"] {
        out.push_str(&format!("next page: --after {next}\n"));
    }
    out
}

fn classes_table(list: &Value) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>5} {:>5} {:>5} {:>7} {:>9}\n",
        "CLASS", "ADAPTER", "KEPT", "LIVE", "BUSY", "QUEUED", "RESTARTS"
    );
    for c in list.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<8} {:>5} {:>5} {:>5} {:>7} {:>9}\n",
            text(&c["name"]),
            text(&c["adapter"]),
            text(&c["kept"]),
            text(&c["live"]),
            text(&c["busy"]),
            text(&c["queued"]),
            text(&c["restarts"])
        ));
        let r = &c["restart"];
        if !r.is_null() {
            let state = match (&r["failed"], r["done"].as_bool()) {
                (Value::String(why), _) => format!("stopped: {why}"),
                (_, Some(true)) => "done".to_string(),
                _ => format!("retiring {}", text(&r["retiring"])),
            };
            out.push_str(&format!(
                "  rolling restart: {} replaced, {} to go, {state}\n",
                text(&r["replaced"]),
                text(&r["remaining"])
            ));
        }
        for w in c["workers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<14} pid {:<8} {:<5} dialogs {:<3} served {:<8} transaction {}\n",
                text(&w["id"]),
                text(&w["pid"]),
                if w["busy"] == Value::Bool(true) {
                    "busy"
                } else {
                    "idle"
                },
                text(&w["dialogs"]),
                text(&w["served"]),
                text(&w["transaction"])
            ));
        }
    }
    out
}

fn reload_report(r: &Value) -> String {
    let mut out = String::from("configuration reloaded\n");
    for (key, title) in [
        ("classes_added", "server classes started"),
        ("classes_draining", "server classes draining"),
        ("services_added", "services added"),
        ("services_removed", "services removed"),
        ("endpoints_changed", "endpoints changed"),
    ] {
        let items: Vec<String> = r[key].as_array().into_iter().flatten().map(text).collect();
        if !items.is_empty() {
            out.push_str(&format!("{title}: {}\n", items.join(", ")));
        }
    }
    if r["sessions_ended"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!("sessions ended: {}\n", r["sessions_ended"]));
    }
    for item in r["restart_needed"].as_array().into_iter().flatten() {
        out.push_str(&format!("needs a restart: {}\n", text(item)));
    }
    out
}

fn brokers_table(list: &Value) -> String {
    let mut out = format!("{:<24} {:<32} {}\n", "ID", "ADDRESS", "LEASE UNTIL");
    for b in list.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<24} {:<32} {}\n",
            text(&b["id"]),
            text(&b["advertise"]),
            text(&b["lease_until"])
        ));
    }
    out
}

/// One request to the admin listener, with a JSON body if given: (status, body).
fn call(
    base: &str,
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<Value>,
) -> Result<(u16, String), String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{base} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{base}: only http:// admin listeners are supported"
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let client: Client<HttpConnector, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", authorization);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request
            .body(Full::new(bytes::Bytes::from(payload)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                format!("cannot reach {base}: {reason}")
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{base}: the answer broke off: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{base} did not answer within {CALL_TIMEOUT:?}"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_become_path_segments() {
        assert_eq!(path_segment("3f2a-b_c.d~").unwrap(), "3f2a-b_c.d~");
        // A sqlSession ID is base64.
        assert_eq!(path_segment("3q2+7w/=").unwrap(), "3q2%2B7w%2F%3D");
        assert!(path_segment("").is_err());
        assert!(path_segment("a b").is_err());
    }
}
