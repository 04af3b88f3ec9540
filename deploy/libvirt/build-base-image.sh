#!/usr/bin/env bash
# Builds a base image for Hangar's libvirt provider from an Ubuntu cloud
# image and registers it as a volume in a storage pool. The image carries:
#   - the GitHub Actions runner, unpacked in /opt/actions-runner with its
#     dependencies, owned by a `runner` user (passwordless sudo, docker group);
#   - a Go toolchain in /usr/local/go (on PATH for jobs via the runner's .path);
#   - Docker (Ubuntu's docker.io + buildx), enabled at boot;
#   - proxy settings, when given, for apt, the environment, the runner's jobs
#     and the Docker daemon.
# cloud-init is reset at the end, so each instance boots fresh from its own
# NoCloud seed (Hangar's boot script), fetches its JIT config and runs one job.
#
# How: the cloud image boots once under QEMU (KVM when usable, else TCG)
# with a provisioning seed, installs everything, powers off; the disk is
# flattened, compressed and uploaded as an immutable volume. This replaces
# "provision a vagrant box, then package it".
#
# Usage: build-base-image.sh [options]
#   --pool POOL            storage pool to register in       (default hangar)
#   --name NAME            volume name     (default ubuntu-<ver>-runner-<date>.qcow2)
#   --release CODENAME     Ubuntu release                    (default noble)
#   --image-file PATH      use this cloud image instead of downloading one
#   --runner-version V     GitHub runner version, e.g. 2.330.0 (default latest)
#   --go-version V         Go version, e.g. 1.25.4, or "none" (default latest)
#   --no-docker            leave Docker out
#   --http-proxy URL, --https-proxy URL, --no-proxy LIST
#   --disk-gib N           virtual size of the base           (default 20)
#   --accel kvm|tcg        build VM accelerator (default kvm when /dev/kvm works)
#   --timeout-min N        give up on the build VM after N minutes (default 60)
#   --uri URI              libvirt URI                        (default qemu:///system)
#   --work-dir DIR         keep intermediate files here (default: a temp dir, removed)
#   --prepare-only         stop after writing the disk and provisioning seed to
#                          --work-dir (to inspect or boot them by hand)
#
# Volumes are never replaced: overlays of running instances read through
# to their base. Build a new name and point pools at it
# (`hangar pool update <id> --image <name>`), then delete the old volume
# once no instance uses it.
set -euo pipefail

POOL=hangar
NAME=""
RELEASE=noble
IMAGE_FILE=""
RUNNER_VERSION=latest
GO_VERSION=latest
DOCKER=1
HTTP_PROXY_URL=""
HTTPS_PROXY_URL=""
NO_PROXY_LIST=""
DISK_GIB=20
ACCEL=""
TIMEOUT_MIN=60
URI=qemu:///system
WORK_DIR=""
PREPARE_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --pool) POOL="$2"; shift 2 ;;
        --name) NAME="$2"; shift 2 ;;
        --release) RELEASE="$2"; shift 2 ;;
        --image-file) IMAGE_FILE="$2"; shift 2 ;;
        --runner-version) RUNNER_VERSION="$2"; shift 2 ;;
        --go-version) GO_VERSION="$2"; shift 2 ;;
        --no-docker) DOCKER=0; shift ;;
        --http-proxy) HTTP_PROXY_URL="$2"; shift 2 ;;
        --https-proxy) HTTPS_PROXY_URL="$2"; shift 2 ;;
        --no-proxy) NO_PROXY_LIST="$2"; shift 2 ;;
        --disk-gib) DISK_GIB="$2"; shift 2 ;;
        --accel) ACCEL="$2"; shift 2 ;;
        --timeout-min) TIMEOUT_MIN="$2"; shift 2 ;;
        --uri) URI="$2"; shift 2 ;;
        --work-dir) WORK_DIR="$2"; shift 2 ;;
        --prepare-only) PREPARE_ONLY=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "build-base-image: $*"; }
die() { echo "build-base-image: ERROR: $*" >&2; exit 1; }
for tool in qemu-system-x86_64 qemu-img virsh curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (deploy/libvirt/prepare-host.sh installs it)"
done
ISO_TOOL=""
for t in genisoimage xorriso cloud-localds; do command -v "$t" >/dev/null && { ISO_TOOL="$t"; break; }; done
[ -n "$ISO_TOOL" ] || die "no ISO tool: install genisoimage"
[[ "$DISK_GIB" =~ ^[0-9]+$ ]] || die "--disk-gib must be a number"
virsh_() { virsh -q -c "$URI" "$@"; }
virsh_ pool-info "$POOL" >/dev/null 2>&1 || die "storage pool $POOL not found on $URI (prepare-host.sh creates it)"

# The host's own downloads (cloud image) use the proxy too.
[ -n "$HTTP_PROXY_URL" ] && export http_proxy="$HTTP_PROXY_URL"
[ -n "$HTTPS_PROXY_URL" ] && export https_proxy="$HTTPS_PROXY_URL"
[ -n "$NO_PROXY_LIST" ] && export no_proxy="$NO_PROXY_LIST"

if [ -z "$WORK_DIR" ]; then
    [ "$PREPARE_ONLY" = 0 ] || die "--prepare-only needs --work-dir"
    WORK_DIR="$(mktemp -d /var/tmp/hangar-base.XXXXXX)"
    trap 'rm -rf "$WORK_DIR"' EXIT
fi
mkdir -p "$WORK_DIR"

# --- the cloud image ----------------------------------------------------------
if [ -z "$IMAGE_FILE" ]; then
    base_url="https://cloud-images.ubuntu.com/$RELEASE/current"
    img="$RELEASE-server-cloudimg-amd64.img"
    say "downloading $base_url/$img"
    curl -fsSL -o "$WORK_DIR/SHA256SUMS" "$base_url/SHA256SUMS"
    curl -fSL --progress-bar -o "$WORK_DIR/$img" "$base_url/$img"
    ( cd "$WORK_DIR" && grep " \*\?$img\$" SHA256SUMS | sed 's/ \*/  /' | sha256sum -c --quiet - ) \
        || die "checksum mismatch for $img"
    IMAGE_FILE="$WORK_DIR/$img"
fi
[ -f "$IMAGE_FILE" ] || die "$IMAGE_FILE not found"
VERSION_TAG="$RELEASE"
case "$RELEASE" in
    jammy) VERSION_TAG=22.04 ;; noble) VERSION_TAG=24.04 ;; plucky) VERSION_TAG=25.04 ;;
esac
[ -n "$NAME" ] || NAME="ubuntu-$VERSION_TAG-runner-$(date +%Y%m%d%H%M).qcow2"
if virsh_ vol-info --pool "$POOL" "$NAME" >/dev/null 2>&1; then
    die "volume $NAME already exists in $POOL; base images are immutable, pick a new --name"
fi

qemu-img convert -O qcow2 "$IMAGE_FILE" "$WORK_DIR/disk.qcow2"
qemu-img resize -q "$WORK_DIR/disk.qcow2" "${DISK_GIB}G"

# --- the provisioning seed ----------------------------------------------------
# Values reach the script as a quoted environment file, never spliced into
# shell code.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
{
    echo "RUNNER_VERSION=$(q "$RUNNER_VERSION")"
    echo "GO_VERSION=$(q "$GO_VERSION")"
    echo "DOCKER=$(q "$DOCKER")"
    echo "HTTP_PROXY_URL=$(q "$HTTP_PROXY_URL")"
    echo "HTTPS_PROXY_URL=$(q "$HTTPS_PROXY_URL")"
    echo "NO_PROXY_LIST=$(q "$NO_PROXY_LIST")"
} > "$WORK_DIR/settings"

mkdir -p "$WORK_DIR/seed"
{
    echo '#!/bin/bash'
    echo '# Hangar base image provisioning; runs once, then powers off.'
    echo 'cat > /root/hangar-settings <<'"'"'SETTINGS'"'"''
    cat "$WORK_DIR/settings"
    echo 'SETTINGS'
    cat <<'PROVISION'
set -euxo pipefail
. /root/hangar-settings
rm -f /root/hangar-settings
export DEBIAN_FRONTEND=noninteractive

# Proxy: for this build, apt, every login, the runner's jobs and Docker.
HTTPS_EFFECTIVE="${HTTPS_PROXY_URL:-$HTTP_PROXY_URL}"
PROXY_ENV=""
if [ -n "$HTTP_PROXY_URL" ]; then
    export http_proxy="$HTTP_PROXY_URL" HTTP_PROXY="$HTTP_PROXY_URL"
    export https_proxy="$HTTPS_EFFECTIVE" HTTPS_PROXY="$HTTPS_EFFECTIVE"
    PROXY_ENV="http_proxy=$HTTP_PROXY_URL
HTTP_PROXY=$HTTP_PROXY_URL
https_proxy=$HTTPS_EFFECTIVE
HTTPS_PROXY=$HTTPS_EFFECTIVE"
    printf 'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "%s";\n' "$HTTP_PROXY_URL" "$HTTPS_EFFECTIVE" \
        > /etc/apt/apt.conf.d/95proxy
elif [ -n "$HTTPS_PROXY_URL" ]; then
    export https_proxy="$HTTPS_PROXY_URL" HTTPS_PROXY="$HTTPS_PROXY_URL"
    PROXY_ENV="https_proxy=$HTTPS_PROXY_URL
HTTPS_PROXY=$HTTPS_PROXY_URL"
    printf 'Acquire::https::Proxy "%s";\n' "$HTTPS_PROXY_URL" > /etc/apt/apt.conf.d/95proxy
fi
if [ -n "$NO_PROXY_LIST" ]; then
    export no_proxy="$NO_PROXY_LIST" NO_PROXY="$NO_PROXY_LIST"
    PROXY_ENV="$PROXY_ENV
no_proxy=$NO_PROXY_LIST
NO_PROXY=$NO_PROXY_LIST"
fi
[ -n "$PROXY_ENV" ] && printf '%s\n' "$PROXY_ENV" >> /etc/environment

apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
apt-get install -y -q --no-install-recommends \
    ca-certificates curl git jq tar gzip unzip zip xz-utils build-essential sudo
if [ "$DOCKER" = 1 ]; then
    apt-get install -y -q --no-install-recommends docker.io docker-buildx || \
        apt-get install -y -q --no-install-recommends docker.io
    if [ -n "$PROXY_ENV" ]; then
        mkdir -p /etc/systemd/system/docker.service.d
        {
            echo '[Service]'
            printf '%s\n' "$PROXY_ENV" | sed 's/^/Environment="/; s/$/"/'
        } > /etc/systemd/system/docker.service.d/http-proxy.conf
    fi
    systemctl enable docker
fi

id runner >/dev/null 2>&1 || useradd -m -s /bin/bash runner
echo 'runner ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/runner
chmod 0440 /etc/sudoers.d/runner
[ "$DOCKER" = 1 ] && usermod -aG docker runner

# The runner.
if [ "$RUNNER_VERSION" = latest ]; then
    RUNNER_VERSION="$(curl -fsSL https://api.github.com/repos/actions/runner/releases/latest | jq -r .tag_name)"
    RUNNER_VERSION="${RUNNER_VERSION#v}"
fi
mkdir -p /opt/actions-runner
curl -fsSL -o /tmp/runner.tar.gz \
    "https://github.com/actions/runner/releases/download/v$RUNNER_VERSION/actions-runner-linux-x64-$RUNNER_VERSION.tar.gz"
tar -xzf /tmp/runner.tar.gz -C /opt/actions-runner
rm -f /tmp/runner.tar.gz
/opt/actions-runner/bin/installdependencies.sh

# Go.
JOB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$GO_VERSION" != none ]; then
    if [ "$GO_VERSION" = latest ]; then
        GO_VERSION="$(curl -fsSL 'https://go.dev/VERSION?m=text' | head -1)"
    fi
    GO_VERSION="go${GO_VERSION#go}"
    curl -fsSL "https://go.dev/dl/$GO_VERSION.linux-amd64.tar.gz" | tar -C /usr/local -xz
    echo 'export PATH=/usr/local/go/bin:$PATH' > /etc/profile.d/go.sh
    JOB_PATH="/usr/local/go/bin:$JOB_PATH"
    /usr/local/go/bin/go version
fi

# The runner reads .path and .env for every job it runs.
echo "$JOB_PATH" > /opt/actions-runner/.path
printf 'LANG=C.UTF-8\n%s\n' "$PROXY_ENV" | sed '/^$/d' > /opt/actions-runner/.env
chown -R runner:runner /opt/actions-runner
echo "runner $RUNNER_VERSION installed"

# Every instance must boot as a new machine.
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs --machine-id || { cloud-init clean --logs; truncate -s 0 /etc/machine-id; }
sync
echo HANGAR-BASE-OK > /dev/ttyS0
poweroff
PROVISION
} > "$WORK_DIR/seed/user-data"
printf 'instance-id: hangar-base-build\nlocal-hostname: hangar-base-build\n' > "$WORK_DIR/seed/meta-data"
printf 'version: 2\nethernets:\n  all-en:\n    match:\n      name: "e*"\n    dhcp4: true\n' > "$WORK_DIR/seed/network-config"
( cd "$WORK_DIR/seed" && case "$ISO_TOOL" in
    genisoimage) genisoimage -quiet -output ../seed.iso -volid cidata -joliet -rock user-data meta-data network-config ;;
    xorriso) xorriso -as mkisofs -quiet -o ../seed.iso -V cidata -J -R user-data meta-data network-config ;;
    cloud-localds) cloud-localds --network-config=network-config ../seed.iso user-data meta-data ;;
esac )

if [ "$PREPARE_ONLY" = 1 ]; then
    say "prepared $WORK_DIR/disk.qcow2 and $WORK_DIR/seed.iso (--prepare-only)"
    exit 0
fi

# --- boot it once -------------------------------------------------------------
if [ -z "$ACCEL" ]; then
    ACCEL=tcg
    if [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; fi
fi
CPU=max
[ "$ACCEL" = kvm ] && CPU=host
say "provisioning in a $ACCEL VM (console: $WORK_DIR/console.log; up to $TIMEOUT_MIN min)"
rc=0
timeout "${TIMEOUT_MIN}m" qemu-system-x86_64 \
    -machine q35,accel="$ACCEL" -cpu "$CPU" -smp 2 -m 4096 \
    -drive file="$WORK_DIR/disk.qcow2",if=virtio,format=qcow2 \
    -drive file="$WORK_DIR/seed.iso",if=virtio,format=raw,readonly=on \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -display none -serial file:"$WORK_DIR/console.log" -monitor none -no-reboot \
    || rc=$?
if ! grep -q HANGAR-BASE-OK "$WORK_DIR/console.log"; then
    tail -n 40 "$WORK_DIR/console.log" >&2 || true
    die "provisioning did not finish (qemu exit $rc); full console in $WORK_DIR/console.log (use --work-dir to keep it)"
fi

# --- register -----------------------------------------------------------------
say "compressing"
qemu-img convert -c -O qcow2 "$WORK_DIR/disk.qcow2" "$WORK_DIR/base.qcow2"
bytes="$(stat -c %s "$WORK_DIR/base.qcow2")"
# Created raw at the file's size and uploaded byte for byte; the refresh
# then probes it as the qcow2 it is (virtual size = --disk-gib).
virsh_ vol-create-as "$POOL" "$NAME" "${bytes}b" --format raw >/dev/null
virsh_ vol-upload --pool "$POOL" "$NAME" "$WORK_DIR/base.qcow2" \
    || { virsh_ vol-delete --pool "$POOL" "$NAME" >/dev/null 2>&1; die "upload failed"; }
virsh_ pool-refresh "$POOL" >/dev/null
virsh_ vol-dumpxml --pool "$POOL" "$NAME" | grep -q "format type='qcow2'" \
    || die "libvirt does not see $NAME as qcow2"
say "registered $NAME in pool $POOL ($((bytes / 1024 / 1024)) MiB on disk, ${DISK_GIB} GiB virtual)"
cat <<NEXT

Use it in a pool:
  hangar pool add --provider-name <your libvirt provider> --image $NAME --flavor small \\
      --tags self-hosted,linux,x64 --max-runners 4 ...
NEXT
