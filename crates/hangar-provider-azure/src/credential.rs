//! ARM bearer tokens from the configured identity, behind azure_core's
//! `TokenCredential` trait so tests can inject their own.
//!
//! Client secret and Azure CLI use `azure_identity`. Managed identity is
//! done here because azure_identity 0.21 cannot select a user-assigned
//! identity (its `ImdsId` is crate-private); workload identity is rebuilt
//! at each refresh because its federated token file rotates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::auth::{AccessToken, TokenCredential};
use azure_core::error::{Error, ErrorKind};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::config::CredentialConfig;

/// What the daemon resolved for the credential (secrets from files or the
/// environment); the provider itself reads no configuration.
#[derive(Debug, Clone, Default)]
pub struct ResolvedSecrets {
    /// Client secret for `client_secret` credentials.
    pub client_secret: Option<String>,
    /// Tenant/client/token file from `AZURE_*` for workload identity.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    /// `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` (App Service, Container Apps,
    /// Arc); IMDS when unset.
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<String>,
}

/// Builds the credential the config names.
pub fn build(
    cfg: &CredentialConfig,
    authority_host: &str,
    secrets: ResolvedSecrets,
) -> Result<Arc<dyn TokenCredential>, String> {
    let authority = url::Url::parse(authority_host).map_err(|e| format!("authority_host: {e}"))?;
    let http = azure_core::new_http_client();
    let inner: Arc<dyn TokenCredential> = match cfg {
        CredentialConfig::ClientSecret {
            tenant_id,
            client_id,
            ..
        } => {
            let secret = secrets.client_secret.clone().ok_or(
                "credential kind client_secret needs client_secret, client_secret_file or AZURE_CLIENT_SECRET",
            )?;
            Arc::new(azure_identity::ClientSecretCredential::new(
                http,
                authority,
                tenant_id.clone(),
                client_id.clone(),
                secret,
            ))
        }
        CredentialConfig::AzureCli => Arc::new(azure_identity::AzureCliCredential::new()),
        CredentialConfig::ManagedIdentity { client_id } => Arc::new(ManagedIdentity {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            client_id: client_id.clone(),
            endpoint: secrets.identity_endpoint.clone(),
            header: secrets.identity_header.clone(),
        }),
        CredentialConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let tenant = tenant_id
                .clone()
                .or(secrets.tenant_id.clone())
                .ok_or("credential kind workload_identity needs tenant_id or AZURE_TENANT_ID")?;
            let client = client_id
                .clone()
                .or(secrets.client_id.clone())
                .ok_or("credential kind workload_identity needs client_id or AZURE_CLIENT_ID")?;
            let file = token_file
                .clone()
                .or(secrets.federated_token_file.clone())
                .ok_or(
                    "credential kind workload_identity needs token_file or AZURE_FEDERATED_TOKEN_FILE",
                )?;
            Arc::new(WorkloadIdentity {
                http,
                authority,
                tenant,
                client,
                file,
            })
        }
    };
    Ok(Arc::new(Cached::new(inner)))
}

/// Keeps a token until five minutes before it expires, so a burst of VM
/// creates costs one login.
#[derive(Debug)]
pub struct Cached {
    inner: Arc<dyn TokenCredential>,
    token: Mutex<Option<(String, AccessToken)>>,
}

impl Cached {
    pub fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            inner,
            token: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Cached {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        let mut slot = self.token.lock().await;
        if let Some((k, t)) = slot.as_ref()
            && *k == key
            && t.expires_on > OffsetDateTime::now_utc() + time::Duration::minutes(5)
        {
            return Ok(t.clone());
        }
        let t = self.inner.get_token(scopes).await?;
        *slot = Some((key, t.clone()));
        Ok(t)
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        *self.token.lock().await = None;
        self.inner.clear_cache().await
    }
}

/// Managed identity through IMDS (VMs, Container Instances) or
/// `IDENTITY_ENDPOINT` (App Service, Container Apps).
#[derive(Debug)]
struct ManagedIdentity {
    http: reqwest::Client,
    client_id: Option<String>,
    endpoint: Option<String>,
    header: Option<String>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Unix seconds, as a string or a number depending on the endpoint.
    expires_on: serde_json::Value,
}

fn cred_err(msg: String) -> Error {
    Error::message(ErrorKind::Credential, msg)
}

#[async_trait::async_trait]
impl TokenCredential for ManagedIdentity {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let resource = scopes
            .first()
            .map(|s| s.trim_end_matches("/.default"))
            .ok_or_else(|| cred_err("no scope".into()))?;
        let mut req = match (&self.endpoint, &self.header) {
            (Some(ep), Some(h)) => self
                .http
                .get(ep)
                .query(&[("api-version", "2019-08-01"), ("resource", resource)])
                .header("X-IDENTITY-HEADER", h),
            _ => self
                .http
                .get("http://169.254.169.254/metadata/identity/oauth2/token")
                .query(&[("api-version", "2018-02-01"), ("resource", resource)])
                .header("Metadata", "true"),
        };
        if let Some(id) = &self.client_id {
            req = req.query(&[("client_id", id.as_str())]);
        }
        let rsp = req
            .send()
            .await
            .map_err(|e| cred_err(format!("managed identity endpoint: {e}")))?;
        let status = rsp.status();
        if !status.is_success() {
            let text = rsp.text().await.unwrap_or_default();
            return Err(cred_err(format!(
                "managed identity endpoint answered {status}: {}",
                &text[..text.len().min(300)]
            )));
        }
        let t: TokenAnswer = rsp
            .json()
            .await
            .map_err(|e| cred_err(format!("managed identity answer: {e}")))?;
        let secs = match &t.expires_on {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            serde_json::Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .ok_or_else(|| cred_err("managed identity answer has no expires_on".into()))?;
        let expires = OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| cred_err(format!("expires_on: {e}")))?;
        Ok(AccessToken::new(t.access_token, expires))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

/// Workload identity: the federated token file is re-read for every new
/// access token (Kubernetes rotates it).
#[derive(Debug)]
struct WorkloadIdentity {
    http: Arc<dyn azure_core::HttpClient>,
    authority: url::Url,
    tenant: String,
    client: String,
    file: PathBuf,
}

#[async_trait::async_trait]
impl TokenCredential for WorkloadIdentity {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let assertion = tokio::fs::read_to_string(&self.file).await.map_err(|e| {
            cred_err(format!(
                "cannot read the federated token file {}: {e}",
                self.file.display()
            ))
        })?;
        let cred = azure_identity::WorkloadIdentityCredential::new(
            self.http.clone(),
            self.authority.clone(),
            self.tenant.clone(),
            self.client.clone(),
            assertion.trim().to_owned(),
        );
        cred.get_token(scopes).await
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(&self, _: &[&str]) -> azure_core::Result<AccessToken> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken::new(
                format!("t{n}"),
                OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
        async fn clear_cache(&self) -> azure_core::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn tokens_are_cached_per_scope() {
        let inner = Arc::new(Counting::default());
        let c = Cached::new(inner.clone());
        for _ in 0..5 {
            assert_eq!(c.get_token(&["a"]).await.unwrap().token.secret(), "t0");
        }
        assert_eq!(c.get_token(&["b"]).await.unwrap().token.secret(), "t1");
        c.clear_cache().await.unwrap();
        assert_eq!(c.get_token(&["b"]).await.unwrap().token.secret(), "t2");
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn missing_secrets_are_explained() {
        let e = build(
            &CredentialConfig::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: None,
                client_secret_file: None,
            },
            "https://login.microsoftonline.com",
            ResolvedSecrets::default(),
        )
        .unwrap_err();
        assert!(e.contains("AZURE_CLIENT_SECRET"), "{e}");
        let e = build(
            &CredentialConfig::WorkloadIdentity {
                tenant_id: Some("t".into()),
                client_id: Some("c".into()),
                token_file: None,
            },
            "https://login.microsoftonline.com",
            ResolvedSecrets::default(),
        )
        .unwrap_err();
        assert!(e.contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
    }

    #[tokio::test]
    async fn managed_identity_uses_the_identity_endpoint() {
        use axum::extract::Query;
        use std::collections::HashMap;
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get(
                |headers: axum::http::HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                    assert_eq!(headers["x-identity-header"], "h");
                    assert_eq!(q["resource"], "https://management.azure.com");
                    assert_eq!(q["client_id"], "uami");
                    axum::Json(serde_json::json!({
                        "access_token": "mi-token",
                        "expires_on": (OffsetDateTime::now_utc().unix_timestamp() + 3600).to_string()
                    }))
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        let c = build(
            &CredentialConfig::ManagedIdentity {
                client_id: Some("uami".into()),
            },
            "https://login.microsoftonline.com",
            ResolvedSecrets {
                identity_endpoint: Some(format!("http://{addr}/token")),
                identity_header: Some("h".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let t = c
            .get_token(&["https://management.azure.com/.default"])
            .await
            .unwrap();
        assert_eq!(t.token.secret(), "mi-token");
    }
}
