/**
 * The Bind the device sees: the UDP MuxBind plus virtual links (the TCP relay, ICE data channels).
 * A virtual path has an endpoint the device treats as opaque: { address: "<scheme>:<peerId>", port: 0 },
 * e.g. "relay:alice". The device's roaming (endpoint := source of the last authenticated packet) then
 * moves a peer between direct and virtual paths with no change to the device.
 *
 * Every path carries the same two protocols, told apart by classify(): WireGuard to the device, STUN
 * (connectivity checks) to onStun.
 */
import type { Bind, Endpoint } from '../conn/bind.js';
import { classify, PacketKind, type MuxBind, type StunHandler } from './mux-bind.js';

export const PathKind = { Direct: 'direct', Ice: 'ice', Relay: 'relay' } as const;
export type PathKind = (typeof PathKind)[keyof typeof PathKind];

/** A virtual datagram link to peers by id (relay client, ICE data channels). */
export interface VirtualLink {
  send(peerId: string, data: Uint8Array): void;
  /** The path bind installs itself here. */
  onData: (peerId: string, data: Uint8Array) => void;
}

/**
 * Virtual link schemes: "ice" (ICE data channel, any candidates), "turn" (ICE data channel restricted to
 * TURN relay candidates), "relay" (our TCP relay). The scheme is the endpoint's address prefix.
 */
export const LinkScheme = { Ice: 'ice', Turn: 'turn', Relay: 'relay' } as const;
export type LinkScheme = (typeof LinkScheme)[keyof typeof LinkScheme];

export function virtualEndpoint(scheme: LinkScheme, peerId: string): Endpoint {
  return { address: `${scheme}:${peerId}`, port: 0 };
}

/** The kind of path an endpoint names, its scheme and the peer id for virtual ones. */
export function endpointPath(ep: Endpoint): { kind: PathKind; scheme?: LinkScheme; peerId?: string } {
  const a = ep.address;
  if (ep.port === 0) {
    if (a.startsWith('relay:')) return { kind: PathKind.Relay, scheme: LinkScheme.Relay, peerId: a.slice(6) };
    if (a.startsWith('turn:')) return { kind: PathKind.Relay, scheme: LinkScheme.Turn, peerId: a.slice(5) };
    if (a.startsWith('ice:')) return { kind: PathKind.Ice, scheme: LinkScheme.Ice, peerId: a.slice(4) };
  }
  return { kind: PathKind.Direct };
}

export class PathBind implements Bind {
  readonly stats = { virtualIn: 0, virtualOut: 0, virtualGarbage: 0, noLink: 0 };
  onStun: StunHandler = () => undefined;
  private readonly links = new Map<string, VirtualLink>();
  private deviceHandler?: (data: Uint8Array, from: Endpoint) => void;
  private early: { data: Uint8Array; from: Endpoint }[] = [];

  constructor(readonly udp: MuxBind) {
    udp.onStun = (d, f) => this.onStun(d, f);
  }

  get port(): number {
    return this.udp.port;
  }

  /** Attach a virtual link under a scheme ("relay", "ice"). */
  addLink(kind: LinkScheme, link: VirtualLink): void {
    this.links.set(kind, link);
    link.onData = (peerId, data) => this.receiveVirtual(kind, peerId, data);
  }

  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    this.deviceHandler = onDatagram;
    this.udp.start(onDatagram);
    const early = this.early;
    this.early = [];
    for (const e of early) onDatagram(e.data, e.from);
  }

  /** Receive STUN (and drop WireGuard) before the device is up. */
  startStunOnly(): void {
    this.udp.startStunOnly();
  }

  private receiveVirtual(kind: string, peerId: string, data: Uint8Array): void {
    const from = { address: `${kind}:${peerId}`, port: 0 };
    switch (classify(data)) {
      case PacketKind.WireGuard:
        this.stats.virtualIn++;
        // Before the device is up, hold a few (see MuxBind.early).
        if (this.deviceHandler) this.deviceHandler(data, from);
        else if (this.early.length < 16) this.early.push({ data: Uint8Array.from(data), from });
        return;
      case PacketKind.Stun:
        this.onStun(data, from);
        return;
      default:
        this.stats.virtualGarbage++;
    }
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (to.port !== 0 || !to.address.includes(':') || /^[0-9a-fA-F:.]+$/.test(to.address)) {
      this.udp.send(data, to);
      return;
    }
    const i = to.address.indexOf(':');
    const link = this.links.get(to.address.slice(0, i));
    if (!link) {
      this.stats.noLink++;
      return;
    }
    this.stats.virtualOut++;
    link.send(to.address.slice(i + 1), data);
  }

  async close(): Promise<void> {
    await this.udp.close();
  }
}
