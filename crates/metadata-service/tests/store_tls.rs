//! TLS to the database (issue 20): a PostgreSQL server that accepts TCP connections
//! only over TLS (`hostssl`), with a certificate from a CA of the test's own. The store
//! connects with `sslmode=require` and `--store-ca-cert`'s CA, and refuses a server
//! whose certificate another CA signed or that names another host; without TLS the
//! server refuses it.

mod support;

use metadata_service::store::{PgOptions, PgStore, Store};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use support::pg;

/// A CA, and a server certificate it signed for `names`: (CA PEM, cert PEM, key PEM).
fn certificates(names: &[&str]) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server on 127.0.0.1:PORT, TLS only over TCP; and a directory for CA files.
fn tls_server(names: &[&str]) -> (pg::Instance, u16, tempfile::TempDir, String) {
    let server = pg::Instance::init("bp-tls");
    let (ca, cert, key) = certificates(names);
    let data = server.data().to_path_buf();
    std::fs::write(data.join("server.crt"), cert).unwrap();
    std::fs::write(data.join("server.key"), key).unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    for file in ["server.crt", "server.key", "pg_hba.conf"] {
        chown_private(&data.join(file));
    }
    let port = free_port();
    server.start_with(&format!(
        "-c ssl=on -c listen_addresses=127.0.0.1 -c port={port}"
    ));
    (server, port, tempfile::tempdir().unwrap(), ca)
}

/// The server's files: its owner's (`nobody` when the tests run as root), 0600.
fn chown_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if pg::is_root() {
        let status = std::process::Command::new("chown")
            .arg("nobody:nogroup")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn options(ca: Option<PathBuf>) -> PgOptions {
    PgOptions {
        pool_size: 2,
        ca_cert: ca,
        ..PgOptions::default()
    }
}

#[test]
fn the_store_speaks_tls_to_a_server_whose_certificate_its_ca_signed() {
    let (_server, port, dir, ca) = tls_server(&["localhost", "127.0.0.1"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    // The CA file implies sslmode=require; the server takes nothing else over TCP.
    let store = PgStore::open(&url, &options(Some(ca_file.clone()))).unwrap();
    store.health().unwrap();
    assert!(store.list().unwrap().is_empty());
    // The same with sslmode=require spelled in the URL.
    PgStore::open(&format!("{url}?sslmode=require"), &options(Some(ca_file))).unwrap();

    // Without TLS: the server refuses (hostssl only), and the error says so.
    let error = PgStore::open(&url, &options(None)).err().unwrap();
    assert!(
        error.to_string().contains("no encryption"),
        "plain connection: {error}"
    );
}

#[test]
fn a_certificate_of_another_ca_or_for_another_name_is_refused() {
    let (_server, port, dir, _ca) = tls_server(&["localhost", "127.0.0.1"]);
    let (other_ca, _, _) = certificates(&["localhost"]);
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let error = PgStore::open(&url, &options(Some(other))).err().unwrap();
    let text = error.to_string();
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "another CA: {text}"
    );

    let (_server2, port2, dir2, ca2) = tls_server(&["db.example"]);
    let ca_file = dir2.path().join("ca.pem");
    std::fs::write(&ca_file, ca2).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port2}/postgres");
    let error = PgStore::open(&url, &options(Some(ca_file))).err().unwrap();
    let text = error.to_string();
    assert!(
        text.contains("certificate") || text.contains("NotValidForName"),
        "another name: {text}"
    );
}
