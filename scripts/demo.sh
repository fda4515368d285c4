#!/usr/bin/env bash
# make demo: the main job on the embedded default. An embedded control plane (nats-server + JetStream),
# one enrollment token, two enrolled sandboxes under gVisor on the WireGuard overlay: "web" serves HTTP,
# "agent" makes an allowed request (works) and a denied one (refused). Then the sandboxes stop cleanly and the
# control plane stays up for its web console (the last lines say where, and how to stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${LATTICE_STATE_DIR:-$PWD/.state}/demo
nats_port=${DEMO_NATS_PORT:-14222}
api=127.0.0.1:${DEMO_API_PORT:-18470}
lattice() { node dist/cli/main.js "$@"; }
# Background processes are started as `node ...` directly, so $! is the launcher itself and receives our SIGTERM.
pids=()
cleanup() {
  # web first (its launcher stops its sandbox), then the control plane.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}
trap cleanup EXIT
# The control plane a previous demo left running for its console.
if [ -f "$state/control-plane.pid" ]; then
  old=$(cat "$state/control-plane.pid")
  # Only if that pid is still our control plane (not a pid reused since, e.g. after a reboot).
  if tr '\0' ' ' < "/proc/$old/cmdline" 2>/dev/null | grep -q "control-plane start" && kill -TERM "$old" 2>/dev/null; then
    while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
  fi
fi
rm -rf "$state" && mkdir -p "$state"

echo "== 1. embedded control plane"
node dist/cli/main.js --state-dir "$state/cp" control-plane start --nats-port "$nats_port" --http "$api" > "$state/control-plane.log" 2>&1 &
cp_pid=$!
pids+=("$cp_pid")
for _ in $(seq 100); do grep -q 'control plane ready' "$state/control-plane.log" && break; sleep 0.1; done
grep -q 'control plane ready' "$state/control-plane.log" || { cat "$state/control-plane.log"; exit 1; }
sed 's/^/   /' "$state/control-plane.log"

echo "== 2. one enrollment token for two agents in namespace 'demo' (policy: bundles/demo/policy.json)"
token=$(lattice --state-dir "$state/cp" token create --namespace demo --limit 2 --ttl 10m --policy bundles/demo/policy.json --api "http://$api")
echo "   token: ${token:0:6}... (one-time, limit 2, expires in 10 minutes)"

echo "== 3. sandbox 'web' enrolls and serves HTTP on 8080 and 9090 inside gVisor"
node dist/cli/main.js --state-dir "$state/web" sandbox start --name web --control-plane "nats://127.0.0.1:$nats_port" --token "$token" \
  --rootfs "$state/../demo-rootfs" -- sh -c 'mkdir -p /tmp/www && echo "hello from web" > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && exec httpd -f -p 9090 -h /tmp/www' \
  > "$state/web.log" 2>&1 &
pids=($! "${pids[@]}")
for _ in $(seq 100); do grep -q 'enrolled' "$state/web.log" && break; sleep 0.1; done
sed 's/^/   /' "$state/web.log"
sleep 2

echo "== 4. sandbox 'agent' enrolls and tries the network"
lattice --state-dir "$state/agent" sandbox start --name agent --control-plane "nats://127.0.0.1:$nats_port" --token "$token" \
  --rootfs "$state/../demo-rootfs" -- /agent/agent.sh web.demo.lattice 2>&1 | sed 's/^/   /'

echo "== 5. what the control plane recorded (lattice audit events)"
sleep 2
lattice --state-dir "$state/cp" audit events --namespace demo --type flow.opened --api "http://$api" | sed 's/^/   /'
lattice --state-dir "$state/cp" agent ls --api "http://$api" | sed 's/^/   /'

echo "== 6. clean shutdown of the sandboxes"
keep=()
for pid in "${pids[@]}"; do [ "$pid" = "$cp_pid" ] || keep+=("$pid"); done
pids=("${keep[@]}")
cleanup
pids=()
echo "   stopped web; containers left: $(runsc --root "$state/web/runsc" list -quiet 2>/dev/null | wc -l)"

echo "== 7. the web console (the control plane keeps running for it: agents, the denied flow, policy, approvals)"
echo "$cp_pid" > "$state/control-plane.pid"
console=$(grep -o 'console: *http[^ ]*' "$state/control-plane.log" | awk '{print $2}')
echo "   console:  $console   (sign in with the admin token: cat $state/cp/control-plane/admin-token)"
echo "   open it:  xdg-open $console   (from another machine: ssh -L ${api##*:}:$api THIS_HOST, then open the same address)"
echo "   stop it:  kill \$(cat $state/control-plane.pid)   (the next make demo does it too)"
