import { describe, it, expect } from 'vitest';
import { Teardown } from '../../src/sandbox/teardown.js';

describe('Teardown', () => {
  it('closes last opened first, once, and goes on past a failing or hanging step', async () => {
    const ran: string[] = [];
    const warned: string[] = [];
    const t = new Teardown({ warn: (o: { step: string }) => warned.push(o.step) } as never, 20);
    t.defer('a', () => ran.push('a'));
    const b = t.adopt('b', { name: 'b' }, (x) => ran.push(x.name));
    t.defer('fails', () => {
      ran.push('fails');
      throw new Error('boom');
    });
    t.defer('hangs', () => {
      ran.push('hangs');
      return new Promise(() => undefined);
    });
    expect(b.name).toBe('b');
    expect(t.pending()).toEqual(['a', 'b', 'fails', 'hangs']);
    await t.close();
    await t.close();
    expect(ran).toEqual(['hangs', 'fails', 'b', 'a']);
    expect(warned).toEqual(['hangs', 'fails']);
    expect(() => t.defer('late', () => undefined)).toThrow(/after close/);
  });

  it('move() hands the steps over: the old stack closes nothing, the new one everything', async () => {
    const ran: string[] = [];
    const t = new Teardown();
    t.defer('x', () => ran.push('x'));
    const owned = t.move();
    await t.close();
    expect(ran).toEqual([]);
    await owned.close();
    expect(ran).toEqual(['x']);
  });

  it('guard() closes what was opened and rethrows the original error', async () => {
    const ran: string[] = [];
    const t = new Teardown();
    const err = new Error('step 3 failed');
    await expect(
      t.guard(async () => {
        t.defer('one', () => ran.push('one'));
        t.defer('two', () => ran.push('two'));
        throw err;
      }),
    ).rejects.toBe(err);
    expect(ran).toEqual(['two', 'one']);
  });
});
