/**
 * The relay client: one TCP connection to the relay, reconnecting with backoff when it drops (a NAT
 * rebinding kills it: the relay answers the new mapping's segments with a reset).
 */
import net from 'node:net';
import { Backoff, type Timers } from '../backoff.js';
import { PathWiringError, type LinkDataHandler, type VirtualLink } from './path-bind.js';
import { encodeFrame, FrameDecoder, FrameType } from './relay-frame.js';

export interface RelayClientOptions {
  url: string; // tcp://host:port
  selfId: string;
  /** This peer's relay credential: relayCredential(relay secret, selfId), issued by the relay's operator. */
  token?: string;
  /** Reconnect delay bounds in ms (default 100 and 2000; jittered, see src/backoff.ts). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Where reconnects are scheduled (default Node's timers); tests inject a manual twin. */
  timers?: Timers;
}

export function parseRelayUrl(url: string): { host: string; port: number } {
  const m = /^(?:tcp:\/\/)?(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(url);
  if (!m) throw new RangeError(`relay URL must look like tcp://host:port, got "${url}"`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/** A VirtualLink over the relay: datagrams to and from peers by id; received ones are dropped until attach(). */
export class RelayClient implements VirtualLink {
  stats = { connects: 0, sent: 0, received: 0, droppedWhileDown: 0 };
  private sock?: net.Socket;
  private connected = false;
  private closed = false;
  private readonly backoff: Backoff;
  private cancelReconnect?: () => void;
  private readonly target: { host: string; port: number };
  private readonly waiters: (() => void)[] = [];
  private onData?: LinkDataHandler;

  constructor(private readonly opts: RelayClientOptions) {
    this.target = parseRelayUrl(opts.url);
    const initialMs = opts.minBackoffMs ?? 100;
    this.backoff = new Backoff({ initialMs, maxMs: Math.max(initialMs, opts.maxBackoffMs ?? 2000), timers: opts.timers });
  }

  /** Where received datagrams go (fromId, payload). Once: a second attach throws PathWiringError (ENAT_WIRING). */
  attach(onData: LinkDataHandler): void {
    if (this.onData) throw new PathWiringError('the relay client already delivers its datagrams; attach one handler, once');
    this.onData = onData;
  }

  get isConnected(): boolean {
    return this.connected;
  }

  start(): void {
    this.connect();
  }

  /** Resolves once connected (or immediately if already). */
  ready(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }

  private connect(): void {
    if (this.closed) return;
    const s = net.connect({ host: this.target.host, port: this.target.port });
    this.sock = s;
    s.setNoDelay(true);
    const decoder = new FrameDecoder();
    s.on('connect', () => {
      s.write(encodeFrame(FrameType.Hello, this.opts.selfId, new TextEncoder().encode(this.opts.token ?? '')));
      this.connected = true;
      this.stats.connects++;
      this.backoff.reset();
      for (const w of this.waiters.splice(0)) w();
    });
    s.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) {
        if (f.type !== FrameType.Data) continue;
        this.stats.received++;
        this.onData?.(f.id, f.payload);
      }
      if (decoder.error) s.destroy();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (this.sock !== s) return;
      this.connected = false;
      this.sock = undefined;
      if (this.closed) return;
      this.cancelReconnect = this.backoff.schedule(() => this.connect());
    });
  }

  send(toId: string, payload: Uint8Array): void {
    if (!this.connected || !this.sock) {
      this.stats.droppedWhileDown++;
      return;
    }
    this.stats.sent++;
    this.sock.write(encodeFrame(FrameType.Data, toId, payload));
  }

  /** Drop the connection now and reconnect (used when the path looks dead). */
  kick(): void {
    this.sock?.destroy();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cancelReconnect?.();
    this.sock?.destroy();
    this.connected = false;
  }
}
