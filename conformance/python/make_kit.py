"""Writes conformance/vectors/frames.json and conformance/scenarios/*.json from the cases below.

    python3 conformance/python/make_kit.py           # rewrite the files
    python3 conformance/python/make_kit.py --check   # exit 1 if the files differ (CI)

Each case states the frame by its fields (PROTOCOL.md) and the outcome the protocol requires;
the hex is encoded here by getty_peer.py, then damaged on purpose for the violations. The Rust
runner (tests/conformance.rs) decodes every hex independently and checks it against the
fields, so the two implementations check each other.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import getty_peer as g  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = {1: "Request", 2: "Response", 3: "OneWay", 4: "Ping", 5: "Pong", 6: "Cancel"}


def fields(f):
    return {"kind": f.kind, "codec": f.codec, "flags": f.flags, "status": f.status,
            "seq": f.seq, "timeout_ms": f.timeout_ms, "service": f.service,
            "method": f.method, "metadata": [list(p) for p in f.metadata],
            "body_hex": f.body.hex()}


def req(seq, service="echo.Echo", method="Echo", body=b'{"text":"hi"}', codec=g.JSON, **kw):
    return g.Frame(g.REQUEST, seq, codec=codec, service=service, method=method, body=body, **kw)


def set_u32(b, off, v):
    return b[:off] + v.to_bytes(4, "big") + b[off + 4:]


def reply(seq, status=0, codec=0, **kw):
    p = {"kind": g.RESPONSE, "seq": seq, "status": status, "codec": codec}
    p.update(kw)
    return p


ECHO_PB = g.pb_encode(g.ECHO_REQUEST_FIELDS, {"payload": b"\x00\x01\xff", "text": "hi"})
DESCRIBE = [
    {"service": "conformance.Relay", "methods": [
        {"name": "Echo", "request_type": "EchoRequest", "reply_type": "EchoReply",
         "one_way": False, "codecs": ["protobuf", "json"]}]},
    {"service": "echo.Echo", "methods": [
        {"name": "Echo", "request_type": "EchoRequest", "reply_type": "EchoReply",
         "one_way": False, "codecs": ["protobuf", "json"]}]},
]


def vectors():
    """(name, section, doc, frame or None, hex override or None, outcome)."""
    v = []

    def ok(name, sec, doc, f, outcome):
        v.append((name, sec, doc, f, None, outcome))

    def bad(name, sec, doc, hexbytes):
        v.append((name, sec, doc, None, hexbytes, "violation"))

    ok("ping", "10", "a Ping is answered by a Pong with its seq", g.Frame(g.PING, 5),
       [{"kind": g.PONG, "seq": 5}])
    ok("ping-ignored-fields", "5", "non-zero flags, codec, status, timeout and names in a "
       "Ping are ignored, not a violation",
       g.Frame(g.PING, 6, codec=9, status=77, timeout_ms=3, flags=0xff, service="x.Y",
               method="Z", metadata=[("k", "v")]),
       [{"kind": g.PONG, "seq": 6}])
    ok("request-json", "8", "an echo Request in JSON is answered in JSON, status 0",
       req(1, metadata=[("trace-id", "7f3a"), ("trace-id", ""), ("", "x")]),
       [reply(1, codec=g.JSON, body_json={"text": "hi", "codec": "json"})])
    ok("request-protobuf", "8", "an echo Request in Protobuf is answered in Protobuf",
       req(2, body=ECHO_PB, codec=g.PROTOBUF, timeout_ms=1500),
       [reply(2, codec=g.PROTOBUF, body_hex=g.pb_encode(g.ECHO_REPLY_FIELDS, {
           "payload": b"\x00\x01\xff", "text": "hi", "codec": "protobuf"}).hex())])
    ok("request-json-canonical-bytes", "6.1", "bytes travel as base64 in JSON, fields at "
       "their default are left out", req(3, body=b'{"payload":"AAH/"}'),
       [reply(3, codec=g.JSON, body_json={"payload": "AAH/", "codec": "json"})])
    ok("request-json-unknown-field", "6.1", "unknown JSON members are ignored",
       req(4, body=b'{"text":"hi","later":[1,{"x":2}]}'),
       [reply(4, codec=g.JSON, body_json={"text": "hi", "codec": "json"})])
    ok("unknown-service", "8", "step 1: UNKNOWN_SERVICE, codec 0, UTF-8 text",
       req(5, service="no.Such"), [reply(5, status=g.UNKNOWN_SERVICE, body_utf8=True)])
    ok("unknown-method", "8", "step 2: UNKNOWN_METHOD",
       req(6, method="Shout"), [reply(6, status=g.UNKNOWN_METHOD, body_utf8=True)])
    ok("name-255-bytes", "4", "a 255-byte service name is legal; it matches nothing",
       req(7, service="s" * 255), [reply(7, status=g.UNKNOWN_SERVICE)])
    ok("codec-none", "8", "step 4: codec 0 in a Request is UNSUPPORTED_CODEC",
       req(8, codec=g.NONE), [reply(8, status=g.UNSUPPORTED_CODEC)])
    ok("codec-unknown", "6", "an unknown codec byte is not a violation: UNSUPPORTED_CODEC",
       req(9, codec=7), [reply(9, status=g.UNSUPPORTED_CODEC)])
    ok("bad-json", "8", "step 5: a body that is not JSON is BAD_REQUEST",
       req(10, body=b'{"text":'), [reply(10, status=g.BAD_REQUEST)])
    ok("json-trailing-bytes", "6.1", "exactly one JSON value: trailing data is BAD_REQUEST",
       req(11, body=b'{"text":"hi"} {}'), [reply(11, status=g.BAD_REQUEST)])
    ok("bad-protobuf", "8", "step 5: a truncated Protobuf body is BAD_REQUEST",
       req(12, body=b"\x12\x05hi", codec=g.PROTOBUF), [reply(12, status=g.BAD_REQUEST)])
    ok("oneway-to-two-way-method", "8", "a OneWay never gets an answer, even an error",
       g.Frame(g.ONEWAY, 13, codec=g.JSON, service="echo.Echo", method="Echo",
               body=b'{"text":"hi"}'), [])
    ok("oneway-unknown-service", "8", "nothing is sent back for a failed OneWay",
       g.Frame(g.ONEWAY, 14, codec=g.JSON, service="no.Such", method="X", body=b"{}"), [])
    ok("hello-oneway", "Hello", "a OneWay to getty.Peer/Hello gets no answer",
       g.Frame(g.ONEWAY, 15, codec=g.JSON, service="getty.Peer", method="Hello",
               body=b'"conformance-runner"'), [])
    ok("late-response", "8", "a Response with an unknown seq is a late reply: dropped",
       g.Frame(g.RESPONSE, 999, codec=g.JSON, body=b"{}"), [])
    ok("late-error-unknown-status", "13", "unknown status codes are kept, never rejected",
       g.Frame(g.RESPONSE, 998, status=999, body=b"\xff not utf-8"), [])
    ok("cancel-unknown", "11", "a Cancel for no call in progress is ignored",
       g.Frame(g.CANCEL, 4242), [])
    ok("pong-unknown", "10", "a Pong with an unknown seq is ignored", g.Frame(g.PONG, 77), [])
    ok("describe", "16", "getty.Reflection/Describe lists the kit's services",
       req(16, service="getty.Reflection", method="Describe", body=b"null"),
       [reply(16, codec=g.JSON, body_json=DESCRIBE)])
    ok("describe-unknown-method", "16", "another method of getty.Reflection: UNKNOWN_METHOD",
       req(17, service="getty.Reflection", method="Nope", body=b"null"),
       [reply(17, status=g.UNKNOWN_METHOD)])

    ping = g.encode(g.Frame(g.PING, 1))
    bad("bad-magic", "15", "bytes 0-1 are not 47 54", b"GX" + ping[2:])
    bad("bad-version", "15", "version 2", ping[:2] + b"\x02" + ping[3:])
    bad("kind-0", "15", "kind 0", ping[:3] + b"\x00" + ping[4:])
    bad("kind-11", "15", "kind 11 (the known kinds are 1..=10)", ping[:3] + b"\x0b" + ping[4:])
    bad("credit-short-body", "15", "a Credit whose body is not 12 bytes", ping[:3] + b"\x07" + ping[4:])
    bad("meta-len-0", "4", "meta_len 0 cannot hold the 6-byte minimum", set_u32(ping, 20, 0)[:28])
    bad("meta-len-65536", "15", "meta_len over 65535, rejected from the header alone",
        set_u32(ping, 20, 65536)[:28])
    bad("frame-over-limit", "15", "28 + meta_len + body_len over the 16 MiB default limit, "
        "rejected from the header before any body arrives",
        set_u32(ping, 24, g.DEFAULT_MAX_FRAME - 28 - 6 + 1)[:28] + ping[28:])
    bad("meta-string-overrun", "4", "the service length runs past meta_len",
        ping[:28] + b"\x00\x07" + ping[30:])
    bad("meta-pairs-overrun", "4", "pair_count 1 with no pair in the section",
        ping[:32] + b"\x00\x01")
    bad("meta-leftover", "4", "a byte left over after the last pair",
        set_u32(ping, 20, 7) + b"\x00")
    r = g.encode(req(1))
    bad("service-not-utf8", "15", "invalid UTF-8 in service",
        r[:30] + b"\xff" + r[31:])
    bad("ping-method-not-utf8", "5", "invalid UTF-8 in a field the kind ignores is still a "
        "violation", g.encode(g.Frame(g.PING, 1, method="ab"))[:32] + b"\xc3\x28"
        + g.encode(g.Frame(g.PING, 1, method="ab"))[34:])
    bad("metadata-key-not-utf8", "15", "invalid UTF-8 in a metadata key",
        g.encode(req(1, metadata=[("k", "v")]))[:28 + 2 + 9 + 2 + 4 + 2 + 2] + b"\xfe"
        + g.encode(req(1, metadata=[("k", "v")]))[28 + 2 + 9 + 2 + 4 + 2 + 2 + 1:])
    long = g.Frame(g.REQUEST, 1, codec=g.JSON, service="s" * 255, method="M", body=b"{}")
    raw = g.encode(long)
    # 256-byte service: re-encode by hand (the encoder refuses it).
    meta = b"\x01\x00" + b"s" * 256 + b"\x00\x01M\x00\x00"
    bad("service-256-bytes", "4", "service longer than 255 bytes",
        set_u32(raw[:28], 20, len(meta)) + meta + b"{}")
    meta = b"\x00\x00\x01\x00" + b"m" * 256 + b"\x00\x00"
    bad("cancel-method-256-bytes", "5", "a name over 255 bytes is a violation even in a "
        "kind that ignores names", set_u32(ping[:3] + b"\x06" + ping[4:28], 20, len(meta)) + meta)

    out = []
    for name, sec, doc, f, hexbytes, outcome in v:
        item = {"name": name, "section": sec, "doc": doc}
        if f is not None:
            item["hex"] = g.encode(f).hex()
            item["frame"] = fields(f)
        else:
            item["hex"] = hexbytes.hex()
        if outcome == "violation":
            item["outcome"] = "violation"
        else:
            item["outcome"] = {"replies": outcome}
        out.append(item)
    return out


def frame_spec(f, body_json=None):
    d = {"kind": f.kind, "seq": f.seq}
    if f.codec:
        d["codec"] = f.codec
    if f.status:
        d["status"] = f.status
    if f.timeout_ms:
        d["timeout_ms"] = f.timeout_ms
    if f.service:
        d["service"], d["method"] = f.service, f.method
    if body_json is not None:
        d["body_json"] = body_json
    elif f.body:
        d["body_hex"] = f.body.hex()
    return d


def scenarios():
    relay = {"kind": g.REQUEST, "seq": 1, "codec": g.JSON, "timeout_ms": 5000,
             "service": "conformance.Relay", "method": "Echo", "body_json": {"text": "x"}}
    nested = {"kind": g.REQUEST, "service": "echo.Echo", "method": "Echo", "codec": g.JSON,
              "body_json": {"text": "x"}}
    # The relay's call back arrives; its seq is captured as n.
    start = [{"send": relay}, {"expect": nested, "capture": {"seq": "n"}}]

    def answer(codec):
        return {"send": {"kind": g.RESPONSE, "seq": "$n", "codec": codec,
                         "body_json": {"text": "x", "codec": "json"}}}

    return {
        "reverse-call": {
            "doc": "§1: the callee calls the caller back on the same connection while it "
                   "serves; the caller serves that call and gets the relayed reply",
            "steps": start + [
                answer(g.JSON),
                {"expect": reply(1, codec=g.JSON, body_json={"text": "x", "codec": "json"})},
                {"expect_silence": True},
            ]},
        "nested-reply-in-another-codec": {
            "doc": "§6: an OK reply in another codec fails that call locally (here the "
                   "relay's nested call), and the connection stays up",
            "steps": start + [
                # A body that would decode in the request's codec: only the codec is wrong.
                answer(g.PROTOBUF),
                {"expect": reply(1, status="nonzero", body_utf8=True)},
                {"send": {"kind": g.PING, "seq": 3}},
                {"expect": {"kind": g.PONG, "seq": 3}},
            ]},
        "cancel-reaches-nested-calls": {
            "doc": "§11: cancelling a call cancels the calls its handler is waiting for",
            "tolerate": [reply(1, status=g.CANCELLED)],
            "steps": start + [
                {"send": {"kind": g.CANCEL, "seq": 1}},
                {"expect": {"kind": g.CANCEL, "seq": "$n"}},
                {"send": {"kind": g.RESPONSE, "seq": "$n", "codec": g.JSON,
                          "body_json": {"text": "late"}}},
                {"expect_silence": True},
            ]},
        "duplicate-seq": {
            "doc": "§7: two Requests with one seq are each answered",
            "steps": [
                {"send": frame_spec(req(9), {"text": "a"})},
                {"send": frame_spec(req(9), {"text": "b"})},
                {"expect": reply(9, codec=g.JSON)},
                {"expect": reply(9, codec=g.JSON)},
                {"expect_silence": True},
            ]},
        "violation-abandons-calls": {
            "doc": "§15: after a violation nothing more is sent, not even the Response of a "
                   "call in progress",
            "steps": start + [
                {"send_hex": "4754ff"},
                {"expect_close": True},
            ]},
        "split-and-batched": {
            "doc": "§1: frames may arrive split across reads and several in one read",
            "steps": [
                {"send_hex": g.encode(g.Frame(g.PING, 1))[:5].hex()},
                {"send_hex": (g.encode(g.Frame(g.PING, 1))[5:]
                              + g.encode(g.Frame(g.PING, 2))).hex()},
                {"expect": {"kind": g.PONG, "seq": 1}},
                {"expect": {"kind": g.PONG, "seq": 2}},
            ]},
    }


def render(obj):
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"


def files():
    out = {os.path.join(ROOT, "vectors", "frames.json"): render(
        {"protocol": 1, "services": "see conformance/README.md", "vectors": vectors()})}
    for name, sc in scenarios().items():
        sc = dict(name=name, **sc)
        out[os.path.join(ROOT, "scenarios", name + ".json")] = render(sc)
    return out


def main(argv):
    check = "--check" in argv
    stale = []
    for path, text in files().items():
        old = open(path).read() if os.path.exists(path) else None
        if old != text:
            stale.append(path)
            if not check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    if check and stale:
        print("stale, rerun make_kit.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
