/**
 * Batched UDP I/O, the pure half: how a burst of queued datagrams becomes one sendmmsg(2) call, and how
 * recvmmsg(2) results are read back. No syscalls here (src/conn/udp.ts owns the socket and the FFI); the
 * layouts are Linux x86-64/arm64 (LP64), checked by test/conn/batch.test.ts against hand-built bytes.
 *
 *   queue:  send(data, to) copies data into slot i of a fixed arena (slot i at arena + i * slotSize)
 *   plan:   consecutive slots to the same address form one message; with UDP GSO (linux/udp.h UDP_SEGMENT)
 *           a run of equal-size datagrams (the last may be shorter) is one message of several iovecs,
 *           segmented by the kernel (wireguard-go conn/bind_std.go, coalesceMessages); without GSO every
 *           datagram is its own message. Either way: one sendmmsg for the whole burst.
 *   write:  struct mmsghdr[] { msghdr { name, namelen, iov, iovlen, control, controllen, flags }, msg_len }
 *           with iovecs into the arena and a cmsg { SOL_UDP, UDP_SEGMENT, u16 size } per GSO message.
 *
 * Sizes (bytes): iovec 16, msghdr 56, mmsghdr 64, cmsghdr 16 (+ u16 data, CMSG_SPACE 24), sockaddr_in 16,
 * sockaddr_in6 28 (one 32-byte slot each).
 */

/** linux/socket.h, linux/udp.h, netinet/in.h */
export const UdpConst = {
  AF_INET: 2,
  AF_INET6: 10,
  SOL_UDP: 17,
  UDP_SEGMENT: 103,
  UDP_GRO: 104,
  MSG_DONTWAIT: 0x40,
  EAGAIN: 11,
  EINTR: 4,
} as const;

export const IOVEC_SIZE = 16;
export const MMSGHDR_SIZE = 64;
export const SOCKADDR_SLOT = 32;
/** CMSG_SPACE(sizeof(uint16_t)) */
export const GSO_CMSG_SPACE = 24;
/** CMSG_LEN(sizeof(uint16_t)) */
const GSO_CMSG_LEN = 18;
/** The kernel's cap on segments per GSO send (UDP_MAX_SEGMENTS). */
export const UDP_MAX_SEGMENTS = 64;
/** A GSO message's payload fits one IP datagram: 65535 - IPv6 header (40) - UDP header (8). */
export const GSO_MAX_BYTES = 65535 - 40 - 8;

/** One message of a plan: slots [first, first + count) to slot `first`'s address; `segment` > 0 = GSO size. */
export interface PlannedMessage {
  first: number;
  count: number;
  segment: number;
}

/**
 * Group queued datagrams into messages. `lengths[i]` is slot i's datagram size; `sameDest(i, j)` says
 * whether slots i and j go to the same address. With `gso`, a run is extended while the destination is
 * the same, the size equals the run's first size (a shorter datagram is taken and ends the run, as the
 * kernel requires), fewer than UDP_MAX_SEGMENTS are in it and its total stays within GSO_MAX_BYTES.
 */
export function planMessages(
  lengths: ArrayLike<number>,
  n: number,
  sameDest: (i: number, j: number) => boolean,
  gso: boolean,
): PlannedMessage[] {
  const out: PlannedMessage[] = [];
  let i = 0;
  while (i < n) {
    const first = i;
    const size = lengths[i]!;
    let total = size;
    i++;
    if (gso) {
      while (i < n && i - first < UDP_MAX_SEGMENTS && sameDest(first, i)) {
        const len = lengths[i]!;
        if (len > size || total + len > GSO_MAX_BYTES) break;
        total += len;
        i++;
        if (len < size) break;
      }
    }
    const count = i - first;
    out.push({ first, count, segment: count > 1 ? size : 0 });
  }
  return out;
}

/** Write a sockaddr_in / sockaddr_in6 for `ip` (4 or 16 bytes) and `port` at `off`; returns its length. */
export function writeSockaddr(buf: Buffer, off: number, ip: Uint8Array, port: number): number {
  buf.fill(0, off, off + SOCKADDR_SLOT);
  if (ip.length === 4) {
    buf.writeUInt16LE(UdpConst.AF_INET, off);
    buf.writeUInt16BE(port, off + 2);
    buf.set(ip, off + 4);
    return 16;
  }
  buf.writeUInt16LE(UdpConst.AF_INET6, off);
  buf.writeUInt16BE(port, off + 2);
  buf.set(ip, off + 8);
  return 28;
}

/** Read a sockaddr written by the kernel: family 4/6, address bytes (a view), port; undefined for others. */
export function readSockaddr(buf: Buffer, off: number): { ip: Uint8Array; port: number } | undefined {
  const family = buf.readUInt16LE(off);
  const port = buf.readUInt16BE(off + 2);
  if (family === UdpConst.AF_INET) return { ip: buf.subarray(off + 4, off + 8), port };
  if (family === UdpConst.AF_INET6) return { ip: buf.subarray(off + 8, off + 24), port };
  return undefined;
}

/**
 * Addresses of the fixed arenas a batch uses (from koffi.address, or fake ones in tests). Every pointer the
 * kernel sees is one of these plus an offset, so the arenas must never move (Buffer.allocUnsafeSlow: their
 * backing stores live outside V8's moving heap).
 */
export interface BatchArenas {
  /** datagram slots, slotSize bytes apart */
  data: bigint;
  slotSize: number;
  /** iovec per slot */
  iov: Buffer;
  iovAddr: bigint;
  /** sockaddr slot per slot (SOCKADDR_SLOT apart) */
  names: bigint;
  /** GSO cmsg per message (GSO_CMSG_SPACE apart) */
  control: Buffer;
  controlAddr: bigint;
  /** mmsghdr per message */
  hdrs: Buffer;
}

/** Fill iovecs and mmsghdrs for a plan; `lengths[i]` slot sizes, `nameLens[i]` sockaddr lengths. */
export function writeSendHeaders(a: BatchArenas, plan: readonly PlannedMessage[], lengths: ArrayLike<number>, nameLens: ArrayLike<number>): void {
  for (let m = 0; m < plan.length; m++) {
    const { first, count, segment } = plan[m]!;
    for (let k = first; k < first + count; k++) {
      a.iov.writeBigUInt64LE(a.data + BigInt(k * a.slotSize), k * IOVEC_SIZE);
      a.iov.writeBigUInt64LE(BigInt(lengths[k]!), k * IOVEC_SIZE + 8);
    }
    const h = m * MMSGHDR_SIZE;
    a.hdrs.writeBigUInt64LE(a.names + BigInt(first * SOCKADDR_SLOT), h);
    a.hdrs.writeUInt32LE(nameLens[first]!, h + 8);
    a.hdrs.writeUInt32LE(0, h + 12);
    a.hdrs.writeBigUInt64LE(a.iovAddr + BigInt(first * IOVEC_SIZE), h + 16);
    a.hdrs.writeBigUInt64LE(BigInt(count), h + 24);
    if (segment > 0) {
      const c = m * GSO_CMSG_SPACE;
      a.control.fill(0, c, c + GSO_CMSG_SPACE);
      a.control.writeBigUInt64LE(BigInt(GSO_CMSG_LEN), c);
      a.control.writeInt32LE(UdpConst.SOL_UDP, c + 8);
      a.control.writeInt32LE(UdpConst.UDP_SEGMENT, c + 12);
      a.control.writeUInt16LE(segment, c + 16);
      a.hdrs.writeBigUInt64LE(a.controlAddr + BigInt(c), h + 32);
      a.hdrs.writeBigUInt64LE(BigInt(GSO_CMSG_SPACE), h + 40);
    } else {
      a.hdrs.writeBigUInt64LE(0n, h + 32);
      a.hdrs.writeBigUInt64LE(0n, h + 40);
    }
    a.hdrs.writeUInt32LE(0, h + 48); // msg_flags
    a.hdrs.writeUInt32LE(0, h + 56); // msg_len (out)
  }
}

/** Fill `n` receive mmsghdrs: one slot-sized iovec and one sockaddr slot each, no control. */
export function writeRecvHeaders(a: BatchArenas, n: number): void {
  for (let k = 0; k < n; k++) {
    a.iov.writeBigUInt64LE(a.data + BigInt(k * a.slotSize), k * IOVEC_SIZE);
    a.iov.writeBigUInt64LE(BigInt(a.slotSize), k * IOVEC_SIZE + 8);
    const h = k * MMSGHDR_SIZE;
    a.hdrs.fill(0, h, h + MMSGHDR_SIZE);
    a.hdrs.writeBigUInt64LE(a.names + BigInt(k * SOCKADDR_SLOT), h);
    a.hdrs.writeUInt32LE(SOCKADDR_SLOT, h + 8);
    a.hdrs.writeBigUInt64LE(a.iovAddr + BigInt(k * IOVEC_SIZE), h + 16);
    a.hdrs.writeBigUInt64LE(1n, h + 24);
  }
}

/** Before each recvmmsg: the kernel overwrote namelen and msg_len, reset namelen. */
export function resetRecvNames(hdrs: Buffer, n: number): void {
  for (let k = 0; k < n; k++) hdrs.writeUInt32LE(SOCKADDR_SLOT, k * MMSGHDR_SIZE + 8);
}

/** msg_len of received message k. */
export function receivedLength(hdrs: Buffer, k: number): number {
  return hdrs.readUInt32LE(k * MMSGHDR_SIZE + 56);
}

/** msg_flags of received message k (MSG_TRUNC = 0x20: the datagram was larger than the slot). */
export function receivedFlags(hdrs: Buffer, k: number): number {
  return hdrs.readUInt32LE(k * MMSGHDR_SIZE + 48);
}
