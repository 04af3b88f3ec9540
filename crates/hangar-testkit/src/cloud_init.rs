//! `cloud-init schema`, the standard validator of user-data, run on what
//! Hangar renders. `cargo xtask ci` installs Debian's `cloud-init`; under
//! `CI` a machine without it fails the test instead of skipping the check.

use std::process::Command;

/// Whether this run is CI's (`CI` set, and not to `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `cloud-init` can be run here. Under CI its absence panics: the
/// check it makes must not silently go missing there.
pub fn available() -> bool {
    let have = Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            !in_ci(),
            "cloud-init is not installed but CI is set: `cargo xtask ci` installs it (apt-get install cloud-init)"
        );
        eprintln!("cloud-init is not installed: `cloud-init schema` not run");
    }
    have
}

/// Runs `cloud-init schema --config-file` on `userdata`: `Ok(false)` when
/// cloud-init is not installed (outside CI), `Ok(true)` when it accepts
/// the document, `Err` with its report when it refuses it.
pub fn schema_check(userdata: &str) -> Result<bool, String> {
    if !available() {
        return Ok(false);
    }
    let dir = std::env::temp_dir().join(format!("hangar-cloud-init-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join("user-data");
    let written = std::fs::write(&file, userdata);
    let out = written
        .map_err(|e| format!("{}: {e}", file.display()))
        .and_then(|()| {
            Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&file)
                .output()
                .map_err(|e| format!("cloud-init schema: {e}"))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "cloud-init schema refused the user-data:\n{}{}\n--- user-data ---\n{userdata}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check can fail: a bare shell script (what Hangar's user-data
    /// once was) and a wrongly typed key are refused, with cloud-init's
    /// reason; a small valid document passes.
    #[test]
    fn refuses_what_cloud_init_refuses() {
        let Err(e) = schema_check("#!/bin/sh\necho hi\n") else {
            assert!(!available(), "a shell script passed the schema check");
            return;
        };
        assert!(e.contains("#cloud-config"), "{e}");
        let e = schema_check("#cloud-config\nruncmd: 5\n").unwrap_err();
        assert!(e.contains("runcmd"), "{e}");
        assert_eq!(
            schema_check("#cloud-config\nruncmd:\n  - [sh, -c, 'true']\n"),
            Ok(true)
        );
    }
}
