#!/usr/bin/env bash
# make demo: the demo agent (bundles/demo) runs under gVisor from a bundle lattice builds.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${LATTICE_STATE_DIR:-$PWD/.state}
echo "== lattice doctor"
node dist/cli/main.js doctor || true
echo
echo "== lattice sandbox run --rootfs $state/demo-rootfs -- /agent/agent.sh"
node dist/cli/main.js --state-dir "$state" sandbox run --name demo-agent --rootfs "$state/demo-rootfs" -- /agent/agent.sh
