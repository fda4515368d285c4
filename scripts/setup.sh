#!/usr/bin/env bash
# One idempotent setup for a fresh Debian 12 machine, run as root by `make demo` and `make test`.
# Installs the real components lattice drives (runsc, nats-server, wireguard-go, ...), then npm ci + build.
# No mirror host is written anywhere: the backports suite reuses the URIs of the machine's own Debian source.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (the sandbox needs network namespaces, TUN and runsc); try: sudo make test" >&2
  exit 1
fi

PACKAGES=(iproute2 nftables busybox-static iperf3 nats-server wireguard-go wireguard-tools
          util-linux procps ca-certificates docker.io coturn gcc libc6-dev tcpdump zstd tar chromium)
BACKPORTS_PACKAGES=(runsc)

debian_uris() {
  # The URIs of the main Debian archive this machine already uses (deb822 or one-line format).
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ { if (match($0, /URIs:[^\n]*/)) print substr($0, RSTART+6, RLENGTH-6) }' "$f"
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1=="deb" && $3=="bookworm" {print $2}' /etc/apt/sources.list
  fi
}

ensure_backports() {
  local list=/etc/apt/sources.list.d/lattice-bookworm-backports.sources
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
    return 0
  fi
  local uris
  uris=$(debian_uris | tr '\n' ' ' | sed 's/ *$//')
  if [ -z "$uris" ]; then
    echo "setup: found no Debian bookworm source in /etc/apt to derive bookworm-backports from; add one and retry" >&2
    exit 1
  fi
  say "adding bookworm-backports (URIs: $uris)"
  cat >"$list" <<SRC
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

APT_UPDATED=${APT_UPDATED:-0}
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

export DEBIAN_FRONTEND=noninteractive
ensure_backports
mapfile -t need < <(missing_packages "${PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ]; then
  apt_update_once
  say "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mapfile -t need < <(missing_packages "${BACKPORTS_PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ]; then
  apt_update_once
  say "installing ${need[*]} from bookworm-backports"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need[@]}" >/dev/null
fi
# coturn and docker.io ship services that would start on install on systemd hosts; the tests start their own.

# A node_modules that is a symlink (a git worktree sharing another checkout's) is left alone: npm ci would
# empty the directory it points to.
if [ -L node_modules ]; then
  say "node_modules is a symlink: npm ci skipped"
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
say "build"
npm run --silent build
say "ready"
