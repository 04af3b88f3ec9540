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

/// Sends a request, retrying a connection that fails the way the boot
/// script's `curl --retry 10 --retry-delay 3 --retry-connrefused` does, so
/// an instance booting while hangard restarts still registers.
async fn send(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut tries = 1;
    loop {
        match make().send().await {
            Err(e) if e.is_connect() && tries <= 10 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            other => return other,
        }
    }
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
