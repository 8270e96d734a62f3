//! Demo certificates for the TLS examples, made at run time with rcgen: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, and a client certificate (for mutual TLS).
//! For real deployments use certificates from your own CA.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM texts.
pub struct DemoPki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn generate() -> Result<DemoPki, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "getty-rs demo CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let leaf = |names: Vec<String>, eku| -> Result<(String, String), rcgen::Error> {
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name
            .push(DnType::CommonName, "getty-rs demo");
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate()?;
        Ok((p.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        vec!["client.demo".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(DemoPki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and `client.key` into `dir`.
pub fn write(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let pki = generate()?;
    std::fs::create_dir_all(dir)?;
    for (name, pem) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server_cert),
        ("server.key", &pki.server_key),
        ("client.pem", &pki.client_cert),
        ("client.key", &pki.client_key),
    ] {
        std::fs::write(dir.join(name), pem)?;
    }
    println!("wrote a demo CA and certificates to {}", dir.display());
    Ok(())
}
