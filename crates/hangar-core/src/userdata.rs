//! The boot script every Linux instance runs (cloud-init user-data, or the
//! NoCloud seed's `user-data`), rendered from data so it can be tested here.
//!
//! It is plain POSIX `sh` so that it runs on a full Ubuntu image and on a
//! busybox test image alike: fetch the JIT config with the instance token,
//! use a pre-installed runner or download and verify one, report status,
//! run exactly one job, power off. It carries no secret except the
//! instance's own short-lived token.

use std::fmt::Write as _;

use crate::ids::InstanceName;
use crate::labels::Labels;
use crate::pool::OsType;
use crate::provider::{BootstrapParams, RunnerTool};

/// Where the runner is looked for and installed in the guest.
pub const RUNNER_DIR: &str = "/opt/actions-runner";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserdataError {
    #[error("userdata for {0} instances is not supported yet; use a Linux pool")]
    UnsupportedOs(&'static str),
}

/// Everything the script needs.
#[derive(Debug, Clone)]
pub struct UserdataParams<'a> {
    pub name: &'a InstanceName,
    pub os_type: OsType,
    pub labels: &'a Labels,
    pub bootstrap: &'a BootstrapParams,
    /// The download matching the pool's OS and architecture, if GitHub's list
    /// was available; used only when the image has no runner.
    pub tool: Option<&'a RunnerTool>,
}

/// Quotes a value for `sh` inside single quotes.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub fn render(p: &UserdataParams<'_>) -> Result<String, UserdataError> {
    if p.os_type != OsType::Linux {
        return Err(UserdataError::UnsupportedOs(p.os_type.as_str()));
    }
    let b = p.bootstrap;
    let mut s = String::with_capacity(4096);
    s.push_str("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# Hangar runner bootstrap for {}. Generated; do not edit.",
        p.name
    );
    s.push_str("set -u\n");
    let vars = [
        ("HANGAR_NAME", p.name.as_str().to_owned()),
        (
            "HANGAR_METADATA_URL",
            b.metadata_url.trim_end_matches('/').to_owned(),
        ),
        ("HANGAR_CALLBACK_URL", b.callback_url.clone()),
        ("HANGAR_TOKEN", b.instance_token.expose().to_owned()),
        ("HANGAR_REPO_URL", b.repo_url.clone()),
        ("HANGAR_LABELS", p.labels.to_string()),
        (
            "HANGAR_RUNNER_GROUP",
            b.runner_group.clone().unwrap_or_default(),
        ),
        (
            "HANGAR_JIT",
            if b.jit_config_enabled { "1" } else { "0" }.to_owned(),
        ),
        ("RUNNER_DIR", RUNNER_DIR.to_owned()),
        (
            "RUNNER_URL",
            p.tool.map(|t| t.download_url.clone()).unwrap_or_default(),
        ),
        (
            "RUNNER_SHA256",
            p.tool
                .and_then(|t| t.sha256_checksum.clone())
                .unwrap_or_default(),
        ),
    ];
    for (k, v) in vars {
        let _ = writeln!(s, "{k}={}", sh_quote(&v));
    }
    let proxy = &b.proxy;
    for (names, value) in [
        (["http_proxy", "HTTP_PROXY"], &proxy.http_proxy),
        (["https_proxy", "HTTPS_PROXY"], &proxy.https_proxy),
        (["no_proxy", "NO_PROXY"], &proxy.no_proxy),
    ] {
        if let Some(v) = value {
            for n in names {
                let _ = writeln!(s, "export {n}={}", sh_quote(v));
                // Persist for login shells, services and the runner's jobs.
                let _ = writeln!(
                    s,
                    "[ -w /etc/environment ] && echo {} >> /etc/environment",
                    sh_quote(&format!("{n}={v}"))
                );
            }
        }
    }
    if let Some(v) = &proxy.http_proxy {
        let _ = writeln!(
            s,
            "[ -d /etc/apt/apt.conf.d ] && echo {} > /etc/apt/apt.conf.d/95hangar-proxy",
            sh_quote(&format!(
                "Acquire::http::Proxy \"{v}\"; Acquire::https::Proxy \"{}\";",
                proxy.https_proxy.as_deref().unwrap_or(v)
            ))
        );
    }
    if let Some(ca) = &b.ca_cert_bundle {
        let _ = writeln!(
            s,
            "if [ -d /usr/local/share/ca-certificates ]; then echo {} > /usr/local/share/ca-certificates/hangar-ca.crt; command -v update-ca-certificates >/dev/null 2>&1 && update-ca-certificates >/dev/null 2>&1; fi",
            sh_quote(ca)
        );
    }
    s.push_str(SCRIPT_BODY);
    Ok(s)
}

const SCRIPT_BODY: &str = r#"
log() { echo "hangar: $*"; }

have() { command -v "$1" >/dev/null 2>&1; }

# GET with the instance token; body on stdout. Retried, refused connections
# too, for ~30 s: a VM that boots while hangard restarts still registers.
hangar_get() {
    if have curl; then
        curl -fsS --retry 10 --retry-delay 3 --retry-connrefused -H "Authorization: Bearer $HANGAR_TOKEN" "$1"
    else
        wget -q -O - --header "Authorization: Bearer $HANGAR_TOKEN" "$1"
    fi
}

# POST a status callback: callback <installing|idle|failed> <message>
callback() {
    body="{\"status\":\"$1\",\"message\":\"$2\"}"
    if have curl; then
        curl -fsS --retry 10 --retry-delay 3 --retry-connrefused -X POST -H "Authorization: Bearer $HANGAR_TOKEN" \
            -H 'Content-Type: application/json' --data "$body" "$HANGAR_CALLBACK_URL" >/dev/null
    else
        wget -q -O /dev/null --header "Authorization: Bearer $HANGAR_TOKEN" \
            --header 'Content-Type: application/json' --post-data "$body" "$HANGAR_CALLBACK_URL"
    fi || log "callback $1 failed"
}

finish() {
    log "powering off"
    sync
    poweroff -f 2>/dev/null || poweroff 2>/dev/null || shutdown -h now
    exit 0
}

fail() {
    log "failed: $1"
    callback failed "$1"
    finish
}

download() {
    if have curl; then curl -fsSL --retry 5 -o "$2" "$1"; else wget -q -O "$2" "$1"; fi
}

log "bootstrapping $HANGAR_NAME"
callback installing "bootstrap started"

if [ ! -x "$RUNNER_DIR/run.sh" ]; then
    [ -n "$RUNNER_URL" ] || fail "no runner in the image and no download available"
    log "downloading runner"
    mkdir -p "$RUNNER_DIR" || fail "cannot create $RUNNER_DIR"
    download "$RUNNER_URL" /tmp/actions-runner.tar.gz || fail "runner download failed"
    if [ -n "$RUNNER_SHA256" ]; then
        echo "$RUNNER_SHA256  /tmp/actions-runner.tar.gz" | sha256sum -c - >/dev/null 2>&1 \
            || fail "runner download checksum mismatch"
    fi
    tar -xzf /tmp/actions-runner.tar.gz -C "$RUNNER_DIR" || fail "cannot unpack runner"
    rm -f /tmp/actions-runner.tar.gz
fi

RUN_AS=""
if id runner >/dev/null 2>&1; then
    RUN_AS=runner
    chown -R runner "$RUNNER_DIR" 2>/dev/null || true
else
    export RUNNER_ALLOW_RUNASROOT=1
fi

in_runner_dir() {
    if [ -n "$RUN_AS" ]; then
        su -s /bin/sh "$RUN_AS" -c "cd '$RUNNER_DIR' && $*"
    else
        (cd "$RUNNER_DIR" && sh -c "$*")
    fi
}

if [ "$HANGAR_JIT" = "1" ]; then
    JIT_CONFIG=$(hangar_get "$HANGAR_METADATA_URL/jit-config") || fail "could not fetch the JIT config"
    [ -n "$JIT_CONFIG" ] || fail "empty JIT config"
    callback idle "runner starting"
    in_runner_dir "./run.sh --jitconfig $JIT_CONFIG"
else
    REG_TOKEN=$(hangar_get "$HANGAR_METADATA_URL/runner-registration-token") || fail "could not fetch a registration token"
    GROUP_ARG=""
    [ -n "$HANGAR_RUNNER_GROUP" ] && GROUP_ARG="--runnergroup '$HANGAR_RUNNER_GROUP'"
    in_runner_dir "./config.sh --unattended --ephemeral --replace --url '$HANGAR_REPO_URL' --token '$REG_TOKEN' --name '$HANGAR_NAME' --labels '$HANGAR_LABELS' --work _work $GROUP_ARG" \
        || fail "runner configuration failed"
    callback idle "runner starting"
    in_runner_dir "./run.sh"
fi
log "runner exited with status $?"
finish
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProxySettings;
    use crate::secret::Secret;

    fn bootstrap() -> BootstrapParams {
        BootstrapParams {
            repo_url: "https://github.com/octo/app".into(),
            metadata_url: "http://10.0.2.2:9997/api/v1/metadata/".into(),
            callback_url: "http://10.0.2.2:9997/api/v1/callbacks/status".into(),
            instance_token: Secret::new("tok'en"),
            jit_config_enabled: true,
            runner_group: None,
            tools: vec![],
            ca_cert_bundle: None,
            proxy: ProxySettings::default(),
        }
    }

    fn render_with(b: &BootstrapParams, tool: Option<&RunnerTool>) -> String {
        let name = InstanceName::parse("hangar-abc").unwrap();
        let labels = Labels::parse_list("self-hosted,linux").unwrap();
        render(&UserdataParams {
            name: &name,
            os_type: OsType::Linux,
            labels: &labels,
            bootstrap: b,
            tool,
        })
        .unwrap()
    }

    #[test]
    fn script_carries_urls_and_quoted_token() {
        let s = render_with(&bootstrap(), None);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("HANGAR_METADATA_URL='http://10.0.2.2:9997/api/v1/metadata'\n"));
        assert!(s.contains(r"HANGAR_TOKEN='tok'\''en'"));
        assert!(s.contains("HANGAR_JIT='1'"));
        assert!(s.contains("$HANGAR_METADATA_URL/jit-config"));
        assert!(!s.contains("http_proxy"));
    }

    #[test]
    fn proxy_reaches_runner_and_apt() {
        let mut b = bootstrap();
        b.proxy.http_proxy = Some("http://proxy.corp:3128".into());
        b.proxy.no_proxy = Some("localhost,10.0.0.0/8".into());
        let s = render_with(&b, None);
        assert!(s.contains("export http_proxy='http://proxy.corp:3128'"));
        assert!(s.contains("export HTTP_PROXY='http://proxy.corp:3128'"));
        assert!(s.contains("export no_proxy='localhost,10.0.0.0/8'"));
        assert!(s.contains("/etc/apt/apt.conf.d/95hangar-proxy"));
        assert!(s.contains("/etc/environment"));
    }

    #[test]
    fn download_and_checksum() {
        let tool = RunnerTool {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: "https://example.invalid/runner.tar.gz".into(),
            filename: "runner.tar.gz".into(),
            sha256_checksum: Some("ab".repeat(32)),
        };
        let s = render_with(&bootstrap(), Some(&tool));
        assert!(s.contains("RUNNER_URL='https://example.invalid/runner.tar.gz'"));
        assert!(s.contains(&format!("RUNNER_SHA256='{}'", "ab".repeat(32))));
    }

    #[test]
    fn windows_is_refused_clearly() {
        let name = InstanceName::parse("w").unwrap();
        let labels = Labels::default();
        let b = bootstrap();
        let err = render(&UserdataParams {
            name: &name,
            os_type: OsType::Windows,
            labels: &labels,
            bootstrap: &b,
            tool: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("windows"));
    }

    #[test]
    fn script_is_valid_sh() {
        // `sh -n` parses without running: a syntax slip fails here, not in a VM.
        let mut b = bootstrap();
        b.proxy.https_proxy = Some("http://p:1".into());
        b.jit_config_enabled = false;
        b.runner_group = Some("ci".into());
        let s = render_with(&b, None);
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&s)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
