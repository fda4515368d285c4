import { describe, expect, it } from 'vitest';
import {
  TcpCoalescer,
  VirtioNet,
  VirtioNetHdrLen,
  fromVirtioFrame,
  parseVirtioNetHdr,
  segmentTcp,
  writeVirtioNetHdr,
  type VirtioNetHdr,
} from '../../src/tun/offload.js';
import { internetChecksum } from '../../src/dataplane/packet.js';
import { seededRandom, type TestRandom } from '../support/random.js';

const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;

interface Seg {
  family: 4 | 6;
  src: number;
  sport: number;
  seq: number;
  ack?: number;
  flags?: number;
  window?: number;
  options?: Uint8Array;
  payload: Uint8Array;
  id?: number;
  ttl?: number;
}

const be16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const put16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = v >>> 8;
  b[o + 1] = v & 0xff;
};
const put32 = (b: Uint8Array, o: number, v: number) => {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
};

/** The pseudo-header (RFC 793 / RFC 8200 8.1) of a TCP packet, laid out so its 16-bit word sum is right. */
function pseudoHeader(pkt: Uint8Array): Uint8Array {
  const v6 = pkt[0]! >> 4 === 6;
  const l4 = pkt.length - (v6 ? 40 : 20);
  const pseudo = new Uint8Array((v6 ? 32 : 8) + 8);
  pseudo.set(v6 ? pkt.subarray(8, 40) : pkt.subarray(12, 20));
  const p = pseudo.length - 8;
  put16(pseudo, p, l4 >>> 16);
  put16(pseudo, p + 2, l4 & 0xffff);
  put16(pseudo, p + 6, 6);
  return pseudo;
}

/** The TCP checksum over the pseudo-header and `pkt[ipHl..]`, with the checksum field as it is. */
function tcpSum(pkt: Uint8Array): number {
  const ipHl = pkt[0]! >> 4 === 6 ? 40 : 20;
  const l4 = pkt.length - ipHl;
  const pseudo = pseudoHeader(pkt);
  const all = new Uint8Array(pseudo.length + l4);
  all.set(pseudo);
  all.set(pkt.subarray(ipHl), pseudo.length);
  return internetChecksum(all);
}

/** A TCP packet with every checksum right (IPv4 header checksum, TCP checksum). */
function tcp(s: Seg): Uint8Array {
  const ipHl = s.family === 4 ? 20 : 40;
  const opts = s.options ?? new Uint8Array(0);
  const tcpHl = 20 + opts.length;
  const pkt = new Uint8Array(ipHl + tcpHl + s.payload.length);
  if (s.family === 4) {
    pkt[0] = 0x45;
    put16(pkt, 2, pkt.length);
    put16(pkt, 4, s.id ?? 0);
    pkt[6] = 0x40; // DF
    pkt[8] = s.ttl ?? 64;
    pkt[9] = 6;
    pkt.set([10, 0, 0, s.src], 12);
    pkt.set([10, 0, 0, 200], 16);
    put16(pkt, 10, internetChecksum(pkt, 0, 20));
  } else {
    pkt[0] = 0x60;
    put16(pkt, 4, pkt.length - 40);
    pkt[6] = 6;
    pkt[7] = s.ttl ?? 64;
    pkt.set([0xfd, 0x77, ...new Array<number>(13).fill(0), s.src], 8);
    pkt.set([0xfd, 0x77, ...new Array<number>(13).fill(0), 200], 24);
  }
  put16(pkt, ipHl, s.sport);
  put16(pkt, ipHl + 2, 443);
  put32(pkt, ipHl + 4, s.seq >>> 0);
  put32(pkt, ipHl + 8, s.ack ?? 7777);
  pkt[ipHl + 12] = (tcpHl / 4) << 4;
  pkt[ipHl + 13] = s.flags ?? ACK;
  put16(pkt, ipHl + 14, s.window ?? 512);
  pkt.set(opts, ipHl + 20);
  pkt.set(s.payload, ipHl + tcpHl);
  put16(pkt, ipHl + 16, tcpSum(pkt));
  return pkt;
}

interface Written {
  hdr: VirtioNetHdr;
  pkt: Uint8Array;
}

function coalescer(slots?: number): { c: TcpCoalescer; out: Written[] } {
  const out: Written[] = [];
  const c = new TcpCoalescer((h, p) => out.push({ hdr: parseVirtioNetHdr(h)!, pkt: Uint8Array.from(p) }), slots);
  return { c, out };
}

/** What the stack behind the TUN sees: each write's packets, super-packets segmented (checks each super-packet too). */
function expand(out: Written[]): Uint8Array[] {
  const pkts: Uint8Array[] = [];
  for (const w of out) {
    if (w.hdr.gsoType === VirtioNet.GSO_NONE) {
      expect(w.hdr.flags).toBe(0);
      pkts.push(w.pkt);
      continue;
    }
    checkSuper(w);
    expect(segmentTcp(w.pkt, w.hdr.gsoSize, (s) => pkts.push(s))).toBe(true);
  }
  return pkts;
}

/** A super-packet's header fields, IP lengths and checksums, and its partial TCP checksum completed by hand. */
function checkSuper(w: Written): void {
  const v6 = w.pkt[0]! >> 4 === 6;
  const ipHl = v6 ? 40 : 20;
  const tcpHl = (w.pkt[ipHl + 12]! >> 4) * 4;
  expect(w.hdr).toMatchObject({
    flags: VirtioNet.F_NEEDS_CSUM,
    gsoType: v6 ? VirtioNet.GSO_TCPV6 : VirtioNet.GSO_TCPV4,
    hdrLen: ipHl + tcpHl,
    csumStart: ipHl,
    csumOffset: 16,
  });
  expect(w.pkt.length).toBeLessThanOrEqual(65535);
  expect(w.hdr.gsoSize).toBeGreaterThan(0);
  expect(w.pkt.length - ipHl - tcpHl).toBeGreaterThan(w.hdr.gsoSize);
  if (v6) expect(be16(w.pkt, 4)).toBe(w.pkt.length - 40);
  else {
    expect(be16(w.pkt, 2)).toBe(w.pkt.length);
    expect(internetChecksum(w.pkt, 0, 20)).toBe(0);
  }
  // NEEDS_CSUM: the stack sums from csumStart over the partial value in the field and stores the complement.
  const done = Uint8Array.from(w.pkt);
  put16(done, ipHl + 16, internetChecksum(done, ipHl, done.length));
  expect(tcpSum(done)).toBe(0);
  const framed = new Uint8Array(VirtioNetHdrLen + w.pkt.length);
  writeVirtioNetHdr(framed, w.hdr);
  framed.set(w.pkt, VirtioNetHdrLen);
  const again: Uint8Array[] = [];
  expect(fromVirtioFrame(framed, (p) => again.push(Uint8Array.from(p)))).toBeUndefined();
  const direct: Uint8Array[] = [];
  segmentTcp(w.pkt, w.hdr.gsoSize, (p) => direct.push(p));
  expect(diff(again, direct)).toBeUndefined();
}

/** undefined when both lists hold the same bytes; else where they first differ. */
function diff(got: Uint8Array[], want: Uint8Array[]): string | undefined {
  if (got.length !== want.length) return `${got.length} packets, want ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    const a = got[i]!;
    const b = want[i]!;
    if (a.length !== b.length) return `packet ${i}: ${a.length} bytes, want ${b.length}`;
    for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return `packet ${i} byte ${j}: ${a[j]}, want ${b[j]}`;
  }
  return undefined;
}

function flowOf(p: Uint8Array): string {
  const v6 = p[0]! >> 4 === 6;
  return `${v6 ? 6 : 4}/${v6 ? p[23] : p[15]}/${be16(p, v6 ? 40 : 20)}`;
}

/** Per flow, the packets in the order they arrived. */
function byFlow(pkts: Uint8Array[]): Map<string, Uint8Array[]> {
  const m = new Map<string, Uint8Array[]>();
  for (const p of pkts) {
    const k = flowOf(p);
    const l = m.get(k);
    if (l) l.push(p);
    else m.set(k, [p]);
  }
  return m;
}

/** One flow's segments: `count` full ones of `mss` bytes then a last of `last`, seq and IPv4 id in order. */
function flow(r: TestRandom, f: { family: 4 | 6; src: number; mss: number; count: number; last: number; options?: Uint8Array; pshLast?: boolean; seq?: number }): Uint8Array[] {
  const seq0 = f.seq ?? r.int(2 ** 32);
  const id0 = r.int(65536);
  const out: Uint8Array[] = [];
  for (let i = 0; i < f.count; i++) {
    const isLast = i === f.count - 1;
    const n = isLast ? f.last : f.mss;
    out.push(tcp({ family: f.family, src: f.src, sport: 1000 + f.src, seq: seq0 + i * f.mss, id: (id0 + i) & 0xffff, flags: isLast && f.pshLast ? ACK | PSH : ACK, options: f.options, payload: r.bytes(n) }));
  }
  return out;
}

function randomOptions(r: TestRandom): Uint8Array {
  return r.bytes(4 * r.int(11)); // 0..40 bytes, a multiple of 4
}

describe('TcpCoalescer and segmentTcp', () => {
  it('one flow of in-order segments is one super-packet; segmenting it gives back every original byte and checksum', () => {
    const r = seededRandom();
    for (let iter = 0; iter < 150; iter++) {
      const family = r.int(2) === 0 ? 4 : 6;
      const options = randomOptions(r);
      const head = (family === 4 ? 20 : 40) + 20 + options.length;
      const mss = 1 + r.int(1460); // odd sizes included
      const maxCount = Math.min(64, Math.floor((65535 - head) / mss));
      const count = 2 + r.int(Math.max(1, maxCount - 1));
      const last = 1 + r.int(mss);
      const pkts = flow(r, { family, src: 1, mss, count: Math.min(count, maxCount), last, options, pshLast: r.int(2) === 0 });
      const { c, out } = coalescer();
      for (const p of pkts) c.push(p);
      expect(out).toHaveLength(0); // held until the end of the burst
      c.flush();
      expect(out).toHaveLength(1);
      expect(out[0]!.hdr.gsoSize).toBe(mss);
      expect(diff(expand(out), pkts)).toBeUndefined();
    }
  });

  it('a random mix of flows, gaps, reordering, flags and non-TCP reaches the stack with every flow in arrival order and every byte right', () => {
    const r = seededRandom();
    for (let iter = 0; iter < 60; iter++) {
      const streams: Uint8Array[][] = [];
      for (let f = 0; f < 1 + r.int(12); f++) {
        const mss = 1 + r.int(1400);
        const family = r.int(2) === 0 ? 4 : 6;
        const pkts = flow(r, { family, src: 10 + f, mss, count: 1 + r.int(30), last: 1 + r.int(mss), options: randomOptions(r), pshLast: r.int(2) === 0 });
        // Loss and reordering: drop some, swap some neighbours; sprinkle control packets of the same flow.
        const s: Uint8Array[] = [];
        for (const p of pkts) {
          const roll = r.int(20);
          if (roll === 0) continue;
          if (roll === 1 && s.length > 0) s.splice(s.length - 1, 0, p);
          else s.push(p);
          if (roll === 2) s.push(tcp({ family, src: 10 + f, sport: 1010 + f, seq: r.int(2 ** 32), flags: [FIN | ACK, RST, SYN, ACK][r.int(4)], payload: r.bytes(r.int(3)) }));
        }
        streams.push(s);
      }
      const other = [r.bytes(r.int(60)), Uint8Array.from([0x45, 0, 0, 28, ...r.bytes(24)])]; // garbage, a short IPv4
      const arrival: Uint8Array[] = [];
      const cursors = streams.map(() => 0);
      while (cursors.some((c, i) => c < streams[i]!.length)) {
        const i = r.int(streams.length);
        if (cursors[i]! < streams[i]!.length) arrival.push(streams[i]![cursors[i]!++]!);
        if (r.int(50) === 0) arrival.push(other[r.int(2)]!);
      }
      const { c, out } = coalescer(1 + r.int(8));
      for (const p of arrival) c.push(p);
      c.flush();
      const seen = expand(out);
      expect(seen.length).toBe(arrival.length);
      expect(out.length).toBeLessThanOrEqual(arrival.length);
      const want = byFlow(arrival);
      const got = byFlow(seen);
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [k, pkts] of want) expect(diff(got.get(k)!, pkts), k).toBeUndefined();
    }
  });

  it('merges only what may follow: a gap, a shorter segment, PSH, other ack/window/TTL/options each end the super-packet', () => {
    const r = seededRandom();
    const base = (seq: number, o: Partial<Seg> = {}) => tcp({ family: 4, src: 1, sport: 5000, seq, id: Math.floor(seq / 100), payload: r.bytes(100), ...o });
    const cases: Array<[string, Uint8Array[], number]> = [
      ['gap', [base(0), base(100), base(300)], 2],
      ['reordered', [base(0), base(200), base(100)], 3],
      ['short then full', [base(0), tcp({ family: 4, src: 1, sport: 5000, seq: 100, id: 1, payload: r.bytes(50) }), base(150)], 2],
      ['PSH in the middle', [base(0), base(100, { flags: ACK | PSH }), base(200)], 2],
      ['other ack', [base(0), base(100, { ack: 1 })], 2],
      ['other window', [base(0), base(100, { window: 1 })], 2],
      ['other TTL', [base(0), base(100, { ttl: 3 })], 2],
      ['other options', [base(0, { options: Uint8Array.of(1, 1, 1, 1) }), base(100, { options: Uint8Array.of(1, 1, 1, 0) })], 2],
      ['FIN after data', [base(0), base(100), base(200, { flags: ACK | FIN })], 2],
      ['pure ACK between', [base(0), base(100, { payload: new Uint8Array(0) }), base(100)], 3],
    ];
    for (const [name, pkts, writes] of cases) {
      const { c, out } = coalescer();
      for (const p of pkts) c.push(p);
      c.flush();
      expect(out.length, name).toBe(writes);
      expect(diff(expand(out), pkts), name).toBeUndefined();
    }
  });

  it('a flow larger than 64 KiB becomes several super-packets, none over 65535 bytes', () => {
    const r = seededRandom();
    const pkts = flow(r, { family: 6, src: 1, mss: 1440, count: 60, last: 1440 });
    const { c, out } = coalescer();
    for (const p of pkts) c.push(p);
    c.flush();
    expect(out.length).toBe(2);
    expect(diff(expand(out), pkts)).toBeUndefined();
  });

  it('passes non-TCP at once, unchanged, and keeps no reference to a pushed buffer', () => {
    const r = seededRandom();
    const { c, out } = coalescer();
    const udp = Uint8Array.from([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, ...r.bytes(8)]);
    c.push(udp);
    expect(out).toHaveLength(1);
    expect(out[0]!.pkt).toEqual(udp);
    const pkts = flow(r, { family: 4, src: 1, mss: 500, count: 3, last: 500 });
    const copies = pkts.map((p) => Uint8Array.from(p));
    for (const p of pkts) {
      c.push(p);
      p.fill(0xee); // the caller reuses its buffer at once
    }
    c.flush();
    expect(diff(expand(out.slice(1)), copies)).toBeUndefined();
  });
});

const ECE = 0x40;
const ackOf = (p: Uint8Array) => {
  const t = p[0]! >> 4 === 6 ? 40 : 20;
  return ((be16(p, t + 8) << 16) | be16(p, t + 10)) >>> 0;
};
/** NOP, NOP, timestamps (RFC 7323 3): what Linux puts on every ACK. */
const timestamps = (tsval: number, tsecr = 1) =>
  Uint8Array.of(1, 1, 8, 10, tsval >>> 24, (tsval >>> 16) & 0xff, (tsval >>> 8) & 0xff, tsval & 0xff, tsecr >>> 24, (tsecr >>> 16) & 0xff, (tsecr >>> 8) & 0xff, tsecr & 0xff);

/** `b` strictly after `a` in 32-bit sequence space. */
const after = (a: number, b: number) => {
  const d = (b - a) >>> 0;
  return d !== 0 && d < 0x8000_0000;
};

/** A copy of `pkt` with IPv4 TOS / IPv6 traffic class `tc`, checksums right. */
function withTrafficClass(pkt: Uint8Array, tc: number): Uint8Array {
  const p = Uint8Array.from(pkt);
  if (p[0]! >> 4 === 4) {
    p[1] = tc;
    put16(p, 10, 0);
    put16(p, 10, internetChecksum(p, 0, 20));
  } else {
    p[0] = 0x60 | (tc >> 4);
    p[1] = ((tc & 0x0f) << 4) | (p[1]! & 0x0f);
  }
  return p;
}

describe('TcpCoalescer ACK filtering (RFC 3449 5.2.2)', () => {
  const pure = (ack: number, o: Partial<Seg> & { tsval?: number; tsecr?: number } = {}) =>
    tcp({ family: 4, src: 1, sport: 6000, seq: 1000, ack, options: timestamps(o.tsval ?? ack, o.tsecr), payload: new Uint8Array(0), ...o });

  it('of a run of advancing pure ACKs in one burst, the first and the newest are written, as they came', () => {
    for (const family of [4, 6] as const) {
      const acks = [100, 2_000, 65_000, 0x8000_0000, 0xffff_ff00, 0x10].map((a, i) => pure(a, { family, tsval: i })); // wraps past 2^32
      const { c, out } = coalescer();
      for (const p of acks) c.push(p);
      expect(out).toHaveLength(1); // the first, written when the second superseded it; the rest held
      c.flush();
      // The first may duplicate the last ACK written before the burst: it is never left out.
      expect(out.map((w) => w.pkt)).toEqual([acks[0], acks.at(-1)]);
      for (const w of out) expect(w.hdr).toEqual(parseVirtioNetHdr(new Uint8Array(VirtioNetHdrLen)));
      expect(c.stats.acksFiltered).toBe(acks.length - 2);
    }
  });

  it('never filters what a sender counts or needs: duplicates, window updates, older acks or timestamps, SACK, ECE, other TOS, other flows', () => {
    const sack = Uint8Array.of(1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2);
    // Each case follows two advancing ACKs (the second is replaceable), so only the last packet decides.
    const lead = (o: Partial<Seg> = {}) => [pure(50, o), pure(100, o)];
    const cases: Array<[string, Uint8Array[]]> = [
      ['duplicate ACKs', [...lead(), pure(100), pure(100)]],
      ['a duplicate, then more', [...lead(), pure(100), pure(200)]],
      ['window update', [...lead(), pure(100, { window: 9000 })]],
      ['older ack after a newer one', [...lead(), pure(90)]],
      ['half the sequence space ahead', [...lead(), pure(100 + 0x8000_0000)]],
      ['older TSval', [...lead(), pure(200, { tsval: 99 })]],
      ['older TSecr', [pure(50, { tsecr: 7 }), pure(100, { tsecr: 7 }), pure(200, { tsecr: 6 })]],
      ['timestamps replaced by NOPs', [...lead(), pure(200, { options: new Uint8Array(12).fill(1) })]],
      ['two timestamps options', [...lead(), pure(200, { options: Uint8Array.of(8, 10, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1) })]],
      ['SACK blocks', [...lead(), pure(200, { options: sack })]],
      ['SACK on the older', [pure(50), pure(100, { options: sack }), pure(200)]],
      ['a malformed timestamps option', [...lead(), pure(200, { options: Uint8Array.of(8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1) })]],
      ['ECE', [...lead(), pure(200, { flags: ACK | ECE })]],
      ['PSH', [...lead(), pure(200, { flags: ACK | PSH })]],
      ['FIN', [...lead(), pure(200, { flags: ACK | FIN })]],
      ['another flow', [...lead(), pure(200, { sport: 6001 })]],
      ['another family', [...lead(), pure(200, { family: 6 })]],
      ['another header length', [...lead(), pure(200, { options: new Uint8Array(0) })]],
      ['other IPv4 TOS', [...lead(), withTrafficClass(pure(200), 0x10)]],
      ['other IPv6 traffic class', [...lead({ family: 6 }), withTrafficClass(pure(200, { family: 6 }), 0x10)]],
      ['data between', [...lead(), tcp({ family: 4, src: 1, sport: 6000, seq: 1000, ack: 150, payload: Uint8Array.of(1, 2, 3) }), pure(200)]],
    ];
    for (const [name, pkts] of cases) {
      const { c, out } = coalescer();
      for (const p of pkts) c.push(p);
      c.flush();
      expect(diff(expand(out), pkts), name).toBeUndefined();
      expect(c.stats.acksFiltered, name).toBe(0);
    }
    // The first ACK of a burst is written even when the next one supersedes it: it may be a duplicate of
    // the last ACK the burst before wrote (the coalescer keeps nothing across bursts).
    const { c, out } = coalescer();
    c.push(pure(100));
    c.flush();
    for (const p of [pure(100), pure(200)]) c.push(p);
    c.flush();
    expect(out.map((w) => ackOf(w.pkt))).toEqual([100, 100, 200]);
  });

  it('a TCP packet too large to hold (an IPv6 payload of 65535 bytes) passes through after what was held, never throws', () => {
    const r = seededRandom();
    const big = tcp({ family: 6, src: 1, sport: 7000, seq: 1, payload: r.bytes(65535 - 20) });
    expect(big.length).toBe(40 + 65535);
    const { c, out } = coalescer();
    c.push(pure(1, { family: 6, sport: 7000 }));
    c.push(big);
    c.flush();
    expect(out.map((w) => w.pkt.length)).toEqual([72, big.length]); // the held ACK first: the flow's order
    // An IPv4 TCP packet with IP options (or a fragment) is not parsed, so its flow is unknown: whatever is
    // held (here an ACK of another flow and a data segment) goes first.
    const ipOptions = Uint8Array.from([0x46, 0, 0, 64, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 200, 1, 1, 1, 1, ...r.bytes(40)]);
    const { c: c2, out: out2 } = coalescer();
    const held = [pure(5, { sport: 6001 }), tcp({ family: 4, src: 1, sport: 6000, seq: 1, payload: r.bytes(100) })];
    for (const p of [...held, ipOptions]) c2.push(p);
    expect(diff(expand(out2), [...held, ipOptions])).toBeUndefined();
  });

  it('a random burst: per flow, what is written keeps arrival order, and each ACK left out advanced over the one before and is superseded by the next one written', () => {
    const r = seededRandom();
    let filtered = 0;
    for (let iter = 0; iter < 300; iter++) {
      const arrival: Uint8Array[] = [];
      const acks = [0, 0, 0].map(() => r.int(2 ** 32));
      for (let i = 0; i < 1 + r.int(40); i++) {
        const f = r.int(3);
        const roll = r.int(12);
        if (roll < 7) acks[f] = (acks[f]! + r.int(3000)) >>> 0; // advances, or (0) a duplicate
        if (roll === 7) acks[f] = (acks[f]! - 1 - r.int(500)) >>> 0; // reordered: older
        const o: Partial<Seg> & { tsval?: number } = { sport: 6000 + f, ack: acks[f]!, tsval: r.int(8) === 0 ? i - 1 : i };
        if (roll === 8) o.payload = r.bytes(1 + r.int(100));
        if (roll === 9) o.window = r.int(65536);
        if (roll === 10) o.flags = [ACK | ECE, ACK | FIN, ACK | PSH][r.int(3)];
        const p = pure(acks[f]!, o);
        arrival.push(roll === 11 ? withTrafficClass(p, 4 * r.int(4)) : p);
      }
      const { c, out } = coalescer(1 + r.int(8));
      for (const p of arrival) c.push(p);
      c.flush();
      const written = expand(out);
      expect(c.stats.acksFiltered).toBe(arrival.length - written.length);
      filtered += c.stats.acksFiltered;
      for (const [flow, want] of byFlow(arrival)) {
        const got = byFlow(written).get(flow) ?? [];
        // Walk the flow's arrivals: each is written next, or left out and superseded by the next written one.
        let g = 0;
        for (let i = 0; i < want.length; i++) {
          if (g < got.length && diff([got[g]!], [want[i]!]) === undefined) {
            g++;
            continue;
          }
          const next = got[g];
          expect(next, `${flow} arrival ${i} left out with nothing after it`).toBeDefined();
          const isPure = want[i]!.length === 20 + 32 && want[i]![33]! === ACK;
          expect(isPure, `${flow} arrival ${i}: only pure ACKs are left out`).toBe(true);
          expect(i > 0 && after(ackOf(want[i - 1]!), ackOf(want[i]!)), `${flow} arrival ${i}: a possible duplicate left out`).toBe(true);
          expect(after(ackOf(want[i]!), ackOf(next!)), `${flow} arrival ${i}: superseded by an older ack`).toBe(true);
        }
        expect(g, flow).toBe(got.length);
      }
    }
    expect(filtered).toBeGreaterThan(0); // the bursts did exercise the filter
  });
});

describe('fromVirtioFrame', () => {
  it('completes a NEEDS_CSUM checksum, passes a plain frame through, refuses UDP GSO and short frames', () => {
    const r = seededRandom();
    const pkt = tcp({ family: 6, src: 1, sport: 1, seq: 1, payload: r.bytes(333) });
    const frame = new Uint8Array(VirtioNetHdrLen + pkt.length);
    frame.set(pkt, VirtioNetHdrLen);
    const got: Uint8Array[] = [];
    expect(fromVirtioFrame(frame, (p) => got.push(Uint8Array.from(p)))).toBeUndefined();
    expect(got[0]).toEqual(pkt);
    // Partial: the field holds the pseudo-header sum only.
    const partial = Uint8Array.from(pkt);
    put16(partial, 56, 0xffff - internetChecksum(pseudoHeader(pkt))); // the folded pseudo-header sum alone
    frame.set(partial, VirtioNetHdrLen);
    writeVirtioNetHdr(frame, { flags: VirtioNet.F_NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 40, csumOffset: 16 });
    got.length = 0;
    expect(fromVirtioFrame(frame, (p) => got.push(Uint8Array.from(p)))).toBeUndefined();
    expect(got[0]).toEqual(pkt);
    writeVirtioNetHdr(frame, { flags: 0, gsoType: VirtioNet.GSO_UDP, hdrLen: 0, gsoSize: 100, csumStart: 0, csumOffset: 0 });
    expect(fromVirtioFrame(frame, () => undefined)).toBe('gso-type');
    expect(fromVirtioFrame(new Uint8Array(4), () => undefined)).toBe('short');
  });
});
