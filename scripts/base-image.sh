#!/usr/bin/env bash
# Provide the Debian bookworm base image of the CPU images, offline if need be.
#
# Result: the tag $BASE_TAG (default smneuron-base:bookworm) exists locally. In order:
#   1. it already exists                     -> nothing to do (cached);
#   2. $SOURCE_IMAGE (debian:bookworm-slim) is present or can be pulled -> tag it;
#   3. otherwise bootstrap it: debootstrap --variant=minbase from the Debian mirror this
#      machine's apt already uses, then `docker import` (about 30 s; needs root).
# Set FORCE=1 to rebuild the tag. Prints the tag on its last line.
set -euo pipefail

base_tag="${BASE_TAG:-smneuron-base:bookworm}"
source_image="${SOURCE_IMAGE:-debian:bookworm-slim}"
suite="${SUITE:-bookworm}"

say() { echo "base-image: $*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$base_tag" >/dev/null 2>&1; then
    say "$base_tag exists (cached)"
    echo "$base_tag"
    exit 0
fi

if docker image inspect "$source_image" >/dev/null 2>&1 \
    || timeout "${PULL_TIMEOUT:-60}" docker pull -q "$source_image" >/dev/null 2>&1; then
    docker tag "$source_image" "$base_tag"
    say "tagged $source_image as $base_tag"
    echo "$base_tag"
    exit 0
fi
say "$source_image cannot be pulled: bootstrapping $suite with debootstrap"

# The mirror: whatever this machine's apt uses for Debian (never a name written here).
apt_mirror() {
    local uri
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    # deb822 sources: the first URIs line of a stanza whose Suites name the suite itself.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, " "); uris = u[1] }
                    if ($i ~ /^Suites:/) { n = split($i, s, " "); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                }
                if (ok && uris != "") { print uris; exit }
            }' "$f")
        if [ -n "$uri" ]; then
            echo "$uri"
            return
        fi
    done
    # one-line sources: "deb [opts] URI suite components"
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v suite="$suite" '$1 == "deb" { sub(/\[[^]]*\][ \t]*/, ""); if ($3 == suite) { print $2; exit } }')
    if [ -n "$uri" ]; then
        echo "$uri"
        return
    fi
    say "no Debian $suite mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    return 1
}

if [ "$(id -u)" != 0 ]; then
    say "debootstrap needs root" >&2
    exit 1
fi
mirror=$(apt_mirror)
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root_dir=$(mktemp -d "${TMPDIR:-/tmp}/smneuron-rootfs.XXXXXX")
trap 'rm -rf "$root_dir"' EXIT
say "debootstrap --variant=minbase $suite from $mirror"
started=$SECONDS
debootstrap --variant=minbase "$suite" "$root_dir" "$mirror" >"$root_dir.log" 2>&1 || {
    tail -n 30 "$root_dir.log" >&2
    exit 1
}
rm -f "$root_dir.log"
# Slim it the way the -slim images are: no package cache, no apt lists.
rm -rf "$root_dir"/var/cache/apt/archives/*.deb "$root_dir"/var/lib/apt/lists/* \
    "$root_dir"/usr/share/doc/* "$root_dir"/usr/share/man/* "$root_dir"/usr/share/locale/*
tar -C "$root_dir" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $suite" - "$base_tag" >/dev/null
say "built $base_tag in $((SECONDS - started))s ($(docker image inspect -f '{{.Size}}' "$base_tag" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$base_tag"
