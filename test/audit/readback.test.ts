import { describe, expect, it } from 'vitest';
import { ReadCursor, type Delivery } from '../../src/audit/readback.js';
import { seededRandom } from '../support/random.js';

/**
 * A model of the read-back against a server that loses deliveries on the way (a fetch that ends on the client's
 * timer while the server still sends): the server's consumer sends stream sequences from its start, counting
 * each as delivered; some never arrive. The reader must visit every stored sequence exactly once, in order.
 */
function simulate(stored: number[], lost: (serverDelivery: number, consumer: number) => boolean): { visited: number[]; resets: number } {
  const cursor = new ReadCursor();
  const visited: number[] = [];
  for (let consumer = 0; consumer < 1000; consumer++) {
    const from = stored.filter((s) => s >= cursor.next);
    let sent = 0;
    let outcome: 'done' | 'reset' | undefined;
    for (const seq of from) {
      sent++;
      if (lost(sent, consumer)) continue;
      const d: Delivery = { deliverySeq: sent, streamSeq: seq, pending: from.length - sent };
      const step = cursor.accept(d);
      if (step.action === 'reset') {
        outcome = 'reset';
        break;
      }
      visited.push(seq);
      if (step.done) {
        outcome = 'done';
        break;
      }
    }
    // Nothing more arrives: the consumer's view decides.
    outcome ??= cursor.onEmpty({ numPending: 0, deliveredSeq: sent }) === 'done' ? 'done' : 'reset';
    if (outcome === 'done') return { visited, resets: cursor.resets };
    cursor.restart();
  }
  throw new Error('no end after 1000 consumers');
}

describe('ReadCursor: every stored message once, whatever deliveries are lost', () => {
  it('reads everything once when nothing is lost, without a reset', () => {
    const stored = [1, 2, 5, 9, 10];
    expect(simulate(stored, () => false)).toEqual({ visited: stored, resets: 0 });
  });

  it('a lost tail of a batch (the 40,000-of-50,000 read-back) is read again from the next stream sequence', () => {
    const stored = Array.from({ length: 50 }, (_, i) => i * 2 + 1);
    // The first consumer's deliveries 34..50 never arrive (its fetch ended on the client's timer).
    const r = simulate(stored, (d, consumer) => consumer === 0 && d >= 34);
    expect(r.visited).toEqual(stored);
    expect(r.resets).toBe(1);
  });

  it('a delivery lost in the middle is detected by the next one and read again', () => {
    const stored = Array.from({ length: 20 }, (_, i) => i + 1);
    const r = simulate(stored, (d, consumer) => consumer === 0 && d === 7);
    expect(r.visited).toEqual(stored);
    expect(r.resets).toBe(1);
  });

  it('random losses (seeded): each stored sequence visited exactly once, in order', () => {
    const rnd = seededRandom();
    for (let round = 0; round < 50; round++) {
      const stored: number[] = [];
      for (let s = 1, n = 1 + rnd.int(300); stored.length < n; s += 1 + rnd.int(3)) stored.push(s);
      const p = rnd.float() * 0.2;
      const r = simulate(stored, (_d, consumer) => consumer < 30 && rnd.float() < p);
      expect(r.visited).toEqual(stored);
    }
  });

  it('an empty fetch: done only when the consumer delivered no more than was received and has nothing pending', () => {
    const c = new ReadCursor(10);
    expect(c.next).toBe(10);
    expect(c.accept({ deliverySeq: 1, streamSeq: 10, pending: 3 })).toEqual({ action: 'visit', done: false });
    expect(c.onEmpty({ numPending: 3, deliveredSeq: 1 })).toBe('wait');
    expect(c.onEmpty({ numPending: 0, deliveredSeq: 4 })).toBe('reset');
    expect(c.onEmpty({ numPending: 0, deliveredSeq: 1 })).toBe('done');
    expect(c.accept({ deliverySeq: 3, streamSeq: 12, pending: 1 })).toEqual({ action: 'reset' });
    expect(c.next).toBe(11);
    c.restart();
    expect(c.accept({ deliverySeq: 1, streamSeq: 11, pending: 0 })).toEqual({ action: 'visit', done: true });
    expect(c.resets).toBe(1);
  });
});
