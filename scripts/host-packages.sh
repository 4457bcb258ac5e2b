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
# `serve` runs its own nginx: keep the package's post-install from starting a system one on
# port 80 (policy-rc.d answering 101 = "action not allowed"), unless a policy is already set.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ -z "$added_policy" ] || $SUDO rm -f "$policy"
echo "host packages: installed ${missing[*]}"
