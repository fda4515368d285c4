/**
 * The kernel half of a lattice router (`lattice up --advertise-routes ... [--exit-node]`), as an nftables
 * ruleset (pure text; ./router.ts loads it with `nft -f -`). One table per node name, so `down` removes it
 * with one `nft delete table` and the next `up` finds a crashed one's table by name:
 *
 *   table inet lattice_router_<name>
 *     input       (filter)  from the overlay TUN: only to this node's own overlay addresses (the router
 *                           host's other addresses, LAN ones included, are not reachable through it)
 *     forward     (filter)  from the TUN: only to the advertised routes (exit node: anything not in the
 *                           overlay); into the TUN: only replies (ct established/related), nothing new,
 *                           so hosts behind the router never open flows into the overlay
 *     postrouting (srcnat)  from the TUN out of any other interface: masquerade (the router's address)
 *
 * The decision which flow may be forwarded is the pump's (this node's policy, and only approved routes,
 * src/dataplane PumpOptions.routed), before the packet reaches the kernel; these rules keep the kernel
 * from forwarding more than that, and hide the peers' overlay addresses behind the router's.
 */

/** Prefix of every table a lattice router creates. */
export const ROUTER_TABLE_PREFIX = 'lattice_router_';

/** The router table of node `name` ("db-gw.1" -> "lattice_router_db_gw_1"). */
export function routerTableName(name: string): string {
  return ROUTER_TABLE_PREFIX + name.replace(/[^A-Za-z0-9]/g, '_').slice(0, 40);
}

export interface RouterRulesetOptions {
  table: string;
  /** The node's overlay TUN. */
  tun: string;
  /** The node's own overlay addresses (no prefix length). */
  own: { ipv4: string; ipv6: string };
  /** The overlay pools ("10.77.0.0/16", "fd77::/48"): never forwarded to through the kernel. */
  overlay: readonly string[];
  /** Advertised routes (canonical CIDRs); "0.0.0.0/0" / "::/0" make an exit node of that family. */
  routes: readonly string[];
  /** The `up` process that owns the table (pid and start time in clock ticks). */
  owner: { pid: number; startTicks: number };
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const V4_RE = /^\d{1,3}(\.\d{1,3}){3}$/;
const V6_RE = /^[0-9a-fA-F:]{2,39}$/;
const CIDR4_RE = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;
const CIDR6_RE = /^[0-9a-fA-F:]{2,39}\/\d{1,3}$/;

/** The ruleset text. Throws on a name, address or prefix that is not plain (nothing is interpolated unchecked). */
export function routerRuleset(o: RouterRulesetOptions): string {
  const cidrs = [...o.overlay, ...o.routes];
  if (!NAME_RE.test(o.table) || !NAME_RE.test(o.tun) || !V4_RE.test(o.own.ipv4) || !V6_RE.test(o.own.ipv6) || !cidrs.every((c) => CIDR4_RE.test(c) || CIDR6_RE.test(c))) {
    throw new Error(`routerRuleset: refusing unusual input ${JSON.stringify(o)}`);
  }
  const dev = `"${o.tun}"`;
  const v4 = (c: string) => CIDR4_RE.test(c);
  const lines = [
    `table inet ${o.table} {`,
    `  comment "lattice-up ${Math.trunc(o.owner.pid)}:${Math.trunc(o.owner.startTicks)}"`,
    `  chain input {`,
    `    type filter hook input priority filter; policy accept;`,
    `    iifname ${dev} meta nfproto ipv4 ip daddr != ${o.own.ipv4} drop`,
    `    iifname ${dev} meta nfproto ipv6 ip6 daddr != ${o.own.ipv6} drop`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    ...forwardFrom(dev, 'ip', o.overlay.filter(v4), o.routes.filter(v4)),
    ...forwardFrom(dev, 'ip6', o.overlay.filter((c) => !v4(c)), o.routes.filter((c) => !v4(c))),
    `    oifname ${dev} ct state established,related accept`,
    `    oifname ${dev} drop`,
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    iifname ${dev} oifname != ${dev} masquerade`,
    `  }`,
    `}`,
    '',
  ];
  return lines.join('\n');
}

/** Forward rules of one family from the TUN: overlay never; then the routes (a /0 = anything); else drop. */
function forwardFrom(dev: string, fam: 'ip' | 'ip6', overlay: readonly string[], routes: readonly string[]): string[] {
  const proto = fam === 'ip' ? 'ipv4' : 'ipv6';
  const out = overlay.map((c) => `    iifname ${dev} meta nfproto ${proto} ${fam} daddr ${c} drop`);
  if (routes.some((c) => c.endsWith('/0'))) out.push(`    iifname ${dev} meta nfproto ${proto} accept`);
  else if (routes.length) out.push(`    iifname ${dev} meta nfproto ${proto} ${fam} daddr { ${routes.join(', ')} } accept`);
  out.push(`    iifname ${dev} meta nfproto ${proto} drop`);
  return out;
}
