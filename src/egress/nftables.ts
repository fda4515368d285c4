/**
 * The kernel half of host egress, as an nftables ruleset (pure text; src/egress/host.ts loads it with
 * `nft -f -`). One table per sandbox, so removal is one `nft delete table` and a crashed launcher's
 * table is found by name:
 *
 *   table ip lattice_egress_<id>
 *     forward     (filter)  from the egress TUN: only the sandbox's own source, never to another sandbox;
 *                           into the egress TUN: only replies (ct established/related), nothing new
 *     postrouting (srcnat)  from the egress TUN out of any other interface: masquerade (the host's address)
 *
 * The decision which flow may leave is the pump's, before the packet reaches this table; these rules
 * only keep the kernel from doing more than forwarding those packets and their replies.
 * IPv4 only (host egress gives the sandbox an IPv4 address).
 */

/** Prefix of every table lattice creates for host egress; gc finds orphans by it. */
export const EGRESS_TABLE_PREFIX = 'lattice_egress_';

/** The table of sandbox `id` ("lt-1a2b3c4d" -> "lattice_egress_lt_1a2b3c4d"). */
export function egressTableName(id: string): string {
  return EGRESS_TABLE_PREFIX + id.replace(/[^A-Za-z0-9]/g, '_');
}

/** The sandbox id a table name belongs to (the inverse of egressTableName for lattice's own ids), or undefined. */
export function sandboxIdOfTable(table: string): string | undefined {
  const m = /^lattice_egress_lt_([0-9a-f]{8})$/.exec(table);
  return m ? `lt-${m[1]}` : undefined;
}

export interface EgressRulesetOptions {
  table: string;
  /** The egress TUN in the launcher's netns. */
  tun: string;
  /** The sandbox's own IPv4 address (no prefix length). */
  address: string;
  /** The pool all sandboxes' egress addresses come from ("100.77.0.0/16"): no sandbox reaches another through the host. */
  pool: string;
  /** The launcher that owns the table (pid and start time in clock ticks): gc removes it once that process is gone. */
  owner: { pid: number; startTicks: number };
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const V4_RE = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The ruleset text. Throws on a name or address that is not plain (nothing is ever interpolated unchecked). */
export function egressRuleset(o: EgressRulesetOptions): string {
  if (!NAME_RE.test(o.table) || !NAME_RE.test(o.tun) || !V4_RE.test(o.address) || !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(o.pool)) {
    throw new Error(`egressRuleset: refusing unusual input ${JSON.stringify(o)}`);
  }
  const dev = `"${o.tun}"`;
  return [
    `table ip ${o.table} {`,
    `  comment "lattice-launcher ${Math.trunc(o.owner.pid)}:${Math.trunc(o.owner.startTicks)}"`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    `    iifname ${dev} ip saddr != ${o.address} drop`,
    `    iifname ${dev} ip daddr ${o.pool} drop`,
    `    oifname ${dev} ct state established,related accept`,
    `    oifname ${dev} drop`,
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    iifname ${dev} oifname != ${dev} ip saddr ${o.address} masquerade`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** The owner recorded in a table's comment (`nft list table ip NAME` text), or undefined. */
export function tableOwner(listing: string): { pid: number; startTicks: number } | undefined {
  const m = /comment "lattice-launcher (\d+):(\d+)"/.exec(listing);
  return m ? { pid: Number(m[1]), startTicks: Number(m[2]) } : undefined;
}
