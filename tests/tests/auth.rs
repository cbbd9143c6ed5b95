//! HTTP Basic authentication and sessions bound to their principal, end to end: `broker
//! hash-password` makes the credentials file; endpoints with `auth = "required"` and `"optional"`;
//! 401 with the realm's challenge; a session used by another identity (or anonymously) is refused
//! exactly like an unknown one and stays usable by its owner.

use base64::Engine as _;
use broker_tests::broker::broker_exe;
use broker_tests::http;
use broker_tests::soap::{begin, cont, echo, envelope, SoapReply, Version};
use broker_tests::BrokerProcess;
use std::io::Write;
use std::process::{Command, Stdio};

fn hash_line(user: &str, password: &str) -> String {
    let mut child = Command::new(broker_exe())
        .args(["hash-password", "--user", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run broker hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("hash-password finishes");
    assert!(out.status.success(), "hash-password failed: {:?}", out);
    let line = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(
        line.starts_with(&format!("{user}:$argon2id$")),
        "unexpected line {line:?}"
    );
    assert!(
        !line.contains(password),
        "the hash line must not contain the password"
    );
    line
}

fn start() -> BrokerProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "# test users\n{}\n{}\n",
            hash_line("alice", "s3cret"),
            hash_line("bob", "hunter2")
        ),
    )
    .expect("write users");
    // The broker's own temp dir is separate; keep the credentials alive by leaking this one.
    let users = users.display().to_string();
    std::mem::forget(dir);
    let config = format!(
        r#"
[broker]
workers = 1
[auth]
credentials_file = "{users}"
realm = "test-realm"
[[endpoint]]
path = "/soap"
dialect = "nonstop"
auth = "required"
[[endpoint]]
path = "/open"
dialect = "nonstop"
auth = "optional"
[[server_class]]
name = "echo"
command = ["{{broker_exe}}", "sample-server", "echo"]
min_workers = 1
max_workers = 2
[[service]]
name = "Echo"
endpoint = "/soap"
server_class = "echo"
[[service]]
name = "Echo"
endpoint = "/open"
server_class = "echo"
"#
    );
    BrokerProcess::start(&config)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn call_as(url: &str, auth: Option<&str>, header: &str, body: &str) -> SoapReply {
    let env = envelope(Version::V11, header, body);
    let mut headers = vec![("SOAPAction", "\"\"")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    SoapReply::new(http::post(
        url,
        Some(Version::V11.content_type()),
        &headers,
        env.as_bytes(),
    ))
}

fn detail_code(r: &SoapReply) -> Option<String> {
    let t = &r.text;
    let start = t.find("<detailCode>")? + "<detailCode>".len();
    let end = t[start..].find("</detailCode>")? + start;
    Some(t[start..end].to_string())
}

/// Masks what legitimately differs between two -1001 faults: the timestamp and the session ID.
fn masked(r: &SoapReply, id: &str) -> String {
    let t = r.text.replace(id, "ID");
    match (t.find("ts=\""), t.find("\">SessionID")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &t[..a], &t[b..]),
        _ => t,
    }
}

/// Protects the `required` mode: no credentials or wrong ones → 401 with `WWW-Authenticate: Basic
/// realm="…"`, nothing processed; right ones → served. The password never reaches the log.
#[test]
fn required_endpoint_challenges_missing_and_wrong_credentials() {
    let b = start();
    let url = b.url("/soap");
    for auth in [
        None,
        Some(basic("alice", "wrong")),
        Some(basic("carol", "x")),
        Some("Bearer abc".to_string()),
    ] {
        let r = call_as(&url, auth.as_deref(), &begin(), "");
        assert_eq!(r.http.status, 401, "{auth:?}: {}", r.describe());
        assert_eq!(
            r.http.header("www-authenticate"),
            Some("Basic realm=\"test-realm\""),
            "{}",
            r.describe()
        );
    }
    let r = call_as(&url, Some(&basic("alice", "s3cret")), &begin(), &echo("hi"));
    assert_eq!(r.http.status, 200, "{}", r.describe());
    r.expect_session_id();
    assert!(
        !b.stderr_text().contains("s3cret"),
        "a password reached the log"
    );
}

/// Protects the principal binding: a session begun by alice is refused to bob with the very fault
/// of an unknown session (same bytes but for ts and ID), and still works for alice afterwards.
#[test]
fn a_session_of_another_principal_is_refused_like_an_unknown_one() {
    let b = start();
    let url = b.url("/soap");
    let alice = basic("alice", "s3cret");
    let bob = basic("bob", "hunter2");
    let id = call_as(&url, Some(&alice), &begin(), "").expect_session_id();

    let foreign = call_as(&url, Some(&bob), &cont(&id), &echo("steal"));
    assert_eq!(foreign.http.status, 500, "{}", foreign.describe());
    assert_eq!(
        detail_code(&foreign).as_deref(),
        Some("-1001"),
        "{}",
        foreign.describe()
    );
    assert!(
        foreign.session_id().is_none(),
        "a refused session must not be echoed: {}",
        foreign.describe()
    );

    let unknown_id = "0123456789abcdef0123456789abcdef";
    let unknown = call_as(&url, Some(&bob), &cont(unknown_id), &echo("steal"));
    assert_eq!(
        masked(&foreign, &id),
        masked(&unknown, unknown_id),
        "foreign and unknown faults differ"
    );

    let mine = call_as(&url, Some(&alice), &cont(&id), &echo("still mine"));
    assert_eq!(mine.http.status, 200, "{}", mine.describe());
    assert_eq!(mine.session_id().as_deref(), Some(id.as_str()));
    assert!(mine.text.contains("still mine"), "{}", mine.describe());
}

/// Protects the `optional` mode: anonymous requests are served, an anonymous session is refused to
/// an authenticated user (anonymous is a principal too) and vice versa, and wrong credentials still
/// get 401.
#[test]
fn optional_endpoint_binds_anonymous_sessions_too() {
    let b = start();
    let url = b.url("/open");
    let alice = basic("alice", "s3cret");
    let anon = call_as(&url, None, &begin(), "").expect_session_id();
    let r = call_as(&url, Some(&alice), &cont(&anon), &echo("x"));
    assert_eq!(
        detail_code(&r).as_deref(),
        Some("-1001"),
        "{}",
        r.describe()
    );
    let r = call_as(&url, None, &cont(&anon), &echo("anon"));
    assert_eq!(r.http.status, 200, "{}", r.describe());

    let hers = call_as(&url, Some(&alice), &begin(), "").expect_session_id();
    let r = call_as(&url, None, &cont(&hers), &echo("x"));
    assert_eq!(
        detail_code(&r).as_deref(),
        Some("-1001"),
        "{}",
        r.describe()
    );
    let r = call_as(
        &url,
        Some(&basic("alice", "nope")),
        &cont(&hers),
        &echo("x"),
    );
    assert_eq!(r.http.status, 401, "{}", r.describe());
    let r = call_as(&url, Some(&alice), &cont(&hers), &echo("x"));
    assert_eq!(r.http.status, 200, "{}", r.describe());
}
