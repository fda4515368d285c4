/**
 * The UDP Bind: one IPv4 and one IPv6 socket on the same port (the IPv6 one is optional, for hosts or
 * namespaces without IPv6). Send errors (unreachable, no route) are counted, never thrown: a peer's
 * network trouble is not the caller's exception.
 *
 * Node's dgram opens and binds the sockets and wakes us when one is readable (libuv's epoll: no threadpool
 * slot pinned). Where the kernel and koffi allow it (detected once per bind, `offload`), the packets
 * themselves move in batches on the same descriptors (wireguard-go conn/bind_std.go):
 *
 *   send:    send() copies into a fixed arena and returns; a microtask at the end of the current callback
 *            (one TUN read burst) flushes the burst with ONE sendmmsg(2), runs to one peer of equal size
 *            merged into UDP GSO messages (UDP_SEGMENT cmsg) when the kernel offers GSO.
 *   receive: libuv hands the first datagram of a wakeup to the 'message' handler; the handler then drains
 *            the socket with recvmmsg(2), up to RECV_SLOTS datagrams per call.
 *   fallback (offload "off", no koffi, no fd, or a kernel without sendmmsg): one dgram send per datagram
 *            (of a copy: send() never keeps the caller's buffer, see Bind.sendCopies),
 *            libuv's own recvmsg loop. Forced with `offload: 'off'` or LATTICE_UDP_OFFLOAD=off.
 * UDP GRO is not enabled: libuv's own first read would then hand over coalesced datagrams without their
 * segment size.
 */
import dgram from 'node:dgram';
import { createRequire } from 'node:module';
import { formatIpBytes, parseIpBytes } from '../net/addr.js';
import type { Bind, Endpoint, UdpEndpoint } from './bind.js';
import {
  GSO_CMSG_SPACE, IOVEC_SIZE, MMSGHDR_SIZE, SOCKADDR_SLOT, UdpConst,
  planMessages, readSockaddr, receivedFlags, receivedLength, resetRecvNames, writeRecvHeaders, writeSendHeaders, writeSockaddr,
  type BatchArenas,
} from './batch.js';

/** How datagrams move: "gso" sendmmsg + UDP GSO, "mmsg" sendmmsg/recvmmsg, "dgram" one syscall each. */
export type UdpOffloadMode = 'gso' | 'mmsg' | 'dgram';

/** What a bind detected at open: the mode in use and, when below "gso", why. */
export interface UdpOffload {
  mode: UdpOffloadMode;
  reason?: string;
}

export interface UdpBindOptions {
  /** 0 = any free port. */
  port?: number;
  host4?: string;
  host6?: string;
  /** Socket buffer sizes in bytes (default 4 MiB), for throughput. */
  bufferSize?: number;
  /**
   * Batched I/O: "auto" (default: the best the kernel offers), "mmsg" (sendmmsg/recvmmsg, no GSO), "off"
   * (plain dgram). Default from LATTICE_UDP_OFFLOAD when set to one of these.
   */
  offload?: 'auto' | 'mmsg' | 'off';
}

/** Datagrams queued per socket before a flush is forced; also the recvmmsg batch. */
const SEND_SLOTS = 64;
const RECV_SLOTS = 64;
/** Bytes per send slot: any WireGuard message of an MTU <= 2000 tunnel; larger ones go through dgram. */
const SLOT_SIZE = 2048;
/** Bytes per receive slot: a jumbo-frame datagram; anything longer is truncated, dropped and counted. */
const RECV_SLOT_SIZE = 9216;
/** recvmmsg calls per wakeup at most, so one busy socket cannot starve the event loop. */
const RECV_ROUNDS = 4;
const EIO = 5;
const MSG_TRUNC = 0x20;

interface LibcUdp {
  sendmmsg: (fd: number, hdrs: Buffer, n: number, flags: number) => number;
  recvmmsg: (fd: number, hdrs: Buffer, n: number, flags: number, timeout: null) => number;
  getsockopt: (fd: number, level: number, name: number, val: Buffer, len: Buffer) => number;
  address: (b: Buffer) => bigint;
  errno: () => number;
}

function loadLibcUdp(): LibcUdp | string {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    return {
      sendmmsg: lib.func('int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)') as LibcUdp['sendmmsg'],
      recvmmsg: lib.func('int recvmmsg(int fd, void *msgvec, unsigned int vlen, int flags, void *timeout)') as LibcUdp['recvmmsg'],
      getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *val, void *len)') as LibcUdp['getsockopt'],
      address: (b) => koffi.address(b),
      errno: () => koffi.errno(),
    };
  } catch (err) {
    return `koffi/libc unavailable (${(err as Error).message.split('\n')[0]})`;
  }
}

/** The OS descriptor under a bound dgram socket (Node keeps its handle behind a symbol; no public accessor). */
function socketFd(s: dgram.Socket): number {
  const sym = Object.getOwnPropertySymbols(s).find((x) => x.description === 'state symbol');
  const state = sym ? (s as unknown as Record<symbol, { handle?: { fd?: unknown } }>)[sym] : undefined;
  const fd = state?.handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

interface Arenas extends BatchArenas {
  dataBuf: Buffer;
  namesBuf: Buffer;
}

function arenas(libc: LibcUdp, slots: number, slotSize: number, messages: number): Arenas {
  // allocUnsafeSlow: a backing store of its own, outside V8's moving heap, so the addresses stay valid.
  const data = Buffer.allocUnsafeSlow(slots * slotSize);
  const iov = Buffer.allocUnsafeSlow(slots * IOVEC_SIZE);
  const names = Buffer.allocUnsafeSlow(slots * SOCKADDR_SLOT);
  const control = Buffer.allocUnsafeSlow(messages * GSO_CMSG_SPACE);
  const hdrs = Buffer.allocUnsafeSlow(messages * MMSGHDR_SIZE);
  return {
    data: libc.address(data), dataBuf: data, slotSize, iov, iovAddr: libc.address(iov),
    names: libc.address(names), namesBuf: names, control, controlAddr: libc.address(control), hdrs,
  };
}

/** Counters of the batched path (all zero on the dgram path). */
export interface UdpBatchStats {
  /** sendmmsg calls and the datagrams they carried */
  sendCalls: number;
  sentDatagrams: number;
  /** GSO messages (several datagrams in one) */
  gsoMessages: number;
  /** recvmmsg calls that returned datagrams, and those datagrams */
  recvCalls: number;
  receivedDatagrams: number;
  /** received datagrams dropped: truncated (longer than a receive slot) or of another address family */
  receiveDropped: number;
}

/** Batched sends and receives on one socket's descriptor (see the file comment). */
class SocketBatch {
  private n = 0;
  private readonly lengths = new Uint32Array(SEND_SLOTS);
  private readonly nameLens = new Uint8Array(SEND_SLOTS);
  private readonly dests: Array<UdpEndpoint | undefined> = new Array<UdpEndpoint | undefined>(SEND_SLOTS);
  private readonly send: Arenas;
  private readonly recv: Arenas;
  private flushQueued = false;
  private lastEp?: UdpEndpoint;
  private lastIp?: Uint8Array;
  private lastFrom?: { key: Buffer; ep: UdpEndpoint };
  private readonly flushNow = () => {
    this.flushQueued = false;
    this.flush();
  };

  constructor(
    private readonly fd: number,
    private readonly libc: LibcUdp,
    private gso: boolean,
    private readonly stats: UdpBatchStats,
    private readonly onSendError: () => void,
  ) {
    this.send = arenas(libc, SEND_SLOTS, SLOT_SIZE, SEND_SLOTS);
    this.recv = arenas(libc, RECV_SLOTS, RECV_SLOT_SIZE, RECV_SLOTS);
    writeRecvHeaders(this.recv, RECV_SLOTS);
  }

  /** Queue one datagram; false when it does not fit a slot (the caller sends it the plain way, after flush()). */
  queue(data: Uint8Array, to: UdpEndpoint): boolean {
    if (data.length > SLOT_SIZE) return false;
    let ip = to === this.lastEp ? this.lastIp : undefined;
    if (!ip) {
      ip = parseIpBytes(to.address);
      if (!ip) return false;
      this.lastEp = to;
      this.lastIp = ip;
    }
    const i = this.n++;
    this.send.dataBuf.set(data, i * SLOT_SIZE);
    this.lengths[i] = data.length;
    this.nameLens[i] = writeSockaddr(this.send.namesBuf, i * SOCKADDR_SLOT, ip, to.port);
    this.dests[i] = to;
    if (this.n === SEND_SLOTS) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushNow);
    }
    return true;
  }

  private sameDest = (i: number, j: number): boolean => {
    const a = this.dests[i]!;
    const b = this.dests[j]!;
    return a === b || (a.port === b.port && a.address === b.address);
  };

  /** Send everything queued: one sendmmsg (more only if the kernel takes part of the batch). */
  flush(): void {
    const n = this.n;
    if (n === 0) return;
    this.n = 0;
    let plan = planMessages(this.lengths, n, this.sameDest, this.gso);
    writeSendHeaders(this.send, plan, this.lengths, this.nameLens);
    let m = 0;
    while (m < plan.length) {
      const sent = this.libc.sendmmsg(this.fd, m === 0 ? this.send.hdrs : this.send.hdrs.subarray(m * MMSGHDR_SIZE), plan.length - m, 0);
      if (sent > 0) {
        this.stats.sendCalls++;
        for (let k = m; k < m + sent; k++) {
          this.stats.sentDatagrams += plan[k]!.count;
          if (plan[k]!.segment > 0) this.stats.gsoMessages++;
        }
        m += sent;
        continue;
      }
      const e = this.libc.errno();
      if (e === UdpConst.EINTR) continue;
      if (e === EIO && this.gso) {
        // The route's device cannot segment (wireguard-go: errGSO): plain messages from now on.
        this.gso = false;
        const rest = plan.slice(m);
        plan = [];
        for (const r of rest) for (let k = r.first; k < r.first + r.count; k++) plan.push({ first: k, count: 1, segment: 0 });
        writeSendHeaders(this.send, plan, this.lengths, this.nameLens);
        m = 0;
        continue;
      }
      // EAGAIN (send buffer full: the kernel would drop too) or a per-destination error: drop one message.
      this.onSendError();
      m++;
    }
    for (let i = 0; i < n; i++) this.dests[i] = undefined;
  }

  /** Read what is waiting; deliver each datagram (a copy) with its source. Never throws. */
  drain(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    const r = this.recv;
    for (let round = 0; round < RECV_ROUNDS; round++) {
      resetRecvNames(r.hdrs, RECV_SLOTS);
      const got = this.libc.recvmmsg(this.fd, r.hdrs, RECV_SLOTS, UdpConst.MSG_DONTWAIT, null);
      if (got <= 0) return; // EAGAIN: drained (any other error resurfaces on libuv's next read)
      this.stats.recvCalls++;
      this.stats.receivedDatagrams += got;
      for (let k = 0; k < got; k++) {
        const from = this.source(r.namesBuf, k * SOCKADDR_SLOT);
        if (receivedFlags(r.hdrs, k) & MSG_TRUNC || !from) {
          this.stats.receiveDropped++; // larger than a jumbo frame, or not IPv4/IPv6: not WireGuard
          continue;
        }
        const len = receivedLength(r.hdrs, k);
        onDatagram(r.dataBuf.slice(k * RECV_SLOT_SIZE, k * RECV_SLOT_SIZE + len), from);
      }
      if (got < RECV_SLOTS) return;
    }
  }

  /** The sender's endpoint; the same object as last time when the address is the same (the common case). */
  private source(names: Buffer, off: number): UdpEndpoint | undefined {
    const key = names.subarray(off, off + SOCKADDR_SLOT);
    if (this.lastFrom && this.lastFrom.key.equals(key)) return this.lastFrom.ep;
    const sa = readSockaddr(names, off);
    if (!sa) return undefined;
    const ep: UdpEndpoint = { address: formatIpBytes(sa.ip), port: sa.port };
    this.lastFrom = { key: Buffer.from(key), ep };
    return ep;
  }
}


function bindSocket(type: 'udp4' | 'udp6', port: number, address: string): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, ipv6Only: type === 'udp6', reuseAddr: false });
    const onError = (err: Error) => {
      s.close();
      reject(err);
    };
    s.once('error', onError);
    s.bind({ port, address, exclusive: true }, () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}

/**
 * Probe what batched I/O socket `s` supports: sendmmsg/recvmmsg (any Linux since 3.0, through koffi) and
 * UDP GSO (getsockopt(SOL_UDP, UDP_SEGMENT) succeeds on kernels >= 4.18, as wireguard-go checks).
 */
function detectOffload(s: dgram.Socket, wanted: 'auto' | 'mmsg' | 'off', libc: LibcUdp | string): { offload: UdpOffload; fd: number } {
  if (wanted === 'off') return { offload: { mode: 'dgram', reason: 'batching turned off (offload "off")' }, fd: -1 };
  if (typeof libc === 'string') return { offload: { mode: 'dgram', reason: libc }, fd: -1 };
  const fd = socketFd(s);
  if (fd < 0) return { offload: { mode: 'dgram', reason: 'no descriptor behind the dgram socket in this Node' }, fd };
  // sendmmsg with no messages: 0 where the syscall exists, -1 ENOSYS where it does not.
  if (libc.sendmmsg(fd, Buffer.alloc(MMSGHDR_SIZE), 0, 0) < 0) {
    return { offload: { mode: 'dgram', reason: `sendmmsg refused (errno ${libc.errno()})` }, fd: -1 };
  }
  if (wanted === 'mmsg') return { offload: { mode: 'mmsg', reason: 'GSO turned off (offload "mmsg")' }, fd };
  const val = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  if (libc.getsockopt(fd, UdpConst.SOL_UDP, UdpConst.UDP_SEGMENT, val, len) < 0) {
    return { offload: { mode: 'mmsg', reason: `no UDP GSO in this kernel (errno ${libc.errno()})` }, fd };
  }
  return { offload: { mode: 'gso' }, fd };
}

function offloadFromEnv(): 'auto' | 'mmsg' | 'off' {
  const v = process.env.LATTICE_UDP_OFFLOAD;
  return v === 'off' || v === 'mmsg' ? v : 'auto';
}

export class UdpBind implements Bind {
  /** The batch path copies into its arena, the fallback hands dgram a copy: send() never keeps `data`. */
  readonly sendCopies = true;
  sendErrors = 0;
  private closed = false;
  /** Counters of the batched path. */
  readonly batchStats: UdpBatchStats = { sendCalls: 0, sentDatagrams: 0, gsoMessages: 0, recvCalls: 0, receivedDatagrams: 0, receiveDropped: 0 };
  private readonly b4?: SocketBatch;
  private readonly b6?: SocketBatch;

  private constructor(
    private readonly v4: dgram.Socket,
    private readonly v6: dgram.Socket | undefined,
    readonly port: number,
    /** What the bind detected at open (shown by `lattice doctor`). */
    readonly offload: UdpOffload,
    fds: { v4: number; v6: number; libc?: LibcUdp },
  ) {
    const onErr = () => {
      this.sendErrors++;
    };
    if (offload.mode !== 'dgram' && fds.libc) {
      this.b4 = new SocketBatch(fds.v4, fds.libc, offload.mode === 'gso', this.batchStats, onErr);
      if (v6 && fds.v6 >= 0) this.b6 = new SocketBatch(fds.v6, fds.libc, offload.mode === 'gso', this.batchStats, onErr);
    }
  }

  static async open(opts: UdpBindOptions = {}): Promise<UdpBind> {
    const wanted = opts.port ?? 0;
    for (let attempt = 0; ; attempt++) {
      const v4 = await bindSocket('udp4', wanted, opts.host4 ?? '0.0.0.0');
      const port = v4.address().port;
      let v6: dgram.Socket | undefined;
      try {
        v6 = await bindSocket('udp6', port, opts.host6 ?? '::');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EADDRINUSE' && wanted === 0 && attempt < 8) {
          v4.close();
          continue; // the random v4 port is taken on v6: pick another
        }
        if (code === 'EADDRINUSE') {
          v4.close();
          throw err;
        }
        v6 = undefined; // no IPv6 here (EAFNOSUPPORT, EADDRNOTAVAIL): IPv4 only
      }
      const size = opts.bufferSize ?? 4 << 20;
      for (const s of [v4, v6]) {
        if (!s) continue;
        try {
          s.setRecvBufferSize(size);
          s.setSendBufferSize(size);
        } catch {
          // The kernel caps buffer sizes at net.core.{r,w}mem_max; the default is still usable.
        }
      }
      const wantedOffload = opts.offload ?? offloadFromEnv();
      const libc = wantedOffload === 'off' ? 'batching turned off (offload "off")' : loadLibcUdp();
      const d4 = detectOffload(v4, wantedOffload, libc);
      const d6 = v6 && d4.fd >= 0 ? detectOffload(v6, wantedOffload, libc) : { fd: -1 };
      return new UdpBind(v4, v6, port, d4.offload, { v4: d4.fd, v6: d6.fd, libc: typeof libc === 'string' ? undefined : libc });
    }
  }

  get hasIPv6(): boolean {
    return this.v6 !== undefined;
  }

  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    const handler = (batch: SocketBatch | undefined) => (msg: Buffer, rinfo: dgram.RemoteInfo) => {
      // Strip an IPv4-mapped prefix so one peer has one endpoint spelling.
      const address = rinfo.address.startsWith('::ffff:') && rinfo.address.includes('.') ? rinfo.address.slice(7) : rinfo.address;
      onDatagram(msg, { address, port: rinfo.port });
      if (!this.closed) batch?.drain(onDatagram);
    };
    this.v4.on('message', handler(this.b4));
    this.v6?.on('message', handler(this.b6));
    const onError = () => {
      this.sendErrors++;
    };
    this.v4.on('error', onError);
    this.v6?.on('error', onError);
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (this.closed) return;
    if (to.kind === 'virtual') {
      // A virtual path is the PathBind's business; a bare UDP bind cannot reach it.
      this.sendErrors++;
      return;
    }
    const v6 = to.address.includes(':');
    const s = v6 ? this.v6 : this.v4;
    if (!s) {
      this.sendErrors++;
      return;
    }
    const batch = v6 ? this.b6 : this.b4;
    if (batch) {
      if (batch.queue(data, to)) return;
      batch.flush(); // keep the order: what was queued goes first
    }
    // No per-packet callback (it costs a closure and a request wrap per datagram); failures arrive as
    // 'error' events, counted in start().
    try {
      // dgram keeps the buffer until the datagram is on the wire: give it its own copy (sendCopies).
      s.send(Buffer.from(data), to.port, to.address);
    } catch {
      // Synchronous refusals (port 0 from a spoofed source, malformed address): count, never throw.
      this.sendErrors++;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.b4?.flush();
    this.b6?.flush();
    this.closed = true;
    await Promise.all(
      [this.v4, this.v6].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : Promise.resolve())),
    );
  }
}
