//! `getty call TARGET SERVICE.METHOD [JSON]`: one two-way call over the JSON codec, or a
//! streaming call (see `stream.rs`) when reflection says the method streams.

use std::io::Read;

use clap::Args;
use getty_rpc::CallOptions;

use crate::output;
use crate::stream::{self, Kind};
use crate::target::{self, Conn, ConnArgs};
use crate::{Failure, Result};

const EXAMPLES: &str = "\
Examples:
  getty call 127.0.0.1:7200 echo.Echo.Echo '{\"text\":\"hi\"}'
  echo '{\"a\":1,\"b\":2}' | getty call 127.0.0.1:7200 test.Math.Add -
  getty call ws://127.0.0.1:7300/rpc test.Math.Add -d @request.json --compact
  getty call tls://localhost:7400 test.Math.Add '{\"a\":1,\"b\":2}' --ca ca.pem --cert me.pem --key me.key
  getty call etcd://127.0.0.1:2379/getty echo.Echo.Echo '{\"text\":\"hi\"}' -H user=ann -t 2s
  getty call 'static://10.0.0.1:7200,10.0.0.2:7200?service=echo.Echo' echo.Echo.Echo '{\"text\":\"hi\"}'

Streams (the peer's reflection says which methods stream, or pass --stream):
  getty call 127.0.0.1:7200 feed.PriceFeed.Watch '{\"symbols\":[\"ACME\"]}'     # one JSON line per item; Ctrl-C cancels
  printf '{\"name\":\"a\",\"data\":\"aGk=\"}\\n' | getty call 127.0.0.1:7200 feed.PriceFeed.Upload
  getty call 127.0.0.1:7200 feed.PriceFeed.Chat                               # lines in from stdin, lines out

With a registry URL the service's instances are looked up there and one is chosen by the
load balancer. Without JSON the request is `null` (what a method taking no argument expects).
A client or bidirectional stream reads its items from stdin, one JSON text per line, and
half-closes at the end of stdin. A stream has no deadline unless --stream-timeout is given.";

/// Call one method with a JSON request and print the JSON reply
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct CallArgs {
    /// host:port, tls://host:port, ws://…, wss://…, or a registry URL (etcd://…,
    /// zookeeper://…, static://…, memory://)
    #[arg(value_name = "TARGET")]
    target: String,
    /// The method: the service is everything before the last dot (greeter.Greeter.SayHello)
    #[arg(value_name = "SERVICE.METHOD")]
    method: String,
    /// The request as JSON; `-` reads it from stdin
    #[arg(value_name = "JSON")]
    json: Option<String>,
    /// The request: JSON text, @FILE, or @- for stdin
    #[arg(short = 'd', long, value_name = "DATA", conflicts_with = "json")]
    data: Option<String>,
    /// Metadata sent with the call (repeatable)
    #[arg(short = 'H', long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Print the reply on one line
    #[arg(long)]
    compact: bool,
    /// Call the method as this kind of stream, without asking the peer's reflection
    #[arg(long, value_name = "KIND", value_enum)]
    stream: Option<Kind>,
    /// A deadline for the whole stream [default: none; Ctrl-C ends it]
    #[arg(long, value_name = "DURATION", value_parser = target::parse_duration)]
    stream_timeout: Option<std::time::Duration>,
    #[command(flatten)]
    conn: ConnArgs,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `greeter.Greeter.SayHello` → (`greeter.Greeter`, `SayHello`).
fn split_method(s: &str) -> Result<(&str, &str)> {
    match s.rsplit_once('.') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            Ok((service, method))
        }
        _ => Err(Failure::usage(format!(
            "{s:?} is not SERVICE.METHOD (e.g. echo.Echo.Echo)"
        ))),
    }
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::usage(format!("cannot read the request from stdin: {e}")))?;
    Ok(buf)
}

/// The request body: checked to be JSON, sent as written.
fn request_body(json: Option<&str>, data: Option<&str>) -> Result<Vec<u8>> {
    let raw = match (json, data) {
        (Some("-"), _) | (_, Some("@-")) => read_stdin()?,
        (_, Some(d)) if d.starts_with('@') => std::fs::read(&d[1..])
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", &d[1..])))?,
        (Some(text), _) | (_, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => b"null".to_vec(),
    };
    let text =
        String::from_utf8(raw).map_err(|_| Failure::usage("the request is not UTF-8 text"))?;
    let text = text.trim();
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Failure::usage(format!("the request is not valid JSON: {e}")))?;
    Ok(text.as_bytes().to_vec())
}

/// An OK reply's body, checked to be JSON text: the call asked for JSON (the reply's codec was
/// checked by the call itself), so anything else is the peer's fault and fails the call.
pub fn reply_text(reply: &[u8]) -> Result<&str> {
    let text = std::str::from_utf8(reply)
        .map_err(|e| Failure::call(format!("the reply is not UTF-8 text: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
        let shown: String = text.chars().take(80).collect();
        Failure::call(format!("the reply is not valid JSON ({e}): {shown:?}"))
    })?;
    Ok(text)
}

pub async fn run(a: CallArgs) -> Result {
    let (service, method) = split_method(&a.method)?;
    // Checked before connecting; a client stream's items come from stdin instead.
    let body = match (&a.json, &a.data) {
        (None, None) => None,
        _ => Some(request_body(a.json.as_deref(), a.data.as_deref())?),
    };
    let conn = Conn::open(&a.target, Some(service), &a.conn).await?;
    let kind = match a.stream {
        Some(k) => Some(k),
        None => stream_kind(&conn, service, method, a.conn.timeout).await,
    };
    let r = match kind {
        Some(kind) => call_stream(&conn, service, method, kind, body, &a).await,
        None => call_unary(&conn, service, method, body, &a).await,
    };
    conn.close().await;
    r
}

/// What the peer's reflection says of `service.method`; `None` (a unary call) when it says
/// nothing: not a stream, an unknown method, or no reflection at all.
async fn stream_kind(
    conn: &Conn,
    service: &str,
    method: &str,
    timeout: std::time::Duration,
) -> Option<Kind> {
    let (peer, _) = conn.peer().ok()?;
    let reply = crate::describe::reflect(&peer, timeout).await.ok()?;
    let services: Vec<crate::describe::Service> = serde_json::from_slice(&reply).ok()?;
    let m = services
        .iter()
        .filter(|s| s.service == service)
        .flat_map(|s| &s.methods)
        .find(|m| m.name == method)?;
    Kind::from_reflection(m.stream.as_deref()?)
}

async fn call_unary(
    conn: &Conn,
    service: &str,
    method: &str,
    body: Option<Vec<u8>>,
    a: &CallArgs,
) -> Result {
    let mut opts = CallOptions::new().timeout(a.conn.timeout);
    opts.metadata = a.meta.clone();
    let body = body.unwrap_or_else(|| b"null".to_vec());
    let reply = conn
        .call(service, method, body.into(), opts)
        .await
        .map_err(target::call_failure)?;
    let text = reply_text(&reply)?;
    output::line(&output::json_layout(text, !a.compact));
    Ok(())
}

async fn call_stream(
    conn: &Conn,
    service: &str,
    method: &str,
    kind: Kind,
    body: Option<Vec<u8>>,
    a: &CallArgs,
) -> Result {
    if kind != Kind::Server && body.is_some() {
        return Err(Failure::usage(format!(
            "{service}.{method} is a {} stream: its items are read from stdin, one JSON text              per line, not given as an argument",
            if kind == Kind::Client {
                "client"
            } else {
                "bidirectional"
            }
        )));
    }
    let (peer, _) = conn.peer()?;
    let mut opts = CallOptions::new();
    opts.timeout = a.stream_timeout;
    opts.metadata = a.meta.clone();
    stream::run(
        &peer,
        stream::Call {
            service,
            method,
            kind,
            request: body,
            opts,
            compact: a.compact,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_split_at_the_last_dot() {
        assert_eq!(
            split_method("greeter.Greeter.SayHello").unwrap(),
            ("greeter.Greeter", "SayHello")
        );
        assert_eq!(split_method("a.B").unwrap(), ("a", "B"));
        for bad in ["Echo", ".Echo", "echo.", ""] {
            assert!(split_method(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_must_be_json() {
        assert_eq!(reply_text(b" {\"a\": 1}").unwrap(), " {\"a\": 1}");
        assert_eq!(reply_text(b"null").unwrap(), "null");
        for bad in [&b"{{{"[..], b"", b"\xff\"x\"", b"1 2"] {
            assert_eq!(reply_text(bad).unwrap_err().code, 1, "{bad:?}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(request_body(None, None).unwrap(), b"null");
        assert_eq!(
            request_body(Some(" {\"a\":1} "), None).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(request_body(None, Some("[1]")).unwrap(), b"[1]");
        assert_eq!(request_body(Some("{nope"), None).unwrap_err().code, 2);
        assert_eq!(
            request_body(None, Some("@/nonexistent/x"))
                .unwrap_err()
                .code,
            2
        );
        assert!(parse_meta("user=ann").is_ok());
        assert!(parse_meta("k=").is_ok());
        assert!(parse_meta("=v").is_err());
        assert!(parse_meta("kv").is_err());
    }
}
