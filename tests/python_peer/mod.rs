//! The Python peer of the conformance kit (`conformance/python/getty_peer.py`, standard library
//! only) as a child process; shared by tests/conformance.rs and getty-cli's tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `conformance/` at the root of the workspace.
pub fn kit() -> PathBuf {
    // The root package and getty-cli both sit at depth 0 or 1 under the workspace root.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = if here.join("conformance").is_dir() {
        here
    } else {
        here.parent().expect("workspace root")
    };
    root.join("conformance")
}

/// `python3 conformance/python/getty_peer.py ARGS`.
pub fn python(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(kit().join("python/getty_peer.py")).args(args);
    c
}

/// The Python peer serving the kit's services on a free loopback port; killed on drop.
pub struct PythonServer {
    child: Child,
    pub addr: String,
}

impl PythonServer {
    pub fn start() -> PythonServer {
        let mut child = python(&["serve", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 on PATH");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the python peer's first line");
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            panic!("the python peer said {line:?}");
        };
        PythonServer {
            addr: addr.to_string(),
            child,
        }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
