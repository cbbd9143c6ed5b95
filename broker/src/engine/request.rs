//! What a dialect asks of the engine, and what the engine answers.

use super::failure::Failure;
use bytes::Bytes;
use cookie_store::StoreError;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;

/// Which session a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionDirective {
    /// Outside any session.
    None,
    /// Begin a new session.
    Begin,
    /// Continue (and perhaps end) the session with this ID.
    Continue(String),
}

/// Commit or abort the session's current transaction before the body runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnCommand {
    Commit,
    Abort,
}

/// The transaction part of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionDirective {
    pub command: Option<TxnCommand>,
    pub begin_new: bool,
}

/// A call of a service: the Body's first element.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceCall {
    /// The element's local name.
    pub service: String,
    /// The element, self-contained XML.
    pub payload: Bytes,
    /// The client's credentials, on an endpoint whose classes bind as the client
    /// (`auth = "directory"`); given only to such classes.
    #[serde(default)]
    pub credential: Option<adapters::Credential>,
}

/// One request, dialect-neutral. It is also what one broker sends another that holds the
/// session's work (`crate::cluster::peer`): already parsed, with the principal and client address,
/// so the holder neither parses the envelope nor runs the dialect again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The dialect's name, recorded in new sessions.
    pub dialect: Cow<'static, str>,
    pub session: SessionDirective,
    /// End the session after the body ran.
    pub end_session: bool,
    /// With `end_session`: end it even when the body failed, and abort an open dialog rather than
    /// refuse the end (sqlSession's terminate; NonStop refuses an End with a dialog open, -1016).
    #[serde(default)]
    pub end_regardless: bool,
    /// A new session's idle timeout as the client asked for it; the endpoint's `session_timeout`
    /// is the ceiling. `None`: the endpoint's.
    #[serde(default)]
    pub idle_timeout: Option<std::time::Duration>,
    pub transaction: TransactionDirective,
    /// A new session's small state of the dialect's own (sqlSession's notification options),
    /// stored with the session and handed back in every [`SessionInfo`].
    #[serde(default)]
    pub dialect_state: Vec<u8>,
    pub abort_subsession: bool,
    pub call: Option<ServiceCall>,
    /// The authenticated principal (None: anonymous).
    pub principal: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Another broker forwarded this request here (it found this broker holding the session):
    /// it is never forwarded again. Set by the receiving broker, never sent.
    #[serde(skip)]
    pub forwarded: bool,
    /// The client's W3C trace, passed on to another broker and to http backends
    /// (`crate::tracecontext`).
    #[serde(default)]
    pub trace: Option<crate::tracecontext::TraceParent>,
}

impl Request {
    /// A request outside any session with no body; dialects fill in the rest.
    pub fn new(dialect: &'static str) -> Request {
        Request {
            dialect: Cow::Borrowed(dialect),
            session: SessionDirective::None,
            end_session: false,
            end_regardless: false,
            idle_timeout: None,
            transaction: TransactionDirective::default(),
            dialect_state: Vec::new(),
            abort_subsession: false,
            call: None,
            principal: None,
            client_ip: None,
            forwarded: false,
            trace: None,
        }
    }
}

/// The session as the reply should present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub subsession_open: bool,
    /// What the dialect asked to keep with the session when it began ([`Request::dialect_state`]).
    #[serde(default)]
    pub dialect_state: Vec<u8>,
    /// The transaction the session's server holds open on its dialog, as the server's reply to
    /// this request named it (a sql class's `BEGIN` not yet committed). `None`: none is open, or
    /// the request did not reach the server.
    #[serde(default)]
    pub server_transaction: Option<String>,
}

impl SessionInfo {
    pub fn new(id: String) -> SessionInfo {
        SessionInfo {
            id,
            subsession_open: false,
            dialect_state: Vec::new(),
            server_transaction: None,
        }
    }

    /// The session as its record has it (no server transaction known).
    pub(crate) fn of(record: &cookie_store::SessionRecord) -> SessionInfo {
        SessionInfo {
            id: record.id.clone(),
            subsession_open: record.subsession.is_some(),
            dialect_state: record.dialect_state.clone(),
            server_transaction: None,
        }
    }
}

/// What the body of a successful reply holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The backend's response element.
    Body(Bytes),
    /// Nothing (a Begin or continue with an empty body).
    Empty,
    /// The session ended and the request had no body (NonStop answers "Session ended.").
    Ended,
}

/// The engine's answer: the session after the request (None when there is none or it ended) and the
/// result. A failed request of a live session still reports the session, so that the client knows it
/// lives on. Dialects render it; a broker that forwarded the request gets it back as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub session: Option<SessionInfo>,
    pub result: Result<Reply, Failure>,
}

impl Response {
    pub fn sessionless(result: Result<Reply, Failure>) -> Response {
        Response {
            session: None,
            result,
        }
    }
}

/// The engine's answer before its error is classified for the dialects ([`Failure`]).
#[derive(Debug)]
pub(crate) struct Answer {
    pub session: Option<SessionInfo>,
    pub result: Result<Reply, EngineError>,
}

impl Answer {
    pub fn sessionless(result: Result<Reply, EngineError>) -> Answer {
        Answer {
            session: None,
            result,
        }
    }

    /// The answer for an unknown (or expired, or foreign) session.
    pub fn unknown(id: String) -> Answer {
        Answer::sessionless(Err(EngineError::UnknownSession(id)))
    }

    /// The answer of a live session's failed request.
    pub fn failed(session: SessionInfo, error: EngineError) -> Answer {
        Answer {
            session: Some(session),
            result: Err(error),
        }
    }

    /// Classify the error for the dialects (logging what only the log may hear).
    pub fn into_response(self) -> Response {
        Response {
            session: self.session,
            result: self.result.map_err(Failure::from),
        }
    }
}

/// What a broker answered when another broker's sweeper asked it to expire a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerExpiry {
    /// Expired here: dialog and transaction aborted, record deleted.
    Expired,
    /// Not due any more (a request touched it).
    Alive,
    /// No such session (already deleted).
    Gone,
    /// A request holds its turn; the next sweep asks again.
    Busy,
    /// Held by yet another live broker.
    Elsewhere,
}

impl PeerExpiry {
    const ALL: [PeerExpiry; 5] = [
        PeerExpiry::Expired,
        PeerExpiry::Alive,
        PeerExpiry::Gone,
        PeerExpiry::Busy,
        PeerExpiry::Elsewhere,
    ];

    /// The answer [`PeerExpiry::as_str`] wrote.
    pub fn parse(text: &str) -> Option<PeerExpiry> {
        PeerExpiry::ALL.into_iter().find(|e| e.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeerExpiry::Expired => "expired",
            PeerExpiry::Alive => "alive",
            PeerExpiry::Gone => "gone",
            PeerExpiry::Busy => "busy",
            PeerExpiry::Elsewhere => "elsewhere",
        }
    }
}

/// What became of the session's transaction when a worker aborted its dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DialogTransaction {
    /// One transaction per dialog: the transaction was aborted with the dialog (-353).
    Aborted,
    /// Several transactions per dialog: the transaction stays, the client decides (-354).
    LeftToClient,
    /// No transaction was open (-355).
    None,
}

/// Why the engine could not do what was asked: the engine's own account, with the sources. Dialects
/// never see it: it is classified into a [`Failure`] (`failure.rs`), which they map to their faults.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The session ID is unknown, expired, or belongs to another endpoint.
    // Displays omit the session ID: logs name sessions only shortened, in their own field.
    #[error("session not found or expired")]
    UnknownSession(String),
    /// No service of that name on this endpoint.
    #[error("service {0} not found")]
    UnknownService(String),
    /// A context-sensitive service called outside a session.
    #[error("service {0} requires a session")]
    SessionRequired(String),
    /// A new session would exceed one of the endpoint's session limits (which one, for the log).
    #[error("session limit reached: {0}")]
    SessionLimit(String),
    /// The store refused a new session's record (or could not count the endpoint's sessions) for
    /// a reason other than being unreachable.
    #[error("the session could not be created: {0}")]
    SessionNotCreated(StoreError),
    /// A transaction command with no transaction open (-1013 commit, -1014 abort).
    #[error("no transaction is in progress")]
    NoTransaction(TxnCommand),
    /// BeginNewTransaction while one is open (-1012).
    #[error("a transaction is already in progress")]
    TransactionInProgress,
    /// BeginNewTransaction with a body whose service is not transactional (-1022).
    #[error("service {0} does not support transactions")]
    NotTransactional(String),
    /// The transaction was aborted: at commit (a participant voted no or was lost), or because a
    /// participant lost its work (then the session has ended too).
    #[error("transaction aborted: {reason}")]
    TransactionAborted { at_commit: bool, reason: String },
    /// End while a subsession is open (-1016).
    #[error("a subsession is in progress")]
    SubsessionOpen,
    /// A transaction command while a one-transaction-per-dialog subsession is open (-1017 commit,
    /// -1018 abort): the client must abort the subsession instead.
    #[error("transaction command refused while a one-transaction subsession is open")]
    CommandInDialog(TxnCommand),
    /// A service of another context-sensitive class while a subsession is open (-1019).
    #[error("a subsession with {open} is in progress; abort it before calling {requested}")]
    OtherSubsession { open: String, requested: String },
    /// The worker aborted the dialog (-353 transaction aborted, -354 transaction left to the client,
    /// -355 no transaction).
    #[error("server class {class} aborted the subsession")]
    DialogAborted {
        class: String,
        transaction: DialogTransaction,
    },
    /// The dialog was lost with its worker (or its broker): -356; the session lives on.
    #[error("server class {class}: the subsession was lost with its worker")]
    SubsessionLost { class: String },
    /// AbortSubsession with no subsession open.
    #[error("no subsession is open")]
    NoSubsession,
    /// A feature a later release brings.
    #[error("{0} are not supported by this broker yet")]
    NotSupported(&'static str),
    /// An earlier request of the same session did not finish in time.
    #[error("session is busy with an earlier request")]
    Busy(String),
    /// The live broker holding the session's work could not be reached, or did not answer
    /// (retriable: once its lease runs out, another broker takes its work over).
    #[error("the broker holding this session, {broker}, did not answer")]
    HolderUnreachable { broker: String },
    /// The broker holding the session stopped answering after the forwarded request may have
    /// reached it: whether it was done is unknown (like -302 for a server process).
    #[error("the broker holding this session, {broker}, stopped during the request")]
    HolderLost { broker: String },
    /// A forwarded request found the session held by yet another live broker (it moved while the
    /// request travelled): retriable, the next attempt is forwarded to the right one.
    #[error("the session is held by broker {broker}")]
    HeldElsewhere { broker: String },
    /// The session is held by another broker and this one forwards nothing (no cluster secret).
    #[error("the session is held by broker {broker} and forwarding between brokers is disabled on this broker")]
    ForwardingDisabled { broker: String },
    /// The broker holding the session refused the forwarded request (its cluster secret differs,
    /// or it has none): a configuration error.
    #[error("broker {broker} refused the forwarded request: {reason}")]
    ForwardRefused { broker: String, reason: String },
    /// The adapter could not get a reply.
    #[error(transparent)]
    Backend(#[from] adapters::AdapterError),
    /// The backend answered with an application fault: passed through as given.
    #[error("server class {class}: application fault {code}: {string}")]
    Application {
        class: String,
        code: String,
        string: String,
        detail: Bytes,
    },
    /// A record service's request value its record cannot take: nothing was sent.
    #[error("service {service}: {refused}")]
    RecordRefused {
        service: String,
        refused: Box<records::Refused>,
    },
    /// A record service's reply record that its layouts cannot read.
    #[error("server class {class}, service {service}: {misfit}")]
    ReplyMisfit {
        class: String,
        service: String,
        misfit: Box<crate::record_service::ReplyMisfit>,
    },
    /// This broker is draining: it begins no session, dialog or transaction (retriable: another
    /// broker does).
    #[error("this broker is draining")]
    Draining,
    /// The backend reported a system error.
    #[error("server class {class}: system error: {message}")]
    BackendFailed { class: String, message: String },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
