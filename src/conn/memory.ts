/**
 * In-memory UDP network for tests (wireguard-go's bindtest). Datagrams are queued and delivered by
 * flush() (deterministic, no reentrancy) or, with `auto`, on the next macrotask. Each delivery gets a
 * fresh copy, as a real socket would, since the receiver may decrypt in place.
 */
import type { Bind, Endpoint, UdpEndpoint } from './bind.js';
import { endpointKey } from './bind.js';

/** A datagram on the memory network: UDP only (virtual paths belong to the PathBind's links). */
interface Datagram {
  data: Uint8Array;
  from: UdpEndpoint;
  to: UdpEndpoint;
}

export class MemoryNetwork {
  private readonly binds = new Map<string, MemoryBind>();
  private queue: Datagram[] = [];
  private scheduled = false;
  /** Every datagram sent, for tests that capture and replay. */
  readonly log: Datagram[] = [];
  /** Return false to drop a datagram in flight. */
  filter: (d: Datagram) => boolean = () => true;

  constructor(private readonly opts: { auto?: boolean } = {}) {}

  bind(address: string, port: number): MemoryBind {
    const b = new MemoryBind(this, { address, port });
    this.binds.set(endpointKey(b.local), b);
    return b;
  }

  /** @internal */
  unbind(b: MemoryBind): void {
    this.binds.delete(endpointKey(b.local));
  }

  /** Queue a datagram, as if `from` sent it to `to` (tests use this to inject hostile input). */
  send(data: Uint8Array, from: UdpEndpoint, to: Endpoint): void {
    if (to.kind === 'virtual') return; // no such path on a UDP network
    const d = { data: Uint8Array.from(data), from: { ...from }, to: { ...to } };
    this.log.push(d);
    this.queue.push(d);
    if (this.opts.auto && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
  }

  /** Deliver queued datagrams, including those sent while delivering, until quiet. Returns how many. */
  flush(max = 100_000): number {
    let n = 0;
    while (this.queue.length > 0 && n < max) {
      const d = this.queue.shift()!;
      if (!this.filter(d)) continue;
      const b = this.binds.get(endpointKey(d.to));
      b?.deliver(Uint8Array.from(d.data), d.from);
      n++;
    }
    return n;
  }

  pending(): number {
    return this.queue.length;
  }
}

export class MemoryBind implements Bind {
  /** MemoryNetwork.send queues a copy. */
  readonly sendCopies = true;
  private handler?: (data: Uint8Array, from: Endpoint) => void;
  private closed = false;

  constructor(
    private readonly net: MemoryNetwork,
    readonly local: UdpEndpoint,
  ) {}

  get port(): number {
    return this.local.port;
  }

  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    this.handler = onDatagram;
  }

  /** Virtual endpoints are not on this network: dropped. */
  send(data: Uint8Array, to: Endpoint): void {
    if (!this.closed) this.net.send(data, this.local, to);
  }

  /** @internal */
  deliver(data: Uint8Array, from: Endpoint): void {
    if (!this.closed) this.handler?.(data, from);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.net.unbind(this);
  }
}
