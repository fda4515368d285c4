import type { Clock } from '../clock.js';
import { cidrContains, formatCidr, parseCidr, type Cidr } from '../net/addr.js';
import { casUpdate, getJson, type KvBucket } from './kv.js';
import { agentKey } from './service.js';
import {
  CpErrorCode,
  ControlPlaneError,
  RouteState,
  badRequest,
  isLabel,
  type AgentRecord,
  type ControlPlaneEvent,
  type Peer,
  type PeerRoute,
  type RouteRecord,
} from './types.js';

/**
 * Routes: a peer advertises subnets it can reach (a subnet router) and/or the default routes (an exit
 * node); an operator approves each one before any launcher routes to it, as a tailnet admin approves
 * subnet routes.
 *
 * State: on the advertising agent's record (`AgentRecord.routes`, KV lattice_agents a.<ns>.<name>), so
 * the launchers' existing directory watch carries every change (no new bucket, no polling):
 *
 *   advertise (enrollment, or lattice.cp.routes with the agent's JWT)  -> pending
 *   approve   (operator)                     pending | rejected -> approved   (into the directory)
 *   reject    (operator)                     pending | approved -> rejected   (out of the directory, live)
 *   withdraw  (operator, or the agent no longer advertising it)  -> gone      (out of the directory, live)
 *
 * An approved route reaches launchers as `Peer.routes` (peerRoutes). Each launcher turns the directory
 * into WireGuard AllowedIPs with `peerAllowedIPs` (below; the tie rule lives there).
 *
 * Validation (`parseAdvertised`): canonical CIDRs only (no host bits), at most MAX_ROUTES per peer, none
 * overlapping the overlay pools (either way round: a route must not capture another agent's address),
 * none in loopback, link-local or multicast space, and a prefix of length 0 only as an exit node's default
 * route (`exitNode: true`, or "0.0.0.0/0" / "::/0" written out).
 */

/** Routes one peer may advertise, exit routes included. */
export const MAX_ROUTES = 32;
/** The exit node's routes. */
export const DEFAULT_ROUTES = ['0.0.0.0/0', '::/0'] as const;

const NEVER_ROUTED: readonly { cidr: Cidr; what: string }[] = [
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['::1/128', 'loopback'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
].map(([c, what]) => ({ cidr: (parseCidr(c!) as { ok: true; cidr: Cidr }).cidr, what: what! }));

/** True for a default route (prefix length 0): what an exit node carries. */
export function isExitRoute(cidr: string): boolean {
  return cidr.endsWith('/0');
}

/**
 * The canonical CIDRs an advertisement names (sorted, de-duplicated), or a ControlPlaneError EBADREQ
 * listing every problem, one per line. `overlay` holds the overlay's pools ("10.77.0.0/16", "fd77::/48").
 */
export function parseAdvertised(routes: unknown, exitNode: unknown, overlay: readonly string[]): string[] {
  const problems: string[] = [];
  if (routes !== undefined && (!Array.isArray(routes) || !routes.every((r) => typeof r === 'string'))) {
    throw badRequest('advertiseRoutes must be a list of CIDR strings, e.g. ["10.200.0.0/24"]');
  }
  if (exitNode !== undefined && typeof exitNode !== 'boolean') throw badRequest('exitNode must be true or false');
  const pools = overlay.map((s) => (parseCidr(s) as { ok: true; cidr: Cidr }).cidr);
  const out = new Set<string>(exitNode ? DEFAULT_ROUTES : []);
  for (const r of (routes ?? []) as string[]) {
    if (r.length > 64) {
      problems.push(`route ${JSON.stringify(r.slice(0, 64))}...: too long to be a CIDR`);
      continue;
    }
    const p = parseCidr(r, { bare: 'refuse' });
    if (!p.ok) {
      problems.push(
        p.reason === 'host-bits'
          ? `route ${r}: has host bits set; write the network, ${p.network}`
          : `route ${JSON.stringify(r)}: not a CIDR (address/length, e.g. 10.200.0.0/24)`,
      );
      continue;
    }
    const c = p.cidr;
    const text = formatCidr(c);
    if (c.bits === 0) {
      out.add(text);
      continue;
    }
    const pool = pools.find((o) => cidrContains(o, c) || cidrContains(c, o));
    if (pool) {
      problems.push(`route ${text}: overlaps the overlay pool ${formatCidr(pool)}; agents' own addresses are routed already`);
      continue;
    }
    const bad = NEVER_ROUTED.find((n) => cidrContains(n.cidr, c) || cidrContains(c, n.cidr));
    if (bad) {
      problems.push(`route ${text}: overlaps ${bad.what} space (${formatCidr(bad.cidr)}), which is never routed`);
      continue;
    }
    out.add(text);
  }
  if (out.size > MAX_ROUTES) problems.push(`${out.size} routes advertised; at most ${MAX_ROUTES} per peer`);
  if (problems.length) throw badRequest(problems.join('\n'));
  return [...out].sort();
}

/**
 * The agent's route records after it advertises `cidrs` at `now`: a route it keeps advertising keeps
 * its state (an approval survives a restart), a new one is pending, one it no longer names is dropped.
 */
export function mergeAdvertised(current: readonly RouteRecord[] | undefined, cidrs: readonly string[], now: number): RouteRecord[] {
  const byCidr = new Map((current ?? []).map((r) => [r.cidr, r]));
  return cidrs.map((cidr) => byCidr.get(cidr) ?? { cidr, state: RouteState.Pending, advertisedAt: now });
}

/** The approved routes of an agent record, as the directory carries them (undefined when none). */
export function peerRoutes(a: Pick<AgentRecord, 'routes'>): PeerRoute[] | undefined {
  const out = (a.routes ?? []).filter((r) => r.state === RouteState.Approved).map((r) => ({ cidr: r.cidr, approvedAt: r.decidedAt ?? r.advertisedAt }));
  return out.length ? out : undefined;
}

/**
 * WireGuard AllowedIPs per peer (by public key, base64) for one launcher: each peer's own addresses
 * plus the approved routes it wins. Pure.
 *
 * - Overlapping routes of different lengths (10.0.0.0/8 on A, 10.200.0.0/24 on B) are both kept: the
 *   AllowedIPs trie sends each packet by longest prefix (src/wg/allowedips.ts).
 * - Tie rule, for the same prefix approved on several peers: the older approval wins (smaller
 *   `approvedAt`), then the lower public key (byte order of the base64 text). Only the winner carries
 *   it; if the winner's route goes, the next one takes over at the next directory update.
 * - Exit routes (0.0.0.0/0, ::/0) go to one peer only: the exit node this launcher chose (`exitNode`,
 *   "name" or "namespace.name" or undefined). Another peer's exit routes are ignored: without a chosen
 *   exit node, non-overlay traffic is not sent over WireGuard at all.
 */
export function peerAllowedIPs(peers: readonly Peer[], exitNode?: string): Map<string, string[]> {
  const out = new Map<string, string[]>(peers.map((p) => [p.publicKey, [...p.allowedIPs]]));
  const owner = new Map<string, { key: string; at: number }>();
  const exit = exitNode === undefined ? undefined : findPeer(peers, exitNode);
  for (const p of peers) {
    for (const r of p.routes ?? []) {
      if (isExitRoute(r.cidr) && p !== exit) continue;
      const cur = owner.get(r.cidr);
      if (!cur || r.approvedAt < cur.at || (r.approvedAt === cur.at && p.publicKey < cur.key)) owner.set(r.cidr, { key: p.publicKey, at: r.approvedAt });
    }
  }
  for (const [cidr, { key }] of owner) out.get(key)!.push(cidr);
  return out;
}

/** The peer named `ref` ("name" in any watched namespace, first by namespace order, or "namespace.name"). */
export function findPeer(peers: readonly Peer[], ref: string): Peer | undefined {
  const dot = ref.indexOf('.');
  if (dot > 0) return peers.find((p) => p.namespace === ref.slice(0, dot) && p.name === ref.slice(dot + 1));
  return peers.find((p) => p.name === ref);
}

/** Whether `ref` is a well-formed exit node reference: "name" or "namespace.name" (DNS labels). */
export function isPeerRef(ref: unknown): ref is string {
  if (typeof ref !== 'string') return false;
  const parts = ref.split('.');
  return parts.length <= 2 && parts.every(isLabel);
}

/** One row of `lattice route ls`. */
export interface RouteView {
  namespace: string;
  name: string;
  cidr: string;
  exit: boolean;
  state: RouteState;
  advertisedAt: string;
  decidedAt?: string;
  decidedBy?: string;
}

/** What route changes audit (a ControlPlaneEvent; the sink stamps the envelope and publishes; must not throw). */
export type RouteAuditDraft = Extract<ControlPlaneEvent, { type: 'route.changed' }>;

export interface RoutesOptions {
  agents: KvBucket;
  clock: Clock;
  audit: (e: RouteAuditDraft) => void;
}

const RouteOp = { Approve: 'approve', Reject: 'reject', Withdraw: 'withdraw' } as const;
type RouteOp = (typeof RouteOp)[keyof typeof RouteOp];

const NAME_RE = /^[\x20-\x7e]{1,128}$/;

/**
 * The operator's side of routes over the agents bucket: list, approve, reject, withdraw (each a
 * compare-and-set on the advertising agent's record, audited as `route.changed`), and the agent's own
 * re-advertisement. Errors: ControlPlaneError EBADREQ, ENOTFOUND.
 */
export class Routes {
  constructor(private readonly o: RoutesOptions) {}

  /** Every advertised route (or those of `namespace`, or in `state`), by namespace, name, CIDR. */
  async list(filter: { namespace?: string; state?: string } = {}): Promise<RouteView[]> {
    const { namespace, state } = filter;
    if (namespace !== undefined && !isLabel(namespace)) throw badRequest('namespace must be a DNS label');
    if (state !== undefined && !(Object.values(RouteState) as string[]).includes(state)) throw badRequest(`state must be one of ${Object.values(RouteState).join(', ')}`);
    const keys = await this.o.agents.keys(namespace ? `a.${namespace}.*` : 'a.*.*');
    const recs = await Promise.all(keys.map((k) => getJson<AgentRecord>(this.o.agents, k)));
    const iso = (ms?: number) => (ms === undefined ? undefined : new Date(ms).toISOString());
    const rows: RouteView[] = [];
    for (const r of recs) {
      if (!r) continue;
      for (const rt of r.value.routes ?? []) {
        if (state !== undefined && rt.state !== state) continue;
        rows.push({
          namespace: r.value.namespace,
          name: r.value.name,
          cidr: rt.cidr,
          exit: isExitRoute(rt.cidr),
          state: rt.state,
          advertisedAt: iso(rt.advertisedAt)!,
          ...(rt.decidedAt !== undefined ? { decidedAt: iso(rt.decidedAt) } : {}),
          ...(rt.decidedBy ? { decidedBy: rt.decidedBy } : {}),
        });
      }
    }
    return rows.sort((a, b) => `${a.namespace}.${a.name} ${a.cidr}`.localeCompare(`${b.namespace}.${b.name} ${b.cidr}`));
  }

  /**
   * Approve (`approve`), reject (`reject`) or remove (`withdraw`) route `body.cidr` of agent
   * namespace/name; `body.cidr` "exit" names both default routes. `body.by` names the operator
   * (default "admin"). Returns the agent's routes after the change. Idempotent: a route already in
   * the asked state is left alone (and not audited again).
   */
  async decide(op: string, namespace: string, name: string, body: unknown): Promise<RouteView[]> {
    if (!(Object.values(RouteOp) as string[]).includes(op)) throw badRequest(`operation must be one of ${Object.values(RouteOp).join(', ')}`);
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b !== 'object' || Array.isArray(b)) throw badRequest('body must be {"cidr": "10.200.0.0/24", "by": "name"}');
    const by = b.by === undefined ? 'admin' : b.by;
    if (typeof by !== 'string' || !NAME_RE.test(by)) throw badRequest('by must be 1-128 printable ASCII characters');
    const cidrs = routeArg(b.cidr);
    const changed: RouteRecord[] = [];
    let agent: AgentRecord | undefined;
    await casUpdate<AgentRecord>(this.o.agents, agentKey(namespace, name), (a) => {
      changed.length = 0;
      if (!a) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${namespace}`);
      const routes = a.routes ?? [];
      for (const c of cidrs) {
        if (!routes.some((r) => r.cidr === c)) {
          throw new ControlPlaneError(CpErrorCode.NotFound, `agent ${namespace}/${name} does not advertise ${c}; see lattice route ls`);
        }
      }
      const now = this.o.clock.now();
      const next: RouteRecord[] = [];
      for (const r of routes) {
        if (!cidrs.includes(r.cidr)) next.push(r);
        else if (op === RouteOp.Withdraw) changed.push(r);
        else {
          const state = op === RouteOp.Approve ? RouteState.Approved : RouteState.Rejected;
          if (r.state === state) next.push(r);
          else {
            const d = { ...r, state, decidedAt: now, decidedBy: by };
            next.push(d);
            changed.push(d);
          }
        }
      }
      agent = a;
      if (!changed.length) return undefined;
      const { routes: _old, ...rest } = a;
      return { ...rest, ...(next.length ? { routes: next } : {}), updatedAt: now };
    });
    const change = op === RouteOp.Approve ? 'approved' : op === RouteOp.Reject ? 'rejected' : 'withdrawn';
    for (const r of changed) this.o.audit({ type: 'route.changed', namespace, agentId: agent!.agentId, name, cidr: r.cidr, change, by });
    return this.list({ namespace }).then((rows) => rows.filter((r) => r.name === name));
  }

  /**
   * The agent replaces what it advertises (`cidrs`, already parsed by parseAdvertised): new routes
   * pending, kept ones unchanged, the rest withdrawn. Audited as the agent ("agent:<name>").
   */
  async advertise(namespace: string, name: string, publicKey: string, cidrs: readonly string[]): Promise<RouteRecord[]> {
    let before: RouteRecord[] = [];
    let after: RouteRecord[] = [];
    let agentId = '';
    await casUpdate<AgentRecord>(this.o.agents, agentKey(namespace, name), (a) => {
      if (!a || a.publicKey !== publicKey) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
      agentId = a.agentId;
      before = a.routes ?? [];
      after = mergeAdvertised(before, cidrs, this.o.clock.now());
      if (JSON.stringify(before) === JSON.stringify(after)) return undefined;
      const { routes: _old, ...rest } = a;
      return { ...rest, ...(after.length ? { routes: after } : {}), updatedAt: this.o.clock.now() };
    });
    this.auditAdvertised(namespace, agentId, name, before, after);
    return after;
  }

  /** Audit what an advertisement added and withdrew (also used at enrollment). */
  auditAdvertised(namespace: string, agentId: string, name: string, before: readonly RouteRecord[], after: readonly RouteRecord[]): void {
    const by = `agent:${name}`;
    const was = new Set(before.map((r) => r.cidr));
    const is = new Set(after.map((r) => r.cidr));
    for (const c of is) if (!was.has(c)) this.o.audit({ type: 'route.changed', namespace, agentId, name, cidr: c, change: 'advertised', by });
    for (const c of was) if (!is.has(c)) this.o.audit({ type: 'route.changed', namespace, agentId, name, cidr: c, change: 'withdrawn', by });
  }
}

/** `cidr` of a decision: one canonical CIDR, or "exit" for both default routes. Errors: EBADREQ. */
export function routeArg(v: unknown): string[] {
  if (v === 'exit') return [...DEFAULT_ROUTES];
  if (typeof v !== 'string' || v.length > 64) throw badRequest('cidr must be a CIDR such as 10.200.0.0/24, or "exit" for an exit node\'s default routes');
  const p = parseCidr(v, { bare: 'refuse' });
  if (!p.ok) throw badRequest(p.reason === 'host-bits' ? `cidr ${v} has host bits set; write ${p.network}` : `cidr ${JSON.stringify(v)} is not a CIDR`);
  return [formatCidr(p.cidr)];
}
