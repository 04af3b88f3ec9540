//! Shared by the integration tests: throwaway `#!/bin/sh` providers in temp
//! dirs, and waiting on conditions instead of sleeping.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar_provider_external::{ExternalProvider, ExternalProviderConfig, InterfaceVersion};

/// A script provider and the directory it records into.
pub struct Script {
    pub dir: tempfile::TempDir,
    pub executable: PathBuf,
    pub config_file: PathBuf,
}

impl Script {
    /// Writes `body` as a `#!/bin/sh` provider; `$D` in it is the temp dir
    /// (the provider's environment is cleared, so it is baked in).
    pub fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let executable = dir.path().join("provider.sh");
        let config_file = dir.path().join("provider.toml");
        std::fs::write(&config_file, "# opaque to hangar\n").expect("write config");
        let script = format!(
            "#!/bin/sh\nD='{}'\n{}\n",
            dir.path().display(),
            body.trim_start()
        );
        std::fs::write(&executable, script).expect("write script");
        std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Self {
            dir,
            executable,
            config_file,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self, version: InterfaceVersion) -> ExternalProviderConfig {
        let mut cfg = ExternalProviderConfig::new(&self.executable, &self.config_file);
        cfg.interface_version = version;
        cfg.call_timeout_secs = 20;
        cfg
    }

    pub fn provider(&self, version: InterfaceVersion) -> ExternalProvider {
        ExternalProvider::with_environment(self.config(version), test_env())
            .expect("provider config is valid")
    }

    /// The environment the script recorded with `env > "$D/env.<command>"`.
    pub fn recorded_env(&self, command: &str) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(self.path(&format!("env.{command}")))
            .unwrap_or_else(|e| panic!("script did not record env for {command}: {e}"));
        parse_env(&text)
    }
}

pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What `sh` adds to any environment by itself.
pub const SHELL_VARS: &[&str] = &["PWD", "SHLVL", "_", "OLDPWD"];

/// A small, fixed stand-in for hangard's environment.
pub fn test_env() -> Vec<(String, String)> {
    vec![("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())]
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet,
/// which containers without an init are prone to).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// `<target dir>/debug/hangar-fake-provider`, next to this test's `deps/`.
pub fn fake_provider_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir: &Path = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join("hangar-fake-provider");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p hangar-testkit --bins` (same CARGO_TARGET_DIR)",
        bin.display()
    );
    bin
}
