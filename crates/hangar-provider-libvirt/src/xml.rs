//! The XML libvirt is spoken to in (domains, volumes, Hangar's metadata
//! element), built and read by pure functions so every shape is unit-tested
//! without a hypervisor.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hangar_core::{ControllerId, PoolId};

use crate::config::{DomainType, Flavor, NetworkSpec};
use crate::specs::{Boot, CpuMode, Firmware};

/// Namespace of Hangar's element in a domain's `<metadata>`. Domains without
/// it are not Hangar's and are never touched.
pub const METADATA_NS: &str = "https://hangar.dev/xmlns/libvirt/instance/1";
/// The prefix written into the domain XML (readers must not rely on it).
pub const METADATA_PREFIX: &str = "hangar";

/// Names of the volumes made for an instance: derived from the instance
/// name alone, so delete finds them even when the domain is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNames {
    pub root: String,
    pub seed: String,
    pub data: String,
}

impl VolumeNames {
    pub fn for_instance(name: &str) -> Self {
        Self {
            root: format!("{name}.qcow2"),
            seed: format!("{name}-seed.iso"),
            data: format!("{name}-data.qcow2"),
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.root, &self.seed, &self.data]
    }
}

/// Everything a domain definition is made from.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    pub name: String,
    pub controller_id: ControllerId,
    pub pool_id: PoolId,
    pub domain_type: DomainType,
    /// libvirt's `arch` (x86_64, aarch64, armv7l).
    pub arch: &'static str,
    pub flavor: Flavor,
    pub machine: String,
    pub cpu_mode: Option<CpuMode>,
    pub firmware: Firmware,
    pub boot: Boot,
    pub storage_pool: String,
    pub volumes: VolumeNames,
    /// Size of the empty data disk, when the pool asks for one.
    pub data_disk_gib: Option<u64>,
    pub network: NetworkSpec,
    pub console_log: Option<PathBuf>,
}

/// Escapes text and attribute values (both quote kinds).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn path_str(p: &Path) -> String {
    escape(&p.to_string_lossy())
}

fn volume_disk(out: &mut String, pool: &str, volume: &str, format: &str, dev: &str, ro: bool) {
    let _ = writeln!(
        out,
        "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='{format}'/>\n      <source pool='{}' volume='{}'/>\n      <target dev='{dev}' bus='virtio'/>{}\n    </disk>",
        escape(pool),
        escape(volume),
        if ro { "\n      <readonly/>" } else { "" }
    );
}

impl DomainPlan {
    /// The domain definition. Disks refer to volumes by pool and name, so
    /// the domain can be defined before its volumes exist: whatever a crash
    /// leaves behind is reachable from a domain carrying Hangar's metadata.
    pub fn domain_xml(&self) -> String {
        let mut x = String::with_capacity(2048);
        let _ = writeln!(x, "<domain type='{}'>", self.domain_type.as_str());
        let _ = writeln!(x, "  <name>{}</name>", escape(&self.name));
        let _ = writeln!(
            x,
            "  <metadata>\n    <{p}:instance xmlns:{p}=\"{ns}\">\n      <{p}:controller-id>{c}</{p}:controller-id>\n      <{p}:pool-id>{pool}</{p}:pool-id>\n      <{p}:name>{n}</{p}:name>\n    </{p}:instance>\n  </metadata>",
            p = METADATA_PREFIX,
            ns = METADATA_NS,
            c = self.controller_id,
            pool = self.pool_id,
            n = escape(&self.name),
        );
        let _ = writeln!(
            x,
            "  <memory unit='MiB'>{}</memory>",
            self.flavor.memory_mib
        );
        let _ = writeln!(x, "  <vcpu>{}</vcpu>", self.flavor.vcpus);
        let firmware = match self.firmware {
            Firmware::Efi => " firmware='efi'",
            Firmware::Bios => "",
        };
        let _ = writeln!(
            x,
            "  <os{firmware}>\n    <type arch='{}' machine='{}'>hvm</type>",
            self.arch,
            escape(&self.machine)
        );
        match &self.boot {
            Boot::Disk => x.push_str("    <boot dev='hd'/>\n"),
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                let _ = writeln!(x, "    <kernel>{}</kernel>", path_str(kernel));
                if let Some(i) = initrd {
                    let _ = writeln!(x, "    <initrd>{}</initrd>", path_str(i));
                }
                if let Some(c) = cmdline {
                    let _ = writeln!(x, "    <cmdline>{}</cmdline>", escape(c));
                }
            }
        }
        x.push_str("  </os>\n");
        // libvirt 9 with QEMU >= 10 passes the removed `-no-acpi` without it.
        x.push_str("  <features>\n    <acpi/>\n");
        if self.arch == "x86_64" {
            x.push_str("    <apic/>\n");
        }
        x.push_str("  </features>\n");
        if let Some(mode) = self.cpu_mode {
            let _ = writeln!(x, "  <cpu mode='{}'/>", mode.as_str());
        }
        x.push_str("  <clock offset='utc'/>\n");
        // A one-job VM never comes back: power-off, reboot and crash all end
        // it, and the scheduler notices it stopped (this also stops panic
        // reboot loops from burning CPU).
        x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n");
        x.push_str("  <devices>\n");
        volume_disk(
            &mut x,
            &self.storage_pool,
            &self.volumes.root,
            "qcow2",
            "vda",
            false,
        );
        let seed_dev = if self.data_disk_gib.is_some() {
            volume_disk(
                &mut x,
                &self.storage_pool,
                &self.volumes.data,
                "qcow2",
                "vdb",
                false,
            );
            "vdc"
        } else {
            "vdb"
        };
        // The NoCloud seed as a read-only virtio disk: cloud-init finds it by
        // its `cidata` label, and it needs no IDE/SATA controller.
        volume_disk(
            &mut x,
            &self.storage_pool,
            &self.volumes.seed,
            "raw",
            seed_dev,
            true,
        );
        match &self.network {
            NetworkSpec::Network(n) => {
                let _ = writeln!(
                    x,
                    "    <interface type='network'>\n      <source network='{}'/>\n      <model type='virtio'/>\n    </interface>",
                    escape(n)
                );
            }
            NetworkSpec::Bridge(b) => {
                let _ = writeln!(
                    x,
                    "    <interface type='bridge'>\n      <source bridge='{}'/>\n      <model type='virtio'/>\n    </interface>",
                    escape(b)
                );
            }
            NetworkSpec::User => x.push_str(
                "    <interface type='user'>\n      <model type='virtio'/>\n    </interface>\n",
            ),
        }
        match &self.console_log {
            Some(path) => {
                let _ = writeln!(
                    x,
                    "    <serial type='file'>\n      <source path='{}'/>\n    </serial>",
                    path_str(path)
                );
            }
            None => x.push_str("    <serial type='pty'/>\n    <console type='pty'/>\n"),
        }
        x.push_str("    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n");
        x.push_str("    <memballoon model='none'/>\n");
        x.push_str("  </devices>\n</domain>\n");
        x
    }
}

/// A qcow2 overlay whose reads fall through to `backing_path` (no copy).
pub fn overlay_volume_xml(
    name: &str,
    capacity_bytes: u64,
    backing_path: &str,
    backing_format: &str,
) -> String {
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity_bytes}</capacity>\n  <target>\n    <format type='qcow2'/>\n  </target>\n  <backingStore>\n    <path>{}</path>\n    <format type='{}'/>\n  </backingStore>\n</volume>\n",
        escape(name),
        escape(backing_path),
        escape(backing_format)
    )
}

/// A volume with no backing store (`raw` for the seed, `qcow2` for data).
pub fn plain_volume_xml(name: &str, capacity_bytes: u64, format: &str) -> String {
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity_bytes}</capacity>\n  <target>\n    <format type='{}'/>\n  </target>\n</volume>\n",
        escape(name),
        escape(format)
    )
}

/// The `<format type=…>` of a volume's own target (not its backing store).
pub fn volume_format(volume_xml: &str) -> Option<String> {
    let target = volume_xml.find("<target>")?;
    let rest = &volume_xml[target..];
    let end = rest.find("</target>").unwrap_or(rest.len());
    let rest = &rest[..end];
    let at = rest.find("<format type=")? + "<format type=".len();
    let quote = rest[at..].chars().next()?;
    let value = &rest[at + 1..];
    Some(unescape(&value[..value.find(quote)?]))
}

/// Hangar's metadata as read back from a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HangarMetadata {
    pub controller_id: Option<ControllerId>,
    pub pool_id: Option<PoolId>,
    pub name: Option<String>,
}

impl HangarMetadata {
    /// Parses the element libvirt returns for [`METADATA_NS`], whatever
    /// prefix (if any) it carries.
    pub fn parse(xml: &str) -> Self {
        Self {
            controller_id: element_text(xml, "controller-id").and_then(|s| s.trim().parse().ok()),
            pool_id: element_text(xml, "pool-id").and_then(|s| s.trim().parse().ok()),
            name: element_text(xml, "name").map(|s| s.trim().to_owned()),
        }
    }
}

/// Text of the first element with this local name (namespace prefix
/// ignored). Enough for the flat element Hangar writes itself.
fn element_text(xml: &str, local: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let tag_end = rest.find('>')?;
        let tag = &rest[..tag_end];
        let tag_name = tag.split_whitespace().next().unwrap_or("");
        let tag_local = tag_name.rsplit(':').next().unwrap_or("");
        if !tag.starts_with('/') && !tag.ends_with('/') && tag_local == local {
            let body = &rest[tag_end + 1..];
            let close = body.find('<')?;
            return Some(unescape(&body[..close]));
        }
        rest = &rest[tag_end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> DomainPlan {
        DomainPlan {
            name: "hangar-abc".into(),
            controller_id: ControllerId::new_random(),
            pool_id: PoolId::new_random(),
            domain_type: DomainType::Qemu,
            arch: "x86_64",
            flavor: Flavor {
                vcpus: 2,
                memory_mib: 4096,
                disk_gib: 20,
            },
            machine: "q35".into(),
            cpu_mode: None,
            firmware: Firmware::Bios,
            boot: Boot::Disk,
            storage_pool: "default".into(),
            volumes: VolumeNames::for_instance("hangar-abc"),
            data_disk_gib: None,
            network: NetworkSpec::Network("default".into()),
            console_log: None,
        }
    }

    #[test]
    fn disk_boot_domain() {
        let p = plan();
        let x = p.domain_xml();
        assert!(x.starts_with("<domain type='qemu'>\n  <name>hangar-abc</name>"));
        assert!(x.contains("<memory unit='MiB'>4096</memory>"));
        assert!(x.contains("<vcpu>2</vcpu>"));
        assert!(x.contains("<type arch='x86_64' machine='q35'>hvm</type>"));
        assert!(x.contains("<boot dev='hd'/>"));
        assert!(!x.contains("<kernel>"));
        assert!(
            x.contains("<acpi/>"),
            "libvirt 9 + QEMU 10 need ACPI spelled out"
        );
        assert!(x.contains("<on_poweroff>destroy</on_poweroff>"));
        assert!(x.contains(
            "<source pool='default' volume='hangar-abc.qcow2'/>\n      <target dev='vda'"
        ));
        assert!(x.contains("<source pool='default' volume='hangar-abc-seed.iso'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>"));
        assert!(!x.contains("-data.qcow2"));
        assert!(x.contains("<interface type='network'>\n      <source network='default'/>"));
        assert!(x.contains("<serial type='pty'/>"));
        assert!(!x.contains("<cpu"));
        assert!(!x.contains("firmware="));
    }

    #[test]
    fn metadata_round_trips_through_the_domain_xml() {
        let p = plan();
        let x = p.domain_xml();
        assert!(x.contains(&format!("xmlns:hangar=\"{METADATA_NS}\"")));
        let start = x.find("<hangar:instance").unwrap();
        let end = x.find("</hangar:instance>").unwrap();
        let md = HangarMetadata::parse(&x[start..end]);
        assert_eq!(md.controller_id, Some(p.controller_id));
        assert_eq!(md.pool_id, Some(p.pool_id));
        assert_eq!(md.name.as_deref(), Some("hangar-abc"));
    }

    #[test]
    fn metadata_as_libvirt_returns_it_without_prefix() {
        let c = ControllerId::new_random();
        let md = HangarMetadata::parse(&format!(
            "<instance>\n  <controller-id>{c}</controller-id>\n  <pool-id>not-a-uuid</pool-id>\n  <name>n1</name>\n</instance>"
        ));
        assert_eq!(md.controller_id, Some(c));
        assert_eq!(md.pool_id, None, "a malformed id reads as absent");
        assert_eq!(md.name.as_deref(), Some("n1"));
    }

    #[test]
    fn kernel_boot_user_net_console_log_extra_disk() {
        let mut p = plan();
        p.domain_type = DomainType::Kvm;
        p.boot = Boot::Kernel {
            kernel: "/srv/k/vmlinuz".into(),
            initrd: Some("/srv/k/initrd.img".into()),
            cmdline: Some("console=ttyS0 x=<'&'>".into()),
        };
        p.network = NetworkSpec::User;
        p.console_log = Some("/var/log/c/hangar-abc.log".into());
        p.data_disk_gib = Some(10);
        p.cpu_mode = Some(CpuMode::HostPassthrough);
        p.firmware = Firmware::Efi;
        let x = p.domain_xml();
        assert!(x.starts_with("<domain type='kvm'>"));
        assert!(x.contains("<os firmware='efi'>"));
        assert!(
            x.contains("<kernel>/srv/k/vmlinuz</kernel>\n    <initrd>/srv/k/initrd.img</initrd>")
        );
        assert!(x.contains("<cmdline>console=ttyS0 x=&lt;&apos;&amp;&apos;&gt;</cmdline>"));
        assert!(!x.contains("<boot dev"));
        assert!(x.contains("<interface type='user'>"));
        assert!(
            x.contains("<serial type='file'>\n      <source path='/var/log/c/hangar-abc.log'/>")
        );
        assert!(x.contains("volume='hangar-abc-data.qcow2'/>\n      <target dev='vdb'"));
        assert!(x.contains("volume='hangar-abc-seed.iso'/>\n      <target dev='vdc'"));
        assert!(x.contains("<cpu mode='host-passthrough'/>"));
    }

    #[test]
    fn arm_guests_get_no_x86_features() {
        let mut p = plan();
        p.arch = "aarch64";
        p.machine = "virt".into();
        let x = p.domain_xml();
        assert!(x.contains("<type arch='aarch64' machine='virt'>hvm</type>"));
        assert!(x.contains("<acpi/>") && !x.contains("<apic/>"));
    }

    #[test]
    fn bridge_network() {
        let mut p = plan();
        p.network = NetworkSpec::Bridge("br0".into());
        assert!(
            p.domain_xml()
                .contains("<interface type='bridge'>\n      <source bridge='br0'/>")
        );
    }

    #[test]
    fn volumes() {
        let o = overlay_volume_xml("a.qcow2", 1 << 30, "/pool/base & co.qcow2", "qcow2");
        assert!(o.contains("<name>a.qcow2</name>"));
        assert!(o.contains("<capacity unit='bytes'>1073741824</capacity>"));
        assert!(o.contains(
            "<backingStore>\n    <path>/pool/base &amp; co.qcow2</path>\n    <format type='qcow2'/>"
        ));
        assert_eq!(volume_format(&o).as_deref(), Some("qcow2"));
        let s = plain_volume_xml("a-seed.iso", 374_784, "raw");
        assert!(!s.contains("backingStore"));
        assert_eq!(volume_format(&s).as_deref(), Some("raw"));
        assert_eq!(
            VolumeNames::for_instance("x").all(),
            ["x.qcow2", "x-seed.iso", "x-data.qcow2"]
        );
    }

    #[test]
    fn format_of_a_volume_libvirt_describes() {
        let described = "<volume type='file'>\n  <name>base</name>\n  <target>\n    <path>/p/base</path>\n    <format type=\"raw\"/>\n  </target>\n</volume>";
        assert_eq!(volume_format(described).as_deref(), Some("raw"));
        assert_eq!(volume_format("<volume/>"), None);
    }
}
