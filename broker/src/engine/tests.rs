//! Unit tests of the engine's order of processing and of its forwarding policy.
//!
//! The store is a real sled store in a temporary directory; the server classes are in-memory
//! fakes that record what reached them (so a test can tell that a body did *not* run); the other
//! brokers are a fake [`Peer`] that answers what the test says and records what it was sent.
//! Another live broker is a registry entry written to the store, and a session "held" by it is a
//! record whose dialog names one of its workers.

use super::*;
use crate::cluster::{Instance, PeerError};
use crate::config::{Config, Overrides};
use adapters::{BackendReply, ServerClassConfig};
use async_trait::async_trait;
use bytes::Bytes;
use cookie_store::{SessionStore, SledStore, Store};

const HOLDER: &str = "b2/0123456789ab";
const LEASE: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"
[[endpoint]]
path = "/soap"
dialect = "nonstop"

[[server_class]]
name = "echo"
command = ["true"]

[[server_class]]
name = "cart"
command = ["true"]
context = "sensitive"

[[server_class]]
name = "ledger"
command = ["true"]
transactional = true

[[service]]
name = "Echo"
endpoint = "/soap"
server_class = "echo"

[[service]]
name = "CartAdd"
endpoint = "/soap"
server_class = "cart"

[[service]]
name = "Deposit"
endpoint = "/soap"
server_class = "ledger"
"#;

/// A server class that answers every request at once and remembers it.
struct FakeClass {
    config: ServerClassConfig,
    seen: Mutex<Vec<BackendRequest>>,
}

impl FakeClass {
    fn calls(&self) -> Vec<BackendRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl adapters::ServerClass for FakeClass {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn config(&self) -> &ServerClassConfig {
        &self.config
    }

    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError> {
        let status = match request.dialog {
            DialogMarker::None => ReplyStatus::Ok,
            _ => ReplyStatus::DialogContinue,
        };
        let payload = Bytes::from(format!("<{}Response/>", request.service));
        self.seen.lock().expect("lock").push(request);
        Ok(BackendReply {
            open_transaction: None,
            status,
            payload,
            worker: format!("{}#1", self.config.name),
        })
    }

    async fn shutdown(&self, _grace: Duration) {}
}

/// The other brokers: answers with `answer`, records every forwarded request.
struct FakePeer {
    answer: Result<Response, PeerError>,
    sent: Mutex<Vec<(String, String, Request)>>,
}

impl FakePeer {
    fn answering(answer: Result<Response, PeerError>) -> Arc<FakePeer> {
        Arc::new(FakePeer {
            answer,
            sent: Mutex::new(Vec::new()),
        })
    }

    fn sent(&self) -> Vec<(String, String, Request)> {
        self.sent.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Peer for FakePeer {
    async fn forward(
        &self,
        holder: &BrokerInfo,
        endpoint: &str,
        request: &Request,
    ) -> Result<Response, PeerError> {
        self.sent.lock().expect("lock").push((
            holder.instance.clone(),
            endpoint.to_string(),
            request.clone(),
        ));
        self.answer.clone()
    }

    async fn expire(&self, _holder: &BrokerInfo, _id: &str) -> Result<PeerExpiry, PeerError> {
        Ok(PeerExpiry::Expired)
    }
}

struct Rig {
    engine: SessionEngine,
    sessions: Arc<dyn SessionStore>,
    endpoint: EndpointConfig,
    classes: HashMap<String, Arc<FakeClass>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(peer: Option<Arc<dyn Peer>>) -> Rig {
        let config = Config::from_toml("test.toml", CONFIG, &Overrides::default()).expect("config");
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("sled"));
        let mut classes = HashMap::new();
        let mut dyn_classes: HashMap<String, Arc<dyn adapters::ServerClass>> = HashMap::new();
        for c in &config.server_classes {
            let class = Arc::new(FakeClass {
                config: c.clone(),
                seen: Mutex::new(Vec::new()),
            });
            dyn_classes.insert(c.name.clone(), class.clone());
            classes.insert(c.name.clone(), class);
        }
        let registry = Arc::new(Registry::new(
            store.clone(),
            Instance::with_nonce("b1", "aaaaaaaaaaaa"),
            "http://127.0.0.1:1".into(),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ));
        registry.heartbeat_once().await.expect("register");
        // Another broker, live for the whole test.
        store
            .register_broker(&BrokerInfo {
                id: "b2".into(),
                instance: HOLDER.into(),
                advertise: "http://127.0.0.1:2".into(),
                lease_until_ms: now_ms() + 600_000,
            })
            .await
            .expect("register b2");
        registry.refresh().await.expect("refresh");
        let router = Arc::new(crate::router::Roster::from_pointee(
            crate::router::Router::new(&config, &dyn_classes),
        ));
        let coordinator = Arc::new(Coordinator::new(
            store.clone(),
            store.clone(),
            router.clone(),
            registry,
            tokio::runtime::Handle::current(),
        ));
        let engine = SessionEngine::new(store.clone(), router, coordinator, LEASE, peer);
        Rig {
            engine,
            sessions: store,
            endpoint: config.endpoints[0].clone(),
            classes,
            _dir: dir,
        }
    }

    fn calls(&self, class: &str) -> Vec<BackendRequest> {
        self.classes[class].calls()
    }

    /// A session whose dialog (a cart) another live broker holds.
    async fn session_held_by_b2(&self) -> String {
        let id = new_session_id();
        let now = now_ms();
        let record = SessionRecord {
            id: id.clone(),
            endpoint: "/soap".into(),
            dialect: "nonstop".into(),
            principal: Some("alice".into()),
            client_ip: Some("127.0.0.9".parse().expect("ip")),
            created_ms: now,
            last_access_ms: now,
            idle_timeout_ms: 600_000,
            transaction: None,
            subsession: Some(SubsessionState {
                server_class: "cart".into(),
                worker: format!("cart#1@{HOLDER}"),
                broker: "b2".into(),
                dialog_id: id.clone(),
            }),
            dialect_state: Vec::new(),
            expiry_indexed_ms: 0,
        };
        self.sessions
            .create(&record, Durability::Durable)
            .await
            .expect("create");
        id
    }

    /// Whether the session's turn is free now (nobody forgot to give it back).
    async fn turn_is_free(&self, id: &str) -> bool {
        match take_turn(&self.sessions, id, LEASE, Duration::ZERO).await {
            Ok(Some((turn, _))) => {
                turn.release().await;
                true
            }
            _ => false,
        }
    }

    async fn record(&self, id: &str) -> Option<SessionRecord> {
        let (turn, record) = take_turn(&self.sessions, id, LEASE, Duration::ZERO)
            .await
            .expect("take")?;
        turn.release().await;
        Some(record)
    }

    async fn begin(&self, call: Option<&str>) -> String {
        let mut r = request(SessionDirective::Begin, call);
        r.principal = Some("alice".into());
        r.client_ip = Some("127.0.0.9".parse().expect("ip"));
        let response = self.engine.handle(&self.endpoint, &r).await;
        assert!(response.result.is_ok(), "{:?}", response.result);
        response.session.expect("a session").id
    }
}

fn request(session: SessionDirective, service: Option<&str>) -> Request {
    let mut r = Request::new("nonstop");
    r.session = session;
    r.principal = Some("alice".into());
    r.client_ip = Some("127.0.0.9".parse().expect("ip"));
    r.call = service.map(|s| ServiceCall {
        credential: None,
        service: s.to_string(),
        payload: Bytes::from(format!("<{s}/>")),
    });
    r
}

fn cont(id: &str, service: Option<&str>) -> Request {
    request(SessionDirective::Continue(id.to_string()), service)
}

fn kind(response: &Response) -> &FailureKind {
    match &response.result {
        Err(f) => &f.kind,
        Ok(reply) => panic!("expected a failure, got {reply:?}"),
    }
}

// ---- forwarding --------------------------------------------------------------------------

/// A call of the dialog another live broker holds goes there, parsed (principal and client
/// address included), after the turn was given back; the holder's answer is the answer.
#[tokio::test]
async fn a_call_of_a_dialog_another_live_broker_holds_is_forwarded_and_its_answer_returned() {
    let answer = Response {
        session: Some(SessionInfo {
            subsession_open: true,
            ..SessionInfo::new("from-b2".into())
        }),
        result: Ok(Reply::Body(Bytes::from_static(b"<ByB2/>"))),
    };
    let peer = FakePeer::answering(Ok(answer));
    let rig = Rig::new(Some(peer.clone())).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert_eq!(
        response.result.ok(),
        Some(Reply::Body(Bytes::from_static(b"<ByB2/>")))
    );
    assert_eq!(response.session.map(|s| s.id).as_deref(), Some("from-b2"));
    let sent = peer.sent();
    assert_eq!(sent.len(), 1);
    let (holder, endpoint, forwarded) = &sent[0];
    assert_eq!(holder, HOLDER);
    assert_eq!(endpoint, "/soap");
    assert_eq!(forwarded.principal.as_deref(), Some("alice"));
    assert_eq!(forwarded.client_ip, Some("127.0.0.9".parse().expect("ip")));
    assert_eq!(
        forwarded.call.as_ref().map(|c| c.service.as_str()),
        Some("CartAdd")
    );
    assert!(rig.calls("cart").is_empty(), "nothing ran here");
    assert!(rig.turn_is_free(&id).await, "the turn was given back");
}

/// Context-free work touches nothing the holder has: it runs here, no hop.
#[tokio::test]
async fn context_free_work_of_a_session_held_elsewhere_runs_here() {
    let peer = FakePeer::answering(Err(PeerError::Lost("must not be called".into())));
    let rig = Rig::new(Some(peer.clone())).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("Echo")))
        .await;
    assert_eq!(
        response.result.ok(),
        Some(Reply::Body(Bytes::from_static(b"<EchoResponse/>")))
    );
    assert!(peer.sent().is_empty());
    assert_eq!(rig.calls("echo").len(), 1);
    assert!(rig.turn_is_free(&id).await);
}

/// Not delivered to a holder that is still live: retriable, the session lives on, and it is not
/// run here (the holder has its dialog).
#[tokio::test]
async fn a_live_holder_that_cannot_be_reached_gets_a_retriable_failure() {
    let peer = FakePeer::answering(Err(PeerError::NotDelivered("connection refused".into())));
    let rig = Rig::new(Some(peer.clone())).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert!(
        matches!(
            kind(&response),
            FailureKind::Retry {
                cause: RetryCause::Busy,
                ..
            }
        ),
        "{response:?}"
    );
    assert_eq!(response.session.map(|s| s.id), Some(id.clone()));
    assert_eq!(peer.sent().len(), 1);
    assert!(rig.calls("cart").is_empty());
    assert!(rig.turn_is_free(&id).await);
}

/// A call that may have reached the holder is never retried: its outcome is unknown.
#[tokio::test]
async fn a_forwarded_call_that_may_have_run_is_not_retried() {
    let peer = FakePeer::answering(Err(PeerError::Lost("reset after sending".into())));
    let rig = Rig::new(Some(peer.clone())).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert!(
        matches!(kind(&response), FailureKind::Interrupted { message } if message.contains("b2")),
        "{response:?}"
    );
    assert_eq!(peer.sent().len(), 1, "sent once, never again");
}

/// The holder refusing the call (secrets differ) is a configuration error, not a retry.
#[tokio::test]
async fn a_refused_forward_is_an_internal_error() {
    let peer = FakePeer::answering(Err(PeerError::Refused(
        "the cluster secret is wrong".into(),
    )));
    let rig = Rig::new(Some(peer)).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert!(
        matches!(kind(&response), FailureKind::Internal { message, .. } if message.contains("refused")),
        "{response:?}"
    );
}

/// A request that was itself forwarded and finds the session held by yet another broker is not
/// forwarded again: the client retries.
#[tokio::test]
async fn a_forwarded_request_is_never_forwarded_again() {
    let peer = FakePeer::answering(Err(PeerError::Lost("must not be called".into())));
    let rig = Rig::new(Some(peer.clone())).await;
    let id = rig.session_held_by_b2().await;
    let mut r = cont(&id, Some("CartAdd"));
    r.forwarded = true;
    let response = rig.engine.handle(&rig.endpoint, &r).await;
    assert!(
        matches!(kind(&response), FailureKind::Retry { .. }),
        "{response:?}"
    );
    assert!(peer.sent().is_empty());
    assert!(rig.turn_is_free(&id).await);
}

/// Without a peer (no cluster secret) nothing is forwarded, and the failure says why.
#[tokio::test]
async fn without_a_peer_nothing_is_forwarded() {
    let rig = Rig::new(None).await;
    let id = rig.session_held_by_b2().await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert!(
        matches!(kind(&response), FailureKind::Internal { title, .. } if title == "Forwarding disabled"),
        "{response:?}"
    );
    assert!(rig.turn_is_free(&id).await);
}

// ---- order of processing ----------------------------------------------------------------

/// Transaction commands come before the body: a commit with no transaction open fails, and the
/// body never runs; the session lives on and its turn is free.
#[tokio::test]
async fn transaction_commands_run_before_the_body() {
    let rig = Rig::new(None).await;
    let id = rig.begin(None).await;
    let mut r = cont(&id, Some("Echo"));
    r.transaction.command = Some(TxnCommand::Commit);
    let response = rig.engine.handle(&rig.endpoint, &r).await;
    assert_eq!(
        kind(&response),
        &FailureKind::Rule(Rule::NoTransaction(TxnCommand::Commit))
    );
    assert!(rig.calls("echo").is_empty(), "the body did not run");
    assert_eq!(response.session.map(|s| s.id), Some(id.clone()));
    assert!(rig.turn_is_free(&id).await);
}

/// BeginNewTransaction runs the body under the new transaction, whose participant is recorded.
#[tokio::test]
async fn a_new_transaction_begins_before_the_body_runs_under_it() {
    let rig = Rig::new(None).await;
    let mut r = request(SessionDirective::Begin, Some("Deposit"));
    r.transaction.begin_new = true;
    let response = rig.engine.handle(&rig.endpoint, &r).await;
    let id = response.session.expect("a session").id;
    let calls = rig.calls("ledger");
    assert_eq!(calls.len(), 1);
    let txn = calls[0]
        .transaction_id
        .clone()
        .expect("under a transaction");
    let record = rig.record(&id).await.expect("stored");
    let stored = record.transaction.expect("recorded");
    assert_eq!(stored.id, txn);
    assert_eq!(stored.participants.len(), 1);
    // A second BeginNewTransaction while it is open is refused before the body.
    let mut again = cont(&id, Some("Deposit"));
    again.transaction.begin_new = true;
    let response = rig.engine.handle(&rig.endpoint, &again).await;
    assert_eq!(
        kind(&response),
        &FailureKind::Rule(Rule::TransactionInProgress)
    );
    assert_eq!(rig.calls("ledger").len(), 1);
    // A service that is not transactional cannot begin one.
    let mut plain = request(SessionDirective::Begin, Some("Echo"));
    plain.transaction.begin_new = true;
    let response = rig.engine.handle(&rig.endpoint, &plain).await;
    assert!(response.session.is_none(), "a failed Begin tells no ID");
    assert!(matches!(
        kind(&response),
        FailureKind::Rule(Rule::NotTransactional { .. })
    ));
    assert!(rig.calls("echo").is_empty());
}

/// End runs after the body, and not while a dialog is open: the session lives on.
#[tokio::test]
async fn end_with_an_open_dialog_is_refused_and_the_session_lives_on() {
    let rig = Rig::new(None).await;
    let id = rig.begin(Some("CartAdd")).await;
    assert!(rig.record(&id).await.expect("stored").subsession.is_some());
    let mut end = cont(&id, None);
    end.end_session = true;
    let response = rig.engine.handle(&rig.endpoint, &end).await;
    assert_eq!(kind(&response), &FailureKind::Rule(Rule::SubsessionOpen));
    assert!(response.session.is_some_and(|s| s.subsession_open));
    assert!(rig.record(&id).await.is_some(), "not deleted");
    // Another context-sensitive class is not reachable meanwhile; the dialog's class is, on
    // the dialog's worker.
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("CartAdd")))
        .await;
    assert!(response.result.is_ok(), "{response:?}");
    let calls = rig.calls("cart");
    assert_eq!(calls[1].dialog, DialogMarker::Continue);
    assert_eq!(calls[1].worker.as_deref(), Some("cart#1"));
}

/// An unknown service inside a session fails as a rule; the session lives on, its turn comes
/// back, and an unknown session looks exactly like an ended one.
#[tokio::test]
async fn an_unknown_service_keeps_the_session_and_an_ended_session_is_unknown() {
    let rig = Rig::new(None).await;
    let id = rig.begin(None).await;
    let response = rig
        .engine
        .handle(&rig.endpoint, &cont(&id, Some("NoSuchThing")))
        .await;
    assert_eq!(
        kind(&response),
        &FailureKind::Rule(Rule::UnknownService {
            service: "NoSuchThing".into()
        })
    );
    assert_eq!(response.session.map(|s| s.id), Some(id.clone()));
    assert!(rig.turn_is_free(&id).await);

    let mut end = cont(&id, None);
    end.end_session = true;
    let response = rig.engine.handle(&rig.endpoint, &end).await;
    assert_eq!(response.result.ok(), Some(Reply::Ended));
    assert!(response.session.is_none());
    let response = rig.engine.handle(&rig.endpoint, &cont(&id, None)).await;
    assert!(matches!(
        kind(&response),
        FailureKind::UnknownSession { .. }
    ));
}

/// A session used by another principal does not exist for it, and is left intact.
#[tokio::test]
async fn a_session_of_another_principal_is_unknown_and_left_intact() {
    let rig = Rig::new(None).await;
    let id = rig.begin(None).await;
    let mut r = cont(&id, Some("Echo"));
    r.principal = Some("mallory".into());
    let response = rig.engine.handle(&rig.endpoint, &r).await;
    assert!(matches!(
        kind(&response),
        FailureKind::UnknownSession { .. }
    ));
    assert!(rig.calls("echo").is_empty());
    assert!(rig.record(&id).await.is_some());
    assert!(rig.turn_is_free(&id).await);
}
