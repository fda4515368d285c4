import { describe, expect, it } from 'vitest';
import { FragmentTracker } from '../../src/dataplane/fragments.js';
import { Fragment, parsePacket, type ParsedPacket } from '../../src/dataplane/packet.js';
import { ipToBytes, parseIp } from '../../src/policy/index.js';

const ip = (s: string) => parseIp(s)!;
/** A hand-made IPv4 UDP fragment: id, offset (bytes), more-fragments flag, `len` bytes of data. */
function frag4(id: number, offset: number, more: boolean, len = 1000): ParsedPacket {
  const b = new Uint8Array(20 + len);
  b[0] = 0x45;
  b[2] = b.length >> 8;
  b[3] = b.length & 0xff;
  b[4] = id >> 8;
  b[5] = id & 0xff;
  const fo = (offset / 8) | (more ? 0x2000 : 0);
  b[6] = fo >> 8;
  b[7] = fo & 0xff;
  b[8] = 64;
  b[9] = 17;
  b.set([10, 77, 0, 2], 12);
  b.set([10, 77, 0, 10], 16);
  b[23] = 53; // UDP header in the first fragment: dst port 53
  return parsePacket(b)!;
}

describe('FragmentTracker', () => {
  it('parses the identification and the offset', () => {
    expect(frag4(0xbeef, 0, true)).toMatchObject({ fragment: Fragment.first, fragId: 0xbeef, fragOffset: 0, fragDataStart: 20, dstPort: 53 });
    expect(frag4(0xbeef, 1000, false)).toMatchObject({ fragment: Fragment.later, fragId: 0xbeef, fragOffset: 1000, l4Offset: -1 });
  });

  it('later fragments follow the first; others are orphans; overlap poisons', () => {
    const t = new FragmentTracker<string>();
    t.first(frag4(1, 0, true), 'flow-1', 0);
    expect(t.later(frag4(1, 1000, true), 1)).toEqual({ verdict: 'follow', value: 'flow-1' });
    expect(t.later(frag4(2, 1000, true), 1)).toEqual({ verdict: 'orphan' });
    expect(t.later(frag4(1, 992, true), 1)).toEqual({ verdict: 'overlap' }); // starts inside the first fragment's 1000 bytes
    expect(t.later(frag4(1, 2000, false), 1)).toEqual({ verdict: 'overlap' });
    t.first(frag4(3, 0, true), 'a', 0);
    t.first(frag4(3, 0, true), 'b', 0); // a second first fragment
    expect(t.later(frag4(3, 1000, false), 1)).toEqual({ verdict: 'overlap' });
    expect(t.counters).toMatchObject({ firsts: 2, followed: 1, orphans: 1, overlaps: 4 });
  });

  it('is bounded in entries (oldest forgotten) and in time', () => {
    const t = new FragmentTracker<number>({ maxEntries: 8, timeoutMs: 100 });
    for (let i = 0; i < 100; i++) t.first(frag4(i, 0, true), i, 0);
    expect(t.size).toBe(8);
    expect(t.later(frag4(0, 1000, false), 1).verdict).toBe('orphan');
    expect(t.later(frag4(99, 1000, false), 1)).toEqual({ verdict: 'follow', value: 99 });
    expect(t.later(frag4(99, 1000, false), 100).verdict).toBe('orphan');
    t.expire(100);
    expect(t.size).toBe(0);
  });

  it('reads the IPv6 fragment header\'s identification', () => {
    const b = new Uint8Array(40 + 8 + 8);
    b[0] = 0x60;
    b[5] = 16;
    b[6] = 44; // fragment header
    b[7] = 64;
    b.set(ipToBytes(ip('fd77::2')), 8);
    b.set(ipToBytes(ip('fd77::10')), 24);
    b[40] = 17;
    b[43] = 1; // offset 0, more
    b.set([0xde, 0xad, 0xbe, 0xef], 44);
    expect(parsePacket(b)).toMatchObject({ fragment: Fragment.first, fragId: 0xdeadbeef, fragDataStart: 48, sourceRouted: false });
  });
});
