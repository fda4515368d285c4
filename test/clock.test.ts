import { describe, it, expect } from 'vitest';
import { settleWithin } from '../src/clock.js';

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('settleWithin', () => {
  it('returns the value and leaves no timer behind when the promise settles first', async () => {
    const before = timers();
    expect(await settleWithin(Promise.resolve(7), 60_000)).toBe(7);
    expect(timers()).toBe(before);
  });

  it('returns undefined when time runs out first, and a later rejection is not unhandled', async () => {
    let reject!: (e: Error) => void;
    const p = new Promise<number>((_, r) => (reject = r));
    expect(await settleWithin(p, 1)).toBeUndefined();
    reject(new Error('late'));
    await new Promise((r) => setImmediate(r));
  });

  it('passes a rejection that comes first to the caller, and clears its timer', async () => {
    const before = timers();
    await expect(settleWithin(Promise.reject(new Error('boom')), 60_000)).rejects.toThrow('boom');
    expect(timers()).toBe(before);
  });
});
