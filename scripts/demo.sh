#!/usr/bin/env bash
# make demo: the main job on the embedded default. An embedded control plane (nats-server + JetStream),
# one enrollment token, two enrolled sandboxes under gVisor on the WireGuard overlay: "web" serves HTTP,
# "agent" makes an allowed request (works) and a denied one (refused). Then a Linux host (a network namespace
# of its own) joins with `lattice up`, a sandbox reaches it by name, and `lattice down` leaves nothing. Then the
# sandboxes stop cleanly and the control plane stays up for its web console (the last lines say where, and how
# to stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${LATTICE_STATE_DIR:-$PWD/.state}/demo
nats_port=${DEMO_NATS_PORT:-14222}
api=127.0.0.1:${DEMO_API_PORT:-18470}
lattice() { node dist/cli/main.js "$@"; }
# The joining host of step 6: a network namespace with a veth to this one (names unique per run).
hostns=ltdemo-host-$$
hostveth=ltdemo$$
natstable=ltdemo_$$
host() { ip netns exec "$hostns" node dist/cli/main.js --state-dir "$state/host1" "$@"; }
# Background processes are started as `node ...` directly, so $! is the launcher itself and receives our SIGTERM.
pids=()
cleanup() {
  # web first (its launcher stops its sandbox), then the control plane.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}
host_cleanup() {
  # The namespace (and its veth) goes only when no process is left in it.
  if [ -n "${httpd_pid:-}" ]; then kill "$httpd_pid" 2>/dev/null || true; wait "$httpd_pid" 2>/dev/null || true; httpd_pid=; fi
  if [ -e "/var/run/netns/$hostns" ]; then host down --name host1 >/dev/null 2>&1 || true; ip netns del "$hostns"; fi
  nft delete table ip "$natstable" 2>/dev/null || true
}
trap 'host_cleanup; cleanup' EXIT
# Killed (Ctrl-C, timeout): exit through the EXIT trap too, so nothing of the run is left behind.
trap 'exit 130' INT TERM
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

echo "== 2. one enrollment token for two agents and a host in namespace 'demo' (policy: bundles/demo/policy.json)"
token=$(lattice --state-dir "$state/cp" token create --namespace demo --limit 3 --ttl 10m --policy bundles/demo/policy.json --api "http://$api")
echo "   token: ${token:0:6}... (one-time, limit 3, expires in 10 minutes)"

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

echo "== 6. a Linux host joins with \`lattice up\`: a network namespace of its own (198.18.77.2) serving HTTP on 8080"
ip netns add "$hostns"
ip link add "$hostveth" type veth peer name eth0 netns "$hostns"
ip addr add 198.18.77.1/30 dev "$hostveth" && ip link set "$hostveth" up
ip -n "$hostns" addr add 198.18.77.2/30 dev eth0 && ip -n "$hostns" link set eth0 up && ip -n "$hostns" link set lo up
# The embedded NATS server listens on loopback only: let the namespace reach it (demo plumbing, removed at exit;
# across real hosts the control plane runs with --listen, see "Several hosts" in the README).
sysctl -qw "net.ipv4.conf.$hostveth.route_localnet=1"
echo "table ip $natstable { chain pre { type nat hook prerouting priority dstnat; iifname \"$hostveth\" tcp dport $nats_port dnat to 127.0.0.1:$nats_port; }; }" | nft -f -
mkdir -p "$state/host-www" && echo "hello from host1" > "$state/host-www/index.html"
ip netns exec "$hostns" busybox httpd -f -p 8080 -h "$state/host-www" &
httpd_pid=$!
host up --name host1 --token "$token" --control-plane "nats://198.18.77.1:$nats_port" --advertise 198.18.77.2 > "$state/host1.log" 2>&1 &
up_pid=$!
for _ in $(seq 300); do grep -q 'is up on' "$state/host1.log" && break; kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
grep -q 'is up on' "$state/host1.log" || { cat "$state/host1.log"; exit 1; }
grep '^lattice:' "$state/host1.log" | sed 's/^/   /'
echo "   -- the agent sandbox tries the host by name (the namespace policy allows 8080 only)"
lattice --state-dir "$state/agent" sandbox start --name agent --control-plane "nats://127.0.0.1:$nats_port" \
  --rootfs "$state/../demo-rootfs" -- /agent/agent.sh host1.demo.lattice 2>&1 | grep -E 'resolves|GET' | sed 's/^/   /'
echo "   -- lattice status, on the host"
host status --name host1 | sed 's/^/   /'
echo "   -- lattice down, on the host"
host down --name host1 | sed 's/^/   /'
wait "$up_pid" || true
links=$(ip -n "$hostns" -o link show | grep -c lattice || true)
routes=$(ip -n "$hostns" route show | grep -c lattice || true)
echo "   left on the host: $links lattice link(s), $routes route(s) into the overlay, $(find "$state/host1/host" -type f 2>/dev/null | wc -l) runtime file(s)"
host_cleanup

echo "== 7. clean shutdown of the sandboxes"
keep=()
for pid in "${pids[@]}"; do [ "$pid" = "$cp_pid" ] || keep+=("$pid"); done
pids=("${keep[@]}")
cleanup
pids=()
echo "   stopped web; containers left: $(runsc --root "$state/web/runsc" list -quiet 2>/dev/null | wc -l)"

echo "== 8. the web console (the control plane keeps running for it: agents, the denied flow, policy, approvals)"
echo "$cp_pid" > "$state/control-plane.pid"
console=$(grep -o 'console: *http[^ ]*' "$state/control-plane.log" | awk '{print $2}')
echo "   console:  $console   (sign in with the admin token: cat $state/cp/control-plane/admin-token)"
echo "   open it:  xdg-open $console   (from another machine: ssh -L ${api##*:}:$api THIS_HOST, then open the same address)"
echo "   stop it:  kill \$(cat $state/control-plane.pid)   (the next make demo does it too)"
