#!/usr/bin/env bash
# Build (or reuse) the images' wheelhouse on this host: scripts/wheelhouse.sh [cpu|neuron] [--lock]
# --lock also pins every transitive dependency into constraints/<accelerator>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m smneuron.tools.build.wheelhouse "$@"
