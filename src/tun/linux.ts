/**
 * The Linux TUN device behind the Tun seam. Node has no ioctl, so TUNSETIFF and SIOCSIFMTU go
 * through koffi against libc; everything after that is plain fd I/O.
 *
 * Read path (chosen by measurement, see bench/tun.ts): a dup of the non-blocking fd is handed to libuv
 * as a stream (uv_pipe_open takes any pollable fd), so readiness comes from the event loop's own epoll:
 * no threadpool slot held (a blocked fs.read or koffi async poll would pin one of libuv's 4 threads for
 * the device's lifetime), no worker. libuv reads one packet per wakeup into a reused buffer; the
 * callback then drains up to READ_BATCH more with read(2), so a burst costs one epoll wakeup, not one
 * per packet (1.8x the per-packet stream, 3-4x the fs.read threadpool loop here). close() destroys the
 * stream (uv_close removes the fd from epoll) and closes the fd: nothing is left blocked anywhere.
 * Write path: synchronous write(2)s (a TUN write never blocks; the kernel queues or drops).
 * Both call libc's read/write through koffi, not fs.readSync/writeSync: every drain ends in EAGAIN, and
 * fs.readSync turns that into a thrown Error (12.5 us here, against 2.1 us for koffi's read returning -1);
 * a koffi write is also about 1 us cheaper than fs.writeSync.
 *
 * Offload (default; LATTICE_TUN_OFFLOAD=off or `offload: false` turns it off): the TUN is opened with
 * IFF_VNET_HDR, so every read and write carries a 10-byte virtio-net header (src/tun/offload.ts).
 * Writes go through a TcpCoalescer: the in-order TCP segments of one flow written during one event-loop
 * callback (one UDP receive burst) leave as ONE GSO super-packet write (header + packet in one write), flushed
 * in a microtask at the end of the callback, as do the burst's pure ACKs of a flow, less those a newer one
 * supersedes (filtered and counted, offload.ts); everything else is written at once with a zero header. The
 * kernel is not asked for offloads on reads (no TUNSETOFFLOAD): it hands us complete MTU-size packets,
 * because runsc's own GSO never reaches a TUN as super-packets (see offload.ts); a read with a GSO header
 * anyway is segmented, one the code cannot use is dropped and counted (rxErrors).
 */
import { openSync, closeSync, constants as fsConstants } from 'node:fs';
import { Socket } from 'node:net';
import { createRequire } from 'node:module';
import { LatticeError, PrerequisiteError, errorMessage } from '../errors.js';
import { TcpCoalescer, VirtioNetHdrLen, fromVirtioFrame } from './offload.js';
import type { Tun } from './tun.js';

/** linux/if_tun.h and linux/sockios.h */
export const TunConst = {
  TUNSETIFF: 0x400454ca,
  IFF_TUN: 0x0001,
  IFF_NO_PI: 0x1000,
  IFF_VNET_HDR: 0x4000,
  /** _IOW('T', 208, unsigned int): which offloads the TUN accepts in frames it hands out (TUN_F_*). */
  TUNSETOFFLOAD: 0x400454d0,
  TUN_F_CSUM: 0x01,
  TUN_F_TSO4: 0x02,
  TUN_F_TSO6: 0x04,
  SIOCSIFMTU: 0x8922,
  IFNAMSIZ: 16,
  IFREQ_SIZE: 40,
} as const;

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const DEFAULT_MTU = 1420;
/** Larger than any packet a TUN can hand us (MTU <= 65535). */
const READ_BUFFER = 65536;
/**
 * Packets read per epoll wakeup. Bounded because a packet written from the handler can make the kernel
 * queue an answer at once, and an unbounded drain would starve the event loop.
 */
const READ_BATCH = 64;

export class TunError extends LatticeError {
  override readonly name = 'TunError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ETUN', message, options);
  }
}

export interface TunStats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  /** Writes the kernel refused (interface down, bad packet): dropped and counted, never thrown. */
  txErrors: number;
  /** Read errors reported by the event loop (the reader stops on one), and frames with an unusable virtio-net header. */
  rxErrors: number;
  /** write(2) calls: below txPackets when segments were coalesced. */
  txWrites: number;
  /** GSO super-packets written (each two or more TCP segments). */
  txSuperPackets: number;
  /** Pure ACKs not written because a newer ACK of the same flow in the same burst replaced them (offload.ts). */
  txAcksFiltered: number;
}

/** How the TUN moves packets: "coalesce" (IFF_VNET_HDR, TCP segments merged on write) or "off". */
export type TunOffloadMode = 'coalesce' | 'off';

/** LATTICE_TUN_OFFLOAD=off turns TUN offloads off (the forced fallback); anything else leaves them on. */
export function tunOffloadFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.LATTICE_TUN_OFFLOAD !== 'off';
}

export interface LinuxTun extends Tun {
  /** The kernel interface name (what the kernel assigned if a `%d` pattern was asked for). */
  readonly name: string;
  readonly fd: number;
  readonly stats: Readonly<TunStats>;
  readonly offload: TunOffloadMode;
}

export interface OpenTunOptions {
  /** Set the interface MTU at creation (SIOCSIFMTU). Survives a later move into another netns. */
  mtu?: number;
  /** IFF_VNET_HDR and write coalescing (default: on unless LATTICE_TUN_OFFLOAD=off). openTunFd: default off. */
  offload?: boolean;
}

interface Libc {
  ioctl: (fd: number, req: number, arg: Buffer) => number;
  /** ioctl whose argument is a value, not a pointer (TUNSETOFFLOAD). */
  ioctlValue: (fd: number, req: number, arg: number) => number;
  socket: (domain: number, type: number, proto: number) => number;
  close: (fd: number) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
  /** read(2)/write(2): bytes moved, or -1 with errno set (never throws). */
  read: (fd: number, buf: Uint8Array, n: number) => number;
  write: (fd: number, buf: Uint8Array, n: number) => number;
  errno: () => number;
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (libc) return libc;
  try {
    // koffi is CommonJS with a native prebuilt; load it lazily so importing this module stays cheap.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    libc = {
      // ioctl is variadic in C; one pointer argument in a register is ABI-identical on the targets we run on.
      ioctl: lib.func('int ioctl(int fd, unsigned long req, void *arg)') as Libc['ioctl'],
      ioctlValue: lib.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']) as Libc['ioctlValue'],
      socket: lib.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
      close: lib.func('int close(int fd)') as Libc['close'],
      fcntl: lib.func('int fcntl(int fd, int cmd, int arg)') as Libc['fcntl'],
      read: lib.func('long read(int fd, void *buf, unsigned long n)') as Libc['read'],
      write: lib.func('long write(int fd, const void *buf, unsigned long n)') as Libc['write'],
      errno: () => koffi.errno(),
    };
    return libc;
  } catch (err) {
    throw new PrerequisiteError(`cannot load koffi/libc for TUN ioctls: ${errorMessage(err)}`, { cause: err });
  }
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 13: 'EACCES', 16: 'EBUSY', 19: 'ENODEV', 22: 'EINVAL' };

function ifreq(name: string): Buffer {
  if (!/^[A-Za-z0-9_.%-]{1,15}$/.test(name)) {
    throw new TunError(`invalid interface name "${name}": 1-15 characters of [A-Za-z0-9_.%-]`);
  }
  const buf = Buffer.alloc(TunConst.IFREQ_SIZE);
  buf.write(name, 0, 'latin1');
  return buf;
}

function ifreqName(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.toString('latin1', 0, end < 0 || end > TunConst.IFNAMSIZ ? TunConst.IFNAMSIZ : end);
}

/**
 * Create (or attach to) TUN interface `name` with IFF_TUN | IFF_NO_PI (| IFF_VNET_HDR with `offload`) and return its non-blocking fd and
 * the kernel's name for it. Low level: the fd is the caller's to close. Most callers want openLinuxTun.
 */
export function openTunFd(name: string, opts: OpenTunOptions = {}): { fd: number; name: string } {
  const c = loadLibc();
  const req = ifreq(name);
  req.writeUInt16LE(TunConst.IFF_TUN | TunConst.IFF_NO_PI | (opts.offload ? TunConst.IFF_VNET_HDR : 0), TunConst.IFNAMSIZ);
  let fd: number;
  try {
    // libuv opens with O_CLOEXEC already.
    fd = openSync('/dev/net/tun', fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new PrerequisiteError(`cannot open /dev/net/tun (${errorMessage(err)}): need root and the tun module`, {
      cause: err,
    });
  }
  try {
    if (c.ioctl(fd, TunConst.TUNSETIFF, req) < 0) {
      const e = c.errno();
      const why = ERRNO_NAMES[e] ?? `errno ${e}`;
      const hint = e === 1 ? ': need root (CAP_NET_ADMIN)' : e === 16 || e === 22 ? ': a non-TUN link with that name exists?' : '';
      if (e === 1) throw new PrerequisiteError(`TUNSETIFF ${name} failed: ${why}${hint}`);
      throw new TunError(`TUNSETIFF ${name} failed: ${why}${hint}`);
    }
    const actual = ifreqName(req);
    if (opts.mtu !== undefined) setMtu(actual, opts.mtu);
    return { fd, name: actual };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * TUNSETOFFLOAD `flags` (TunConst.TUN_F_*) on a TUN fd: undefined when the kernel accepted them, else the
 * errno name. Used by `lattice doctor` only: lattice's TUNs do not ask for read offloads (see above).
 */
export function setTunOffload(fd: number, flags: number): string | undefined {
  const c = loadLibc();
  if (c.ioctlValue(fd, TunConst.TUNSETOFFLOAD, flags) === 0) return undefined;
  const e = c.errno();
  return ERRNO_NAMES[e] ?? `errno ${e}`;
}

/** SIOCSIFMTU on an interface of the current netns. */
function setMtu(name: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw new TunError(`invalid MTU ${mtu}`);
  const c = loadLibc();
  const sock = c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw new TunError(`socket() for SIOCSIFMTU failed: errno ${c.errno()}`);
  try {
    const req = ifreq(name);
    req.writeInt32LE(mtu, TunConst.IFNAMSIZ);
    if (c.ioctl(sock, TunConst.SIOCSIFMTU, req) < 0) throw new TunError(`SIOCSIFMTU ${name} ${mtu} failed: errno ${c.errno()}`);
  } finally {
    c.close(sock);
  }
}

interface PipeWrapBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

/** libuv's pipe handle: the one way to get event-loop epoll readiness on an arbitrary fd in Node 20. */
function pipeWrap(): PipeWrapBinding {
  const binding = (process as unknown as { binding?: (name: string) => unknown }).binding;
  if (typeof binding !== 'function') throw new PrerequisiteError('process.binding is unavailable in this Node; cannot poll the TUN fd');
  return binding('pipe_wrap') as PipeWrapBinding;
}

class LinuxTunDevice implements LinuxTun {
  private readonly counters: Omit<TunStats, 'txAcksFiltered'> = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, txErrors: 0, rxErrors: 0, txWrites: 0, txSuperPackets: 0 };
  readonly offload: TunOffloadMode;
  private socket?: Socket;
  private closed = false;
  private closing?: Promise<void>;
  private readonly coalescer?: TcpCoalescer;
  private flushQueued = false;
  /** Where a header and a packet that are not adjacent are joined for one write (allocated on first use). */
  private frame?: Uint8Array;
  private readonly libc = loadLibc();
  private readonly flushNow = (): void => {
    this.flushQueued = false;
    this.coalescer?.flush();
  };

  get stats(): Readonly<TunStats> {
    return { ...this.counters, txAcksFiltered: this.coalescer?.stats.acksFiltered ?? 0 };
  }

  constructor(
    readonly fd: number,
    readonly name: string,
    readonly mtu: number,
    vnetHdr: boolean,
  ) {
    this.offload = vnetHdr ? 'coalesce' : 'off';
    if (vnetHdr) this.coalescer = new TcpCoalescer((header, packet) => this.writeFrame(header, packet));
  }

  start(onPacket: (packet: Uint8Array) => void): void {
    if (this.closed) throw new TunError(`TUN ${this.name} is closed`);
    if (this.socket) throw new TunError(`TUN ${this.name} already started`);
    const { Pipe, constants } = pipeWrap();
    // libuv gets its own descriptor of the same open file, so it can close its copy on a read error
    // while `fd` stays valid for writes until close(): no write can ever hit a reused fd number.
    const c = this.libc;
    // CLOEXEC like every fd here: children the launcher spawns (runsc) must never inherit the TUN.
    const readFd = c.fcntl(this.fd, F_DUPFD_CLOEXEC, 0);
    if (readFd < 0) throw new TunError(`dup of TUN ${this.name} fd failed: errno ${c.errno()}`);
    const handle = new Pipe(constants.SOCKET);
    const rc = handle.open(readFd);
    if (rc < 0) {
      c.close(readFd);
      throw new TunError(`cannot poll TUN ${this.name} fd: uv error ${rc}`);
    }
    const one = (packet: Uint8Array): void => {
      this.counters.rxPackets++;
      this.counters.rxBytes += packet.length;
      onPacket(packet);
    };
    const deliver = this.coalescer
      ? (buf: Buffer, n: number): void => {
          // A copy (buf is reused for the next read), without the virtio-net header once it is read.
          if (fromVirtioFrame(new Uint8Array(buf.subarray(0, n)), one) !== undefined) this.counters.rxErrors++;
        }
      : (buf: Buffer, n: number): void => one(new Uint8Array(buf.subarray(0, n))); // a copy: buf is reused
    // onread: libuv reads straight into one reused buffer, no 64 KiB allocation or stream machinery per read.
    const socket = new Socket({
      handle,
      readable: true,
      writable: false,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (n: number, buf: Buffer) => {
          deliver(buf, n);
          this.drain(buf, deliver);
          return true;
        },
      },
    } as ConstructorParameters<typeof Socket>[0]);
    // EBADFD once the interface is gone (its netns was deleted); the stream then closes its descriptor.
    socket.on('error', () => {
      this.counters.rxErrors++;
    });
    this.socket = socket;
  }

  /** Read the rest of a burst synchronously (libuv itself stops after one short read per wakeup). */
  private drain(buf: Buffer, deliver: (buf: Buffer, n: number) => void): void {
    for (let i = 1; i < READ_BATCH && !this.closed; i++) {
      const n = this.libc.read(this.fd, buf, buf.length);
      // -1: EAGAIN (drained) or an error, which resurfaces on libuv's next read and is counted there.
      if (n <= 0) return;
      deliver(buf, n);
    }
  }

  write(packet: Uint8Array): void {
    if (this.closed) return;
    this.counters.txPackets++;
    this.counters.txBytes += packet.length;
    if (!this.coalescer) return this.writeOnce(packet);
    this.coalescer.push(packet);
    if (!this.flushQueued && this.coalescer.pending) {
      this.flushQueued = true;
      queueMicrotask(this.flushNow); // the end of this callback: one UDP receive burst
    }
  }

  /**
   * A virtio-net header and its packet as ONE write(2): in place when they are adjacent (every super-packet),
   * else copied into `frame` (a packet the coalescer passed through: one copy instead of a writev).
   */
  private writeFrame(header: Uint8Array, packet: Uint8Array): void {
    if (this.closed) return;
    if (header[1] !== 0) this.counters.txSuperPackets++;
    if (header.buffer === packet.buffer && header.byteOffset + header.length === packet.byteOffset) {
      return this.writeOnce(new Uint8Array(packet.buffer, header.byteOffset, header.length + packet.length));
    }
    const frame = (this.frame ??= new Uint8Array(VirtioNetHdrLen + READ_BUFFER));
    if (header.length + packet.length > frame.length) {
      this.counters.txErrors++; // larger than any IP packet a TUN takes: dropped, never thrown
      return;
    }
    frame.set(header, 0);
    frame.set(packet, header.length);
    this.writeOnce(frame.subarray(0, header.length + packet.length));
  }

  private writeOnce(bytes: Uint8Array): void {
    this.counters.txWrites++;
    // -1: EIO while the link is down, EINVAL for a malformed packet, EBADFD once the interface is gone.
    if (this.libc.write(this.fd, bytes, bytes.length) < 0) this.counters.txErrors++;
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.coalescer?.flush();
    this.closed = true;
    const socket = this.socket;
    const stopReader =
      !socket || socket.closed
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            socket.once('close', () => resolve());
            socket.destroy();
          });
    this.closing = stopReader.then(() => closeSync(this.fd));
    return this.closing;
  }
}

/**
 * Create TUN interface `name` in the current netns and return it as a Tun. The fd stays attached
 * if the interface is later moved into another netns (`ip link set NAME netns NS`).
 */
export async function openLinuxTun(name: string, opts: OpenTunOptions = {}): Promise<LinuxTun> {
  const mtu = opts.mtu ?? DEFAULT_MTU;
  const offload = opts.offload ?? tunOffloadFromEnv();
  const { fd, name: actual } = openTunFd(name, { mtu, offload });
  return new LinuxTunDevice(fd, actual, mtu, offload);
}
