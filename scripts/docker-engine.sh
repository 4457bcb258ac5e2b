#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and start dockerd when none does.
#
# Idempotent: where `docker info` already works, it does nothing. Needs root (apt-get, dockerd)
# only when it has something to do. Used by .ci/run on fresh CI machines.
#
#   DOCKERD_LOG   where dockerd writes its log   (default /var/log/smneuron-dockerd.log)
#   DOCKERD_PID   where its process id is kept   (default /var/run/smneuron-dockerd.pid)
#   DOCKERD_WAIT  seconds to wait for the engine (default 60)
set -euo pipefail

log_file="${DOCKERD_LOG:-/var/log/smneuron-dockerd.log}"
pid_file="${DOCKERD_PID:-/var/run/smneuron-dockerd.pid}"
wait_s="${DOCKERD_WAIT:-60}"

say() { echo "docker-engine: $*"; }

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up && command -v docker-compose >/dev/null 2>&1 \
    && command -v docker-registry >/dev/null 2>&1; then
    say "engine already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "no engine answers and this is not root: start Docker yourself (or run as root)" >&2
    exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# The push tests run Debian's registry on 127.0.0.1 (never started as a service here).
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables >/dev/null
fi

if engine_up; then
    say "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi
if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    say "dockerd already started (pid $(cat "$pid_file")), waiting for it"
else
    say "starting dockerd (log: $log_file)"
    mkdir -p "$(dirname "$log_file")" "$(dirname "$pid_file")"
    # Its own session (setsid): the engine outlives the shell or job that started it (a job
    # runner that stops a process group would otherwise stop dockerd with it).
    setsid nohup dockerd >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
fi

deadline=$((SECONDS + wait_s))
until engine_up; do
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        say "dockerd exited; last lines of $log_file:" >&2
        tail -n 30 "$log_file" >&2 || true
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "engine not ready after ${wait_s}s; last lines of $log_file:" >&2
        tail -n 30 "$log_file" >&2 || true
        exit 1
    fi
    sleep 1
done
say "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null), pid $(cat "$pid_file"))"
