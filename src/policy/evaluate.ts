/**
 * The decision for one flow. Pure and allocation-free: integers and `now` in, a shared Decision out.
 *
 * Order (the first that applies decides):
 *   1. mode disabled -> allow, record: false
 *   2. a live deny rule matching (CIDR or domain)      -> deny
 *   3. a live allow rule matching (CIDR, then domain)  -> allow
 *   4. nothing matched                                 -> default deny
 * A rule is live while now < expiresAt. In audit mode every deny becomes effective allow with
 * wouldDeny: true.
 */
import type { IpAddr } from '../net/addr.js';
import { type CompiledDirection, type CompiledPolicy, type CompiledRule, type Decision, DISABLED, type IntervalTable, protoBit } from './compile.js';
import { type DnsAllowances, normalizeName } from './domains.js';
import { type Direction, PolicyMode } from './schema.js';

/** What the evaluator needs to know about a flow (its first packet). */
export interface FlowQuery {
  readonly direction: Direction;
  /** IANA protocol number: 6 tcp, 17 udp, 1 icmp, 58 icmpv6 (others match only protocol "any" rules without ports). */
  readonly protocol: number;
  /** The other end: the destination for egress, the source for ingress. */
  readonly remote: IpAddr;
  /**
   * The service port: the destination port of the flow's first packet. Egress: the remote's
   * port; ingress: the sandbox's own port. 0 for ICMP.
   */
  readonly dstPort: number;
}

function findV4(t: IntervalTable, a: number): number {
  const s = t.starts;
  let lo = 0;
  let hi = t.count - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (s[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** -1, 0, 1 comparing interval i's start with the address words. */
function cmpV6(s: Uint32Array, i: number, a: IpAddr): number {
  const o = i * 4;
  if (s[o] !== a.w0) return s[o] < a.w0 ? -1 : 1;
  if (s[o + 1] !== a.w1) return s[o + 1] < a.w1 ? -1 : 1;
  if (s[o + 2] !== a.w2) return s[o + 2] < a.w2 ? -1 : 1;
  if (s[o + 3] !== a.w3) return s[o + 3] < a.w3 ? -1 : 1;
  return 0;
}

function findV6(t: IntervalTable, a: IpAddr): number {
  let lo = 0;
  let hi = t.count - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (cmpV6(t.starts, mid, a) <= 0) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function ruleApplies(r: CompiledRule, pbit: number, port: number, now: number): boolean {
  if ((r.protoMask & pbit) === 0 || r.expiresAt <= now) return false;
  const ps = r.ports;
  if (ps === null) return true;
  for (let i = 0; i < ps.length; i += 2) if (port >= ps[i] && port <= ps[i + 1]) return true;
  return false;
}

function decide(t: CompiledDirection, q: FlowQuery, now: number, allowances: DnsAllowances | undefined, dnsNow: number): Decision {
  const rules = t.rules;
  const pbit = protoBit(q.protocol);
  const port = q.dstPort;
  const a = q.remote;
  let allow = -1;
  const table = a.family === 4 ? t.v4 : t.v6;
  if (table.count > 1 || table.off[1] > 0) {
    const i = a.family === 4 ? findV4(table, a.w0) : findV6(table, a);
    const end = table.off[i + 1];
    for (let j = table.off[i]; j < end; j++) {
      const k = table.cand[j];
      const r = rules[k];
      if (!ruleApplies(r, pbit, port, now)) continue;
      if (r.deny) return r.decision;
      allow = k; // candidates ascend and denies sort first, so the rest are allows
      break;
    }
  }
  const dr = t.domainRules;
  if (dr.length > 0 && allowances !== undefined && allowances.size > 0) {
    for (let j = 0; j < dr.length; j++) {
      const k = dr[j];
      const r = rules[k];
      if (!r.deny && allow >= 0) break; // a CIDR allow already decided; only denies could override
      if (!ruleApplies(r, pbit, port, now) || r.domains === null) continue;
      if (allowances.allows(a, r.domains, dnsNow)) {
        if (r.deny) return r.decision;
        allow = k;
        break;
      }
    }
  }
  return allow >= 0 ? rules[allow].decision : t.defaultDecision;
}

/**
 * Decide a new flow at `nowMs`. `allowances` holds the addresses resolved for domain rules; without
 * it domain rules match nothing.
 */
export function evaluate(compiled: CompiledPolicy, q: FlowQuery, nowMs: number, allowances?: DnsAllowances): Decision {
  if (compiled.mode === PolicyMode.disabled) return DISABLED;
  return decide(q.direction === 'egress' ? compiled.egress : compiled.ingress, q, nowMs, allowances, nowMs);
}

/**
 * Whether the launcher should resolve `name` upstream for the sandbox: some live egress allow rule
 * names it and no live deny rule covering every port and protocol does. Returns the deciding
 * Decision (audit mode: effective allow, wouldDeny for names no rule allows).
 */
export function domainDecision(compiled: CompiledPolicy, name: string, nowMs: number): Decision {
  if (compiled.mode === PolicyMode.disabled) return DISABLED;
  const t = compiled.egress;
  const n = normalizeName(name);
  let allow: CompiledRule | undefined;
  for (let j = 0; j < t.domainRules.length; j++) {
    const r = t.rules[t.domainRules[j]];
    if (r.expiresAt <= nowMs || r.domains === null || !r.domains.matches(n)) continue;
    if (r.deny) {
      // A deny limited to some ports or protocols leaves the name usable for the rest.
      if (r.ports === null && r.protoMask === 15) return r.decision;
    } else if (allow === undefined) {
      allow = r;
    }
  }
  return allow ? allow.decision : t.defaultDecision;
}

/**
 * Whether a live egress CIDR allow rule covers `addr` (any port, any protocol) and no live CIDR
 * deny rule for every port and protocol does. Domain rules do not count: this is the test an
 * upstream DNS answer in a special range must pass before it may create an allowance.
 */
export function cidrAllows(compiled: CompiledPolicy, addr: IpAddr, nowMs: number): boolean {
  if (compiled.mode === PolicyMode.disabled) return true;
  const t = compiled.egress;
  const table = addr.family === 4 ? t.v4 : t.v6;
  if (table.count === 0) return false;
  const i = addr.family === 4 ? findV4(table, addr.w0) : findV6(table, addr);
  for (let j = table.off[i]; j < table.off[i + 1]; j++) {
    const r = t.rules[table.cand[j]];
    if (r.expiresAt <= nowMs) continue;
    if (r.deny) {
      if (r.ports === null && r.protoMask === 15) return false;
      continue;
    }
    return true;
  }
  return false;
}

/** Whether a DNS name is allowed at `nowMs` (ms since the epoch): `domainDecision`'s effective verdict is allow. */
export function domainAllowed(compiled: CompiledPolicy, name: string, nowMs: number): boolean {
  return domainDecision(compiled, name, nowMs).effective === 'allow';
}

export interface FlowRecheck<T> {
  readonly flow: T;
  readonly decision: Decision;
}

export interface Reevaluation<T> {
  /** Flows that were let through and no longer are: the pump cuts them (TCP RST / drop). */
  readonly cut: FlowRecheck<T>[];
  /** Every flow whose decision changed (includes `cut`, and denied flows now allowed). */
  readonly changed: FlowRecheck<T>[];
}

function sameDecision(a: Decision, b: Decision): boolean {
  return a.verdict === b.verdict && a.effective === b.effective && a.ruleId === b.ruleId && a.wouldDeny === b.wouldDeny && a.record === b.record;
}

/**
 * Live update: re-decide existing flows under a new policy (or at a rule's expiry instant).
 * Domain allowances are matched regardless of their DNS TTL (an open flow is not cut because the
 * answer that opened it aged out), but only while DnsAllowances still retains them.
 */
export function reevaluateFlows<T extends FlowQuery & { readonly decision?: Decision }>(
  compiled: CompiledPolicy,
  flows: Iterable<T>,
  nowMs: number,
  allowances?: DnsAllowances,
): Reevaluation<T> {
  const cut: FlowRecheck<T>[] = [];
  const changed: FlowRecheck<T>[] = [];
  for (const flow of flows) {
    const decision =
      compiled.mode === PolicyMode.disabled
        ? DISABLED
        : decide(flow.direction === 'egress' ? compiled.egress : compiled.ingress, flow, nowMs, allowances, -Infinity);
    const before = flow.decision;
    if (before !== undefined && sameDecision(before, decision)) continue;
    changed.push({ flow, decision });
    if ((before === undefined || before.effective === 'allow') && decision.effective === 'deny') cut.push({ flow, decision });
  }
  return { cut, changed };
}

/** The first rule expiry strictly after `nowMs` (schedule reevaluateFlows then), or undefined. */
export function nextExpiry(compiled: CompiledPolicy, nowMs: number): number | undefined {
  for (const t of compiled.expiries) if (t > nowMs) return t;
  return undefined;
}
