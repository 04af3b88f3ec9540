#!/usr/bin/env bash
# Installs Hangar as a systemd service (or, without systemd, ready to run
# as the hangar user; the next steps printed at the end say how):
#   binaries   -> $PREFIX/bin/hangard, $PREFIX/bin/hangar (stripped, from cargo xtask dist)
#   debug info -> /usr/lib/debug$PREFIX/bin/{hangard,hangar}.debug (where gdb, perf
#                 and addr2line look for a .gnu_debuglink; skip with --no-debug)
#   unit       -> /etc/systemd/system/hangard.service (+ libvirt drop-in with --libvirt)
#   config     -> /etc/hangar/hangard.toml (deploy/hangard.toml: starts as is; kept if present)
#   secrets    -> /etc/hangar/credentials/{passphrase,jwt-secret,metrics-token} (generated, 0600, kept if present)
#   state      -> /var/lib/hangar (empty; systemd's StateDirectory owns it)
#   user       -> system user "hangar"
# Usage: deploy/install.sh [--libvirt] [--bin-dir DIR] [--no-debug]   (DESTDIR=/tmp/x for a staged install)
# Build first: cargo xtask dist   (stripped binaries + .debug files in target/dist;
# --bin-dir target/release installs the unstripped build instead)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
destdir=${DESTDIR:-}
prefix=${PREFIX:-/usr}
bindir="$root/target/dist"
libvirt=0
debug=1
while [ $# -gt 0 ]; do
    case "$1" in
        --libvirt) libvirt=1 ;;
        --bin-dir) bindir=$2; shift ;;
        --no-debug) debug=0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for b in hangard hangar; do
    [ -x "$bindir/$b" ] || { echo "missing $bindir/$b: run cargo xtask dist (or give --bin-dir)" >&2; exit 1; }
done

say() { echo "install: $*"; }

install -d -m 0755 "$destdir$prefix/bin" "$destdir/etc/systemd/system" "$destdir/etc/hangar" "$destdir$prefix/share/doc/hangar"
install -m 0755 "$bindir/hangard" "$bindir/hangar" "$destdir$prefix/bin/"
say "binaries in $destdir$prefix/bin"
# The debug info cargo xtask dist split off, where a .gnu_debuglink is
# looked up: /usr/lib/debug + the binary's directory.
if [ "$debug" = 1 ] && [ -e "$bindir/hangard.debug" ]; then
    install -d -m 0755 "$destdir/usr/lib/debug$prefix/bin"
    for b in hangard hangar; do
        if [ -e "$bindir/$b.debug" ]; then
            install -m 0644 "$bindir/$b.debug" "$destdir/usr/lib/debug$prefix/bin/"
        fi
    done
    say "debug info in $destdir/usr/lib/debug$prefix/bin"
fi

sed "s|^ExecStart=/usr/bin/hangard|ExecStart=$prefix/bin/hangard|" "$here/systemd/hangard.service" \
    > "$destdir/etc/systemd/system/hangard.service"
chmod 0644 "$destdir/etc/systemd/system/hangard.service"
if [ "$libvirt" = 1 ]; then
    install -d -m 0755 "$destdir/etc/systemd/system/hangard.service.d"
    install -m 0644 "$here/systemd/hangard.service.d/libvirt.conf" "$destdir/etc/systemd/system/hangard.service.d/"
fi
say "unit in $destdir/etc/systemd/system"

install -m 0644 "$root/config/hangard.example.toml" "$destdir$prefix/share/doc/hangar/hangard.example.toml"
install -m 0644 "$root/README.md" "$destdir$prefix/share/doc/hangar/README.md"
if [ ! -e "$destdir/etc/hangar/hangard.toml" ]; then
    # The least that starts: no providers, public_url a placeholder, the
    # secrets from the systemd credentials.
    install -m 0640 "$here/hangard.toml" "$destdir/etc/hangar/hangard.toml"
    say "config in $destdir/etc/hangar/hangard.toml (set server.public_url, add a [[provider]])"
else
    say "kept existing $destdir/etc/hangar/hangard.toml"
fi

install -d -m 0700 "$destdir/etc/hangar/credentials"
for secret in passphrase jwt-secret metrics-token; do
    f="$destdir/etc/hangar/credentials/$secret"
    if [ ! -e "$f" ]; then
        (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n=/+' > "$f")
        say "generated $f"
    fi
done

install -d -m 0700 "$destdir/var/lib/hangar"
if [ -z "$destdir" ]; then
    if ! id hangar >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/hangar --shell /usr/sbin/nologin hangar
        say "created user hangar"
    fi
    chown hangar:hangar /var/lib/hangar
    chgrp hangar /etc/hangar/hangard.toml
    systemd=0
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemd=1
        systemctl daemon-reload
    else
        # No systemd to hand the secrets to the service (LoadCredential):
        # hangard, run as hangar, reads them here itself.
        chgrp -R hangar /etc/hangar/credentials
        chmod 0750 /etc/hangar/credentials
        chmod 0640 /etc/hangar/credentials/*
    fi
fi
say "done"
if [ -z "$destdir" ]; then
    cat <<NEXT

Next:
  1. Set server.public_url in /etc/hangar/hangard.toml (the URL GitHub
     reaches) and add a [[provider]] (every key:
     $prefix/share/doc/hangar/hangard.example.toml).
NEXT
    if [ "$systemd" = 1 ]; then
        echo "  2. Start it:  systemctl enable --now hangard"
    else
        cat <<NEXT
  2. Start it (there is no systemd here; as the hangar user, so the
     database in /var/lib/hangar stays its own; in the foreground or
     under your supervisor):
       runuser -u hangar -- env CREDENTIALS_DIRECTORY=/etc/hangar/credentials $prefix/bin/hangard --config /etc/hangar/hangard.toml
NEXT
    fi
    cat <<'NEXT'
  3. The first admin:  hangar init --url http://127.0.0.1:9997 --username admin --password-stdin
  4. /metrics needs the token in /etc/hangar/credentials/metrics-token
     (Authorization: Bearer <token>).
NEXT
fi
