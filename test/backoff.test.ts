import { describe, expect, it } from 'vitest';
import { Backoff } from '../src/backoff.js';
import { seededRandom } from './support/random.js';
import { ManualTimers } from './support/timers.js';

describe('Backoff (decorrelated jitter)', () => {
  it('starts at initialMs, stays within [initialMs, maxMs] and within 3x the previous delay', () => {
    const rnd = seededRandom();
    const b = new Backoff({ initialMs: 100, maxMs: 5000, random: rnd.float, timers: new ManualTimers() });
    expect(b.next()).toBe(100);
    let prev = 100;
    for (let i = 0; i < 200; i++) {
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(100);
      expect(d).toBeLessThanOrEqual(Math.min(5000, prev * 3));
      prev = d;
    }
    expect(b.attempts).toBe(201);
  });

  it('grows towards maxMs and reaches it', () => {
    const b = new Backoff({ initialMs: 10, maxMs: 1000, random: () => 0.999999, timers: new ManualTimers() });
    const ds = Array.from({ length: 8 }, () => b.next());
    expect(ds[0]).toBe(10);
    for (let i = 1; i < ds.length; i++) expect(ds[i]).toBeGreaterThanOrEqual(ds[i - 1]);
    expect(ds.at(-1)).toBe(1000);
  });

  it('is jittered: two clients with different random streams do not retry in lock-step', () => {
    const rnd = seededRandom();
    const a = new Backoff({ initialMs: 100, maxMs: 60_000, random: rnd.float, timers: new ManualTimers() });
    const b = new Backoff({ initialMs: 100, maxMs: 60_000, random: rnd.float, timers: new ManualTimers() });
    const da = Array.from({ length: 6 }, () => a.next());
    const db = Array.from({ length: 6 }, () => b.next());
    expect(da.slice(1)).not.toEqual(db.slice(1));
  });

  it('reset starts over from initialMs', () => {
    const b = new Backoff({ initialMs: 50, maxMs: 500, random: () => 0.9, timers: new ManualTimers() });
    b.next();
    b.next();
    expect(b.next()).toBeGreaterThan(50);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(50);
  });

  it('schedule runs the callback after the delay on the injected timers, and can be cancelled', () => {
    const timers = new ManualTimers();
    const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.5, timers });
    let ran = 0;
    b.schedule(() => ran++);
    timers.advance(99);
    expect(ran).toBe(0);
    timers.advance(1);
    expect(ran).toBe(1);
    const cancel = b.schedule(() => ran++);
    cancel();
    timers.advance(10_000);
    expect(ran).toBe(1);
  });

  it('wait resolves after the delay, or at once when aborted', async () => {
    const timers = new ManualTimers();
    const b = new Backoff({ initialMs: 200, maxMs: 1000, random: () => 0.5, timers });
    let done = false;
    const p = b.wait().then(() => (done = true));
    await Promise.resolve();
    expect(done).toBe(false);
    timers.advance(200);
    await p;
    expect(done).toBe(true);

    const ac = new AbortController();
    const q = b.wait(ac.signal);
    expect(timers.waiting.length).toBe(1);
    ac.abort();
    await q;
    expect(timers.waiting.length).toBe(0);
  });

  it('rejects bounds that make no sense', () => {
    expect(() => new Backoff({ initialMs: 0, maxMs: 10 })).toThrow(RangeError);
    expect(() => new Backoff({ initialMs: 10, maxMs: 5 })).toThrow(RangeError);
  });
});
