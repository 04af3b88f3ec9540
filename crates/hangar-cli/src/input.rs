//! Turns flags into request bodies, refusing bad input before any request
//! is made: a typo should cost no round trip and leave nothing half done.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use hangar_api::{CredentialsCreate, CredentialsUpdate, PoolCreate, PoolUpdate};
use uuid::Uuid;

use crate::args::{
    AuthType, CredentialSecrets, CredentialsAddArgs, PasswordArgs, PoolAddArgs, PoolSettings,
    PoolUpdateArgs,
};

/// Comma-split labels, trimmed; an empty one is a typo (`a,,b`, a trailing
/// comma), not a wish.
pub fn tags(raw: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for t in raw {
        let t = t.trim();
        if t.is_empty() {
            bail!(
                "--tags: empty label in {:?}; give labels separated by single commas",
                raw.join(",")
            );
        }
        // Labels match case-insensitively, so `Linux,linux` is one label.
        if !out.iter().any(|o| o.eq_ignore_ascii_case(t)) {
            out.push(t.to_owned());
        }
    }
    if out.is_empty() {
        bail!("--tags: a pool needs at least one label");
    }
    Ok(out)
}

/// The extra specs of `--extra-specs` or `--extra-specs-file`: a JSON object.
pub fn extra_specs(
    inline: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let (text, flag) = match (inline, file) {
        (Some(t), _) => (t.to_owned(), "--extra-specs".to_owned()),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --extra-specs-file {}", f.display()))?,
            format!("--extra-specs-file {}", f.display()),
        ),
        (None, None) => return Ok(None),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{flag} is not valid JSON"))?;
    if !value.is_object() {
        bail!(
            "{flag} must be a JSON object like '{{\"confidential\": true}}', not {}",
            json_kind(&value)
        );
    }
    Ok(Some(value))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn runner_bounds(s: &PoolSettings) -> anyhow::Result<()> {
    if let (Some(min), Some(max)) = (s.min_idle_runners, s.max_runners)
        && max < min
    {
        bail!("--max-runners ({max}) must not be below --min-idle-runners ({min})");
    }
    Ok(())
}

fn non_empty(flag: &str, v: &str) -> anyhow::Result<()> {
    if v.trim().is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(())
}

pub fn pool_create(a: &PoolAddArgs) -> anyhow::Result<PoolCreate> {
    non_empty("--provider-name", &a.provider_name)?;
    non_empty("--image", &a.image)?;
    non_empty("--flavor", &a.flavor)?;
    let s = &a.settings;
    runner_bounds(s)?;
    Ok(PoolCreate {
        provider_name: a.provider_name.clone(),
        image: a.image.clone(),
        flavor: a.flavor.clone(),
        tags: tags(&a.tags)?,
        os_type: s.os_type.clone(),
        os_arch: s.os_arch.clone(),
        min_idle_runners: s.min_idle_runners,
        max_runners: s.max_runners,
        runner_prefix: s.runner_prefix.clone(),
        runner_bootstrap_timeout: s.runner_bootstrap_timeout,
        extra_specs: extra_specs(s.extra_specs.as_deref(), s.extra_specs_file.as_deref())?,
        runner_group: s.runner_group.clone(),
        priority: s.priority,
        enabled: s.enabled,
    })
}

pub fn pool_update(a: &PoolUpdateArgs) -> anyhow::Result<PoolUpdate> {
    let s = &a.settings;
    runner_bounds(s)?;
    let u = PoolUpdate {
        provider_name: a.provider_name.clone(),
        image: a.image.clone(),
        flavor: a.flavor.clone(),
        tags: a.tags.as_deref().map(tags).transpose()?,
        os_type: s.os_type.clone(),
        os_arch: s.os_arch.clone(),
        min_idle_runners: s.min_idle_runners,
        max_runners: s.max_runners,
        runner_prefix: s.runner_prefix.clone(),
        runner_bootstrap_timeout: s.runner_bootstrap_timeout,
        extra_specs: extra_specs(s.extra_specs.as_deref(), s.extra_specs_file.as_deref())?,
        runner_group: s.runner_group.clone(),
        priority: s.priority,
        enabled: s.enabled,
    };
    let nothing = serde_json::to_value(&u)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.values().all(serde_json::Value::is_null))
        })
        .unwrap_or(false);
    if nothing {
        bail!("nothing to update: give at least one setting (see `hangar pool update --help`)");
    }
    Ok(u)
}

/// The App's PEM key, read now so a wrong path fails before any request.
pub fn private_key(path: &Path) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --private-key-path {}", path.display()))?;
    if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
        bail!(
            "--private-key-path {} is not a PEM private key (expected -----BEGIN … PRIVATE KEY-----)",
            path.display()
        );
    }
    Ok(key)
}

/// A PEM CA bundle for an endpoint.
pub fn ca_bundle(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --ca-cert-path {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("--ca-cert-path {} holds no PEM certificate", path.display());
    }
    Ok(pem)
}

pub fn credentials_create(a: &CredentialsAddArgs) -> anyhow::Result<CredentialsCreate> {
    let s = &a.secrets;
    let mut c = CredentialsCreate {
        name: a.name.clone(),
        description: a.description.clone(),
        endpoint: a.endpoint.clone(),
        auth_type: a.auth_type.as_str().to_owned(),
        pat_oauth_token: None,
        app_id: None,
        installation_id: None,
        private_key: None,
        app_webhook_secret: s.app_webhook_secret.clone().filter(|w| !w.is_empty()),
    };
    match a.auth_type {
        AuthType::Pat => {
            let Some(t) = s
                .pat_oauth_token
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            else {
                bail!("--auth-type pat needs --pat-oauth-token");
            };
            if s.app_id.is_some() || s.installation_id.is_some() || s.private_key_path.is_some() {
                bail!("--app-id, --installation-id and --private-key-path are for --auth-type app");
            }
            c.pat_oauth_token = Some(t.trim().to_owned());
        }
        AuthType::App => {
            let (Some(app_id), Some(installation_id), Some(key)) =
                (s.app_id, s.installation_id, s.private_key_path.as_deref())
            else {
                bail!("--auth-type app needs --app-id, --installation-id and --private-key-path");
            };
            if app_id <= 0 || installation_id <= 0 {
                bail!("--app-id and --installation-id must be positive");
            }
            c.app_id = Some(app_id);
            c.installation_id = Some(installation_id);
            c.private_key = Some(private_key(key)?);
        }
    }
    Ok(c)
}

pub fn credentials_update(
    description: Option<String>,
    s: &CredentialSecrets,
) -> anyhow::Result<CredentialsUpdate> {
    let u = CredentialsUpdate {
        description,
        pat_oauth_token: s.pat_oauth_token.clone(),
        app_id: s.app_id,
        installation_id: s.installation_id,
        private_key: s.private_key_path.as_deref().map(private_key).transpose()?,
        app_webhook_secret: s.app_webhook_secret.clone(),
    };
    if u.description.is_none()
        && u.pat_oauth_token.is_none()
        && u.app_id.is_none()
        && u.installation_id.is_none()
        && u.private_key.is_none()
        && u.app_webhook_secret.is_none()
    {
        bail!(
            "nothing to update: give --description, --pat-oauth-token, --app-id, --installation-id, --private-key-path or --app-webhook-secret"
        );
    }
    Ok(u)
}

/// An absolute http(s) URL, checked here so the server's refusal is not
/// the first sign of a typo.
pub fn http_url(flag: &str, v: &str) -> anyhow::Result<()> {
    let u = url::Url::parse(v).with_context(|| format!("{flag} {v:?} is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        bail!("{flag} {v:?} must be an http(s) URL with a host");
    }
    Ok(())
}

/// A pool's id, which has no name to fall back on.
pub fn pool_id(v: &str) -> anyhow::Result<Uuid> {
    v.trim()
        .parse()
        .with_context(|| format!("{v:?} is not a pool id (a UUID; see `hangar pool ls`)"))
}

/// The password from `--password` or standard input.
pub fn password(p: &PasswordArgs, stdin: impl Read) -> anyhow::Result<String> {
    if p.password_stdin {
        let mut s = String::new();
        let mut stdin = stdin;
        stdin
            .read_to_string(&mut s)
            .context("cannot read the password from standard input")?;
        // Only the line ending `echo` or a here-string adds; spaces may be
        // part of the password.
        let s = s.strip_suffix('\n').unwrap_or(&s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        if s.is_empty() {
            bail!("--password-stdin: standard input was empty");
        }
        return Ok(s.to_owned());
    }
    match &p.password {
        Some(pw) if !pw.is_empty() => Ok(pw.clone()),
        _ => bail!("give the password with --password-stdin (or --password)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, CredentialsCmd, PoolCmd};
    use clap::Parser;

    fn pool_add(extra: &[&str]) -> PoolAddArgs {
        let mut argv = vec![
            "hangar",
            "pool",
            "add",
            "--repo",
            "r",
            "--provider-name",
            "azure_external",
            "--image",
            "img",
            "--flavor",
            "f",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Pool(PoolCmd::Add(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garm_pool_becomes_the_expected_body() {
        let body = pool_create(&pool_add(&[
            "--tags",
            "self-hosted,azure-cvm,ubuntu-2204",
            "--enabled",
            "true",
            "--min-idle-runners",
            "0",
            "--max-runners",
            "4",
            "--extra-specs",
            r#"{"confidential": true}"#,
        ]))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "provider_name": "azure_external", "image": "img", "flavor": "f",
                "tags": ["self-hosted", "azure-cvm", "ubuntu-2204"],
                "os_type": null, "os_arch": null,
                "min_idle_runners": 0, "max_runners": 4,
                "runner_prefix": null, "runner_bootstrap_timeout": null,
                "extra_specs": {"confidential": true},
                "runner_group": null, "priority": null, "enabled": true
            })
        );
    }

    #[test]
    fn bad_pool_input_is_refused_with_the_flag_named() {
        let err = |extra: &[&str]| pool_create(&pool_add(extra)).unwrap_err().to_string();
        let e = err(&["--tags", "a", "--extra-specs", "[1, 2]"]);
        assert!(
            e.contains("--extra-specs must be a JSON object") && e.contains("an array"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            pool_create(&pool_add(&[
                "--tags",
                "a",
                "--extra-specs",
                "{confidential"
            ]))
            .unwrap_err()
        );
        assert!(e.contains("--extra-specs is not valid JSON"), "{e}");
        let e = err(&[
            "--tags",
            "a",
            "--min-idle-runners",
            "5",
            "--max-runners",
            "4",
        ]);
        assert_eq!(
            e,
            "--max-runners (4) must not be below --min-idle-runners (5)"
        );
        let e = err(&["--tags", "a,,b"]);
        assert!(e.contains("empty label"), "{e}");
        let mut blank_image = pool_add(&["--tags", "a"]);
        blank_image.image = " ".into();
        let e = pool_create(&blank_image).unwrap_err().to_string();
        assert!(e.contains("--image must not be empty"), "{e}");
        let e = format!(
            "{:#}",
            pool_create(&pool_add(&[
                "--tags",
                "a",
                "--extra-specs-file",
                "/nonexistent/specs.json"
            ]))
            .unwrap_err()
        );
        assert!(
            e.contains("cannot read --extra-specs-file /nonexistent/specs.json"),
            "{e}"
        );
    }

    #[test]
    fn tags_trim_and_dedupe_case_insensitively() {
        let t = tags(&[" linux".into(), "Linux".into(), "x64 ".into()]).unwrap();
        assert_eq!(t, ["linux", "x64"]);
        assert!(tags(&[]).is_err());
    }

    #[test]
    fn extra_specs_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("specs.json");
        std::fs::write(&f, r#"{"disk_size": 64}"#).unwrap();
        assert_eq!(
            extra_specs(None, Some(&f)).unwrap(),
            Some(serde_json::json!({"disk_size": 64}))
        );
        assert_eq!(extra_specs(None, None).unwrap(), None);
    }

    #[test]
    fn pool_update_needs_something() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["hangar", "pool", "update", "id"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Pool(PoolCmd::Update(u)) => u,
                other => panic!("{other:?}"),
            }
        };
        assert!(
            pool_update(&parse(&[]))
                .unwrap_err()
                .to_string()
                .contains("nothing to update")
        );
        let u = pool_update(&parse(&["--enabled", "false"])).unwrap();
        assert_eq!(u.enabled, Some(false));
        assert!(u.max_runners.is_none());
        assert!(pool_update(&parse(&["--min-idle-runners", "3", "--max-runners", "1"])).is_err());
    }

    fn creds(extra: &[&str]) -> anyhow::Result<CredentialsCreate> {
        let mut argv = vec![
            "hangar",
            "credentials",
            "add",
            "--name",
            "c",
            "--endpoint",
            "github.com",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Credentials(CredentialsCmd::Add(a)) => credentials_create(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_by_auth_type() {
        let c = creds(&["--auth-type", "pat", "--pat-oauth-token", "ghp_abc"]).unwrap();
        assert_eq!(
            (c.auth_type.as_str(), c.pat_oauth_token.as_deref()),
            ("pat", Some("ghp_abc"))
        );
        assert!(
            creds(&["--auth-type", "pat"])
                .unwrap_err()
                .to_string()
                .contains("needs --pat-oauth-token")
        );
        assert!(
            creds(&["--auth-type", "app", "--app-id", "1"])
                .unwrap_err()
                .to_string()
                .contains("needs --app-id, --installation-id and --private-key-path")
        );

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let k = key.to_str().unwrap();
        let c = creds(&[
            "--auth-type",
            "app",
            "--app-id",
            "12",
            "--installation-id",
            "34",
            "--private-key-path",
            k,
        ])
        .unwrap();
        assert_eq!((c.app_id, c.installation_id), (Some(12), Some(34)));
        assert!(c.private_key.unwrap().contains("BEGIN RSA PRIVATE KEY"));

        let missing = dir.path().join("missing.pem");
        let e = format!(
            "{:#}",
            creds(&[
                "--auth-type",
                "app",
                "--app-id",
                "1",
                "--installation-id",
                "2",
                "--private-key-path",
                missing.to_str().unwrap()
            ])
            .unwrap_err()
        );
        assert!(
            e.contains("cannot read --private-key-path") && e.contains("missing.pem"),
            "{e}"
        );
        let notkey = dir.path().join("cert.pem");
        std::fs::write(&notkey, "hello").unwrap();
        let e = creds(&[
            "--auth-type",
            "app",
            "--app-id",
            "1",
            "--installation-id",
            "2",
            "--private-key-path",
            notkey.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("is not a PEM private key"), "{e}");
    }

    #[test]
    fn passwords() {
        let stdin = |s: &'static str| s.as_bytes();
        let flag = |pw: Option<&str>, from_stdin: bool| PasswordArgs {
            password: pw.map(str::to_owned),
            password_stdin: from_stdin,
        };
        assert_eq!(
            password(&flag(None, true), stdin("s3cret pass \n")).unwrap(),
            "s3cret pass "
        );
        assert_eq!(password(&flag(None, true), stdin("pw\r\n")).unwrap(), "pw");
        assert!(password(&flag(None, true), stdin("")).is_err());
        assert_eq!(password(&flag(Some("pw"), false), stdin("")).unwrap(), "pw");
        assert!(
            password(&flag(None, false), stdin("ignored"))
                .unwrap_err()
                .to_string()
                .contains("--password-stdin")
        );
    }

    #[test]
    fn urls_and_ids() {
        assert!(http_url("--base-url", "https://github.com").is_ok());
        assert!(http_url("--base-url", "github.com").is_err());
        assert!(http_url("--base-url", "ftp://github.com").is_err());
        assert!(
            pool_id("not-a-uuid")
                .unwrap_err()
                .to_string()
                .contains("hangar pool ls")
        );
        assert!(pool_id("9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f").is_ok());
    }
}
