//! Helpers for the sqlSession dialect's tests: the endpoint's configuration, the `sqlSession`
//! header in its forms, `sqlbatch` bodies, and reading the `SqlResultStream` of a reply.

use crate::http::{self, Reply};
use crate::soap::{envelope, Version};
use crate::xml::Element;
use base64::Engine as _;

pub const OPTIONS_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/Options";
pub const SQL_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP";
pub const PARAM_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter";
pub const STREAM_NS: &str =
    "http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlResultStream";

/// `user:argon2id-hash` of the users `ann` (password `ann-pw`) and `bob` (password `bob-pw`).
pub const USERS: &[&str] = &[
    "ann:$argon2id$v=19$m=19456,t=2,p=1$klBIYbRM60ABwJaDdvZBYw$2m2S7C8HVtcYXjiavFOK33eVM1RdrdJxh0aVEr/v3jY",
    "bob:$argon2id$v=19$m=19456,t=2,p=1$huiYWXpttqI1TlnBL6FFsw$fg/1J7xIhrBreGyCFt4rUe9wPTajB9t6IAGg42veqmo",
];

/// A broker configuration with one sqlsession endpoint at `/sql` (sessions on, the given
/// ceiling) in front of a sql class on `database` (`sqlite:…` or `postgres://…`) of
/// `max_connections`, with a small `account` table, plus `extra` TOML.
pub fn config(
    users: &[String],
    database: &str,
    session_timeout: &str,
    max_connections: usize,
    extra: &str,
) -> String {
    let users: Vec<String> = users.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"[auth]
users = [{users}]

[[endpoint]]
path = "/sql"
dialect = "sqlsession"
sessions = true
session_timeout = "{session_timeout}"

[[server_class]]
name = "db"
adapter = "sql"
database = "{database}"
init_sql = "CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, owner TEXT, balance DECIMAL(12,2)); INSERT INTO account VALUES (1, 'Ada', 100), (2, 'Bob', NULL) ON CONFLICT DO NOTHING;"
context = "sensitive"
min_workers = 1
max_workers = {max_connections}
queue_limit = 0
request_timeout = "20s"

[[service]]
name = "sqlbatch"
endpoint = "/sql"
server_class = "db"
{extra}"#,
        users = users.join(", ")
    )
}

pub fn initiate(timeout: Option<u32>) -> String {
    let t = timeout
        .map(|t| format!(" timeout=\"{t}\""))
        .unwrap_or_default();
    format!("<o:sqlSession xmlns:o=\"{OPTIONS_NS}\" initiate=\"true\"{t}/>")
}

pub fn use_session(id: &str) -> String {
    format!("<o:sqlSession xmlns:o=\"{OPTIONS_NS}\" sessionId=\"{id}\"/>")
}

pub fn terminate(id: &str) -> String {
    format!("<o:sqlSession xmlns:o=\"{OPTIONS_NS}\" sessionId=\"{id}\" terminate=\"true\"/>")
}

/// A `sqlbatch` body; `params` are `(name, sqlDbType, value)`, `None` for NULL.
pub fn batch(sql: &str, params: &[(&str, &str, Option<&str>)]) -> String {
    let mut p = String::new();
    for (name, ty, value) in params {
        let v = match value {
            Some(v) => format!("<p:Value>{}</p:Value>", crate::soap::escape(v)),
            None => "<p:Value xsi:nil=\"true\"/>".to_string(),
        };
        p.push_str(&format!(
            "<p:SqlParameter name=\"{name}\" sqlDbType=\"{ty}\">{v}</p:SqlParameter>"
        ));
    }
    format!(
        "<sql:sqlbatch xmlns:sql=\"{SQL_NS}\" xmlns:p=\"{PARAM_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><sql:BatchCommands>{}</sql:BatchCommands><sql:Parameters>{p}</sql:Parameters></sql:sqlbatch>",
        crate::soap::escape(sql)
    )
}

/// POST an envelope with HTTP Basic `user:password` (None: no credentials).
pub fn post(url: &str, login: Option<&str>, v: Version, header: &str, body: &str) -> Reply {
    let auth = login.map(|l| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(l)
        )
    });
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if v == Version::V11 {
        headers.push(("SOAPAction", "\"sqlbatch\""));
    }
    http::post(
        url,
        Some(v.content_type()),
        &headers,
        envelope(v, header, body),
    )
}

/// The reply's envelope, parsed.
pub fn parse(r: &Reply) -> Element {
    crate::xml::parse(&r.text()).unwrap_or_else(|e| panic!("{e}: {}", r.describe()))
}

/// The reply's `sqlSession` header element (there must be exactly one).
pub fn session_header(r: &Reply) -> Element {
    let env = parse(r);
    let header = env
        .elements()
        .find(|e| e.local == "Header")
        .unwrap_or_else(|| panic!("no Header: {}", r.describe()));
    let found: Vec<&Element> = header
        .elements()
        .filter(|e| {
            e.local == "sqlSession"
                && e.namespace.as_deref().is_some_and(|n| {
                    n.ends_with("//schemas.microsoft.com/sqlserver/2004/SOAP/Options")
                })
        })
        .collect();
    assert_eq!(found.len(), 1, "one sqlSession header: {}", r.describe());
    found[0].clone()
}

/// The `sessionId` an initiate's reply carries.
pub fn session_id(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.describe());
    session_header(r)
        .attr("sessionId")
        .unwrap_or_else(|| panic!("no sessionId: {}", r.describe()))
        .to_string()
}

/// The result stream's items, in order: `("SqlRowSet" | "SqlRowCount" | "SqlMessage" | ..., element)`.
pub fn stream(r: &Reply) -> Vec<Element> {
    assert_eq!(r.status, 200, "{}", r.describe());
    let env = parse(r);
    let body = env
        .elements()
        .find(|e| e.local == "Body")
        .unwrap_or_else(|| panic!("no Body: {}", r.describe()));
    let response = body
        .child(Some(SQL_NS), "sqlbatchResponse")
        .unwrap_or_else(|| panic!("no sqlbatchResponse: {}", r.describe()));
    let result = response
        .child(Some(SQL_NS), "sqlbatchResult")
        .unwrap_or_else(|| panic!("no sqlbatchResult: {}", r.describe()));
    result.elements().cloned().collect()
}

/// The rows of the `n`th rowset as text values (`None` for `xsi:nil`).
pub fn rows(r: &Reply, n: usize) -> Vec<Vec<Option<String>>> {
    let sets: Vec<Element> = stream(r)
        .into_iter()
        .filter(|e| e.is(Some(STREAM_NS), "SqlRowSet"))
        .collect();
    let set = sets
        .get(n)
        .unwrap_or_else(|| panic!("no rowset {n}: {}", r.describe()));
    set.elements()
        .filter(|e| e.local == "row")
        .map(|row| {
            row.elements()
                .map(|v| {
                    let nil = v
                        .attrs
                        .iter()
                        .any(|a| a.local == "nil" && a.value == "true");
                    (!nil).then(|| v.text())
                })
                .collect()
        })
        .collect()
}

/// The texts of the stream's `SqlMessage`s.
pub fn messages(r: &Reply) -> Vec<String> {
    stream(r)
        .into_iter()
        .filter(|e| e.is(Some(STREAM_NS), "SqlMessage"))
        .map(|m| {
            m.elements()
                .find(|c| c.local == "Message")
                .map(|c| c.text())
                .unwrap_or_default()
        })
        .collect()
}
