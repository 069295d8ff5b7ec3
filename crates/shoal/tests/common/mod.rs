//! Running `shoal` processes from tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `shoal` binary under test.
pub fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// A base port for this test process, `offset` apart from other tests of the same binary.
/// A cluster uses ports up to base + 2000 + nodes: all of them stay below 32768, where Linux
/// starts handing out ephemeral ports to outgoing connections (a node could not bind a port
/// that some connection of the test run happened to hold).
pub fn base_port(offset: u32) -> u16 {
    20000 + ((std::process::id() + offset) % 10000) as u16
}

/// Starts `shoal dev` with `nodes` nodes and waits for its "ready" line; returns the child and
/// everything it printed up to then. Closing the child's standard input stops the cluster.
pub fn start_dev(dir: &Path, base: u16, nodes: usize) -> (Child, String) {
    start_dev_with(dir, base, nodes, &[])
}

/// [`start_dev`] with more options for `shoal dev`.
pub fn start_dev_with(dir: &Path, base: u16, nodes: usize, more: &[&str]) -> (Child, String) {
    let mut child = shoal()
        .args([
            "dev",
            "--nodes",
            &nodes.to_string(),
            "--exit-with-stdin",
            "--dir",
        ])
        .arg(dir)
        .args(more)
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_for_ready(&mut child);
    (child, out)
}

/// Waits for a `shoal dev` child's "ready" line; returns everything it printed up to then.
pub fn wait_for_ready(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if line.contains("ready in") {
                let _ = tx.send(all.clone());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("shoal dev prints that the cluster is ready")
}

/// Starts `shoal server -c config`, stopped by closing its standard input.
pub fn start_server(config: &Path) -> Child {
    shoal()
        .arg("-c")
        .arg(config)
        .args(["server", "--exit-with-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Closes `child`'s standard input and waits (20 s at most) for it to exit.
pub fn stop(mut child: Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("a shoal process did not stop when asked");
}

/// Runs `shoal -c config args…`, asserts success, returns standard output.
pub fn run(config: &Path, args: &[&str]) -> String {
    let out = shoal().arg("-c").arg(config).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON a command prints.
pub fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(config, args)).unwrap()
}

/// A K2V request signed by curl's own `--aws-sigv4` (region `shoal`): the status and the whole
/// response, head included (`curl -i`).
pub fn curl_k2v(method: &str, url: &str, key_id: &str, secret: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "-X", method]);
    if method == "PUT" {
        cmd.args(["--data-binary", "v"]);
    }
    let out = cmd
        .args(["--aws-sigv4", "aws:amz:shoal:k2v", "--user"])
        .arg(format!("{key_id}:{secret}"))
        .arg(url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
