//! `getty describe TARGET`: the services and methods a peer serves, from its built-in
//! `getty.Reflection/Describe`.

use clap::Args;
use std::time::Duration;

use bytes::Bytes;
use getty_rpc::{CallOptions, CodecId, Peer, RpcError, Status};
use serde::Deserialize;

use crate::output::{self, Style};
use crate::target::{Conn, ConnArgs, call_failure};
use crate::{Failure, Result};

const EXAMPLES: &str = "\
Examples:
  getty describe 127.0.0.1:7200
  getty describe wss://rpc.example.com/rpc --json
  getty describe etcd://127.0.0.1:2379/getty --service echo.Echo

Each method is shown as NAME  REQUEST -> REPLY  CODECS; one-way methods have no reply, and
streaming methods mark their streamed side as in a .proto: `Req -> stream Item` (server
stream), `stream Item -> Reply` (client stream), `stream In -> stream Out` (bidirectional).";

/// List the services and methods a peer serves
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct DescribeArgs {
    /// host:port, tls://host:port, ws://…, wss://…, or a registry URL with --service
    #[arg(value_name = "TARGET")]
    target: String,
    /// Only this service; with a registry target, the service whose instance to ask
    #[arg(short = 's', long, value_name = "SERVICE")]
    service: Option<String>,
    /// Print the reflection reply as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// One entry of the reflection reply (see getty-rpc's `builtin.rs`).
#[derive(Deserialize)]
pub struct Service {
    pub service: String,
    pub methods: Vec<Method>,
}

#[derive(Deserialize)]
pub struct Method {
    pub name: String,
    request_type: String,
    reply_type: String,
    one_way: bool,
    codecs: Vec<String>,
    /// `server`, `client` or `bidi` for a streaming method.
    #[serde(default)]
    pub stream: Option<String>,
}

/// Asks `peer` for its `getty.Reflection/Describe` (JSON).
pub async fn reflect(peer: &Peer, timeout: Duration) -> Result<Bytes, RpcError> {
    peer.call_raw(
        "getty.Reflection",
        "Describe",
        CodecId::Json,
        "null".into(),
        CallOptions::new().timeout(timeout),
    )
    .await
}

pub async fn run(a: DescribeArgs) -> Result {
    let conn = Conn::open(&a.target, a.service.as_deref(), &a.conn).await?;
    let (peer, name) = conn.peer()?;
    let reply = reflect(&peer, a.conn.timeout).await;
    conn.close().await;
    let reply = reply.map_err(|e| match e.status {
        Status::UnknownService => Failure::call(format!("{name} does not answer reflection: {e}")),
        _ => call_failure(e),
    })?;
    let mut services: Vec<Service> = serde_json::from_slice(&reply)
        .map_err(|e| Failure::call(format!("{name}: unexpected reflection reply: {e}")))?;
    if let Some(only) = &a.service {
        services.retain(|s| &s.service == only);
    }
    if a.json {
        let text = String::from_utf8_lossy(&reply);
        if a.service.is_none() {
            output::line(&output::json_layout(&text, true));
        } else {
            // Re-encoded to drop the other services (the keys come out sorted).
            let v: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
            let kept: Vec<_> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["service"].as_str() == a.service.as_deref())
                .collect();
            output::line(&serde_json::to_string_pretty(&kept).unwrap_or_default());
        }
        return Ok(());
    }
    if services.is_empty() {
        output::line(&match &a.service {
            Some(s) => format!("{name} does not serve {s}"),
            None => format!("{name} serves no services"),
        });
        return Ok(());
    }
    output::line(&render(Style::stdout(), &services));
    Ok(())
}

fn render(style: Style, services: &[Service]) -> String {
    // Streams as a .proto writes them: `Req -> stream Item`, `stream Item -> Reply`.
    let signature = |m: &Method| {
        let (ins, outs) = match m.stream.as_deref() {
            Some("server") => ("", "stream "),
            Some("client") => ("stream ", ""),
            Some(_) => ("stream ", "stream "),
            None => ("", ""),
        };
        if m.one_way {
            format!("{} (one-way)", m.request_type)
        } else {
            format!("{ins}{} -> {outs}{}", m.request_type, m.reply_type)
        }
    };
    let name_w = services
        .iter()
        .flat_map(|s| &s.methods)
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    let sig_w = services
        .iter()
        .flat_map(|s| &s.methods)
        .map(|m| signature(m).chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for s in services {
        out.push(style.bold(&s.service));
        for m in &s.methods {
            let sig = signature(m);
            let name_pad = " ".repeat(name_w - m.name.chars().count());
            let sig_pad = " ".repeat(sig_w - sig.chars().count());
            let sig = if m.one_way { style.yellow(&sig) } else { sig };
            out.push(format!(
                "  {}{name_pad}  {sig}{sig_pad}  {}",
                style.cyan(&m.name),
                style.dim(&m.codecs.join(","))
            ));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned() {
        let services: Vec<Service> = serde_json::from_str(
            r#"[{"service":"test.Math","methods":[
                {"name":"Add","request_type":"Add","reply_type":"i64","one_way":false,"codecs":["json"]},
                {"name":"Log","request_type":"String","reply_type":"()","one_way":true,"codecs":["json"]}]},
              {"service":"test.Feed","methods":[
                {"name":"Tail","request_type":"u64","reply_type":"Value","one_way":false,"codecs":["json"],"stream":"server"},
                {"name":"Sum","request_type":"i64","reply_type":"i64","one_way":false,"codecs":["json"],"stream":"client"},
                {"name":"Echo","request_type":"Value","reply_type":"Value","one_way":false,"codecs":["json"],"stream":"bidi"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            render(Style::plain(), &services),
            "test.Math\n  Add   Add -> i64                    json\n  Log   String (one-way)              json\n\
             test.Feed\n  Tail  u64 -> stream Value           json\n  Sum   stream i64 -> i64             json\n\
             \x20 Echo  stream Value -> stream Value  json"
        );
    }
}
