//! Crash tests by SIGKILL: the test binary runs one of its own tests as a child process (the
//! writer), which prints `ack …` after each write it considers durable; the parent kills it at
//! a random moment and checks that every acknowledged write survived.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A writer child: one test of the current test binary, run alone with `env` set.
pub struct WriterChild {
    child: Child,
    acks: std::thread::JoinHandle<Vec<String>>,
}

impl WriterChild {
    /// Starts the test named `test` of this test binary as a child, with `env` set (the child
    /// test reads it to know it is the writer, and where to write).
    pub fn spawn(test: &str, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starting the writer child");
        let stdout = child.stdout.take().expect("the child's stdout");
        let acks = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = line.strip_prefix("ack ") {
                    acked.push(ack.to_string());
                }
            }
            acked
        });
        WriterChild { child, acks }
    }

    /// Lets the child write for `after`, then kills it with SIGKILL (mid-write, as a power
    /// cut would) and returns what it acknowledged, in order.
    pub fn kill_after(mut self, after: Duration) -> Vec<String> {
        std::thread::sleep(after);
        self.child.kill().expect("SIGKILL the writer");
        self.child.wait().expect("reaping the writer");
        self.acks.join().expect("the ack reader")
    }
}

/// The child's side: prints `ack {what}` and flushes, so that the parent sees it before the
/// next write starts.
pub fn ack(out: &mut impl Write, what: &str) {
    writeln!(out, "ack {what}").expect("writing an ack");
    out.flush().expect("flushing an ack");
}
