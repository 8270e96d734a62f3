//! `getty list REGISTRY_URL [SERVICE]`: a table of the instances of a service, or of every
//! service of the registry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use getty_registry::ServiceInstance;

use crate::Result;
use crate::output::{self, Style};
use crate::target::{RegistryArgs, with_registry};

const EXAMPLES: &str = "\
Examples:
  getty list etcd://127.0.0.1:2379/getty
  getty list etcd://127.0.0.1:2379/getty echo.Echo
  getty list zookeeper://127.0.0.1:2181/getty echo.Echo --group bj --json
  getty list 'static://10.0.0.1:7200,10.0.0.2:7200?service=echo.Echo'

Without SERVICE, every service of the registry is listed (--group and --service-version still
filter). Rows are sorted by service, then instance id.

AGE comes from the instance's `registered_at` metadata (Unix seconds or milliseconds) when the
provider set it; `-` otherwise.";

/// Metadata key holding when an instance was registered (Unix seconds or milliseconds).
pub const REGISTERED_AT: &str = "registered_at";

/// List the instances of a service, or of every service, in a registry
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ListArgs {
    #[command(flatten)]
    reg: RegistryArgs,
    /// Print the instances as JSON, as stored in the registry
    #[arg(long)]
    json: bool,
}

pub async fn run(a: ListArgs) -> Result {
    let query = a.reg.query()?;
    let mut instances = with_registry(&a.reg.url, a.reg.timeout, async |r| {
        r.discover(&query).await
    })
    .await?;
    sort(&mut instances);
    if a.json {
        output::line(&serde_json::to_string_pretty(&instances).unwrap_or_default());
        return Ok(());
    }
    if instances.is_empty() {
        match &a.reg.service {
            Some(service) => output::line(&format!("no instance of {service} in {}", a.reg.url)),
            None => output::line(&format!("no instance in {}", a.reg.url)),
        };
        return Ok(());
    }
    output::line(&render(Style::stdout(), &instances, SystemTime::now()));
    Ok(())
}

/// Sorts by service, then instance id (then group and version, for equal ids).
pub fn sort(instances: &mut [ServiceInstance]) {
    instances.sort_by(|a, b| {
        (&a.service, &a.instance_id, &a.group, &a.version).cmp(&(
            &b.service,
            &b.instance_id,
            &b.group,
            &b.version,
        ))
    });
}

/// How long ago the instance was registered, if it says.
pub fn age(i: &ServiceInstance, now: SystemTime) -> String {
    let Some(n) = i
        .metadata
        .get(REGISTERED_AT)
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return "-".to_string();
    };
    // Milliseconds from 1973 on, seconds before (ambiguous values are centuries apart).
    let at = if n >= 100_000_000_000 {
        UNIX_EPOCH + Duration::from_millis(n)
    } else {
        UNIX_EPOCH + Duration::from_secs(n)
    };
    output::age(now.duration_since(at).unwrap_or_default())
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_string() } else { s }
}

fn render(style: Style, instances: &[ServiceInstance], now: SystemTime) -> String {
    let grouped = instances
        .iter()
        .any(|i| !i.group.is_empty() || !i.version.is_empty());
    let mut headers = vec!["SERVICE"];
    if grouped {
        headers.extend(["GROUP", "VERSION"]);
    }
    headers.extend([
        "INSTANCE",
        "ADDRESS",
        "TRANSPORT",
        "CODECS",
        "WEIGHT",
        "METADATA",
        "AGE",
    ]);
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let mut row = vec![i.service.clone()];
            if grouped {
                row.extend([or_dash(i.group.clone()), or_dash(i.version.clone())]);
            }
            let meta = i
                .metadata
                .iter()
                .filter(|(k, _)| k.as_str() != REGISTERED_AT)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            row.extend([
                i.instance_id.clone(),
                i.address.clone(),
                i.transport.to_string(),
                or_dash(i.codecs.join(",")),
                i.weight.to_string(),
                or_dash(meta),
                age(i, now),
            ]);
            row
        })
        .collect();
    output::table(style, &headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_age() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let a = ServiceInstance::new("echo.Echo", "127.0.0.1:1")
            .with_instance_id("a")
            .with_codec("json")
            .with_metadata("zone", "z1")
            .with_metadata(REGISTERED_AT, "1999999880");
        let b = ServiceInstance::new("echo.Echo", "127.0.0.1:22")
            .with_instance_id("bb")
            .with_metadata(REGISTERED_AT, "1999999990000");
        assert_eq!(age(&a, now), "2m");
        assert_eq!(age(&b, now), "10s");
        assert_eq!(
            render(Style::plain(), &[a, b], now),
            "SERVICE    INSTANCE  ADDRESS       TRANSPORT  CODECS  WEIGHT  METADATA  AGE\n\
             echo.Echo  a         127.0.0.1:1   tcp        json    100     zone=z1   2m\n\
             echo.Echo  bb        127.0.0.1:22  tcp        -       100     -         10s"
        );
    }

    #[test]
    fn every_service_sorted_by_service_then_id() {
        let now = UNIX_EPOCH;
        let i = |s: &str, id: &str, v: &str| {
            ServiceInstance::new(s, "h:1")
                .with_instance_id(id)
                .with_version(v)
        };
        let mut list = vec![
            i("b.B", "x", ""),
            i("a.A", "z", "v2"),
            i("b.B", "a", "v9"),
            i("a.A", "y", "v1"),
        ];
        sort(&mut list);
        assert_eq!(
            render(Style::plain(), &list, now),
            "SERVICE  GROUP  VERSION  INSTANCE  ADDRESS  TRANSPORT  CODECS  WEIGHT  METADATA  AGE\n\
             a.A      -      v1       y         h:1      tcp        -       100     -         -\n\
             a.A      -      v2       z         h:1      tcp        -       100     -         -\n\
             b.B      -      v9       a         h:1      tcp        -       100     -         -\n\
             b.B      -      -        x         h:1      tcp        -       100     -         -"
        );
    }
}
