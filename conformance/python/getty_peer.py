"""A getty-rpc peer in Python (standard library only), written from getty-rpc/PROTOCOL.md alone.

It is the second implementation that proves the protocol file is enough: the Rust test suite
runs it against the Rust examples (tests/python_peer.rs), plays the conformance vectors against
it (tests/conformance.rs), and points `getty describe` at it (getty-cli/tests/python_peer.rs).

The module is a library (Frame, encode, FrameReader, Peer, the echo messages) and a program:

    python3 getty_peer.py serve HOST:PORT    # serve echo.Echo, conformance.Relay, reflection
    python3 getty_peer.py call HOST:PORT     # call echo.Echo/Echo in both codecs, serve a
                                             # call back (see `run_calls`), print "ok ..."

Section numbers (§) refer to PROTOCOL.md.
"""

import base64
import json
import socket
import struct
import sys
import threading
import time

# §3 header
MAGIC = b"GT"
VERSION = 1
HEADER = struct.Struct(">2sBBBBHQIII")
HEADER_LEN = HEADER.size  # 28
MAX_META_LEN = 65535
MAX_NAME_LEN = 255
# §19 defaults
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEARTBEAT_PERIOD = 10.0
HEARTBEAT_MISSES = 3
DEFAULT_TIMEOUT = 10.0

REQUEST, RESPONSE, ONEWAY, PING, PONG, CANCEL = 1, 2, 3, 4, 5, 6
NONE, JSON, PROTOBUF = 0, 1, 2
CODEC_NAMES = {JSON: "json", PROTOBUF: "protobuf"}

# §13
OK = 0
UNKNOWN_SERVICE = 1
UNKNOWN_METHOD = 2
BAD_REQUEST = 3
HANDLER_ERROR = 4
OVERLOADED = 5
DEADLINE_EXCEEDED = 6
CANCELLED = 7
UNSUPPORTED_CODEC = 8
INTERNAL = 9
CONNECTION_CLOSED = 10  # local only
TIMEOUT = 11  # local only


class Violation(Exception):
    """A framing violation (§15): the connection must be closed, sending nothing."""


class RpcError(Exception):
    def __init__(self, status, message, from_peer=False):
        super().__init__("status %d: %s" % (status, message))
        self.status = status
        self.message = message
        self.from_peer = from_peer


class Frame:
    def __init__(self, kind, seq, codec=NONE, status=OK, timeout_ms=0, service="", method="",
                 metadata=None, body=b"", flags=0):
        self.kind = kind
        self.codec = codec
        self.flags = flags
        self.status = status
        self.seq = seq
        self.timeout_ms = timeout_ms
        self.service = service
        self.method = method
        self.metadata = list(metadata or [])
        self.body = bytes(body)

    def __repr__(self):
        return "Frame(kind=%d seq=%d codec=%d status=%d %s/%s meta=%r body=%r)" % (
            self.kind, self.seq, self.codec, self.status, self.service, self.method,
            self.metadata, self.body[:64])


def _string(s):
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def encode(f):
    """The bytes of one frame (§3, §4)."""
    for name in (f.service, f.method):
        if len(name.encode("utf-8")) > MAX_NAME_LEN:
            raise ValueError("service or method longer than 255 bytes")
    meta = _string(f.service) + _string(f.method) + struct.pack(">H", len(f.metadata))
    for k, v in f.metadata:
        meta += _string(k) + _string(v)
    if len(meta) > MAX_META_LEN:
        raise ValueError("meta section longer than 65535 bytes")
    head = HEADER.pack(MAGIC, VERSION, f.kind, f.codec, f.flags, f.status, f.seq, f.timeout_ms,
                       len(meta), len(f.body))
    return head + meta + f.body


def _take_string(meta, pos):
    if pos + 2 > len(meta):
        raise Violation("a length runs past the meta section")
    n = struct.unpack_from(">H", meta, pos)[0]
    pos += 2
    if pos + n > len(meta):
        raise Violation("a string runs past the meta section")
    try:
        s = meta[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError:
        raise Violation("invalid UTF-8 in the meta section")
    return s, pos + n


def parse_meta(meta):
    """(service, method, pairs) of a meta section, validated in full in every kind (§4, §5)."""
    service, pos = _take_string(meta, 0)
    method, pos = _take_string(meta, pos)
    if len(service.encode()) > MAX_NAME_LEN or len(method.encode()) > MAX_NAME_LEN:
        raise Violation("service or method longer than 255 bytes")
    if pos + 2 > len(meta):
        raise Violation("pair_count runs past the meta section")
    count = struct.unpack_from(">H", meta, pos)[0]
    pos += 2
    pairs = []
    for _ in range(count):
        k, pos = _take_string(meta, pos)
        v, pos = _take_string(meta, pos)
        pairs.append((k, v))
    if pos != len(meta):
        raise Violation("bytes left over in the meta section")
    return service, method, pairs


class FrameReader:
    """Deframes a byte stream; checks each header before buffering the rest (§3, §15)."""

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.buf = bytearray()
        self.max_frame = max_frame

    def _check_prefix(self):
        b = self.buf
        if len(b) >= 1 and b[0] != MAGIC[0] or len(b) >= 2 and b[1] != MAGIC[1]:
            raise Violation("bad magic")
        if len(b) >= 3 and b[2] != VERSION:
            raise Violation("unsupported version %d" % b[2])
        if len(b) >= 4 and not REQUEST <= b[3] <= CANCEL:
            raise Violation("unknown kind %d" % b[3])

    def feed(self, data):
        """Adds bytes; yields each whole frame now available, in order, and raises Violation
        at the first bad one (the frames before it are still handled)."""
        self.buf += data
        return self._frames()

    def _frames(self):
        while True:
            self._check_prefix()
            if len(self.buf) < HEADER_LEN:
                return
            (_, _, kind, codec, flags, status, seq, timeout_ms, meta_len,
             body_len) = HEADER.unpack_from(self.buf, 0)
            if meta_len > MAX_META_LEN:
                raise Violation("meta_len %d over 65535" % meta_len)
            total = HEADER_LEN + meta_len + body_len
            if total > self.max_frame:
                raise Violation("frame of %d bytes over the limit" % total)
            if len(self.buf) < total:
                return
            meta = bytes(self.buf[HEADER_LEN:HEADER_LEN + meta_len])
            body = bytes(self.buf[HEADER_LEN + meta_len:total])
            del self.buf[:total]
            service, method, pairs = parse_meta(meta)
            yield Frame(kind, seq, codec=codec, status=status, timeout_ms=timeout_ms,
                        service=service, method=method, metadata=pairs, body=body, flags=flags)


# ---- the echo messages of proto/echo.proto, in Protobuf and in the proto3 JSON mapping (§6.1)

ECHO_REQUEST_FIELDS = [(1, "payload", "bytes"), (2, "text", "string")]
ECHO_REPLY_FIELDS = ECHO_REQUEST_FIELDS + [(3, "codec", "string")]


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def pb_encode(fields, msg):
    out = b""
    for num, name, typ in fields:
        v = msg.get(name)
        if not v:
            continue  # proto3: defaults are not sent
        raw = v if typ == "bytes" else v.encode("utf-8")
        out += _varint(num << 3 | 2) + _varint(len(raw)) + raw
    return out


def pb_decode(fields, buf):
    by_num = {num: (name, typ) for num, name, typ in fields}
    msg = {name: (b"" if typ == "bytes" else "") for _, name, typ in fields}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
            val = None
        elif wire == 1:
            pos += 8
            val = None
        elif wire == 5:
            pos += 4
            val = None
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            val = bytes(buf[pos:pos + n])
            pos += n
        else:
            raise ValueError("unsupported wire type %d" % wire)
        if pos > len(buf):
            raise ValueError("truncated field")
        if num in by_num and val is not None:
            name, typ = by_num[num]
            msg[name] = val if typ == "bytes" else val.decode("utf-8")
    return msg


def json_encode(fields, msg):
    out = {}
    for _, name, typ in fields:
        v = msg.get(name)
        if not v:
            continue
        out[name] = base64.b64encode(v).decode() if typ == "bytes" else v
    return json.dumps(out, separators=(",", ":")).encode()


def json_decode(fields, body):
    v = json.loads(body.decode("utf-8"))
    if not isinstance(v, dict):
        raise ValueError("not a JSON object")
    msg = {}
    for _, name, typ in fields:
        x = v.get(name)
        if x is None:
            msg[name] = b"" if typ == "bytes" else ""
        elif typ == "bytes":
            x = x.replace("-", "+").replace("_", "/")
            msg[name] = base64.b64decode(x + "=" * (-len(x) % 4), validate=True)
        elif isinstance(x, str):
            msg[name] = x
        else:
            raise ValueError("%s is not a string" % name)
    return msg


def encode_message(fields, codec, msg):
    return pb_encode(fields, msg) if codec == PROTOBUF else json_encode(fields, msg)


def decode_message(fields, codec, body):
    return pb_decode(fields, body) if codec == PROTOBUF else json_decode(fields, body)


# ---- a peer: one connection, calls in both directions


_current = threading.local()  # the call a handler thread is serving, for its nested calls


class Method:
    def __init__(self, fn, one_way=False, codecs=(PROTOBUF, JSON), request_type="",
                 reply_type=""):
        self.fn = fn  # fn(peer, frame) -> reply body bytes, or raises RpcError
        self.one_way = one_way
        self.codecs = codecs
        self.request_type = request_type
        self.reply_type = "()" if one_way else reply_type


class Peer:
    """One connection. `services` maps service -> {method: Method}. Handlers run on threads of
    their own, so a handler may call back the peer that called it (§1)."""

    def __init__(self, sock, services=None, reflection=True,
                 heartbeat_period=HEARTBEAT_PERIOD, max_frame=DEFAULT_MAX_FRAME):
        self.sock = sock
        self.services = services or {}
        self.reflection = reflection
        self.max_frame = max_frame
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.next_seq = 0
        self.next_ping = 0
        self.pending = {}  # seq -> [event, frame]
        self.in_progress = {}  # seq -> {"answered": bool}
        self.closed = threading.Event()
        self.last_rx = time.monotonic()
        self.late_replies = 0
        self.dropped_oneways = []  # (service, method) of OneWays nothing here serves
        self.heartbeat_period = heartbeat_period
        threading.Thread(target=self._read_loop, daemon=True).start()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    # -- sending

    def _send(self, f):
        data = encode(f)
        if len(data) > self.max_frame:
            raise RpcError(INTERNAL, "frame over the frame limit")
        with self.write_lock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                self.close()
                raise RpcError(CONNECTION_CLOSED, str(e))

    def _seq(self):
        with self.lock:
            self.next_seq += 1  # §7: 1, 2, ... shared by Requests and OneWays
            return self.next_seq

    def call(self, service, method, body, codec=JSON, timeout=DEFAULT_TIMEOUT, metadata=()):
        """A two-way call: returns the reply body (status 0, in the request's codec)."""
        seq = self._seq()
        ev = threading.Event()
        slot = [ev, None]
        with self.lock:
            if self.closed.is_set():
                raise RpcError(CONNECTION_CLOSED, "connection closed")
            self.pending[seq] = slot
            parent = getattr(_current, "call", None)
            if parent is not None:
                parent["children"].append(seq)
        ms = max(1, min(0xFFFFFFFF, int(-(-timeout * 1000 // 1))))  # §9: rounded up
        self._send(Frame(REQUEST, seq, codec=codec, timeout_ms=ms, service=service,
                         method=method, metadata=metadata, body=body))
        if not ev.wait(timeout):
            with self.lock:
                self.pending.pop(seq, None)
            self._send(Frame(CANCEL, seq))  # §9: cancel, forget the seq
            raise RpcError(TIMEOUT, "no reply within %ss" % timeout)
        f = slot[1]
        if f is None:
            raise RpcError(CONNECTION_CLOSED, "connection closed")
        if f == "cancelled":
            raise RpcError(CANCELLED, "the call this one was made for was cancelled")
        if f.status != OK:
            raise RpcError(f.status, f.body.decode("utf-8", "replace"), from_peer=True)
        if f.codec != codec:  # §6: not a violation, the call fails locally
            raise RpcError(BAD_REQUEST, "OK reply in codec %d to a codec %d request"
                           % (f.codec, codec))
        return f.body

    def notify(self, service, method, body, codec=JSON):
        self._send(Frame(ONEWAY, self._seq(), codec=codec, service=service, method=method,
                         body=body))

    def close(self):
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            waiters, self.pending = self.pending, {}
        for slot in waiters.values():
            slot[0].set()  # frame None: CONNECTION_CLOSED

    # -- receiving

    def _read_loop(self):
        reader = FrameReader(self.max_frame)
        try:
            while not self.closed.is_set():
                data = self.sock.recv(65536)
                if not data:
                    break
                self.last_rx = time.monotonic()
                for f in reader.feed(data):
                    self._dispatch(f)
        except (Violation, OSError, RpcError):
            pass  # §15: close at once, sending nothing (or the connection is gone)
        self.close()

    def _dispatch(self, f):
        if f.kind == PING:
            self._send(Frame(PONG, f.seq))
        elif f.kind in (RESPONSE, PONG):
            with self.lock:
                slot = self.pending.pop(f.seq, None)
            if slot is None:
                if f.kind == RESPONSE:
                    self.late_replies += 1  # §8: late reply, dropped
                return
            slot[1] = f
            slot[0].set()
        elif f.kind == CANCEL:
            with self.lock:
                call = self.in_progress.get(f.seq)
            # Handlers here cannot be stopped; the call is answered CANCELLED now, exactly
            # once, and the handler's result is dropped when it comes.
            if call is not None:
                self._answer(f.seq, call, Frame(RESPONSE, f.seq, status=CANCELLED,
                                                body=b"cancelled by the caller"))
                self._cancel_children(call)
        else:
            self._serve(f)

    def _cancel_children(self, call):
        """§11 nested calls: the calls a stopped call's handler still waits for are cancelled."""
        for seq in call["children"]:
            with self.lock:
                slot = self.pending.pop(seq, None)
            if slot is not None:
                slot[1] = "cancelled"
                slot[0].set()
                try:
                    self._send(Frame(CANCEL, seq))
                except RpcError:
                    pass

    def _answer(self, seq, call, frame):
        with self.lock:
            if call["answered"]:
                return
            call["answered"] = True
            if self.in_progress.get(seq) is call:
                del self.in_progress[seq]
        try:
            self._send(frame)
        except RpcError:
            pass

    def _route(self, f):
        """The method for a call, or the (status, message) to answer (§8 steps 1, 2, 4)."""
        if f.service == "getty.Reflection" and self.reflection:
            if f.method != "Describe" or f.kind != REQUEST:
                return None, (UNKNOWN_METHOD, "unknown method %s/%s" % (f.service, f.method))
            return Method(lambda peer, fr: self.describe(), codecs=(JSON,)), None
        svc = self.services.get(f.service)
        if svc is None:
            return None, (UNKNOWN_SERVICE, "unknown service %s" % f.service)
        m = svc.get(f.method)
        if m is None or m.one_way != (f.kind == ONEWAY):
            return None, (UNKNOWN_METHOD, "unknown method %s/%s" % (f.service, f.method))
        if f.codec not in m.codecs:
            return None, (UNSUPPORTED_CODEC, "codec %d is not supported" % f.codec)
        return m, None

    def _serve(self, f):
        m, err = self._route(f)
        if err is not None:
            if f.kind == REQUEST:
                self._send(Frame(RESPONSE, f.seq, status=err[0], body=err[1].encode()))
            else:
                # §8: nothing is ever sent back for a OneWay (a getty.Peer/Hello, say).
                self.dropped_oneways.append((f.service, f.method))
            return
        call = {"answered": False, "children": []}
        if f.kind == REQUEST:
            with self.lock:
                self.in_progress[f.seq] = call

        def run():
            _current.call = call
            try:
                body = m.fn(self, f)
                reply = Frame(RESPONSE, f.seq, codec=f.codec, body=body or b"")
            except RpcError as e:
                # Local-only codes are never sent (§13): a nested call that timed out means
                # this call's own budget is spent.
                status = {TIMEOUT: DEADLINE_EXCEEDED, CONNECTION_CLOSED: INTERNAL}.get(
                    e.status, e.status)
                reply = Frame(RESPONSE, f.seq, status=status, body=e.message.encode())
            except Exception as e:  # the handler crashed: INTERNAL (§8 step 6)
                reply = Frame(RESPONSE, f.seq, status=INTERNAL, body=repr(e).encode())
            if f.kind == REQUEST:
                self._answer(f.seq, call, reply)

        threading.Thread(target=run, daemon=True).start()

    def _heartbeat(self):
        while not self.closed.wait(self.heartbeat_period):
            if time.monotonic() - self.last_rx > self.heartbeat_period * HEARTBEAT_MISSES:
                self.close()  # §10: silent for N periods
                return
            with self.lock:
                self.next_ping += 1
                seq = self.next_ping
            try:
                self._send(Frame(PING, seq))
            except RpcError:
                return

    def describe(self):
        """The reflection reply (§18)."""
        out = []
        for name in sorted(self.services):
            methods = []
            for mname in sorted(self.services[name]):
                m = self.services[name][mname]
                methods.append({"name": mname, "request_type": m.request_type,
                                "reply_type": m.reply_type, "one_way": m.one_way,
                                "codecs": [CODEC_NAMES[c] for c in m.codecs]})
            out.append({"service": name, "methods": methods})
        return json.dumps(out).encode()


# ---- the services of the conformance kit (conformance/README.md)


def echo_handler(peer, f):
    try:
        req = decode_message(ECHO_REQUEST_FIELDS, f.codec, f.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RpcError(BAD_REQUEST, "EchoRequest did not decode: %s" % e)
    reply = dict(req, codec=CODEC_NAMES[f.codec])
    return encode_message(ECHO_REPLY_FIELDS, f.codec, reply)


def relay_handler(peer, f):
    """conformance.Relay/Echo: asks the caller's own echo.Echo/Echo and returns its reply."""
    try:
        decode_message(ECHO_REQUEST_FIELDS, f.codec, f.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RpcError(BAD_REQUEST, "EchoRequest did not decode: %s" % e)
    budget = f.timeout_ms / 1000.0 if f.timeout_ms else DEFAULT_TIMEOUT
    # §9: the nested call carries the remaining budget.
    return peer.call("echo.Echo", "Echo", f.body, codec=f.codec, timeout=budget)


def kit_services():
    echo = {"Echo": Method(echo_handler, request_type="EchoRequest", reply_type="EchoReply")}
    relay = {"Echo": Method(relay_handler, request_type="EchoRequest", reply_type="EchoReply")}
    return {"echo.Echo": echo, "conformance.Relay": relay}


def serve(addr):
    host, port = addr.rsplit(":", 1)
    ls = socket.create_server((host, int(port)))
    print("listening %s:%d" % ls.getsockname()[:2], flush=True)
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Peer(s, kit_services())


def connect(addr, services=None):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Peer(s, services)


def run_calls(addr):
    """The client side against a Rust peer: echo.Echo/Echo in both codecs, then
    conformance.Relay/Echo, which makes the Rust peer call this peer's echo.Echo/Echo back."""
    peer = connect(addr, kit_services())
    served = []
    echo = peer.services["echo.Echo"]["Echo"]
    inner = echo.fn
    echo.fn = lambda p, f: served.append(f.codec) or inner(p, f)
    for codec in (JSON, PROTOBUF):
        req = {"payload": bytes([0, 1, 2, 255]), "text": "hi from python"}
        body = peer.call("echo.Echo", "Echo", encode_message(ECHO_REQUEST_FIELDS, codec, req),
                         codec=codec)
        reply = decode_message(ECHO_REPLY_FIELDS, codec, body)
        assert reply["payload"] == req["payload"] and reply["text"] == req["text"], reply
        assert reply["codec"] == CODEC_NAMES[codec], reply
        print("ok echo %s %r" % (CODEC_NAMES[codec], reply), flush=True)
    for codec in (JSON, PROTOBUF):
        req = {"text": "relayed"}
        body = peer.call("conformance.Relay", "Echo",
                         encode_message(ECHO_REQUEST_FIELDS, codec, req), codec=codec)
        reply = decode_message(ECHO_REPLY_FIELDS, codec, body)
        assert reply["text"] == "relayed" and reply["codec"] == CODEC_NAMES[codec], reply
        print("ok relay %s %r" % (CODEC_NAMES[codec], reply), flush=True)
    assert served == [JSON, PROTOBUF], served
    print("ok served the call back %d times" % len(served), flush=True)
    try:
        peer.call("echo.Echo", "Nope", b"{}")
        raise AssertionError("an unknown method succeeded")
    except RpcError as e:
        assert e.status == UNKNOWN_METHOD and e.from_peer, e
        print("ok unknown method answered %d" % e.status, flush=True)
    print("ok one-ways dropped: %s" % " ".join("%s/%s" % m for m in peer.dropped_oneways),
          flush=True)
    peer.close()


def main(argv):
    if len(argv) == 3 and argv[1] == "serve":
        serve(argv[2])
    elif len(argv) == 3 and argv[1] == "call":
        run_calls(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
