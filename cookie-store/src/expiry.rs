//! The expiry index: keys that sort by deadline, and the rule for when a record moves in it.
//!
//! An index key is the deadline in milliseconds as 8 big-endian bytes followed by the session ID, with
//! an empty value. Big-endian makes sled's byte order the time order, so "everything due by now" is a
//! range scan from the start of the tree up to `now + 1`: the sweeper never reads a record that is not
//! due, whatever the number of stored sessions.
//!
//! Moving an entry costs a multi-tree transaction (remove the old key, insert the new one, rewrite the
//! record's `expiry_indexed_ms`). A continue request only pushes the deadline later, so the index is
//! left where it is and a sweeper that finds the entry due re-checks the record under its turn; the
//! entry moves only when it is already due or when the real deadline became earlier than the filed
//! one (it must never be filed late, or a session would outlive its timeout).

/// Where the record of a held turn is filed, as the holder last read or wrote it. Cached in the turn
/// table so a write decides whether to move the index entry without reading the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filed {
    /// The deadline the index entry is filed under (the record's `expiry_indexed_ms`).
    pub(crate) indexed_ms: u64,
    /// The record's real deadline (`expires_at_ms`).
    pub(crate) expires_ms: u64,
}

/// The index key of session `id` filed at `deadline_ms`.
pub(crate) fn index_key(deadline_ms: u64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&deadline_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Split an index key into deadline and session ID; `None` for a key this module did not write.
pub(crate) fn parse_index_key(key: &[u8]) -> Option<(u64, &str)> {
    if key.len() < 8 {
        return None;
    }
    let (deadline, id) = key.split_at(8);
    let deadline = u64::from_be_bytes(deadline.try_into().ok()?);
    Some((deadline, std::str::from_utf8(id).ok()?))
}

/// Exclusive upper bound of the keys due at `now_ms` (deadline <= now), or `None` when every key is.
pub(crate) fn due_bound(now_ms: u64) -> Option<[u8; 8]> {
    now_ms.checked_add(1).map(u64::to_be_bytes)
}

/// Where a record filed at `indexed_ms` whose real deadline is `expires_ms` must be filed after a
/// write at `now_ms`: `Some(new deadline)` when the entry must move, `None` to leave it.
pub(crate) fn refiled_deadline(indexed_ms: u64, expires_ms: u64, now_ms: u64) -> Option<u64> {
    let due = indexed_ms <= now_ms;
    let filed_late = expires_ms < indexed_ms;
    ((due || filed_late) && expires_ms != indexed_ms).then_some(expires_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_deadline_then_id_and_parse_back() {
        let a = index_key(255, "zz");
        let b = index_key(256, "aa");
        assert!(a < b, "big-endian deadline must dominate the order");
        assert_eq!(parse_index_key(&b), Some((256, "aa")));
        assert_eq!(parse_index_key(b"short"), None);
        assert_eq!(due_bound(255).map(|b| a.as_slice() < &b[..]), Some(true));
        assert_eq!(due_bound(u64::MAX), None);
    }

    #[test]
    fn continue_leaves_the_entry_and_due_or_earlier_moves_it() {
        // Filed at 1000, now 500: a later deadline (continue) leaves it.
        assert_eq!(refiled_deadline(1000, 1500, 500), None);
        // Same deadline: nothing to do, even when due.
        assert_eq!(refiled_deadline(1000, 1000, 2000), None);
        // The real deadline moved earlier: file it earlier at once.
        assert_eq!(refiled_deadline(1000, 800, 500), Some(800));
        // The filed deadline passed: move it to the real one.
        assert_eq!(refiled_deadline(1000, 2500, 1000), Some(2500));
    }
}
