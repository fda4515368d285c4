/**
 * The packet device seam between the data plane and the OS, shaped like wireguard-go's tun.Device.
 * One IP packet (IPv4 or IPv6, no link header) per call. Implementations: MemoryTun (tests) and
 * the Linux TUN opened through koffi (src/tun/linux.ts).
 */
export interface Tun {
  readonly name: string;
  readonly mtu: number;
  /** Begin delivering packets that the OS side (host stack or the sandbox's netstack) sent into the device. */
  start(onPacket: (packet: Uint8Array) => void): void;
  /** Hand one packet to the OS side. Never throws for a bad packet; the OS drops what it cannot use. */
  write(packet: Uint8Array): void;
  close(): Promise<void>;
}

/** In-memory twin: two ends of a wire. What one end writes, the other end's handler receives. */
export class MemoryTun implements Tun {
  private handler?: (packet: Uint8Array) => void;
  private peer?: MemoryTun;
  readonly written: Uint8Array[] = [];
  private closed = false;

  constructor(
    readonly name = 'mem0',
    readonly mtu = 1420,
  ) {}

  /** A connected pair: `a.write(p)` is delivered to `b`'s handler and vice versa. */
  static pair(mtu = 1420): [MemoryTun, MemoryTun] {
    const a = new MemoryTun('mema', mtu);
    const b = new MemoryTun('memb', mtu);
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  start(onPacket: (packet: Uint8Array) => void): void {
    this.handler = onPacket;
  }

  /** Simulate the OS side sending a packet into the device. */
  inject(packet: Uint8Array): void {
    if (!this.closed) this.handler?.(packet);
  }

  write(packet: Uint8Array): void {
    if (this.closed) return;
    this.written.push(packet);
    this.peer?.inject(packet);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handler = undefined;
  }
}
