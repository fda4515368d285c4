import { describe, expect, it } from 'vitest';
import {
  GSO_CMSG_SPACE, GSO_MAX_BYTES, IOVEC_SIZE, MMSGHDR_SIZE, SOCKADDR_SLOT, UDP_MAX_SEGMENTS, UdpConst,
  planMessages, readSockaddr, writeSendHeaders, writeSockaddr, type BatchArenas,
} from '../../src/conn/batch.js';
import { UdpBind } from '../../src/conn/udp.js';
import { seededRandom } from '../support/random.js';

const all = () => true;

describe('planMessages', () => {
  it('without GSO: one message per datagram', () => {
    expect(planMessages([100, 100, 100], 3, all, false)).toEqual([
      { first: 0, count: 1, segment: 0 }, { first: 1, count: 1, segment: 0 }, { first: 2, count: 1, segment: 0 },
    ]);
  });
  it('with GSO: equal sizes to one address merge, a shorter one ends the run, a longer one starts a new run', () => {
    expect(planMessages([1452, 1452, 900, 1452, 1500, 32], 6, all, true)).toEqual([
      { first: 0, count: 3, segment: 1452 }, { first: 3, count: 1, segment: 0 }, { first: 4, count: 2, segment: 1500 },
    ]);
  });
  it('with GSO: another destination starts a new message', () => {
    const dest = [1, 1, 2, 2, 1];
    expect(planMessages([80, 80, 80, 80, 80], 5, (i, j) => dest[i] === dest[j], true)).toEqual([
      { first: 0, count: 2, segment: 80 }, { first: 2, count: 2, segment: 80 }, { first: 4, count: 1, segment: 0 },
    ]);
  });
  it('with GSO: at most UDP_MAX_SEGMENTS and GSO_MAX_BYTES per message', () => {
    const small = new Array<number>(150).fill(100);
    const p = planMessages(small, small.length, all, true);
    expect(p.map((m) => m.count)).toEqual([UDP_MAX_SEGMENTS, UDP_MAX_SEGMENTS, 150 - 2 * UDP_MAX_SEGMENTS]);
    const big = new Array<number>(100).fill(1452);
    for (const m of planMessages(big, big.length, all, true)) expect(m.count * 1452).toBeLessThanOrEqual(GSO_MAX_BYTES);
  });
  it('covers every datagram exactly once, in order (seeded)', () => {
    const rnd = seededRandom();
    for (let round = 0; round < 200; round++) {
      const n = 1 + rnd.int(80);
      const lens = Array.from({ length: n }, () => [1452, 1452, 1452, 148, 32, 900][rnd.int(6)]!);
      const dest = Array.from({ length: n }, () => rnd.int(2));
      const plan = planMessages(lens, n, (i, j) => dest[i] === dest[j], rnd.int(2) === 1);
      let next = 0;
      for (const m of plan) {
        expect(m.first).toBe(next);
        for (let k = m.first + 1; k < m.first + m.count; k++) {
          expect(dest[k]).toBe(dest[m.first]);
          expect(lens[k]).toBeLessThanOrEqual(m.segment);
        }
        next += m.count;
      }
      expect(next).toBe(n);
    }
  });
});

describe('mmsghdr layout', () => {
  it('writes sockaddr_in / sockaddr_in6 and reads them back', () => {
    const b = Buffer.alloc(64);
    expect(writeSockaddr(b, 0, Uint8Array.of(192, 0, 2, 7), 51820)).toBe(16);
    expect([...b.subarray(0, 8)]).toEqual([UdpConst.AF_INET, 0, 0xca, 0x6c, 192, 0, 2, 7]);
    const sa = readSockaddr(b, 0)!;
    expect([[...sa.ip], sa.port]).toEqual([[192, 0, 2, 7], 51820]);
    const v6 = new Uint8Array(16).fill(0xab);
    expect(writeSockaddr(b, 32, v6, 1)).toBe(28);
    expect([...readSockaddr(b, 32)!.ip]).toEqual([...v6]);
  });
  it('points each message at its iovecs, its address and (GSO) a UDP_SEGMENT cmsg', () => {
    const a: BatchArenas = {
      data: 0x10000n, slotSize: 2048, iov: Buffer.alloc(4 * IOVEC_SIZE), iovAddr: 0x20000n, names: 0x30000n,
      control: Buffer.alloc(4 * GSO_CMSG_SPACE), controlAddr: 0x40000n, hdrs: Buffer.alloc(4 * MMSGHDR_SIZE),
    };
    writeSendHeaders(a, [{ first: 0, count: 3, segment: 1452 }, { first: 3, count: 1, segment: 0 }], [1452, 1452, 100, 60], [16, 16, 16, 28]);
    expect(a.iov.readBigUInt64LE(2 * IOVEC_SIZE)).toBe(0x10000n + 2n * 2048n);
    expect(a.iov.readBigUInt64LE(2 * IOVEC_SIZE + 8)).toBe(100n);
    // message 0: name slot 0, 3 iovecs from iov[0], cmsg 0
    expect(a.hdrs.readBigUInt64LE(0)).toBe(0x30000n);
    expect(a.hdrs.readUInt32LE(8)).toBe(16);
    expect(a.hdrs.readBigUInt64LE(16)).toBe(0x20000n);
    expect(a.hdrs.readBigUInt64LE(24)).toBe(3n);
    expect(a.hdrs.readBigUInt64LE(32)).toBe(0x40000n);
    expect(a.hdrs.readBigUInt64LE(40)).toBe(BigInt(GSO_CMSG_SPACE));
    expect(a.control.readBigUInt64LE(0)).toBe(18n);
    expect(a.control.readInt32LE(8)).toBe(UdpConst.SOL_UDP);
    expect(a.control.readInt32LE(12)).toBe(UdpConst.UDP_SEGMENT);
    expect(a.control.readUInt16LE(16)).toBe(1452);
    // message 1: name slot 3, 1 iovec from iov[3], no control
    const h = MMSGHDR_SIZE;
    expect(a.hdrs.readBigUInt64LE(h)).toBe(0x30000n + 3n * BigInt(SOCKADDR_SLOT));
    expect(a.hdrs.readUInt32LE(h + 8)).toBe(28);
    expect(a.hdrs.readBigUInt64LE(h + 16)).toBe(0x20000n + 3n * BigInt(IOVEC_SIZE));
    expect(a.hdrs.readBigUInt64LE(h + 24)).toBe(1n);
    expect(a.hdrs.readBigUInt64LE(h + 32)).toBe(0n);
  });
});

// Real sockets on loopback: a burst of datagrams through each path arrives whole, in order, with the sender's address.
describe('UdpBind batched I/O (loopback)', () => {
  for (const offload of ['auto', 'mmsg', 'off'] as const) {
    for (const host of ['127.0.0.1', '::1']) {
      it(`offload ${offload} over ${host}: 200 datagrams in bursts arrive whole, from the sender's address`, async () => {
        const rnd = seededRandom();
        const tx = await UdpBind.open({ offload, host4: '127.0.0.1', host6: '::1' });
        const rx = await UdpBind.open({ offload, host4: '127.0.0.1', host6: '::1' });
        try {
          if (host === '::1' && !(tx.hasIPv6 && rx.hasIPv6)) return;
          if (offload === 'off') expect(tx.offload.mode).toBe('dgram');
          else expect(tx.offload.mode).not.toBe('dgram');
          if (offload === 'mmsg') expect(tx.offload.mode).toBe('mmsg');
          // Sizes: mostly full-size (GSO runs), some short ones (run ends), one over a slot (plain send).
          const sizes = Array.from({ length: 200 }, (_, i) => (i === 77 ? 3000 : [1452, 1452, 1452, 1452, 148, 32][rnd.int(6)]!));
          const sent = sizes.map((n, i) => {
            const d = rnd.bytes(n);
            d[0] = i; // sequence, checked below
            return d;
          });
          const got: Uint8Array[] = [];
          const froms = new Set<string>();
          let wake = () => undefined as void;
          rx.start((data, from) => {
            froms.add(JSON.stringify(from));
            got.push(Uint8Array.from(data));
            wake();
          });
          tx.start(() => undefined);
          // Bursts of 40 (~58 KB), each awaited: a receive buffer capped at rmem_max (208 KiB) holds one whole.
          for (let b = 0; b < sent.length; b += 40) {
            const arrived = new Promise<void>((resolve) => (wake = () => (got.length >= Math.min(b + 40, sent.length) ? resolve() : undefined)));
            for (const d of sent.slice(b, b + 40)) tx.send(d, { address: host, port: rx.port });
            await arrived;
          }
          expect([...froms]).toEqual([JSON.stringify({ address: host, port: tx.port })]);
          // The oversize one went through dgram, whose send is asynchronous: order is checked by sequence byte.
          got.sort((x, y) => x[0]! - y[0]!);
          expect(got.map((d) => d.length)).toEqual(sizes);
          for (let i = 0; i < sent.length; i++) expect(Buffer.from(got[i]!).equals(Buffer.from(sent[i]!))).toBe(true);
          if (offload !== 'off') {
            expect(tx.batchStats.sentDatagrams).toBe(199);
            expect(tx.batchStats.sendCalls).toBeLessThan(20); // 5 bursts, one sendmmsg each (+1 around the oversize one)
          }
          if (tx.offload.mode === 'gso') expect(tx.batchStats.gsoMessages).toBeGreaterThan(0);
          expect(tx.sendErrors).toBe(0);
        } finally {
          await tx.close();
          await rx.close();
        }
      });
    }
  }
});
