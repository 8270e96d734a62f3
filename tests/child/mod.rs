//! A peer in a child process: one test of the current test binary, run on its own, so that it
//! can be SIGKILLed mid-flight (no close, no flush), which a task in this process cannot be.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

/// Runs the test `test` of this binary in a new process with `env`, and waits (30 s at most)
/// until it prints a line containing `marker`; returns the child and what follows the marker
/// on that line.
pub fn spawn_test(test: &str, env: &[(&str, &str)], marker: &'static str) -> (Child, String) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test NAME ... " on the same line first.
            if let Some(i) = line.find(marker) {
                let _ = tx.send(line[i + marker.len()..].trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(rest) => (child, rest),
        Err(_) => {
            let _ = child.kill();
            panic!("the child test {test} did not print {marker:?} within 30 s");
        }
    }
}
