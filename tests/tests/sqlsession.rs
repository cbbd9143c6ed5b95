//! The sqlSession dialect end to end (`spec/sqlsession.md`), against a real broker whose `/sql`
//! endpoint has a sql class behind it, every scenario once on SQLite and once on PostgreSQL (a
//! fresh database on the private cluster of `scripts/test.sh`): the `sqloptions:sqlSession` header (initiate, use,
//! terminate, the timeout ceiling, both namespace forms), one database connection pinned to each
//! session (a temporary table and an open transaction outlive their request; terminate and expiry
//! roll back), batches outside a session on a pool, the one session fault for unknown, malformed and
//! foreign IDs (compared byte for byte and by time), the connection limit, bad input; and across
//! two brokers, the connection held by one (requests forwarded to it) and its loss with `kill -9`.

use base64::Engine as _;
use broker_tests::http::Reply;
use broker_tests::postgres::TestDatabase;
use broker_tests::soap::Version;
use broker_tests::sql::{
    self, batch, initiate, messages, rows, session_header, session_id, terminate, use_session,
    OPTIONS_NS,
};
use broker_tests::{wait, BrokerProcess};
use std::time::{Duration, Instant};

const ANN: Option<&str> = Some("ann:ann-pw");
const BOB: Option<&str> = Some("bob:bob-pw");

/// Which database the class uses; a PostgreSQL test database is dropped with it.
enum Db {
    Sqlite,
    Postgres(TestDatabase),
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite => "sqlite:{data_dir}/test.db".to_string(),
            Db::Postgres(db) => db.url().to_string(),
        }
    }
}

/// A named web method of the class, and its route.
const GET_OWNER: &str = r#"
[[server_class.methods]]
name = "GetOwner"
sql = "SELECT owner, balance FROM account WHERE id = @id AND owner <> @not"
parameters = { id = "Int", not = "NVarChar" }

[[service]]
name = "GetOwner"
endpoint = "/sql"
server_class = "db"
"#;

fn start(db: &Db, session_timeout: &str, max_connections: usize) -> BrokerProcess {
    let users: Vec<String> = sql::USERS.iter().map(|u| u.to_string()).collect();
    BrokerProcess::start(&sql::config(
        &users,
        &db.url(),
        session_timeout,
        max_connections,
        GET_OWNER,
    ))
}

/// Each scenario below, once per backend.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $scenario() { super::$scenario(&super::Db::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $scenario() {
                super::$scenario(&super::Db::Postgres(broker_tests::postgres::fresh_database()))
            })*
        }
    };
}

on_both_backends!(
    a_session_keeps_its_connection_from_one_request_to_the_next,
    terminate_rolls_back_and_is_acknowledged_even_when_the_body_fails,
    unknown_malformed_and_foreign_session_ids_get_one_and_the_same_fault,
    the_connection_limit_gives_a_clear_fault_and_frees_with_terminate,
    an_expired_session_loses_its_connection_and_its_transaction,
    bad_input_gets_a_clear_fault_and_runs_nothing,
    a_named_method_runs_its_statement_with_typed_parameters,
    a_pooled_connection_keeps_nothing_of_a_sessionless_batch,
    a_schema_change_in_a_session_is_seen_by_its_next_batch,
    transaction_boundaries_name_the_open_transaction_in_the_header,
);

/// Protects the pool's hygiene: with one connection, so that the next batch surely runs on it, a
/// temporary table and a setting left by a batch outside a session are gone for the next one.
fn a_pooled_connection_keeps_nothing_of_a_sessionless_batch(db: &Db) {
    let b = start(db, "60s", 1);
    let url = b.url("/sql");
    let r = call(
        &url,
        ANN,
        "",
        &batch(
            "CREATE TEMP TABLE leftover (secret TEXT); INSERT INTO leftover VALUES ('ann''s')",
            &[],
        ),
    );
    assert!(messages(&r).is_empty(), "{}", r.describe());
    let r = call(&url, BOB, "", &batch("SELECT secret FROM leftover", &[]));
    assert!(
        messages(&r).iter().any(|m| m.contains("leftover")),
        "bob must not see ann's temporary table: {}",
        r.describe()
    );
}

/// Protects the prepared-statement cache against schema changes: a session selects `*`, adds a
/// column, and selects `*` again: the second rowset has the new column (PostgreSQL would refuse a
/// statement prepared before the change: "cached plan must not change result type").
fn a_schema_change_in_a_session_is_seen_by_its_next_batch(db: &Db) {
    let b = start(db, "60s", 2);
    let url = b.url("/sql");
    let id = session_id(&call(
        &url,
        ANN,
        &initiate(None),
        &batch(
            "CREATE TABLE shape (a INTEGER); INSERT INTO shape VALUES (1)",
            &[],
        ),
    ));
    let select = batch("SELECT * FROM shape", &[]);
    assert_eq!(
        rows(&call(&url, ANN, &use_session(&id), &select), 0),
        vec![vec![Some("1".to_string())]]
    );
    call(
        &url,
        ANN,
        &use_session(&id),
        &batch("ALTER TABLE shape ADD COLUMN b INTEGER", &[]),
    );
    let r = call(&url, ANN, &use_session(&id), &select);
    assert_eq!(
        rows(&r, 0),
        vec![vec![Some("1".to_string()), None]],
        "{}",
        r.describe()
    );
}

/// Protects named web methods: a method declared in the class's configuration runs its statement
/// with the Body element's children as typed parameters, in or out of a session, and answers
/// `<Method>Response`/`<Method>Result` in the request's namespace with the result stream; a value
/// of the wrong type, a missing parameter and an undeclared one are refused before anything runs.
fn a_named_method_runs_its_statement_with_typed_parameters(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let method = |id: &str, not: &str| {
        format!(
            "<b:GetOwner xmlns:b=\"urn:bank\"><b:id>{id}</b:id><b:not>{not}</b:not></b:GetOwner>"
        )
    };
    let r = call(&url, ANN, "", &method("1", "nobody"));
    assert_eq!(r.status, 200, "{}", r.describe());
    let env = sql::parse(&r);
    let body = env.elements().find(|e| e.local == "Body").expect("a Body");
    let response = body
        .child(Some("urn:bank"), "GetOwnerResponse")
        .unwrap_or_else(|| panic!("{}", r.describe()));
    let result = response
        .child(Some("urn:bank"), "GetOwnerResult")
        .unwrap_or_else(|| panic!("{}", r.describe()));
    let row: Vec<String> = result
        .elements()
        .filter(|e| e.local == "SqlRowSet")
        .flat_map(|set| {
            set.elements()
                .filter(|e| e.local == "row")
                .cloned()
                .collect::<Vec<_>>()
        })
        .flat_map(|row| row.elements().map(|v| v.text()).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        row,
        vec!["Ada".to_string(), "100.00".to_string()],
        "{}",
        r.describe()
    );

    let id = session_id(&call(&url, ANN, &initiate(None), &method("1", "Ada")));
    let r = call(&url, ANN, &use_session(&id), &method("2", "Ada"));
    assert!(
        r.text().contains("<owner>Bob</owner>"),
        "in a session too: {}",
        r.describe()
    );

    for (bad, what) in [
        (method("one", "x"), "is not a valid int"),
        ("<b:GetOwner xmlns:b=\"urn:bank\"><b:id>1</b:id></b:GetOwner>".to_string(), "is missing"),
        ("<b:GetOwner xmlns:b=\"urn:bank\"><b:id>1</b:id><b:not>x</b:not><b:evil>1</b:evil></b:GetOwner>".to_string(), "has no parameter"),
    ] {
        let r = call(&url, ANN, "", &bad);
        assert_eq!(r.status, 500, "{}", r.describe());
        assert!(r.text().contains("InvalidParameter") && r.text().contains(what), "{what}: {}", r.describe());
    }
}

fn call(url: &str, login: Option<&str>, header: &str, body: &str) -> Reply {
    sql::post(url, login, Version::V11, header, body)
}

fn select_balance(url: &str, login: Option<&str>, header: &str) -> Vec<Vec<Option<String>>> {
    rows(
        &call(
            url,
            login,
            header,
            &batch("SELECT balance FROM account WHERE id = 1", &[]),
        ),
        0,
    )
}

/// Protects the reason sessions exist: the connection behind one. A temporary table created by the
/// initiating batch is read by the next; it is invisible outside the session; `BEGIN` in one
/// request and `ROLLBACK` or `COMMIT` in a later one act on the same transaction, whose uncommitted
/// change no other connection sees. Also the initiate reply (a base64 ID of 16 bytes, the timeout
/// clamped to the endpoint's ceiling) and the use reply (the request's header echoed).
fn a_session_keeps_its_connection_from_one_request_to_the_next(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");

    let r = call(
        &url,
        ANN,
        &initiate(Some(90)),
        &batch(
            "CREATE TEMP TABLE scratch (n INTEGER); INSERT INTO scratch VALUES (@n)",
            &[("n", "Int", Some("41"))],
        ),
    );
    let id = session_id(&r);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&id)
        .expect("sessionId is base64");
    assert!(raw.len() >= 16, "{} random bytes", raw.len());
    assert_eq!(
        session_header(&r).attr("timeout"),
        Some("60"),
        "90 is clamped to the endpoint's 60"
    );
    let r2 = call(&url, ANN, &initiate(Some(12)), "");
    assert_eq!(
        session_header(&r2).attr("timeout"),
        Some("12"),
        "a shorter timeout is honoured"
    );
    assert_ne!(session_id(&r2), id);

    let r = call(
        &url,
        ANN,
        &use_session(&id),
        &batch("SELECT n + 1 AS answer FROM scratch", &[]),
    );
    assert_eq!(
        rows(&r, 0),
        vec![vec![Some("42".to_string())]],
        "{}",
        r.describe()
    );
    let echoed = session_header(&r);
    assert_eq!(echoed.attr("sessionId"), Some(id.as_str()));
    assert_eq!(
        echoed
            .attrs
            .iter()
            .filter(|a| a.namespace.is_none())
            .count(),
        1,
        "the request's header, exactly"
    );

    let outside = call(&url, ANN, "", &batch("SELECT n FROM scratch", &[]));
    assert!(
        messages(&outside).iter().any(|m| m.contains("scratch")), // SQLite: no such table; PostgreSQL: relation does not exist
        "{}",
        outside.describe()
    );

    // Outside a session a transaction ends with its request: rolled back, and the stream says so.
    let r = call(
        &url,
        ANN,
        "",
        &batch("BEGIN; UPDATE account SET balance = 9 WHERE id = 1", &[]),
    );
    assert!(
        messages(&r).iter().any(|m| m.contains("rolled back")),
        "{}",
        r.describe()
    );
    assert_eq!(
        select_balance(&url, BOB, ""),
        vec![vec![Some("100.00".into())]]
    );

    // A transaction across requests: rolled back, then committed.
    call(
        &url,
        ANN,
        &use_session(&id),
        &batch("BEGIN; UPDATE account SET balance = 5 WHERE id = 1", &[]),
    );
    assert_eq!(
        select_balance(&url, ANN, &use_session(&id)),
        vec![vec![Some("5.00".into())]]
    );
    assert_eq!(
        select_balance(&url, ANN, ""),
        vec![vec![Some("100.00".into())]],
        "uncommitted work is the session's own"
    );
    call(&url, ANN, &use_session(&id), &batch("ROLLBACK", &[]));
    assert_eq!(
        select_balance(&url, ANN, &use_session(&id)),
        vec![vec![Some("100.00".into())]]
    );
    call(
        &url,
        ANN,
        &use_session(&id),
        &batch("BEGIN; UPDATE account SET balance = 7 WHERE id = 1", &[]),
    );
    call(&url, ANN, &use_session(&id), &batch("COMMIT", &[]));
    assert_eq!(
        select_balance(&url, BOB, ""),
        vec![vec![Some("7.00".into())]],
        "committed for everyone"
    );
}

/// Protects `environmentChangeNotifications transactionBoundary`: a session that asked for it at
/// initiate gets `transactionDescriptor` (base64) in its reply header while a transaction is open
/// on its connection (from the `BEGIN` in one request, through later requests and a failed
/// statement, until `COMMIT` or `ROLLBACK`), none after, and a new one for the next transaction; a
/// session that did not ask gets its header echoed as sent, transaction or not.
fn transaction_boundaries_name_the_open_transaction_in_the_header(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let notify = format!(
        "<o:environmentChangeNotifications xmlns:o=\"{OPTIONS_NS}\" transactionBoundary=\"true\"/>{}",
        initiate(None)
    );
    let descriptor = |r: &Reply| {
        assert_eq!(r.status, 200, "{}", r.describe());
        session_header(r)
            .attr("transactionDescriptor")
            .map(str::to_string)
    };

    // Begun in the initiating request itself.
    let r = call(&url, ANN, &notify, &batch("BEGIN", &[]));
    let id = session_id(&r);
    let first = descriptor(&r).unwrap_or_else(|| panic!("open after BEGIN: {}", r.describe()));
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&first)
            .map(|b| b.len()),
        Ok(8),
        "an 8-byte descriptor in base64"
    );
    let r = call(
        &url,
        ANN,
        &use_session(&id),
        &batch("UPDATE account SET balance = 3 WHERE id = 1", &[]),
    );
    assert_eq!(
        descriptor(&r).as_deref(),
        Some(first.as_str()),
        "still the same transaction"
    );
    assert_eq!(session_header(&r).attr("sessionId"), Some(id.as_str()));
    let r = call(
        &url,
        ANN,
        &use_session(&id),
        &batch("SELECT * FROM no_such_table", &[]),
    );
    assert!(!messages(&r).is_empty(), "{}", r.describe());
    assert_eq!(
        descriptor(&r).as_deref(),
        Some(first.as_str()),
        "a failed statement leaves it open"
    );
    let r = call(&url, ANN, &use_session(&id), &batch("ROLLBACK", &[]));
    assert_eq!(descriptor(&r), None, "closed: {}", r.describe());
    let r = call(&url, ANN, &use_session(&id), &batch("SELECT 1 AS one", &[]));
    assert_eq!(descriptor(&r), None, "autocommit: {}", r.describe());

    let r = call(
        &url,
        ANN,
        &use_session(&id),
        &batch("BEGIN; UPDATE account SET balance = 4 WHERE id = 1", &[]),
    );
    let second = descriptor(&r).unwrap_or_else(|| panic!("open again: {}", r.describe()));
    assert_ne!(second, first, "each transaction its own descriptor");
    let r = call(&url, ANN, &use_session(&id), &batch("COMMIT", &[]));
    assert_eq!(descriptor(&r), None, "{}", r.describe());
    assert_eq!(
        select_balance(&url, BOB, ""),
        vec![vec![Some("4.00".into())]]
    );

    // Without the notification: the header as sent, even with a transaction open.
    let r = call(&url, ANN, &initiate(None), &batch("BEGIN", &[]));
    let plain = session_id(&r);
    assert_eq!(descriptor(&r), None, "{}", r.describe());
    let r = call(
        &url,
        ANN,
        &use_session(&plain),
        &batch("SELECT 1 AS one", &[]),
    );
    assert_eq!(descriptor(&r), None, "{}", r.describe());
    let echoed = session_header(&r);
    assert_eq!(
        echoed
            .attrs
            .iter()
            .filter(|a| a.namespace.is_none())
            .map(|a| a.local.as_str())
            .collect::<Vec<_>>(),
        vec!["sessionId"],
        "echoed as sent: {}",
        r.describe()
    );
}

/// Protects terminate: the reply echoes `terminate` and the ID even when the body failed, the
/// session's open transaction is rolled back with its connection, and the ID is unknown after.
/// Also the `https` namespace form, answered in kind.
fn terminate_rolls_back_and_is_acknowledged_even_when_the_body_fails(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let https = OPTIONS_NS.replacen("http:", "https:", 1);
    let r = call(
        &url,
        ANN,
        &format!("<o:sqlSession xmlns:o=\"{https}\" initiate=\"true\"/>"),
        &batch(
            "BEGIN; UPDATE account SET owner = 'Mallory' WHERE id = 1",
            &[],
        ),
    );
    let id = session_id(&r);
    assert!(
        r.text().contains(&format!("xmlns:sqloptions=\"{https}\"")),
        "answered in the form received: {}",
        r.describe()
    );

    let bad_body = batch("SELECT @n", &[("n", "Int", Some("not a number"))]);
    let r = call(&url, ANN, &terminate(&id), &bad_body);
    let h = session_header(&r);
    assert_eq!(
        (h.attr("terminate"), h.attr("sessionId")),
        (Some("true"), Some(id.as_str())),
        "{}",
        r.describe()
    );

    let owner = rows(
        &call(
            &url,
            ANN,
            "",
            &batch("SELECT owner FROM account WHERE id = 1", &[]),
        ),
        0,
    );
    assert_eq!(
        owner,
        vec![vec![Some("Ada".to_string())]],
        "the open transaction was rolled back"
    );
    let r = call(&url, ANN, &use_session(&id), &batch("SELECT 1", &[]));
    assert_eq!(r.status, 500);
    assert!(r.text().contains("SessionIdIsInvalid"), "{}", r.describe());
}

/// Protects anti-enumeration: an unknown ID, a malformed one and another principal's get the same
/// fault, byte for byte (HTTP 500, `terminate="true"` in its header), their bodies do not run, the
/// owner's session is untouched (another principal's terminate included), and the three take about
/// the same time (medians within a wide factor: the check is for a shortcut that skips the store,
/// not for speed).
fn unknown_malformed_and_foreign_session_ids_get_one_and_the_same_fault(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let ann = session_id(&call(&url, ANN, &initiate(None), ""));
    let unknown = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let insert = |n: u32| {
        batch(
            &format!("INSERT INTO account VALUES ({n}, 'intruder', 0)"),
            &[],
        )
    };

    let cases: [(&str, Option<&str>, String); 3] = [
        ("unknown", ANN, unknown),
        ("malformed", ANN, "not-base64!!".to_string()),
        ("foreign", BOB, ann.clone()),
    ];
    let mut first: Option<Vec<u8>> = None;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..15 {
        for (i, (what, login, id)) in cases.iter().enumerate() {
            let started = Instant::now();
            let r = call(&url, *login, &use_session(id), &insert(100 + i as u32));
            times[i].push(started.elapsed());
            assert_eq!(r.status, 500, "{what}: {}", r.describe());
            assert!(
                r.text().contains("terminate=\"true\""),
                "{what}: {}",
                r.describe()
            );
            match &first {
                None => first = Some(r.body.clone()),
                Some(f) => assert_eq!(
                    &r.body, f,
                    "{what} (round {round}) differs from the first fault"
                ),
            }
        }
    }
    let r = call(&url, BOB, &terminate(&ann), "");
    assert_eq!(
        Some(&r.body),
        first.as_ref(),
        "another principal's terminate: the same fault"
    );

    let count = rows(
        &call(
            &url,
            ANN,
            &use_session(&ann),
            &batch("SELECT count(*) FROM account WHERE owner = 'intruder'", &[]),
        ),
        0,
    );
    assert_eq!(
        count,
        vec![vec![Some("0".to_string())]],
        "no refused body ran; the owner's session still works"
    );

    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    let (lo, hi) = (
        medians.iter().min().copied().unwrap_or_default(),
        medians.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        hi <= lo * 4 + Duration::from_millis(5),
        "medians {medians:?} (unknown, malformed, foreign) differ too much"
    );
}

/// Protects the connection limit: `max_workers` connections, each pinned by a session's first
/// batch; one more session's batch gets ConnectionLimitReached at once (queue_limit = 0), and gets
/// a connection once a session has ended.
fn the_connection_limit_gives_a_clear_fault_and_frees_with_terminate(db: &Db) {
    let b = start(db, "60s", 2);
    let url = b.url("/sql");
    let one = session_id(&call(&url, ANN, &initiate(None), &batch("SELECT 1", &[])));
    let _two = session_id(&call(&url, ANN, &initiate(None), &batch("SELECT 2", &[])));
    let r = call(&url, ANN, &initiate(None), &batch("SELECT 3", &[]));
    assert_eq!(r.status, 500, "{}", r.describe());
    assert!(
        r.text().contains("ConnectionLimitReached"),
        "{}",
        r.describe()
    );
    call(&url, ANN, &terminate(&one), "");
    let three = call(&url, ANN, &initiate(None), &batch("SELECT 3 AS n", &[]));
    assert_eq!(
        rows(&three, 0),
        vec![vec![Some("3".to_string())]],
        "{}",
        three.describe()
    );
}

/// Protects expiry: a session idle past its timeout is gone (the session fault), and its open
/// transaction was rolled back with its connection: another connection can write at once instead
/// of waiting for SQLite's lock.
fn an_expired_session_loses_its_connection_and_its_transaction(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let id = session_id(&call(
        &url,
        ANN,
        &initiate(Some(1)),
        &batch("BEGIN; UPDATE account SET balance = 1 WHERE id = 2", &[]),
    ));
    // Polled without touching the session (a request naming it would keep it alive).
    wait::until_true(
        Duration::from_secs(15),
        "the sweeper expiring the session",
        || b.sessions_swept() >= 1,
    );
    let r = call(&url, ANN, &use_session(&id), "");
    assert_eq!(r.status, 500, "the expired ID is refused: {}", r.describe());
    let started = Instant::now();
    let r = call(
        &url,
        ANN,
        "",
        &batch("UPDATE account SET balance = 2 WHERE id = 2", &[]),
    );
    assert!(
        messages(&r).is_empty(),
        "the write went through: {}",
        r.describe()
    );
    assert!(
        started.elapsed() < sql_busy_timeout(),
        "the expired session's lock was released"
    );
    assert_eq!(
        rows(
            &call(
                &url,
                ANN,
                "",
                &batch("SELECT balance FROM account WHERE id = 2", &[])
            ),
            0
        ),
        vec![vec![Some("2.00".to_string())]]
    );
}

/// How long a write blocked by another connection's lock waits before it fails: SQLite's busy
/// timeout in the sql adapter (PostgreSQL would wait for the class's request_timeout).
fn sql_busy_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Protects bad input: each gets a clear fault and runs nothing. A parameter of the wrong type, an
/// unknown method, two sqlSession headers, a request without credentials (401), and SOAP 1.2,
/// which works like 1.1 (its faults in 1.2 form, HTTP 500 as SQL Server answers).
fn bad_input_gets_a_clear_fault_and_runs_nothing(db: &Db) {
    let b = start(db, "60s", 4);
    let url = b.url("/sql");
    let r = call(
        &url,
        ANN,
        "",
        &batch(
            "INSERT INTO account VALUES (50, @o, 0)",
            &[("o", "Int", Some("Zed"))],
        ),
    );
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("InvalidParameter") && r.text().contains("is not a valid int"),
        "{}",
        r.describe()
    );
    let r = call(
        &url,
        ANN,
        "",
        &format!("<sql:sqlBatch xmlns:sql=\"{}\"/>", sql::SQL_NS),
    );
    assert!(r.text().contains("MethodNotFound"), "{}", r.describe());
    let two = format!("{}{}", initiate(None), initiate(None));
    let r = call(
        &url,
        ANN,
        &two,
        &batch("INSERT INTO account VALUES (51, 'x', 0)", &[]),
    );
    assert!(r.text().contains("InvalidHeader"), "{}", r.describe());
    let r = call(
        &url,
        None,
        "",
        &batch("INSERT INTO account VALUES (52, 'x', 0)", &[]),
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    let count = rows(
        &call(
            &url,
            ANN,
            "",
            &batch("SELECT count(*) FROM account WHERE id >= 50", &[]),
        ),
        0,
    );
    assert_eq!(count, vec![vec![Some("0".to_string())]]);

    let r = sql::post(
        &url,
        ANN,
        Version::V12,
        &initiate(None),
        &batch("SELECT 12 AS v", &[]),
    );
    assert_eq!(
        rows(&r, 0),
        vec![vec![Some("12".to_string())]],
        "{}",
        r.describe()
    );
    let r = sql::post(&url, ANN, Version::V12, &use_session("nope"), "");
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("<SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value>"),
        "{}",
        r.describe()
    );
}

/// Protects sqlSession across brokers: two brokers share a store (the `cookie-store` daemon) and a
/// PostgreSQL database. A session initiated at b1 holds its connection there; its batches sent to
/// b2 are forwarded to b1 and run on that same connection (its uncommitted change is visible, its
/// temporary table there). When b1 dies (`kill -9`), the session's next request at b2 gets the
/// SessionConnectionLost fault; the session lives on, its next batch runs on a fresh connection,
/// and what the dead connection had not committed is gone.
#[test]
fn a_session_connection_lives_on_one_broker_and_its_loss_is_reported() {
    let daemon = broker_tests::daemon::Daemon::start();
    let db = broker_tests::postgres::fresh_database();
    let users: Vec<String> = sql::USERS.iter().map(|u| u.to_string()).collect();
    let mut brokers: Vec<BrokerProcess> = (1..=2)
        .map(|i| {
            let cluster = format!(
                "[broker]\nid = \"b{i}\"\n\n[store]\nurl = {:?}\nturn_lease = \"25s\"\nsweep_interval = \"500ms\"\n\n[cluster]\nsecret = \"sqlsession-cluster-secret-0123456789\"\nheartbeat = \"200ms\"\nlease = \"1s\"\nrecovery_interval = \"2s\"\nconnect_timeout = \"500ms\"\nforward_timeout = \"20s\"\n\n",
                daemon.url()
            );
            let config = sql::config(&users, db.url(), "60s", 4, "");
            BrokerProcess::start(&format!("{cluster}{config}"))
        })
        .collect();
    let (b1, b2) = (brokers[0].url("/sql"), brokers[1].url("/sql"));

    let id = session_id(&call(
        &b1,
        ANN,
        &initiate(None),
        &batch(
            "CREATE TEMP TABLE here (n INTEGER); INSERT INTO here VALUES (1); BEGIN; UPDATE account SET owner = 'pending' WHERE id = 1",
            &[],
        ),
    ));
    let r = call(
        &b2,
        ANN,
        &use_session(&id),
        &batch(
            "SELECT n FROM here; SELECT owner FROM account WHERE id = 1",
            &[],
        ),
    );
    assert_eq!(
        rows(&r, 0),
        vec![vec![Some("1".to_string())]],
        "forwarded to b1's connection: {}",
        r.describe()
    );
    assert_eq!(
        rows(&r, 1),
        vec![vec![Some("pending".to_string())]],
        "{}",
        r.describe()
    );

    brokers[0].kill9();
    let lost = wait::until(
        Duration::from_secs(20),
        "b2 reporting the lost connection",
        || {
            let r = call(&b2, ANN, &use_session(&id), &batch("SELECT 1", &[]));
            let text = r.text();
            if text.contains("SessionConnectionLost") {
                Some(r)
            } else {
                // Until b2 sees b1 gone, the request may wait for b1 or be refused as busy.
                assert!(r.status == 500 || r.status == 200, "{}", r.describe());
                None
            }
        },
    );
    assert_eq!(lost.status, 500, "{}", lost.describe());
    let r = call(
        &b2,
        ANN,
        &use_session(&id),
        &batch(
            "SELECT owner FROM account WHERE id = 1; SELECT n FROM here",
            &[],
        ),
    );
    assert_eq!(
        rows(&r, 0),
        vec![vec![Some("Ada".to_string())]],
        "the dead connection's work is gone: {}",
        r.describe()
    );
    assert!(
        messages(&r).iter().any(|m| m.contains("here")),
        "a fresh connection has no temp table: {}",
        r.describe()
    );
    let h = session_header(&r);
    assert_eq!(
        h.attr("sessionId"),
        Some(id.as_str()),
        "the session lives on"
    );
}

/// Protects `fault_status = "soap"`: SOAP 1.2 Sender faults then get HTTP 400 (SOAP 1.2 Part 2),
/// SOAP 1.1 faults keep 500; by default every fault is 500, as SQL Server answers.
#[test]
fn fault_status_soap_gives_soap_12_sender_faults_400() {
    let users: Vec<String> = sql::USERS.iter().map(|u| u.to_string()).collect();
    let config = sql::config(&users, "sqlite:{data_dir}/t.db", "60s", 2, "").replacen(
        "sessions = true",
        "sessions = true\nfault_status = \"soap\"",
        1,
    );
    let b = BrokerProcess::start(&config);
    let url = b.url("/sql");
    let r = sql::post(&url, ANN, Version::V12, &use_session("nope"), "");
    assert_eq!(r.status, 400, "{}", r.describe());
    assert!(r.text().contains("SessionIdIsInvalid"), "{}", r.describe());
    let r = sql::post(&url, ANN, Version::V11, &use_session("nope"), "");
    assert_eq!(r.status, 500, "{}", r.describe());
}
