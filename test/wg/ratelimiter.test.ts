/**
 * The handshake rate limiter (src/wg/ratelimiter.ts, issue #13 item 9): per-source token bucket as in
 * wireguard-go (20/s, bursts of 5), with a bound on remembered sources for floods from many spoofed
 * addresses.
 */
import { describe, it, expect } from 'vitest';
import { PacketsBurstable, RateLimiter } from '../../src/wg/ratelimiter.js';
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
