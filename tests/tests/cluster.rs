//! Several brokers sharing one store, end to end: three real `broker` processes on loopback sharing
//! a real `cookie-store serve` daemon (and, the same scenarios, a real PostgreSQL database), with a
//! shared cluster secret; the `ledger` and `savings` classes of all three keep their accounts in
//! one shared directory (the workers of one class share durable state, whichever broker started
//! them), plus `cart` (dialogs) and `echo`.
//!
//! Protects:
//! - one session's requests spread round-robin over the three brokers: context-free calls run
//!   where they land, transactional calls and dialog calls are forwarded to the broker holding the
//!   session's work, the dialog stays on its worker, and a session begun on one broker ends on
//!   another;
//! - concurrent requests of one session sent to different brokers run one at a time;
//! - the internal forwarding path refuses a wrong or missing secret (403), and a broker without a
//!   secret serves no internal path and says that forwarding is disabled;
//! - an expired session held by another broker is expired by its holder (its dialog worker freed);
//! - `kill -9` of one broker under load: every session carries on at the others, none is lost, its
//!   dialogs answer -356, its in-flight transfers end committed or aborted on both ledgers, never
//!   half;
//! - `kill -9` of the daemon under load, then a restart: nothing acknowledged is lost (sessions,
//!   commits, dialogs).
//!
//! Timing: heartbeat 200 ms, lease 1 s, turn lease 4 s (the classes' request_timeout is 3 s), so a
//! dead broker is taken over within a few seconds; clients retry retriable faults meanwhile.

use broker_tests::daemon::Daemon;
use broker_tests::http::{self, Reply};
use broker_tests::ledger::{
    balance_body, balance_of, classes_in, cont_with, deposit, savings_deposit, withdraw,
};
use broker_tests::postgres::{fresh_database, TestDatabase};
use broker_tests::soap::{
    begin, call11, cont, echo, echo_sleep, end, envelope, expect_header_fault,
    expect_nonstop_fault, SoapReply, Version,
};
use broker_tests::{wait, BrokerProcess, TestConfig};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "cluster-test-secret-0123456789";
const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";

/// Where the brokers keep their sessions.
enum Backend {
    Daemon(Daemon),
    Postgres(TestDatabase),
}

impl Backend {
    fn daemon() -> Backend {
        Backend::Daemon(Daemon::start())
    }

    fn postgres() -> Backend {
        Backend::Postgres(fresh_database())
    }

    fn store_url(&self) -> String {
        match self {
            Backend::Daemon(d) => d.url(),
            Backend::Postgres(db) => db.store_url(),
        }
    }
}

/// How a test wants its brokers.
#[derive(Clone)]
struct Setup {
    secret: bool,
    session_timeout: &'static str,
    /// The cart class's limits (one worker, one dialog: a test can tell when a slot is freed).
    cart_lines: &'static str,
    /// Per broker: the sweeper's interval.
    sweep_intervals: [&'static str; 3],
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            secret: true,
            session_timeout: "30m",
            cart_lines: "min_workers = 1\nmax_workers = 2\nmax_dialogs_per_worker = 16",
            sweep_intervals: ["500ms"; 3],
        }
    }
}

/// Three brokers (`b1`, `b2`, `b3`) sharing one store and one ledger directory.
struct Cluster {
    brokers: Vec<BrokerProcess>,
    /// Each broker's admin listener (`http://…`, token [`ADMIN_TOKEN`]).
    admins: Vec<String>,
    /// Which brokers were killed (requests then skip them).
    dead: Vec<bool>,
    backend: Backend,
    _accounts: tempfile::TempDir,
}

fn cart_class(lines: &str) -> String {
    let mut toml = format!(
        r#"
[[server_class]]
name = "cart"
adapter = "process"
command = ["{{broker_exe}}", "sample-server", "cart"]
context = "sensitive"
request_timeout = "3s"
{lines}
"#
    );
    for op in ["CartAdd", "CartList", "CartCheckout"] {
        toml.push_str(&format!(
            "\n[[service]]\nname = \"{op}\"\nendpoint = \"/soap\"\nserver_class = \"cart\"\n"
        ));
    }
    toml
}

impl Cluster {
    fn start(backend: Backend, setup: Setup) -> Cluster {
        let accounts = tempfile::Builder::new()
            .prefix("cluster-accounts-")
            .tempdir()
            .expect("a temporary directory");
        let root = accounts.path().display().to_string();
        let url = backend.store_url();
        let admins: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", broker_tests::broker::free_port()))
            .collect();
        let brokers = (0..3)
            .map(|i| {
                let cluster = if setup.secret {
                    format!("secret = {SECRET:?}\n")
                } else {
                    String::new()
                } + "heartbeat = \"200ms\"\nlease = \"1s\"\nrecovery_interval = \"2s\"\nconnect_timeout = \"500ms\"\nforward_timeout = \"20s\"\n";
                let config = TestConfig::new()
                    .broker_id(&format!("b{}", i + 1))
                    .store_url(&url)
                    .store_extra("turn_lease = \"4s\"")
                    .cluster(&cluster)
                    .session_timeout(setup.session_timeout)
                    .sweep_interval(setup.sweep_intervals[i])
                    .echo_workers(1, 3)
                    .echo_request_timeout("3s")
                    .extra(&format!(
                        "{}{}\n[admin]\nlisten = \"{}\"\ntoken = \"{ADMIN_TOKEN}\"\n",
                        classes_in(&root, "3s", 4, ""),
                        cart_class(setup.cart_lines),
                        admins[i]
                    ))
                    .render();
                BrokerProcess::start(&config)
            })
            .collect();
        Cluster {
            brokers,
            admins: admins.iter().map(|a| format!("http://{a}")).collect(),
            dead: vec![false; 3],
            backend,
            _accounts: accounts,
        }
    }

    fn url(&self, i: usize) -> String {
        self.brokers[i % 3].url("/soap")
    }

    /// The `n`-th live broker counting from `i`.
    fn live_url(&self, i: usize) -> String {
        (0..3)
            .map(|k| (i + k) % 3)
            .find(|&k| !self.dead[k])
            .map(|k| self.url(k))
            .expect("a live broker")
    }

    fn kill9(&mut self, i: usize) {
        self.dead[i] = true;
        self.brokers[i].kill9();
    }
}

/// POST a SOAP 1.1 envelope without panicking on a connection error (a broker killed under load).
fn try_call(url: &str, header: &str, body: &str) -> Result<SoapReply, String> {
    let target = http::parse_url(url);
    let payload = envelope(Version::V11, header, body);
    let mut stream = TcpStream::connect_timeout(&target.addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        payload.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(payload.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_reply(&raw).map(SoapReply::new)
}

fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the connection closed before a complete reply")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err("the connection closed in the middle of the body".into());
        }
        body.truncate(len);
    }
    Ok(Reply {
        status,
        reason: String::new(),
        headers,
        body,
    })
}

fn detail_code(r: &SoapReply) -> Option<i64> {
    r.fault().and_then(|f| f.detail_code)
}

fn subsession_on(r: &SoapReply) -> bool {
    r.session_headers()
        .first()
        .and_then(|h| h.attr("Subsession"))
        .is_some_and(|v| v == "on")
}

fn add(item: &str) -> String {
    format!("<CartAdd><item>{item}</item><qty>1</qty></CartAdd>")
}

/// The item names of a CartAdd/CartList reply.
fn items(r: &SoapReply) -> Vec<String> {
    let body = r
        .expect_ok()
        .unwrap_or_else(|| panic!("a cart response expected: {}", r.describe()));
    body.children_named(None, "item")
        .map(|i| i.child_local("name").map(|n| n.text()).unwrap_or_default())
        .collect()
}

// ---- one session over three brokers --------------------------------------------------------

fn round_robin(backend: Backend) {
    let c = Cluster::start(backend, Setup::default());
    let at = |i: usize| c.url(i);

    // Begun on b1; context-free calls run wherever they land.
    let r = call11(&at(0), &begin(), &echo("hello"));
    r.expect_echo("hello");
    let id = r.expect_session_id();
    for i in 0..6 {
        let r = call11(&at(i), &cont(&id), &echo(&format!("e{i}")));
        r.expect_echo(&format!("e{i}"));
        assert_eq!(
            r.session_id().as_deref(),
            Some(id.as_str()),
            "{}",
            r.describe()
        );
    }

    // A transfer begun on b2 (its ledger worker becomes the participant), continued on b3 and b1
    // (forwarded to b2), committed from b3.
    call11(&at(0), "", &deposit("rr", 100)).expect_ok();
    let r = call11(
        &at(1),
        &cont_with(&id, "BeginNewTransaction=\"yes\""),
        &withdraw("rr", 30),
    );
    assert_eq!(balance_of(&r), 70, "{}", r.describe());
    let r = call11(&at(2), &cont(&id), &savings_deposit("rr", 30));
    assert_eq!(balance_of(&r), 30, "{}", r.describe());
    let r = call11(&at(0), &cont(&id), &balance_body("", "rr"));
    assert_eq!(balance_of(&r), 70, "inside the transaction, seen from b1");
    for i in 0..3 {
        assert_eq!(
            balance_of(&call11(&at(i), "", &balance_body("", "rr"))),
            100,
            "uncommitted work is invisible at b{}",
            i + 1
        );
    }
    let r = call11(
        &at(2),
        &cont_with(&id, "CurrentTransactionCommand=\"End\""),
        "",
    );
    r.expect_ok();
    assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    for i in 0..3 {
        assert_eq!(balance_of(&call11(&at(i), "", &balance_body("", "rr"))), 70);
        assert_eq!(
            balance_of(&call11(&at(i), "", &balance_body("Savings", "rr"))),
            30
        );
    }

    // A dialog opened on b3 stays on its worker whichever broker the client asks.
    let mut expected = Vec::new();
    for i in 0..6 {
        let item = format!("item{i}");
        let r = call11(&at(2 + i), &cont(&id), &add(&item));
        expected.push(item);
        assert_eq!(
            items(&r),
            expected,
            "one cart, one worker: {}",
            r.describe()
        );
        assert!(subsession_on(&r), "{}", r.describe());
        // A context-free call meanwhile, elsewhere, leaves the dialog open.
        let r = call11(&at(3 + i), &cont(&id), &echo("meanwhile"));
        r.expect_echo("meanwhile");
        assert!(subsession_on(&r), "{}", r.describe());
    }
    // The cart runs on b3's workers only: b1 and b2 never served it.
    let r = call11(&at(0), &cont(&id), "<CartCheckout/>");
    let total = r
        .expect_ok()
        .and_then(|b| b.child_local("total"))
        .map(|t| t.text());
    assert_eq!(total.as_deref(), Some("6"), "{}", r.describe());
    assert!(!subsession_on(&r));

    // Begun on b1, ended on b2; then no broker knows it.
    let r = call11(&at(1), &end(&id), "");
    r.expect_ok();
    r.expect_no_session();
    for i in 0..3 {
        expect_header_fault(&call11(&at(i), &cont(&id), &echo("x")), -1001);
    }
}

#[test]
fn one_session_round_robin_over_three_brokers_sharing_the_daemon() {
    round_robin(Backend::daemon());
}

#[test]
fn one_session_round_robin_over_three_brokers_sharing_postgres() {
    round_robin(Backend::postgres());
}

// ---- serialisation across brokers ---------------------------------------------------------

/// Six requests of one session, each sleeping 300 ms in the backend, sent at once to the three
/// brokers: run one at a time, the last answer comes no sooner than 6 × 300 ms after the first
/// was sent (run side by side, they would all be done after about 300 ms). A lower bound only:
/// a slow machine cannot make it fail.
fn serialised(backend: Backend) {
    let c = Cluster::start(backend, Setup::default());
    let id = broker_tests::soap::begin_session(&c.url(0));
    let started = Instant::now();
    let replies: Vec<SoapReply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let url = c.url(i);
                let id = id.clone();
                s.spawn(move || call11(&url, &cont(&id), &echo_sleep(&format!("s{i}"), 300)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    for (i, r) in replies.iter().enumerate() {
        r.expect_echo(&format!("s{i}"));
    }
    assert!(
        elapsed >= Duration::from_millis(6 * 300),
        "six 300 ms requests of one session finished in {elapsed:?}: they overlapped"
    );
}

#[test]
fn concurrent_requests_of_one_session_at_different_brokers_are_serialised() {
    serialised(Backend::daemon());
}

#[test]
fn concurrent_requests_of_one_session_at_different_brokers_are_serialised_postgres() {
    serialised(Backend::postgres());
}

// ---- the internal path and its secret -------------------------------------------------------

#[test]
fn a_forwarded_request_with_a_wrong_or_missing_secret_is_refused() {
    let c = Cluster::start(Backend::daemon(), Setup::default());
    let internal = c.brokers[0].url("/_cluster/forward");
    // What a client would send: not what brokers send each other (the engine's parsed request).
    let body = envelope(Version::V11, &begin(), &echo("inside"));
    let post = |headers: &[(&str, &str)]| {
        http::post(
            &internal,
            Some("application/x-soap-broker-forward"),
            headers,
            body.as_bytes(),
        )
    };
    let r = post(&[("X-Cluster-Secret", "not-the-secret-at-all")]);
    assert_eq!(r.status, 403, "{}", r.describe());
    assert_eq!(r.media_type().as_deref(), Some("text/plain"));
    assert!(r.text().contains("wrong"), "{}", r.describe());
    let r = post(&[]);
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(r.text().contains("missing"), "{}", r.describe());
    let r = http::post(
        &c.brokers[0].url("/_cluster/expire"),
        Some("text/plain"),
        &[("X-Cluster-Secret", "not-the-secret-at-all")],
        "0123".as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(c.brokers[0].stderr_text().contains("internal call refused"));
    // The right secret, but not a forwarded request: refused as unreadable, nothing run. (The
    // forwarding itself is what every other test of this file exercises.)
    let r = post(&[("X-Cluster-Secret", SECRET)]);
    assert_eq!(r.status, 400, "{}", r.describe());
    assert!(r.text().contains("not understood"), "{}", r.describe());
}

#[test]
fn without_a_secret_nothing_is_forwarded_and_no_internal_path_is_served() {
    let setup = Setup {
        secret: false,
        ..Setup::default()
    };
    let c = Cluster::start(Backend::daemon(), setup);
    let r = call11(&c.url(0), &begin(), &add("solo"));
    let id = r.expect_session_id();
    assert!(subsession_on(&r));
    // Context-free work runs anywhere; the dialog is b1's, and b2 may not forward.
    call11(&c.url(1), &cont(&id), &echo("free")).expect_echo("free");
    let r = call11(&c.url(1), &cont(&id), "<CartList/>");
    let f = expect_nonstop_fault(&r, "SOAP-ENV:Server", -1);
    let text = f.detail_string.unwrap_or_default();
    assert!(text.contains("held by broker b1"), "{text}");
    assert!(text.contains("forwarding is disabled"), "{text}");
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "the session lives on"
    );
    assert_eq!(
        items(&call11(&c.url(0), &cont(&id), "<CartList/>")),
        vec!["solo"]
    );
    let r = http::post(
        &c.brokers[1].url("/_cluster/forward"),
        Some("text/xml"),
        &[("X-Cluster-Secret", SECRET)],
        envelope(Version::V11, &begin(), "").as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.describe());
}

// ---- expiry of a session another broker holds ------------------------------------------------

/// b1 holds the session's dialog on its only cart worker, which has room for one dialog; b1's own
/// sweeper is idle for the test's length, so b2's or b3's sweeper finds the session expired. They
/// must have b1 expire it (abort the dialog on its worker): a new dialog on b1 then fits.
#[test]
fn an_expired_session_held_by_another_broker_is_expired_by_its_holder() {
    let setup = Setup {
        session_timeout: "1s",
        cart_lines: "min_workers = 1\nmax_workers = 1\nmax_dialogs_per_worker = 1\nqueue_limit = 0",
        sweep_intervals: ["1h", "200ms", "200ms"],
        ..Setup::default()
    };
    let c = Cluster::start(Backend::daemon(), setup);
    let first = call11(&c.url(0), &begin(), &add("old")).expect_session_id();
    let r = call11(&c.url(0), &begin(), &add("new"));
    assert!(
        r.fault().is_some(),
        "no room for a second dialog: {}",
        r.describe()
    );
    // Expired after 1 s; the other brokers' sweepers pass every 200 ms.
    let fits = wait::poll(Duration::from_secs(10), || {
        let r = call11(&c.url(0), &begin(), &add("new"));
        (r.status() == 200).then_some(r)
    })
    .expect("the expired session's dialog slot is freed within 10 s");
    assert_eq!(items(&fits), vec!["new"]);
    expect_header_fault(&call11(&c.url(1), &cont(&first), "<CartList/>"), -1001);
}

/// Protects ending a session through another broker's admin API: b1 holds the session's dialog;
/// `DELETE /sessions/{id}` on b2's admin listener has b1 end it (the dialog aborted on its worker:
/// its one slot fits a new dialog at once), and the session's next request, at b3, gets -1001.
#[test]
fn an_operator_ends_a_session_another_broker_holds() {
    let setup = Setup {
        cart_lines: "min_workers = 1\nmax_workers = 1\nmax_dialogs_per_worker = 1\nqueue_limit = 0",
        ..Setup::default()
    };
    let c = Cluster::start(Backend::daemon(), setup);
    let id = call11(&c.url(0), &begin(), &add("held")).expect_session_id();
    assert!(
        call11(&c.url(0), &begin(), &add("no room"))
            .fault()
            .is_some(),
        "the one dialog slot is taken"
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = http::request(
        "DELETE",
        &format!("{}/sessions/{id}", c.admins[1]),
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "{\"ended\":true}"),
        "{}",
        r.describe()
    );
    expect_header_fault(&call11(&c.url(2), &cont(&id), "<CartList/>"), -1001);
    let r = call11(&c.url(0), &begin(), &add("new"));
    assert_eq!(
        items(&r),
        vec!["new"],
        "the dialog slot was freed: {}",
        r.describe()
    );
}

// ---- kill -9 under load ----------------------------------------------------------------------

/// What one client of the load saw.
#[derive(Debug, Default)]
struct Tally {
    /// Transfers whose commit was acknowledged.
    committed: i64,
    /// Transfers whose commit got no answer (the broker died under it): committed or not.
    unknown: i64,
    /// Transfers aborted (-1021, or aborted by the client after a failure inside).
    aborted: i64,
    /// Cart items whose CartAdd was acknowledged in the current dialog.
    cart: Vec<String>,
    /// Dialogs reported lost (-356).
    lost_dialogs: usize,
}

/// Whether a fault is one a client retries: busy / holder unreachable / store unavailable
/// (-352), a timeout (-351), an account still locked by a transaction being resolved.
fn retriable(r: &SoapReply) -> bool {
    match detail_code(r) {
        Some(-352) | Some(-351) => true,
        _ => r.text.contains("is locked by another transaction"),
    }
}

/// The load: `clients` sessions, each doing `rounds` rounds of (echo, transfer of 1 from its
/// ledger account to its savings account, cart add), every request on the next live broker.
/// `during` runs once every client has done `kill_after` rounds (the crash), while they go on.
fn run_load(
    c: &mut Cluster,
    clients: usize,
    rounds: usize,
    kill_after: usize,
    during: impl FnOnce(&mut Cluster),
    dialogs_may_be_lost: bool,
) -> Vec<(String, Tally)> {
    for t in 0..clients {
        call11(&c.url(0), "", &deposit(&format!("acct{t}"), 100)).expect_ok();
    }
    let progress = AtomicUsize::new(0);
    let cluster = std::sync::RwLock::new(c);
    let results: Vec<(String, Tally)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..clients)
                .map(|t| {
                    let cluster = &cluster;
                    let progress = &progress;
                    s.spawn(move || {
                        let mut turn = t;
                        let mut next_url = || {
                            turn += 1;
                            cluster.read().expect("cluster").live_url(turn)
                        };
                        let account = format!("acct{t}");
                        let mut tally = Tally::default();
                        let id = wait::until(Duration::from_secs(30), "a Begin to succeed", || {
                            match try_call(&next_url(), &begin(), &echo("start")) {
                                Ok(r) if r.status() == 200 => Some(r.expect_session_id()),
                                _ => None,
                            }
                        });
                        for round in 0..rounds {
                            one_round(
                                &id,
                                &account,
                                round,
                                &mut next_url,
                                &mut tally,
                                dialogs_may_be_lost,
                            );
                            if round + 1 == kill_after {
                                progress.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        (id, tally)
                    })
                })
                .collect();
        // The crash, once every client is well under way.
        wait::until_true(
            Duration::from_secs(60),
            &format!("all {clients} clients to finish {kill_after} rounds"),
            || progress.load(Ordering::SeqCst) >= clients,
        );
        {
            let mut c = cluster.write().expect("cluster");
            during(&mut c);
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    results
}

/// What became of a request sent under load.
enum Sent {
    Answer(Box<SoapReply>),
    /// No answer after the request may have been delivered (the broker died under it, or the one
    /// it was forwarded to did: -302): whether it was done is unknown.
    Unknown(String),
}

/// Send until the answer is neither a refused connection nor a retriable fault (at most 30 s).
/// An `idempotent` request is also sent again after an unknown outcome.
fn send(
    next_url: &mut dyn FnMut() -> String,
    header: &str,
    body: &str,
    what: &str,
    idempotent: bool,
) -> Sent {
    let mut last = String::new();
    let sent = wait::poll(Duration::from_secs(30), || {
        match try_call(&next_url(), header, body) {
            Ok(r) if retriable(&r) => {
                last = r.describe();
                None
            }
            Ok(r) if detail_code(&r) == Some(-302) => {
                last = r.describe();
                (!idempotent).then(|| Sent::Unknown(r.describe()))
            }
            Ok(r) => Some(Sent::Answer(Box::new(r))),
            // Refused: that broker is dead; the next one is asked.
            Err(e) if e.starts_with("connect") => {
                last = e;
                None
            }
            Err(e) => {
                let unknown = (!idempotent).then(|| Sent::Unknown(e.clone()));
                last = e;
                unknown
            }
        }
    });
    sent.unwrap_or_else(|| panic!("{what}: no answer within 30 s; the last: {last}"))
}

fn one_round(
    id: &str,
    account: &str,
    round: usize,
    next_url: &mut dyn FnMut() -> String,
    tally: &mut Tally,
    dialogs_may_be_lost: bool,
) {
    let alive = |r: &SoapReply, what: &str| {
        assert_eq!(
            r.session_id().as_deref(),
            Some(id),
            "{what}: the session must live on: {}",
            r.describe()
        );
    };
    let answer = |sent: Sent, what: &str| match sent {
        Sent::Answer(r) => *r,
        Sent::Unknown(e) => panic!("{what}: {e}"),
    };
    // 1. Context-free.
    let r = answer(
        send(next_url, &cont(id), &echo("ping"), "echo", true),
        "echo",
    );
    r.expect_echo("ping");
    alive(&r, "echo");

    // 2. A transfer. -1021 (the broker holding it stopped) may come at any step; after an unknown
    // outcome inside the transaction the client aborts it (whatever it did is then undone).
    let abort = |tally: &mut Tally, next_url: &mut dyn FnMut() -> String| {
        let header = cont_with(id, "CurrentTransactionCommand=\"Abort\"");
        let r = answer(send(next_url, &header, "", "abort", true), "abort");
        assert!(
            r.fault().is_none() || matches!(detail_code(&r), Some(-1021) | Some(-1014)),
            "abort: {}",
            r.describe()
        );
        alive(&r, "abort");
        tally.aborted += 1;
    };
    let begin_header = cont_with(id, "BeginNewTransaction=\"yes\"");
    let begun = loop {
        match send(
            next_url,
            &begin_header,
            &withdraw(account, 1),
            "withdraw",
            false,
        ) {
            Sent::Answer(r) if r.fault().is_none() => break true,
            // A transaction the broker holding it lost, reported now: begin again.
            Sent::Answer(r) if detail_code(&r) == Some(-1021) => alive(&r, "withdraw"),
            // One is open after all (an earlier unknown outcome): abort it, begin again.
            Sent::Answer(r) if detail_code(&r) == Some(-1012) => abort(tally, next_url),
            Sent::Answer(r) => panic!("withdraw: {}", r.describe()),
            Sent::Unknown(_) => {
                abort(tally, next_url);
                break false;
            }
        }
    };
    if begun {
        match send(
            next_url,
            &cont(id),
            &savings_deposit(account, 1),
            "deposit",
            false,
        ) {
            Sent::Answer(r) if r.fault().is_none() => {
                let header = cont_with(id, "CurrentTransactionCommand=\"End\"");
                match send(next_url, &header, "", "commit", false) {
                    Sent::Answer(r) if r.fault().is_none() => tally.committed += 1,
                    Sent::Answer(r) if detail_code(&r) == Some(-1021) => {
                        alive(&r, "commit");
                        tally.aborted += 1
                    }
                    Sent::Answer(r) => panic!("commit: {}", r.describe()),
                    Sent::Unknown(_) => tally.unknown += 1,
                }
            }
            Sent::Answer(r) if detail_code(&r) == Some(-1021) => {
                alive(&r, "deposit");
                tally.aborted += 1
            }
            Sent::Answer(r) => panic!("deposit: {}", r.describe()),
            Sent::Unknown(_) => abort(tally, next_url),
        }
    }

    // 3. The cart.
    let item = format!("r{round}");
    let lost = |tally: &mut Tally, r: &SoapReply| {
        assert!(dialogs_may_be_lost, "a dialog was lost: {}", r.describe());
        alive(r, "cart");
        tally.lost_dialogs += 1;
        tally.cart.clear();
    };
    loop {
        match send(next_url, &cont(id), &add(&item), "cart", false) {
            Sent::Answer(r) if r.fault().is_none() => {
                tally.cart.push(item.clone());
                assert_eq!(
                    items(&r),
                    tally.cart,
                    "the dialog stays on its worker: {}",
                    r.describe()
                );
                break;
            }
            Sent::Answer(r) if detail_code(&r) == Some(-356) => lost(tally, &r),
            Sent::Answer(r) => panic!("cart: {}", r.describe()),
            // Whether the item went in is unknown: ask.
            Sent::Unknown(_) => {
                let r = answer(
                    send(next_url, &cont(id), "<CartList/>", "cart list", true),
                    "cart list",
                );
                if detail_code(&r) == Some(-356) {
                    lost(tally, &r);
                } else {
                    tally.cart = items(&r);
                    if tally.cart.last() == Some(&item) {
                        break;
                    }
                }
            }
        }
    }
}

/// After the load: each account's two balances add up to what it started with (no transfer half
/// done), savings hold every acknowledged commit, the accounts are free, every session answers.
fn check_after_load(c: &Cluster, results: &[(String, Tally)]) {
    for (t, (id, tally)) in results.iter().enumerate() {
        let account = format!("acct{t}");
        // Free again (prepared work of a dead broker resolved): a plain deposit goes through.
        let free = wait::poll(Duration::from_secs(20), || {
            let r = try_call(&c.live_url(t), "", &deposit(&account, 0)).ok()?;
            (r.fault().is_none()).then_some(r)
        });
        assert!(
            free.is_some(),
            "account {account} is still locked 20 s after the crash"
        );
        let ledger = balance_of(&call11(&c.live_url(t), "", &balance_body("", &account)));
        let savings = balance_of(&call11(
            &c.live_url(t + 1),
            "",
            &balance_body("Savings", &account),
        ));
        assert_eq!(
            ledger + savings,
            100,
            "{account}: a transfer was half done ({tally:?})"
        );
        assert!(
            savings >= tally.committed && savings <= tally.committed + tally.unknown,
            "{account}: savings {savings} but {tally:?}"
        );
        let r = call11(&c.live_url(t + 2), &cont(id), &echo("after"));
        r.expect_echo("after");
        assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    }
}

fn kill_a_broker_under_load(backend: Backend) {
    let mut c = Cluster::start(backend, Setup::default());
    let results = run_load(&mut c, 6, 8, 3, |c| c.kill9(1), true);
    eprintln!("{results:#?}");
    check_after_load(&c, &results);
    let committed: i64 = results.iter().map(|(_, t)| t.committed).sum();
    assert!(committed > 0, "some transfers committed: {results:?}");
}

/// Protects draining under load: b2 is drained (through its admin listener) while clients run
/// transfers, carts and continues over all three brokers. Nothing is lost: no request without an
/// answer, no dialog lost, no session lost, no half transfer. Once the clients have ended their
/// dialogs (those b2 holds included: forwarded to it), b2 exits by itself, status 0.
#[test]
fn draining_one_broker_under_load_loses_no_request() {
    let mut c = Cluster::start(Backend::daemon(), Setup::default());
    let results = run_load(
        &mut c,
        6,
        8,
        3,
        |c| {
            let bearer = format!("Bearer {ADMIN_TOKEN}");
            let r = http::request(
                "POST",
                &format!("{}/drain", c.admins[1]),
                &[("Authorization", bearer.as_str())],
                Vec::new(),
            );
            assert_eq!(r.status, 202, "{}", r.describe());
            // Clients stop choosing it (a load balancer does the same from /healthz).
            c.dead[1] = true;
        },
        false,
    );
    eprintln!("{results:#?}");
    check_after_load(&c, &results);
    for (id, t) in &results {
        assert_eq!(t.unknown, 0, "session {id}: a request without an answer");
        assert_eq!(t.lost_dialogs, 0, "session {id}: a dialog lost");
    }
    // The drain waits for the dialogs b2 holds: the clients finish theirs (abort, end).
    for (t, (id, _)) in results.iter().enumerate() {
        let abort = broker_tests::soap::session(&format!(
            "SessionID=\"{id}\" SessionCommand=\"AbortSubsession\""
        ));
        let r = call11(&c.live_url(t), &abort, "");
        assert!(r.fault().is_none(), "abort the dialog: {}", r.describe());
        call11(&c.live_url(t), &end(id), "").expect_no_session();
    }
    let exited = wait::poll(Duration::from_secs(15), || {
        (!c.brokers[1].is_running()).then_some(())
    });
    assert!(
        exited.is_some(),
        "the drained broker did not exit: {}",
        c.brokers[1].stderr_text()
    );
    assert_eq!(
        c.brokers[1].terminate().code(),
        Some(0),
        "{}",
        c.brokers[1].stderr_text()
    );
}

#[test]
fn kill_9_of_one_broker_under_load_loses_no_session_and_no_half_transfer() {
    kill_a_broker_under_load(Backend::daemon());
}

#[test]
fn kill_9_of_one_broker_under_load_loses_no_session_and_no_half_transfer_postgres() {
    kill_a_broker_under_load(Backend::postgres());
}

#[test]
fn kill_9_of_the_daemon_under_load_then_restart_loses_nothing_acknowledged() {
    let mut c = Cluster::start(Backend::daemon(), Setup::default());
    let results = run_load(
        &mut c,
        6,
        8,
        3,
        |c| {
            let brokers = &c.brokers;
            let Backend::Daemon(d) = &mut c.backend else {
                unreachable!("a daemon cluster")
            };
            d.kill9();
            // The outage lasts until a broker has noticed it (a failed lease renewal, heartbeat
            // 200 ms), so the load certainly runs through it.
            wait::until_true(
                Duration::from_secs(20),
                "a broker to notice the daemon's death",
                || {
                    brokers.iter().any(|b| {
                        b.stderr_text()
                            .contains("cannot renew this broker's registry lease")
                    })
                },
            );
            d.restart();
        },
        false,
    );
    // The outage was seen (the load ran through it).
    assert!(
        c.brokers.iter().any(|b| b
            .stderr_text()
            .contains("cannot renew this broker's registry lease")),
        "no broker noticed the daemon's death"
    );
    eprintln!("{results:#?}");
    check_after_load(&c, &results);
    // Every acknowledged cart item is in its dialog, on its worker.
    for (t, (id, tally)) in results.iter().enumerate() {
        let r = call11(&c.url(t), &cont(id), "<CartList/>");
        assert_eq!(items(&r), tally.cart, "{}", r.describe());
        assert_eq!(tally.lost_dialogs, 0);
    }
}
