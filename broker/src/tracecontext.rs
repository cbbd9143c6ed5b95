//! # W3C Trace Context: a request's `traceparent`, taken in and passed on
//!
//! A client (or a proxy before the broker) that traces its calls sends
//! `traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. The broker keeps the trace
//! id in its request span (so the log lines of the request name the trace) and passes the trace
//! on where the request goes next: to another broker it forwards the request to, and to an http
//! adapter's backend. Each hop gets a parent id of its own (a new 8-byte id: the broker's part of
//! the trace), the trace id and the flags stay. A header that is not a valid version-00
//! `traceparent` is ignored, as the recommendation says, and nothing is passed on.

/// A parsed `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span: 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// 2 hex digits.
    pub flags: String,
}

impl TraceParent {
    /// Read a `traceparent` header value; `None` when it is not a valid version-00 one.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        (version == "00"
            && parts.next().is_none()
            && hex(trace, 32)
            && nonzero(trace)
            && hex(parent, 16)
            && nonzero(parent)
            && hex(flags, 2))
        .then(|| TraceParent {
            trace_id: trace.to_string(),
            parent_id: parent.to_string(),
            flags: flags.to_string(),
        })
    }

    /// The header for the next hop: the same trace and flags, a new parent id.
    pub fn next_hop(&self) -> String {
        let mut id = [0u8; 8];
        if getrandom::fill(&mut id).is_err() || id == [0; 8] {
            id = [0, 0, 0, 0, 0, 0, 0, 1];
        }
        let parent: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!("00-{}-{parent}-{}", self.trace_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_passed_on_with_a_new_parent() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let next = t.next_hop();
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(next.ends_with("-01"));
        assert_ne!(&next[36..52], "00f067aa0ba902b7");
        assert_eq!(
            TraceParent::parse(&next).map(|p| p.trace_id),
            Some(t.trace_id)
        );
    }

    #[test]
    fn anything_else_is_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
