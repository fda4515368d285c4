/**
 * Which of the overlay's approved routes a host joined with `lattice up` routes into its own TUN.
 * Pure: the directory and this namespace's addresses in, prefixes out (./up.ts applies them with
 * HostLink.addRoute/deleteRoute).
 *
 * A sandbox sends everything into its TUN (its default route) and the WireGuard AllowedIPs pick the
 * peer. A host keeps its own routing table, so it gets one kernel route per approved route another
 * peer wins (controlplane/routes.ts peerAllowedIPs: longest prefix across peers, the tie rule there):
 *
 *   10.200.0.0/24 dev lattice0 src 10.77.0.5      (approved on router R; the kernel's longest prefix
 *                                                   decides between it and the host's own routes)
 *
 * Left out, each for a reason the caller can log:
 *   - default routes (0.0.0.0/0, ::/0): `lattice up` chooses no exit node; sending the host's whole
 *     traffic (its WireGuard UDP and its control-plane connection included) into the TUN would loop;
 *   - 'own': a route this host advertises itself, or one inside it (its own LAN; it forwards those);
 *   - 'local': a route equal to or inside a prefix connected to another interface here (the host
 *     reaches it directly; a TUN route would replace the kernel's connected route). A route that only
 *     contains such a prefix is kept: the longer connected prefix still wins for the LAN;
 *   - 'endpoint': a route containing a peer's WireGuard endpoint address (its UDP would enter the TUN).
 */
import { cidrContains, cidrHas, formatCidr, parseCidr, parseIp, type Cidr } from '../net/addr.js';
import { peerAllowedIPs } from '../controlplane/routes.js';
import type { Peer } from '../controlplane/types.js';

export type SkipReason = 'exit' | 'own' | 'local' | 'endpoint';

export interface HostRoutesInput {
  /** The directory's peers (not this node). */
  peers: readonly Peer[];
  /** What this node advertises (canonical CIDRs; `--advertise-routes`, `--exit-node`). */
  advertised: readonly string[];
  /** Prefixes connected to this namespace's other interfaces ("192.168.1.7/24": address/prefix length). */
  local: readonly string[];
}

export interface HostRoutes {
  /** Prefixes to route into the TUN, canonical text, sorted. */
  routes: string[];
  skipped: Array<{ cidr: string; why: SkipReason }>;
}

const cidrs = (list: readonly string[]): Cidr[] => list.flatMap((s) => {
  const p = parseCidr(s, { hostBits: 'mask' });
  return p.ok ? [p.cidr] : [];
});

/** The kernel routes a host wants for the approved routes in `peers` (see the file comment). */
export function hostRoutes(i: HostRoutesInput): HostRoutes {
  const allowed = peerAllowedIPs(i.peers);
  const own = cidrs(i.advertised);
  const local = cidrs(i.local);
  const endpoints = i.peers.flatMap((p) => {
    const m = p.endpoint ? /^\[?([^\]]+?)\]?:\d+$/.exec(p.endpoint) : null;
    const a = m ? parseIp(m[1]!) : undefined;
    return a ? [a] : [];
  });
  const routes = new Set<string>();
  const skipped: HostRoutes['skipped'] = [];
  for (const p of i.peers) {
    const self = new Set(p.allowedIPs);
    for (const text of allowed.get(p.publicKey) ?? []) {
      if (self.has(text)) continue;
      const parsed = parseCidr(text, { hostBits: 'mask' });
      if (!parsed.ok) continue;
      const c = parsed.cidr;
      const cidr = formatCidr(c);
      const why: SkipReason | undefined =
        c.bits === 0 ? 'exit'
        : own.some((o) => cidrContains(o, c)) ? 'own'
        : local.some((l) => cidrContains(l, c)) ? 'local'
        : endpoints.some((a) => cidrHas(c, a)) ? 'endpoint'
        : undefined;
      if (why) skipped.push({ cidr, why });
      else routes.add(cidr);
    }
  }
  return { routes: [...routes].sort(), skipped: skipped.sort((a, b) => a.cidr.localeCompare(b.cidr)) };
}
