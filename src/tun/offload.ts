/**
 * TCP offload shapes for a TUN opened with IFF_VNET_HDR: the virtio-net header (linux/virtio_net.h,
 * virtio 1.x 5.1.6 "Device Operation"), segmentation of a GSO super-packet into MTU-size packets, and
 * coalescing of in-order TCP segments into one super-packet for one TUN write (the receive-offload half
 * of wireguard-go's tun/offload_linux.go, shaped after the kernel's tcp_gro_receive). Pure: bytes in,
 * bytes out through a callback; no fd, no timer (the TUN in linux.ts owns the I/O and flushes).
 *
 * Why only coalescing is used for writes (measured with runsc 20240729, see README "TUN offloads"):
 * runsc's own --gso hands its TCP super-packets to an AF_PACKET socket, where the kernel marks them
 * SKB_GSO_DODGY; a TUN never has NETIF_F_GSO_ROBUST, so the kernel segments them before they reach the
 * TUN, and reads stay one MTU packet each. The other way works: a super-packet written into the TUN
 * reaches netstack (and a host kernel stack) whole, so N decrypted segments of one flow cost one write.
 *
 *   device --> pump (policy, flows: one MTU packet at a time) --> Tun.write --> TcpCoalescer.push
 *     |-- not TCP --> write(zero header, packet) at once
 *     |-- TCP we do not parse (IP options, fragments, IPv6 extension headers, > 64 KiB): its flow is
 *     |       unknown --> flush everything held (every flow's order is kept), then write it
 *     |-- pure ACK (no payload, flags ACK only, options NOP/EOL/one timestamps) --> held for the burst;
 *     |       when it acknowledged more than the packet before it in the burst (so it is no duplicate),
 *     |       a later pure ACK of the flow that acknowledges more again replaces it (filtered, counted)
 *     |-- TCP but not coalescable (SYN/FIN/RST/URG/ECE/CWR, other ACKs) --> flush the same flow's
 *     |       pending item (order within a flow is kept) --> write(zero header, packet)
 *     `-- TCP data --> same flow pending, seq = next, same ack/window/options/IP fields, previous segments
 *             full, no PSH yet, fits 64 KiB --> append payload : flush pending, start a new item
 *   end of the burst --> flush(): one item = its packet as it came; several = one GSO super-packet with
 *   NEEDS_CSUM (TCP checksum field = the pseudo-header sum; the stack completes or trusts it).
 *
 * ACK filtering (RFC 3449 5.2.2; Linux sch_cake's ack-filter does the same in a queue): while a sandbox
 * sends, each TUN write is mostly a pure ACK from the peer, and one write costs ~6 us of kernel time here
 * (netstack's AF_PACKET delivery and wake-up). Of a run of pure ACKs of one flow in one burst, each
 * acknowledging strictly more than the one before with timestamps no older, only the first and the last
 * are written: the last carries everything the ones between did (cumulative ack, window, timestamp echo).
 * The first is always written because it may duplicate the last ACK written before the burst (the
 * coalescer keeps no state across bursts). Duplicate ACKs (fast retransmit counts them), window-only
 * updates, SACK or any other option, ECE/CWR and a changed TOS/traffic class are never filtered; nothing
 * is held past the end of the burst.
 */

/** Size of struct virtio_net_hdr (no num_buffers): the TUN's default TUNSETVNETHDRSZ. */
export const VirtioNetHdrLen = 10;

/** linux/virtio_net.h flags and gso_type values. */
export const VirtioNet = {
  F_NEEDS_CSUM: 1,
  F_DATA_VALID: 2,
  GSO_NONE: 0,
  GSO_TCPV4: 1,
  GSO_UDP: 3,
  GSO_TCPV6: 4,
  GSO_ECN: 0x80,
} as const;

/** struct virtio_net_hdr, little-endian on the hosts we run on (TUN uses the host's byte order). */
export interface VirtioNetHdr {
  flags: number;
  gsoType: number;
  /** Bytes of IP + TCP headers. */
  hdrLen: number;
  /** Payload bytes per segment. */
  gsoSize: number;
  /** Where checksumming starts (the TCP header) and where the result goes, relative to it (16 for TCP). */
  csumStart: number;
  csumOffset: number;
}

export function parseVirtioNetHdr(b: Uint8Array): VirtioNetHdr | undefined {
  if (b.length < VirtioNetHdrLen) return undefined;
  return { flags: b[0]!, gsoType: b[1]!, hdrLen: le16(b, 2), gsoSize: le16(b, 4), csumStart: le16(b, 6), csumOffset: le16(b, 8) };
}

export function writeVirtioNetHdr(b: Uint8Array, h: VirtioNetHdr): void {
  b[0] = h.flags;
  b[1] = h.gsoType;
  putLe16(b, 2, h.hdrLen);
  putLe16(b, 4, h.gsoSize);
  putLe16(b, 6, h.csumStart);
  putLe16(b, 8, h.csumOffset);
}

const TCP = 6;
const UDP = 17;
const ICMPV6 = 58;
const FIN = 0x01;
const PSH = 0x08;
const ACK = 0x10;
/** TCP option kinds (RFC 9293 3.2, RFC 7323 3): what a filterable pure ACK may carry. */
const OptEnd = 0;
const OptNop = 1;
const OptTimestamps = 8;
const OptTimestampsLen = 10;
/** The largest IP packet a TUN write can carry (IPv4 total length is 16 bits; we keep IPv6 to the same). */
export const MaxSuperPacket = 65535;
/** Segments merged into one item at most (the kernel's GRO stops at 64 too, MAX_GRO_SKBS). */
const MaxSegments = 64;
/** Flows pending at once; a further flow flushes the oldest. */
const DefaultSlots = 8;

/** Where a TCP segment's parts are, for an IPv4 (no options) or IPv6 (no extension headers) packet. */
interface TcpShape {
  family: 4 | 6;
  ipHl: number;
  tcpHl: number;
  payload: number;
}

/** TCP data in a plain IP packet of exactly `pkt.length` bytes; undefined for anything else. */
function tcpShape(pkt: Uint8Array): TcpShape | undefined {
  const v = pkt.length > 0 ? pkt[0]! >> 4 : 0;
  let ipHl: number;
  if (v === 4) {
    if (pkt.length < 40 || pkt[0] !== 0x45 || pkt[9] !== TCP) return undefined;
    if (be16(pkt, 2) !== pkt.length || (be16(pkt, 6) & 0x3fff) !== 0) return undefined; // MF or an offset: a fragment
    ipHl = 20;
  } else if (v === 6) {
    if (pkt.length < 60 || pkt[6] !== TCP || be16(pkt, 4) + 40 !== pkt.length) return undefined;
    ipHl = 40;
  } else {
    return undefined;
  }
  const tcpHl = (pkt[ipHl + 12]! >> 4) * 4;
  if (tcpHl < 20 || ipHl + tcpHl > pkt.length) return undefined;
  if (pkt.length > MaxSuperPacket) return undefined; // an IPv6 jumbo-sized payload: passed through, never held
  return { family: v, ipHl, tcpHl, payload: pkt.length - ipHl - tcpHl };
}

/**
 * A packet tcpShape does not parse that may still belong to a TCP flow: IPv4 with protocol TCP (IP options,
 * a fragment), IPv6 other than plain UDP or ICMPv6 (extension headers, a fragment), anything oversized.
 */
function mayBeTcp(pkt: Uint8Array): boolean {
  const v = pkt.length > 0 ? pkt[0]! >> 4 : 0;
  if (v === 4) return pkt.length >= 20 && pkt[9] === TCP;
  if (v === 6) return pkt.length >= 40 && pkt[6] !== UDP && pkt[6] !== ICMPV6;
  return false;
}

/** Same flow: addresses and ports. */
function sameFlow(a: Uint8Array, b: Uint8Array, s: TcpShape): boolean {
  const [from, to] = s.family === 4 ? [12, 20] : [8, 40];
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return false;
  for (let i = 0; i < 4; i++) if (a[s.ipHl + i] !== b[s.ipHl + i]) return false;
  return true;
}

/**
 * Whether `b` may follow `a` in one super-packet, headers aside from seq: IP fields the segments would
 * share (IPv4 TOS, TTL, DF; IPv6 traffic class, flow label, hop limit), and in TCP the ack, the data
 * offset, the window and the options (byte for byte: timestamps must match, as in tcp_gro_receive).
 */
function sameHeaders(a: Uint8Array, b: Uint8Array, s: TcpShape): boolean {
  if (s.family === 4) {
    if (a[1] !== b[1] || a[8] !== b[8] || (a[6]! & 0x40) !== (b[6]! & 0x40)) return false;
  } else {
    for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return false;
    if (a[7] !== b[7]) return false;
  }
  const t = s.ipHl;
  for (let i = 8; i < 12; i++) if (a[t + i] !== b[t + i]) return false; // ack
  if (a[t + 12] !== b[t + 12] || a[t + 14] !== b[t + 14] || a[t + 15] !== b[t + 15]) return false; // offset, window
  for (let i = 20; i < s.tcpHl; i++) if (a[t + i] !== b[t + i]) return false; // options
  return true;
}

/** ackTimestamps: options other than NOP, end-of-list and one timestamps option (or a malformed one). */
const NotFilterable = -2;
/** ackTimestamps: only NOP/end-of-list, no timestamps. */
const NoTimestamps = -1;

/**
 * Whether a pure ACK's options let a newer ACK stand in for it: the offset of its one well-formed timestamps
 * option (RFC 7323 3), NoTimestamps, or NotFilterable (SACK, anything else, a malformed or second timestamps).
 */
function ackTimestamps(pkt: Uint8Array, s: TcpShape): number {
  const end = s.ipHl + s.tcpHl;
  let ts = NoTimestamps;
  for (let i = s.ipHl + 20; i < end; ) {
    const kind = pkt[i]!;
    if (kind === OptEnd) break;
    if (kind === OptNop) i++;
    else if (kind === OptTimestamps && ts === NoTimestamps && pkt[i + 1] === OptTimestampsLen && i + OptTimestampsLen <= end) {
      ts = i;
      i += OptTimestampsLen;
    } else return NotFilterable;
  }
  return ts;
}

/** `b` strictly after `a` in 32-bit sequence space (RFC 9293 3.4): 0 < b - a < 2^31. */
function after(a: number, b: number): boolean {
  const d = (b - a) >>> 0;
  return d !== 0 && d < 0x80000000;
}

/**
 * Whether pure ACK `b` makes `a`, the packet before it in the same flow, redundant: the same IP service fields
 * and TCP header length, an ack number strictly after a's, and timestamps in both or in neither, b's TSval
 * and TSecr not older than a's (RFC 7323 5.2). `a` may be a data segment (then b is no duplicate of it).
 * `tb` is ackTimestamps(b), which the caller has already parsed.
 */
function supersedes(a: Uint8Array, b: Uint8Array, s: TcpShape, tb: number): boolean {
  if (s.family === 4) {
    if (a[1] !== b[1]) return false; // TOS/ECN
  } else {
    for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return false; // traffic class, flow label
  }
  const t = s.ipHl;
  if (a[t + 12] !== b[t + 12] || !after(be32(a, t + 8), be32(b, t + 8))) return false;
  // Equal header lengths and families: the same offsets apply to both.
  const ta = ackTimestamps(a, s);
  if (ta === NotFilterable || tb === NotFilterable || (ta === NoTimestamps) !== (tb === NoTimestamps)) return false;
  if (ta === NoTimestamps) return true;
  const notOlder = (o: number) => be32(a, ta + o) === be32(b, tb + o) || after(be32(a, ta + o), be32(b, tb + o));
  return notOlder(2) && notOlder(6); // TSval, TSecr
}

/** One pending flow: its first packet's headers and the payloads appended so far, after a header gap. */
interface Item {
  buf: Uint8Array;
  /** IP packet bytes in buf[VirtioNetHdrLen, VirtioNetHdrLen + len). */
  len: number;
  shape: TcpShape;
  gsoSize: number;
  nextSeq: number;
  segments: number;
  /** A segment shorter than gsoSize or with PSH was appended: nothing may follow it. */
  closed: boolean;
  psh: boolean;
  /** The item is one held pure ACK, not data. */
  ack: boolean;
  /**
   * The held ACK superseded the packet before it in this burst, so it is no duplicate and a newer ACK may
   * replace it. The first ACK of a flow in a burst may duplicate the last one written before the burst.
   */
  replaceable: boolean;
}

export interface CoalescerStats {
  /** Packets pushed. */
  packets: number;
  /** Writes handed to the sink (one per super-packet or plain packet). */
  writes: number;
  /** Super-packets written (two or more segments). */
  superPackets: number;
  /** Pure ACKs not written: a newer ACK of the same flow in the same burst replaced them. */
  acksFiltered: number;
}

/**
 * Coalesces TCP segments pushed during one burst into GSO super-packets. `write(header, packet)` gets a
 * virtio-net header and an IP packet (a view: valid only during the call). `push` never keeps the
 * caller's bytes (it copies what it holds), so the caller may reuse its buffer at once; call `flush` at
 * the end of every burst. Never throws for bad input: what it cannot coalesce it passes through.
 */
export class TcpCoalescer {
  readonly stats: CoalescerStats = { packets: 0, writes: 0, superPackets: 0, acksFiltered: 0 };
  private readonly items: (Item | undefined)[];
  private readonly zero = new Uint8Array(VirtioNetHdrLen);
  private evict = 0;

  constructor(
    private readonly write: (header: Uint8Array, packet: Uint8Array) => void,
    slots = DefaultSlots,
  ) {
    this.items = new Array<Item | undefined>(slots).fill(undefined);
  }

  /** Whether packets are held (a flush is due). */
  get pending(): boolean {
    return this.items.some((it) => it !== undefined && it.segments > 0);
  }

  push(pkt: Uint8Array): void {
    this.stats.packets++;
    const s = tcpShape(pkt);
    const flags = s ? pkt[s.ipHl + 13]! : 0;
    const data = s !== undefined && s.payload > 0 && (flags & ~PSH) === ACK;
    let slot = -1;
    if (s) {
      for (let i = 0; i < this.items.length; i++) {
        const it = this.items[i];
        if (it && it.segments > 0 && it.shape.family === s.family && sameFlow(it.buf.subarray(VirtioNetHdrLen), pkt, s)) {
          slot = i;
          break;
        }
      }
    }
    const ts = s !== undefined && s.payload === 0 && flags === ACK ? ackTimestamps(pkt, s) : NotFilterable;
    if (s !== undefined && ts !== NotFilterable) {
      const held = slot >= 0 ? this.items[slot]! : undefined;
      const advances = held !== undefined && supersedes(held.buf.subarray(VirtioNetHdrLen, VirtioNetHdrLen + held.len), pkt, s, ts);
      if (held?.ack && held.replaceable && advances) {
        this.stats.acksFiltered++;
        held.buf.set(pkt, VirtioNetHdrLen);
        held.len = pkt.length;
        return;
      }
      if (held) this.flushItem(held);
      else slot = this.freeSlot();
      return this.start(slot, pkt, s, true, advances);
    }
    if (!data) {
      if (slot >= 0) this.flushItem(this.items[slot]!);
      else if (!s && mayBeTcp(pkt)) this.flush(); // its flow is unknown: keep every flow's order
      this.emit(this.zero, pkt);
      return;
    }
    if (slot >= 0) {
      const it = this.items[slot]!;
      if (this.canAppend(it, pkt, s)) return this.append(it, pkt, s);
      this.flushItem(it);
    } else {
      slot = this.freeSlot();
    }
    this.start(slot, pkt, s, false);
  }

  /** A slot with nothing pending; when all are taken, the oldest-evicted in turn is flushed and reused. */
  private freeSlot(): number {
    const slot = this.items.findIndex((it) => it === undefined || it.segments === 0);
    if (slot >= 0) return slot;
    const victim = this.evict;
    this.evict = (this.evict + 1) % this.items.length;
    this.flushItem(this.items[victim]!);
    return victim;
  }

  /** Write everything held. */
  flush(): void {
    for (const it of this.items) if (it && it.segments > 0) this.flushItem(it);
  }

  private canAppend(it: Item, pkt: Uint8Array, s: TcpShape): boolean {
    if (it.ack || it.closed || it.segments >= MaxSegments || s.payload > it.gsoSize || it.len + s.payload > MaxSuperPacket) return false;
    if (s.tcpHl !== it.shape.tcpHl || be32(pkt, s.ipHl + 4) !== it.nextSeq) return false;
    return sameHeaders(it.buf.subarray(VirtioNetHdrLen), pkt, s);
  }

  /** Hold `pkt` in `slot`: the first segment of a super-packet, or (`ack`) a pure ACK that a newer one may replace. */
  private start(slot: number, pkt: Uint8Array, s: TcpShape, ack: boolean, replaceable = false): void {
    const it = (this.items[slot] ??= { buf: new Uint8Array(VirtioNetHdrLen + MaxSuperPacket), len: 0, shape: s, gsoSize: 0, nextSeq: 0, segments: 0, closed: false, psh: false, ack: false, replaceable: false });
    it.buf.set(pkt, VirtioNetHdrLen);
    it.len = pkt.length;
    it.shape = s;
    it.gsoSize = s.payload;
    it.nextSeq = (be32(pkt, s.ipHl + 4) + s.payload) >>> 0;
    it.segments = 1;
    it.ack = ack;
    it.replaceable = replaceable;
    it.psh = (pkt[s.ipHl + 13]! & PSH) !== 0;
    it.closed = it.psh;
  }

  private append(it: Item, pkt: Uint8Array, s: TcpShape): void {
    it.buf.set(pkt.subarray(s.ipHl + s.tcpHl), VirtioNetHdrLen + it.len);
    it.len += s.payload;
    it.nextSeq = (it.nextSeq + s.payload) >>> 0;
    it.segments++;
    if (pkt[s.ipHl + 13]! & PSH) it.psh = true;
    if (it.psh || s.payload < it.gsoSize) it.closed = true;
  }

  private flushItem(it: Item): void {
    const pkt = it.buf.subarray(VirtioNetHdrLen, VirtioNetHdrLen + it.len);
    const header = it.buf.subarray(0, VirtioNetHdrLen);
    const n = it.segments;
    it.segments = 0;
    if (n === 1) {
      header.fill(0);
      this.emit(header, pkt); // as it came: its own checksums
      return;
    }
    const { family, ipHl, tcpHl } = it.shape;
    if (it.psh) pkt[ipHl + 13]! |= PSH;
    if (family === 4) {
      putBe16(pkt, 2, it.len);
      putBe16(pkt, 10, 0);
      putBe16(pkt, 10, internetChecksum(pkt, 0, ipHl));
    } else {
      putBe16(pkt, 4, it.len - ipHl);
    }
    // CHECKSUM_PARTIAL: the field holds the folded, uncomplemented pseudo-header sum (RFC 793 3.1 / RFC 8200 8.1).
    putBe16(pkt, ipHl + 16, pseudoHeaderPartial(pkt, family, it.len - ipHl));
    writeVirtioNetHdr(header, {
      flags: VirtioNet.F_NEEDS_CSUM,
      gsoType: family === 4 ? VirtioNet.GSO_TCPV4 : VirtioNet.GSO_TCPV6,
      hdrLen: ipHl + tcpHl,
      gsoSize: it.gsoSize,
      csumStart: ipHl,
      csumOffset: 16,
    });
    this.stats.superPackets++;
    this.emit(header, pkt);
  }

  private emit(header: Uint8Array, pkt: Uint8Array): void {
    this.stats.writes++;
    this.write(header, pkt);
  }
}

/** Why a read from a virtio-net TUN was not usable. */
export type VirtioReadError = 'short' | 'gso-type' | 'gso-shape';

/**
 * A frame read from a virtio-net TUN (header + packet) into plain packets with complete checksums:
 * GSO_NONE without NEEDS_CSUM is the packet itself (a view); NEEDS_CSUM completes the checksum in place;
 * GSO_TCPV4/TCPV6 is segmented (new buffers). Returns the error for frames it cannot handle (UDP GSO,
 * ECN, a header that does not match the packet): the caller drops and counts them.
 */
export function fromVirtioFrame(frame: Uint8Array, emit: (packet: Uint8Array) => void): VirtioReadError | undefined {
  const h = parseVirtioNetHdr(frame);
  if (!h) return 'short';
  const pkt = frame.subarray(VirtioNetHdrLen);
  if (h.gsoType === VirtioNet.GSO_NONE) {
    if (h.flags & VirtioNet.F_NEEDS_CSUM) {
      const at = h.csumStart + h.csumOffset;
      if (at + 2 > pkt.length) return 'gso-shape';
      // The field holds the pseudo-header sum: summing the rest over it and complementing completes it.
      putBe16(pkt, at, internetChecksum(pkt, h.csumStart, pkt.length));
    }
    emit(pkt);
    return undefined;
  }
  if (h.gsoType !== VirtioNet.GSO_TCPV4 && h.gsoType !== VirtioNet.GSO_TCPV6) return 'gso-type';
  return segmentTcp(pkt, h.gsoSize, emit) ? undefined : 'gso-shape';
}

/**
 * Split a TCP super-packet into segments of `gsoSize` payload bytes (the last may be shorter), each a new
 * buffer with its own IP length, IPv4 ID (+1 per segment) and header checksum, sequence number and a
 * complete TCP checksum; FIN and PSH stay on the last segment only, as the kernel's tcp_gso_segment does.
 * The super-packet's TCP checksum field is ignored (it may be partial). False if the packet is not a
 * plain IPv4/IPv6 TCP packet or gsoSize is 0.
 */
export function segmentTcp(pkt: Uint8Array, gsoSize: number, emit: (segment: Uint8Array) => void): boolean {
  const s = tcpShape(pkt);
  if (!s || gsoSize <= 0) return false;
  const head = s.ipHl + s.tcpHl;
  const seq0 = be32(pkt, s.ipHl + 4);
  const id0 = s.family === 4 ? be16(pkt, 4) : 0;
  const flags = pkt[s.ipHl + 13]!;
  const count = Math.max(1, Math.ceil(s.payload / gsoSize));
  for (let i = 0; i < count; i++) {
    const off = i * gsoSize;
    const n = Math.min(gsoSize, s.payload - off);
    const seg = new Uint8Array(head + n);
    seg.set(pkt.subarray(0, head));
    seg.set(pkt.subarray(head + off, head + off + n), head);
    const last = i === count - 1;
    seg[s.ipHl + 13] = last ? flags : flags & ~(FIN | PSH);
    putBe32(seg, s.ipHl + 4, (seq0 + off) >>> 0);
    if (s.family === 4) {
      putBe16(seg, 2, seg.length);
      putBe16(seg, 4, (id0 + i) & 0xffff);
      putBe16(seg, 10, 0);
      putBe16(seg, 10, internetChecksum(seg, 0, 20));
    } else {
      putBe16(seg, 4, seg.length - 40);
    }
    putBe16(seg, s.ipHl + 16, pseudoHeaderPartial(seg, s.family, seg.length - s.ipHl));
    putBe16(seg, s.ipHl + 16, internetChecksum(seg, s.ipHl, seg.length));
    emit(seg);
  }
  return true;
}

/** Folded (not complemented) pseudo-header sum for TCP over `l4Len` bytes: what NEEDS_CSUM expects in the field. */
function pseudoHeaderPartial(pkt: Uint8Array, family: 4 | 6, l4Len: number): number {
  const [from, to] = family === 4 ? [12, 20] : [8, 40];
  let sum = TCP + l4Len;
  for (let i = from; i < to; i += 2) sum += (pkt[i]! << 8) | pkt[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** RFC 1071 internet checksum of b[start, end) (kept here so src/tun/ needs nothing from src/dataplane/). */
function internetChecksum(b: Uint8Array, start: number, end: number): number {
  let sum = 0;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i < end) sum += b[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

function be16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}
function be32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
function le16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function putBe16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function putBe32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}
function putLe16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
