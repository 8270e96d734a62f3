//! getty-registry against the secured etcd of `scripts/servers.sh up` (TLS with client
//! certificates, auth enabled; `cargo test --features etcd --test registry_secure`): an
//! unauthenticated or read-only client can neither register nor rewrite an instance, the
//! provider user can, the consumer user can read; passwords never show in `Debug` output or
//! errors. (ZooKeeper's digest ACLs are tested in `registry_zk`: they need no server setting.)
//!
//! `GETTY_ETCD_SECURE` (default `127.0.0.1:23791`) and `GETTY_SERVERS_DIR` (default
//! `/tmp/getty-servers`, where the script writes the test certificates) point elsewhere. Fails,
//! never skips, when the server is unreachable.
#![cfg(feature = "etcd")]

#[allow(dead_code)]
#[path = "registry_scenarios/server.rs"]
mod server;

use std::time::Duration;

use getty::registry::etcd::{EtcdOptions, EtcdRegistry, EtcdTls, etcd_client};
use getty::registry::{Credentials, Error, Query, Registry, ServiceInstance, connect};

fn addr() -> String {
    server::require(
        "secured etcd",
        "GETTY_ETCD_SECURE",
        server::addr("GETTY_ETCD_SECURE", "127.0.0.1:23791"),
    )
}

fn tls_file(name: &str) -> String {
    let dir = std::env::var("GETTY_SERVERS_DIR").unwrap_or_else(|_| "/tmp/getty-servers".into());
    let path = format!("{dir}/tls/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} missing: run `scripts/servers.sh up` first"
    );
    path
}

/// The TLS query parameters (CA, client certificate and key).
fn tls_params() -> String {
    format!(
        "ca={}&cert={}&key={}",
        tls_file("ca.pem"),
        tls_file("client.pem"),
        tls_file("client.key")
    )
}

fn url(userinfo: &str, root: &str, extra: &str) -> String {
    format!(
        "etcds://{userinfo}{}{root}?timeout=3&{}{extra}",
        addr(),
        tls_params()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_provider_user_registers_over_tls() {
    let root = server::unique_root("secure");
    let inst = ServiceInstance::new("Sec", "10.0.0.1:1").with_instance_id("p1");
    let provider = connect(&url("provider:provider-pw@", &root, ""))
        .await
        .unwrap();
    let r = provider.register(inst.clone()).await.unwrap();
    assert!(!format!("{provider:?} {r:?}").contains("provider-pw"));

    // The consumer user reads (discover, and a Directory's watch).
    let consumer = connect(&url("consumer:consumer-pw@", &root, ""))
        .await
        .unwrap();
    assert_eq!(
        consumer.discover(&Query::new("Sec")).await.unwrap(),
        vec![inst.clone()]
    );
    let dir = getty::registry::Directory::new(consumer.clone(), Query::new("Sec"));
    assert!(dir.wait_for(Duration::from_secs(5), |l| l.len() == 1).await);

    // ... but cannot register, nor rewrite the provider's instance to its own address.
    let mut evil = inst.clone();
    evil.address = "6.6.6.6:1".into();
    let e = consumer.register(evil.clone()).await.unwrap_err();
    assert!(!e.to_string().contains("consumer-pw"), "{e}");
    eprintln!("read-only user's register: {e}");
    let mut raw = etcd_client::Client::connect(
        [format!("https://{}", addr())],
        Some(
            etcd_client::ConnectOptions::new()
                .with_user("consumer", "consumer-pw")
                .with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(
                            std::fs::read(tls_file("ca.pem")).unwrap(),
                        ))
                        .identity(etcd_client::Identity::from_pem(
                            std::fs::read(tls_file("client.pem")).unwrap(),
                            std::fs::read(tls_file("client.key")).unwrap(),
                        )),
                ),
        ),
    )
    .await
    .unwrap();
    let key = format!("{root}/{}", inst.path_key());
    assert!(raw.put(key.as_str(), "{}", None).await.is_err());
    assert!(raw.delete(key.as_str(), None).await.is_err());

    // No user at all (TLS with the client certificate, whose name is no etcd user).
    let anonymous = connect(&url("", &root, "")).await.unwrap();
    assert!(anonymous.register(evil.clone()).await.is_err());
    assert!(anonymous.discover(&Query::new("Sec")).await.is_err());

    // A wrong password is refused, and not shown.
    let e = connect(&url("provider:wrong-pw@", &root, ""))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("wrong-pw"), "{e}");
    eprintln!("wrong password: {e}");

    // Plaintext to the TLS port does not get through.
    let plain = connect(&format!(
        "etcd://provider:provider-pw@{}{root}?timeout=2",
        addr()
    ))
    .await;
    match plain {
        Ok(reg) => assert!(reg.register(evil.clone()).await.is_err()),
        Err(e) => assert!(!e.to_string().contains("provider-pw"), "{e}"),
    }

    // The instance is untouched.
    assert_eq!(
        consumer.discover(&Query::new("Sec")).await.unwrap(),
        vec![inst.clone()]
    );
    r.deregister().await.unwrap();
    assert!(
        consumer
            .discover(&Query::new("Sec"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The same from code (`EtcdOptions`), verifying the server under a name other than the
/// endpoint's host; a name the certificate does not carry is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_from_code_and_server_name() {
    let root = server::unique_root("secure-code");
    let tls = EtcdTls::with_ca(tls_file("ca.pem"))
        .client_cert(tls_file("client.pem"), tls_file("client.key"))
        .server_name("etcd.getty.test");
    let options = EtcdOptions::new([addr().as_str()])
        .root(&root)
        .timeout(Duration::from_secs(3))
        .credentials(Credentials::new("provider", "provider-pw"))
        .tls(tls.clone());
    assert!(!format!("{options:?}").contains("provider-pw"));
    let reg = EtcdRegistry::with_options(options.clone()).await.unwrap();
    let _r = reg
        .register(ServiceInstance::new("Code", "10.0.0.2:1").with_instance_id("c1"))
        .await
        .unwrap();
    assert_eq!(reg.discover(&Query::new("Code")).await.unwrap().len(), 1);

    let wrong = options.tls(tls.server_name("not-the-server.example"));
    let r = match EtcdRegistry::with_options(wrong).await {
        Ok(reg) => reg.discover(&Query::new("Code")).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(r, Err(Error::Unavailable(_) | Error::Backend(_))),
        "{r:?}"
    );
}
