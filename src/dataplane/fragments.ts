/**
 * Later fragments follow their first fragment (RFC 791 for IPv4, RFC 8200 4.5 for IPv6).
 * Only the first fragment carries the transport header, so only it can be judged: the pump
 * records the first fragment's decision here under the datagram's identity (family, source,
 * destination, protocol, identification), and each later fragment takes that decision. A later
 * fragment with no entry (an orphan, or one that arrived before its first fragment) is dropped and
 * counted. So is a later fragment that overlaps the first fragment's data (RFC 1858, RFC 5722):
 * overlap could rewrite the ports the policy judged; it also poisons the datagram (every further
 * fragment of it is dropped).
 *
 * Bounded in memory and time: at most maxEntries datagrams (the oldest is forgotten first) and
 * each for timeoutMs after its first fragment. Pure: parsed packets and `now` (monotonic ms) in.
 */
import type { ParsedPacket } from './packet.js';

export interface FragmentOptions {
  /** Datagrams remembered at once (default 1024). */
  maxEntries?: number;
  /** How long a first fragment's decision holds, in ms (default 30 s; RFC 791 suggests 15 s, RFC 8200 60 s). */
  timeoutMs?: number;
}

export const FragmentVerdict = { follow: 'follow', orphan: 'orphan', overlap: 'overlap' } as const;
export type FragmentVerdict = (typeof FragmentVerdict)[keyof typeof FragmentVerdict];

interface Entry<T> {
  readonly value: T;
  readonly expiresAt: number;
  /** Bytes of fragment data the first fragment carried: later fragments must start at or after it. */
  readonly firstDataEnd: number;
  poisoned: boolean;
}

function datagramKey(p: ParsedPacket): string {
  const s = p.src;
  const d = p.dst;
  return `${p.family}|${s.w0}|${s.w1}|${s.w2}|${s.w3}|${d.w0}|${d.w1}|${d.w2}|${d.w3}|${p.protocol}|${p.fragId}`;
}

/** Remembers, per fragmented datagram, what its first fragment was decided (`T`: e.g. the flow). */
export class FragmentTracker<T> {
  private readonly entries = new Map<string, Entry<T>>();
  readonly maxEntries: number;
  readonly timeoutMs: number;
  readonly counters = { firsts: 0, followed: 0, orphans: 0, overlaps: 0, evicted: 0 };

  constructor(opts: FragmentOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Record a first fragment (fragment === Fragment.first) and what was decided for it. */
  first(p: ParsedPacket, value: T, now: number): void {
    const key = datagramKey(p);
    const old = this.entries.get(key);
    // A second "first fragment" for the same datagram is an overlap by definition.
    if (old !== undefined && old.expiresAt > now) {
      old.poisoned = true;
      this.counters.overlaps++;
      return;
    }
    if (old !== undefined) this.entries.delete(key);
    else if (this.entries.size >= this.maxEntries) this.evict(now);
    this.entries.set(key, { value, expiresAt: now + this.timeoutMs, firstDataEnd: p.length - p.fragDataStart, poisoned: false });
    this.counters.firsts++;
  }

  /** Judge a later fragment: the first fragment's value, or why there is none. */
  later(p: ParsedPacket, now: number): { verdict: 'follow'; value: T } | { verdict: 'orphan' | 'overlap' } {
    const key = datagramKey(p);
    const e = this.entries.get(key);
    if (e === undefined || e.expiresAt <= now) {
      if (e !== undefined) this.entries.delete(key);
      this.counters.orphans++;
      return { verdict: FragmentVerdict.orphan };
    }
    if (e.poisoned || p.fragOffset < e.firstDataEnd) {
      e.poisoned = true;
      this.counters.overlaps++;
      return { verdict: FragmentVerdict.overlap };
    }
    this.counters.followed++;
    return { verdict: FragmentVerdict.follow, value: e.value };
  }

  /** Forget datagrams whose time is up. */
  expire(now: number): void {
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
  }

  private evict(now: number): void {
    this.expire(now);
    if (this.entries.size < this.maxEntries) return;
    for (const k of this.entries.keys()) {
      this.entries.delete(k);
      this.counters.evicted++;
      return;
    }
  }
}
