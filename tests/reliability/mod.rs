//! Shared helpers of the reliability tests (`bad_input`, `faults`, `faults_registry`, `soak`):
//! a counting allocator, process RSS and descriptor counts, captured logs, a test service and
//! raw frames.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty::rpc::frame::{self, Frame};
use getty::rpc::{Context, Router, RpcError};

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting live heap bytes and their peak. Each test binary installs it
/// with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

/// Heap bytes allocated and not yet freed, process-wide.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak measurement; returns the live bytes now (the baseline).
pub fn reset_peak() -> usize {
    let now = live_bytes();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Highest live heap bytes since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

pub const MB: usize = 1 << 20;

pub fn mb(n: usize) -> String {
    format!("{:.1} MB", n as f64 / MB as f64)
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

static LOGS: Mutex<String> = Mutex::new(String::new());
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns keeping captured lines on or off (off while a test measures heap growth).
pub fn set_capture(on: bool) {
    CAPTURING.store(on, Ordering::Relaxed);
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if !CAPTURING.load(Ordering::Relaxed) {
            return Ok(b.len());
        }
        let mut l = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: keep the newest 8 MB.
        if l.len() > 8 * MB {
            let cut = l.len() - 4 * MB;
            let cut = (cut..l.len()).find(|&i| l.is_char_boundary(i)).unwrap_or(0);
            l.drain(..cut);
        }
        l.push_str(&String::from_utf8_lossy(b));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures getty's logs (getty-core logs why a session failed at debug level) for [`logged`];
/// nothing goes to the terminal, and a failing wait prints the last lines.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,getty_core=debug,getty_rpc=info",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// The captured lines that contain every one of `needles`.
pub fn log_lines(needles: &[&str]) -> Vec<String> {
    let l = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    l.lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(String::from)
        .collect()
}

/// Waits until a captured line contains every one of `needles`; returns it.
pub async fn logged(needles: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = log_lines(needles).pop() {
            return l;
        }
        if start.elapsed() > timeout {
            let all = LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let tail: Vec<&str> = all.lines().rev().take(20).collect();
            panic!("no log line with {needles:?} within {timeout:?}; last lines:\n{tail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A service and raw frames
// ---------------------------------------------------------------------------------------------

/// `rel.Svc`: `Echo` (JSON string, answered as is), `Sleep` (JSON ms: sleeps, answers ms),
/// `Len` (raw: answers the body length as JSON).
pub fn service(prefix: &'static str) -> Router {
    let mut r = Router::new();
    let svc = format!("{prefix}.Svc");
    r.add_json(
        &svc,
        "Echo",
        |_ctx: Context, s: String| async move { Ok(s) },
    );
    r.add_json(&svc, "Sleep", |_ctx: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, RpcError>(ms)
    });
    r.add_raw(
        &svc,
        getty::rpc::MethodInfo {
            name: "Len".into(),
            request_type: "bytes".into(),
            reply_type: "usize".into(),
            one_way: false,
            codecs: vec![getty::rpc::CodecId::Json],
            stream: None,
        },
        |_ctx: Context, body: Bytes| async move { Ok(Bytes::from(body.len().to_string())) },
    );
    r
}

pub fn encode(f: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    frame::encode(f, &mut b).unwrap();
    b
}

/// A 28-byte header with the given kind, meta_len and body_len (no meta, no body).
pub fn raw_header(kind: u8, seq: u64, meta_len: u32, body_len: u32) -> Vec<u8> {
    let mut v = b"GT\x01".to_vec();
    v.extend_from_slice(&[kind, 1, 0, 0, 0]);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&meta_len.to_be_bytes());
    v.extend_from_slice(&body_len.to_be_bytes());
    v
}

/// Splits whole frames off the front of `buf`.
pub fn take_frames(buf: &mut BytesMut) -> Vec<Frame> {
    use bytes::Buf;
    let mut out = Vec::new();
    while let Ok(getty::core::Decoded::Package { pkg, len }) = frame::decode(buf, usize::MAX) {
        buf.advance(len);
        // Every peer's first frame is its Hello (PROTOCOL.md section 16): not an answer.
        if !is_hello(&pkg) {
            out.push(pkg);
        }
    }
    out
}

/// Whether `f` is a `getty.Peer/Hello`.
pub fn is_hello(f: &Frame) -> bool {
    f.kind == getty::rpc::Kind::OneWay && f.service == "getty.Peer" && f.method == "Hello"
}

/// Tests of one binary that measure process-wide memory run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The service the reliability servers serve.
pub const SVC: &str = "rel.Svc";

/// RPC options of the reliability tests: a 5 s default timeout.
pub fn opts() -> getty::rpc::RpcOptions {
    getty::rpc::RpcOptions::default().default_timeout(std::time::Duration::from_secs(5))
}
