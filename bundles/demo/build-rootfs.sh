#!/bin/sh
# Builds the demo agent's root filesystem from Debian's busybox-static: one static binary, its
# applet symlinks, and the agent script. Usage: build-rootfs.sh OUTDIR
set -eu
out=${1:?usage: build-rootfs.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-rootfs: $busybox missing; run: make setup" >&2; exit 1; }
file -b "$busybox" 2>/dev/null | grep -q dynamic && { echo "build-rootfs: $busybox is not static; install busybox-static" >&2; exit 1; }

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/agent" "$tmp/tmp" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/root" "$tmp/run"
cp "$busybox" "$tmp/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/tmp:/bin/sh\n' > "$tmp/etc/passwd"
printf 'root:x:0:\nagent:x:1000:\n' > "$tmp/etc/group"
printf 'hosts: files dns\n' > "$tmp/etc/nsswitch.conf"
cp "$here/agent.sh" "$tmp/agent/agent.sh"
chmod 0755 "$tmp/agent/agent.sh"
# agentcall SOCKET METHOD PATH [JSON]: an HTTP call over the agent API's Unix socket (busybox cannot).
if command -v gcc >/dev/null 2>&1; then
  gcc -static -O2 -o "$tmp/bin/agentcall" "$here/../../e2e/agentapi/fixtures/agentcall.c"
fi
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
