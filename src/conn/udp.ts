/**
 * The Node dgram Bind: one IPv4 and one IPv6 socket on the same port (the IPv6 one is optional, for hosts
 * or namespaces without IPv6). Send errors (unreachable, no route) are counted, never thrown: a peer's
 * network trouble is not the caller's exception.
 */
import dgram from 'node:dgram';
import type { Bind, Endpoint } from './bind.js';

export interface UdpBindOptions {
  /** 0 = any free port. */
  port?: number;
  host4?: string;
  host6?: string;
  /** Socket buffer sizes in bytes (default 4 MiB), for throughput. */
  bufferSize?: number;
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

export class UdpBind implements Bind {
  sendErrors = 0;
  private closed = false;

  private constructor(
    private readonly v4: dgram.Socket,
    private readonly v6: dgram.Socket | undefined,
    readonly port: number,
  ) {}

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
      return new UdpBind(v4, v6, port);
    }
  }

  get hasIPv6(): boolean {
    return this.v6 !== undefined;
  }

  start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
    const handler = (msg: Buffer, rinfo: dgram.RemoteInfo) => {
      // Strip an IPv4-mapped prefix so one peer has one endpoint spelling.
      const address = rinfo.address.startsWith('::ffff:') && rinfo.address.includes('.') ? rinfo.address.slice(7) : rinfo.address;
      onDatagram(msg, { address, port: rinfo.port });
    };
    this.v4.on('message', handler);
    this.v6?.on('message', handler);
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
    const s = to.address.includes(':') ? this.v6 : this.v4;
    if (!s) {
      this.sendErrors++;
      return;
    }
    // No per-packet callback (it costs a closure and a request wrap per datagram); failures arrive as
    // 'error' events, counted in start().
    try {
      s.send(data, to.port, to.address);
    } catch {
      // Synchronous refusals (port 0 from a spoofed source, malformed address): count, never throw.
      this.sendErrors++;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      [this.v4, this.v6].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : Promise.resolve())),
    );
  }
}
