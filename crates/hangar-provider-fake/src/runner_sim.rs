//! A simulated runner: what a freshly booted instance does, over real HTTP.
//!
//! It fetches the JIT config from Hangar's metadata endpoint with the
//! instance token, reports `installing` and `idle` through the status
//! callback (or `failed` when it got no JIT config), and — when the JIT
//! config was issued by FakeGitHub (or FakeActions) — tells it that the
//! runner is online, so it can hand the runner a job. It fails where the
//! boot script fails and goes on where the script goes on.

use hangar_core::provider::BootstrapParams;
use serde::{Deserialize, Serialize};

/// What FakeGitHub puts in the JIT configs it issues, in GitHub's shape:
/// base64 of a JSON object holding the runner's three dot-files, each
/// base64. Its `.runner` file names the runner (`agentId`, `agentName`)
/// and, as `serverUrl`, the FakeGitHub that issued it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FakeJitConfig {
    /// Base URL of the FakeGitHub that issued it.
    pub fake_github_url: String,
    pub runner_id: i64,
    pub runner_name: String,
}

/// The `.runner` file's fields FakeGitHub fills.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunnerFile {
    agent_id: i64,
    agent_name: String,
    server_url: String,
    work_folder: String,
}

impl FakeJitConfig {
    pub fn encode(&self) -> String {
        use hangar_core::jit::{JitFile, encode_jit_config};
        let runner = serde_json::to_vec(&RunnerFile {
            agent_id: self.runner_id,
            agent_name: self.runner_name.clone(),
            server_url: self.fake_github_url.clone(),
            work_folder: "_work".into(),
        })
        .expect("serialises");
        let creds = br#"{"scheme": "OAuth", "data": {"clientId": "fake"}}"#;
        let rsa = br#"{"d": "fake", "modulus": "fake", "exponent": "AQAB"}"#;
        encode_jit_config([
            (JitFile::Runner, &runner[..]),
            (JitFile::Credentials, &creds[..]),
            (JitFile::CredentialsRsaParams, &rsa[..]),
        ])
    }

    pub fn decode(encoded: &str) -> Option<Self> {
        let runner = hangar_core::jit::jit_file(encoded, hangar_core::JitFile::Runner).ok()?;
        Self::from_runner_file(&runner)
    }

    /// Reads the `.runner` file alone, as garm's boot script gets it.
    pub fn from_runner_file(runner: &[u8]) -> Option<Self> {
        let r: RunnerFile = serde_json::from_slice(runner).ok()?;
        Some(Self {
            fake_github_url: r.server_url,
            runner_id: r.agent_id,
            runner_name: r.agent_name,
        })
    }
}

/// How far a simulated boot got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// Runner reported idle and FakeGitHub was told it is online.
    OnlineAtFakeGitHub { runner_id: i64 },
    /// Runner reported idle; the JIT config was not FakeGitHub's.
    Idle,
}

/// Why a simulated boot stopped; names the step (`callback idle`,
/// `GET <url>`, …) so a test's boot-error list reads like a boot log.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// No answer: connection refused, reset, or a body that did not arrive.
    #[error("{step}: {source}")]
    Unreachable {
        step: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer with an error status (an unknown or spent instance token,
    /// a runner FakeGitHub does not know).
    #[error("{step}: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Refused {
        step: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

fn unreachable(step: impl Into<String>) -> impl FnOnce(reqwest::Error) -> BootError {
    let step = step.into();
    move |source| BootError::Unreachable { step, source }
}

async fn callback(
    client: &reqwest::Client,
    b: &BootstrapParams,
    status: &str,
    message: &str,
) -> Result<(), BootError> {
    let step = format!("callback {status}");
    let body = serde_json::json!({ "status": status, "message": message });
    let resp = send(|| {
        client
            .post(&b.callback_url)
            .bearer_auth(b.instance_token.expose())
            .json(&body)
    })
    .await
    .map_err(unreachable(step.clone()))?;
    if !resp.status().is_success() {
        return Err(BootError::Refused {
            step,
            status: resp.status(),
            body: String::new(),
        });
    }
    Ok(())
}

/// Sends a request, retrying what the boot script's `curl --retry 10
/// --retry-delay 3 --retry-connrefused` retries, so an instance booting
/// while hangard restarts (or while a load balancer still sends to a
/// replica that just died) still registers: a refused connection, a
/// timeout, and the answers curl calls transient (408, 429, 500, 502, 503,
/// 504).
async fn send(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut tries = 1;
    loop {
        let again = match make().send().await {
            Err(e) if e.is_connect() || e.is_timeout() => Err(e),
            Ok(r) if curl_transient(r.status()) => Ok(r),
            other => return other,
        };
        if tries > 10 {
            return again;
        }
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}

/// The HTTP answers `curl --retry` retries.
fn curl_transient(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// A status callback whose failure does not stop the boot, as in the boot
/// script (`callback … || log "callback $1 failed"`): the runner goes on
/// whether or not Hangar heard (say, hangard was killed mid-request).
async fn report(client: &reqwest::Client, b: &BootstrapParams, status: &str, message: &str) {
    if let Err(e) = callback(client, b, status, message).await {
        tracing::warn!(error = %e, "simulated runner: callback failed; going on");
    }
}

/// Fetches the JIT config once.
async fn jit_config(client: &reqwest::Client, b: &BootstrapParams) -> Result<String, BootError> {
    let url = format!("{}/jit-config", b.metadata_url.trim_end_matches('/'));
    let step = format!("GET {url}");
    let resp = send(|| client.get(&url).bearer_auth(b.instance_token.expose()))
        .await
        .map_err(unreachable(step.clone()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(BootError::Refused { step, status, body });
    }
    resp.text().await.map_err(unreachable(step))
}

/// Runs the bootstrap of one instance, step for step as the boot script
/// does: `installing`, the JIT config (without it the script reports
/// `failed` and powers off, so Hangar replaces the instance at once),
/// `idle`; a callback that fails is logged and the boot goes on.
pub async fn boot(b: &BootstrapParams) -> Result<BootOutcome, BootError> {
    let client = reqwest::Client::new();
    report(&client, b, "installing", "simulated boot").await;
    let jit = match jit_config(&client, b).await {
        Ok(j) => j,
        Err(e) => {
            report(&client, b, "failed", "could not fetch the JIT config").await;
            return Err(e);
        }
    };
    report(&client, b, "idle", "simulated runner started").await;
    let Some(fake) = FakeJitConfig::decode(&jit) else {
        return Ok(BootOutcome::Idle);
    };
    let online = format!(
        "{}/_fake/runners/{}/online",
        fake.fake_github_url.trim_end_matches('/'),
        fake.runner_id
    );
    let step = format!("POST {online}");
    let resp = client
        .post(&online)
        .send()
        .await
        .map_err(unreachable(step.clone()))?;
    if !resp.status().is_success() {
        return Err(BootError::Refused {
            step,
            status: resp.status(),
            body: String::new(),
        });
    }
    Ok(BootOutcome::OnlineAtFakeGitHub {
        runner_id: fake.runner_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback hangard (and runner service) that answers every request
    /// with 200, except those `cut` picks, whose connection it closes
    /// without an answer (hangard killed mid-request). Records each
    /// request as `METHOD path [callback status]`, and serves `jit` as the
    /// JIT config.
    /// `jit(base)`: the status and body of the JIT config answer.
    async fn server(
        jit: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
        cut: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (jit, cut, record) = (Arc::new(jit), Arc::new(cut), seen.clone());
        let base = url.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let status = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(|s| format!(" {s}")))
                    .unwrap_or_default();
                let what = format!("{method} {path}{status}");
                record.lock().unwrap().push(what.clone());
                if cut(&what) {
                    drop(sock);
                    continue;
                }
                let (code, answer) = if path.ends_with("/jit-config") {
                    jit(&base)
                } else {
                    (200, String::new())
                };
                let resp = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn params(url: &str) -> BootstrapParams {
        BootstrapParams {
            repo_url: "https://github.com/octo/app".into(),
            metadata_url: format!("{url}/api/v1/metadata/"),
            callback_url: format!("{url}/api/v1/callbacks/status"),
            instance_token: hangar_core::Secret::new("tok"),
            jit_config_enabled: true,
            runner_group: None,
            tools: vec![],
            ca_cert_bundle: None,
            proxy: Default::default(),
        }
    }

    /// hangard killed while the VM fetched its JIT config: the boot script
    /// gives up and reports `failed` (to the restarted hangard), so the
    /// instance is replaced at once — the simulator does the same.
    #[tokio::test]
    async fn a_jit_config_cut_off_is_reported_failed() {
        let (url, seen) = server(|_| (200, String::new()), |w| w.starts_with("GET ")).await;
        let e = boot(&params(&url)).await.unwrap_err();
        assert!(matches!(e, BootError::Unreachable { .. }), "{e}");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "POST /api/v1/callbacks/status installing",
                "GET /api/v1/metadata/jit-config",
                "POST /api/v1/callbacks/status failed",
            ]
        );
    }

    /// A load balancer still sending to a replica that just died answers
    /// 502: `curl --retry` retries that (and 408, 429, 500, 503, 504), so
    /// the boot script gets its JIT config from a live replica — the
    /// simulator does the same (found by the cluster kill -9 test).
    #[tokio::test]
    async fn a_bad_gateway_on_the_jit_config_is_retried_as_curl_does() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = asked.clone();
        let jit = move |base: &str| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return (502, "bad gateway".to_owned());
            }
            let config = FakeJitConfig {
                fake_github_url: base.to_owned(),
                runner_id: 8,
                runner_name: "hangar-y".into(),
            };
            (200, config.encode())
        };
        let (url, seen) = server(jit, |_| false).await;
        let out = boot(&params(&url)).await.unwrap();
        assert_eq!(out, BootOutcome::OnlineAtFakeGitHub { runner_id: 8 });
        assert_eq!(
            seen.lock().unwrap()[..4],
            [
                "POST /api/v1/callbacks/status installing",
                "GET /api/v1/metadata/jit-config",
                "GET /api/v1/metadata/jit-config",
                "POST /api/v1/callbacks/status idle",
            ]
        );
        assert!(!curl_transient(reqwest::StatusCode::NOT_FOUND));
    }

    /// hangard killed while the runner reported `idle`: the runner is up
    /// regardless, as in the boot script, and comes online at the service.
    #[tokio::test]
    async fn a_cut_off_status_callback_does_not_stop_the_runner() {
        let jit = |base: &str| {
            let config = FakeJitConfig {
                fake_github_url: base.to_owned(),
                runner_id: 7,
                runner_name: "hangar-x".into(),
            };
            (200, config.encode())
        };
        let (url, seen) = server(jit, |w| w.ends_with(" idle")).await;
        let out = boot(&params(&url)).await.unwrap();
        assert_eq!(out, BootOutcome::OnlineAtFakeGitHub { runner_id: 7 });
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "POST /api/v1/callbacks/status installing",
                "GET /api/v1/metadata/jit-config",
                "POST /api/v1/callbacks/status idle",
                "POST /_fake/runners/7/online",
            ]
        );
    }

    #[test]
    fn fake_jit_round_trip() {
        let j = FakeJitConfig {
            fake_github_url: "http://127.0.0.1:1".into(),
            runner_id: 7,
            runner_name: "hangar-x".into(),
        };
        assert_eq!(FakeJitConfig::decode(&j.encode()), Some(j));
        assert_eq!(FakeJitConfig::decode("not base64 at all!"), None);
    }
}
