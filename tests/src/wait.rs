//! Waiting for a state, with a deadline, instead of sleeping for a guessed time.
//!
//! A fixed sleep before a check is a guess at how long the broker needs: too short on a loaded
//! machine (the test fails for nothing), too long everywhere else (the suite is slow), and it
//! never says what it was waiting for. Every wait in the harness and the tests goes through
//! [`poll`] or [`until`] instead: look at the state every [`POLL_EVERY`], go on as soon as it
//! holds, and fail naming what never came once the deadline has passed. A deadline is generous
//! (seconds where the state normally comes in milliseconds): it only bounds a failing run.
//!
//! What stays a sleep is time that *is* the behaviour under test (a session left idle past its
//! timeout, a client that stalls on purpose); each such sleep says so where it is.

use std::time::{Duration, Instant};

/// How often the state is looked at.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Call `probe` until it gives `Some`, at most `timeout`; `None` when time ran out. `probe` runs
/// at least once, and once more at the deadline.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

/// [`poll`], panicking with "waited {timeout} for {what}" when time runs out.
pub fn until<T>(timeout: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll(timeout, probe).unwrap_or_else(|| panic!("waited {timeout:?} for {what}, in vain"))
}

/// Wait until `condition` holds, panicking with "waited {timeout} for {what}" when time runs out.
pub fn until_true(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    until(timeout, what, || condition().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn poll_returns_as_soon_as_the_probe_answers() {
        let calls = Cell::new(0);
        let got = poll(Duration::from_secs(60), || {
            calls.set(calls.get() + 1);
            (calls.get() == 3).then_some("third")
        });
        assert_eq!(got, Some("third"));
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn poll_gives_up_at_the_deadline_after_a_last_look() {
        let calls = Cell::new(0);
        let got: Option<()> = poll(Duration::ZERO, || {
            calls.set(calls.get() + 1);
            None
        });
        assert_eq!(got, None);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    #[should_panic(expected = "for the moon, in vain")]
    fn until_names_what_never_came() {
        until_true(Duration::from_millis(50), "the moon", || false);
    }
}
