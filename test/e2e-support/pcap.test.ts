import { describe, it, expect } from 'vitest';
import { checkChecksums, readPcap } from '../../e2e/support/pcap.js';
import { udpPacket } from '../../e2e/support/packets.js';
import { seededRandom } from '../support/random.js';

/** An IPv4 TCP segment with correct checksums (the checker's positive case), built by hand. */
function tcpSegment(payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, p.length);
  p[8] = 64;
  p[9] = 6;
  p.set([10, 0, 0, 1, 10, 0, 0, 2], 12);
  v.setUint16(20, 40000);
  v.setUint16(22, 7001);
  p[32] = 5 << 4;
  p.set(payload, 40);
  const sum = (b: Uint8Array) => {
    let s = 0;
    for (let i = 0; i < b.length; i += 2) s += (b[i]! << 8) | (b[i + 1] ?? 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return ~s & 0xffff;
  };
  v.setUint16(10, sum(p.subarray(0, 20)));
  const pseudo = new Uint8Array(12 + 20 + payload.length);
  pseudo.set(p.subarray(12, 20), 0);
  pseudo[9] = 6;
  new DataView(pseudo.buffer).setUint16(10, 20 + payload.length);
  pseudo.set(p.subarray(20), 12);
  v.setUint16(36, sum(pseudo));
  return p;
}

describe('e2e capture checker (e2e/support/pcap.ts)', () => {
  it('passes correct IPv4/TCP/UDP packets and names each one with a flipped bit', () => {
    const rnd = seededRandom();
    const good = [tcpSegment(rnd.bytes(1 + rnd.int(1400))), udpPacket('10.0.0.1', '10.0.0.2', 1, 2, rnd.bytes(1 + rnd.int(100)))];
    const ok = checkChecksums(good);
    expect(ok.bad).toEqual([]);
    expect(ok.tcpPayloadBytes).toBe(good[0]!.length - 40);
    for (const g of good) {
      for (const at of [5, 10, 25, g.length - 1]) {
        const bad = new Uint8Array(g);
        bad[at]! ^= 1 << rnd.int(8);
        const r = checkChecksums([bad]);
        expect(r.badCount, `bit flipped at byte ${at}`).toBe(1);
      }
    }
  });

  it('a segment carrying only the pseudo-header sum (CHECKSUM_PARTIAL) is partial, not bad; a wrong one is bad', () => {
    const seg = tcpSegment(seededRandom().bytes(2000));
    const v = new DataView(seg.buffer);
    // The pseudo-header sum, not complemented: what a NEEDS_CSUM writer leaves in the field.
    let s = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + (seg.length - 20);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    v.setUint16(36, s);
    expect(checkChecksums([seg])).toMatchObject({ bad: [], partial: 1 });
    v.setUint16(36, s ^ 0x10);
    expect(checkChecksums([seg])).toMatchObject({ badCount: 1, partial: 0 });
  });

  it('reads a raw-IP pcap file and refuses a truncated capture', () => {
    const pkt = tcpSegment(new Uint8Array([1, 2, 3]));
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0xa1b2c3d4, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(262144, 16);
    header.writeUInt32LE(101, 20);
    const rec = (incl: number, orig: number) => {
      const r = Buffer.alloc(16);
      r.writeUInt32LE(incl, 8);
      r.writeUInt32LE(orig, 12);
      return r;
    };
    expect(readPcap(Buffer.concat([header, rec(pkt.length, pkt.length), pkt]))).toEqual([pkt]);
    expect(() => readPcap(Buffer.concat([header, rec(10, pkt.length), pkt.subarray(0, 10)]))).toThrow(/truncated/);
  });
});
