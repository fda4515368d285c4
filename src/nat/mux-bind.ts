/**
 * One UDP socket, two protocols: STUN and WireGuard told apart by their first bytes (the seed's
 * FilteringUDPMux), so the server-reflexive address STUN discovers is the WireGuard socket's own mapping.
 *
 *   STUN:       top two bits 0, length % 4 == 0, magic cookie 0x2112A442 at offset 4 (RFC 8489 section 5)
 *   WireGuard:  type 1..4 followed by three zero bytes (the reserved field)
 *   anything else: dropped and counted
 *
 * The two cannot collide on anything we accept: a STUN Binding message has a non-zero type low byte
 * (0x01, 0x11, ...) at offset 1, where WireGuard has a reserved zero. WireGuard is tested first since it
 * is the hot path.
 */
import type { Bind, Endpoint } from '../conn/bind.js';

export const PacketKind = { WireGuard: 1, Stun: 2, Garbage: 0 } as const;
export type PacketKind = (typeof PacketKind)[keyof typeof PacketKind];

/** Classify one datagram by its first 8 bytes. No allocation, no parsing. */
export function classify(b: Uint8Array): PacketKind {
  const n = b.length;
  if (n < 4) return PacketKind.Garbage;
  const t = b[0];
  if (t >= 1 && t <= 4 && (b[1] | b[2] | b[3]) === 0) return PacketKind.WireGuard;
  if (
    n >= 20 &&
    (t & 0xc0) === 0 &&
    (b[3] & 3) === 0 &&
    b[4] === 0x21 &&
    b[5] === 0x12 &&
    b[6] === 0xa4 &&
    b[7] === 0x42
  ) {
    return PacketKind.Stun;
  }
  return PacketKind.Garbage;
}

const EarlyQueueSize = 16;

export interface MuxStats {
  wireguard: number;
  stun: number;
  garbage: number;
}

export type StunHandler = (data: Uint8Array, from: Endpoint) => void;

/**
 * A Bind decorator: the device sees only WireGuard datagrams; STUN goes to `onStun` (the discovery
 * client and the connectivity checks); garbage is counted and dropped.
 */
export class MuxBind implements Bind {
  readonly stats: MuxStats = { wireguard: 0, stun: 0, garbage: 0 };
  onStun: StunHandler = () => undefined;
  private started = false;
  private deviceHandler?: (data: Uint8Array, from: Endpoint) => void;
  /**
   * WireGuard datagrams that arrive after STUN checks have opened a path but before the device is up: a
   * lost first handshake initiation costs a RekeyTimeout (5 s), so hold a few.
   */
  private early: { data: Uint8Array; from: Endpoint }[] = [];

  constructor(readonly inner: Bind) {}

  get port(): number {
    return this.inner.port;
  }

  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    this.deviceHandler = onDatagram;
    const early = this.early;
    this.early = [];
    for (const e of early) onDatagram(e.data, e.from);
    if (this.started) return;
    this.started = true;
    this.inner.start((data, from) => this.dispatch(data, from));
  }

  /** Start receiving STUN before the device is up (discovery can run first). */
  startStunOnly(): void {
    if (this.started) return;
    this.started = true;
    this.inner.start((data, from) => this.dispatch(data, from));
  }

  /** @internal exposed for tests and the path bind. */
  dispatch(data: Uint8Array, from: Endpoint): void {
    switch (classify(data)) {
      case PacketKind.WireGuard:
        this.stats.wireguard++;
        if (this.deviceHandler) this.deviceHandler(data, from);
        else if (this.early.length < EarlyQueueSize) this.early.push({ data: Uint8Array.from(data), from });
        return;
      case PacketKind.Stun:
        this.stats.stun++;
        this.onStun(data, from);
        return;
      default:
        this.stats.garbage++;
    }
  }

  send(data: Uint8Array, to: Endpoint): void {
    this.inner.send(data, to);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
