#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host to run Hangar's libvirt provider: installs
# libvirt and QEMU, starts the daemon, creates the storage pool that holds
# base images and per-instance volumes, and makes sure the guest network
# exists. Idempotent; prints what it did and the matching config.
#
# Usage: prepare-host.sh [--pool NAME] [--pool-dir DIR] [--network NAME|user] [--no-install]
#   --pool      storage pool name                     (default hangar)
#   --pool-dir  its directory                         (default /var/lib/libvirt/hangar)
#   --network   libvirt network to use, or "user" for QEMU user-mode
#               networking (no bridge/dnsmasq/firewall; guests reach only
#               outbound addresses)                   (default default)
#   --no-install  skip apt-get (packages installed by other means)
set -euo pipefail

POOL=hangar
POOL_DIR=/var/lib/libvirt/hangar
NETWORK=default
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --pool) POOL="$2"; shift 2 ;;
        --pool-dir) POOL_DIR="$2"; shift 2 ;;
        --network) NETWORK="$2"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "prepare-host: $*"; }
die() { echo "prepare-host: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"
URI=qemu:///system
virsh_() { virsh -q -c "$URI" "$@"; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if [ "$INSTALL" = 1 ]; then
    # libvirt-daemon-system brings the systemd units, the libvirt-qemu user
    # and AppArmor profiles; ovmf allows `firmware = efi` pools; the ISO tool
    # builds each instance's NoCloud seed (Hangar runs it, on the Hangar host).
    pkgs=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf genisoimage)
    [ "$NETWORK" = user ] || pkgs+=(dnsmasq-base)
    missing=()
    for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || die "apt-get failed. On Debian bookworm with qemu-utils from bookworm-backports, install
    qemu-system-x86 qemu-system-common qemu-system-data seabios from bookworm-backports too
    (see .ci/libvirt/setup.sh), then rerun with --no-install"
    else
        say "packages present"
    fi
fi

# Daemon: systemd where there is one, by hand otherwise (containers, CI).
if [ -d /run/systemd/system ]; then
    if systemctl enable --now libvirtd.service >/dev/null 2>&1; then
        say "libvirtd enabled and running"
    elif systemctl enable --now virtqemud.socket >/dev/null 2>&1; then
        say "virtqemud (modular daemons) enabled"
    else
        die "neither libvirtd nor virtqemud starts with systemctl"
    fi
elif ! pgrep -x libvirtd >/dev/null && ! pgrep -x virtqemud >/dev/null; then
    mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu /run/libvirt
    pgrep -x virtlogd >/dev/null || virtlogd -d
    libvirtd -d
    say "started virtlogd and libvirtd without systemd (restart them after a reboot)"
fi
for _ in $(seq 60); do virsh_ version >/dev/null 2>&1 && break; sleep 1; done
virsh_ version >/dev/null 2>&1 || die "libvirt does not answer on $URI"

# Storage pool.
if ! virsh_ pool-info "$POOL" >/dev/null 2>&1; then
    virsh_ pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
    virsh_ pool-build "$POOL" >/dev/null
    virsh_ pool-autostart "$POOL" >/dev/null
    say "defined storage pool $POOL at $POOL_DIR"
fi
info="$(virsh_ pool-info "$POOL")"
if ! grep -q 'State:.*running' <<<"$info"; then
    virsh_ pool-start "$POOL" >/dev/null
    say "started storage pool $POOL"
else
    say "storage pool $POOL is running"
fi

# Network.
if [ "$NETWORK" = user ]; then
    say "guests use QEMU user-mode networking (network = \"user\")"
    net_setting="user"
else
    net_setting="network:$NETWORK"
    if ! virsh_ net-info "$NETWORK" >/dev/null 2>&1; then
        if [ "$NETWORK" = default ] && [ -f /usr/share/libvirt/networks/default.xml ]; then
            virsh_ net-define /usr/share/libvirt/networks/default.xml >/dev/null
            say "defined libvirt network default (NAT, 192.168.122.0/24)"
        else
            die "libvirt network $NETWORK does not exist; define it or use --network user"
        fi
    fi
    virsh_ net-autostart "$NETWORK" >/dev/null
    ninfo="$(virsh_ net-info "$NETWORK")"
    if ! grep -q 'Active:.*yes' <<<"$ninfo"; then
        virsh_ net-start "$NETWORK" >/dev/null || die "cannot start network $NETWORK (dnsmasq and a firewall backend are needed), or use --network user"
        say "started network $NETWORK"
    else
        say "network $NETWORK is active"
    fi
fi

# KVM: Hangar's default domain type. Without it guests still run under
# TCG emulation, only much slower.
domain_type=kvm
if [ ! -e /dev/kvm ] || ! grep -qE 'vmx|svm' /proc/cpuinfo; then
    domain_type=qemu
    say "no usable KVM (no /dev/kvm or no vmx/svm CPU flag): use domain_type = \"qemu\""
fi

cat <<CONF

prepare-host: done. In hangard's config:

[[provider]]
name = "libvirt"
kind = "libvirt"
[provider.libvirt]
uri = "$URI"
storage_pool = "$POOL"
network = "$net_setting"
domain_type = "$domain_type"

Next: deploy/libvirt/build-base-image.sh --pool $POOL
CONF
