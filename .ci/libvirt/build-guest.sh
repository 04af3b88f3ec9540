#!/usr/bin/env bash
# Builds Hangar's tiny test guest into a cache directory, once: a Debian
# kernel plus a busybox initramfs whose /init plays the part of cloud-init.
# It finds the NoCloud `cidata` ISO among the virtio disks, configures
# QEMU user-mode networking statically (10.0.2.15/24 via 10.0.2.2, which is
# the host's loopback), runs the boot script in `user-data` (Hangar's
# #cloud-config: the script its one `write_files` entry holds, as `runcmd`
# would; a bare script with `sh`) and powers off. A fake
# /opt/actions-runner/run.sh accepts `--jitconfig X`, prints it and the
# lines the real runner prints once connected, waits a minute as a runner
# waits for its job, and exits 0, so Hangar's real boot script runs
# unchanged.
#
# Usage: build-guest.sh <cache-dir>
# Produces: <cache-dir>/vmlinuz, <cache-dir>/initrd.img and <cache-dir>/guest.env
# (KERNEL=, INITRD=, CMDLINE= for the pool's extra_specs). A stamp holding
# this script's hash and the kernel version makes reruns instant.
set -euo pipefail

CACHE="${1:?usage: build-guest.sh <cache-dir>}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
say() { echo "build-guest: $*"; }
die() { echo "build-guest: ERROR: $*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
for p in busybox-static cpio; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        say "installing $p"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p" >/dev/null
    fi
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && file -L "$BUSYBOX" 2>/dev/null | grep -q 'dynamically' && BUSYBOX=""
if [ -z "$BUSYBOX" ] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
    die "busybox-static is not installed as /bin/busybox"
fi

# The kernel package the distribution's metapackage points at, e.g.
# linux-image-6.1.0-56-amd64.
KPKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[ -n "$KPKG" ] || die "cannot find the kernel package behind linux-image-amd64 (apt-get update?)"
SELF_HASH="$(sha256sum "$0" | cut -c1-16)"
STAMP="$SELF_HASH $KPKG"
if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP" ] \
    && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] && [ -s "$CACHE/guest.env" ]; then
    say "cached in $CACHE ($KPKG)"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
say "downloading $KPKG"
( cd "$WORK" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >/dev/null ) || die "apt-get download $KPKG failed"
dpkg-deb -x "$WORK"/linux-image-*.deb "$WORK/k"
KVER="$(basename "$(find "$WORK/k/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")"
MODDIR="$WORK/k/lib/modules/$KVER/kernel"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,etc,cidata,lib/modules,opt/actions-runner,root}
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Only `sh` must exist before /init installs the rest of the applets.
ln -s busybox "$ROOT/bin/sh"

# virtio PCI + block + net, then the ISO 9660 filesystem for the seed, in
# dependency order (busybox insmod does not resolve dependencies).
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net cdrom isofs"
for m in $MODS; do
    f="$(find "$MODDIR" -name "$m.ko*" | head -1)"
    [ -n "$f" ] || die "module $m not found in $KPKG"
    case "$f" in
        *.ko.xz) xz -dc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *) cp "$f" "$ROOT/lib/modules/$m.ko" ;;
    esac
done
echo "$MODS" > "$ROOT/lib/modules/order"

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"

cat > "$ROOT/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
echo "hangar-guest: kernel $(uname -r) up"

# NoCloud: the seed is whichever disk holds an ISO 9660 with user-data.
found=""
for _ in $(seq 100); do
    for d in /dev/vd? /dev/sr?; do
        [ -b "$d" ] || continue
        if mount -t iso9660 -o ro "$d" /cidata 2>/dev/null; then
            if [ -f /cidata/user-data ]; then found="$d"; break; fi
            umount /cidata
        fi
    done
    [ -n "$found" ] && break
    sleep 0.1
done
if [ -z "$found" ]; then
    echo "hangar-guest: no cidata seed found"
    poweroff -f
fi
echo "hangar-guest: seed on $found"

# QEMU user-mode networking: 10.0.2.2 is the host (its loopback).
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
    || echo "hangar-guest: no network"
echo "hangar-guest: running user-data"
if [ "$(head -n 1 /cidata/user-data)" = "#cloud-config" ]; then
    # The literal block under `content: |`, unindented, up to the next
    # top-level key.
    awk '/^    content: [|]$/ { on = 1; next }
         on && /^[^ ]/ { on = 0 }
         on { sub(/^      /, ""); print }' /cidata/user-data > /tmp/bootstrap.sh
    sh /tmp/bootstrap.sh
else
    sh /cidata/user-data
fi
echo "hangar-guest: user-data exited with $?"
sync
poweroff -f
INIT
chmod 755 "$ROOT/init"

cat > "$ROOT/opt/actions-runner/run.sh" <<'RUN'
#!/bin/sh
# Stand-in for the GitHub runner: proves it was started with a JIT config.
if [ "${1:-}" != "--jitconfig" ] || [ -z "${2:-}" ]; then
    echo "fake-runner: usage: run.sh --jitconfig <config>" >&2
    exit 2
fi
echo "fake-runner: jitconfig=$2"
echo "√ Connected to GitHub"
echo "$(date -u '+%Y-%m-%d %H:%M:%SZ'): Listening for Jobs"
# A real one-job runner exits only after its job, and the boot script
# reports that exit (which retires the instance). The test plays GitHub's
# side of the job meanwhile; the VM is normally destroyed before this ends.
sleep 60
echo "fake-runner: job done"
exit 0
RUN
chmod 755 "$ROOT/opt/actions-runner/run.sh"

( cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -9 ) > "$CACHE/initrd.img.tmp"
cp "$WORK/k/boot/vmlinuz-$KVER" "$CACHE/vmlinuz.tmp"
mv "$CACHE/initrd.img.tmp" "$CACHE/initrd.img"
mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
cat > "$CACHE/guest.env" <<ENV
KERNEL=$CACHE/vmlinuz
INITRD=$CACHE/initrd.img
CMDLINE=console=ttyS0 panic=-1 quiet
KVER=$KVER
ENV
echo "$STAMP" > "$CACHE/stamp"
say "built $CACHE (kernel $KVER, initrd $(du -k "$CACHE/initrd.img" | cut -f1) KiB)"
