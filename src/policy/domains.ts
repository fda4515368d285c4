/**
 * Domain rules. The policy names domains; packets carry addresses. The bridge is the sandbox's own
 * DNS responder: when it resolves an allowed name upstream it records the returned addresses here
 * with the record's TTL, and the evaluator lets a new flow to such an address through a domain rule
 * while the allowance is live. Pure: time comes in as `now`.
 */
import type { IpAddr } from '../net/addr.js';

/** Lowercase, no trailing dot. Cheap enough for the DNS path; never called per packet. */
export function normalizeName(name: string): string {
  const s = name.toLowerCase();
  return s.endsWith('.') ? s.slice(0, -1) : s;
}

/** Matches normalised names against "api.example.com" and "*.example.com" patterns. */
export class DomainMatcher {
  private readonly exact = new Set<string>();
  /** ".example.com" for "*.example.com": a name matches if it ends with it and is longer. */
  private readonly suffixes: string[] = [];

  constructor(patterns: readonly string[]) {
    for (const p of patterns) {
      if (p.startsWith('*.')) this.suffixes.push(p.slice(1));
      else this.exact.add(p);
    }
  }

  /** `name` must already be normalised (see normalizeName). */
  matches(name: string): boolean {
    if (this.exact.has(name)) return true;
    for (const s of this.suffixes) {
      if (name.length > s.length && name.endsWith(s)) return true;
    }
    return false;
  }
}

interface Allowance {
  readonly addr: IpAddr;
  readonly name: string;
  expiresAt: number;
}

export interface DnsAllowancesOptions {
  /** Upper bound on remembered (address, name) pairs; the oldest are dropped beyond it. */
  maxEntries?: number;
  /** TTLs below this are raised: a TTL of 0 would expire before the agent could connect. */
  minTtlSec?: number;
  /** TTLs above this are lowered, so a stale answer cannot keep an address open for days. */
  maxTtlSec?: number;
  /**
   * How long an expired allowance is kept for re-evaluating flows that were opened while it was
   * live (a policy update must not cut a long download just because the DNS TTL passed).
   */
  retainMs?: number;
}

/**
 * Addresses the launcher resolved for allowed names, each live until now + TTL.
 * Bounded: at most maxEntries pairs; the oldest recorded go first.
 */
export class DnsAllowances {
  // Keyed by a number so a lookup allocates nothing: the IPv4 address itself, or a hash of the
  // IPv6 words (entries carry the full address, so a hash collision only costs a comparison).
  private readonly byKey = new Map<number, Allowance[]>();
  private count = 0;
  readonly maxEntries: number;
  readonly minTtlSec: number;
  readonly maxTtlSec: number;
  readonly retainMs: number;

  constructor(opts: DnsAllowancesOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 8192;
    this.minTtlSec = opts.minTtlSec ?? 5;
    this.maxTtlSec = opts.maxTtlSec ?? 86_400;
    this.retainMs = opts.retainMs ?? 3_600_000;
  }

  get size(): number {
    return this.count;
  }

  /** The TTL the allowance (and so the answer given to the agent) will actually use. */
  clampTtl(ttlSec: number): number {
    return Math.min(this.maxTtlSec, Math.max(this.minTtlSec, Math.floor(ttlSec)));
  }

  /**
   * Record that `name` resolved to `addrs` with `ttlSec`. Returns the clamped TTL, which the DNS
   * answer to the agent should carry so its cache never outlives the allowance.
   */
  record(name: string, addrs: readonly IpAddr[], ttlSec: number, now: number): number {
    const ttl = this.clampTtl(ttlSec);
    const n = normalizeName(name);
    const expiresAt = now + ttl * 1000;
    for (const addr of addrs) {
      const key = keyOf(addr);
      let list = this.byKey.get(key);
      const existing = list?.find((e) => e.name === n && sameAddr(e.addr, addr));
      if (existing) {
        existing.expiresAt = Math.max(existing.expiresAt, expiresAt);
        continue;
      }
      if (this.count >= this.maxEntries) {
        this.evict(now);
        list = this.byKey.get(key); // evict() may have removed this key's list
      }
      if (!list) {
        list = [];
        this.byKey.set(key, list);
      }
      list.push({ addr, name: n, expiresAt });
      this.count++;
    }
    return ttl;
  }

  /**
   * Whether `addr` was resolved for a name `matcher` accepts and the allowance is live at `now`
   * (expiresAt > now). Pass now = -Infinity to accept retained expired allowances too.
   */
  allows(addr: IpAddr, matcher: DomainMatcher, now: number): boolean {
    const list = this.byKey.get(keyOf(addr));
    if (list === undefined) return false;
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      if (e.expiresAt > now && sameAddr(e.addr, addr) && matcher.matches(e.name)) return true;
    }
    return false;
  }

  /** Names recorded for an address (for audit lines: "flow to 1.2.3.4 (api.example.com)"). */
  namesFor(addr: IpAddr, now: number): string[] {
    const list = this.byKey.get(keyOf(addr)) ?? [];
    return list.filter((e) => e.expiresAt > now && sameAddr(e.addr, addr)).map((e) => e.name);
  }

  /** Drop allowances expired for longer than retainMs. Returns how many were dropped. */
  prune(now: number): number {
    const cutoff = now - this.retainMs;
    let dropped = 0;
    for (const [key, list] of this.byKey) {
      const kept = list.filter((e) => e.expiresAt > cutoff);
      dropped += list.length - kept.length;
      if (kept.length === 0) this.byKey.delete(key);
      else if (kept.length !== list.length) this.byKey.set(key, kept);
    }
    this.count -= dropped;
    return dropped;
  }

  clear(): void {
    this.byKey.clear();
    this.count = 0;
  }

  private evict(now: number): void {
    if (this.prune(now + this.retainMs) > 0) return; // first drop everything already expired
    // Then the oldest-inserted key (Map iteration order is insertion order).
    for (const [key, list] of this.byKey) {
      this.byKey.delete(key);
      this.count -= list.length;
      return;
    }
  }
}

function sameAddr(a: IpAddr, b: IpAddr): boolean {
  return a.family === b.family && a.w0 === b.w0 && a.w1 === b.w1 && a.w2 === b.w2 && a.w3 === b.w3;
}

function keyOf(a: IpAddr): number {
  if (a.family === 4) return a.w0;
  // Negative keys for IPv6 so they never collide with an IPv4 key.
  let h = Math.imul(a.w0 ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ a.w1, 0xc2b2ae35);
  h = Math.imul(h ^ a.w2, 0x27d4eb2f);
  h = Math.imul(h ^ a.w3, 0x165667b1);
  return -1 - ((h ^ (h >>> 15)) >>> 1);
}
