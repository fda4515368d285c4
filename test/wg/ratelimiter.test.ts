/**
 * The handshake rate limiter (src/wg/ratelimiter.ts, issue #13 item 9): per-source token bucket as in
 * wireguard-go (20/s, bursts of 5), with a bound on remembered sources for floods from many spoofed
 * addresses.
 */
import { describe, it, expect } from 'vitest';
import {
  CookieRepliesBurstable,
  CookieRepliesPerSecond,
  CookieReplyQuietMs,
  HandshakeGuard,
  HandshakesBurstable,
  HandshakesPerSecond,
  PacketsBurstable,
  RateLimiter,
  ReturningCookieRepliesBurstable,
  ReturningCookieRepliesPerSecond,
  TokenBucket,
} from '../../src/wg/ratelimiter.js';
import { seededRandom } from '../support/random.js';

const randomSource = (r: ReturnType<typeof seededRandom>) => `${1 + r.int(223)}.${r.int(256)}.${r.int(256)}.${r.int(256)}`;

describe('RateLimiter', () => {
  it('one source: a burst of 5, then 20 a second', () => {
    const rl = new RateLimiter();
    let allowed = 0;
    for (let i = 0; i < 50; i++) if (rl.allow('192.0.2.1', 1_000)) allowed++;
    expect(allowed).toBe(PacketsBurstable);
    expect(rl.allow('192.0.2.1', 1_049)).toBe(false);
    expect(rl.allow('192.0.2.1', 1_050)).toBe(true); // 50 ms of tokens = one packet
    // Another source is not affected.
    expect(rl.allow('192.0.2.2', 1_050)).toBe(true);
  });

  it('a flood from many spoofed sources keeps the table within its bound; a legitimate source still passes', () => {
    const r = seededRandom();
    const rl = new RateLimiter({ maxEntries: 1000 });
    let now = 0;
    for (let i = 0; i < 50_000; i++) {
      if (i % 100 === 0) now++;
      rl.allow(randomSource(r), now);
      expect(rl.size).toBeLessThanOrEqual(1000);
    }
    expect(rl.evicted).toBeGreaterThan(40_000);
    // A legitimate peer's address gets its first packets (then its cookie round trip) in the middle of it.
    expect(rl.allow('198.51.100.7', now)).toBe(true);
    expect(rl.allow('198.51.100.7', now)).toBe(true);
  });

  it('eviction takes the least recently seen source: an active flooder keeps its empty bucket', () => {
    const rl = new RateLimiter({ maxEntries: 3 });
    for (let i = 0; i < 10; i++) rl.allow('203.0.113.9', 0); // bucket empty
    rl.allow('192.0.2.1', 1);
    rl.allow('192.0.2.2', 2);
    expect(rl.allow('203.0.113.9', 3)).toBe(false); // still limited, and now the most recent
    rl.allow('192.0.2.3', 4); // full: 192.0.2.1 (least recent) goes
    expect(rl.evicted).toBe(1);
    expect(rl.allow('203.0.113.9', 5)).toBe(false); // not forgotten: no fresh burst for the flooder
  });

  it('gc forgets sources idle for more than a second, keeps the active ones', () => {
    const rl = new RateLimiter();
    rl.allow('192.0.2.1', 0);
    rl.allow('192.0.2.2', 500);
    rl.allow('192.0.2.3', 1_200);
    rl.gc(1_400);
    expect(rl.size).toBe(2);
    rl.gc(2_300);
    expect(rl.size).toBe(0);
  });
});

describe('TokenBucket', () => {
  it('gives its burst at once, then perSecond a second, never more than the burst after idling', () => {
    const b = new TokenBucket(100, 10);
    let n = 0;
    while (b.take(0)) n++;
    expect(n).toBe(10);
    expect(b.take(9)).toBe(false);
    expect(b.take(10)).toBe(true); // 10 ms = one token at 100/s
    n = 0;
    while (b.take(60_000)) n++;
    expect(n).toBe(10);
  });
});

describe('HandshakeGuard (global budget)', () => {
  it('ever-new random endpoints: cookie replies within the global budget each second', () => {
    const r = seededRandom();
    const g = new HandshakeGuard();
    let granted = 0;
    const seconds = 5;
    for (let t = 0; t < seconds * 1000; t++) {
      for (let k = 0; k < 10; k++) if (g.mayReplyCookie(`${randomSource(r)}:${1 + r.int(65535)}`, t)) granted++;
    }
    expect(granted).toBeLessThanOrEqual(CookieRepliesBurstable + seconds * CookieRepliesPerSecond);
    expect(granted).toBeGreaterThanOrEqual(seconds * CookieRepliesPerSecond * 0.95);
    g.gc(seconds * 1000);
    expect(g.answeredEndpoints).toBeLessThanOrEqual(g.perSource.maxEntries);
  });

  it('a fixed set of 1024 flooding endpoints gets one reply each per quiet period, so a new endpoint still gets one', () => {
    const g = new HandshakeGuard();
    const flood = Array.from({ length: 1024 }, (_, i) => `198.18.${i >> 8}.${i & 255}:4000`);
    let granted = 0;
    let newcomers = 0;
    for (let t = 0; t < 3 * CookieReplyQuietMs; t += 1) {
      for (let k = 0; k < 10; k++) if (g.mayReplyCookie(flood[(t * 10 + k) % flood.length], t)) granted++;
      // A new endpoint every 100 ms once the first replies have been spread (after one quiet period).
      if (t >= CookieReplyQuietMs && t % 100 === 0 && g.mayReplyCookie(`192.0.2.${t / 100}:51820`, t)) newcomers++;
      if (t % 1000 === 0) g.gc(t);
    }
    // 1024 first replies, then the returning budget (3 quiet periods, not 3 x 1024).
    expect(granted).toBeLessThanOrEqual(1024 + ReturningCookieRepliesBurstable + 3 * (CookieReplyQuietMs / 1000) * ReturningCookieRepliesPerSecond);
    expect(newcomers).toBe(2 * CookieReplyQuietMs / 100); // every newcomer got its reply
    expect(g.mayReplyCookie('192.0.2.250:51820', 3 * CookieReplyQuietMs)).toBe(true);
    expect(g.mayReplyCookie('192.0.2.250:51820', 3 * CookieReplyQuietMs + 1)).toBe(false); // quiet period
  });

  it('Noise work within the handshake budget across all sources', () => {
    const g = new HandshakeGuard();
    let n = 0;
    for (let t = 0; t < 2000; t++) for (let k = 0; k < 5; k++) if (g.mayConsume(t)) n++;
    expect(n).toBeLessThanOrEqual(HandshakesBurstable + 2 * HandshakesPerSecond);
    expect(n).toBeGreaterThanOrEqual(2 * HandshakesPerSecond);
  });
});
