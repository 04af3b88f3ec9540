#!/usr/bin/env bash
# Runs `systemd-analyze verify` on the unit (and its libvirt drop-in) the way
# it will be installed, with ExecStart pointing at a real executable so the
# check can run on a build machine. Used by `cargo xtask ci`.
set -euo pipefail
unit=${1:-$(dirname "$0")/hangard.service}
here=$(cd "$(dirname "$unit")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$root/target/debug/hangard
[ -x "$bin" ] || bin=/bin/true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/bin/hangard|ExecStart=$bin|" "$unit" > "$tmp/hangard.service"
mkdir -p "$tmp/hangard.service.d"
cp "$here/hangard.service.d/"*.conf "$tmp/hangard.service.d/"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$tmp/hangard.service" 2>&1) || {
    echo "$out"
    echo "systemd-analyze verify failed" >&2
    exit 1
}
# verify prints problems as warnings without failing for some classes;
# treat anything mentioning our unit as a failure.
if echo "$out" | grep -i "hangard.service" | grep -viE "^$"; then
    echo "systemd-analyze verify reported problems with hangard.service" >&2
    exit 1
fi
echo "systemd-analyze verify: hangard.service OK"
