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

/**
 * A token bucket shared by all sources: `perSecond` tokens a second, at most `burst` held, the
 * first `burst` available at once. Pure: `now` (monotonic ms) in.
 */
export class TokenBucket {
  private tokens: number;
  private last = -Infinity;
  private readonly costMs: number;
  private readonly maxMs: number;

  constructor(perSecond: number, burst: number) {
    this.costMs = 1_000 / perSecond;
    this.maxMs = this.costMs * Math.max(1, burst);
    this.tokens = this.maxMs;
  }

  /** Take one token at `now` if there is one. */
  take(now: number): boolean {
    if (this.last !== -Infinity) this.tokens = Math.min(this.maxMs, this.tokens + Math.max(0, now - this.last));
    this.last = now;
    if (this.tokens < this.costMs) return false;
    this.tokens -= this.costMs;
    return true;
  }
}

/**
 * Cookie replies the device sends a second, all sources together (and the burst it may send at
 * once), to endpoints it has not answered within CookieReplyMemoryMs.
 */
export const CookieRepliesPerSecond = 1_024;
export const CookieRepliesBurstable = 128;
/** The same for endpoints it has answered within CookieReplyMemoryMs and that ask again. */
export const ReturningCookieRepliesPerSecond = 128;
export const ReturningCookieRepliesBurstable = 16;
/**
 * Handshake messages that reach the Noise work (two or more X25519 each) a second, all sources
 * together, and the burst; the burst matches UnderLoadHandshakesPerSecond, so a device that is not
 * under load never meets it.
 */
export const HandshakesPerSecond = 128;
export const HandshakesBurstable = 64;
/**
 * An endpoint (address and port) that got a cookie reply gets no other for this long (RekeyTimeout):
 * an initiator that got the cookie re-sends with MAC2 at once, and otherwise retries only every
 * RekeyTimeout, so a second reply within it only serves a flood that never answers.
 */
export const CookieReplyQuietMs = 5_000;
/**
 * How long an answered endpoint is remembered (CookieRefreshTime): an initiator holding our cookie
 * sends a valid MAC2 for that long, so one that asks again within it lost the reply or never
 * meant to use it; it is answered from the smaller "returning" budget, and new endpoints (a
 * legitimate new peer) keep the main one.
 */
export const CookieReplyMemoryMs = 120_000;

export interface HandshakeGuardOptions extends RateLimiterOptions {
  cookieRepliesPerSecond?: number;
  handshakesPerSecond?: number;
}

/**
 * The device's budget for handshake messages (issue 13, item 9), in the order the device asks:
 *   1. admit(source): under load, the per-source token bucket (RateLimiter), before any hash;
 *   2. mayReplyCookie(endpoint): under load, a message without a valid MAC2 gets a cookie reply
 *      only if its endpoint had none in the last CookieReplyQuietMs and a global reply bucket has
 *      a token: the main one for endpoints not answered within CookieReplyMemoryMs, a smaller one
 *      for those that come back;
 *   3. mayConsume(): the Noise work (DH) of any handshake message takes a token from the global
 *      handshake bucket.
 * So the hashing, sealing and DH a flood can buy are bounded per second across all sources,
 * however many addresses it spoofs: a spoofed source never holds a cookie, so under load it never
 * reaches DH, and it costs at most one cookie reply per quiet period (and per global token). A
 * legitimate new peer's first initiation meets a main reply bucket that a flood from a fixed set
 * of sources cannot keep empty (after their first reply they draw on the returning bucket);
 * against a flood from ever-new spoofed addresses (each one new) its chance per attempt is the
 * bucket's rate over the flood's, and it retries every RekeyTimeout.
 * wireguard-go bounds the same work with its fixed handshake queue and worker count.
 * Pure: `now` (monotonic ms) in; both tables bounded (LRU, maxEntries).
 */
export class HandshakeGuard {
  readonly perSource: RateLimiter;
  private readonly replies: TokenBucket;
  private readonly returningReplies: TokenBucket;
  private readonly handshakes: TokenBucket;
  /** endpoint key -> monotonic ms of its last cookie reply, in order of last reply. */
  private readonly replied = new Map<string, number>();
  private readonly maxEntries: number;

  constructor(opts: HandshakeGuardOptions = {}) {
    this.perSource = new RateLimiter(opts);
    this.maxEntries = this.perSource.maxEntries;
    this.replies = new TokenBucket(opts.cookieRepliesPerSecond ?? CookieRepliesPerSecond, CookieRepliesBurstable);
    this.returningReplies = new TokenBucket(ReturningCookieRepliesPerSecond, ReturningCookieRepliesBurstable);
    this.handshakes = new TokenBucket(opts.handshakesPerSecond ?? HandshakesPerSecond, HandshakesBurstable);
  }

  admit(source: string, now: number): boolean {
    return this.perSource.allow(source, now);
  }

  mayReplyCookie(endpoint: string, now: number): boolean {
    const last = this.replied.get(endpoint);
    if (last !== undefined && now - last < CookieReplyQuietMs) return false;
    const returning = last !== undefined && now - last < CookieReplyMemoryMs;
    if (!(returning ? this.returningReplies : this.replies).take(now)) return false;
    this.replied.delete(endpoint);
    while (this.replied.size >= this.maxEntries) this.replied.delete(this.replied.keys().next().value as string);
    this.replied.set(endpoint, now);
    return true;
  }

  mayConsume(now: number): boolean {
    return this.handshakes.take(now);
  }

  /** Forget what is old enough not to matter (per-source buckets idle a second, answered endpoints after CookieReplyMemoryMs). */
  gc(now: number): void {
    this.perSource.gc(now);
    for (const [k, t] of this.replied) {
      if (now - t < CookieReplyMemoryMs) break;
      this.replied.delete(k);
    }
  }

  /** Endpoints remembered as answered (bounded by maxEntries). */
  get answeredEndpoints(): number {
    return this.replied.size;
  }
}
