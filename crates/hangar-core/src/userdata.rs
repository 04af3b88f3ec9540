//! The boot data every Linux instance gets (cloud-init user-data, or the
//! NoCloud seed's `user-data`), rendered from data so it can be tested here.
//!
//! It is `#cloud-config` that cloud-init's schema check accepts: the boot
//! script goes under `write_files` and `runcmd` runs it. The script itself
//! is plain POSIX `sh`, so it runs on a full Ubuntu image and on a busybox
//! test image alike: fetch the JIT config with the instance token, use a
//! pre-installed runner or download and verify one, hand the proxy to the
//! shell, apt, Docker and the runner, report `idle` once the runner listens
//! for jobs, run exactly one job, report its end, power off. It carries no
//! secret except the instance's own short-lived token.

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

/// Where the cloud-config writes the boot script in the guest; `runcmd`
/// runs it from there.
pub const SCRIPT_PATH: &str = "/var/lib/hangar-runner/bootstrap.sh";

/// The columns the script is indented by under `content: |`.
const CONTENT_INDENT: &str = "      ";

/// Quotes a value for `sh` inside single quotes.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Quotes a value for a systemd unit's `Environment=` line: inside double
/// quotes `"` and `\` are escaped, and `%` (a specifier) is doubled.
fn systemd_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The proxy variables, lower- and upper-case, that are set.
fn proxy_vars(b: &BootstrapParams) -> Vec<(&'static str, &str)> {
    let proxy = &b.proxy;
    let mut vars = Vec::new();
    for (names, value) in [
        (["http_proxy", "HTTP_PROXY"], &proxy.http_proxy),
        (["https_proxy", "HTTPS_PROXY"], &proxy.https_proxy),
        (["no_proxy", "NO_PROXY"], &proxy.no_proxy),
    ] {
        if let Some(v) = value {
            for n in names {
                vars.push((n, v.as_str()));
            }
        }
    }
    vars
}

/// The user-data to hand the instance: `#cloud-config` whose `write_files`
/// holds [`render_script`]'s script at [`SCRIPT_PATH`] and whose `runcmd`
/// runs it.
pub fn render(p: &UserdataParams<'_>) -> Result<String, UserdataError> {
    let script = render_script(p)?;
    let mut s = String::with_capacity(script.len() + script.lines().count() * 6 + 512);
    s.push_str("#cloud-config\n");
    let _ = writeln!(
        s,
        "# Hangar runner bootstrap for {}. Generated; do not edit.",
        p.name
    );
    s.push_str("write_files:\n");
    let _ = writeln!(s, "  - path: {SCRIPT_PATH}");
    s.push_str("    owner: root:root\n");
    s.push_str("    permissions: '0700'\n");
    // A literal block: every line indented alike, so the script comes back
    // byte for byte whatever it holds (quotes, colons, a CA bundle).
    s.push_str("    content: |\n");
    for line in script.lines() {
        if line.is_empty() {
            s.push('\n');
        } else {
            s.push_str(CONTENT_INDENT);
            s.push_str(line);
            s.push('\n');
        }
    }
    s.push_str("runcmd:\n");
    let _ = writeln!(s, "  - [sh, {SCRIPT_PATH}]");
    Ok(s)
}

/// The boot script alone (what [`render`] wraps): plain POSIX `sh`.
pub fn render_script(p: &UserdataParams<'_>) -> Result<String, UserdataError> {
    if p.os_type != OsType::Linux {
        return Err(UserdataError::UnsupportedOs(p.os_type.as_str()));
    }
    let b = p.bootstrap;
    let mut s = String::with_capacity(8192);
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
    let proxy = proxy_vars(b);
    for (n, v) in &proxy {
        let _ = writeln!(s, "export {n}={}", sh_quote(v));
        // Persist for login shells, services and the runner's jobs.
        let _ = writeln!(
            s,
            "[ -w /etc/environment ] && echo {} >> /etc/environment",
            sh_quote(&format!("{n}={v}"))
        );
    }
    // The runner reads `.env` in its folder at start and hands it to every
    // job step; written once the runner is in place (below).
    let runner_env: String = proxy.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
    let _ = writeln!(s, "RUNNER_ENV={}", sh_quote(&runner_env));
    // dockerd reads no shell profile: a systemd drop-in gives it the proxy
    // for pulls; `try-restart` leaves a stopped Docker stopped.
    let docker_dropin = if proxy.is_empty() {
        String::new()
    } else {
        let mut d = String::from("[Service]\n");
        for (n, v) in proxy
            .iter()
            .filter(|(n, _)| n.starts_with(char::is_uppercase))
        {
            let _ = writeln!(d, "Environment={}", systemd_quote(&format!("{n}={v}")));
        }
        d
    };
    let _ = writeln!(s, "DOCKER_PROXY_DROPIN={}", sh_quote(&docker_dropin));
    if let Some(v) = &b.proxy.http_proxy {
        let _ = writeln!(
            s,
            "[ -d /etc/apt/apt.conf.d ] && echo {} > /etc/apt/apt.conf.d/95hangar-proxy",
            sh_quote(&format!(
                "Acquire::http::Proxy \"{v}\"; Acquire::https::Proxy \"{}\";",
                b.proxy.https_proxy.as_deref().unwrap_or(v)
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

# POST a status callback: callback <installing|idle|failed|terminated> <message>
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

# The proxy for the runner's job steps and for Docker's pulls.
if [ -n "$RUNNER_ENV" ]; then
    printf '%s' "$RUNNER_ENV" >> "$RUNNER_DIR/.env" || log "cannot write $RUNNER_DIR/.env"
fi
if [ -n "$DOCKER_PROXY_DROPIN" ] && [ -d /etc/systemd/system ]; then
    mkdir -p /etc/systemd/system/docker.service.d \
        && printf '%s' "$DOCKER_PROXY_DROPIN" > /etc/systemd/system/docker.service.d/hangar-proxy.conf \
        && if have systemctl; then systemctl daemon-reload && systemctl try-restart docker.service; fi \
        || log "cannot hand the proxy to Docker"
fi

# run_runner <command>: runs the runner, echoing its output, and reports
# `idle` only once it has connected and listens for jobs. Sets RUNNER_RC.
RUNNER_STATE=/tmp/hangar-runner.$$
run_runner() {
    rm -f "$RUNNER_STATE.rc" "$RUNNER_STATE.connected"
    { in_runner_dir "$1" 2>&1; echo $? > "$RUNNER_STATE.rc"; } | while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            *"Listening for Jobs"*)
                if [ ! -e "$RUNNER_STATE.connected" ]; then
                    : > "$RUNNER_STATE.connected"
                    callback idle "runner connected, listening for jobs"
                fi
                ;;
        esac
    done
    RUNNER_RC=$(cat "$RUNNER_STATE.rc" 2>/dev/null || echo unknown)
}

if [ "$HANGAR_JIT" = "1" ]; then
    JIT_CONFIG=$(hangar_get "$HANGAR_METADATA_URL/jit-config") || fail "could not fetch the JIT config"
    [ -n "$JIT_CONFIG" ] || fail "empty JIT config"
    run_runner "./run.sh --jitconfig $JIT_CONFIG"
else
    REG_TOKEN=$(hangar_get "$HANGAR_METADATA_URL/runner-registration-token") || fail "could not fetch a registration token"
    GROUP_ARG=""
    [ -n "$HANGAR_RUNNER_GROUP" ] && GROUP_ARG="--runnergroup '$HANGAR_RUNNER_GROUP'"
    in_runner_dir "./config.sh --unattended --ephemeral --replace --url '$HANGAR_REPO_URL' --token '$REG_TOKEN' --name '$HANGAR_NAME' --labels '$HANGAR_LABELS' --work _work $GROUP_ARG" \
        || fail "runner configuration failed"
    run_runner "./run.sh"
fi
log "runner exited with status $RUNNER_RC"
if [ -e "$RUNNER_STATE.connected" ]; then
    callback terminated "runner exited with status $RUNNER_RC"
else
    callback failed "runner exited with status $RUNNER_RC before it listened for jobs"
fi
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

    fn script_with(b: &BootstrapParams, tool: Option<&RunnerTool>) -> String {
        let name = InstanceName::parse("hangar-abc").unwrap();
        let labels = Labels::parse_list("self-hosted,linux").unwrap();
        render_script(&UserdataParams {
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
        let s = script_with(&bootstrap(), None);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("HANGAR_METADATA_URL='http://10.0.2.2:9997/api/v1/metadata'\n"));
        assert!(s.contains(r"HANGAR_TOKEN='tok'\''en'"));
        assert!(s.contains("HANGAR_JIT='1'"));
        assert!(s.contains("$HANGAR_METADATA_URL/jit-config"));
        assert!(!s.contains("http_proxy"));
    }

    /// The keys cloud-init's schema documents for what [`render`] emits
    /// (cloud-init's module reference: `write_files`, `runcmd`).
    const WRITE_FILES_KEYS: &[&str] = &[
        "path",
        "content",
        "source",
        "owner",
        "permissions",
        "encoding",
        "append",
        "defer",
    ];

    /// One `write_files` entry as read back: path, permissions, content.
    type WrittenFile = (String, String, String);

    /// Reads the cloud-config [`render`] emits back, checking it against
    /// cloud-init's schema for the keys it uses: the `#cloud-config` header,
    /// only the top-level keys `write_files` and `runcmd`, each file entry
    /// with documented keys, a `path`, `permissions` as a quoted octal
    /// string and `content` as a literal block, and `runcmd` items as lists
    /// of strings.
    fn parse_cloud_config(doc: &str) -> (Vec<WrittenFile>, Vec<Vec<String>>) {
        let mut lines = doc.lines().peekable();
        assert_eq!(
            lines.next(),
            Some("#cloud-config"),
            "the header cloud-init looks for"
        );
        let (mut files, mut runcmd) = (Vec::new(), Vec::new());
        while let Some(line) = lines.next() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            match line {
                "write_files:" => {
                    while let Some(entry) = lines.next_if(|l| l.starts_with("  - ")) {
                        let mut keys = vec![entry["  - ".len()..].to_owned()];
                        let mut content = None;
                        while let Some(l) =
                            lines.next_if(|l| l.starts_with("    ") && !l.starts_with("     "))
                        {
                            if l == "    content: |" {
                                let mut body = String::new();
                                while let Some(c) =
                                    lines.next_if(|c| c.is_empty() || c.starts_with(CONTENT_INDENT))
                                {
                                    body.push_str(c.strip_prefix(CONTENT_INDENT).unwrap_or(""));
                                    body.push('\n');
                                }
                                content = Some(body);
                            } else {
                                keys.push(l.trim_start().to_owned());
                            }
                        }
                        let (mut path, mut perms) = (None, None);
                        for kv in keys {
                            let (k, v) = kv.split_once(": ").expect("key: value");
                            assert!(WRITE_FILES_KEYS.contains(&k), "unknown write_files key {k}");
                            match k {
                                "path" => path = Some(v.to_owned()),
                                "permissions" => {
                                    let octal = v
                                        .strip_prefix('\'')
                                        .and_then(|v| v.strip_suffix('\''))
                                        .expect("permissions is a quoted string");
                                    assert!(
                                        octal.len() == 4
                                            && octal.chars().all(|c| ('0'..='7').contains(&c))
                                    );
                                    perms = Some(octal.to_owned());
                                }
                                "owner" => assert!(v.contains(':')),
                                _ => {}
                            }
                        }
                        files.push((
                            path.expect("path is required"),
                            perms.unwrap_or_default(),
                            content.expect("content"),
                        ));
                    }
                }
                "runcmd:" => {
                    while let Some(item) = lines.next_if(|l| l.starts_with("  - ")) {
                        let list = item["  - ".len()..]
                            .strip_prefix('[')
                            .and_then(|i| i.strip_suffix(']'))
                            .expect("a runcmd item is a list");
                        runcmd.push(list.split(", ").map(str::to_owned).collect());
                    }
                }
                other => panic!("unexpected top-level line {other:?}"),
            }
        }
        (files, runcmd)
    }

    #[test]
    fn userdata_is_cloud_config_that_runs_the_script() {
        let mut b = bootstrap();
        b.ca_cert_bundle =
            Some("-----BEGIN CERTIFICATE-----\nMIIB: x\n\n-----END CERTIFICATE-----".into());
        b.proxy.https_proxy = Some("http://u:p%40ss@proxy:3128".into());
        let doc = render_with(&b, None);
        let (files, runcmd) = parse_cloud_config(&doc);
        assert_eq!(files.len(), 1);
        let (path, perms, content) = &files[0];
        assert_eq!(path, SCRIPT_PATH);
        assert_eq!(perms, "0700");
        // The literal block gives back the script byte for byte.
        assert_eq!(content, &script_with(&b, None));
        assert_eq!(runcmd, vec![vec!["sh".to_owned(), SCRIPT_PATH.to_owned()]]);
    }

    /// cloud-init's own validator (`cargo xtask ci` installs Debian's
    /// `cloud-init`): the user-data passes `cloud-init schema`. Without
    /// cloud-init it is skipped, except under `CI`, where it fails.
    /// (`hangar_testkit::cloud_init` does the same for the tests that can
    /// use the test kit, which depends on this crate.)
    #[test]
    fn cloud_init_schema_accepts_the_userdata() {
        let have = std::process::Command::new("cloud-init")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "cloud-init is not installed but CI is set: `cargo xtask ci` installs it"
            );
            eprintln!(
                "cloud-init is not installed: `cloud-init schema` not run (the structure test above still ran)"
            );
            return;
        }
        let mut b = bootstrap();
        b.proxy.http_proxy = Some("http://proxy:3128".into());
        b.ca_cert_bundle =
            Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----".into());
        let dir = std::env::temp_dir().join(format!("hangar-userdata-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("user-data");
        std::fs::write(&file, render_with(&b, None)).unwrap();
        let out = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&file)
            .output()
            .expect("cloud-init runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "cloud-init schema refused the user-data:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn proxy_reaches_shell_apt_docker_and_the_runner() {
        let mut b = bootstrap();
        b.proxy.http_proxy = Some("http://proxy.corp:3128".into());
        b.proxy.https_proxy = Some("http://u:p%40ss@proxy.corp:3128".into());
        b.proxy.no_proxy = Some("localhost,10.0.0.0/8".into());
        let s = script_with(&b, None);
        assert!(s.contains("export http_proxy='http://proxy.corp:3128'"));
        assert!(s.contains("export HTTP_PROXY='http://proxy.corp:3128'"));
        assert!(s.contains("export no_proxy='localhost,10.0.0.0/8'"));
        assert!(s.contains("/etc/apt/apt.conf.d/95hangar-proxy"));
        assert!(s.contains("/etc/environment"));
        // The runner's .env, both spellings, as the runner reads it.
        assert!(s.contains(
            "RUNNER_ENV='http_proxy=http://proxy.corp:3128\nHTTP_PROXY=http://proxy.corp:3128\n\
             https_proxy=http://u:p%40ss@proxy.corp:3128\nHTTPS_PROXY=http://u:p%40ss@proxy.corp:3128\n\
             no_proxy=localhost,10.0.0.0/8\nNO_PROXY=localhost,10.0.0.0/8\n'"
        ));
        assert!(s.contains(r#">> "$RUNNER_DIR/.env""#));
        // Docker's systemd drop-in, `%` escaped as systemd wants it.
        assert!(s.contains(
            "DOCKER_PROXY_DROPIN='[Service]\nEnvironment=\"HTTP_PROXY=http://proxy.corp:3128\"\n\
             Environment=\"HTTPS_PROXY=http://u:p%%40ss@proxy.corp:3128\"\n\
             Environment=\"NO_PROXY=localhost,10.0.0.0/8\"\n'"
        ));
        assert!(s.contains("/etc/systemd/system/docker.service.d/hangar-proxy.conf"));
        assert!(s.contains("systemctl try-restart docker.service"));
        // Without a proxy nothing is written.
        let plain = script_with(&bootstrap(), None);
        assert!(plain.contains("RUNNER_ENV=''\n") && plain.contains("DOCKER_PROXY_DROPIN=''\n"));
    }

    #[test]
    fn idle_waits_for_the_runner_to_listen_and_the_end_is_reported() {
        let s = script_with(&bootstrap(), None);
        let listen = s
            .find("*\"Listening for Jobs\"*)")
            .expect("watches the runner's output");
        let idle = s.find("callback idle").expect("reports idle");
        assert!(
            idle > listen,
            "idle is reported only after the runner listens"
        );
        assert_eq!(s.matches("callback idle").count(), 1);
        assert!(s.contains("callback terminated \"runner exited with status $RUNNER_RC\""));
        assert!(s.contains("before it listened for jobs"));
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
        let s = script_with(&bootstrap(), Some(&tool));
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
        let s = script_with(&b, None);
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
