//! TLS to the database: on when the URL says `sslmode=require` or `--store-ca-cert`
//! is given. The server's certificate must chain to the certificates of
//! `--store-ca-cert` (a managed database's CA bundle, or the operator's own CA), else to
//! the system's bundle; its name must be the URL's host. rustls (already in the tree
//! for the service's own TLS) through `tokio-postgres-rustls`, the small glue crate
//! the `postgres` crates document for rustls; no OpenSSL. A connection to another
//! machine without TLS is warned about: the password and every report would cross the
//! network in clear.

use super::StoreError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::path::Path;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The system's CA bundle (Debian's `ca-certificates`).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How connections are made.
#[derive(Clone)]
pub(super) enum Tls {
    Off,
    On(MakeRustlsConnect),
}

/// The TLS of `config` (whose `sslmode` it may set to `require`).
pub(super) fn configure(
    config: &mut ::postgres::Config,
    ca_cert: Option<&Path>,
) -> Result<Tls, StoreError> {
    use ::postgres::config::SslMode;
    if ca_cert.is_some() {
        config.ssl_mode(SslMode::Require);
    }
    if config.get_ssl_mode() != SslMode::Require {
        let remote = config.get_hosts().iter().any(|host| match host {
            ::postgres::config::Host::Tcp(name) => !is_loopback(name),
            _ => false,
        });
        if remote {
            tracing::warn!(
                "connections to the database are not encrypted: the password and every \
                 report cross the network in clear (add sslmode=require to the URL, and \
                 --store-ca-cert for the server's CA)"
            );
        }
        // `prefer` (the client's default) would try TLS and fall back to plain text:
        // encryption nobody checks is not asked for.
        config.ssl_mode(SslMode::Disable);
        return Ok(Tls::Off);
    }
    let path = ca_cert.unwrap_or(Path::new(SYSTEM_BUNDLE));
    let mut roots = RootCertStore::empty();
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect())
        .map_err(|error| {
            StoreError(format!(
                "cannot read the database's CA certificates from {}: {error}",
                path.display()
            ))
        })?;
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(StoreError(format!(
            "{} holds no usable CA certificate for the database's TLS",
            path.display()
        )));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError(format!("TLS to the database: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::On(MakeRustlsConnect::new(client)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::postgres::config::SslMode;

    fn config(url: &str) -> ::postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn tls_is_off_unless_required_and_never_preferred() {
        let mut plain = config("postgres://bp@db.example/fleet");
        assert!(matches!(configure(&mut plain, None), Ok(Tls::Off)));
        assert_eq!(plain.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn a_ca_file_requires_tls_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let mut url = config("postgres://bp@db.example/fleet");
        let error = configure(&mut url, Some(&empty)).err().unwrap();
        assert!(
            error.to_string().contains("no usable CA certificate"),
            "{error}"
        );
        assert_eq!(url.get_ssl_mode(), SslMode::Require);
        let missing = dir.path().join("missing.pem");
        let error = configure(&mut url, Some(&missing)).err().unwrap();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let certified = rcgen::generate_simple_self_signed(vec!["db.example".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        assert!(matches!(configure(&mut url, Some(&ca)), Ok(Tls::On(_))));
    }
}
