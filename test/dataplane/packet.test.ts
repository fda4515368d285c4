import { describe, expect, it } from 'vitest';
import {
  DropReason,
  Fragment,
  TcpFlag,
  buildAdminProhibited,
  buildIcmpEcho,
  buildTcp,
  buildTcpRst,
  buildUdp,
  internetChecksum,
  isLocalOnly,
  parsePacket,
  rejectFor,
  transportPayload,
} from '../../src/dataplane/packet.js';
import { formatIp, parseIp } from '../../src/net/addr.js';
import { ParseStats } from '../../src/dataplane/stats.js';

const ip = (s: string) => parseIp(s)!;
const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g)!.map((h) => parseInt(h, 16)));
const A4 = ip('10.77.0.2');
const B4 = ip('10.77.0.1');
const A6 = ip('fd77::2');
const B6 = ip('fd77::1');

/** Verify a transport checksum the way a receiver does: the sum over pseudo-header + segment is 0. */
function transportChecksumOk(pkt: Uint8Array): boolean {
  const v6 = pkt[0] >> 4 === 6;
  const hl = v6 ? 40 : (pkt[0] & 15) * 4;
  const proto = v6 ? pkt[6] : pkt[9];
  const l4 = pkt.subarray(hl);
  const pseudo = new Uint8Array((v6 ? 40 : 12) + l4.length);
  if (v6) {
    pseudo.set(pkt.subarray(8, 40), 0);
    new DataView(pseudo.buffer).setUint32(32, l4.length);
    pseudo[39] = proto;
    pseudo.set(l4, 40);
  } else {
    pseudo.set(pkt.subarray(12, 20), 0);
    pseudo[9] = proto;
    new DataView(pseudo.buffer).setUint16(10, l4.length);
    pseudo.set(l4, 12);
  }
  if (!v6 && proto === 1) return internetChecksum(l4) === 0;
  return internetChecksum(pseudo) === 0;
}

describe('internetChecksum', () => {
  it('matches the RFC 1071 / textbook IPv4 header example', () => {
    const hdr = hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7');
    expect(internetChecksum(hdr)).toBe(0xb861);
    hdr[10] = 0xb8;
    hdr[11] = 0x61;
    expect(internetChecksum(hdr)).toBe(0);
  });
  it('handles odd lengths', () => {
    expect(internetChecksum(Uint8Array.of(0x01))).toBe(0xfeff);
  });
});

describe('build then parse', () => {
  it.each([
    ['v4', A4, B4],
    ['v6', A6, B6],
  ])('UDP %s round-trips with valid checksums', (_n, src, dst) => {
    const payload = new TextEncoder().encode('hello');
    const pkt = buildUdp({ src, dst, srcPort: 40000, dstPort: 53, payload });
    if (src.family === 4) expect(internetChecksum(pkt, 0, 20)).toBe(0);
    expect(transportChecksumOk(pkt)).toBe(true);
    const p = parsePacket(pkt)!;
    expect(p).toMatchObject({ family: src.family, protocol: 17, srcPort: 40000, dstPort: 53, fragment: Fragment.none, length: pkt.length });
    expect(formatIp(p.src)).toBe(formatIp(src));
    expect(formatIp(p.dst)).toBe(formatIp(dst));
    expect(new TextDecoder().decode(transportPayload(p, pkt))).toBe('hello');
  });

  it.each([
    ['v4', A4, B4],
    ['v6', A6, B6],
  ])('TCP %s round-trips', (_n, src, dst) => {
    const pkt = buildTcp({ src, dst, srcPort: 1234, dstPort: 443, seq: 0xfffffff0, ack: 7, flags: TcpFlag.SYN | TcpFlag.ECE, payload: Uint8Array.of(1, 2, 3) });
    expect(transportChecksumOk(pkt)).toBe(true);
    const p = parsePacket(pkt)!;
    expect(p).toMatchObject({ protocol: 6, srcPort: 1234, dstPort: 443, tcpSeq: 0xfffffff0, tcpAck: 7, tcpFlags: TcpFlag.SYN | TcpFlag.ECE });
    expect(transportPayload(p, pkt)).toEqual(Uint8Array.of(1, 2, 3));
  });

  it.each([
    ['v4', A4, B4, 1, 8],
    ['v6', A6, B6, 58, 128],
  ])('ICMP echo %s round-trips', (_n, src, dst, proto, type) => {
    const pkt = buildIcmpEcho({ src, dst, id: 0xbeef, seq: 3, payload: Uint8Array.of(9) });
    expect(transportChecksumOk(pkt)).toBe(true);
    expect(parsePacket(pkt)).toMatchObject({ protocol: proto, icmpType: type, icmpCode: 0, icmpId: 0xbeef, srcPort: 0, dstPort: 0 });
  });

  it('ignores bytes past the IP total length', () => {
    const pkt = buildUdp({ src: A4, dst: B4, srcPort: 1, dstPort: 2, payload: Uint8Array.of(7) });
    const padded = new Uint8Array(pkt.length + 10);
    padded.set(pkt);
    const p = parsePacket(padded)!;
    expect(p.length).toBe(pkt.length);
    expect(transportPayload(p, padded)).toEqual(Uint8Array.of(7));
  });
});

/** IPv6 packet with extension headers before a UDP header. */
function v6WithExt(chain: Array<[number, Uint8Array]>, last: number, l4: Uint8Array): Uint8Array {
  const exts = chain.map(([, body]) => body);
  const extLen = exts.reduce((n, e) => n + e.length, 0);
  const pkt = new Uint8Array(40 + extLen + l4.length);
  pkt[0] = 0x60;
  new DataView(pkt.buffer).setUint16(4, extLen + l4.length);
  pkt[6] = chain.length ? chain[0][0] : last;
  pkt[7] = 64;
  pkt.set(hex('fd770000000000000000000000000002'), 8);
  pkt.set(hex('fd770000000000000000000000000001'), 24);
  let off = 40;
  chain.forEach(([, body], i) => {
    const b = Uint8Array.from(body);
    b[0] = i + 1 < chain.length ? chain[i + 1][0] : last;
    pkt.set(b, off);
    off += b.length;
  });
  pkt.set(l4, off);
  return pkt;
}
const udpHdr = hex('9c40 0035 0008 0000');
const opts8 = () => new Uint8Array(8); // hdr ext len 0 => 8 bytes
const frag = (offset: number, more: boolean) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint16(2, (offset << 3) | (more ? 1 : 0));
  return b;
};

describe('IPv6 extension headers', () => {
  it('skips hop-by-hop, routing, destination options and AH to reach UDP', () => {
    const ah = new Uint8Array(12);
    ah[1] = 1; // (1+2)*4 = 12 bytes
    const pkt = v6WithExt([[0, opts8()], [43, opts8()], [60, opts8()], [51, ah]], 17, udpHdr);
    expect(parsePacket(pkt)).toMatchObject({ protocol: 17, srcPort: 40000, dstPort: 53, l4Offset: 40 + 36 });
  });
  it('first fragment keeps ports; later fragment has none', () => {
    expect(parsePacket(v6WithExt([[44, frag(0, true)]], 17, hex('9c40 0035 0400 0000')))).toMatchObject({ fragment: Fragment.first, dstPort: 53 });
    expect(parsePacket(v6WithExt([[44, frag(100, false)]], 17, Uint8Array.of(1, 2, 3, 4)))).toMatchObject({ fragment: Fragment.later, l4Offset: -1, dstPort: 0, protocol: 17 });
  });
  it('ESP and no-next-header have no transport header', () => {
    expect(parsePacket(v6WithExt([], 50, new Uint8Array(16)))).toMatchObject({ protocol: 50, l4Offset: -1 });
    expect(parsePacket(v6WithExt([[60, opts8()]], 59, new Uint8Array(0)))).toMatchObject({ protocol: 59, l4Offset: -1 });
  });
});

describe('hostile input is dropped and counted, never thrown', () => {
  const good4 = buildUdp({ src: A4, dst: B4, srcPort: 1, dstPort: 2, payload: new Uint8Array(4) });
  const good6 = buildUdp({ src: A6, dst: B6, srcPort: 1, dstPort: 2, payload: new Uint8Array(4) });
  const tcp4 = buildTcp({ src: A4, dst: B4, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: TcpFlag.SYN });
  const mut = (b: Uint8Array, f: (c: Uint8Array) => void) => {
    const c = Uint8Array.from(b);
    f(c);
    return c;
  };
  const hbhLong = () => {
    const h = new Uint8Array(8);
    h[1] = 200; // claims 1608 bytes
    return h;
  };
  it.each<[string, Uint8Array, DropReason]>([
    ['empty', new Uint8Array(0), DropReason.empty],
    ['version 5', mut(good4, (c) => (c[0] = 0x55)), DropReason.badVersion],
    ['3 bytes', good4.subarray(0, 3), DropReason.shortHeader],
    ['IHL 4', mut(good4, (c) => (c[0] = 0x44)), DropReason.badHeaderLength],
    ['IHL 15 > buffer', mut(good4, (c) => (c[0] = 0x4f)).subarray(0, 40), DropReason.badHeaderLength],
    ['total length > buffer', good4.subarray(0, good4.length - 1), DropReason.badTotalLength],
    ['total length < IHL', mut(good4, (c) => (c[2] = 0, c[3] = 10)), DropReason.badTotalLength],
    ['UDP length too big', mut(good4, (c) => (c[24] = 0, c[25] = 200)), DropReason.badUdpLength],
    ['UDP length < 8', mut(good4, (c) => (c[24] = 0, c[25] = 4)), DropReason.badUdpLength],
    ['UDP header cut', mut(good4.subarray(0, 24), (c) => (c[3] = 24)), DropReason.shortTransport],
    ['TCP data offset 4', mut(tcp4, (c) => (c[32] = 0x40)), DropReason.badTcpDataOffset],
    ['TCP data offset past end', mut(tcp4, (c) => (c[32] = 0xf0)), DropReason.badTcpDataOffset],
    ['IPv6 39 bytes', good6.subarray(0, 39), DropReason.shortHeader],
    ['IPv6 payload length > buffer', good6.subarray(0, good6.length - 2), DropReason.badTotalLength],
    ['IPv6 jumbogram', mut(good6, (c) => (c[4] = 0, c[5] = 0, c[6] = 0)), DropReason.jumbogram],
    ['IPv6 ext header past end', v6WithExt([[0, hbhLong()]], 17, udpHdr), DropReason.badExtensionHeader],
    ['IPv6 hop-by-hop not first', v6WithExt([[60, opts8()], [0, opts8()]], 17, udpHdr), DropReason.badExtensionHeader],
    ['IPv6 ext chain too long', v6WithExt(Array.from({ length: 12 }, () => [60, opts8()] as [number, Uint8Array]), 17, udpHdr), DropReason.tooManyExtensionHeaders],
    ['IPv6 truncated fragment header', v6WithExt([], 44, new Uint8Array(4)), DropReason.badExtensionHeader],
  ])('%s', (_n, pkt, reason) => {
    const stats = new ParseStats<DropReason>();
    expect(parsePacket(pkt, stats)).toBeNull();
    expect(stats.dropped).toBe(1);
    expect(stats.count(reason)).toBe(1);
  });

  it('random bytes never throw', () => {
    const stats = new ParseStats<DropReason>();
    let seed = 99;
    for (let i = 0; i < 20_000; i++) {
      const len = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 120;
      const b = new Uint8Array(len);
      for (let j = 0; j < len; j++) b[j] = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
      if (len > 0) b[0] = (b[0] & 0x0f) | (i % 2 ? 0x40 : 0x60);
      parsePacket(b, stats); // a throw fails the test
    }
    expect(stats.parsed + stats.dropped).toBe(20_000);
    expect(stats.dropped).toBeGreaterThan(0);
  });
});

describe('rejecting denied packets', () => {
  it('answers a SYN with RST|ACK acking seq+1', () => {
    const syn = parsePacket(buildTcp({ src: A4, dst: B4, srcPort: 40000, dstPort: 22, seq: 1000, ack: 0, flags: TcpFlag.SYN }))!;
    const rst = buildTcpRst(syn)!;
    expect(transportChecksumOk(rst)).toBe(true);
    const r = parsePacket(rst)!;
    expect(r).toMatchObject({ srcPort: 22, dstPort: 40000, tcpFlags: TcpFlag.RST | TcpFlag.ACK, tcpSeq: 0, tcpAck: 1001 });
    expect(formatIp(r.src)).toBe('10.77.0.1');
    expect(formatIp(r.dst)).toBe('10.77.0.2');
  });
  it('answers an ACK segment with a RST at its ack number, and never answers a RST', () => {
    const seg = parsePacket(buildTcp({ src: A6, dst: B6, srcPort: 5, dstPort: 6, seq: 1, ack: 777, flags: TcpFlag.ACK, payload: new Uint8Array(10) }))!;
    expect(parsePacket(buildTcpRst(seg)!)).toMatchObject({ tcpFlags: TcpFlag.RST, tcpSeq: 777 });
    const rst = parsePacket(buildTcp({ src: A4, dst: B4, srcPort: 5, dstPort: 6, seq: 1, ack: 0, flags: TcpFlag.RST }))!;
    expect(buildTcpRst(rst)).toBeUndefined();
  });
  it.each([
    ['v4', A4, B4, 1, 3, 13],
    ['v6', A6, B6, 58, 1, 1],
  ])('answers UDP with ICMP administratively prohibited quoting the packet (%s)', (_n, src, dst, proto, type, code) => {
    const raw = buildUdp({ src, dst, srcPort: 40000, dstPort: 9999, payload: new Uint8Array(2000) });
    const err = rejectFor(parsePacket(raw)!, raw)!;
    expect(err.length).toBeLessThanOrEqual(src.family === 4 ? 576 : 1280);
    expect(transportChecksumOk(err)).toBe(true);
    const e = parsePacket(err)!;
    expect(e).toMatchObject({ protocol: proto, icmpType: type, icmpCode: code });
    expect(e.inner).toMatchObject({ protocol: 17, srcPort: 40000, dstPort: 9999 });
    expect(formatIp(e.inner!.src)).toBe(formatIp(src));
    expect(formatIp(e.dst)).toBe(formatIp(src));
  });
  it('never answers an ICMP error, a later fragment or multicast', () => {
    const raw = buildUdp({ src: A4, dst: B4, srcPort: 1, dstPort: 2, payload: new Uint8Array(4) });
    const err = buildAdminProhibited(parsePacket(raw)!, raw)!;
    expect(rejectFor(parsePacket(err)!, err)).toBeUndefined();
    const mc = buildUdp({ src: A4, dst: ip('224.0.0.251'), srcPort: 5353, dstPort: 5353, payload: new Uint8Array(4) });
    expect(rejectFor(parsePacket(mc)!, mc)).toBeUndefined();
    const later = v6WithExt([[44, frag(100, false)]], 17, new Uint8Array(8));
    expect(rejectFor(parsePacket(later)!, later)).toBeUndefined();
  });
});

describe('isLocalOnly', () => {
  it.each([
    ['224.0.0.251', true],
    ['255.255.255.255', true],
    ['ff02::1', true],
    ['fe80::1', true],
    ['10.77.0.1', false],
    ['169.254.169.254', false],
    ['fd77::1', false],
  ])('%s -> %s', (dst, local) => {
    const d = ip(dst);
    const pkt = buildUdp({ src: d.family === 4 ? A4 : A6, dst: d, srcPort: 1, dstPort: 2, payload: new Uint8Array(0) });
    expect(isLocalOnly(parsePacket(pkt)!)).toBe(local);
  });
  it('IPv6 neighbour solicitation is local', () => {
    const ns = buildIcmpEcho({ src: A6, dst: B6, id: 0, seq: 0 });
    ns[40] = 135;
    expect(isLocalOnly(parsePacket(ns)!)).toBe(true);
  });
});
