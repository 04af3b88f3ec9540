//! The simulated boot: read the variables Hangar's boot script sets from a
//! VM's `customData` (never run it) and walk through the bootstrap calls.

use std::collections::HashMap;

use base64::Engine as _;
use hangar_core::Secret;
use hangar_core::provider::{BootstrapParams, ProxySettings};

use super::FakeArm;
use crate::runner_sim;

/// One shell word as `sh` reads it: unquoted text, `'…'` and `\x`.
pub(super) fn sh_unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Why a VM's `customData` is not a boot script Hangar rendered; recorded as
/// a boot error of that VM.
#[derive(Debug, thiserror::Error)]
pub(super) enum CustomDataError {
    #[error("customData is not base64: {0}")]
    NotBase64(#[from] base64::DecodeError),
    #[error("customData is not UTF-8")]
    NotUtf8,
    #[error("customData is neither a script (#!) nor #cloud-config")]
    NotAScript,
    #[error("customData sets no {0}")]
    Missing(&'static str),
}

/// Reads the variables Hangar's boot script sets (see
/// `hangar_core::userdata::render`). The script is never executed.
pub(super) fn bootstrap_from_custom_data(b64: &str) -> Result<BootstrapParams, CustomDataError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let script = String::from_utf8(bytes).map_err(|_| CustomDataError::NotUtf8)?;
    // Hangar's user-data is #cloud-config holding the script (indented
    // under write_files); a bare script is read the same way.
    if !script.starts_with("#!") && !script.starts_with("#cloud-config\n") {
        return Err(CustomDataError::NotAScript);
    }
    let mut vars: HashMap<String, String> = HashMap::new();
    for line in script.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let is_name = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !is_name || vars.contains_key(k) {
            continue;
        }
        if let Some(v) = sh_unquote(v) {
            vars.insert(k.to_owned(), v);
        }
    }
    let need = |k: &'static str| {
        vars.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(CustomDataError::Missing(k))
    };
    let opt = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(BootstrapParams {
        repo_url: opt("HANGAR_REPO_URL").unwrap_or_default(),
        metadata_url: need("HANGAR_METADATA_URL")?,
        callback_url: need("HANGAR_CALLBACK_URL")?,
        instance_token: Secret::new(need("HANGAR_TOKEN")?),
        jit_config_enabled: opt("HANGAR_JIT").as_deref() == Some("1"),
        runner_group: opt("HANGAR_RUNNER_GROUP"),
        tools: Vec::new(),
        ca_cert_bundle: None,
        proxy: ProxySettings {
            http_proxy: opt("http_proxy"),
            https_proxy: opt("https_proxy"),
            no_proxy: opt("no_proxy"),
        },
    })
}

impl FakeArm {
    pub(super) fn start_boots(&self, boots: Vec<(String, String)>) {
        for (vm, script) in boots {
            match bootstrap_from_custom_data(&script) {
                Ok(params) => {
                    let arm = self.clone();
                    tokio::spawn(async move {
                        let outcome = runner_sim::boot(&params).await;
                        {
                            let mut s = arm.st();
                            match outcome {
                                Ok(_) => s.booted.push(vm),
                                Err(e) => {
                                    tracing::warn!(vm = %vm, error = %e, "simulated boot failed");
                                    s.boot_errors.push(format!("{vm}: {e}"));
                                }
                            }
                        }
                        arm.changed.notify_waiters();
                    });
                }
                Err(e) => self.st().boot_errors.push(format!("{vm}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquotes_sh_words() {
        assert_eq!(sh_unquote(r"'tok'\''en'").as_deref(), Some("tok'en"));
        assert_eq!(
            sh_unquote("'http://x/a b'").as_deref(),
            Some("http://x/a b")
        );
        assert_eq!(sh_unquote("plain # comment").as_deref(), Some("plain"));
        assert_eq!(sh_unquote("'unterminated"), None);
    }

    #[test]
    fn reads_the_rendered_boot_script() {
        use hangar_core::labels::Labels;
        use hangar_core::userdata::{UserdataParams, render};
        use hangar_core::{InstanceName, OsType};
        let b = BootstrapParams {
            repo_url: "https://github.com/octo/app".into(),
            metadata_url: "http://127.0.0.1:1/api/v1/metadata".into(),
            callback_url: "http://127.0.0.1:1/api/v1/callbacks/status".into(),
            instance_token: Secret::new("tok'en"),
            jit_config_enabled: true,
            runner_group: None,
            tools: vec![],
            ca_cert_bundle: None,
            proxy: ProxySettings {
                http_proxy: Some("http://proxy:3128".into()),
                ..ProxySettings::default()
            },
        };
        let name = InstanceName::parse("hangar-x").expect("name");
        let labels = Labels::parse_list("self-hosted").expect("labels");
        let script = render(&UserdataParams {
            name: &name,
            os_type: OsType::Linux,
            labels: &labels,
            bootstrap: &b,
            tool: None,
        })
        .expect("render");
        let encoded = base64::engine::general_purpose::STANDARD.encode(script);
        let got = bootstrap_from_custom_data(&encoded).expect("parses");
        assert_eq!(got.metadata_url, b.metadata_url);
        assert_eq!(got.callback_url, b.callback_url);
        assert_eq!(got.instance_token.expose(), "tok'en");
        assert_eq!(got.repo_url, b.repo_url);
        assert!(got.jit_config_enabled);
        assert_eq!(got.proxy.http_proxy.as_deref(), Some("http://proxy:3128"));
        let empty = base64::engine::general_purpose::STANDARD.encode("#cloud-config\n");
        assert!(matches!(
            bootstrap_from_custom_data(&empty),
            Err(CustomDataError::Missing(_))
        ));
        let not_script = base64::engine::general_purpose::STANDARD.encode("echo hi\n");
        assert!(matches!(
            bootstrap_from_custom_data(&not_script),
            Err(CustomDataError::NotAScript)
        ));
    }
}
