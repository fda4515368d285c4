/**
 * A small datagram relay over TCP, the fallback path when no UDP path works (both sides behind
 * symmetric NATs, or UDP blocked). Clients say Hello with their peer id; Data frames addressed to a
 * connected id are forwarded with the sender's id in place of the destination. WireGuard authenticates
 * what rides inside, so the relay only learns who talks to whom and how much.
 */
import net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { encodeFrame, FrameDecoder, FrameType } from './relay-frame.js';

export interface RelayServerOptions {
  host?: string;
  port?: number;
  /** When set, a Hello must carry this token. */
  token?: string;
}

export interface RelayServerStats {
  connections: number;
  forwarded: number;
  /** Data for an id that is not connected. */
  unknownDestination: number;
  /** Data before Hello, bad token, broken framing. */
  rejected: number;
}

export class RelayServer {
  readonly stats: RelayServerStats = { connections: 0, forwarded: 0, unknownDestination: 0, rejected: 0 };
  private readonly clients = new Map<string, net.Socket>();
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    private readonly token: Uint8Array | undefined,
  ) {}

  static async listen(opts: RelayServerOptions = {}): Promise<RelayServer> {
    const server = net.createServer();
    const rs = new RelayServer(server, opts.token ? new TextEncoder().encode(opts.token) : undefined);
    server.on('connection', (s) => rs.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return rs;
  }

  get address(): { host: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  get url(): string {
    const { host, port } = this.address;
    return host.includes(':') ? `tcp://[${host}]:${port}` : `tcp://${host}:${port}`;
  }

  private accept(s: net.Socket): void {
    this.sockets.add(s);
    this.stats.connections++;
    s.setNoDelay(true);
    const decoder = new FrameDecoder();
    let id: string | undefined;
    const reject = () => {
      this.stats.rejected++;
      s.destroy();
    };
    s.on('data', (chunk: Buffer) => {
      const frames = decoder.push(chunk);
      for (const f of frames) {
        if (f.type === FrameType.Hello) {
          if (this.token && !(f.payload.length === this.token.length && timingSafeEqual(f.payload, this.token))) return reject();
          if (id !== undefined && this.clients.get(id) === s) this.clients.delete(id);
          id = f.id;
          // A reconnecting client (new NAT mapping) replaces its old, probably dead, connection.
          const old = this.clients.get(id);
          if (old && old !== s) old.destroy();
          this.clients.set(id, s);
          continue;
        }
        if (id === undefined) return reject();
        const dst = this.clients.get(f.id);
        if (!dst) {
          this.stats.unknownDestination++;
          continue;
        }
        this.stats.forwarded++;
        dst.write(encodeFrame(FrameType.Data, id, f.payload));
      }
      if (decoder.error) reject();
    });
    const gone = () => {
      this.sockets.delete(s);
      if (id !== undefined && this.clients.get(id) === s) this.clients.delete(id);
    };
    s.on('close', gone);
    s.on('error', () => undefined);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
