//! The NoCloud seed: an ISO 9660 image labelled `cidata` holding
//! `user-data` (Hangar's boot script), `meta-data` and `network-config`.
//! cloud-init reads it on a real image; the test guest's `/init` reads it on
//! the busybox one. Built with whichever ISO tool the host has.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The seed's files.
#[derive(Clone)]
pub struct SeedFiles {
    /// Carries the instance token: never logged, written 0600.
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl std::fmt::Debug for SeedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedFiles")
            .field(
                "user_data",
                &format_args!("<{} bytes>", self.user_data.len()),
            )
            .field("meta_data", &self.meta_data)
            .field("network_config", &self.network_config)
            .finish()
    }
}

impl SeedFiles {
    /// The seed for one instance. Networking is DHCP on every Ethernet NIC:
    /// libvirt's networks and QEMU user mode both serve DHCP.
    pub fn for_instance(name: &str, user_data: &str) -> Self {
        Self {
            user_data: user_data.to_owned(),
            meta_data: format!("instance-id: {name}\nlocal-hostname: {name}\n"),
            network_config: "version: 2\nethernets:\n  all-en:\n    match:\n      name: \"e*\"\n    dhcp4: true\n".to_owned(),
        }
    }
}

/// The ISO tools Hangar can drive, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoTool {
    Genisoimage,
    Xorriso,
    Mkisofs,
    CloudLocalds,
}

impl IsoTool {
    pub const ALL: [IsoTool; 4] = [
        IsoTool::Genisoimage,
        IsoTool::Xorriso,
        IsoTool::Mkisofs,
        IsoTool::CloudLocalds,
    ];

    pub fn program(self) -> &'static str {
        match self {
            IsoTool::Genisoimage => "genisoimage",
            IsoTool::Xorriso => "xorriso",
            IsoTool::Mkisofs => "mkisofs",
            IsoTool::CloudLocalds => "cloud-localds",
        }
    }

    /// The first tool found on `PATH`.
    pub fn detect() -> Result<(IsoTool, PathBuf), SeedError> {
        IsoTool::ALL
            .into_iter()
            .find_map(|t| find_in_path(t.program()).map(|p| (t, p)))
            .ok_or(SeedError::NoTool)
    }

    fn command(self, program: &Path, dir: &Path, out: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir);
        let files = ["user-data", "meta-data", "network-config"];
        match self {
            IsoTool::Genisoimage | IsoTool::Mkisofs => {
                cmd.args(["-quiet", "-output"])
                    .arg(out)
                    .args(["-volid", "cidata", "-joliet", "-rock"])
                    .args(files);
            }
            IsoTool::Xorriso => {
                cmd.args(["-as", "mkisofs", "-quiet", "-o"])
                    .arg(out)
                    .args(["-V", "cidata", "-J", "-R"])
                    .args(files);
            }
            IsoTool::CloudLocalds => {
                cmd.arg("--network-config=network-config")
                    .arg(out)
                    .args(["user-data", "meta-data"]);
            }
        }
        cmd
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "no ISO tool found for the NoCloud seed: install genisoimage, xorriso or cloud-image-utils"
    )]
    NoTool,
    #[error("building the NoCloud seed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{tool} failed building the NoCloud seed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Builds the ISO with `tool` and returns its bytes. Blocking.
pub fn build_iso(files: &SeedFiles, tool: IsoTool, program: &Path) -> Result<Vec<u8>, SeedError> {
    let dir = tempfile::Builder::new().prefix("hangar-seed-").tempdir()?;
    for (name, body) in [
        ("user-data", &files.user_data),
        ("meta-data", &files.meta_data),
        ("network-config", &files.network_config),
    ] {
        write_private(&dir.path().join(name), body.as_bytes())?;
    }
    let out = dir.path().join("seed.iso");
    let output = tool.command(program, dir.path(), &out).output()?;
    if !output.status.success() {
        return Err(SeedError::Tool {
            tool: tool.program(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(std::fs::read(&out)?)
}

fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body)
}

/// The volume label of an ISO 9660 image (primary volume descriptor).
pub fn iso_label(iso: &[u8]) -> Option<String> {
    // Sector 16 holds the primary volume descriptor: type 1, "CD001", and
    // the 32-byte volume identifier at offset 40.
    let pvd = iso.get(16 * 2048..16 * 2048 + 72)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn seed_files_describe_the_instance() {
        let f = SeedFiles::for_instance("hangar-x1", "#!/bin/sh\necho hi\n");
        assert_eq!(
            f.meta_data,
            "instance-id: hangar-x1\nlocal-hostname: hangar-x1\n"
        );
        assert!(f.network_config.starts_with("version: 2\n"));
        assert!(f.network_config.contains("dhcp4: true"));
        assert!(
            !format!("{f:?}").contains("echo hi"),
            "Debug hides user-data"
        );
    }

    #[test]
    fn every_installed_tool_builds_a_cidata_iso() {
        let user_data = format!("#!/bin/sh\n# {}\necho seeded\n", "x".repeat(3000));
        let files = SeedFiles::for_instance("hangar-iso", &user_data);
        let mut built = 0;
        for tool in IsoTool::ALL {
            let Some(program) = find_in_path(tool.program()) else {
                continue;
            };
            let iso = build_iso(&files, tool, &program)
                .unwrap_or_else(|e| panic!("{}: {e}", tool.program()));
            assert_eq!(
                iso_label(&iso).map(|l| l.to_ascii_lowercase()).as_deref(),
                Some("cidata"),
                "{}: volume label",
                tool.program()
            );
            // ISO 9660 stores file contents verbatim.
            assert!(contains(&iso, user_data.as_bytes()), "{}", tool.program());
            assert!(contains(&iso, files.meta_data.as_bytes()));
            assert!(contains(&iso, files.network_config.as_bytes()));
            assert!(contains(&iso, b"user-data"), "Rock Ridge/Joliet names");
            built += 1;
        }
        assert!(
            built > 0,
            "no ISO tool installed (genisoimage is a build dependency)"
        );
        assert!(IsoTool::detect().is_ok());
    }

    #[test]
    fn non_iso_has_no_label() {
        assert_eq!(iso_label(&[0u8; 40000]), None);
        assert_eq!(iso_label(b"short"), None);
    }
}
