#!/usr/bin/env bash
# OS packages the host test tiers need (nginx: the front of both serving stacks, started by
# `serve` in tests/integration/serving). Idempotent; installs only what is missing (root, apt).
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -eq 0 ]; then
    echo "host packages: all present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "host packages: missing ${missing[*]} and no apt-get here; install them yourself" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends; nginx's post-install may fail to start its own service (no init
# here): that is expected and harmless, `serve` runs its own nginx.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "host packages: installed ${missing[*]}"
