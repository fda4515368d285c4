/**
 * ICE through node-datachannel (libdatachannel/libjuice): a WebRTC data channel per peer, unordered with
 * no retransmissions (datagram semantics, as WireGuard wants), carrying WireGuard packets and our STUN
 * connectivity checks. A VirtualLink under the "ice" scheme of the PathBind.
 *
 * Roles avoid glare: the peer whose id sorts first offers; the other asks for an offer when it starts
 * (the offerer may have sent one before the answerer was listening) and answers. A failed or closed
 * connection is rebuilt by the offerer after a backoff. With a TURN server in iceServers, libjuice also
 * gathers relay candidates, so this path can be a TURN relay (coturn) when no UDP path works.
 */
import type { DataChannel, IceServer, PeerConnection } from 'node-datachannel';
import { createRequire } from 'node:module';
import { Backoff, systemTimers, type Timers } from '../backoff.js';
import { PathWiringError, type LinkDataHandler, type VirtualLink } from './path-bind.js';

export type IceSignal =
  | { t: 'sdp'; type: 'offer' | 'answer'; sdp: string; gen: number }
  | { t: 'cand'; candidate: string; mid: string; gen: number }
  | { t: 'request-offer' };

export function validIceSignal(x: unknown): x is IceSignal {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  if (m.t === 'request-offer') return true;
  if (!Number.isInteger(m.gen)) return false;
  if (m.t === 'sdp') return (m.type === 'offer' || m.type === 'answer') && typeof m.sdp === 'string' && m.sdp.length < 16_384;
  if (m.t === 'cand') return typeof m.candidate === 'string' && m.candidate.length < 1024 && typeof m.mid === 'string' && m.mid.length < 64;
  return false;
}

export interface IceLinkOptions {
  selfId: string;
  /** "stun:host:port", or { hostname, port, username, password, relayType: "TurnUdp" } for TURN. */
  iceServers: (string | IceServer)[];
  /** "relay" = only TURN relay candidates. */
  transportPolicy?: 'all' | 'relay';
  signal: (peerId: string, msg: IceSignal) => void;
  onOpen?: (peerId: string) => void;
  onClose?: (peerId: string) => void;
  /** First rebuild delay after a failure, in ms (default 2000); later ones grow, jittered, up to maxRetryMs. */
  retryMs?: number;
  /** Ceiling of the rebuild delay, in ms (default 8 x retryMs). */
  maxRetryMs?: number;
  /** Where rebuilds are scheduled (default Node's timers, unref'd); tests inject a manual twin. */
  timers?: Timers;
}

interface IcePeer {
  pc?: PeerConnection;
  dc?: DataChannel;
  open: boolean;
  gen: number;
  /** Cancels the pending rebuild, when one is scheduled. */
  retry?: () => void;
  readonly backoff: Backoff;
  openedAt?: number;
}

type NodeDataChannel = typeof import('node-datachannel');
let ndc: NodeDataChannel | undefined;
function lib(): NodeDataChannel {
  // Loaded on first use: the native module is only needed when ICE is configured.
  ndc ??= createRequire(import.meta.url)('node-datachannel') as NodeDataChannel;
  return ndc;
}

export class IceLink implements VirtualLink {
  readonly stats = { sent: 0, received: 0, droppedNotOpen: 0, rebuilds: 0, badSignals: 0 };
  private readonly peers = new Map<string, IcePeer>();
  private closed = false;
  private onData?: LinkDataHandler;

  constructor(private readonly o: IceLinkOptions) {}

  /** Where received datagrams go (peerId, data). Once: a second attach throws PathWiringError (ENAT_WIRING). */
  attach(onData: LinkDataHandler): void {
    if (this.onData) throw new PathWiringError('the ICE link already delivers its datagrams; attach one handler, once');
    this.onData = onData;
  }

  private offerer(peerId: string): boolean {
    return this.o.selfId < peerId;
  }

  /** Start connecting to a peer. */
  connect(peerId: string): void {
    if (this.peers.has(peerId) || this.closed) return;
    const initialMs = this.o.retryMs ?? 2_000;
    const backoff = new Backoff({ initialMs, maxMs: Math.max(initialMs, this.o.maxRetryMs ?? initialMs * 8), timers: this.o.timers ?? systemTimers({ unref: true }) });
    const p: IcePeer = { open: false, gen: 0, backoff };
    this.peers.set(peerId, p);
    if (this.offerer(peerId)) this.build(peerId, p, Date.now());
    else this.o.signal(peerId, { t: 'request-offer' });
  }

  isOpen(peerId: string): boolean {
    return this.peers.get(peerId)?.open ?? false;
  }

  /** Candidate types of the selected pair ("host", "srflx", "prflx", "relay"), when open. */
  selectedTypes(peerId: string): { local: string; remote: string } | undefined {
    const pc = this.peers.get(peerId)?.pc;
    try {
      const s = pc?.getSelectedCandidatePair();
      return s ? { local: s.local.type, remote: s.remote.type } : undefined;
    } catch {
      return undefined;
    }
  }

  private teardown(p: IcePeer): void {
    const { pc, dc } = p;
    p.pc = undefined;
    p.dc = undefined;
    p.open = false;
    try {
      dc?.close();
    } catch {
      // already closed
    }
    try {
      pc?.close();
    } catch {
      // already closed
    }
  }

  private build(peerId: string, p: IcePeer, gen: number): PeerConnection {
    this.teardown(p);
    p.gen = gen;
    const { PeerConnection } = lib();
    const pc = new PeerConnection(`lattice-${this.o.selfId}-${peerId}`, {
      iceServers: this.o.iceServers,
      iceTransportPolicy: this.o.transportPolicy ?? 'all',
    });
    p.pc = pc;
    pc.onLocalDescription((sdp, type) => {
      if (p.pc !== pc) return;
      if (type === 'offer' || type === 'answer') this.o.signal(peerId, { t: 'sdp', type, sdp, gen });
    });
    pc.onLocalCandidate((candidate, mid) => {
      if (p.pc === pc) this.o.signal(peerId, { t: 'cand', candidate, mid, gen });
    });
    pc.onStateChange((state) => {
      if (p.pc !== pc) return;
      if (state === 'failed' || state === 'closed' || state === 'disconnected') this.lost(peerId, p);
    });
    const attach = (dc: DataChannel) => {
      p.dc = dc;
      dc.onOpen(() => {
        if (p.pc !== pc) return;
        p.open = true;
        p.backoff.reset();
        p.openedAt = Date.now();
        this.o.onOpen?.(peerId);
      });
      dc.onClosed(() => {
        if (p.pc === pc) this.lost(peerId, p);
      });
      dc.onError(() => undefined);
      dc.onMessage((msg) => {
        if (typeof msg === 'string') return;
        this.stats.received++;
        const u = msg instanceof ArrayBuffer ? new Uint8Array(msg) : new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
        this.onData?.(peerId, Uint8Array.from(u));
      });
    };
    if (this.offerer(peerId)) attach(pc.createDataChannel('wireguard', { unordered: true, maxRetransmits: 0 }));
    else pc.onDataChannel(attach);
    return pc;
  }

  private lost(peerId: string, p: IcePeer): void {
    const wasOpen = p.open;
    this.teardown(p);
    if (wasOpen) this.o.onClose?.(peerId);
    if (this.closed || p.retry) return;
    p.retry = p.backoff.schedule(() => {
      p.retry = undefined;
      if (this.closed || p.pc) return;
      this.stats.rebuilds++;
      if (this.offerer(peerId)) this.build(peerId, p, Date.now());
      else this.o.signal(peerId, { t: 'request-offer' });
    });
  }

  handleSignal(peerId: string, m: IceSignal): void {
    const p = this.peers.get(peerId);
    if (!p || this.closed) {
      this.stats.badSignals++;
      return;
    }
    try {
      if (m.t === 'request-offer') {
        if (this.offerer(peerId)) this.build(peerId, p, Date.now());
        return;
      }
      if (m.t === 'sdp') {
        if (m.type === 'offer' && !this.offerer(peerId)) {
          // A new offer (first, or the offerer rebuilt): start over with its generation.
          const pc = this.build(peerId, p, m.gen);
          pc.setRemoteDescription(m.sdp, 'offer');
        } else if (m.type === 'answer' && this.offerer(peerId) && m.gen === p.gen && p.pc) {
          p.pc.setRemoteDescription(m.sdp, 'answer');
        } else {
          this.stats.badSignals++;
        }
        return;
      }
      if (m.gen !== p.gen || !p.pc) {
        this.stats.badSignals++;
        return;
      }
      p.pc.addRemoteCandidate(m.candidate, m.mid);
    } catch {
      // libdatachannel rejects malformed SDP or candidates by throwing: the peer's garbage, counted.
      this.stats.badSignals++;
    }
  }

  send(peerId: string, data: Uint8Array): void {
    const p = this.peers.get(peerId);
    if (!p?.open || !p.dc) {
      this.stats.droppedNotOpen++;
      return;
    }
    try {
      p.dc.sendMessageBinary(data);
      this.stats.sent++;
    } catch {
      this.stats.droppedNotOpen++;
    }
  }

  remove(peerId: string): void {
    const p = this.peers.get(peerId);
    if (!p) return;
    p.retry?.();
    this.teardown(p);
    this.peers.delete(peerId);
  }

  close(): void {
    this.closed = true;
    for (const id of [...this.peers.keys()]) this.remove(id);
  }
}

/** Parse "stun:host:port" and "turn:user:pass@host:port" into node-datachannel's ice server form. */
export function iceServerFromUrl(url: string): string | IceServer {
  const turn = /^turn:(?:([^:@]+):([^@]+)@)?([^:]+):(\d+)(?:\?transport=(udp|tcp))?$/.exec(url);
  if (turn) {
    return {
      hostname: turn[3],
      port: Number(turn[4]),
      username: turn[1] ? decodeURIComponent(turn[1]) : undefined,
      password: turn[2] ? decodeURIComponent(turn[2]) : undefined,
      relayType: turn[5] === 'tcp' ? 'TurnTcp' : 'TurnUdp',
    };
  }
  return url;
}
