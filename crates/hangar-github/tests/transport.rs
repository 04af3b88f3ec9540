//! `GitHubForge`'s transport over loopback: calls go through the proxy from
//! the environment (CONNECT for https, forwarding for http), `NO_PROXY`
//! hosts and loopback bypass it, and an endpoint's CA bundle is trusted for
//! that endpoint only.
//!
//! The endpoints are named `github.invalid`, a name no resolver answers: a
//! call that reaches FakeGitHub under that name went through the test
//! proxy, which resolves every name to 127.0.0.1.

use std::sync::{Arc, Mutex};

use hangar_core::entity::{Credentials, CredentialsAuth, Endpoint, EntityScope};
use hangar_core::provider::ProxySettings;
use hangar_core::{Forge, ForgeError, ForgeTarget, ResourceName, Secret};
use hangar_github::{GitHubConfig, GitHubForge};
use hangar_testkit::fake_github::FakeGitHub;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// A loopback HTTP proxy: CONNECT tunnels and absolute-form forwarding,
/// every host resolving to 127.0.0.1. It records the first request line of
/// each connection.
struct TestProxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_proxy(client, log).await;
                });
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_proxy(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    // Read the request head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let authority = if method == "CONNECT" {
        target.to_owned()
    } else {
        let uri: http::Uri = target.parse().map_err(std::io::Error::other)?;
        let a = uri.authority().expect("absolute-form target");
        format!("{}:{}", a.host(), a.port_u16().unwrap_or(80))
    };
    let port = authority.rsplit_once(':').map(|(_, p)| p).unwrap_or("80");
    let mut upstream = TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    if method == "CONNECT" {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        upstream.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A loopback HTTPS front for FakeGitHub with a fresh self-signed
/// certificate for `localhost` and `github.invalid`.
struct TlsFront {
    port: u16,
    ca_pem: String,
}

impl TlsFront {
    async fn start(gh: &FakeGitHub) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "github.invalid".to_owned(),
        ])
        .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = gh.url().trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        Self {
            port,
            ca_pem: cert.cert.pem(),
        }
    }
}

fn target(api_base_url: String, ca_bundle: Option<String>) -> ForgeTarget {
    ForgeTarget {
        endpoint: Endpoint {
            name: ResourceName::parse("ghes").unwrap(),
            description: String::new(),
            base_url: api_base_url.clone(),
            api_base_url,
            ca_bundle,
        },
        credentials: Credentials {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            endpoint: ResourceName::parse("ghes").unwrap(),
            auth: CredentialsAuth::Pat {
                token: Secret::new("ghp_test"),
            },
            app_webhook_secret: None,
        },
        scope: EntityScope::Repository {
            owner: "octo".into(),
            name: "app".into(),
        },
    }
}

fn config(proxy: ProxySettings) -> GitHubConfig {
    GitHubConfig {
        max_retries: 0,
        backoff_base_ms: 5,
        backoff_max_ms: 50,
        request_timeout_secs: 5,
        proxy,
        ..Default::default()
    }
}

fn port_of(gh: &FakeGitHub) -> u16 {
    gh.url().rsplit_once(':').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn http_endpoint_is_forwarded_through_http_proxy() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let proxy = TestProxy::start().await;
    let forge = GitHubForge::new(config(ProxySettings {
        http_proxy: Some(proxy.url.clone()),
        ..Default::default()
    }));
    let t = target(format!("http://github.invalid:{}", port_of(&gh)), None);
    forge.list_runners(&t).await.expect("through the proxy");
    forge.list_runners(&t).await.expect("again");
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(
            line.starts_with("GET http://github.invalid:"),
            "an absolute-form request for the endpoint: {line}"
        );
    }
}

#[tokio::test]
async fn https_endpoint_is_tunnelled_through_https_proxy() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let front = TlsFront::start(&gh).await;
    let proxy = TestProxy::start().await;
    let forge = GitHubForge::new(config(ProxySettings {
        https_proxy: Some(proxy.url.clone()),
        // Only http:// destinations would use this one.
        http_proxy: Some("http://127.0.0.1:9".into()),
        no_proxy: Some("ghes.corp".into()),
    }));
    let t = target(
        format!("https://github.invalid:{}", front.port),
        Some(front.ca_pem.clone()),
    );
    forge.list_runners(&t).await.expect("through the tunnel");
    assert_eq!(
        proxy.seen(),
        vec![format!("CONNECT github.invalid:{} HTTP/1.1", front.port)]
    );
}

#[tokio::test]
async fn no_proxy_hosts_and_loopback_bypass_the_proxy() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let proxy = TestProxy::start().await;
    let forge = GitHubForge::new(config(ProxySettings {
        http_proxy: Some(proxy.url.clone()),
        https_proxy: Some(proxy.url.clone()),
        no_proxy: Some("example.org, .invalid".into()),
    }));
    // A listed host is reached directly: the name resolves nowhere, so the
    // call fails without the proxy hearing of it.
    let listed = target(format!("http://api.github.invalid:{}", port_of(&gh)), None);
    let e = forge.list_runners(&listed).await.unwrap_err();
    assert!(matches!(e, ForgeError::Transient(_)), "{e:?}");
    // Loopback is always reached directly.
    let loopback = target(gh.url(), None);
    forge.list_runners(&loopback).await.expect("direct");
    assert_eq!(proxy.seen(), Vec::<String>::new());
}

#[tokio::test]
async fn an_endpoints_ca_bundle_is_trusted_for_that_endpoint() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let front = TlsFront::start(&gh).await;
    let forge = GitHubForge::new(config(ProxySettings::default()));
    let url = format!("https://localhost:{}", front.port);

    let e = forge
        .list_runners(&target(url.clone(), None))
        .await
        .unwrap_err();
    assert!(
        format!("{e}").to_lowercase().contains("certificate"),
        "an untrusted certificate is refused: {e}"
    );

    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let e = forge
        .list_runners(&target(url.clone(), Some(other.cert.pem())))
        .await
        .unwrap_err();
    assert!(
        format!("{e}").to_lowercase().contains("certificate"),
        "another CA does not help: {e}"
    );

    forge
        .list_runners(&target(url.clone(), Some(front.ca_pem.clone())))
        .await
        .expect("trusted with the endpoint's CA");

    let e = forge
        .list_runners(&target(
            url,
            Some("-----BEGIN CERTIFICATE-----\nnope\n".into()),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ForgeError::Fatal(m) if m.contains("ghes") && m.contains("ca_bundle")),
        "{e:?}"
    );
}
