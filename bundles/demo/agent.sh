#!/bin/sh
# The demo agent: shows where it runs and what it can and cannot reach.
# Usage: agent.sh [PEER_NAME]   (PEER_NAME like web.demo.lattice: a peer serving HTTP on 8080)
peer=$1
echo "agent: hello from $(hostname), kernel $(uname -r) (gVisor's, not the host's)"
if touch /cannot-write 2>/dev/null; then echo "agent: wrote to / (unexpected)"; else echo "agent: my root filesystem is read-only"; fi
echo "agent: my addresses: $(ip -o addr | awk '$2 != "lo" {print $4}' | tr '\n' ' ')"
[ -n "$peer" ] || { echo "agent: no peer given; done"; exit 0; }

addr=$(nslookup "$peer" 2>/dev/null | awk '/^Name:/ {found=1} found && /^Address/ {print $2; exit}')
if [ -z "$addr" ]; then echo "agent: cannot resolve $peer"; exit 1; fi
echo "agent: $peer resolves to $addr"
get() { printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" | nc -w 3 "$1" "$2" 2>/dev/null | tail -n 1; }

body=$(get "$addr" 8080)
if [ -n "$body" ]; then echo "agent: GET http://$peer:8080/ (allowed by policy) -> \"$body\""; else echo "agent: GET http://$peer:8080/ failed (unexpected)"; fi
body=$(get "$addr" 9090)
if [ -n "$body" ]; then echo "agent: GET http://$peer:9090/ -> \"$body\" (unexpected: the policy denies it)"; else echo "agent: GET http://$peer:9090/ (denied by policy) -> refused"; fi
if nslookup example.com >/dev/null 2>&1; then echo "agent: example.com resolved (unexpected)"; else echo "agent: example.com does not resolve: only overlay names exist here"; fi
echo "agent: done"
