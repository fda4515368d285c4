/**
 * Endpoint discovery: local (host) candidates from the interfaces, server-reflexive ones from STUN
 * Binding requests sent from the WireGuard socket itself (through the PathBind), so the mapping found is
 * the one WireGuard's packets get.
 */
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { sameEndpoint, type Endpoint } from '../conn/bind.js';
import { decodeStun, encodeStun, mappedAddress, StunClass, transactionKey, type StunMessage } from './stun.js';

export const CandidateType = { Host: 'host', ServerReflexive: 'srflx', PeerReflexive: 'prflx', Relay: 'relay' } as const;
export type CandidateType = (typeof CandidateType)[keyof typeof CandidateType];

export interface Candidate {
  type: CandidateType;
  address: string;
  port: number;
}

/** Host candidates: every non-internal address (IPv4 and global/ULA IPv6; link-local needs a scope). */
export function hostCandidates(port: number, ifaces = networkInterfaces()): Candidate[] {
  const out: Candidate[] = [];
  for (const list of Object.values(ifaces)) {
    for (const a of list ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv6' && /^fe80:/i.test(a.address)) continue;
      out.push({ type: CandidateType.Host, address: a.address, port });
    }
  }
  return out;
}

/** "host:port", "[v6]:port" or "stun:host:port" into an Endpoint (default port 3478). Literal IPs only. */
export function parseServer(s: string): Endpoint {
  let t = s.replace(/^(stun|turn)s?:/, '');
  t = t.replace(/\?.*$/, '');
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) return { address: v6[1], port: v6[2] ? Number(v6[2]) : 3478 };
  const i = t.lastIndexOf(':');
  if (i > 0 && !t.slice(0, i).includes(':')) return { address: t.slice(0, i), port: Number(t.slice(i + 1)) };
  return { address: t, port: 3478 };
}

interface Pending {
  server: Endpoint;
  resolve: (c: Candidate | null) => void;
}

/**
 * The STUN client side of discovery. Feed it every STUN datagram (handle() says whether it was ours);
 * it sends through `send`, the PathBind's UDP socket.
 */
export class StunDiscovery {
  private readonly pending = new Map<string, Pending>();
  dropped = 0;

  constructor(private readonly send: (data: Uint8Array, to: Endpoint) => void) {}

  /** Binding request to one server with retransmits (RFC 8489 section 6.2.1, shortened); null on timeout. */
  query(server: Endpoint, opts: { timeoutMs?: number; retransmitMs?: number } = {}): Promise<Candidate | null> {
    const txid = randomBytes(12);
    const key = transactionKey(txid);
    const req = encodeStun({ class: StunClass.Request, transactionId: txid, fingerprint: true });
    return new Promise((resolve) => {
      let rto = opts.retransmitMs ?? 100;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (c: Candidate | null) => {
        if (!this.pending.delete(key)) return;
        clearTimeout(timer);
        clearTimeout(overall);
        resolve(c);
      };
      const overall = setTimeout(() => done(null), opts.timeoutMs ?? 2000);
      const again = () => {
        this.send(req, server);
        timer = setTimeout(again, rto);
        rto = Math.min(rto * 2, 1000);
      };
      this.pending.set(key, { server, resolve: done });
      again();
    });
  }

  /** Server-reflexive candidates from all servers, in parallel; duplicates removed. */
  async gather(servers: Endpoint[], opts: { timeoutMs?: number } = {}): Promise<Candidate[]> {
    const found = await Promise.all(servers.map((s) => this.query(s, opts)));
    const seen = new Set<string>();
    const out: Candidate[] = [];
    for (const c of found) {
      if (!c) continue;
      const k = `${c.address}|${c.port}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(c);
    }
    return out;
  }

  /** A decoded STUN message: true when it answered one of our queries. */
  handle(msg: StunMessage, from: Endpoint): boolean {
    if (msg.class !== StunClass.SuccessResponse && msg.class !== StunClass.ErrorResponse) return false;
    const p = this.pending.get(transactionKey(msg.transactionId));
    if (!p) return false;
    // A response must come from the server we asked (anyone could guess nothing, but check anyway).
    if (!sameEndpoint(p.server, from)) {
      this.dropped++;
      return true;
    }
    const mapped = msg.class === StunClass.SuccessResponse ? mappedAddress(msg) : undefined;
    p.resolve(mapped ? { type: CandidateType.ServerReflexive, address: mapped.address, port: mapped.port } : null);
    return true;
  }

  /** Convenience for raw datagrams. */
  handleRaw(data: Uint8Array, from: Endpoint): boolean {
    const m = decodeStun(data);
    if (typeof m === 'string') {
      this.dropped++;
      return false;
    }
    return this.handle(m, from);
  }

  close(): void {
    for (const p of [...this.pending.values()]) p.resolve(null);
  }
}
