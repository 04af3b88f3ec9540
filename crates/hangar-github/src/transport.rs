//! The HTTP transport under octocrab, built here rather than by octocrab
//! because octocrab's own client reads no proxy settings and trusts only the
//! system's roots: this one goes through the proxy the daemon read from the
//! environment (CONNECT for `https://`, absolute-form forwarding for
//! `http://`), lets `NO_PROXY` hosts and loopback bypass it (as Go's
//! `net/http`, and so garm, do), and adds the endpoint's CA bundle to the
//! roots it trusts.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hangar_core::provider::ProxySettings;
use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt as _};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which requests go through which proxy.
pub(crate) struct Proxies {
    matcher: Matcher,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's Debug leaves credentials out.
        self.matcher.fmt(f)
    }
}

impl Proxies {
    pub(crate) fn new(settings: &ProxySettings) -> Self {
        let mut b = Matcher::builder();
        if let Some(v) = settings.http_proxy.as_deref() {
            b = b.http(v.to_owned());
        }
        if let Some(v) = settings.https_proxy.as_deref() {
            b = b.https(v.to_owned());
        }
        if let Some(v) = settings.no_proxy.as_deref() {
            b = b.no(v.to_owned());
        }
        Self { matcher: b.build() }
    }

    /// The proxy for `dst`, if any.
    pub(crate) fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        if is_loopback(dst.host()?) {
            return None;
        }
        self.matcher.intercept(dst)
    }
}

/// `localhost`, `*.localhost` and loopback addresses: never proxied.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// A TCP stream, told whether requests on it go to a forward proxy (so
/// hyper writes absolute-form request targets).
pub(crate) struct ProxyStream {
    io: TokioIo<TcpStream>,
    forward: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forward)
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Connects to the destination, or to its proxy (tunnelling `https://`
/// with CONNECT). TLS, if any, is layered on top by hyper-rustls, so a
/// tunnelled connection is verified against the destination's name.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    http: HttpConnector,
    proxies: Arc<Proxies>,
}

impl ProxyConnector {
    pub(crate) fn new(proxies: Arc<Proxies>) -> Self {
        let mut http = HttpConnector::new();
        // hyper-rustls hands `https://` destinations through.
        http.enforce_http(false);
        Self { http, proxies }
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let http = self.http.clone();
        let proxy = self.proxies.intercept(&dst);
        Box::pin(async move {
            let Some(proxy) = proxy else {
                let io = http.oneshot(dst).await?;
                return Ok(ProxyStream { io, forward: false });
            };
            let proxy_uri = proxy.uri().clone();
            if proxy_uri.scheme_str() != Some("http") {
                return Err(format!(
                    "proxy {}: only http:// proxies are supported",
                    proxy_uri.authority().map_or("?", |a| a.as_str())
                )
                .into());
            }
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(proxy_uri, http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel.oneshot(dst).await?;
                Ok(ProxyStream { io, forward: false })
            } else {
                let io = http.oneshot(proxy_uri).await?;
                Ok(ProxyStream { io, forward: true })
            }
        })
    }
}

/// The system's trust roots, read once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's CA certificates");
        }
        found.certs
    })
}

/// The certificates of a PEM bundle.
pub(crate) fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_bundle is not a valid PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("ca_bundle holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The connector stack for one endpoint: proxy → TLS (system roots plus the
/// endpoint's CA bundle) → timeouts.
pub(crate) fn connector(
    proxies: Arc<Proxies>,
    ca_bundle: Option<&str>,
    timeout: Duration,
) -> Result<hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<ProxyConnector>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(native_roots().iter().cloned());
    if let Some(pem) = ca_bundle.filter(|p| !p.trim().is_empty()) {
        for cert in parse_ca_bundle(pem)? {
            roots
                .add(cert)
                .map_err(|e| format!("ca_bundle: a certificate cannot be trusted: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(ProxyConnector::new(proxies));
    let mut c = hyper_timeout::TimeoutConnector::new(https);
    c.set_connect_timeout(Some(timeout));
    c.set_read_timeout(Some(timeout));
    c.set_write_timeout(Some(timeout));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(no: &str) -> Proxies {
        Proxies::new(&ProxySettings {
            http_proxy: Some("http://proxy.example:3128".into()),
            https_proxy: Some("http://user:pw@proxy.example:3129".into()),
            no_proxy: Some(no.into()),
        })
    }

    fn via(p: &Proxies, url: &str) -> Option<String> {
        p.intercept(&url.parse().unwrap())
            .map(|i| i.uri().authority().unwrap().to_string())
    }

    #[test]
    fn scheme_picks_the_proxy() {
        let p = proxies("");
        assert_eq!(
            via(&p, "https://api.github.com/x").as_deref(),
            Some("proxy.example:3129")
        );
        assert_eq!(
            via(&p, "http://ghes.corp/api/v3").as_deref(),
            Some("proxy.example:3128")
        );
    }

    #[test]
    fn no_proxy_hosts_and_loopback_bypass() {
        let p = proxies("ghes.corp, .internal, 10.0.0.0/8");
        assert_eq!(via(&p, "https://ghes.corp/api/v3"), None);
        assert_eq!(via(&p, "https://api.ghes.corp/"), None);
        assert_eq!(via(&p, "https://git.internal/"), None);
        assert_eq!(via(&p, "https://10.1.2.3/"), None);
        assert!(via(&p, "https://api.github.com/").is_some());
        for loopback in [
            "http://127.0.0.1:8080/",
            "https://localhost/",
            "https://app.localhost/",
            "http://[::1]:9/",
        ] {
            assert_eq!(via(&p, loopback), None, "{loopback}");
        }
    }

    #[test]
    fn no_settings_no_proxy() {
        let p = Proxies::new(&ProxySettings::default());
        assert_eq!(via(&p, "https://api.github.com/"), None);
    }

    #[test]
    fn ca_bundle_must_be_pem() {
        assert!(parse_ca_bundle("not a certificate").is_err());
        assert!(parse_ca_bundle("").is_err());
    }
}
