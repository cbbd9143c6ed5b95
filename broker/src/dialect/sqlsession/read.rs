//! Reading the `sqloptions:sqlSession` header (and `environmentChangeNotifications`) and the body
//! into an engine request. Everything that needs the store (unknown, expired, foreign sessions) is
//! the engine's; this file refuses what is wrong with the header itself.

use super::{SqlContext, SqlError};
use crate::engine::{Request, ServiceCall, SessionDirective};
use crate::soap::{Envelope, HeaderBlock};
use base64::Engine as _;
use std::time::Duration;

/// The options namespace as SQL Server wrote it.
pub const NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/Options";
/// The same with `https`, as some documentation pages print it; answered in kind.
pub const NS_HTTPS: &str = "https://schemas.microsoft.com/sqlserver/2004/SOAP/Options";

/// An engine session ID that cannot exist (not 32 hex digits): a malformed `sessionId` is looked
/// up as this, so that it costs what an unknown one costs and is answered by the same path.
pub const NO_SUCH_SESSION: &str = "-";

/// What the endpoint allows, for reading.
pub struct Settings {
    pub sessions: bool,
    /// The endpoint's `session_timeout`: the ceiling of a requested `timeout`.
    pub ceiling: Duration,
}

type Refused = (SqlError, SqlContext);

fn options_ns(block: &HeaderBlock) -> Option<&'static str> {
    match block.namespace.as_deref() {
        Some(NS) => Some(NS),
        Some(NS_HTTPS) => Some(NS_HTTPS),
        _ => None,
    }
}

/// xs:boolean.
fn boolean(block: &HeaderBlock, name: &'static str) -> Result<bool, SqlError> {
    match block.attr(None, name).map(str::trim) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(SqlError::BadAttribute { attribute: name }),
    }
}

/// The client's `sessionId` (base64 of the 16 bytes of an engine ID) as the engine's ID, or
/// [`NO_SUCH_SESSION`] when it is not one.
pub fn engine_id(session_id: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(session_id.trim())
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .map_or_else(|| NO_SUCH_SESSION.to_string(), |id| id.simple().to_string())
}

/// The engine's ID (32 hex digits) as the client sees it: base64 of its 16 bytes.
pub fn client_id(engine_id: &str) -> String {
    match uuid::Uuid::try_parse(engine_id) {
        Ok(id) => base64::engine::general_purpose::STANDARD.encode(id.as_bytes()),
        // Not an ID this broker made (never happens): shown as its bytes, still valid base64.
        Err(_) => base64::engine::general_purpose::STANDARD.encode(engine_id),
    }
}

pub(super) fn read(
    envelope: Envelope,
    settings: &Settings,
) -> Result<(Request, SqlContext), Refused> {
    let mut cx = SqlContext::default();
    let mut session: Option<&HeaderBlock> = None;
    let mut notifications: Option<&HeaderBlock> = None;
    for block in &envelope.headers {
        let Some(ns) = options_ns(block) else {
            continue;
        };
        match block.local_name.as_str() {
            "sqlSession" => {
                if session.is_some() {
                    return Err((SqlError::SeveralHeaders("sqlSession"), cx));
                }
                cx.namespace = ns;
                session = Some(block);
            }
            "environmentChangeNotifications" => {
                if notifications.is_some() {
                    return Err((
                        SqlError::SeveralHeaders("environmentChangeNotifications"),
                        cx,
                    ));
                }
                notifications = Some(block);
            }
            // Other options (applicationName, hostName, …) are informational: ignored unless
            // mustUnderstand, which the SOAP layer has refused already.
            _ => {}
        }
    }

    let mut request = Request::new("sqlsession");
    let mut initiate = false;
    if let Some(block) = session {
        let refuse = |e: SqlError, cx: &SqlContext| (e, cx.clone());
        initiate = boolean(block, "initiate").map_err(|e| refuse(e, &cx))?;
        let terminate = boolean(block, "terminate").map_err(|e| refuse(e, &cx))?;
        let id = block.attr(None, "sessionId").map(str::to_string);
        let timeout = match block.attr(None, "timeout").map(str::trim) {
            None => None,
            Some(t) => match t.parse::<i32>() {
                Ok(secs) if secs > 0 => Some(Duration::from_secs(secs as u64)),
                _ => {
                    return Err((
                        SqlError::BadAttribute {
                            attribute: "timeout",
                        },
                        cx,
                    ))
                }
            },
        };
        if let Some(d) = block.attr(None, "transactionDescriptor") {
            if base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .is_err()
            {
                return Err((
                    SqlError::BadAttribute {
                        attribute: "transactionDescriptor",
                    },
                    cx,
                ));
            }
        }
        if initiate {
            if terminate || id.is_some() {
                return Err((SqlError::InitiateWithSession, cx));
            }
            if !settings.sessions {
                return Err((SqlError::SessionsDisabled, cx));
            }
            let effective = timeout.map_or(settings.ceiling, |t| t.min(settings.ceiling));
            request.session = SessionDirective::Begin;
            request.idle_timeout = Some(effective);
            cx.initiate_timeout = Some(effective.as_secs().max(1));
        } else {
            let Some(id) = id else {
                return Err((SqlError::NoSessionId, cx));
            };
            request.session = SessionDirective::Continue(engine_id(&id));
            request.end_session = terminate;
            request.end_regardless = terminate;
            cx.echo = Some(block.xml.clone());
            cx.terminate = terminate;
            cx.session_id = Some(id);
        }
    }
    if let Some(block) = notifications {
        // "must appear in the same request as the sqlSession initiate attribute", empty.
        if !initiate {
            return Err((SqlError::NotificationsWithoutInitiate, cx));
        }
        if !is_empty_element(&block.xml) {
            return Err((SqlError::NotificationsNotEmpty, cx));
        }
        for a in [
            "databaseChange",
            "languageChange",
            "partnerChange",
            "transactionBoundary",
        ] {
            let bad = !matches!(
                block.attr(None, a).map(str::trim),
                None | Some("true" | "false" | "1" | "0")
            );
            if bad {
                return Err((
                    SqlError::BadAttribute {
                        attribute: "environmentChangeNotifications",
                    },
                    cx,
                ));
            }
        }
        // Kept with the session: every later reply of it reports its transaction boundaries.
        if boolean(block, "transactionBoundary").map_err(|e| (e, cx.clone()))? {
            request.dialect_state = vec![super::NOTIFY_TRANSACTIONS];
        }
    }

    if let Some(body) = envelope.body {
        request.call = Some(ServiceCall {
            credential: None,
            service: body.local_name,
            payload: body.xml,
        });
    }
    Ok((request, cx))
}

/// Whether a header block's XML has no content (a self-closing tag, or only whitespace inside).
fn is_empty_element(xml: &[u8]) -> bool {
    let text = String::from_utf8_lossy(xml);
    let t = text.trim();
    if t.ends_with("/>") && t.matches('<').count() == 1 {
        return true;
    }
    match (t.find('>'), t.rfind("</")) {
        (Some(open_end), Some(close)) if open_end < close => {
            t[open_end + 1..close].trim().is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{parse_envelope, Limits, Roles};

    fn envelope(header: &str, body: &str) -> Envelope {
        let text = format!(
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Header>{header}</e:Header><e:Body>{body}</e:Body></e:Envelope>"
        );
        parse_envelope(text.as_bytes(), &Limits::default(), &Roles::default()).expect("envelope")
    }

    const ON: Settings = Settings {
        sessions: true,
        ceiling: Duration::from_secs(60),
    };

    #[test]
    fn ids_round_trip_and_anything_else_is_no_session() {
        let engine = crate::engine::new_session_id();
        let shown = client_id(&engine);
        assert_eq!(shown.len(), 24, "16 bytes in base64");
        assert_eq!(engine_id(&shown), engine);
        assert_eq!(engine_id("not base64!"), NO_SUCH_SESSION);
        assert_eq!(engine_id("AAAAADreaLE="), NO_SUCH_SESSION, "8 bytes");
    }

    #[test]
    fn initiate_clamps_the_timeout_and_use_and_terminate_echo() {
        let (r, cx) = read(
            envelope(
                &format!("<o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\" timeout=\"90\"/>"),
                "",
            ),
            &ON,
        )
        .expect("initiate");
        assert_eq!(r.session, SessionDirective::Begin);
        assert_eq!(cx.initiate_timeout, Some(60));
        assert_eq!(r.idle_timeout, Some(Duration::from_secs(60)));

        let (r, cx) = read(
            envelope(
                &format!(
                    "<sqlSession xmlns=\"{NS_HTTPS}\" sessionId=\"AAAAADreaLE=\" terminate=\"1\"/>"
                ),
                "",
            ),
            &ON,
        )
        .expect("terminate");
        assert_eq!(
            r.session,
            SessionDirective::Continue(NO_SUCH_SESSION.into())
        );
        assert!(r.end_session && r.end_regardless);
        assert_eq!(cx.namespace, NS_HTTPS);
        assert!(cx.echo.is_some());
    }

    #[test]
    fn header_mistakes_are_refused() {
        let e = |h: &str, s: &Settings| read(envelope(h, ""), s).err().map(|(e, _)| e);
        let two = format!("<o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\"/><o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\"/>");
        assert!(matches!(
            e(&two, &ON),
            Some(SqlError::SeveralHeaders("sqlSession"))
        ));
        let off = Settings {
            sessions: false,
            ceiling: Duration::from_secs(60),
        };
        assert!(matches!(
            e(
                &format!("<o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\"/>"),
                &off
            ),
            Some(SqlError::SessionsDisabled)
        ));
        assert!(matches!(
            e(
                &format!("<o:sqlSession xmlns:o=\"{NS}\" initiate=\"yes\"/>"),
                &ON
            ),
            Some(SqlError::BadAttribute {
                attribute: "initiate"
            })
        ));
        assert!(matches!(
            e(
                &format!("<o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\" timeout=\"-1\"/>"),
                &ON
            ),
            Some(SqlError::BadAttribute {
                attribute: "timeout"
            })
        ));
        assert!(matches!(
            e(
                &format!("<o:sqlSession xmlns:o=\"{NS}\" terminate=\"true\"/>"),
                &ON
            ),
            Some(SqlError::NoSessionId)
        ));
        assert!(matches!(
            e(&format!("<o:environmentChangeNotifications xmlns:o=\"{NS}\" transactionBoundary=\"true\"/><o:sqlSession xmlns:o=\"{NS}\" sessionId=\"AAAAADreaLE=\"/>"), &ON),
            Some(SqlError::NotificationsWithoutInitiate)
        ));
        assert!(matches!(
            e(&format!("<o:environmentChangeNotifications xmlns:o=\"{NS}\">x</o:environmentChangeNotifications><o:sqlSession xmlns:o=\"{NS}\" initiate=\"true\"/>"), &ON),
            Some(SqlError::NotificationsNotEmpty)
        ));
        // Case-sensitive: a `sqlsession` header is not ours and is ignored (not mustUnderstand).
        let (r, _) = read(
            envelope(
                &format!("<o:sqlsession xmlns:o=\"{NS}\" initiate=\"true\"/>"),
                "",
            ),
            &ON,
        )
        .expect("ignored");
        assert_eq!(r.session, SessionDirective::None);
    }
}
