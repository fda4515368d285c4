/**
 * The one Bind the device sees when NAT traversal is on: the UDP socket plus virtual links (the TCP relay,
 * ICE data channels), each carrying two protocols told apart by their first bytes (the seed's
 * FilteringUDPMux), so the server-reflexive address STUN discovers is the WireGuard socket's own mapping:
 *
 *   UDP datagram ----------------+
 *   virtual link (peerId, data) -+-> classify() -> WireGuard: the device (held in one early queue until up)
 *                                               -> STUN:      the STUN handler (discovery, connectivity checks)
 *                                               -> other:     dropped and counted
 *   device send(to) -> a UDP endpoint: the socket;  a virtual endpoint: its scheme's link (none: counted)
 *
 *   STUN:       top two bits 0, length % 4 == 0, magic cookie 0x2112A442 at offset 4 (RFC 8489 section 5)
 *   WireGuard:  type 1..4 followed by three zero bytes (the reserved field)
 *
 * The two cannot collide on anything we accept: a STUN Binding message has a non-zero type low byte
 * (0x01, 0x11, ...) at offset 1, where WireGuard has a reserved zero. WireGuard is tested first since it
 * is the hot path.
 *
 * A virtual path has an endpoint the device treats as opaque: { kind: "virtual", scheme, peerId }, e.g. the
 * relay's { kind: "virtual", scheme: "relay", peerId: "alice" } ("relay:alice" in status). The device's roaming (endpoint := source of the last authenticated packet) then
 * moves a peer between direct and virtual paths with no change to the device.
 *
 * Collaborators are given once: the UDP Bind in the constructor; the device's handler by start(), the STUN
 * handler by attachStun() and each scheme's link by addLink(). Giving one twice throws PathWiringError.
 */
import type { Bind, Endpoint, VirtualEndpoint } from '../conn/bind.js';
import { LatticeError } from '../errors.js';

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

export type StunHandler = (data: Uint8Array, from: Endpoint) => void;
export type DatagramHandler = (data: Uint8Array, from: Endpoint) => void;

export const PathKind = { Direct: 'direct', Ice: 'ice', Relay: 'relay' } as const;
export type PathKind = (typeof PathKind)[keyof typeof PathKind];

/** Datagrams a virtual link received: the sending peer's id and the payload (one WireGuard or STUN message). */
export type LinkDataHandler = (peerId: string, data: Uint8Array) => void;

/** A virtual datagram link to peers by id (relay client, ICE data channels). */
export interface VirtualLink {
  send(peerId: string, data: Uint8Array): void;
  /** Where received datagrams go (the path bind, in addLink). Once: a second attach throws PathWiringError. */
  attach(onData: LinkDataHandler): void;
}

/**
 * Virtual link schemes: "ice" (ICE data channel, any candidates), "turn" (ICE data channel restricted to
 * TURN relay candidates), "relay" (our TCP relay). The scheme is the endpoint's address prefix.
 */
export const LinkScheme = { Ice: 'ice', Turn: 'turn', Relay: 'relay' } as const;
export type LinkScheme = (typeof LinkScheme)[keyof typeof LinkScheme];

export function virtualEndpoint(scheme: LinkScheme, peerId: string): VirtualEndpoint {
  return { kind: 'virtual', scheme, peerId };
}

/** The kind of path an endpoint names, its scheme and the peer id for virtual ones. */
export function endpointPath(ep: Endpoint): { kind: PathKind; scheme?: LinkScheme; peerId?: string } {
  if (ep.kind !== 'virtual') return { kind: PathKind.Direct };
  switch (ep.scheme) {
    case LinkScheme.Relay:
      return { kind: PathKind.Relay, scheme: LinkScheme.Relay, peerId: ep.peerId };
    case LinkScheme.Turn:
      return { kind: PathKind.Relay, scheme: LinkScheme.Turn, peerId: ep.peerId };
    case LinkScheme.Ice:
      return { kind: PathKind.Ice, scheme: LinkScheme.Ice, peerId: ep.peerId };
    default:
      return { kind: PathKind.Direct };
  }
}

/** A collaborator of the PathBind was given twice; the first would silently have lost. */
export class PathWiringError extends LatticeError {
  override readonly name = 'PathWiringError';
  constructor(msg: string) {
    super('ENAT_WIRING', msg);
  }
}

/** WireGuard datagrams held until the device is up: a lost first initiation costs a RekeyTimeout (5 s). */
const EarlyQueueSize = 16;

export interface PathBindStats {
  /** UDP datagrams by kind. */
  wireguard: number;
  stun: number;
  garbage: number;
  /** WireGuard datagrams in and out over virtual links; garbage from them; sends to a scheme with no link. */
  virtualIn: number;
  virtualOut: number;
  virtualGarbage: number;
  noLink: number;
  /** WireGuard datagrams dropped because the early queue was full before the device came up. */
  earlyOverflow: number;
}

export class PathBind implements Bind {
  readonly stats: PathBindStats = { wireguard: 0, stun: 0, garbage: 0, virtualIn: 0, virtualOut: 0, virtualGarbage: 0, noLink: 0, earlyOverflow: 0 };
  private readonly links = new Map<string, VirtualLink>();
  private receiving = false;
  private deviceHandler?: DatagramHandler;
  private stunHandler?: StunHandler;
  private early: { data: Uint8Array; from: Endpoint }[] = [];

  /** @param udp the WireGuard UDP socket; the path bind owns it from now on (receives from it, closes it). */
  constructor(readonly udp: Bind) {}

  get port(): number {
    return this.udp.port;
  }

  /**
   * Attach a virtual link under a scheme ("relay", "ice", "turn"). Throws PathWiringError if the scheme has one or
   * the link already delivers to another handler.
   */
  addLink(scheme: LinkScheme, link: VirtualLink): void {
    if (this.links.has(scheme)) throw new PathWiringError(`a "${scheme}" link is already attached; attach one link per scheme`);
    link.attach((peerId, data) => this.dispatch(data, virtualEndpoint(scheme, peerId), true));
    this.links.set(scheme, link);
  }

  /** The device's handler (Bind.start): WireGuard datagrams, the early queue first. Once. */
  start(onDatagram: DatagramHandler): void {
    if (this.deviceHandler) throw new PathWiringError('the path bind already delivers to a device; start it once');
    this.deviceHandler = onDatagram;
    const early = this.early;
    this.early = [];
    for (const e of early) onDatagram(e.data, e.from);
    this.receiveUdp();
  }

  /** The STUN handler (discovery and connectivity checks); UDP is received from now on, device up or not. Once. */
  attachStun(onStun: StunHandler): void {
    if (this.stunHandler) throw new PathWiringError('the path bind already has a STUN handler; attach one, once');
    this.stunHandler = onStun;
    this.receiveUdp();
  }

  private receiveUdp(): void {
    if (this.receiving) return;
    this.receiving = true;
    this.udp.start((data, from) => this.dispatch(data, from, false));
  }

  /** @internal one datagram from UDP or (virtual = true) a link; exposed for tests that move the socket. */
  dispatch(data: Uint8Array, from: Endpoint, virtual = false): void {
    switch (classify(data)) {
      case PacketKind.WireGuard:
        if (virtual) this.stats.virtualIn++;
        else this.stats.wireguard++;
        if (this.deviceHandler) this.deviceHandler(data, from);
        else if (this.early.length < EarlyQueueSize) this.early.push({ data: Uint8Array.from(data), from });
        else this.stats.earlyOverflow++;
        return;
      case PacketKind.Stun:
        if (!virtual) this.stats.stun++;
        this.stunHandler?.(data, from);
        return;
      default:
        if (virtual) this.stats.virtualGarbage++;
        else this.stats.garbage++;
    }
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (to.kind !== 'virtual') {
      this.udp.send(data, to);
      return;
    }
    const link = this.links.get(to.scheme);
    if (!link) {
      this.stats.noLink++;
      return;
    }
    this.stats.virtualOut++;
    link.send(to.peerId, data);
  }

  async close(): Promise<void> {
    await this.udp.close();
  }
}
