/**
 * A small datagram relay over TCP, the fallback path when no UDP path works (both sides behind
 * symmetric NATs, or UDP blocked). Clients say Hello with their peer id and that id's credential
 * (relay-credential.ts: an HMAC of the id under the relay's secret); Data frames addressed to a
 * connected id are forwarded with the sender's id in place of the destination. WireGuard authenticates
 * what rides inside, so the relay only learns who talks to whom and how much.
 *
 * Binding (issue #12): a Hello whose credential is not the one for the id it claims is refused: the
 * connection is closed, `stats.refusedClaims` counts it, and `onEvent` reports a `claim_refused` event
 * (the id claimed, whether that id was connected, the remote address) for the operator's audit log. The
 * connected holder of the id keeps its connection. Before a valid Hello nothing is forwarded.
 */
import net from 'node:net';
import { encodeFrame, FrameDecoder, FrameType } from './relay-frame.js';
import { verifyRelayCredential } from './relay-credential.js';

export interface RelayServerOptions {
  host?: string;
  port?: number;
  /** The relay secret (decodeRelaySecret); a Hello must carry relayCredential(secret, its id). */
  secret: Uint8Array;
  /** Audit hook: called once per refused claim. Must not throw. */
  onEvent?: (e: RelayEvent) => void;
}

/** What the relay reports for audit: a Hello refused because its credential is not the claimed id's. */
export interface RelayEvent {
  kind: 'claim_refused';
  /** The peer id the Hello claimed (as sent, at most 255 bytes). */
  claimedId: string;
  /** True when another connection currently holds that id (an attempt to take over a live peer). */
  taken: boolean;
  /** "ip:port" of the refused connection. */
  remote: string;
}

export interface RelayServerStats {
  connections: number;
  forwarded: number;
  /** Data for an id that is not connected. */
  unknownDestination: number;
  /** Connections closed: Data before Hello, a refused claim, broken framing. */
  rejected: number;
  /** Hellos whose credential is not the claimed id's (each also in `rejected`). */
  refusedClaims: number;
}

export class RelayServer {
  readonly stats: RelayServerStats = { connections: 0, forwarded: 0, unknownDestination: 0, rejected: 0, refusedClaims: 0 };
  private readonly clients = new Map<string, net.Socket>();
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    private readonly secret: Uint8Array,
    private readonly onEvent: (e: RelayEvent) => void,
  ) {}

  static async listen(opts: RelayServerOptions): Promise<RelayServer> {
    const server = net.createServer();
    const rs = new RelayServer(server, opts.secret, opts.onEvent ?? (() => undefined));
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
          if (!verifyRelayCredential(this.secret, f.id, f.payload)) {
            this.stats.refusedClaims++;
            const held = this.clients.get(f.id);
            this.onEvent({ kind: 'claim_refused', claimedId: f.id, taken: held !== undefined && held !== s, remote: `${s.remoteAddress}:${s.remotePort}` });
            return reject();
          }
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
