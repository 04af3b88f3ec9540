#!/usr/bin/env bash
# Host side of Hangar's Azure deployment, installed by cloud-init as
# /usr/local/sbin/hangar-host. The VM runs two containers under systemd:
# hangard (the image from deploy/Dockerfile) and Caddy (TLS in front of it).
#
#   hangar-host prepare          mount the data disk (formatted only when blank) or, with
#                                PostgreSQL, Caddy's shared file share; docker network
#   hangar-host run-hangard      settings and secrets, pull, then exec `docker run` (hangard.service)
#   hangar-host run-proxy        exec `docker run` of Caddy (hangar-proxy.service)
#   hangar-host backup           online SQLite backup to Blob storage (hangar-backup.timer, hourly;
#                                with PostgreSQL the flexible server backs itself up)
#   hangar-host list-backups     the backups in Blob storage, oldest first
#   hangar-host restore [NAME]   stop hangard, restore a backup (default: the newest), start hangard
#
# Settings come from the VM's user data (rendered by Terraform and updated
# in place by `terraform apply`); secrets come from Key Vault with the VM's
# managed identity and live on a tmpfs only. Tokens are handed to curl on
# standard input, never on its command line.
set -euo pipefail

DATA=/srv/hangar                   # the managed data disk (SQLite), a plain folder (PostgreSQL)
STATE=$DATA/hangard                # -> /var/lib/hangar in the container (SQLite)
CADDY_DATA=$DATA/caddy             # Caddy's certificates and ACME account (PostgreSQL: the shared file share)
ETC=/etc/hangar                    # hangard.toml, runner.pub -> /etc/hangar (read-only)
RUN=/run/hangar
SECRETS=$RUN/secrets               # tmpfs -> /run/secrets/hangar (read-only)
SETTINGS=$RUN/settings.json
HANGAR_UID=10001                   # the image's user (deploy/Dockerfile)
IMDS=http://169.254.169.254/metadata
BLOB_API=2021-08-06
KEY_VAULT_API=7.4

say() { echo "hangar-host: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

# --- settings and tokens ---------------------------------------------------

load_settings() {
    install -d -m 0755 "$RUN"
    local raw
    raw=$(curl -fsS --retry 5 --retry-connrefused -H Metadata:true \
        "$IMDS/instance/compute/userData?api-version=2021-01-01&format=text") \
        || die "cannot read the VM's user data from the instance metadata service"
    (umask 077 && printf '%s' "$raw" | base64 -d > "$SETTINGS.new") \
        || die "the VM's user data is not base64"
    jq -e 'type == "object"' "$SETTINGS.new" > /dev/null || die "the VM's user data is not a JSON object"
    mv "$SETTINGS.new" "$SETTINGS"
}

# setting KEY: a required setting; optional_setting KEY: empty when unset.
setting() { jq -er --arg k "$1" '.[$k] // empty' "$SETTINGS" || die "setting $1 missing from the VM's user data"; }
optional_setting() { jq -r --arg k "$1" '.[$k] // ""' "$SETTINGS"; }

# token RESOURCE: an access token of the VM's user-assigned identity.
token() {
    curl -fsS --retry 5 --retry-connrefused -H Metadata:true --get \
        --data-urlencode "api-version=2018-02-01" \
        --data-urlencode "resource=$1" \
        --data-urlencode "client_id=$(setting identity_client_id)" \
        "$IMDS/identity/oauth2/token" | jq -er .access_token \
        || die "no token for $1 from the managed identity"
}

# bearer TOKEN CURL-ARGS...: curl with an Authorization header read from stdin.
bearer() {
    local t=$1
    shift
    printf 'Authorization: Bearer %s\n' "$t" | curl -fsS -H @- "$@"
}

# --- prepare -------------------------------------------------------------------

data_disk() {
    local d
    for d in /dev/disk/azure/data/by-lun/0 /dev/disk/azure/scsi1/lun0; do
        if [ -e "$d" ]; then
            readlink -f "$d"
            return 0
        fi
    done
    return 1
}

# database: "sqlite" (one VM, data disk) or "postgres" (replicas).
database() { local d; d=$(optional_setting database); printf '%s' "${d:-sqlite}"; }

# Caddy's storage on the Azure Files share every replica mounts: Caddy
# instances sharing one storage share certificates and take turns at the
# ACME challenges, whichever VM the load balancer sends them to.
mount_caddy_share() {
    local share user key creds=$RUN/cifs-credentials
    mountpoint -q "$CADDY_DATA" && return 0
    share=$(setting caddy_share)
    user=$(setting caddy_share_user)
    key=$(key_vault_secret "$(setting caddy_share_secret)")
    install -d -m 0700 "$RUN"
    (umask 077 && printf 'username=%s\npassword=%s\n' "$user" "$key" > "$creds")
    install -d -m 0700 "$CADDY_DATA"
    mount -t cifs "$share" "$CADDY_DATA" \
        -o "vers=3.1.1,credentials=$creds,seal,serverino,nosharesock,actimeo=30,mfsymlinks,uid=0,gid=0,dir_mode=0700,file_mode=0600" \
        || die "cannot mount $share on $CADDY_DATA"
    say "Caddy's shared storage $share mounted on $CADDY_DATA"
}

prepare() {
    load_settings
    if [ "$(database)" = postgres ]; then
        install -d -m 0755 "$DATA"
        install -d -m 0700 -o "$HANGAR_UID" -g "$HANGAR_UID" "$STATE"
        mount_caddy_share
        docker network inspect hangar > /dev/null 2>&1 || docker network create hangar > /dev/null
        return 0
    fi
    if ! mountpoint -q "$DATA"; then
        local dev="" i probe uuid
        # Terraform attaches the disk after the VM is created.
        for i in $(seq 1 120); do
            dev=$(data_disk) && break
            [ "$i" = 1 ] && say "waiting for the data disk (LUN 0)"
            sleep 5
        done
        [ -n "$dev" ] || die "no data disk at LUN 0 after 10 minutes"
        probe=$(blkid -p -o export "$dev" 2> /dev/null || true)
        if [ -z "$probe" ]; then
            say "formatting the blank data disk $dev"
            mkfs.ext4 -q -L hangar-data "$dev"
        elif ! grep -q '^TYPE=' <<< "$probe"; then
            die "$dev holds a partition table, not a file system; refusing to touch it"
        fi
        uuid=$(blkid -s UUID -o value "$dev")
        install -d -m 0755 "$DATA"
        mount -o noatime "UUID=$uuid" "$DATA"
        say "data disk $dev mounted on $DATA"
    fi
    install -d -m 0700 -o "$HANGAR_UID" -g "$HANGAR_UID" "$STATE"
    install -d -m 0700 "$CADDY_DATA"
    docker network inspect hangar > /dev/null 2>&1 || docker network create hangar > /dev/null
}

# --- hangard -----------------------------------------------------------------

# key_vault_secret NAME: the secret's value, read with the VM's identity.
key_vault_secret() {
    local kv t
    kv=$(setting key_vault_uri)
    kv=${kv%/}
    t=$(token https://vault.azure.net)
    bearer "$t" "$kv/secrets/$1?api-version=$KEY_VAULT_API" | jq -er .value \
        || die "cannot read secret $1 from $kv (new role assignments take a few minutes to apply)"
}

fetch_secrets() {
    local passphrase jwt database_url pair file name value pairs
    passphrase=$(setting passphrase_secret)
    jwt=$(setting jwt_secret_secret)
    database_url=$(optional_setting database_url_secret)
    pairs=("passphrase:$passphrase" "jwt-secret:$jwt")
    if [ -n "$database_url" ]; then pairs+=("database-url:$database_url"); fi
    install -d -m 0500 -o "$HANGAR_UID" -g "$HANGAR_UID" "$SECRETS"
    for pair in "${pairs[@]}"; do
        file=${pair%%:*}
        name=${pair#*:}
        value=$(key_vault_secret "$name")
        (umask 077 && printf '%s' "$value" > "$SECRETS/.$file")
        chown "$HANGAR_UID:$HANGAR_UID" "$SECRETS/.$file"
        chmod 0400 "$SECRETS/.$file"
        mv -f "$SECRETS/.$file" "$SECRETS/$file"
    done
}

# Docker credentials for the registry made by Terraform, from the identity
# (AAD token exchanged for an ACR refresh token).
registry_login() {
    local registry aad refresh
    registry=$(optional_setting registry)
    [ -n "$registry" ] || return 0
    aad=$(token https://management.azure.com/)
    refresh=$(printf '%s' "$aad" | curl -fsS \
        --data-urlencode grant_type=access_token \
        --data-urlencode "service=$registry" \
        --data-urlencode "access_token@-" \
        "https://$registry/oauth2/exchange" | jq -er .refresh_token) \
        || die "cannot exchange the identity's token at $registry (AcrPull not applied yet?)"
    printf '%s' "$refresh" | docker login "$registry" \
        --username 00000000-0000-0000-0000-000000000000 --password-stdin > /dev/null
}

run_hangard() {
    local image key publish=127.0.0.1:9997:9997
    load_settings
    # Behind the load balancer, its health probe asks hangard's /readyz on
    # the VM's address (the NSG lets only the probe in).
    if [ "$(optional_setting probe_port)" = 9997 ]; then publish=9997:9997; fi
    install -d -m 0755 "$ETC"
    setting config > "$ETC/.hangard.toml"
    chmod 0644 "$ETC/.hangard.toml"
    mv -f "$ETC/.hangard.toml" "$ETC/hangard.toml"
    key=$(optional_setting runner_ssh_public_key)
    if [ -n "$key" ]; then
        printf '%s\n' "$key" > "$ETC/runner.pub"
    else
        rm -f "$ETC/runner.pub"
    fi
    fetch_secrets
    registry_login
    image=$(setting image)
    docker pull --quiet "$image" > /dev/null || say "cannot pull $image; trying the local copy"
    docker rm --force hangard > /dev/null 2>&1 || true
    # Attached, without a log driver: the output goes to this unit's journal
    # (journalctl -u hangard), once.
    exec docker run --rm --name hangard --network hangar \
        --publish "$publish" \
        --user "$HANGAR_UID:$HANGAR_UID" --read-only --tmpfs /tmp \
        --cap-drop ALL --security-opt no-new-privileges \
        --stop-timeout 45 --log-driver none \
        --volume "$STATE:/var/lib/hangar" \
        --volume "$ETC:/etc/hangar:ro" \
        --volume "$SECRETS:/run/secrets/hangar:ro" \
        "$image"
}

# --- Caddy -------------------------------------------------------------------

run_proxy() {
    local image domain
    load_settings
    image=$(setting proxy_image)
    domain=$(setting domain)
    docker pull --quiet "$image" > /dev/null || say "cannot pull $image; trying the local copy"
    docker rm --force hangar-proxy > /dev/null 2>&1 || true
    exec docker run --rm --name hangar-proxy --network hangar \
        --publish 80:80 --publish 443:443 \
        --cap-drop ALL --cap-add NET_BIND_SERVICE --security-opt no-new-privileges \
        --log-driver none \
        --env "HANGAR_DOMAIN=$domain" \
        --volume /etc/hangar-proxy/Caddyfile:/etc/caddy/Caddyfile:ro \
        --volume "$CADDY_DATA:/data" \
        "$image"
}

# --- backups -----------------------------------------------------------------

# as_hangar CMD...: run as the container's user, so SQLite's -wal/-shm
# files keep the owner hangard needs.
as_hangar() { setpriv --reuid="$HANGAR_UID" --regid="$HANGAR_UID" --clear-groups "$@"; }

backup() {
    local db=$STATE/hangar.db url tmp name check t
    load_settings
    if [ "$(database)" = postgres ]; then
        say "the database is the PostgreSQL flexible server, which backs itself up (point-in-time restore: az postgres flexible-server restore)"
        return 0
    fi
    url=$(setting backup_url)
    if [ ! -f "$db" ]; then
        say "no database yet; nothing to back up"
        return 0
    fi
    tmp=$(mktemp -d /var/tmp/hangar-backup.XXXXXX)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    chown "$HANGAR_UID:$HANGAR_UID" "$tmp"
    # VACUUM INTO: one read transaction, a consistent and compact copy,
    # while hangard keeps writing.
    as_hangar sqlite3 -init /dev/null -bail -cmd ".timeout 30000" "$db" "VACUUM INTO '$tmp/hangar.db'"
    check=$(sqlite3 -init /dev/null "$tmp/hangar.db" "PRAGMA integrity_check")
    [ "$check" = ok ] || die "the backup copy fails its integrity check: $check"
    gzip -9 "$tmp/hangar.db"
    name="hangar-$(date -u +%Y%m%dT%H%M%SZ).db.gz"
    t=$(token https://storage.azure.com/)
    bearer "$t" -X PUT \
        -H "x-ms-version: $BLOB_API" -H "x-ms-blob-type: BlockBlob" \
        -H "Content-Type: application/gzip" \
        --data-binary "@$tmp/hangar.db.gz" "$url/$name" > /dev/null \
        || die "cannot upload $name to $url"
    say "backed up $db to $url/$name ($(stat -c %s "$tmp/hangar.db.gz") bytes)"
}

list_backups() {
    local url t
    load_settings
    url=$(setting backup_url)
    t=$(token https://storage.azure.com/)
    bearer "$t" -H "x-ms-version: $BLOB_API" \
        "$url?restype=container&comp=list&prefix=hangar-" \
        | grep -o '<Name>[^<]*</Name>' | sed -e 's/<Name>//' -e 's/<\/Name>//' | sort
}

restore() {
    local name=${1:-} url tmp check db=$STATE/hangar.db stamp f t
    [ "$(id -u)" = 0 ] || die "restore must run as root"
    load_settings
    [ "$(database)" != postgres ] \
        || die "the database is the PostgreSQL flexible server: restore it with az postgres flexible-server restore (README.md: Several replicas)"
    url=$(setting backup_url)
    [ -n "$name" ] || name=$(list_backups | tail -n 1)
    [ -n "$name" ] || die "no backups in $url"
    tmp=$(mktemp -d /var/tmp/hangar-restore.XXXXXX)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    say "downloading $url/$name"
    t=$(token https://storage.azure.com/)
    bearer "$t" -H "x-ms-version: $BLOB_API" \
        -o "$tmp/hangar.db.gz" "$url/$name" || die "cannot download $name"
    gunzip "$tmp/hangar.db.gz"
    check=$(sqlite3 -init /dev/null "$tmp/hangar.db" "PRAGMA integrity_check")
    [ "$check" = ok ] || die "$name fails its integrity check: $check"
    systemctl stop hangard.service
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    for f in "$db" "$db-wal" "$db-shm"; do
        if [ -e "$f" ]; then mv "$f" "$f.before-restore-$stamp"; fi
    done
    install -m 0600 -o "$HANGAR_UID" -g "$HANGAR_UID" "$tmp/hangar.db" "$db"
    systemctl start hangard.service
    say "restored $name; the previous database is $db.before-restore-$stamp"
}

case "${1:-}" in
    prepare) prepare ;;
    run-hangard) run_hangard ;;
    run-proxy) run_proxy ;;
    backup) backup ;;
    list-backups) list_backups ;;
    restore) restore "${2:-}" ;;
    *)
        sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0" >&2
        exit 2
        ;;
esac
