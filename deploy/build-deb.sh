#!/usr/bin/env bash
# Builds hangar_<version>_<arch>.deb from built binaries with plain dpkg-deb
# (no cargo-deb needed): the same layout deploy/install.sh makes, with the
# unit in /lib/systemd/system and the secrets generated at install time by
# the postinst, never shipped in the package. The binaries are the stripped
# ones of cargo xtask dist; their debug info goes into a second package,
# hangar-dbg_<version>_<arch>.deb (/usr/lib/debug/usr/bin/*.debug), when the
# bin dir has the .debug files.
# Usage: deploy/build-deb.sh [--bin-dir DIR] [--out DIR] [--fast]
# Build first: cargo xtask dist (stripped binaries in target/dist, the
# default here). Without target/dist it packages the unstripped
# target/release build, with a loud warning; it refuses a target/dist
# older than target/release (run cargo xtask dist again, or name the
# folder with --bin-dir).
# The package's version is the one the binaries report (`hangard --version`);
# shell completions and man pages are generated from the binaries here.
# The .deb made is checked before it is printed: its Version is what
# hangard and hangar report, it depends on adduser and an ISO tool, and it
# holds the binaries, the unit, the completions and the man pages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bindir=""
out="$root/target/deb"
compress=(-Zxz)
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bindir=$2; shift ;;
        --out) out=$2; shift ;;
        --fast) compress=(-Zgzip -z1) ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing (Debian/Ubuntu only)" >&2; exit 1; }

loud() { # a warning nobody scrolls past
    printf '\n!!! %s\n\n' "$*" >&2
}
if [ -z "$bindir" ]; then
    dist="$root/target/dist" release="$root/target/release"
    if [ -x "$dist/hangard" ]; then
        for b in hangard hangar; do
            if [ "$release/$b" -nt "$dist/$b" ]; then
                echo "target/dist/$b is older than target/release/$b: the package would ship the older build." >&2
                echo "Run cargo xtask dist again, or choose with --bin-dir target/dist|target/release." >&2
                exit 1
            fi
        done
        bindir=$dist
    elif [ -x "$release/hangard" ]; then
        bindir=$release
        loud "no target/dist: packaging the UNSTRIPPED binaries of target/release" \
            "($(du -m "$release/hangard" | cut -f1) MiB hangard). Run cargo xtask dist first for stripped ones."
    else
        echo "no binaries: run cargo xtask dist first (or give --bin-dir)" >&2
        exit 1
    fi
fi
for b in hangard hangar; do
    [ -x "$bindir/$b" ] || { echo "missing $bindir/$b (give --bin-dir)" >&2; exit 1; }
done

version=$("$bindir/hangard" --version | awk '{print $2}')
case "$version" in [0-9]*) ;; *) echo "cannot read the version from $bindir/hangard --version" >&2; exit 1 ;; esac
cli_version=$("$bindir/hangar" --version | awk '{print $2}')
if [ "$cli_version" != "$version" ]; then
    echo "hangard is $version but hangar is $cli_version: build both from one tree" >&2
    exit 1
fi
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/hangar"

DESTDIR="$pkg" PREFIX=/usr bash "$here/install.sh" --bin-dir "$bindir" >/dev/null
# Debug info goes into its own package (below), not the main one.
dbg="$stage/hangar-dbg"
if [ -d "$pkg/usr/lib/debug" ]; then
    install -d -m 0755 "$dbg/usr/lib"
    mv "$pkg/usr/lib/debug" "$dbg/usr/lib/"
    rmdir "$pkg/usr/lib" 2>/dev/null || true
fi
# Secrets and state belong to the machine, not the package.
rm -f "$pkg"/etc/hangar/credentials/*
rm -rf "${pkg:?}/var"
install -d -m 0755 "$pkg/lib/systemd/system"
mv "$pkg/etc/systemd/system/hangard.service" "$pkg/lib/systemd/system/"
rm -rf "${pkg:?}/etc/systemd"
# The libvirt drop-in needs the libvirt group: shipped, enabled by hand.
install -m 0644 "$here/systemd/hangard.service.d/libvirt.conf" \
    "$pkg/usr/share/doc/hangar/hangard.service.d-libvirt.conf"

# Shell completions and man pages, from the binaries themselves.
install -d -m 0755 "$pkg/usr/share/bash-completion/completions" \
    "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d" \
    "$pkg/usr/share/man/man1" "$pkg/usr/share/man/man8"
"$bindir/hangar" completions bash > "$pkg/usr/share/bash-completion/completions/hangar"
"$bindir/hangar" completions zsh > "$pkg/usr/share/zsh/vendor-completions/_hangar"
"$bindir/hangar" completions fish > "$pkg/usr/share/fish/vendor_completions.d/hangar.fish"
# A man page per binary: its --help as roff (what help2man does, without
# the dependency).
manpage() { # manpage BIN SECTION SUMMARY
    local upper
    upper=$(echo "$1" | tr '[:lower:]' '[:upper:]')
    {
        echo ".TH $upper $2 \"\" \"hangar $version\" \"Hangar\""
        echo ".SH NAME"
        echo "$1 \\- $3"
        echo ".SH DESCRIPTION"
        echo ".nf"
        "$bindir/$1" --help | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./'
        echo ".fi"
        echo ".SH SEE ALSO"
        echo "/usr/share/doc/hangar/README.md, /usr/share/doc/hangar/hangard.example.toml"
    } | gzip -9n > "$pkg/usr/share/man/man$2/$1.$2.gz"
}
manpage hangard 8 "autoscaled ephemeral GitHub Actions runners (daemon)"
manpage hangar 1 "admin CLI for hangard"
find "$pkg/usr/share/bash-completion" "$pkg/usr/share/zsh" "$pkg/usr/share/fish" -type f -exec chmod 0644 {} +
chmod 0644 "$pkg"/usr/share/man/man*/*

install -d -m 0755 "$pkg/DEBIAN"
size=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOF
Package: hangar
Version: $version
Architecture: $arch
Maintainer: Hangar maintainers <hangar@localhost>
Installed-Size: $size
Depends: libc6, libgcc-s1, libvirt0, adduser, genisoimage | xorriso
Section: admin
Priority: optional
Homepage: https://localhost/hangar
Description: autoscaled ephemeral self-hosted GitHub Actions runners
 hangard takes GitHub workflow_job webhooks and gives every job a fresh
 one-job runner VM (libvirt, Azure confidential VMs, or any garm external
 provider), deleted when the job ends. hangar is its admin CLI.
EOF
echo /etc/hangar/hangard.toml > "$pkg/DEBIAN/conffiles"

cat > "$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # The home first, so adduser finds it (it is hangar's own below).
    install -d -m 0700 /var/lib/hangar
    if ! getent passwd hangar >/dev/null; then
        adduser --system --group --home /var/lib/hangar --no-create-home \
            --shell /usr/sbin/nologin hangar >/dev/null
    fi
    install -d -m 0700 /etc/hangar/credentials
    for s in passphrase jwt-secret metrics-token; do
        if [ ! -e "/etc/hangar/credentials/$s" ]; then
            (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n=/+' > "/etc/hangar/credentials/$s")
        fi
    done
    install -d -m 0700 -o hangar -g hangar /var/lib/hangar
    chgrp hangar /etc/hangar/hangard.toml
    chmod 0640 /etc/hangar/hangard.toml
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    else
        # No systemd to hand the secrets to the service (LoadCredential):
        # hangard, run as hangar, reads them here itself.
        chgrp -R hangar /etc/hangar/credentials
        chmod 0750 /etc/hangar/credentials
        chmod 0640 /etc/hangar/credentials/*
    fi
    cat <<'NEXT'

hangar is installed. Next:
  1. Set server.public_url in /etc/hangar/hangard.toml (the URL GitHub
     reaches) and add a [[provider]] (every key:
     /usr/share/doc/hangar/hangard.example.toml).
NEXT
    if [ -d /run/systemd/system ]; then
        echo "  2. Start it:  systemctl enable --now hangard"
    else
        cat <<'NEXT'
  2. Start it (there is no systemd here; as the hangar user, so the
     database in /var/lib/hangar stays its own; in the foreground or
     under your supervisor):
       runuser -u hangar -- env CREDENTIALS_DIRECTORY=/etc/hangar/credentials hangard --config /etc/hangar/hangard.toml
NEXT
    fi
    cat <<'NEXT'
  3. The first admin:  hangar init --url http://127.0.0.1:9997 --username admin --password-stdin
  4. /metrics needs the token in /etc/hangar/credentials/metrics-token
     (Authorization: Bearer <token>).
NEXT
fi
EOF
cat > "$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop hangard.service || true
fi
EOF
cat > "$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # The database is sealed with the passphrase that goes here: keeping one
    # without the other would leave a reinstall a database it cannot open.
    rm -rf /etc/hangar/credentials /var/lib/hangar
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/hangar_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$pkg" "$deb" >/dev/null

# What was built, read back from the .deb itself.
bad() { echo "build-deb.sh: $deb: $*" >&2; rm -f "$deb"; exit 1; }
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] \
    || bad "Version $(dpkg-deb -f "$deb" Version) is not hangard --version ($version)"
depends=$(dpkg-deb -f "$deb" Depends)
for want in adduser "genisoimage | xorriso"; do
    case ", $depends," in *", $want,"*) ;; *) bad "Depends ($depends) lacks $want" ;; esac
done
contents=$(dpkg-deb --contents "$deb" | awk '{print $NF}')
for want in ./usr/bin/hangard ./usr/bin/hangar ./lib/systemd/system/hangard.service \
    ./etc/hangar/hangard.toml \
    ./usr/share/bash-completion/completions/hangar ./usr/share/zsh/vendor-completions/_hangar \
    ./usr/share/fish/vendor_completions.d/hangar.fish \
    ./usr/share/man/man1/hangar.1.gz ./usr/share/man/man8/hangard.8.gz; do
    grep -qxF "$want" <<<"$contents" || bad "lacks $want"
done
echo "$deb"

if [ -d "$dbg/usr/lib/debug" ]; then
    install -d -m 0755 "$dbg/DEBIAN"
    cat > "$dbg/DEBIAN/control" <<EOF
Package: hangar-dbg
Version: $version
Architecture: $arch
Maintainer: Hangar maintainers <hangar@localhost>
Installed-Size: $(du -sk "$dbg" | cut -f1)
Depends: hangar (= $version)
Section: debug
Priority: optional
Homepage: https://localhost/hangar
Description: debug info for hangard and hangar
 The DWARF line tables split off the shipped binaries, found by gdb, perf
 and addr2line through the binaries' .gnu_debuglink.
EOF
    dbgdeb="$out/hangar-dbg_${version}_${arch}.deb"
    dpkg-deb --root-owner-group "${compress[@]}" --build "$dbg" "$dbgdeb" >/dev/null
    echo "$dbgdeb"
fi
