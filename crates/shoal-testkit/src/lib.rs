//! Shoal's shared test harnesses, for the workspace's own tests only (never a dependency of
//! the product): one copy of what several crates' tests need.
//!
//! - [`wait_until`] / `wait_until_async` (feature `cluster`): poll a condition until it holds, or fail the test
//!   saying what was awaited.
//! - [`child`]: run one of the test binary's own tests as a child process that writes and
//!   acknowledges, SIGKILL it at a random moment, and collect what it acknowledged.
//! - [`kill_by_pid_file`]: SIGKILL a process (a node of `shoal dev`) by its pid file.
//! - `cluster` (feature `cluster`): a cluster node with one table on loopback TCP.

pub mod child;
#[cfg(feature = "cluster")]
pub mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `done` every 50 ms until it holds; panics after `timeout`, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_until`] for async tests: sleeps on the runtime's timer between polls.
#[cfg(feature = "cluster")]
pub async fn wait_until_async(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills (SIGKILL) the process whose id is in the file at `pid_file`, as a power cut or the
/// OOM killer would, and waits a moment for the kernel to release its ports and files.
pub fn kill_by_pid_file(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()));
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -9 {} failed", pid.trim());
    std::thread::sleep(Duration::from_millis(300));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let mut polls = 0;
        wait_until("three polls", Duration::from_secs(5), || {
            polls += 1;
            polls == 3
        });
        assert_eq!(polls, 3);
    }

    #[test]
    #[should_panic(expected = "timed out waiting until never")]
    fn wait_until_fails_naming_what_it_waited_for() {
        wait_until("never", Duration::from_millis(120), || false);
    }
}
