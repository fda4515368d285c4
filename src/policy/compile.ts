/**
 * Compile a validated policy into tables built for the per-flow decision:
 *
 *   - Rules are ordered deny-first (then policy order), so "deny wins" is just "first match wins".
 *   - Each family's address space is cut into elementary intervals at every CIDR boundary; each
 *     interval lists the rules whose CIDRs cover it (ascending, so denies come first). A decision
 *     is one binary search over u32 words plus a short scan of that interval's candidates.
 *   - Every possible Decision object is built here, once, so evaluate() allocates nothing.
 */
import { type IpAddr, ipToBigInt } from '../net/addr.js';
import { DomainMatcher } from './domains.js';
import type { DirectorySnapshot } from './labels.js';
import {
  Direction,
  type Policy,
  PolicyError,
  PolicyMode,
  type PolicyRule,
  ReservedRuleIds,
  RuleAction,
  bindPeers,
  RuleProtocol,
  validatePolicy,
} from './schema.js';

export const Verdict = { allow: 'allow', deny: 'deny' } as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** The outcome for one flow. Shared, frozen objects: compare fields, not identity. */
export interface Decision {
  /** What the policy says. */
  readonly verdict: Verdict;
  /** What happens to the packet after the mode: audit and disabled always let it through. */
  readonly effective: Verdict;
  /** The deciding rule's id, 'default-deny' when no rule matched, 'mode-disabled' in disabled mode. */
  readonly ruleId: string;
  /** verdict deny but effective allow (audit mode): write a would-deny audit line. */
  readonly wouldDeny: boolean;
  /** false in disabled mode: nothing about this flow is logged. */
  readonly record: boolean;
}

// Protocol bits: a rule's mask ANDed with the packet's bit.
const P_TCP = 1;
const P_UDP = 2;
const P_ICMP = 4;
const P_OTHER = 8;

/** The rule-mask bit for an IP protocol number (6 TCP, 17 UDP, 1/58 ICMP/ICMPv6, anything else 'other'). */
export function protoBit(protocol: number): number {
  return protocol === 6 ? P_TCP : protocol === 17 ? P_UDP : protocol === 1 || protocol === 58 ? P_ICMP : P_OTHER;
}

export interface CompiledRule {
  readonly id: string;
  readonly deny: boolean;
  readonly protoMask: number;
  /** Flat inclusive [lo, hi, lo, hi, ...] pairs, or null for every port. */
  readonly ports: Int32Array | null;
  /** Epoch ms; Infinity when the rule never expires. */
  readonly expiresAt: number;
  readonly domains: DomainMatcher | null;
  readonly decision: Decision;
  readonly source: PolicyRule;
}

/** Elementary intervals of one address family. */
export interface IntervalTable {
  /** IPv4: one u32 start per interval. IPv6: four u32 words per interval (stride 4). */
  readonly starts: Uint32Array;
  /** Candidates of interval i are cand[off[i] .. off[i+1]). */
  readonly off: Int32Array;
  readonly cand: Int32Array;
  readonly count: number;
}

export interface CompiledDirection {
  /** Deny rules first, then allow rules, each group in policy order. */
  readonly rules: readonly CompiledRule[];
  readonly v4: IntervalTable;
  readonly v6: IntervalTable;
  /** Indexes into rules of domain rules (deny ones first). */
  readonly domainRules: Int32Array;
  readonly defaultDecision: Decision;
}

export interface CompiledPolicy {
  readonly mode: PolicyMode;
  readonly egress: CompiledDirection;
  readonly ingress: CompiledDirection;
  readonly policy: Policy;
  /** Sorted distinct expiresAt instants, for scheduling re-evaluation (see nextExpiry). */
  readonly expiries: readonly number[];
  /** Decisions for reserved rule ids, built on first use (see reservedDeny). */
  readonly reserved: Map<string, Decision>;
}

function makeDecision(mode: PolicyMode, verdict: Verdict, ruleId: string): Decision {
  if (mode === PolicyMode.disabled) return DISABLED;
  const effective = mode === PolicyMode.audit ? Verdict.allow : verdict;
  return Object.freeze({ verdict, effective, ruleId, wouldDeny: verdict === Verdict.deny && effective === Verdict.allow, record: true });
}

/** The single decision of disabled mode. */
export const DISABLED: Decision = Object.freeze({
  verdict: Verdict.allow,
  effective: Verdict.allow,
  ruleId: ReservedRuleIds.modeDisabled,
  wouldDeny: false,
  record: false,
});

function compileRule(r: PolicyRule, mode: PolicyMode): CompiledRule {
  let protoMask =
    r.protocol === RuleProtocol.tcp ? P_TCP : r.protocol === RuleProtocol.udp ? P_UDP : r.protocol === RuleProtocol.icmp ? P_ICMP : P_TCP | P_UDP | P_ICMP | P_OTHER;
  // Ports only exist for TCP and UDP: a rule with ports never matches ICMP or other protocols.
  if (r.ports) protoMask &= P_TCP | P_UDP;
  return {
    id: r.id,
    deny: r.action === RuleAction.deny,
    protoMask,
    ports: r.ports ? Int32Array.from(r.ports.flat()) : null,
    expiresAt: r.expiresAtMs ?? Infinity,
    domains: r.domains ? new DomainMatcher(r.domains) : null,
    decision: makeDecision(mode, r.action === RuleAction.deny ? Verdict.deny : Verdict.allow, r.id),
    source: r,
  };
}

interface Range {
  lo: bigint;
  hi: bigint;
  rule: number;
}

function buildIntervals(ranges: Range[], family: 4 | 6): IntervalTable {
  const max = family === 4 ? 0xffffffffn : (1n << 128n) - 1n;
  const bounds = new Set<bigint>([0n]);
  for (const r of ranges) {
    bounds.add(r.lo);
    if (r.hi < max) bounds.add(r.hi + 1n);
  }
  const sortedBounds = [...bounds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const byLo = [...ranges].sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
  const byEnd = [...ranges].sort((a, b) => (a.hi < b.hi ? -1 : a.hi > b.hi ? 1 : 0));
  // Sweep: active counts how many of each rule's ranges cover the current interval.
  const active = new Map<number, number>();
  let iLo = 0;
  let iEnd = 0;
  const starts: bigint[] = [];
  const lists: number[][] = [];
  for (const b of sortedBounds) {
    while (iLo < byLo.length && byLo[iLo].lo === b) {
      const r = byLo[iLo++].rule;
      active.set(r, (active.get(r) ?? 0) + 1);
    }
    while (iEnd < byEnd.length && byEnd[iEnd].hi < b) {
      const r = byEnd[iEnd++].rule;
      const n = (active.get(r) ?? 1) - 1;
      if (n === 0) active.delete(r);
      else active.set(r, n);
    }
    const list = [...active.keys()].sort((x, y) => x - y);
    const prev = lists[lists.length - 1];
    // Merge neighbours with the same candidates: fewer intervals, shorter search.
    if (prev && prev.length === list.length && prev.every((v, i) => v === list[i])) continue;
    starts.push(b);
    lists.push(list);
  }
  const stride = family === 4 ? 1 : 4;
  const startWords = new Uint32Array(starts.length * stride);
  starts.forEach((s, i) => {
    if (family === 4) startWords[i] = Number(s);
    else for (let w = 0; w < 4; w++) startWords[i * 4 + w] = Number((s >> BigInt(96 - 32 * w)) & 0xffffffffn);
  });
  const off = new Int32Array(lists.length + 1);
  let total = 0;
  lists.forEach((l, i) => {
    off[i] = total;
    total += l.length;
  });
  off[lists.length] = total;
  return { starts: startWords, off, cand: Int32Array.from(lists.flat()), count: lists.length };
}

function cidrRange(addr: IpAddr, bits: number): { lo: bigint; hi: bigint } {
  const width = addr.family === 4 ? 32 : 128;
  const lo = ipToBigInt(addr);
  const hostBits = BigInt(width - bits);
  return { lo, hi: lo | ((1n << hostBits) - 1n) };
}

function compileDirection(rules: readonly PolicyRule[], mode: PolicyMode): CompiledDirection {
  // Stable sort: denies first, then allows; policy order within each.
  const ordered = [...rules.filter((r) => r.action === RuleAction.deny), ...rules.filter((r) => r.action === RuleAction.allow)];
  const compiled = ordered.map((r) => compileRule(r, mode));
  const v4: Range[] = [];
  const v6: Range[] = [];
  const domainRules: number[] = [];
  ordered.forEach((r, i) => {
    if (r.domains) domainRules.push(i);
    for (const c of r.cidrs ?? []) (c.addr.family === 4 ? v4 : v6).push({ ...cidrRange(c.addr, c.bits), rule: i });
  });
  return {
    rules: compiled,
    v4: buildIntervals(v4, 4),
    v6: buildIntervals(v6, 6),
    domainRules: Int32Array.from(domainRules),
    defaultDecision: makeDecision(mode, Verdict.deny, ReservedRuleIds.defaultDeny),
  };
}

/**
 * Compile a validated policy (from validatePolicy / parsePolicy). With `directory`, its "peers"
 * rules are bound to that snapshot first (bindPeers); without one, a rule not bound before matches
 * nothing.
 */
export function compile(unbound: Policy, directory?: DirectorySnapshot): CompiledPolicy {
  const policy = directory ? bindPeers(unbound, directory) : unbound;
  const expiries = new Set<number>();
  for (const r of [...policy.egress, ...policy.ingress]) if (r.expiresAtMs !== undefined) expiries.add(r.expiresAtMs);
  return {
    mode: policy.mode,
    egress: compileDirection(policy.egress, policy.mode),
    ingress: compileDirection(policy.ingress, policy.mode),
    policy,
    expiries: [...expiries].sort((a, b) => a - b),
    reserved: new Map(),
  };
}

/** Validate raw JSON-parsed input and compile it. Throws PolicyError listing every problem. */
export function compilePolicy(input: unknown): CompiledPolicy {
  const res = validatePolicy(input);
  if (!res.ok) throw new PolicyError(res.problems);
  return compile(res.policy);
}

/**
 * The decision for a flow the data plane denies before any rule (see ReservedRuleIds: ICMP errors
 * that do not match their quote, unsolicited echo replies). Follows the mode like any deny:
 * enforce denies, audit lets through as would-deny, disabled allows without a record.
 */
export function reservedDeny(compiled: CompiledPolicy, ruleId: string): Decision {
  let d = compiled.reserved.get(ruleId);
  if (d === undefined) {
    d = makeDecision(compiled.mode, Verdict.deny, ruleId);
    compiled.reserved.set(ruleId, d);
  }
  return d;
}

/** A policy that denies everything (enforce mode, no rules): the safe starting point. */
export function denyAllPolicy(): CompiledPolicy {
  return compile({ version: 1, mode: PolicyMode.enforce, egress: [], ingress: [] });
}

export { Direction };
