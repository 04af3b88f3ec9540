//! Reading a garm database and importing it (`hangard import-garm`).
//!
//! garm (cloudbase/garm) keeps its state in SQLite through gorm, with
//! secrets sealed by garm-provider-common's `Seal`: a JSON envelope holding
//! a 32-byte nonce and a DARE stream (minio/sio) whose key is
//! HKDF-SHA256(passphrase, salt = nonce). Older values are plain
//! AES-256-GCM under the passphrase itself (12-byte nonce first). Both are
//! opened here with garm's passphrase, then sealed again with Hangar's
//! [`Sealer`] as any other secret. The garm file is only ever read.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hangar_core::{
    ControllerId, Credentials, CredentialsAuth, Endpoint, EntityId, EntityScope, Labels, PoolId,
    PoolSpec, ResourceName, RunnerPrefix, Secret,
};
use hmac::{Hmac, Mac};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use crate::{Result, Store, StoreError, corrupt, now_ms, on};

/// Why a garm secret did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GarmSealError {
    #[error("garm's passphrase must be exactly 32 bytes long, as garm requires")]
    PassphraseLength,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error(
        "the sealed value does not open with this passphrase (wrong garm passphrase, or tampered data)"
    )]
    Open,
    #[error("the sealed value uses ChaCha20-Poly1305, which this importer does not read")]
    UnsupportedCipher,
}

/// Opens a value sealed by garm (`util.Seal`, or the older `Aes256Encode`).
pub fn garm_unseal(data: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, GarmSealError> {
    if passphrase.len() != 32 {
        return Err(GarmSealError::PassphraseLength);
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        nonce: Vec<u8>,
        data: String,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return legacy_open(data, passphrase);
    };
    if envelope.nonce.len() != 32 {
        return Err(GarmSealError::Malformed);
    }
    let stream = base64::engine::general_purpose::STANDARD
        .decode(envelope.data.as_bytes())
        .map_err(|_| GarmSealError::Malformed)?;
    let key = hkdf_sha256_32(passphrase, &envelope.nonce);
    dare_decrypt(&key, &stream)
}

/// garm's first format: AES-256-GCM keyed by the passphrase, nonce first.
fn legacy_open(data: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, GarmSealError> {
    if data.len() < 12 + 16 {
        return Err(GarmSealError::Malformed);
    }
    let cipher = Aes256Gcm::new_from_slice(passphrase).map_err(|_| GarmSealError::Malformed)?;
    let (nonce, ct) = data.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| GarmSealError::Open)
}

/// HKDF-SHA256 (RFC 5869) with empty info, 32 bytes: one expand block.
fn hkdf_sha256_32(ikm: &[u8], salt: &[u8]) -> [u8; 32] {
    type H = Hmac<sha2::Sha256>;
    let mut extract = <H as Mac>::new_from_slice(salt).expect("HMAC takes any key length");
    extract.update(ikm);
    let prk = extract.finalize().into_bytes();
    let mut expand = <H as Mac>::new_from_slice(&prk).expect("HMAC takes any key length");
    expand.update(&[1u8]);
    expand.finalize().into_bytes().into()
}

const DARE_HEADER: usize = 16;
const DARE_TAG: usize = 16;

/// Decrypts a whole DARE stream (versions 1.0 and 2.0, AES-256-GCM).
fn dare_decrypt(key: &[u8; 32], mut stream: &[u8]) -> Result<Vec<u8>, GarmSealError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| GarmSealError::Malformed)?;
    let mut out = Vec::new();
    let mut seq: u32 = 0;
    let mut finished = false;
    while !stream.is_empty() {
        if finished || stream.len() <= DARE_HEADER + DARE_TAG {
            return Err(GarmSealError::Malformed);
        }
        let header = &stream[..DARE_HEADER];
        let len = usize::from(u16::from_le_bytes([header[2], header[3]])) + 1;
        let total = DARE_HEADER + len + DARE_TAG;
        if stream.len() < total {
            return Err(GarmSealError::Malformed);
        }
        match header[1] {
            0 => {}
            1 => return Err(GarmSealError::UnsupportedCipher),
            _ => return Err(GarmSealError::Malformed),
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&header[4..16]);
        match header[0] {
            0x10 => {
                if u32::from_le_bytes([header[4], header[5], header[6], header[7]]) != seq {
                    return Err(GarmSealError::Malformed);
                }
            }
            0x20 => {
                let last = u32::from_le_bytes([nonce[8], nonce[9], nonce[10], nonce[11]]) ^ seq;
                nonce[8..].copy_from_slice(&last.to_le_bytes());
                finished = header[4] & 0x80 != 0;
            }
            _ => return Err(GarmSealError::Malformed),
        }
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &stream[DARE_HEADER..total],
                    aad: &header[..4],
                },
            )
            .map_err(|_| GarmSealError::Open)?;
        out.extend_from_slice(&plain);
        stream = &stream[total..];
        seq = seq.wrapping_add(1);
    }
    Ok(out)
}

/// One entity read from garm, its secret opened.
#[derive(Debug, Clone)]
pub struct GarmEntity {
    pub id: EntityId,
    pub scope: EntityScope,
    pub credentials_name: ResourceName,
    pub webhook_secret: Secret,
}

/// One pool read from garm.
#[derive(Debug, Clone)]
pub struct GarmPool {
    pub id: PoolId,
    pub entity_id: EntityId,
    pub spec: PoolSpec,
}

/// Everything the importer takes from a garm database, secrets opened.
#[derive(Debug, Clone, Default)]
pub struct GarmData {
    /// garm's controller id: its hooks point at `/webhooks/<id>` and its
    /// runners carry the label `runner-controller-id:<id>`.
    pub controller_id: Option<ControllerId>,
    pub callback_url: Option<String>,
    pub metadata_url: Option<String>,
    pub webhook_base_url: Option<String>,
    pub endpoints: Vec<Endpoint>,
    pub credentials: Vec<Credentials>,
    pub entities: Vec<GarmEntity>,
    pub pools: Vec<GarmPool>,
    /// What was found but not taken, one line each (Gitea, scale sets,
    /// templates, values Hangar cannot represent, …).
    pub skipped: Vec<String>,
}

/// The tables and columns the importer reads; anything else is a garm
/// schema it does not know.
const REQUIRED: &[(&str, &[&str])] = &[
    (
        "controller_infos",
        &[
            "controller_id",
            "callback_url",
            "metadata_url",
            "webhook_base_url",
        ],
    ),
    (
        "github_endpoints",
        &[
            "name",
            "endpoint_type",
            "description",
            "api_base_url",
            "base_url",
            "ca_cert_bundle",
            "deleted_at",
        ],
    ),
    (
        "github_credentials",
        &[
            "id",
            "name",
            "description",
            "auth_type",
            "payload",
            "endpoint_name",
            "deleted_at",
        ],
    ),
    (
        "repositories",
        &[
            "id",
            "credentials_id",
            "owner",
            "name",
            "webhook_secret",
            "deleted_at",
        ],
    ),
    (
        "organizations",
        &[
            "id",
            "credentials_id",
            "name",
            "webhook_secret",
            "deleted_at",
        ],
    ),
    (
        "enterprises",
        &[
            "id",
            "credentials_id",
            "name",
            "webhook_secret",
            "deleted_at",
        ],
    ),
    (
        "pools",
        &[
            "id",
            "provider_name",
            "runner_prefix",
            "max_runners",
            "min_idle_runners",
            "runner_bootstrap_timeout",
            "image",
            "flavor",
            "os_type",
            "os_arch",
            "enabled",
            "extra_specs",
            "git_hub_runner_group",
            "repo_id",
            "org_id",
            "enterprise_id",
            "priority",
            "deleted_at",
        ],
    ),
    ("tags", &["id", "name"]),
    ("pool_tags", &["pool_id", "tag_id"]),
];

async fn check_schema(conn: &mut SqliteConnection, path: &Path) -> Result<()> {
    for (table, columns) in REQUIRED {
        let have: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
            .bind(*table)
            .fetch_all(&mut *conn)
            .await?;
        if have.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{} is not a garm database this importer knows: table {table:?} is missing",
                path.display()
            )));
        }
        if let Some(c) = columns.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Err(StoreError::Invalid(format!(
                "{} is not a garm database this importer knows: table {table:?} has no column {c:?}",
                path.display()
            )));
        }
    }
    Ok(())
}

fn unseal_text(what: &str, blob: &[u8], passphrase: &Secret) -> Result<Secret> {
    let bytes = garm_unseal(blob, passphrase.expose().as_bytes())
        .map_err(|e| StoreError::Invalid(format!("cannot open garm's {what}: {e}")))?;
    String::from_utf8(bytes)
        .map(Secret::new)
        .map_err(|_| StoreError::Invalid(format!("garm's {what} is not UTF-8")))
}

fn opt_text(row: &sqlx::sqlite::SqliteRow, col: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(col)
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
}

fn blob(row: &sqlx::sqlite::SqliteRow, col: &str) -> Option<Vec<u8>> {
    row.try_get::<Option<Vec<u8>>, _>(col)
        .ok()
        .flatten()
        .filter(|b| !b.is_empty())
}

/// Reads a garm SQLite database read-only and opens its secrets with
/// garm's `passphrase`. Fails (and changes nothing anywhere) on a missing
/// file, an unknown schema or a passphrase that does not open a secret.
pub async fn read_garm_database(path: &Path, passphrase: &Secret) -> Result<GarmData> {
    if !path.is_file() {
        return Err(StoreError::Invalid(format!(
            "garm database {} does not exist",
            path.display()
        )));
    }
    if passphrase.expose().len() != 32 {
        return Err(StoreError::Invalid(
            "garm's database passphrase must be exactly 32 bytes long (as garm requires)".into(),
        ));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await?;
    let data = read_all(&mut conn, path, passphrase).await;
    conn.close().await.ok();
    data
}

async fn read_all(
    conn: &mut SqliteConnection,
    path: &Path,
    passphrase: &Secret,
) -> Result<GarmData> {
    check_schema(conn, path).await?;
    let mut out = GarmData::default();

    if let Some(row) = sqlx::query(
        "SELECT controller_id, callback_url, metadata_url, webhook_base_url FROM controller_infos
         WHERE deleted_at IS NULL LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    {
        let id = opt_text(&row, "controller_id")
            .ok_or_else(|| corrupt("garm's controller row has no controller_id"))?;
        out.controller_id = Some(
            id.parse()
                .map_err(|_| corrupt(format!("garm controller id {id:?} is not a UUID")))?,
        );
        out.callback_url = opt_text(&row, "callback_url");
        out.metadata_url = opt_text(&row, "metadata_url");
        out.webhook_base_url = opt_text(&row, "webhook_base_url");
    }

    let mut github_endpoints = Vec::new();
    for row in sqlx::query("SELECT * FROM github_endpoints WHERE deleted_at IS NULL ORDER BY name")
        .fetch_all(&mut *conn)
        .await?
    {
        let name: String = row.get("name");
        let kind = opt_text(&row, "endpoint_type").unwrap_or_else(|| "github".into());
        if kind != "github" {
            out.skipped.push(format!(
                "endpoint {name:?}: type {kind:?} (only GitHub endpoints move over)"
            ));
            continue;
        }
        let rname = ResourceName::parse(&name).map_err(|e| {
            StoreError::Invalid(format!("garm endpoint name {name:?} is not usable: {e}"))
        })?;
        let ca_bundle = blob(&row, "ca_cert_bundle")
            .map(|b| {
                String::from_utf8(b).map_err(|_| {
                    StoreError::Invalid(format!("endpoint {name:?}: CA bundle is not text"))
                })
            })
            .transpose()?;
        github_endpoints.push(name.clone());
        out.endpoints.push(Endpoint {
            name: rname,
            description: opt_text(&row, "description").unwrap_or_default(),
            base_url: opt_text(&row, "base_url").unwrap_or_default(),
            api_base_url: opt_text(&row, "api_base_url").unwrap_or_default(),
            ca_bundle,
        });
    }

    // credentials id → name, for the entities.
    let mut creds_by_id = std::collections::HashMap::new();
    for row in
        sqlx::query("SELECT * FROM github_credentials WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(&mut *conn)
            .await?
    {
        let id: i64 = row.get("id");
        let name: String = row.get("name");
        let endpoint = opt_text(&row, "endpoint_name").unwrap_or_default();
        if !github_endpoints.contains(&endpoint) {
            out.skipped.push(format!(
                "credentials {name:?}: endpoint {endpoint:?} is not a GitHub endpoint"
            ));
            continue;
        }
        let rname = ResourceName::parse(&name).map_err(|e| {
            StoreError::Invalid(format!("garm credentials name {name:?} is not usable: {e}"))
        })?;
        let payload = blob(&row, "payload")
            .ok_or_else(|| StoreError::Invalid(format!("garm credentials {name:?} are empty")))?;
        let plain = unseal_text(&format!("credentials {name:?}"), &payload, passphrase)?;
        let v: serde_json::Value = serde_json::from_str(plain.expose()).map_err(|_| {
            StoreError::Invalid(format!("garm credentials {name:?}: payload is not JSON"))
        })?;
        let auth_type = opt_text(&row, "auth_type").unwrap_or_else(|| "pat".into());
        let auth = match auth_type.as_str() {
            "pat" => CredentialsAuth::Pat {
                token: Secret::new(
                    v.get("oauth2_token")
                        .and_then(|t| t.as_str())
                        .unwrap_or_default(),
                ),
            },
            "app" => {
                let key = v
                    .get("private_key_bytes")
                    .and_then(|k| k.as_str())
                    .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "garm credentials {name:?}: the App private key is unreadable"
                        ))
                    })?;
                CredentialsAuth::App {
                    app_id: v.get("app_id").and_then(|x| x.as_i64()).unwrap_or_default(),
                    installation_id: v
                        .get("installation_id")
                        .and_then(|x| x.as_i64())
                        .unwrap_or_default(),
                    private_key: Secret::new(key),
                }
            }
            other => {
                out.skipped.push(format!(
                    "credentials {name:?}: auth type {other:?} is unknown"
                ));
                continue;
            }
        };
        creds_by_id.insert(id, rname.clone());
        out.credentials.push(Credentials {
            name: rname,
            description: opt_text(&row, "description").unwrap_or_default(),
            endpoint: ResourceName::parse(&endpoint).map_err(corrupt)?,
            auth,
            app_webhook_secret: None,
        });
    }

    for (table, kind) in [
        ("repositories", "repository"),
        ("organizations", "organization"),
        ("enterprises", "enterprise"),
    ] {
        // `table` is one of the three names above, never input.
        let sql = format!("SELECT * FROM {table} WHERE deleted_at IS NULL ORDER BY name");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?
        {
            let id: String = row.get("id");
            let name: String = row.get("name");
            let scope = match kind {
                "repository" => EntityScope::Repository {
                    owner: row.get("owner"),
                    name: name.clone(),
                },
                "organization" => EntityScope::Organization { name: name.clone() },
                _ => EntityScope::Enterprise { slug: name.clone() },
            };
            let label = format!("{kind} {}", scope.display_name());
            let Some(creds) = row
                .try_get::<Option<i64>, _>("credentials_id")
                .ok()
                .flatten()
                .and_then(|c| creds_by_id.get(&c).cloned())
            else {
                out.skipped.push(format!(
                    "{label}: no GitHub credentials (Gitea entities do not move over)"
                ));
                continue;
            };
            let secret = blob(&row, "webhook_secret").ok_or_else(|| {
                StoreError::Invalid(format!("garm {label} has no webhook secret"))
            })?;
            let webhook_secret =
                unseal_text(&format!("webhook secret of {label}"), &secret, passphrase)?;
            if webhook_secret.is_empty() {
                out.skipped
                    .push(format!("{label}: empty webhook secret (Hangar needs one)"));
                continue;
            }
            out.entities.push(GarmEntity {
                id: id
                    .parse()
                    .map_err(|_| corrupt(format!("garm {label}: id {id:?} is not a UUID")))?,
                scope,
                credentials_name: creds,
                webhook_secret,
            });
        }
    }

    let tag_rows = sqlx::query(
        "SELECT pt.pool_id, t.name FROM pool_tags pt JOIN tags t ON t.id = pt.tag_id
         WHERE t.deleted_at IS NULL ORDER BY t.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    // garm ships system templates (no user); only an operator's own one is
    // worth a note.
    let user_templates: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM templates WHERE user_id IS NOT NULL")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let pool_rows = sqlx::query("SELECT * FROM pools WHERE deleted_at IS NULL ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    for row in pool_rows {
        let id: String = row.get("id");
        let entity = ["repo_id", "org_id", "enterprise_id"]
            .iter()
            .find_map(|c| opt_text(&row, c));
        let Some(entity) = entity
            .and_then(|e| e.parse::<EntityId>().ok())
            .filter(|e| out.entities.iter().any(|x| x.id == *e))
        else {
            out.skipped
                .push(format!("pool {id}: its entity does not move over"));
            continue;
        };
        if let Some(t) = row.try_get::<Option<i64>, _>("template_id").ok().flatten()
            && user_templates.contains(&t)
        {
            out.skipped.push(format!(
                "pool {id}: uses garm runner install template {t}; templates do not move"
            ));
        }
        if row
            .try_get::<Option<i64>, _>("proxy_id")
            .ok()
            .flatten()
            .is_some()
        {
            out.skipped.push(format!(
                "pool {id}: uses a garm proxy; set extra_specs.proxy on the Hangar pool"
            ));
        }
        let tags: Vec<String> = tag_rows
            .iter()
            .filter(|t| t.get::<String, _>(0) == id)
            .map(|t| t.get::<String, _>(1))
            .collect();
        match garm_pool_spec(&row, &tags) {
            Ok(spec) => out.pools.push(GarmPool {
                id: id
                    .parse()
                    .map_err(|_| corrupt(format!("garm pool id {id:?} is not a UUID")))?,
                entity_id: entity,
                spec,
            }),
            Err(e) => out.skipped.push(format!("pool {id}: {e}")),
        }
    }

    for (table, what) in [
        ("scale_sets", "scale sets"),
        ("gitea_credentials", "Gitea credentials"),
        ("forge_instances", "Gitea instances"),
        (
            "instances",
            "runner instances (garm's runners are not moved)",
        ),
        (
            "users",
            "garm users (create Hangar's admin with `hangar init`)",
        ),
    ] {
        let present: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1")
                .bind(table)
                .fetch_optional(&mut *conn)
                .await?;
        if present.is_none() {
            continue;
        }
        // `table` is one of the fixed names above, never input.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE deleted_at IS NULL"
        )))
        .fetch_one(&mut *conn)
        .await?;
        if n > 0 {
            out.skipped.push(format!("{n} {what}: not imported"));
        }
    }
    Ok(out)
}

fn garm_pool_spec(row: &sqlx::sqlite::SqliteRow, tags: &[String]) -> Result<PoolSpec, String> {
    let int = |c: &str| row.try_get::<i64, _>(c).unwrap_or_default();
    let extra_specs = match blob(row, "extra_specs")
        .or_else(|| opt_text(row, "extra_specs").map(String::into_bytes))
    {
        None => serde_json::Map::new(),
        Some(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(serde_json::Value::Null) => serde_json::Map::new(),
            _ => return Err("extra specs are not a JSON object".into()),
        },
    };
    let prefix = opt_text(row, "runner_prefix").unwrap_or_else(|| "garm".into());
    let spec = PoolSpec {
        provider_name: ResourceName::parse(&row.get::<String, _>("provider_name"))
            .map_err(|e| e.to_string())?,
        image: row.get("image"),
        flavor: row.get("flavor"),
        tags: Labels::from_strs(tags.iter()).map_err(|e| e.to_string())?,
        os_type: opt_text(row, "os_type")
            .unwrap_or_else(|| "linux".into())
            .parse()
            .map_err(|e: hangar_core::PoolSpecError| e.to_string())?,
        os_arch: opt_text(row, "os_arch")
            .unwrap_or_else(|| "amd64".into())
            .parse()
            .map_err(|e: hangar_core::PoolSpecError| e.to_string())?,
        min_idle_runners: u32::try_from(int("min_idle_runners")).map_err(|e| e.to_string())?,
        max_runners: u32::try_from(int("max_runners")).map_err(|e| e.to_string())?,
        runner_prefix: RunnerPrefix::parse(&prefix).map_err(|e| e.to_string())?,
        runner_bootstrap_timeout: u32::try_from(int("runner_bootstrap_timeout").max(1))
            .map_err(|e| e.to_string())?,
        extra_specs,
        runner_group: opt_text(row, "git_hub_runner_group"),
        priority: u32::try_from(int("priority")).map_err(|e| e.to_string())?,
        enabled: row.try_get::<bool, _>("enabled").unwrap_or(false),
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// What one import added and what it found already present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub endpoints: (usize, usize),
    pub credentials: (usize, usize),
    pub entities: (usize, usize),
    pub pools: (usize, usize),
}

impl Store {
    /// Imports what [`read_garm_database`] read, in one transaction.
    /// Existing rows win (same name, same scope or same id): running it
    /// twice adds nothing the second time. garm's ids are kept, so
    /// `/webhooks/<garm entity id>` works unchanged; garm's controller id
    /// is recorded ([`Store::garm_controller_id`]).
    pub async fn import_garm(&self, data: &GarmData) -> Result<ImportCounts> {
        let mut counts = ImportCounts::default();
        let now = now_ms();
        on!(self, write, |w| {
            let mut tx = w.begin().await?;
            for e in &data.endpoints {
                let done = sqlx::query(
                    "INSERT INTO endpoints (name, description, base_url, api_base_url, ca_bundle, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(e.name.as_str())
                .bind(&e.description)
                .bind(&e.base_url)
                .bind(&e.api_base_url)
                .bind(&e.ca_bundle)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                bump(&mut counts.endpoints, done.rows_affected());
            }
            for c in &data.credentials {
                let name = c.name.as_str();
                let purpose = crate::credentials::secret_purpose(name);
                let (secret, app_id, installation_id) = match &c.auth {
                    CredentialsAuth::Pat { token } => {
                        (self.sealer().seal_secret(&purpose, token), None, None)
                    }
                    CredentialsAuth::App {
                        app_id,
                        installation_id,
                        private_key,
                    } => (
                        self.sealer().seal_secret(&purpose, private_key),
                        Some(*app_id),
                        Some(*installation_id),
                    ),
                };
                let done = sqlx::query(
                    "INSERT INTO credentials (name, description, endpoint_name, auth_type, app_id, installation_id, secret, app_webhook_secret, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .bind(&c.description)
                .bind(c.endpoint.as_str())
                .bind(c.auth.kind())
                .bind(app_id)
                .bind(installation_id)
                .bind(secret)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                bump(&mut counts.credentials, done.rows_affected());
            }
            // garm entity id → the id it has here (its own, or an entity of the
            // same scope on the same endpoint registered before the import).
            let mut entity_ids = std::collections::HashMap::new();
            for e in &data.entities {
                let (kind, owner, name) = crate::entities::scope_columns(&e.scope);
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM entities WHERE id = $1 OR (kind = $2 AND owner = $3 AND name = $4
                        AND endpoint_name = (SELECT endpoint_name FROM credentials WHERE name = $5))",
                )
                .bind(e.id.to_string())
                .bind(kind)
                .bind(owner)
                .bind(name)
                .bind(e.credentials_name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(id) = existing {
                    entity_ids.insert(e.id, id.parse::<EntityId>().map_err(corrupt)?);
                    counts.entities.1 += 1;
                    continue;
                }
                sqlx::query(
                    "INSERT INTO entities (id, kind, owner, name, endpoint_name, credentials_name, webhook_secret, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, (SELECT endpoint_name FROM credentials WHERE name = $5), $6, $7, $8, $9)",
                )
                .bind(e.id.to_string())
                .bind(kind)
                .bind(owner)
                .bind(name)
                .bind(e.credentials_name.as_str())
                .bind(e.credentials_name.as_str())
                .bind(
                    self.sealer()
                        .seal_secret(&crate::entities::hook_purpose(e.id), &e.webhook_secret),
                )
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                entity_ids.insert(e.id, e.id);
                counts.entities.0 += 1;
            }
            for p in &data.pools {
                let Some(entity) = entity_ids.get(&p.entity_id) else {
                    continue;
                };
                let s = &p.spec;
                let done = sqlx::query(
                    "INSERT INTO pools (id, entity_id, provider_name, image, flavor, tags, os_type, os_arch,
                        min_idle_runners, max_runners, runner_prefix, runner_bootstrap_timeout, extra_specs,
                        runner_group, priority, enabled, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING",
                )
                .bind(p.id.to_string())
                .bind(entity.to_string())
                .bind(s.provider_name.as_str())
                .bind(&s.image)
                .bind(&s.flavor)
                .bind(serde_json::to_string(&s.tags).map_err(corrupt)?)
                .bind(s.os_type.as_str())
                .bind(s.os_arch.as_str())
                .bind(i64::from(s.min_idle_runners))
                .bind(i64::from(s.max_runners))
                .bind(s.runner_prefix.as_str())
                .bind(i64::from(s.runner_bootstrap_timeout))
                .bind(serde_json::to_string(&s.extra_specs).map_err(corrupt)?)
                .bind(&s.runner_group)
                .bind(i64::from(s.priority))
                .bind(s.enabled)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                bump(&mut counts.pools, done.rows_affected());
            }
            if let Some(id) = data.controller_id {
                sqlx::query("UPDATE controller SET garm_controller_id = $1 WHERE id = 1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                // Hooks garm made post to /webhooks/<garm controller id>: the
                // webhook routes accept the ids listed here.
                sqlx::query(
                    "INSERT INTO garm_controller_ids (controller_id, created_at) VALUES ($1, $2)
                     ON CONFLICT (controller_id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(counts)
    }

    /// The controller id of the garm installation this database was
    /// imported from, if any: hooks made by garm post to
    /// `/webhooks/<this id>`, and garm's runners carry the label
    /// `runner-controller-id:<this id>`.
    pub async fn garm_controller_id(&self) -> Result<Option<ControllerId>> {
        let sql = "SELECT garm_controller_id FROM controller WHERE id = 1";
        let id: Option<String> = on!(self, read, |c| sqlx::query_scalar(sql).fetch_one(c).await)?;
        id.map(|s| s.parse().map_err(corrupt)).transpose()
    }
}

fn bump(count: &mut (usize, usize), added: u64) {
    if added > 0 {
        count.0 += 1;
    } else {
        count.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_shape() {
        // RFC 5869 test case 3 (empty salt, empty info), first 32 bytes.
        let ikm = [0x0bu8; 22];
        let okm = hkdf_sha256_32(&ikm, &[]);
        assert_eq!(
            hex::encode(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
    }

    #[test]
    fn garms_first_format_opens_and_a_wrong_key_does_not() {
        let key = b"0123456789abcdef0123456789abcdef";
        let cipher = Aes256Gcm::new_from_slice(key).unwrap();
        let nonce = [7u8; 12];
        let mut blob = nonce.to_vec();
        blob.extend(
            cipher
                .encrypt(Nonce::from_slice(&nonce), &b"hook secret"[..])
                .unwrap(),
        );
        assert_eq!(garm_unseal(&blob, key).unwrap(), b"hook secret");
        assert_eq!(
            garm_unseal(&blob, b"fedcba9876543210fedcba9876543210"),
            Err(GarmSealError::Open)
        );
        assert_eq!(
            garm_unseal(b"{\"nonce\": [1], \"data\": \"\"}", key),
            Err(GarmSealError::Malformed)
        );
    }

    #[test]
    fn wrong_passphrase_length_is_refused() {
        assert_eq!(
            garm_unseal(b"{}", b"short"),
            Err(GarmSealError::PassphraseLength)
        );
    }
}
