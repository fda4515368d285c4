/**
 * Per-source token bucket for handshake messages under load (wireguard-go ratelimiter/): 20 packets
 * per second, bursts of 5, keyed by source (sourceOf: the IP address, or a virtual path's id). Pure:
 * `now` (monotonic ms) in. Entries idle for a second are swept by gc().
 *
 * Bounded, unlike wireguard-go's map: a flood from many (spoofed) source addresses could otherwise
 * grow the table by one entry per packet between two gc() calls. The table is kept in order of last
 * use, so at maxEntries the least recently seen source is forgotten in O(1) (counted in `evicted`),
 * and gc() stops at the first entry still active. A forgotten source starts
 * again with a fresh burst, so the bound never locks a legitimate new source out; what bounds the
 * cost of a many-source flood is the cookie (MAC2) check after this limiter, not the table.
 */
export const PacketsPerSecond = 20;
export const PacketsBurstable = 5;
/** Sources remembered at once by default (~1.5 MiB of entries). */
export const DefaultMaxSources = 16_384;
const packetCost = 1_000 / PacketsPerSecond; // ms of tokens per packet
const maxTokens = packetCost * PacketsBurstable;
const idleMs = 1_000;

interface Entry {
  lastTime: number;
  tokens: number;
}

export interface RateLimiterOptions {
  /** Upper bound on remembered sources (default DefaultMaxSources). */
  maxEntries?: number;
}

export class RateLimiter {
  private readonly table = new Map<string, Entry>();
  readonly maxEntries: number;
  /** Sources forgotten early because the table was full of recently active ones. */
  evicted = 0;

  constructor(opts: RateLimiterOptions = {}) {
    this.maxEntries = Math.max(1, opts.maxEntries ?? DefaultMaxSources);
  }

  /** Whether one more packet from `source` may be processed at `now`; takes its token if so. */
  allow(source: string, now: number): boolean {
    let e = this.table.get(source);
    if (!e) {
      if (this.table.size >= this.maxEntries) this.makeRoom();
      e = { lastTime: now, tokens: maxTokens - packetCost };
      this.table.set(source, e);
      return true;
    }
    e.tokens = Math.min(maxTokens, e.tokens + (now - e.lastTime));
    e.lastTime = now;
    // Move to the end: the map stays in order of last use.
    this.table.delete(source);
    this.table.set(source, e);
    if (e.tokens >= packetCost) {
      e.tokens -= packetCost;
      return true;
    }
    return false;
  }

  /** Forget sources idle for more than a second (their bucket is full again anyway). */
  gc(now: number): void {
    for (const [k, e] of this.table) {
      if (now - e.lastTime <= idleMs) return; // every later entry was used more recently
      this.table.delete(k);
    }
  }

  get size(): number {
    return this.table.size;
  }

  private makeRoom(): void {
    // The first key is the least recently used source.
    while (this.table.size >= this.maxEntries) {
      const oldest = this.table.keys().next().value as string;
      this.table.delete(oldest);
      this.evicted++;
    }
  }
}
