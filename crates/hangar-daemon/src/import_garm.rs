//! `hangard import-garm`: moves a garm deployment over in one command.
//!
//! Reads garm's TOML config (leniently: every key it does not carry over is
//! listed, never dropped silently) and garm's SQLite database (through
//! `hangar_store::garm`, read-only), writes the matching Hangar config when
//! the target file does not exist yet, then imports endpoints, credentials,
//! entities and pools into Hangar's database in one transaction. Everything
//! that can fail on bad input (missing files, wrong garm passphrase, unknown
//! schema, no Hangar passphrase) fails before anything is written.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hangar_core::Secret;
use hangar_store::garm::{GarmData, ImportCounts, read_garm_database};
use toml::Value;

use crate::config::Config;

/// What `import-garm` was asked.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// Hangar's config: written when missing, else read.
    pub config: PathBuf,
    pub garm_config: PathBuf,
    /// garm's database; default: `database.sqlite3.db_file` of garm's config.
    pub garm_db: Option<PathBuf>,
    /// Written as `database.passphrase_file` into a new Hangar config.
    pub passphrase_file: Option<PathBuf>,
}

/// What happened, for the caller to print.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub config_written: bool,
    pub database_url: String,
    pub counts: ImportCounts,
    pub garm_controller_id: Option<String>,
    /// Settings and rows not carried over, one line each.
    pub not_moved: Vec<String>,
}

/// garm's config, as far as the importer uses it.
#[derive(Debug, Default)]
struct GarmConfig {
    bind: Option<String>,
    port: Option<i64>,
    urls: Vec<String>,
    db_backend: Option<String>,
    db_file: Option<PathBuf>,
    passphrase: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    metrics_enabled: Option<bool>,
    token_ttl_hours: Option<u64>,
    providers: Vec<String>,
    not_moved: Vec<String>,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn quote(v: &str) -> String {
    Value::String(v.to_owned()).to_string()
}

fn parse_garm_config(path: &Path) -> anyhow::Result<GarmConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read garm's config {}", path.display()))?;
    let root: toml::Table = toml::from_str(&text)
        .with_context(|| format!("garm's config {} is not valid TOML", path.display()))?;
    let mut g = GarmConfig::default();
    let mut notes = Vec::new();
    for (section, value) in &root {
        match (section.as_str(), value) {
            ("default", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "callback_url" | "metadata_url" | "webhook_url" => {
                            if let Some(u) = s(v).filter(|u| !u.is_empty()) {
                                g.urls.push(u);
                            }
                        }
                        _ => notes.push(g_note(
                            &format!("default.{k}"),
                            "no Hangar equivalent; not carried over",
                        )),
                    }
                }
            }
            ("apiserver", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "bind" => g.bind = s(v),
                        "port" => g.port = v.as_integer(),
                        "use_tls" if v.as_bool() == Some(false) => {}
                        "tls" | "use_tls" => notes.push(g_note(
                            &format!("apiserver.{k}"),
                            "hangard serves plain HTTP; terminate TLS in front of it",
                        )),
                        _ => notes.push(g_note(
                            &format!("apiserver.{k}"),
                            "no Hangar equivalent; not carried over",
                        )),
                    }
                }
            }
            ("database", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "backend" => g.db_backend = s(v),
                        "passphrase" => g.passphrase = s(v),
                        "sqlite3" => {
                            if let Some(f) = v.get("db_file").and_then(Value::as_str) {
                                g.db_file = Some(PathBuf::from(f));
                            }
                        }
                        "debug" => {}
                        _ => notes.push(g_note(
                            &format!("database.{k}"),
                            "only garm's SQLite backend is read",
                        )),
                    }
                }
            }
            ("logging", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "log_level" => g.log_level = s(v),
                        "log_format" => g.log_format = s(v),
                        _ => notes.push(g_note(
                            &format!("logging.{k}"),
                            "hangard logs to stderr (journald); not carried over",
                        )),
                    }
                }
            }
            ("metrics", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "enable" => g.metrics_enabled = v.as_bool(),
                        _ => notes.push(g_note(
                            &format!("metrics.{k}"),
                            "no Hangar equivalent; not carried over",
                        )),
                    }
                }
            }
            ("jwt_auth", Value::Table(t)) => {
                for (k, v) in t {
                    match k.as_str() {
                        "time_to_live" => {
                            g.token_ttl_hours = s(v)
                                .and_then(|d| d.strip_suffix('h').and_then(|h| h.parse().ok()));
                            if g.token_ttl_hours.is_none() {
                                notes.push(g_note(
                                    "jwt_auth.time_to_live",
                                    "not a whole number of hours; Hangar's default applies",
                                ));
                            }
                        }
                        _ => notes.push(g_note(
                            &format!("jwt_auth.{k}"),
                            "Hangar signs its own tokens; admin users do not move (run `hangar init`)",
                        )),
                    }
                }
            }
            ("proxy", Value::Table(t)) if !t.is_empty() => notes.push(g_note(
                "proxy",
                "set HTTPS_PROXY/NO_PROXY in hangard's environment instead",
            )),
            ("provider", Value::Array(list)) => {
                for p in list {
                    if let Some(text) = provider_toml(p, &mut notes) {
                        g.providers.push(text);
                    }
                }
            }
            (other, _) => notes.push(g_note(other, "unknown garm setting; not carried over")),
        }
    }
    g.not_moved = notes;
    Ok(g)
}

fn g_note(key: &str, why: &str) -> String {
    format!("garm config {key}: {why}")
}

/// One garm `[[provider]]` as Hangar TOML, or `None` (noted) when it cannot
/// move.
fn provider_toml(p: &Value, notes: &mut Vec<String>) -> Option<String> {
    let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
    let kind = p
        .get("provider_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "external" {
        notes.push(g_note(
            &format!("provider {name:?}"),
            &format!(
                "provider_type {kind:?} is not supported (only \"external\"); not carried over"
            ),
        ));
        return None;
    }
    if let Err(e) = hangar_core::ResourceName::parse(name) {
        notes.push(g_note(
            &format!("provider {name:?}"),
            &format!("name not usable in Hangar ({e}); not carried over"),
        ));
        return None;
    }
    let ext = p
        .get("external")
        .cloned()
        .unwrap_or(Value::Table(Default::default()));
    let mut out = format!(
        "[[provider]]\nname = {}\nkind = \"external\"\n",
        quote(name)
    );
    if let Some(d) = p
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        out.push_str(&format!("description = {}\n", quote(d)));
    }
    out.push_str("[provider.external]\n");
    let executable = ext
        .get("provider_executable")
        .and_then(Value::as_str)
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            ext.get("provider_dir")
                .and_then(Value::as_str)
                .map(|d| Path::new(d).join("garm-external-provider"))
        });
    let Some(executable) = executable else {
        notes.push(g_note(
            &format!("provider {name:?}"),
            "has neither provider_executable nor provider_dir; not carried over",
        ));
        return None;
    };
    out.push_str(&format!(
        "executable = {}\n",
        quote(&executable.display().to_string())
    ));
    let config_file = ext
        .get("config_file")
        .and_then(Value::as_str)
        .unwrap_or_default();
    out.push_str(&format!("config_file = {}\n", quote(config_file)));
    if let Some(v) = ext.get("interface_version").and_then(Value::as_str) {
        out.push_str(&format!("interface_version = {}\n", quote(v)));
    }
    if let Some(list) = ext.get("environment_variables").and_then(Value::as_array) {
        let items: Vec<String> = list.iter().filter_map(Value::as_str).map(quote).collect();
        out.push_str(&format!("environment_variables = [{}]\n", items.join(", ")));
    }
    match ext.get("exec_timeout_seconds").and_then(Value::as_integer) {
        Some(n) if n > 0 => out.push_str(&format!("call_timeout_secs = {n}\n")),
        Some(_) => notes.push(g_note(
            &format!("provider {name:?} external.exec_timeout_seconds"),
            "0 (no limit) has no Hangar equivalent; Hangar's default of 300 s applies",
        )),
        None => {}
    }
    let jit = !p
        .get("disable_jit_config")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    out.push_str(&format!("jit_enabled = {jit}\n"));
    if let Some(t) = p.as_table() {
        for k in t.keys() {
            if !matches!(
                k.as_str(),
                "name" | "provider_type" | "description" | "disable_jit_config" | "external"
            ) {
                notes.push(g_note(
                    &format!("provider {name:?} {k}"),
                    "unknown; not carried over",
                ));
            }
        }
    }
    if let Some(t) = ext.as_table() {
        for k in t.keys() {
            if !matches!(
                k.as_str(),
                "provider_executable"
                    | "provider_dir"
                    | "config_file"
                    | "interface_version"
                    | "environment_variables"
                    | "exec_timeout_seconds"
            ) {
                notes.push(g_note(
                    &format!("provider {name:?} external.{k}"),
                    "unknown; not carried over",
                ));
            }
        }
    }
    Some(out)
}

/// The base URL garm's instances and hooks reached it at.
fn public_url(g: &GarmConfig, data: &GarmData) -> String {
    let strip = |u: &str, suffix: &str| -> Option<String> {
        let u = u.trim_end_matches('/');
        u.strip_suffix(suffix)
            .map(|b| b.trim_end_matches('/').to_owned())
    };
    let candidates = [
        data.metadata_url
            .as_deref()
            .and_then(|u| strip(u, "/api/v1/metadata")),
        data.callback_url
            .as_deref()
            .and_then(|u| strip(u, "/api/v1/callbacks")),
        data.webhook_base_url
            .as_deref()
            .and_then(|u| strip(u, "/webhooks")),
    ];
    let from_config = g.urls.iter().find_map(|u| {
        strip(u, "/api/v1/metadata")
            .or_else(|| strip(u, "/api/v1/callbacks"))
            .or_else(|| strip(u, "/webhooks"))
    });
    candidates
        .into_iter()
        .flatten()
        .chain(from_config)
        .find(|u| u.starts_with("http://") || u.starts_with("https://"))
        .unwrap_or_else(|| {
            let host = match g.bind.as_deref() {
                None | Some("") | Some("0.0.0.0") | Some("::") => "127.0.0.1".to_owned(),
                Some(h) => h.to_owned(),
            };
            format!("http://{host}:{}", g.port.unwrap_or(9997))
        })
}

fn bind(g: &GarmConfig) -> String {
    let host = match g.bind.as_deref() {
        None | Some("") => "0.0.0.0",
        Some(h) => h,
    };
    let port = g.port.unwrap_or(9997);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn hangar_config_text(
    g: &GarmConfig,
    data: &GarmData,
    db_url: &str,
    passphrase_file: Option<&Path>,
) -> String {
    let mut out = String::from(
        "# Written by `hangard import-garm` from garm's config; see\n\
         # config/hangard.example.toml for every key.\n\n[server]\n",
    );
    out.push_str(&format!("bind = {}\n", quote(&bind(g))));
    out.push_str(&format!(
        "public_url = {}\n\n[database]\n",
        quote(&public_url(g, data))
    ));
    out.push_str(&format!("url = {}\n", quote(db_url)));
    match passphrase_file {
        Some(f) => out.push_str(&format!(
            "passphrase_file = {}\n",
            quote(&f.display().to_string())
        )),
        None => out
            .push_str("# The passphrase comes from HANGAR_PASSPHRASE (or set passphrase_file).\n"),
    }
    if let Some(h) = g.token_ttl_hours {
        out.push_str(&format!("\n[auth]\ntoken_ttl_hours = {h}\n"));
    }
    let level = g
        .log_level
        .as_deref()
        .filter(|l| matches!(*l, "trace" | "debug" | "info" | "warn" | "error"));
    let format = g
        .log_format
        .as_deref()
        .filter(|f| matches!(*f, "text" | "json"));
    if level.is_some() || format.is_some() {
        out.push_str("\n[logging]\n");
        if let Some(l) = level {
            out.push_str(&format!("level = {}\n", quote(l)));
        }
        if let Some(f) = format {
            out.push_str(&format!("format = {}\n", quote(f)));
        }
    }
    if let Some(m) = g.metrics_enabled {
        out.push_str(&format!("\n[metrics]\nenabled = {m}\n"));
    }
    for p in &g.providers {
        out.push('\n');
        out.push_str(p);
    }
    out
}

/// Runs the import. On error nothing has been written.
pub async fn import_garm(req: &ImportRequest) -> anyhow::Result<ImportReport> {
    let garm = parse_garm_config(&req.garm_config)?;
    let mut not_moved = garm.not_moved.clone();
    let db_path = match &req.garm_db {
        Some(p) => p.clone(),
        None => {
            if let Some(b) = garm.db_backend.as_deref()
                && b != "sqlite3"
            {
                bail!(
                    "garm's database backend is {b:?}; only sqlite3 databases can be imported (export to SQLite, or give --garm-db)"
                );
            }
            garm.db_file
                .clone()
                .context("garm's config names no database.sqlite3.db_file; give --garm-db PATH")?
        }
    };
    let garm_passphrase = Secret::new(
        garm.passphrase
            .clone()
            .context("garm's config has no database.passphrase")?,
    );
    let data = read_garm_database(&db_path, &garm_passphrase)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    not_moved.extend(data.skipped.iter().cloned());

    let config_written = !req.config.exists();
    let (config, text) = if config_written {
        let dir = db_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // HANGAR_DATABASE_URL, when set, is where the new config points
        // (e.g. /var/lib/hangar under the shipped systemd unit).
        let db_url = std::env::var("HANGAR_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("hangar.db").display()));
        let text = hangar_config_text(&garm, &data, &db_url, req.passphrase_file.as_deref());
        let mut config = Config::parse(&text).context("the Hangar config made from garm's")?;
        if let Ok(v) = std::env::var("HANGAR_PASSPHRASE") {
            config.database.passphrase = Some(v);
        }
        config
            .validate()
            .context("the Hangar config made from garm's")?;
        (config, Some(text))
    } else {
        (Config::load(&req.config)?, None)
    };
    // Hangar's passphrase must be usable before anything is written.
    let passphrase = config.passphrase()?;
    if passphrase.expose().chars().count() < hangar_store::seal::MIN_PASSPHRASE_LEN {
        bail!(
            "Hangar's database passphrase must be at least {} characters long",
            hangar_store::seal::MIN_PASSPHRASE_LEN
        );
    }
    for p in &garm.providers {
        let name = p
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap_or_default()
            .trim_matches('"');
        if !config.providers.iter().any(|c| c.name == name) {
            not_moved.push(format!(
                "provider {name:?} is in garm's config but not in {}; pools on it will not run until it is added",
                req.config.display()
            ));
        }
    }

    let store = crate::open_store(&config).await?;
    let counts = store.import_garm(&data).await;
    store.close().await;
    let counts = counts.map_err(|e| anyhow::anyhow!("{e}"))?;
    // Last, so that a failed import leaves no config pointing at it.
    if let Some(text) = text {
        if let Some(parent) = req.config.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&req.config, text)
            .with_context(|| format!("cannot write {}", req.config.display()))?;
    }
    Ok(ImportReport {
        config_written,
        database_url: config.database.url.clone(),
        counts,
        garm_controller_id: data.controller_id.map(|c| c.to_string()),
        not_moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_moves_with_its_settings() {
        let v: Value = toml::from_str(
            r#"
name = "lxd_local"
provider_type = "external"
description = "LXD"
disable_jit_config = true
unknown_key = 1
[external]
provider_dir = "/opt/garm"
config_file = "/etc/garm/lxd.toml"
environment_variables = ["LXD_", "HOME"]
exec_timeout_seconds = 120
"#,
        )
        .unwrap();
        let mut notes = Vec::new();
        let text = provider_toml(&v, &mut notes).unwrap();
        assert!(text.contains("executable = \"/opt/garm/garm-external-provider\""));
        assert!(text.contains("environment_variables = [\"LXD_\", \"HOME\"]"));
        assert!(text.contains("call_timeout_secs = 120"));
        assert!(text.contains("jit_enabled = false"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("unknown_key"));
    }

    #[test]
    fn non_external_provider_is_listed() {
        let v: Value = toml::from_str("name = \"x\"\nprovider_type = \"lxd\"").unwrap();
        let mut notes = Vec::new();
        assert!(provider_toml(&v, &mut notes).is_none());
        assert!(notes[0].contains("not supported"));
    }
}
