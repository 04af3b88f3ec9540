#!/usr/bin/env bash
# Prepares a host to run Hangar's libvirt provider (Debian/Ubuntu with apt,
# Fedora/RHEL with dnf): installs libvirt and QEMU, starts the daemon,
# creates the storage pool that holds base images and per-instance volumes,
# makes sure the guest network exists and, where firewalld runs, lets
# guests on it reach hangard's port. Idempotent; prints what it did, the
# matching config and the guest-facing URLs to set.
#
# Usage: prepare-host.sh [--pool NAME] [--pool-dir DIR] [--network NAME|user] [--port N] [--no-install]
#   --pool      storage pool name                     (default hangar)
#   --pool-dir  its directory                         (default /var/lib/libvirt/hangar)
#   --network   libvirt network to use, or "user" for QEMU user-mode
#               networking (no bridge/dnsmasq/firewall; guests reach only
#               outbound addresses)                   (default default)
#   --port      hangard's listening port, opened to guests in firewalld's
#               libvirt zone                          (default 9997)
#   --no-install  skip apt-get/dnf (packages installed by other means)
set -euo pipefail

POOL=hangar
POOL_DIR=/var/lib/libvirt/hangar
NETWORK=default
PORT=9997
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --pool) POOL="$2"; shift 2 ;;
        --pool-dir) POOL_DIR="$2"; shift 2 ;;
        --network) NETWORK="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
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

if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    PM=apt
elif command -v dnf >/dev/null 2>&1; then
    PM=dnf
else
    PM=none
fi
have_pkg() {
    case "$PM" in
        apt) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' ;;
        dnf) rpm -q "$1" >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}
if [ "$INSTALL" = 1 ]; then
    # The ISO tool builds each instance's NoCloud seed (Hangar runs it, on
    # the Hangar host); OVMF allows `firmware = efi` pools.
    case "$PM" in
        apt)
            # libvirt-daemon-system brings the systemd units, the
            # libvirt-qemu user and AppArmor profiles.
            pkgs=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf genisoimage)
            [ "$NETWORK" = user ] || pkgs+=(dnsmasq-base)
            ;;
        dnf)
            # The modular daemons (virtqemud, virtnetworkd, …) with the
            # QEMU driver; xorriso makes the seed ISO (Fedora has no
            # genisoimage by default).
            pkgs=(libvirt-daemon-kvm libvirt-client qemu-kvm qemu-img edk2-ovmf xorriso)
            [ "$NETWORK" = user ] || pkgs+=(libvirt-daemon-config-network dnsmasq)
            ;;
        *) die "neither apt-get nor dnf found: install libvirt, QEMU and genisoimage or xorriso yourself, then rerun with --no-install" ;;
    esac
    missing=()
    for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "packages present"
    elif [ "$PM" = apt ]; then
        say "installing ${missing[*]} (apt)"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || die "apt-get failed. On Debian bookworm with qemu-utils from bookworm-backports, install
    qemu-system-x86 qemu-system-common qemu-system-data seabios from bookworm-backports too
    (see .ci/libvirt/setup.sh), then rerun with --no-install"
    else
        say "installing ${missing[*]} (dnf)"
        dnf install -y -q "${missing[@]}" \
            || die "dnf install ${missing[*]} failed (see its output above); install them by other means and rerun with --no-install"
    fi
fi

# Daemon: systemd where there is one, by hand otherwise (containers, CI).
if [ -d /run/systemd/system ]; then
    if systemctl enable --now libvirtd.service >/dev/null 2>&1; then
        say "libvirtd enabled and running"
    elif systemctl enable --now virtqemud.socket >/dev/null 2>&1; then
        # The modular daemons (Fedora's default): networks have their own.
        systemctl enable --now virtnetworkd.socket >/dev/null 2>&1 || true
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

# Guests must reach hangard (metadata and callbacks) on the network's host
# address; Fedora's firewalld puts libvirt networks in its "libvirt" zone,
# which refuses everything but DHCP and DNS.
host_ip=""
if [ "$NETWORK" = user ]; then
    host_ip=10.0.2.2
else
    host_ip="$(virsh_ net-dumpxml "$NETWORK" | sed -n "s/.*<ip address='\([0-9.]*\)'.*/\1/p" | head -n1)"
    if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
        zone=libvirt
        firewall-cmd --get-zones | tr ' ' '\n' | grep -qx libvirt || zone="$(firewall-cmd --get-default-zone)"
        if firewall-cmd --zone="$zone" --query-port="$PORT/tcp" >/dev/null 2>&1; then
            say "firewalld: port $PORT/tcp already open to guests (zone $zone)"
        else
            firewall-cmd --zone="$zone" --add-port="$PORT/tcp" --permanent >/dev/null
            firewall-cmd --zone="$zone" --add-port="$PORT/tcp" >/dev/null
            say "firewalld: opened port $PORT/tcp to guests (zone $zone, permanent)"
        fi
    fi
fi
[ -n "$host_ip" ] || host_ip=192.168.122.1

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

Two addresses: GitHub sends webhooks to server.public_url (reachable
from GitHub, e.g. https://hangar.example.com), while guests fetch their
JIT config and report status on the network's host address. hangard
must listen there too (server.bind = "0.0.0.0:$PORT", or behind the
proxy on $host_ip:$PORT); then, once hangard runs:

  hangar controller update \\
      --metadata-url http://$host_ip:$PORT/api/v1/metadata \\
      --callback-url http://$host_ip:$PORT/api/v1/callbacks/status

Next: deploy/libvirt/build-base-image.sh --pool $POOL
CONF
