//! zstd bodies (feature `zstd`) over real loopback TCP: compressed both ways between peers that
//! both announced it, never sent to a peer that did not, and a compressed bomb refused with
//! BAD_REQUEST without allocating past the frame limit (the connection stays usable).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::compression::FLAG_ZSTD;
use getty::rpc::frame::{self, Frame};
use getty::rpc::{
    CodecId, Context, Kind, Router, RpcClient, RpcError, RpcOptions, RpcServer, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Records the largest single allocation, so the test can tell that inflating a bomb never
/// asked for more than the limit.
struct Peak;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}
#[global_allocator]
static ALLOC: Peak = Peak;

const MIB: usize = 1 << 20;

fn opts(compress: bool) -> RpcOptions {
    let mut o = RpcOptions::default();
    o.compress_above = compress.then_some(1024);
    o
}

fn echo_router() -> Router {
    let mut r = Router::new();
    r.add_raw(
        "t.S",
        getty::rpc::MethodInfo::unary("Echo", "bytes", "bytes", &[CodecId::Json]),
        |_: Context, body: Bytes| async move { Ok::<_, RpcError>(body) },
    );
    r
}

/// 1 MiB of JSON text that compresses well.
fn big() -> Bytes {
    let s = "\"".to_string() + &"getty compresses this ".repeat(MIB / 22) + "\"";
    Bytes::from(s)
}

async fn pair(server_zstd: bool, client_zstd: bool) -> (RpcServer, RpcClient) {
    let server = RpcServer::start(echo_router(), opts(server_zstd), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(echo_router(), opts(client_zstd), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    // Until a peer's Hello has arrived nothing is compressed towards it: wait for both.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let sp = server.peers();
            if sp.len() == 1
                && sp[0].stats().peer_flow_control
                && client.peer().unwrap().stats().peer_flow_control
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("both Hellos arrived");
    (server, client)
}

async fn echo(p: &getty::rpc::Peer, body: &Bytes) -> Bytes {
    p.call_raw(
        "t.S",
        "Echo",
        CodecId::Json,
        body.clone(),
        Default::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_compressed_both_ways_between_peers_that_both_announced_it() {
    let (server, client) = pair(true, true).await;
    let body = big();
    let peer = client.peer().unwrap();
    assert_eq!(echo(&peer, &body).await, body);
    // Server → client too.
    let sp = server.peers().pop().unwrap();
    assert_eq!(echo(&sp, &body).await, body);
    // Reads are counted before dispatch (writes after the write returns, which may be after
    // the reply): what each side read is what the other sent.
    let sent = sp.session().stats().read_bytes;
    let back = peer.session().stats().read_bytes;
    assert!(
        sent < (MIB / 10) as u64,
        "the requests went compressed: {sent} bytes"
    );
    assert!(
        back < (MIB / 10) as u64,
        "the replies went compressed: {back} bytes"
    );
    // Small bodies go as they are.
    let small = Bytes::from_static(b"\"hi\"");
    assert_eq!(echo(&peer, &small).await, small);
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_compressed_for_a_peer_that_did_not_announce_it() {
    for (s, c) in [(false, true), (true, false)] {
        let (server, client) = pair(s, c).await;
        let body = big();
        let peer = client.peer().unwrap();
        assert_eq!(echo(&peer, &body).await, body);
        let st = peer.session().stats();
        assert!(
            st.write_bytes > MIB as u64 && st.read_bytes > MIB as u64,
            "server {s} client {c}: {st:?}"
        );
        client.close().await;
        server.close().await;
    }
}

/// A raw peer that announced zstd (and flow control) in its Hello.
async fn raw_peer(server: &RpcServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let hello = br#"{"window":{"calls":16,"bytes":1048576},"features":["flow","zstd"]}"#;
    send(
        &mut tcp,
        &Frame::one_way(1, CodecId::Json, "getty.Peer", "Hello", &hello[..]),
    )
    .await;
    tcp
}

async fn send(tcp: &mut TcpStream, f: &Frame) {
    let mut b = BytesMut::new();
    frame::encode(f, &mut b).unwrap();
    tcp.write_all(&b).await.unwrap();
}

/// The next Response (skipping the server's Hello and anything else).
async fn response(tcp: &mut TcpStream) -> Frame {
    loop {
        let mut head = [0u8; 28];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
            .await
            .expect("an answer came")
            .unwrap();
        let h = frame::peek_header(&head, 64 * MIB).unwrap().unwrap();
        let mut all = vec![0u8; h.total_len()];
        all[..28].copy_from_slice(&head);
        tcp.read_exact(&mut all[28..]).await.unwrap();
        let f = frame::decode_frame(Bytes::from(all), 64 * MIB).unwrap();
        if f.kind == Kind::Response {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_bomb_is_refused_without_allocating_past_the_limit() {
    let server = RpcServer::start(
        echo_router(),
        opts(true).max_frame(MIB).max_inflight_bytes(4 * MIB as u64),
        |cb| ServerBuilder::new("127.0.0.1:0").serve_tcp(cb),
    )
    .await
    .unwrap();
    let mut tcp = raw_peer(&server).await;
    let zeros = vec![0u8; 16 * MIB];
    // One bomb declares its size (refused before inflating), one does not (a streamed zstd
    // frame: inflated only up to the limit).
    let declared = zstd::bulk::compress(&zeros, 19).unwrap();
    let streamed = zstd::stream::encode_all(std::io::Cursor::new(&zeros), 19).unwrap();
    drop(zeros);
    assert!(declared.len() < 64 * 1024 && streamed.len() < 64 * 1024);
    for (seq, bomb) in [(2u64, declared), (3, streamed)] {
        let mut f = Frame::request(seq, CodecId::Json, "t.S", "Echo", bomb);
        f.flags = FLAG_ZSTD;
        f.timeout_ms = 5000;
        LARGEST.store(0, Ordering::SeqCst);
        send(&mut tcp, &f).await;
        let r = response(&mut tcp).await;
        let largest = LARGEST.load(Ordering::SeqCst);
        assert_eq!(r.seq, seq);
        assert_eq!(
            Status::from_code(r.status.code()),
            Status::BadRequest,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            largest <= 2 * MIB + 64 * 1024,
            "seq {seq}: an allocation of {largest} bytes"
        );
    }
    // The connection stays usable: a compressed body within the limit is served.
    let ok = zstd::bulk::compress(b"\"fine\"", 1).unwrap();
    let mut f = Frame::request(4, CodecId::Json, "t.S", "Echo", ok);
    f.flags = FLAG_ZSTD;
    f.timeout_ms = 5000;
    send(&mut tcp, &f).await;
    let r = response(&mut tcp).await;
    assert_eq!((r.seq, r.status), (4, Status::Ok));
    assert_eq!(&r.body[..], b"\"fine\"", "a small reply goes uncompressed");
    server.close().await;
}
