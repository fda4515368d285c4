/**
 * The UDP seam of the WireGuard device, shaped like wireguard-go's conn.Bind. Implementations: the
 * Node dgram socket (src/conn/udp.ts) and an in-memory network for tests.
 */
/**
 * Where a datagram came from or goes to: a UDP address and port, or a virtual path to a peer (the TCP
 * relay, an ICE or TURN data channel; src/nat/path-bind.ts). Tell them apart by `kind`, never by the text.
 */
export type Endpoint = UdpEndpoint | VirtualEndpoint;

/**
 * A UDP endpoint. `address` is IPv4 dotted or IPv6 text (no brackets), `port` 1..65535. `kind` may be left
 * out: an endpoint without one is UDP (peer configuration and enrollment answers build them that way).
 */
export interface UdpEndpoint {
  readonly kind?: 'udp';
  readonly address: string;
  readonly port: number;
}

/** A virtual path: `scheme` names the link ("relay", "ice", "turn"), `peerId` the peer on it. */
export interface VirtualEndpoint {
  readonly kind: 'virtual';
  readonly scheme: string;
  readonly peerId: string;
}

export function isVirtual(ep: Endpoint): ep is VirtualEndpoint {
  return ep.kind === 'virtual';
}

/** Equal endpoints: same kind and same address and port, or same scheme and peer. */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  if (a.kind === 'virtual' || b.kind === 'virtual') {
    return a.kind === 'virtual' && b.kind === 'virtual' && a.scheme === b.scheme && a.peerId === b.peerId;
  }
  return a.address === b.address && a.port === b.port;
}

/**
 * The source an endpoint stands for, for per-source limits and cookies: the IP address of a UDP endpoint
 * (any port), "<scheme>:<peerId>" of a virtual one.
 */
export function sourceOf(ep: Endpoint): string {
  return ep.kind === 'virtual' ? `${ep.scheme}:${ep.peerId}` : ep.address;
}

export interface Bind {
  /** The local port actually bound (useful when 0 was asked for). */
  readonly port: number;
  /** Begin delivering received datagrams. */
  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void;
  /**
   * Send one datagram. Never throws for a network failure (counted by the bind). See `sendCopies` for
   * whether the caller may reuse `data` once this returns.
   */
  send(data: Uint8Array, to: Endpoint): void;
  /**
   * True when send() is finished with `data` when it returns (it copied the bytes or wrote them out), so
   * the caller may overwrite the buffer at once: the device then seals every transport message into one
   * reused buffer instead of allocating one per packet. Absent or false: send() may keep `data`, which the
   * caller must then never touch again.
   */
  readonly sendCopies?: boolean;
  close(): Promise<void>;
}

/** Text form: "192.0.2.1:51820", "[2001:db8::1]:51820", or "relay:alice" for a virtual path. */
export function endpointKey(ep: Endpoint): string {
  if (ep.kind === 'virtual') return `${ep.scheme}:${ep.peerId}`;
  return ep.address.includes(':') ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}
