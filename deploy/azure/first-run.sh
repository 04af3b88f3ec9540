#!/usr/bin/env bash
# First run of a Hangar deployed with deploy/azure, through the `hangar` CLI:
# the admin, the github.com endpoint, the credentials, the repository and
# its pool of Azure confidential VMs (what garm's init step did).
# Idempotent: whatever exists already is left as it is, and said so.
#
# Usage: deploy/azure/first-run.sh [--terraform-dir DIR]
#   --terraform-dir  read HANGAR_SERVER_URL, KEY_VAULT_NAME and PROVIDER_NAME
#                    from `terraform output` in DIR when they are not set
#
# Needs hangar, jq and curl; az (logged in) when secrets come from Key Vault.
#
# Environment [default]:
#   HANGAR_SERVER_URL   Hangar's public URL (terraform output public_url)
#   REPO_OWNER          the repository to serve (required)
#   REPO_NAME           (required)
#   KEY_VAULT_NAME      read the secrets below that are not given from here
#   ADMIN_USERNAME      [admin]
#   ADMIN_PASSWORD or ADMIN_PASSWORD_FILE     [Key Vault: hangar-admin-password]
#   WEBHOOK_SECRET or WEBHOOK_SECRET_FILE     [Key Vault: github-webhook-secret]
#   GITHUB_PAT or GITHUB_PAT_FILE             [Key Vault: github-pat]
#   GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID: use a GitHub App instead of a
#     PAT, with GITHUB_APP_PRIVATE_KEY_FILE   [Key Vault: github-app-private-key]
#     and optionally GITHUB_APP_WEBHOOK_SECRET (the App's own webhook, sent
#     to <public_url>/webhooks)
#   ENDPOINT_NAME [github.com]   CREDENTIALS_NAME [gh]   PROVIDER_NAME [azure-cvm]
#   POOL_FLAVOR [Standard_DC2as_v5]
#   POOL_IMAGE [Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest]
#   POOL_TAGS [self-hosted,azure-cvm,ubuntu-2204]   POOL_EXTRA_SPECS [{"confidential": true}]
#   POOL_MIN_IDLE [0]   POOL_MAX_RUNNERS [4]
#   CREATE_WEBHOOK=1    also create the repository's webhook on GitHub (needs a
#                       PAT allowed to manage hooks: admin:repo_hook, or the
#                       fine-grained "Webhooks: read and write")
#   WAIT_SECS [900]     how long to wait for Hangar to answer (first boot, certificate)
set -euo pipefail

say() { echo "first-run: $*" >&2; }
die() {
    echo "first-run: ERROR: $*" >&2
    exit 1
}

TF_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --terraform-dir)
            [ $# -ge 2 ] || die "--terraform-dir needs a directory"
            TF_DIR=$2
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"
            exit 0
            ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

tf_output() { terraform -chdir="$TF_DIR" output -raw "$1"; }
if [ -n "$TF_DIR" ]; then
    command -v terraform > /dev/null || die "--terraform-dir needs terraform"
    : "${HANGAR_SERVER_URL:=$(tf_output public_url)}"
    : "${KEY_VAULT_NAME:=$(tf_output key_vault_name)}"
    : "${PROVIDER_NAME:=$(tf_output provider_name 2> /dev/null || echo azure-cvm)}"
fi

URL=${HANGAR_SERVER_URL:-}
URL=${URL%/}
KEY_VAULT_NAME=${KEY_VAULT_NAME:-}
ADMIN_USERNAME=${ADMIN_USERNAME:-admin}
ENDPOINT_NAME=${ENDPOINT_NAME:-github.com}
CREDENTIALS_NAME=${CREDENTIALS_NAME:-gh}
PROVIDER_NAME=${PROVIDER_NAME:-azure-cvm}
POOL_FLAVOR=${POOL_FLAVOR:-Standard_DC2as_v5}
POOL_IMAGE=${POOL_IMAGE:-Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest}
POOL_TAGS=${POOL_TAGS:-self-hosted,azure-cvm,ubuntu-2204}
POOL_EXTRA_SPECS=${POOL_EXTRA_SPECS:-'{"confidential": true}'}
POOL_MIN_IDLE=${POOL_MIN_IDLE:-0}
POOL_MAX_RUNNERS=${POOL_MAX_RUNNERS:-4}
GITHUB_API_URL=${GITHUB_API_URL:-https://api.github.com}
WAIT_SECS=${WAIT_SECS:-900}

[ -n "$URL" ] || die "set HANGAR_SERVER_URL (or use --terraform-dir)"
if [ -z "${REPO_OWNER:-}" ] || [ -z "${REPO_NAME:-}" ]; then
    die "set REPO_OWNER and REPO_NAME"
fi
for tool in hangar jq curl; do
    command -v "$tool" > /dev/null || die "$tool is not installed"
done
jq -e 'type == "object"' <<< "$POOL_EXTRA_SPECS" > /dev/null || die "POOL_EXTRA_SPECS is not a JSON object"

# A throw-away CLI profile: nothing of this run stays in ~/.config, and no
# profile or token from the environment is used by mistake.
unset HANGAR_URL HANGAR_TOKEN HANGAR_PROFILE
HANGAR_CLI_CONFIG_DIR=$(mktemp -d)
export HANGAR_CLI_CONFIG_DIR
trap 'rm -rf "$HANGAR_CLI_CONFIG_DIR"' EXIT
ERR=$HANGAR_CLI_CONFIG_DIR/stderr

hj() { hangar --output json "$@"; }

# secret VAR KEY_VAULT_SECRET: $VAR, else the file ${VAR}_FILE names, else
# the Key Vault secret.
secret() {
    local var=$1 kv_secret=$2 file_var="${1}_FILE" value
    if [ -n "${!var:-}" ]; then
        printf '%s' "${!var}"
    elif [ -n "${!file_var:-}" ]; then
        value=$(< "${!file_var}") || die "cannot read ${!file_var}"
        printf '%s' "$value"
    elif [ -n "$KEY_VAULT_NAME" ]; then
        command -v az > /dev/null || die "$var is not set and az is not installed to read it from Key Vault"
        az keyvault secret show --vault-name "$KEY_VAULT_NAME" --name "$kv_secret" \
            --query value --output tsv \
            || die "cannot read $kv_secret from Key Vault $KEY_VAULT_NAME (set $var or ${var}_FILE instead)"
    else
        die "set $var, ${var}_FILE or KEY_VAULT_NAME"
    fi
}

# --- wait for the daemon ---------------------------------------------------

say "waiting for $URL/healthz (up to ${WAIT_SECS}s)"
deadline=$((SECONDS + WAIT_SECS))
until curl -fsS --max-time 10 -o /dev/null "$URL/healthz" 2> "$ERR"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$URL does not answer: $(cat "$ERR")"
    sleep 10
done

# --- admin -------------------------------------------------------------------

password=$(secret ADMIN_PASSWORD hangar-admin-password)
if printf '%s' "$password" | hj profile add --name default --url "$URL" \
    --username "$ADMIN_USERNAME" --password-stdin > /dev/null 2> "$ERR"; then
    say "admin $ADMIN_USERNAME exists; logged in"
else
    login_error=$(cat "$ERR")
    if printf '%s' "$password" | hj init --url "$URL" --username "$ADMIN_USERNAME" \
        --password-stdin > /dev/null 2> "$ERR"; then
        say "created admin $ADMIN_USERNAME"
    else
        die "cannot log in ($login_error) nor initialise ($(cat "$ERR"))"
    fi
fi
unset password

# --- endpoint and credentials ----------------------------------------------

if hj endpoint ls | jq -e --arg n "$ENDPOINT_NAME" 'any(.[]; .name == $n)' > /dev/null; then
    say "endpoint $ENDPOINT_NAME exists"
else
    hj endpoint add --name "$ENDPOINT_NAME" \
        --base-url https://github.com --api-base-url "$GITHUB_API_URL" > /dev/null
    say "added endpoint $ENDPOINT_NAME"
fi

if hj credentials ls | jq -e --arg n "$CREDENTIALS_NAME" 'any(.[]; .name == $n)' > /dev/null; then
    say "credentials $CREDENTIALS_NAME exist (rotate with: hangar credentials update $CREDENTIALS_NAME …)"
elif [ -n "${GITHUB_APP_ID:-}" ]; then
    [ -n "${GITHUB_APP_INSTALLATION_ID:-}" ] || die "GITHUB_APP_ID needs GITHUB_APP_INSTALLATION_ID"
    key_file=${GITHUB_APP_PRIVATE_KEY_FILE:-}
    if [ -z "$key_file" ]; then
        key_file=$HANGAR_CLI_CONFIG_DIR/app.pem
        (umask 077 && secret GITHUB_APP_PRIVATE_KEY github-app-private-key > "$key_file")
    fi
    app_hook=()
    if [ -n "${GITHUB_APP_WEBHOOK_SECRET:-}" ]; then
        app_hook=(--app-webhook-secret "$GITHUB_APP_WEBHOOK_SECRET")
    fi
    hj credentials add --name "$CREDENTIALS_NAME" --endpoint "$ENDPOINT_NAME" --auth-type app \
        --app-id "$GITHUB_APP_ID" --installation-id "$GITHUB_APP_INSTALLATION_ID" \
        --private-key-path "$key_file" "${app_hook[@]}" > /dev/null
    say "added credentials $CREDENTIALS_NAME (GitHub App $GITHUB_APP_ID)"
else
    pat=$(secret GITHUB_PAT github-pat)
    hj credentials add --name "$CREDENTIALS_NAME" --endpoint "$ENDPOINT_NAME" --auth-type pat \
        --pat-oauth-token "$pat" > /dev/null
    say "added credentials $CREDENTIALS_NAME (PAT)"
fi

# --- repository and pool ---------------------------------------------------

repo=$(hj repository ls --owner "$REPO_OWNER" --name "$REPO_NAME" | jq -c '.[0] // empty')
if [ -n "$repo" ]; then
    say "repository $REPO_OWNER/$REPO_NAME exists"
else
    webhook_secret=$(secret WEBHOOK_SECRET github-webhook-secret)
    repo=$(hj repository add --credentials "$CREDENTIALS_NAME" \
        --owner "$REPO_OWNER" --name "$REPO_NAME" --webhook-secret "$webhook_secret" | jq -c .)
    say "added repository $REPO_OWNER/$REPO_NAME"
fi
REPO_ID=$(jq -r .id <<< "$repo")
WEBHOOK_URL=$(jq -r .webhook_url <<< "$repo")

pool_id=$(hj pool ls --repo "$REPO_ID" | jq -r --arg p "$PROVIDER_NAME" \
    --arg f "$POOL_FLAVOR" --arg i "$POOL_IMAGE" \
    'first(.[] | select(.provider_name == $p and .flavor == $f and .image == $i) | .id) // empty')
if [ -n "$pool_id" ]; then
    say "pool $pool_id ($PROVIDER_NAME, $POOL_FLAVOR) exists (change it with: hangar pool update $pool_id …)"
else
    pool_id=$(hj pool add --repo "$REPO_ID" --provider-name "$PROVIDER_NAME" \
        --flavor "$POOL_FLAVOR" --image "$POOL_IMAGE" --tags "$POOL_TAGS" \
        --min-idle-runners "$POOL_MIN_IDLE" --max-runners "$POOL_MAX_RUNNERS" \
        --extra-specs "$POOL_EXTRA_SPECS" --enabled true | jq -r .id)
    say "added pool $pool_id ($PROVIDER_NAME, $POOL_FLAVOR, tags $POOL_TAGS)"
fi

# --- the webhook on GitHub ---------------------------------------------------

# github API-PATH CURL-ARGS...: a GitHub API call with the PAT (read from stdin).
github() {
    local path=$1
    shift
    printf 'Authorization: Bearer %s\n' "$pat" | curl -fsS -H @- \
        -H "Accept: application/vnd.github+json" -H "X-GitHub-Api-Version: 2022-11-28" \
        "$@" "$GITHUB_API_URL$path"
}

if [ "${CREATE_WEBHOOK:-0}" = 1 ]; then
    pat=${pat:-$(secret GITHUB_PAT github-pat)}
    hooks=$(github "/repos/$REPO_OWNER/$REPO_NAME/hooks?per_page=100") \
        || die "cannot list the webhooks of $REPO_OWNER/$REPO_NAME (may the PAT manage hooks?)"
    if jq -e --arg u "$WEBHOOK_URL" 'any(.[]; .config.url == $u)' <<< "$hooks" > /dev/null; then
        say "GitHub webhook to $WEBHOOK_URL exists"
    else
        webhook_secret=${webhook_secret:-$(secret WEBHOOK_SECRET github-webhook-secret)}
        hook=$HANGAR_CLI_CONFIG_DIR/hook.json
        (umask 077 && jq -n --arg u "$WEBHOOK_URL" --arg s "$webhook_secret" \
            '{name: "web", active: true, events: ["workflow_job"],
              config: {url: $u, content_type: "json", secret: $s, insecure_ssl: "0"}}' > "$hook")
        github "/repos/$REPO_OWNER/$REPO_NAME/hooks" -X POST --data-binary "@$hook" > /dev/null \
            || die "cannot create the webhook on $REPO_OWNER/$REPO_NAME"
        say "created the GitHub webhook to $WEBHOOK_URL (event: Workflow jobs)"
    fi
fi

cat << EOF

Hangar at $URL serves $REPO_OWNER/$REPO_NAME (repository $REPO_ID, pool $pool_id).
Webhook for GitHub (Settings > Webhooks), unless CREATE_WEBHOOK=1 made it:
  Payload URL:  $WEBHOOK_URL
  Content type: application/json
  Secret:       the Key Vault secret github-webhook-secret (or WEBHOOK_SECRET)
  Events:       Workflow jobs only
Jobs with runs-on: [$POOL_TAGS] now get a fresh confidential VM each.
EOF
