//! Processes as Linux shows them: children of a process, liveness, signals.

use crate::wait;
use std::collections::BTreeSet;
use std::time::Duration;

/// The pids of `pid`'s direct children (from `/proc/<pid>/task/*/children`).
pub fn children(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// A process's identity: pid plus start time, so a reused pid is not mistaken for the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// The state letter and start time of a pid, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3 of stat); starttime is field 22, i.e. fields[19].
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The identity of a running pid.
pub fn id_of(pid: u32) -> Option<ProcId> {
    stat(pid).map(|(_, start_ticks)| ProcId { pid, start_ticks })
}

/// Whether this process still runs (exists, is the same process, and is not a zombie).
pub fn is_running(p: ProcId) -> bool {
    match stat(p.pid) {
        Some((state, start)) => start == p.start_ticks && state != 'Z' && state != 'X',
        None => false,
    }
}

/// Wait until none of `procs` runs; returns those still running after `timeout`.
pub fn wait_gone(procs: &[ProcId], timeout: Duration) -> Vec<ProcId> {
    let running = || -> Vec<ProcId> { procs.iter().copied().filter(|p| is_running(*p)).collect() };
    wait::poll(timeout, || running().is_empty().then_some(()));
    running()
}

/// The bytes `pid` has read so far, by any means (`rchar` in `/proc/<pid>/io`): a worker that
/// reads its requests from a pipe shows by this that a request has reached it.
pub fn bytes_read(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Send `signal` to `pid`. Panics if the kill fails (other than the process being already gone).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we started (or a child of one) and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            panic!("kill({pid}, {signal}): {e}");
        }
    }
}

/// `kill -9`.
pub fn kill9(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// Make this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER), once: the workers of a
/// broker killed with `kill -9` are then re-parented to the test process, which reaps them
/// ([`reap_orphans`]) instead of leaving zombies under an init that does not reap.
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag of this process.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
        }
    });
}

/// Reap these processes if they became our children (after their parent died): wait for them
/// to exit for up to `grace`, then `kill -9` those still running (checked by identity, so a reused
/// pid is never hit) and reap them. Processes that are not our children are left alone.
pub fn reap_orphans(procs: &[ProcId], grace: Duration) {
    let mut left: Vec<ProcId> = procs.to_vec();
    if wait::poll(grace, || reap_exited(&mut left).then_some(())).is_some() {
        return;
    }
    for p in &left {
        if is_running(*p) {
            kill9(p.pid);
        }
    }
    wait::poll(Duration::from_secs(2), || {
        reap_exited(&mut left).then_some(())
    });
}

/// Reap those of `procs` that are our children and have exited; drop those that are not our
/// children. Returns whether none is left.
fn reap_exited(procs: &mut Vec<ProcId>) -> bool {
    procs.retain(|p| {
        let mut status = 0;
        // SAFETY: waitpid on one specific pid with WNOHANG; it only touches `status`.
        let rc = unsafe { libc::waitpid(p.pid as libc::pid_t, &mut status, libc::WNOHANG) };
        // rc == 0: our child, still running. rc == pid: reaped. rc == -1: not our child (or gone).
        rc == 0
    });
    procs.is_empty()
}
