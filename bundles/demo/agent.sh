#!/bin/sh
# The demo agent: shows where it runs and what it can reach.
echo "agent: hello from $(hostname), kernel $(uname -r) (gVisor reports its own kernel version)"
echo "agent: I am uid $(id -u); my root filesystem is read-only:"
if touch /cannot-write 2>/dev/null; then echo "agent:   wrote to / (unexpected)"; else echo "agent:   writing to / was refused"; fi
echo "agent: /tmp is writable: $(echo ok > /tmp/probe && cat /tmp/probe)"
echo "agent: network interfaces:"
ip -o addr 2>/dev/null | sed 's/^/agent:   /' || true
echo "agent: done"
