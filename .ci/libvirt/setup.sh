#!/usr/bin/env bash
# Prepares this machine for Hangar's real-libvirt tests: installs libvirt and
# QEMU when missing, starts libvirtd by hand (CI machines have no systemd),
# and creates the storage pool and empty base volume the tests use.
#
# Idempotent: every step checks first and prints what it did or found.
# Usable outside CI too (the end-to-end tests and `deploy/libvirt` reuse it).
#
# Environment:
#   HANGAR_CI_POOL       storage pool name          (default hangar-ci)
#   HANGAR_CI_POOL_DIR   its directory              (default /var/lib/libvirt/hangar-ci)
#   HANGAR_CI_BASE       empty base volume's name   (default hangar-ci-base.qcow2)
set -euo pipefail

POOL="${HANGAR_CI_POOL:-hangar-ci}"
POOL_DIR="${HANGAR_CI_POOL_DIR:-/var/lib/libvirt/hangar-ci}"
BASE="${HANGAR_CI_BASE:-hangar-ci-base.qcow2}"
URI="qemu:///system"

say() { echo "libvirt-setup: $*"; }
die() { echo "libvirt-setup: ERROR: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available)"
    SUDO="sudo"
fi

# --- packages ---------------------------------------------------------------
# Debian bookworm: the image may carry qemu-utils from bookworm-backports,
# which Breaks bookworm's qemu-system-common; then the whole QEMU system set
# must come from backports too (but libvirt stays on bookworm, which avoids a
# systemd upgrade).
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

PKGS=(libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients pkg-config
      qemu-utils busybox-static genisoimage xorriso cpio)
QEMU_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
missing=()
for p in "${PKGS[@]}" "${QEMU_PKGS[@]}"; do have_pkg "$p" || missing+=("$p"); done

if [ "${#missing[@]}" -eq 0 ]; then
    say "packages: all present"
else
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get; install libvirt + QEMU yourself"
    # shellcheck source=/dev/null
    . /etc/os-release
    use_bpo=0
    if [ "${VERSION_CODENAME:-}" = bookworm ] \
        && dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q 'bpo12'; then
        use_bpo=1
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            say "adding the bookworm-backports apt source (qemu-utils comes from there)"
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
        fi
    fi
    say "installing: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    args=()
    for p in "${missing[@]}"; do
        if [ "$use_bpo" = 1 ] && [[ " ${QEMU_PKGS[*]} " == *" $p "* ]]; then
            args+=("$p/bookworm-backports")
        else
            args+=("$p")
        fi
    done
    if [ "$use_bpo" = 1 ]; then
        # Pull the whole QEMU set from backports together, even the parts
        # already installed, so apt can satisfy qemu-utils' Breaks.
        for p in "${QEMU_PKGS[@]}"; do
            [[ " ${args[*]} " == *" $p/bookworm-backports "* ]] || args+=("$p/bookworm-backports")
        done
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${args[@]}"
fi

# --- daemon prerequisites ---------------------------------------------------
for d in /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/lib/libvirt/images /var/cache/libvirt/qemu /run/libvirt; do
    [ -d "$d" ] || { $SUDO mkdir -p "$d"; say "created $d"; }
done
# libvirtd refuses to start when its configured qemu user does not exist,
# even though qemu.conf below runs guests as root.
getent group libvirt-qemu >/dev/null || { $SUDO groupadd -r libvirt-qemu; say "created group libvirt-qemu"; }
getent passwd libvirt-qemu >/dev/null || {
    $SUDO useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
    say "created user libvirt-qemu"
}

QEMU_CONF=/etc/libvirt/qemu.conf
MARK="# written by hangar .ci/libvirt/setup.sh"
if ! grep -qs "^$MARK" "$QEMU_CONF"; then
    [ -f "$QEMU_CONF" ] && [ ! -f "$QEMU_CONF.hangar-orig" ] && $SUDO cp "$QEMU_CONF" "$QEMU_CONF.hangar-orig"
    # Root without a security driver: containers and CI VMs have no
    # AppArmor/SELinux and files in the cache dir belong to root.
    printf '%s\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n' "$MARK" | $SUDO tee "$QEMU_CONF" >/dev/null
    say "wrote $QEMU_CONF (original kept as $QEMU_CONF.hangar-orig)"
    if pgrep -x libvirtd >/dev/null; then
        say "restarting libvirtd to load $QEMU_CONF"
        $SUDO kill "$(pgrep -x libvirtd)"
        for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.2; done
    fi
else
    say "$QEMU_CONF already configured"
fi

# --- daemons ----------------------------------------------------------------
if pgrep -x virtlogd >/dev/null; then
    say "virtlogd already running (pid $(pgrep -x virtlogd))"
else
    $SUDO virtlogd -d
    say "started virtlogd"
fi
if pgrep -x libvirtd >/dev/null; then
    say "libvirtd already running (pid $(pgrep -x libvirtd))"
else
    $SUDO libvirtd -d
    say "started libvirtd"
fi
# The first connection probes QEMU's capabilities (~8 s on 2 cores).
ok=0
for _ in $(seq 60); do
    if $SUDO virsh -q -c "$URI" version >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
done
[ "$ok" = 1 ] || die "libvirtd does not answer on $URI"
say "libvirtd answers: $($SUDO virsh -c "$URI" version 2>/dev/null | grep -i 'hypervisor' | head -1)"

# --- storage pool and base volume --------------------------------------------
virsh_() { $SUDO virsh -q -c "$URI" "$@"; }
if ! virsh_ pool-info "$POOL" >/dev/null 2>&1; then
    virsh_ pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
    virsh_ pool-build "$POOL" >/dev/null
    virsh_ pool-autostart "$POOL" >/dev/null
    say "defined storage pool $POOL at $POOL_DIR"
fi
# Captured first: `grep -q` closing the pipe early would trip pipefail.
pool_info="$(virsh_ pool-info "$POOL")"
if ! grep -q 'State:.*running' <<<"$pool_info"; then
    virsh_ pool-start "$POOL" >/dev/null
    say "started storage pool $POOL"
else
    virsh_ pool-refresh "$POOL" >/dev/null
    say "storage pool $POOL is running"
fi
# The test guest boots its kernel directly and never reads its disk, so an
# empty qcow2 is a faithful base: the overlay-on-base path is still exercised.
if ! virsh_ vol-info --pool "$POOL" "$BASE" >/dev/null 2>&1; then
    virsh_ vol-create-as "$POOL" "$BASE" 1G --format qcow2 >/dev/null
    say "created base volume $BASE in $POOL"
else
    say "base volume $BASE present in $POOL"
fi
say "done (pool=$POOL base=$BASE uri=$URI)"
