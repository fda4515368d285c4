/**
 * The UDP seam of the WireGuard device, shaped like wireguard-go's conn.Bind. Implementations: the
 * Node dgram socket (src/conn/udp.ts) and an in-memory network for tests.
 */
export interface Endpoint {
  readonly address: string; // IPv4 dotted or IPv6 text, no brackets
  readonly port: number;
}

export interface Bind {
  /** The local port actually bound (useful when 0 was asked for). */
  readonly port: number;
  /** Begin delivering received datagrams. */
  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void;
  send(data: Uint8Array, to: Endpoint): void;
  close(): Promise<void>;
}

export function endpointKey(ep: Endpoint): string {
  return ep.address.includes(':') ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}
