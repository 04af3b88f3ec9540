//! TLS on the listener, over loopback: requests are served over TLS with
//! the configured certificate, plain HTTP gets no answer, a reload (what
//! SIGHUP does) hands new connections the new certificate, and a reload
//! from broken files keeps the old one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hangar_daemon::http::{Connections, Limits, serve_with};
use hangar_daemon::tls::Tls;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A self-signed certificate for `localhost`, written as PEM files; its DER.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    ck.cert.der().clone()
}

/// GET /hello over TLS, trusting only `trusted`; the response text.
async fn get_tls(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn serves_over_tls_and_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let tls = Tls::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();

    let app = Router::new().route("/hello", get(|| async { "hello over tls" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_with(
        listener,
        app,
        Limits {
            read_timeout: Duration::from_secs(30),
            max_connections: 16,
            grace: Duration::from_secs(5),
        },
        cancel.clone(),
        Connections::default(),
        Some(tls.clone()),
    ));

    let resp = get_tls(addr, &first).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello over tls"), "{resp}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("hello over tls"));

    // A renewed certificate: new connections get it after a reload.
    let second = write_cert(dir.path());
    assert!(
        get_tls(addr, &second).await.is_err(),
        "not before the reload"
    );
    tls.reload().unwrap();
    let resp = get_tls(addr, &second).await.unwrap();
    assert!(resp.ends_with("hello over tls"), "{resp}");
    assert!(
        get_tls(addr, &first).await.is_err(),
        "the old certificate is gone"
    );

    // Broken files: the reload fails, naming the file, and the certificate
    // in use stays.
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    let err = format!("{:#}", tls.reload().unwrap_err());
    assert!(err.contains("server.tls_key"), "{err}");
    let resp = get_tls(addr, &second).await.unwrap();
    assert!(resp.ends_with("hello over tls"), "{resp}");

    cancel.cancel();
    server.await.unwrap();
}

#[test]
fn a_missing_or_mismatched_pair_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tls::load(&dir.path().join("nope.pem"), &dir.path().join("nope.key")).unwrap_err();
    assert!(format!("{e:#}").contains("server.tls_cert"), "{e:#}");

    write_cert(dir.path());
    let other = tempfile::tempdir().unwrap();
    write_cert(other.path());
    let e = Tls::load(&dir.path().join("cert.pem"), &other.path().join("key.pem")).unwrap_err();
    assert!(format!("{e:#}").contains("usable pair"), "{e:#}");
}
