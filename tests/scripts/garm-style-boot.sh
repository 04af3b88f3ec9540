#!/usr/bin/env bash
# Boots a runner the way the install script of a garm external provider
# does (garm-provider-common's cloudconfig), with curl, against hangard:
# the same routes, methods, headers and bodies, in the same order. Used by
# the e2e test `garm_boot`; written for Hangar, not taken from garm.
#
# What a provider takes from the bootstrap JSON on its stdin comes in as
# environment variables:
#   CALLBACK_URL  "callback-url"   (…/api/v1/callbacks or …/callbacks/status)
#   METADATA_URL  "metadata-url"   (…/api/v1/metadata)
#   BEARER_TOKEN  "instance-token"
#   USE_JIT       "jit_config_enabled" (true|false)
#   RUN_HOME      where the runner is unpacked (…/home/<user>/actions-runner)
#   RUN_AS        the runner's user (default runner)
#   TOOLS_URL     the runner archive to download; skipped when empty
#   CHECK_ONCE    when 1, also ask for every credential a second time and
#                 require a refusal (409) — the test's extra, not garm's
#
# Exits 0 once the runner reported idle. Any refused call ends the boot
# with "refused: HTTP <code> <method> <url>" on stderr after reporting
# `failed` where it still can.
set -euo pipefail

: "${CALLBACK_URL:?}" "${METADATA_URL:?}" "${BEARER_TOKEN:?}" "${RUN_HOME:?}" "${USE_JIT:?}"
RUN_AS=${RUN_AS:-runner}
TOOLS_URL=${TOOLS_URL:-}
CHECK_ONCE=${CHECK_ONCE:-0}

# garm's callback URL may or may not end in /status; system-info is its
# sibling, asked for with a trailing slash.
CALLBACK_URL=${CALLBACK_URL%/}
case "$CALLBACK_URL" in
    */status) STATUS_URL=$CALLBACK_URL; CALLBACK_BASE=${CALLBACK_URL%/status} ;;
    *) STATUS_URL=$CALLBACK_URL/status; CALLBACK_BASE=$CALLBACK_URL ;;
esac
SYSINFO_URL=$CALLBACK_BASE/system-info/
METADATA_URL=${METADATA_URL%/}

BODY=$(mktemp)
trap 'rm -f "$BODY"' EXIT

# request METHOD URL [DATA] -> body in $BODY, HTTP status on stdout.
request() {
    local args=(-sS -o "$BODY" -w '%{http_code}' -X "$1" -H 'Accept: application/json'
        -H "Authorization: Bearer ${BEARER_TOKEN}")
    # Like garm's script: `curl -d`, so the body is labelled a form.
    if [ $# -ge 3 ]; then args+=(-d "$3"); fi
    curl "${args[@]}" "$2"
}

refused() {
    echo "refused: HTTP $1 $2 $3: $(cat "$BODY")" >&2
}

# post URL JSON: a callback; a refusal ends the boot.
post() {
    local code
    code=$(request POST "$1" "$2")
    case "$code" in
        2??) ;;
        *) refused "$code" POST "$1"; exit 1 ;;
    esac
}

status() { # status MESSAGE [AGENT_ID]
    post "$STATUS_URL" "{\"status\": \"$1\", \"message\": \"$2\", \"agent_id\": ${3:-null}}"
}

fail() {
    # Reporting may itself be refused; the boot is over either way.
    request POST "$STATUS_URL" "{\"status\": \"failed\", \"message\": \"$1\"}" >/dev/null || true
    echo "boot failed: $1" >&2
    exit 1
}

# fetch PATH FILE: one metadata route into a file.
fetch() {
    local code
    code=$(request GET "$METADATA_URL/$1")
    case "$code" in
        2??) cp "$BODY" "$2" ;;
        *) refused "$code" GET "$METADATA_URL/$1"; fail "cannot fetch $1 (HTTP $code)" ;;
    esac
}

# again PATH: a second read must be refused with 409.
again() {
    [ "$CHECK_ONCE" = 1 ] || return 0
    local code
    code=$(request GET "$METADATA_URL/$1")
    if [ "$code" != 409 ]; then
        echo "second read of $1 answered HTTP $code, not 409: $(cat "$BODY")" >&2
        exit 1
    fi
}

status installing "downloading tools from ${TOOLS_URL:-nowhere}"
mkdir -p "$RUN_HOME"
if [ -n "$TOOLS_URL" ]; then
    archive=$(dirname "$RUN_HOME")/runner.tar.gz
    curl -fsSL -o "$archive" "$TOOLS_URL" || fail "failed to download tools"
    status installing "extracting runner"
    tar xzf "$archive" -C "$RUN_HOME" || fail "failed to extract runner"
fi

status installing "configuring runner"
AGENT_ID=
if [ "$USE_JIT" = true ]; then
    status installing "downloading JIT credentials"
    for f in runner credentials credentials_rsaparams; do
        fetch "credentials/$f" "$RUN_HOME/.$f"
        again "credentials/$f"
    done
    # The runner's id is in its .runner file.
    AGENT_ID=$(grep -o '"agentId": *[0-9]*' "$RUN_HOME/.runner" | tr -dc 0-9)
    [ -n "$AGENT_ID" ] || fail "no agentId in .runner"
else
    fetch runner-registration-token/ "$RUN_HOME/.registration-token"
    [ -s "$RUN_HOME/.registration-token" ] || fail "empty registration token"
    again runner-registration-token/
    # config.sh --token would register the runner here.
fi

fetch system/service-name "$RUN_HOME/.service"
SVC_NAME="$(cat "$RUN_HOME/.service").service"
status installing "generating systemd unit file"
fetch "systemd/unit-file?runAsUser=$RUN_AS" "$RUN_HOME/$SVC_NAME"
grep -qx "User=$RUN_AS" "$RUN_HOME/$SVC_NAME" || fail "unit file does not run as $RUN_AS"
grep -qx "ExecStart=/home/$RUN_AS/actions-runner/runsvc.sh" "$RUN_HOME/$SVC_NAME" \
    || fail "unit file does not start the runner"
# systemctl enable/start would run here.

OS_NAME=Hangar-e2e
OS_VERSION=1.0
post "$SYSINFO_URL" "{\"os_name\": \"$OS_NAME\", \"os_version\": \"$OS_VERSION\", \"agent_id\": ${AGENT_ID:-null}}"
status idle "runner successfully installed" "${AGENT_ID:-null}"
echo "booted: service $SVC_NAME, agent ${AGENT_ID:-unknown}"
