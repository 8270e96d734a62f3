//! `getty watch REGISTRY_URL [SERVICE]`: instances (of a service, or of every service) joining
//! and leaving, live, until Ctrl-C.

use std::time::SystemTime;

use clap::Args;
use getty_registry::{Event, ServiceInstance};

use crate::output::{self, Style};
use crate::target::{RegistryArgs, with_registry};
use crate::{Failure, Result};

const EXAMPLES: &str = "\
Examples:
  getty watch etcd://127.0.0.1:2379/getty echo.Echo
  getty watch zookeeper://127.0.0.1:2181/getty echo.Echo --group bj
  getty watch etcd://127.0.0.1:2379/getty

Without SERVICE, every service of the registry is watched, including services that appear
later. One line per event, with a UTC timestamp, a mark, then the service and the instance:
  =  present when the watch started      +  joined
  ~  changed (same instance id)          -  left
A line starting with # follows the initial snapshot.";

/// Stream the instances of a service (or of every service) joining and leaving, until Ctrl-C
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct WatchArgs {
    #[command(flatten)]
    reg: RegistryArgs,
}

fn describe(i: &ServiceInstance) -> String {
    let mut s = format!(
        "{} {} {} {}",
        i.service, i.instance_id, i.address, i.transport
    );
    if !i.group.is_empty() {
        s.push_str(&format!(" group={}", i.group));
    }
    if !i.version.is_empty() {
        s.push_str(&format!(" version={}", i.version));
    }
    s.push_str(&format!(" weight={}", i.weight));
    if !i.codecs.is_empty() {
        s.push_str(&format!(" codecs={}", i.codecs.join(",")));
    }
    for (k, v) in &i.metadata {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

pub async fn run(a: WatchArgs) -> Result {
    let style = Style::stdout();
    let query = a.reg.query()?;
    let what = a.reg.what().to_string();
    let url = a.reg.url.clone();
    // What is printed: never a password.
    let shown = getty_registry::redact_url(&url);
    // The registry is kept for as long as the watch runs.
    let (_registry, mut watch) = with_registry(&url, a.reg.timeout, async |r| {
        let w = r.watch(&query).await?;
        Ok((r, w))
    })
    .await?;
    let stamp = || style.dim(&output::utc_timestamp(SystemTime::now()));
    let emit = |mark: &str, i: &ServiceInstance| {
        let mark = match mark {
            "+" => style.green(mark),
            "-" => style.red(mark),
            "~" => style.yellow(mark),
            _ => mark.to_string(),
        };
        output::line(&format!("{} {mark} {}", stamp(), describe(i)))
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            e = watch.next() => e,
        };
        let open = match event {
            Some(Event::Snapshot(mut all)) => {
                crate::list::sort(&mut all);
                let n = all.len();
                let mut open = output::line(&format!(
                    "{} # watching {what} in {shown}: {n} instance{}",
                    stamp(),
                    if n == 1 { "" } else { "s" }
                ));
                for i in &all {
                    open &= emit("=", i);
                }
                open
            }
            Some(Event::Added(i)) => emit("+", &i),
            Some(Event::Updated(i)) => emit("~", &i),
            Some(Event::Removed(i)) => emit("-", &i),
            None => return Err(Failure::connect(format!("{shown}: the watch ended"))),
        };
        if !open {
            return Ok(()); // stdout closed (e.g. `| head`)
        }
    }
}
