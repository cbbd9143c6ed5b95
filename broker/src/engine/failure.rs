//! # Failures, as dialects see them
//!
//! The engine knows many ways to fail ([`EngineError`]: its own rules, the store, the adapters, the
//! cluster), and the list grows with every backend and every broker feature. Dialects should not
//! have to follow it: a dialect maps *kinds* of failure to its faults, and the kinds are few and
//! protocol-level — the session is unknown; the request breaks a session rule; the transaction or
//! the dialog ended; the backend answered with its own fault; nothing was done and a retry may
//! succeed; the server class cannot be reached; the work may or may not have been done; no reply in
//! time; an internal error. [`Failure::from`] is the one table from engine errors to kinds, so a new
//! engine failure touches no dialect: it is given a kind (and the words for it) here.
//!
//! What only the log may hear (store and backend error details, a session ID in full) is logged
//! here, once, when the error is classified, with the failure's timestamp ([`Failure::at_ms`]) so
//! that an operator can find the log line from a fault that shows the same time. The texts a
//! failure carries are safe for the client: they never hold a whole session ID, a password or a
//! backend's internal error text.
//!
//! A failure is plain data (serde): the broker holding a session answers a forwarded request with
//! it, and the forwarding broker's dialect renders it exactly as if the failure had happened there.

use super::{DialogTransaction, EngineError, TxnCommand};
use crate::dialect::rfc3339_utc;
use adapters::AdapterError;
use bytes::Bytes;
use cookie_store::{short_id, StoreError};
use serde::{Deserialize, Serialize};

/// A failed request: what kind of failure, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// When it was classified, ms since the epoch: the time faults show, and that of the log line
    /// written for an internal error.
    pub at_ms: u64,
}

/// The kinds of failure a dialect maps to its faults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The session is unknown, expired, or not this client's to use (all look the same).
    UnknownSession { id: String },
    /// The request breaks a session rule; the client must change it.
    Rule(Rule),
    /// A new session would exceed one of the endpoint's limits (`limit` says which, for the log).
    SessionLimit { limit: String },
    /// The session could not be created (the store refused the new record); nothing was kept.
    SessionNotCreated,
    /// The session's transaction was aborted: at commit, or because a participant lost its work
    /// (then the session has ended too), or because the broker holding it stopped.
    TransactionAborted { at_commit: bool, reason: String },
    /// The server class aborted the session's dialog; what became of the transaction.
    DialogAborted {
        class: String,
        transaction: DialogTransaction,
    },
    /// The dialog was lost with the process holding it; the session lives on.
    DialogLost { class: Option<String> },
    /// The backend answered with an application fault: to pass through as given.
    Application {
        class: String,
        code: String,
        string: String,
        detail: Bytes,
    },
    /// A record service's request value its record cannot take (`field` is its path, such as
    /// `TXN[2]/TXN-AMOUNT`): nothing was sent.
    Unmarshal {
        field: String,
        message: String,
        problem: UnmarshalProblem,
    },
    /// A reply record the service's layouts cannot read (the offset is in the log line).
    Marshal { class: String, message: String },
    /// Nothing was done; the same request may succeed later.
    Retry { cause: RetryCause, message: String },
    /// The server class cannot be reached: nothing was done.
    Unreachable { class: String },
    /// The process (or broker) serving the request stopped during it: whether it was done is
    /// unknown, so only the client can decide to retry.
    Interrupted { message: String },
    /// No reply within the class's `request_timeout` (the late one is discarded).
    TimedOut { class: String, timeout_ms: u64 },
    /// Anything else: a system error. `title` names it in a few words; the details are in the log
    /// line of [`Failure::at_ms`].
    Internal { title: String, message: String },
}

/// The session rules a request can break (each has its own fault in NonStop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// A context-sensitive service called outside a session.
    SessionRequired { service: String },
    /// No service of that name on this endpoint.
    UnknownService { service: String },
    /// A transaction command with no transaction open.
    NoTransaction(TxnCommand),
    /// BeginNewTransaction while a transaction is open.
    TransactionInProgress,
    /// BeginNewTransaction with a service that is not transactional.
    NotTransactional { service: String },
    /// End while a subsession is open.
    SubsessionOpen,
    /// A transaction command while a one-transaction-per-dialog subsession is open.
    CommandInDialog(TxnCommand),
    /// A service of another context-sensitive class while a subsession is open.
    OtherSubsession { open: String, requested: String },
    /// AbortSubsession with no subsession open.
    NoSubsession,
}

/// What was wrong with a record service's request value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnmarshalProblem {
    /// An element the request layout does not have.
    UnknownField,
    /// An item and another that redefines it, both given.
    Redefined,
    /// A value the field cannot take (too long, not numeric, outside the picture, too many).
    Value,
}

/// Why a retry may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryCause {
    /// The session store is unreachable.
    StoreUnavailable,
    /// Busy: the session with an earlier request, the class's queue, or the broker holding the
    /// session (unreachable for now, or the session moved to another broker meanwhile).
    Busy,
}

impl Failure {
    pub fn new(kind: FailureKind) -> Failure {
        Failure {
            kind,
            at_ms: cookie_store::now_ms(),
        }
    }

    /// The failure's time as RFC 3339 (what faults show).
    pub fn timestamp(&self) -> String {
        rfc3339_utc(self.at_ms)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            FailureKind::UnknownSession { .. } => f.write_str("session not found or expired"),
            FailureKind::Rule(rule) => write!(f, "session rule: {rule:?}"),
            FailureKind::SessionLimit { limit } => write!(f, "session limit reached: {limit}"),
            FailureKind::SessionNotCreated => f.write_str("the session could not be created"),
            FailureKind::TransactionAborted { reason, .. } => {
                write!(f, "transaction aborted: {reason}")
            }
            FailureKind::DialogAborted { class, .. } => {
                write!(f, "server class {class} aborted the subsession")
            }
            FailureKind::DialogLost { .. } => f.write_str("the subsession was lost"),
            FailureKind::Application { class, code, .. } => {
                write!(f, "server class {class}: application fault {code}")
            }
            FailureKind::Unmarshal { field, message, .. } => {
                write!(f, "request field {field}: {message}")
            }
            FailureKind::Marshal { class, .. } => {
                write!(
                    f,
                    "server class {class}: the reply does not fit its layouts"
                )
            }
            FailureKind::Retry { message, .. }
            | FailureKind::Interrupted { message }
            | FailureKind::Internal { message, .. } => f.write_str(message),
            FailureKind::Unreachable { class } => write!(f, "server class {class} unreachable"),
            FailureKind::TimedOut { class, timeout_ms } => {
                write!(f, "server class {class}: no reply within {timeout_ms} ms")
            }
        }
    }
}

/// The words of the system error whose details only the log holds.
const SEE_THE_LOG: &str =
    "System error occurred from process of a SOAP session. See the broker log.";

impl From<EngineError> for Failure {
    /// The one table from engine errors to failure kinds (see the module docs). Logs what the
    /// client may not hear.
    fn from(error: EngineError) -> Failure {
        let at_ms = cookie_store::now_ms();
        let ts = || rfc3339_utc(at_ms);
        let retry = |message: String| FailureKind::Retry {
            cause: RetryCause::Busy,
            message,
        };
        let internal = |title: &str, message: String| FailureKind::Internal {
            title: title.to_string(),
            message,
        };
        let kind = match error {
            EngineError::UnknownSession(id) => FailureKind::UnknownSession { id },
            EngineError::UnknownService(service) => {
                FailureKind::Rule(Rule::UnknownService { service })
            }
            EngineError::SessionRequired(service) => {
                FailureKind::Rule(Rule::SessionRequired { service })
            }
            EngineError::NoTransaction(command) => FailureKind::Rule(Rule::NoTransaction(command)),
            EngineError::TransactionInProgress => FailureKind::Rule(Rule::TransactionInProgress),
            EngineError::NotTransactional(service) => {
                FailureKind::Rule(Rule::NotTransactional { service })
            }
            EngineError::SubsessionOpen => FailureKind::Rule(Rule::SubsessionOpen),
            EngineError::CommandInDialog(command) => {
                FailureKind::Rule(Rule::CommandInDialog(command))
            }
            EngineError::OtherSubsession { open, requested } => {
                FailureKind::Rule(Rule::OtherSubsession { open, requested })
            }
            EngineError::NoSubsession => FailureKind::Rule(Rule::NoSubsession),
            EngineError::SessionLimit(limit) => {
                tracing::info!(limit = %limit, "a new session was refused: session limit reached");
                FailureKind::SessionLimit { limit }
            }
            EngineError::SessionNotCreated(e) => {
                tracing::error!(ts = %ts(), error = %e, "a new session could not be created");
                FailureKind::SessionNotCreated
            }
            EngineError::TransactionAborted { at_commit, reason } => {
                FailureKind::TransactionAborted { at_commit, reason }
            }
            EngineError::DialogAborted { class, transaction } => {
                FailureKind::DialogAborted { class, transaction }
            }
            EngineError::SubsessionLost { class } => FailureKind::DialogLost { class: Some(class) },
            EngineError::NotSupported(what) => internal(
                "Not supported",
                format!("System error: {what} are not supported by this broker yet."),
            ),
            EngineError::Busy(id) => retry(format!(
                "Session {} is busy with an earlier request; retry later.",
                short_id(&id)
            )),
            EngineError::HolderUnreachable { broker } => retry(format!(
                "The broker holding this session, {broker}, did not answer; retry."
            )),
            EngineError::HeldElsewhere { broker } => retry(format!(
                "The session is now held by broker {broker}; retry."
            )),
            EngineError::HolderLost { broker } => FailureKind::Interrupted {
                message: format!(
                    "The broker holding this session, {broker}, stopped during the request; whether it was done is unknown."
                ),
            },
            EngineError::ForwardingDisabled { broker } => {
                tracing::error!(ts = %ts(), broker = %broker, "a request needs forwarding, which is disabled (no [cluster] secret)");
                internal(
                    "Forwarding disabled",
                    format!(
                        "System error: the session is held by broker {broker}, and this broker does not \
                         forward requests (forwarding is disabled: no cluster secret is configured). \
                         See the broker log."
                    ),
                )
            }
            EngineError::ForwardRefused { broker, reason } => {
                tracing::error!(ts = %ts(), broker = %broker, reason = %reason, "the holding broker refused a forwarded request (do the cluster secrets match?)");
                internal(
                    "System error",
                    format!("System error: broker {broker} refused the forwarded request. See the broker log."),
                )
            }
            EngineError::Backend(e) => adapter_kind(e, &ts()),
            EngineError::Application {
                class,
                code,
                string,
                detail,
            } => {
                tracing::debug!(class = %class, code = %code, "application fault");
                FailureKind::Application {
                    class,
                    code,
                    string,
                    detail,
                }
            }
            EngineError::Draining => FailureKind::Retry {
                cause: RetryCause::Busy,
                message: "This broker is draining (shutting down for maintenance): it begins no new session, dialog or transaction; retry, and another broker takes it.".into(),
            },
            EngineError::RecordRefused { service, refused } => {
                tracing::debug!(service = %service, field = %refused.path, problem = %refused.message, "request refused by its record layout");
                let refused = *refused;
                FailureKind::Unmarshal {
                    field: refused.path,
                    message: refused.message,
                    problem: match refused.kind {
                        records::RefusalKind::UnknownField => UnmarshalProblem::UnknownField,
                        records::RefusalKind::Redefined => UnmarshalProblem::Redefined,
                        records::RefusalKind::Value => UnmarshalProblem::Value,
                    },
                }
            }
            EngineError::ReplyMisfit { class, service, misfit } => {
                // The reply's bytes may be the server's data: the log gets where it went wrong,
                // not what it held.
                tracing::error!(ts = %ts(), class = %class, service = %service, error = %misfit, "reply record does not fit the service's layouts");
                FailureKind::Marshal {
                    message: format!(
                        "Marshal error: the reply of server class {class} to {service} does not fit its layouts ({}). See the broker log.",
                        misfit.brief()
                    ),
                    class,
                }
            }
            EngineError::BackendFailed { class, message } => {
                tracing::error!(ts = %ts(), class = %class, error = %message, "backend system error");
                internal("System error", SEE_THE_LOG.into())
            }
            // The store is down (the daemon restarting, a database failover): nothing was done,
            // the client may retry. Distinct from an internal error.
            EngineError::Store(StoreError::Unavailable(reason)) => {
                tracing::warn!(error = %reason, "session store unavailable");
                FailureKind::Retry {
                    cause: RetryCause::StoreUnavailable,
                    message: "The session store is unreachable; retry later.".into(),
                }
            }
            EngineError::Store(e) => {
                tracing::error!(ts = %ts(), error = %e, "session store error");
                internal("System error", SEE_THE_LOG.into())
            }
        };
        Failure { kind, at_ms }
    }
}

fn adapter_kind(error: AdapterError, ts: &str) -> FailureKind {
    match error {
        AdapterError::Unreachable { ref class, .. } | AdapterError::ShuttingDown { ref class } => {
            tracing::error!(ts = %ts, class = %class, error = %error, "server class unreachable");
            FailureKind::Unreachable {
                class: class.clone(),
            }
        }
        AdapterError::WorkerLost { ref class, .. } => {
            tracing::warn!(ts = %ts, class = %class, error = %error, "worker lost during a request");
            FailureKind::Interrupted {
                message: format!(
                    "Error communicating with target service {class}: the server process stopped during the request."
                ),
            }
        }
        AdapterError::Timeout { class, timeout_ms } => {
            tracing::warn!(ts = %ts, class = %class, timeout_ms, "backend request timed out");
            FailureKind::TimedOut { class, timeout_ms }
        }
        AdapterError::QueueFull { class, limit } => FailureKind::Retry {
            cause: RetryCause::Busy,
            message: format!(
                "Server class {class} is busy ({limit} requests waiting); retry later."
            ),
        },
        AdapterError::PinnedWorkerGone { .. } => FailureKind::DialogLost { class: None },
        AdapterError::Unsupported { class, reason } => {
            tracing::error!(ts = %ts, class = %class, reason = %reason, "server class refused a request");
            FailureKind::Internal {
                title: "System error".into(),
                message: format!("System error: server class {class}: {reason}."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures cross between brokers: what the holder classified arrives whole.
    #[test]
    fn failures_survive_the_trip_between_brokers() {
        let failures = [
            Failure::from(EngineError::UnknownSession("0123456789abcdef".into())),
            Failure::from(EngineError::CommandInDialog(TxnCommand::Abort)),
            Failure::from(EngineError::Application {
                class: "ledger".into(),
                code: "Client.Funds".into(),
                string: "no funds".into(),
                detail: Bytes::from_static(b"<why>none</why>"),
            }),
            Failure::from(EngineError::Store(StoreError::Unavailable("down".into()))),
        ];
        for f in failures {
            let bytes = postcard::to_allocvec(&f).expect("encode");
            let back: Failure = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, f);
        }
    }

    /// Internal details reach the log only: the client-facing words of a store or backend error
    /// hold none of them.
    #[test]
    fn internal_details_stay_in_the_log() {
        let f = Failure::from(EngineError::Store(StoreError::Config(
            "password=hunter2".into(),
        )));
        assert!(
            matches!(&f.kind, FailureKind::Internal { message, .. } if !message.contains("hunter2")),
            "{f:?}"
        );
        let f = Failure::from(EngineError::BackendFailed {
            class: "ledger".into(),
            message: "segfault at 0xdead".into(),
        });
        assert!(!format!("{f}").contains("0xdead"), "{f}");
        let f = Failure::from(EngineError::Busy("0123456789abcdef0123".into()));
        assert!(!format!("{f}").contains("0123456789abcdef0123"), "{f}");
    }
}
