/**
 * IP packets as the TUN hands them over: raw IPv4 (RFC 791) or IPv6 (RFC 8200), no link header.
 * parsePacket() reads just what the policy and the flow table need; every packet is hostile input,
 * so anything malformed returns null and is counted in PacketStats, never thrown.
 * The builders make well-formed packets (checksums included) for the DNS responder, for rejecting
 * denied flows (TCP RST, ICMP administratively prohibited) and for tests.
 */
import { type IpAddr, ipFromBytes, writeIp } from '../net/addr.js';
import type { ParseStats } from './stats.js';

export const IpProto = { hopByHop: 0, icmp: 1, tcp: 6, udp: 17, routing: 43, fragment: 44, esp: 50, ah: 51, icmpv6: 58, noNext: 59, destOpts: 60, mobility: 135, hip: 139, shim6: 140 } as const;

export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

/** Fragment position: only the first fragment carries the transport header. */
export const Fragment = { none: 0, first: 1, later: 2 } as const;
export type Fragment = (typeof Fragment)[keyof typeof Fragment];

export const DropReason = {
  empty: 'empty',
  badVersion: 'bad-version',
  shortHeader: 'short-header',
  badHeaderLength: 'bad-header-length',
  badTotalLength: 'bad-total-length',
  badExtensionHeader: 'bad-extension-header',
  tooManyExtensionHeaders: 'too-many-extension-headers',
  jumbogram: 'jumbogram',
  shortTransport: 'short-transport-header',
  badTcpDataOffset: 'bad-tcp-data-offset',
  badUdpLength: 'bad-udp-length',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

/** Counters for dropped input. One instance per data path; never module-level. */
/** Counters of parsePacket: packets parsed, dropped, and why (DropReason). */
export type PacketStats = ParseStats<DropReason>;

/** The transport header inside an ICMP error: which flow the error is about. */
export interface InnerHeader {
  readonly family: 4 | 6;
  readonly src: IpAddr;
  readonly dst: IpAddr;
  readonly protocol: number;
  readonly srcPort: number;
  readonly dstPort: number;
  /** ICMP echo id when the inner packet is an echo, else 0. */
  readonly icmpId: number;
  /** The inner ICMP/ICMPv6 type (echo request vs reply), -1 when the inner packet is not ICMP. */
  readonly icmpType: number;
}

export interface ParsedPacket {
  readonly family: 4 | 6;
  readonly src: IpAddr;
  readonly dst: IpAddr;
  /** Upper-layer protocol after any IPv6 extension headers. */
  readonly protocol: number;
  /** Length by the IP header (the buffer may be longer; bytes past it are ignored). */
  readonly length: number;
  readonly ttl: number;
  readonly fragment: Fragment;
  /** Fragment identification (IPv4: 16 bits, IPv6: 32 bits); 0 when not fragmented. */
  readonly fragId: number;
  /** Fragment offset in bytes (0 for a first or unfragmented packet). */
  readonly fragOffset: number;
  /** Where this packet's fragment data starts (after the IPv4 header / IPv6 fragment header); 0 if unfragmented. */
  readonly fragDataStart: number;
  /**
   * The packet names a route of its own: an IPv6 routing header with segments left > 0 (type 0,
   * type 2, segment routing type 4, ...) or an IPv4 loose/strict source route option (RFC 791).
   * Its destination field is then not its final destination, so the policy cannot judge it.
   */
  readonly sourceRouted: boolean;
  /** Offset of the transport header, or -1 (later fragment, ESP, no next header). */
  readonly l4Offset: number;
  /** Offset of the transport payload (after the TCP/UDP/ICMP header), or -1. */
  readonly payloadOffset: number;
  /** TCP/UDP ports, 0 otherwise. */
  readonly srcPort: number;
  readonly dstPort: number;
  /** TCP flags byte, 0 otherwise. */
  readonly tcpFlags: number;
  readonly tcpSeq: number;
  readonly tcpAck: number;
  /** ICMP/ICMPv6 type and code, -1 otherwise. */
  readonly icmpType: number;
  readonly icmpCode: number;
  /** Echo identifier for echo request/reply, 0 otherwise. */
  readonly icmpId: number;
  /** For ICMP errors: the offending packet's addresses and ports (as much as was quoted). */
  readonly inner?: InnerHeader;
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const u32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

const MAX_EXTENSION_HEADERS = 8;

/** ICMP types that carry a quoted packet (RFC 792 / RFC 4443). */
export function isIcmpError(protocol: number, type: number): boolean {
  if (protocol === IpProto.icmp) return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
  if (protocol === IpProto.icmpv6) return type >= 1 && type <= 4;
  return false;
}

/** ICMP echo request or reply (type 8/0; ICMPv6 128/129). */
export function isEcho(protocol: number, type: number): boolean {
  if (protocol === IpProto.icmp) return type === 8 || type === 0;
  if (protocol === IpProto.icmpv6) return type === 128 || type === 129;
  return false;
}

/** ICMP echo request (type 8; ICMPv6 128). */
export function isEchoRequest(protocol: number, type: number): boolean {
  return (protocol === IpProto.icmp && type === 8) || (protocol === IpProto.icmpv6 && type === 128);
}

interface IpLayer {
  family: 4 | 6;
  src: IpAddr;
  dst: IpAddr;
  protocol: number;
  length: number;
  ttl: number;
  fragment: Fragment;
  fragId: number;
  fragOffset: number;
  fragDataStart: number;
  sourceRouted: boolean;
  l4: number;
}

/** IPv4 options (RFC 791 3.1): true when a loose (131) or strict (137) source route option is present. */
function hasSourceRouteOption(b: Uint8Array, end: number): boolean {
  for (let o = 20; o < end; ) {
    const t = b[o];
    if (t === 0) return false; // end of option list
    if (t === 1) {
      o++; // no-operation
      continue;
    }
    if (t === 0x83 || t === 0x89) return true;
    if (o + 1 >= end || b[o + 1] < 2) return false; // malformed length: stop reading options
    o += b[o + 1];
  }
  return false;
}

/**
 * Walk the IP header (and IPv6 extension headers). `strict` checks lengths against the buffer;
 * the lenient mode is for packets quoted in ICMP errors, which are cut short by design.
 */
function parseIpLayer(b: Uint8Array, stats: PacketStats | undefined, strict: boolean): IpLayer | null {
  const drop = (r: DropReason) => (stats ? stats.drop(r) : null);
  if (b.length === 0) return drop(DropReason.empty);
  const version = b[0] >> 4;
  if (version === 4) {
    if (b.length < 20) return drop(DropReason.shortHeader);
    const ihl = (b[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > b.length) return drop(DropReason.badHeaderLength);
    const total = u16(b, 2);
    if (total < ihl || (strict && total > b.length)) return drop(DropReason.badTotalLength);
    const fragOff = u16(b, 6) & 0x1fff;
    const more = (b[6] & 0x20) !== 0;
    const fragment = fragOff !== 0 ? Fragment.later : more ? Fragment.first : Fragment.none;
    return {
      family: 4,
      src: ipFromBytes(b, 12, 4),
      dst: ipFromBytes(b, 16, 4),
      protocol: b[9],
      length: strict ? total : Math.min(total, b.length),
      ttl: b[8],
      fragment,
      fragId: fragment === Fragment.none ? 0 : u16(b, 4),
      fragOffset: fragOff * 8,
      fragDataStart: fragment === Fragment.none ? 0 : ihl,
      sourceRouted: ihl > 20 && hasSourceRouteOption(b, ihl),
      l4: fragment === Fragment.later ? -1 : ihl,
    };
  }
  if (version === 6) {
    if (b.length < 40) return drop(DropReason.shortHeader);
    const payloadLen = u16(b, 4);
    if (payloadLen === 0 && b[6] === IpProto.hopByHop && strict) return drop(DropReason.jumbogram);
    const total = 40 + payloadLen;
    if (strict && total > b.length) return drop(DropReason.badTotalLength);
    const end = Math.min(total, b.length);
    let nh = b[6];
    let off = 40;
    let fragment: Fragment = Fragment.none;
    let fragId = 0;
    let fragOffset = 0;
    let fragDataStart = 0;
    let sourceRouted = false;
    for (let n = 0; ; n++) {
      if (n > MAX_EXTENSION_HEADERS) return drop(DropReason.tooManyExtensionHeaders);
      if (nh === IpProto.hopByHop && n !== 0) return drop(DropReason.badExtensionHeader); // RFC 8200 4.1: only first
      if (nh === IpProto.hopByHop || nh === IpProto.routing || nh === IpProto.destOpts || nh === IpProto.mobility || nh === IpProto.hip || nh === IpProto.shim6) {
        if (off + 8 > end) return drop(DropReason.badExtensionHeader);
        const len = (b[off + 1] + 1) * 8;
        if (off + len > end) return drop(DropReason.badExtensionHeader);
        // RFC 8200 4.4: byte 3 of a routing header is "segments left"; non-zero means the destination
        // field is only the next hop.
        if (nh === IpProto.routing && b[off + 3] !== 0) sourceRouted = true;
        nh = b[off];
        off += len;
        continue;
      }
      if (nh === IpProto.fragment) {
        // One fragment header per packet (RFC 8200 4.1): a second one (nested fragmentation, or a
        // chain that would move the offset the tracker judges) is dropped.
        if (off + 8 > end || fragDataStart !== 0) return drop(DropReason.badExtensionHeader);
        const fragOff = u16(b, off + 2) >> 3;
        const more = (b[off + 3] & 1) !== 0;
        fragId = u32(b, off + 4);
        fragOffset = fragOff * 8;
        nh = b[off];
        off += 8;
        fragDataStart = off;
        if (fragOff !== 0) {
          fragment = Fragment.later;
          off = -1;
          break;
        }
        if (more) fragment = Fragment.first;
        continue;
      }
      if (nh === IpProto.ah) {
        if (off + 8 > end) return drop(DropReason.badExtensionHeader);
        const len = (b[off + 1] + 2) * 4;
        if (off + len > end) return drop(DropReason.badExtensionHeader);
        nh = b[off];
        off += len;
        continue;
      }
      break;
    }
    // ESP and "no next header" have no transport header to read.
    if (nh === IpProto.esp || nh === IpProto.noNext) off = -1;
    if (fragment === Fragment.none) fragId = fragDataStart = 0; // an atomic fragment (RFC 6946) is not fragmented
    return { family: 6, src: ipFromBytes(b, 8, 6), dst: ipFromBytes(b, 24, 6), protocol: nh, length: end, ttl: b[7], fragment, fragId, fragOffset, fragDataStart, sourceRouted, l4: off };
  }
  return drop(DropReason.badVersion);
}

function parseInner(b: Uint8Array): InnerHeader | undefined {
  const ip = parseIpLayer(b, undefined, false);
  if (ip === null || ip.l4 < 0 || ip.l4 + 8 > b.length) return undefined;
  const o = ip.l4;
  const withPorts = ip.protocol === IpProto.tcp || ip.protocol === IpProto.udp;
  const icmp = ip.protocol === IpProto.icmp || ip.protocol === IpProto.icmpv6;
  const echo = icmp && isEcho(ip.protocol, b[o]);
  return {
    family: ip.family,
    src: ip.src,
    dst: ip.dst,
    protocol: ip.protocol,
    srcPort: withPorts ? u16(b, o) : 0,
    dstPort: withPorts ? u16(b, o + 2) : 0,
    icmpId: echo ? u16(b, o + 4) : 0,
    icmpType: icmp ? b[o] : -1,
  };
}

/** Parse one IP packet. Returns null (and counts the reason) for anything malformed. */
export function parsePacket(b: Uint8Array, stats?: PacketStats): ParsedPacket | null {
  const ip = parseIpLayer(b, stats, true);
  if (ip === null) return null;
  const drop = (r: DropReason) => (stats ? stats.drop(r) : null);
  let srcPort = 0;
  let dstPort = 0;
  let tcpFlags = 0;
  let tcpSeq = 0;
  let tcpAck = 0;
  let icmpType = -1;
  let icmpCode = -1;
  let icmpId = 0;
  let payloadOffset = -1;
  let inner: InnerHeader | undefined;
  const o = ip.l4;
  const end = ip.length;
  if (o >= 0) {
    const p = ip.protocol;
    if (p === IpProto.tcp) {
      if (o + 20 > end) return drop(DropReason.shortTransport);
      const dataOff = (b[o + 12] >> 4) * 4;
      if (dataOff < 20 || o + dataOff > end) return drop(DropReason.badTcpDataOffset);
      srcPort = u16(b, o);
      dstPort = u16(b, o + 2);
      tcpSeq = u32(b, o + 4);
      tcpAck = u32(b, o + 8);
      tcpFlags = b[o + 13];
      payloadOffset = o + dataOff;
    } else if (p === IpProto.udp) {
      if (o + 8 > end) return drop(DropReason.shortTransport);
      const len = u16(b, o + 4);
      // A first fragment's UDP length covers the whole datagram, so only check it when unfragmented.
      if (ip.fragment === Fragment.none && (len < 8 || o + len > end)) return drop(DropReason.badUdpLength);
      srcPort = u16(b, o);
      dstPort = u16(b, o + 2);
      payloadOffset = o + 8;
    } else if (p === IpProto.icmp || p === IpProto.icmpv6) {
      if (o + 8 > end) return drop(DropReason.shortTransport);
      icmpType = b[o];
      icmpCode = b[o + 1];
      if (isEcho(p, icmpType)) icmpId = u16(b, o + 4);
      payloadOffset = o + 8;
      if (isIcmpError(p, icmpType)) inner = parseInner(b.subarray(o + 8, end));
    } else {
      payloadOffset = o;
    }
  }
  if (stats) stats.parsed++;
  return {
    family: ip.family,
    src: ip.src,
    dst: ip.dst,
    protocol: ip.protocol,
    length: end,
    ttl: ip.ttl,
    fragment: ip.fragment,
    fragId: ip.fragId,
    fragOffset: ip.fragOffset,
    fragDataStart: ip.fragDataStart,
    sourceRouted: ip.sourceRouted,
    l4Offset: o,
    payloadOffset,
    srcPort,
    dstPort,
    tcpFlags,
    tcpSeq,
    tcpAck,
    icmpType,
    icmpCode,
    icmpId,
    ...(inner && { inner }),
  };
}

/** The transport payload (e.g. a DNS message inside UDP), a view into `packet`. */
export function transportPayload(p: ParsedPacket, packet: Uint8Array): Uint8Array {
  if (p.payloadOffset < 0) return new Uint8Array(0);
  return packet.subarray(p.payloadOffset, p.length);
}

/**
 * Traffic that only makes sense on the local link (multicast, broadcast, link-local, IPv6
 * neighbour discovery and MLD). The pump drops it before the policy, without an audit line (Pump.admit,
 * step 1: PumpDrop.localOnly); rejectFor/buildAdminProhibited never answer it.
 */
export function isLocalOnly(p: ParsedPacket): boolean {
  const d = p.dst;
  if (p.family === 4) return d.w0 >>> 28 === 0xe || d.w0 === 0xffffffff;
  if (d.w0 >>> 24 === 0xff || (d.w0 & 0xffc00000) >>> 0 === 0xfe800000) return true;
  return p.protocol === IpProto.icmpv6 && ((p.icmpType >= 130 && p.icmpType <= 137) || p.icmpType === 143);
}

// ---------------------------------------------------------------------------------------------
// Building packets

/** RFC 1071 ones' complement sum, continued from `sum`. */
function sum16(b: Uint8Array, start: number, end: number, sum: number): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (i < end) sum += b[i] << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The internet checksum of b[start, end). */
export function internetChecksum(b: Uint8Array, start = 0, end = b.length): number {
  return fold(sum16(b, start, end, 0));
}

/** Pseudo-header sum (RFC 768 / RFC 8200 8.1) for a transport checksum. */
function pseudoSum(pkt: Uint8Array, family: 4 | 6, protocol: number, l4Len: number): number {
  let s = family === 4 ? sum16(pkt, 12, 20, 0) : sum16(pkt, 8, 40, 0);
  s += protocol + (l4Len & 0xffff) + Math.floor(l4Len / 0x10000);
  return s;
}

export interface IpHeaderFields {
  src: IpAddr;
  dst: IpAddr;
  /** Default 64. */
  ttl?: number;
}

/** Wrap a transport segment (checksum field zero) in an IP header and fill in every checksum. */
function wrap(h: IpHeaderFields, protocol: number, l4: Uint8Array, checksumAt: number | undefined, pseudo: boolean): Uint8Array {
  if (h.src.family !== h.dst.family) throw new RangeError('source and destination families differ');
  const family = h.src.family;
  const hl = family === 4 ? 20 : 40;
  const pkt = new Uint8Array(hl + l4.length);
  const ttl = h.ttl ?? 64;
  if (family === 4) {
    pkt[0] = 0x45;
    pkt[2] = pkt.length >> 8;
    pkt[3] = pkt.length & 0xff;
    pkt[6] = 0x40; // DF: our packets are small and we never fragment
    pkt[8] = ttl;
    pkt[9] = protocol;
    writeIp(h.src, pkt, 12);
    writeIp(h.dst, pkt, 16);
    const c = internetChecksum(pkt, 0, 20);
    pkt[10] = c >> 8;
    pkt[11] = c & 0xff;
  } else {
    pkt[0] = 0x60;
    pkt[4] = l4.length >> 8;
    pkt[5] = l4.length & 0xff;
    pkt[6] = protocol;
    pkt[7] = ttl;
    writeIp(h.src, pkt, 8);
    writeIp(h.dst, pkt, 24);
  }
  pkt.set(l4, hl);
  if (checksumAt !== undefined) {
    const start = pseudo ? pseudoSum(pkt, family, protocol, l4.length) : 0;
    let c = fold(sum16(pkt, hl, pkt.length, start));
    if (c === 0 && protocol === IpProto.udp) c = 0xffff; // RFC 768: 0 means "no checksum"
    pkt[hl + checksumAt] = c >> 8;
    pkt[hl + checksumAt + 1] = c & 0xff;
  }
  return pkt;
}

export interface UdpFields extends IpHeaderFields {
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

/** An IPv4 or IPv6 packet (by `src`'s family) carrying one UDP datagram, checksums included (RFC 768). */
export function buildUdp(f: UdpFields): Uint8Array {
  const l4 = new Uint8Array(8 + f.payload.length);
  l4[0] = f.srcPort >> 8;
  l4[1] = f.srcPort & 0xff;
  l4[2] = f.dstPort >> 8;
  l4[3] = f.dstPort & 0xff;
  l4[4] = l4.length >> 8;
  l4[5] = l4.length & 0xff;
  l4.set(f.payload, 8);
  return wrap(f, IpProto.udp, l4, 6, true);
}

export interface TcpFields extends IpHeaderFields {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  /** Default 65535. */
  window?: number;
  payload?: Uint8Array;
}

/** An IPv4 or IPv6 packet carrying one TCP segment, checksums included (RFC 9293 header, no options). */
export function buildTcp(f: TcpFields): Uint8Array {
  const payload = f.payload ?? new Uint8Array(0);
  const l4 = new Uint8Array(20 + payload.length);
  const dv = new DataView(l4.buffer);
  dv.setUint16(0, f.srcPort);
  dv.setUint16(2, f.dstPort);
  dv.setUint32(4, f.seq >>> 0);
  dv.setUint32(8, f.ack >>> 0);
  l4[12] = 5 << 4;
  l4[13] = f.flags;
  dv.setUint16(14, f.window ?? 65535);
  l4.set(payload, 20);
  return wrap(f, IpProto.tcp, l4, 16, true);
}

export interface IcmpFields extends IpHeaderFields {
  type: number;
  code: number;
  /** The 4 bytes after the checksum (echo: id and sequence). */
  rest?: number;
  payload?: Uint8Array;
}

/** ICMP for IPv4 (no pseudo-header) or ICMPv6 (with one), by the addresses' family. */
export function buildIcmp(f: IcmpFields): Uint8Array {
  const payload = f.payload ?? new Uint8Array(0);
  const l4 = new Uint8Array(8 + payload.length);
  l4[0] = f.type;
  l4[1] = f.code;
  new DataView(l4.buffer).setUint32(4, (f.rest ?? 0) >>> 0);
  l4.set(payload, 8);
  const v6 = f.src.family === 6;
  return wrap(f, v6 ? IpProto.icmpv6 : IpProto.icmp, l4, 2, v6);
}

/** An ICMP (or ICMPv6) echo request, or reply with `reply`, with its checksum. */
export function buildIcmpEcho(f: IpHeaderFields & { id: number; seq: number; reply?: boolean; payload?: Uint8Array }): Uint8Array {
  const v6 = f.src.family === 6;
  const type = f.reply ? (v6 ? 129 : 0) : v6 ? 128 : 8;
  return buildIcmp({ ...f, type, code: 0, rest: ((f.id & 0xffff) * 0x10000 + (f.seq & 0xffff)) >>> 0 });
}

/**
 * A TCP RST answering `p` as if from its destination (RFC 9293 3.10.7.1): if the segment had ACK,
 * the reset takes its sequence number from that ack; otherwise it acks everything the segment used.
 * Returns undefined for a segment that is itself a RST (never answer a reset).
 */
export function buildTcpRst(p: ParsedPacket): Uint8Array | undefined {
  if (p.protocol !== IpProto.tcp || p.l4Offset < 0 || (p.tcpFlags & TcpFlag.RST) !== 0) return undefined;
  const hdr = { src: p.dst, dst: p.src, srcPort: p.dstPort, dstPort: p.srcPort };
  if ((p.tcpFlags & TcpFlag.ACK) !== 0) return buildTcp({ ...hdr, seq: p.tcpAck, ack: 0, flags: TcpFlag.RST, window: 0 });
  const segLen = p.length - p.payloadOffset + ((p.tcpFlags & TcpFlag.SYN) !== 0 ? 1 : 0) + ((p.tcpFlags & TcpFlag.FIN) !== 0 ? 1 : 0);
  return buildTcp({ ...hdr, seq: 0, ack: (p.tcpSeq + segLen) >>> 0, flags: TcpFlag.RST | TcpFlag.ACK, window: 0 });
}

/**
 * ICMP "communication administratively prohibited" for `packet` (IPv4 type 3 code 13, RFC 1812;
 * ICMPv6 type 1 code 1, RFC 4443), sent as if from its destination. Quotes as much of the packet
 * as fits in 576 (IPv4) or 1280 (IPv6) bytes. Returns undefined where RFC 1122 / RFC 4443 forbid
 * an error: about an ICMP error, a later fragment, or a multicast/broadcast packet.
 */
export function buildAdminProhibited(p: ParsedPacket, packet: Uint8Array): Uint8Array | undefined {
  if (p.fragment === Fragment.later || isLocalOnly(p)) return undefined;
  if ((p.protocol === IpProto.icmp || p.protocol === IpProto.icmpv6) && !isEcho(p.protocol, p.icmpType)) return undefined;
  const v6 = p.family === 6;
  const room = (v6 ? 1280 - 40 : 576 - 20) - 8;
  const quoted = packet.subarray(0, Math.min(p.length, room));
  return buildIcmp({ src: p.dst, dst: p.src, type: v6 ? 1 : 3, code: v6 ? 1 : 13, payload: quoted });
}

/**
 * How enforce mode answers a denied egress packet so the agent fails fast instead of timing out:
 * TCP (not RST) -> RST; UDP and echo requests -> ICMP administratively prohibited; anything else
 * -> undefined (drop silently). Denied ingress should be dropped silently, not answered.
 */
export function rejectFor(p: ParsedPacket, packet: Uint8Array): Uint8Array | undefined {
  if (p.protocol === IpProto.tcp) return buildTcpRst(p);
  if (p.protocol === IpProto.udp || isEchoRequest(p.protocol, p.icmpType)) return buildAdminProhibited(p, packet);
  return undefined;
}
