//! Waiting for a state, with a deadline, instead of sleeping for a guessed time: look every
//! [`POLL_EVERY`], go on as soon as the state holds, and once the deadline has passed fail naming
//! what never came. (The store's own counterpart of broker-tests' `wait` module, which these tests
//! cannot use: that crate depends on this one.)

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often the state is looked at.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Await `probe` until it gives `Ok`, at most `timeout`; panics naming `what` and the last `Err`.
pub async fn until<T, E: Debug, F: Future<Output = Result<T, E>>>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        let now = Instant::now();
        assert!(
            now < deadline,
            "waited {timeout:?} for {what}, in vain; the last answer: {last:?}"
        );
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

/// Call `probe` (blocking the thread between looks) until it gives `Some`, at most `timeout`;
/// panics naming `what`.
pub fn until_some<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        let now = Instant::now();
        assert!(now < deadline, "waited {timeout:?} for {what}, in vain");
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}
