/**
 * Test-side packet crafting and parsing (IPv4/IPv6, UDP, ICMP echo) with real checksums, so packets
 * written into a TUN are accepted by the kernel or gVisor's netstack. Not production code: the data
 * plane has its own parser.
 */
import { formatIpBytes, parseIpBytes } from '../../src/net/addr.js';

/** The 4 or 16 bytes of an address (src/net/addr.ts's parser). Throws RangeError if `addr` is none. */
function ipBytes(addr: string, len?: 4 | 16): Uint8Array {
  const b = parseIpBytes(addr);
  if (!b || (len !== undefined && b.length !== len)) throw new RangeError(`not an IPv${len === 16 ? 6 : 4} address: "${addr}"`);
  return b;
}

/** The 4 bytes of an IPv4 address. Throws RangeError otherwise. */
export function ipv4Bytes(addr: string): Uint8Array {
  return ipBytes(addr, 4);
}

/** The 16 bytes of an IPv6 address. Throws RangeError otherwise. */
export function ipv6Bytes(addr: string): Uint8Array {
  return ipBytes(addr, 16);
}

/** 4 or 16 bytes as RFC 5952 text (src/net/addr.ts's formatter). */
export function formatIp(b: Uint8Array): string {
  return formatIpBytes(b);
}

function isIPv4(addr: string): boolean {
  return ipBytes(addr).length === 4;
}

/** RFC 1071 one's-complement sum over several chunks (odd chunk lengths handled as one stream). */
export function checksum(...chunks: Uint8Array[]): number {
  let sum = 0;
  let odd = false;
  let carryByte = 0;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++) {
      if (!odd) carryByte = c[i];
      else sum += (carryByte << 8) | c[i];
      odd = !odd;
    }
  }
  if (odd) sum += carryByte << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Header(src: string, dst: string, proto: number, payloadLen: number, id = 0): Uint8Array {
  const h = new Uint8Array(20);
  const v = new DataView(h.buffer);
  h[0] = 0x45;
  v.setUint16(2, 20 + payloadLen);
  v.setUint16(4, id);
  v.setUint16(6, 0x4000); // DF
  h[8] = 64;
  h[9] = proto;
  h.set(ipv4Bytes(src), 12);
  h.set(ipv4Bytes(dst), 16);
  v.setUint16(10, checksum(h));
  return h;
}

function ipv6Header(src: string, dst: string, next: number, payloadLen: number): Uint8Array {
  const h = new Uint8Array(40);
  const v = new DataView(h.buffer);
  h[0] = 0x60;
  v.setUint16(4, payloadLen);
  h[6] = next;
  h[7] = 64;
  h.set(ipv6Bytes(src), 8);
  h.set(ipv6Bytes(dst), 24);
  return h;
}

function pseudoHeader(src: string, dst: string, proto: number, len: number): Uint8Array {
  if (isIPv4(src)) {
    const p = new Uint8Array(12);
    p.set(ipv4Bytes(src), 0);
    p.set(ipv4Bytes(dst), 4);
    p[9] = proto;
    new DataView(p.buffer).setUint16(10, len);
    return p;
  }
  const p = new Uint8Array(40);
  p.set(ipv6Bytes(src), 0);
  p.set(ipv6Bytes(dst), 16);
  new DataView(p.buffer).setUint32(32, len);
  p[39] = proto;
  return p;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** An IPv4 or IPv6 UDP datagram (family from `src`). */
export function udpPacket(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const udp = new Uint8Array(8 + payload.length);
  const v = new DataView(udp.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint16(4, udp.length);
  udp.set(payload, 8);
  const sum = checksum(pseudoHeader(src, dst, 17, udp.length), udp);
  v.setUint16(6, sum === 0 ? 0xffff : sum);
  const hdr = isIPv4(src) ? ipv4Header(src, dst, 17, udp.length) : ipv6Header(src, dst, 17, udp.length);
  return concat(hdr, udp);
}

/** An IPv4 ICMP echo request (type 8) or reply (type 0). */
export function icmpEcho(src: string, dst: string, type: 0 | 8, id: number, seq: number, payload: Uint8Array): Uint8Array {
  const icmp = new Uint8Array(8 + payload.length);
  const v = new DataView(icmp.buffer);
  icmp[0] = type;
  v.setUint16(4, id);
  v.setUint16(6, seq);
  icmp.set(payload, 8);
  v.setUint16(2, checksum(icmp));
  return concat(ipv4Header(src, dst, 1, icmp.length, seq), icmp);
}

export interface ParsedPacket {
  version: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  /** The transport header and payload. */
  l4: Uint8Array;
}

/** Parse the IP header of a raw packet; undefined for anything that is not IPv4/IPv6. */
export function parseIp(p: Uint8Array): ParsedPacket | undefined {
  const version = p[0] >> 4;
  if (version === 4 && p.length >= 20) {
    const ihl = (p[0] & 0x0f) * 4;
    return { version: 4, src: formatIp(p.subarray(12, 16)), dst: formatIp(p.subarray(16, 20)), proto: p[9], l4: p.subarray(ihl) };
  }
  if (version === 6 && p.length >= 40) {
    return { version: 6, src: formatIp(p.subarray(8, 24)), dst: formatIp(p.subarray(24, 40)), proto: p[6], l4: p.subarray(40) };
  }
  return undefined;
}

export function parseUdp(l4: Uint8Array): { sport: number; dport: number; payload: Uint8Array } | undefined {
  if (l4.length < 8) return undefined;
  const v = new DataView(l4.buffer, l4.byteOffset, l4.byteLength);
  return { sport: v.getUint16(0), dport: v.getUint16(2), payload: l4.subarray(8, v.getUint16(4)) };
}
