/**
 * Per-peer path manager: races every path to a peer at once and hands the device the best live one.
 *
 *   candidates (host, srflx from signalling; prflx from checks that reach us; relay:<peer>)
 *     -> one pair per remote endpoint, all checked in parallel with STUN Binding requests
 *        (ICE-style short-term credentials: USERNAME "<remote ufrag>:<local ufrag>", MESSAGE-INTEGRITY)
 *     -> a pair succeeds when an authenticated response comes back from where we sent the check
 *     -> selection: alive pairs ranked direct > ice > relay, then the current one, then lowest RTT
 *     -> setEndpoint(pair) on the device; the device's roaming does the rest
 *
 * Checks from both sides open the NAT mappings (hole punching): a check from us opens our NAT towards the
 * peer's candidate, the peer's check towards us then passes it, and answers flow both ways.
 *
 * Pure: time comes in as `now` (monotonic ms), bytes go out through `send`; the caller runs tick().
 */
import { randomBytes } from 'node:crypto';
import { endpointKey, sameEndpoint, type Endpoint } from '../conn/bind.js';
import { CandidateType, type Candidate } from './discovery.js';
import { endpointPath, LinkScheme, PathKind, virtualEndpoint } from './path-bind.js';
import { encodeStun, StunClass, transactionKey, verifyIntegrity, type StunMessage } from './stun.js';

export interface Credentials {
  ufrag: string;
  pwd: string;
}

export function newCredentials(): Credentials {
  return { ufrag: randomBytes(6).toString('hex'), pwd: randomBytes(18).toString('base64url') };
}

export const PathTiming = {
  /** Check interval for a pair that has not answered yet, during the first burst. */
  checkFastMs: 100,
  burstMs: 5_000,
  /** Check interval for an unanswered pair after the burst (so a path that opens later is found). */
  checkSlowMs: 1_000,
  /** Check interval on the selected pair (consent freshness; keeps NAT mappings open). */
  keepaliveMs: 500,
  /** Check interval on answered pairs that are not selected. */
  standbyMs: 1_000,
  /** A pair is alive while its last answer is younger than this. */
  aliveMs: 2_000,
  /** UDP pairs neither advertised nor answering for this long are forgotten. */
  prflxForgetMs: 30_000,
} as const;
export type PathTimingOptions = { [K in keyof typeof PathTiming]: number };

/**
 * How a pair's datagrams travel. kind (what status shows) follows from it: udp = direct, ice = ice,
 * turn (an ICE data channel over a TURN relay) and tcp (our relay) = relay.
 */
export const PathVia = { Udp: 'udp', Ice: 'ice', Turn: 'turn', Tcp: 'tcp' } as const;
export type PathVia = (typeof PathVia)[keyof typeof PathVia];
const rankOf: Record<PathVia, number> = { udp: 4, ice: 3, turn: 2, tcp: 1 };
const kindOf: Record<PathVia, PathKind> = { udp: 'direct', ice: 'ice', turn: 'relay', tcp: 'relay' };
function viaOf(ep: Endpoint): PathVia {
  const s = endpointPath(ep).scheme;
  return s === LinkScheme.Ice ? PathVia.Ice : s === LinkScheme.Turn ? PathVia.Turn : s === LinkScheme.Relay ? PathVia.Tcp : PathVia.Udp;
}

export interface Pair {
  endpoint: Endpoint;
  /** Mutable: an "ice" pair becomes "turn" when libjuice selects a relay candidate. */
  via: PathVia;
  candidateType: string;
  created: number;
  lastSent: number;
  lastAnswer: number;
  firstAnswer: number;
  rttMs: number;
  sent: number;
  answered: number;
  txids: Map<string, number>;
  /** Last time signalling listed this candidate (or it was created). */
  lastAdvertised: number;
}

export interface PathStatus {
  peerId: string;
  kind: PathKind | null;
  via: PathVia | null;
  endpoint: string | null;
  rttMs: number | null;
  /** ms from the manager's start (or the peer's restart) to this path's first answer. */
  establishMs: number | null;
  /** monotonic ms when the current path was selected. */
  selectedAt: number | null;
  switches: number;
  pairs: { endpoint: string; kind: PathKind; via: PathVia; type: string; alive: boolean; rttMs: number | null; sent: number; answered: number }[];
}

export interface PeerPathsOptions {
  peerId: string;
  send: (data: Uint8Array, to: Endpoint) => void;
  setEndpoint: (ep: Endpoint) => void;
  getEndpoint: () => Endpoint | undefined;
  now: number;
  timing?: Partial<PathTimingOptions>;
  /** Called when the selected path stops answering (the caller re-discovers and re-signals). */
  onPathLost?: (p: Pair) => void;
  onSelect?: (p: Pair) => void;
}


export class PeerPaths {
  readonly peerId: string;
  readonly local = newCredentials();
  remote?: Credentials;
  readonly pairs = new Map<string, Pair>();
  selected?: Pair;
  selectedAt = -Infinity;
  switches = 0;
  stats = { badIntegrity: 0, badUsername: 0, unexpectedSource: 0, requestsAnswered: 0 };
  private started: number;
  private readonly t: PathTimingOptions;
  private lostReported = false;

  constructor(private readonly o: PeerPathsOptions) {
    this.peerId = o.peerId;
    this.started = o.now;
    this.t = { ...PathTiming, ...o.timing };
  }

  /** The peer's credentials and candidates from signalling. New credentials = the peer restarted. */
  setRemote(creds: Credentials, candidates: Candidate[], relay: boolean, now: number): void {
    if (!this.remote || this.remote.ufrag !== creds.ufrag || this.remote.pwd !== creds.pwd) {
      this.remote = { ...creds };
      this.pairs.clear();
      this.selected = undefined;
      this.started = now;
    }
    for (const c of candidates) this.addPair({ address: c.address, port: c.port }, c.type, now).lastAdvertised = now;
    if (relay) this.addPair(virtualEndpoint(LinkScheme.Relay, this.peerId), CandidateType.Relay, now);
    this.tick(now);
  }

  /** A virtual path came up (an ICE data channel opened): race it too. */
  addVirtual(scheme: LinkScheme, now: number, via?: PathVia): Pair {
    const p = this.addPair(virtualEndpoint(scheme, this.peerId), scheme === LinkScheme.Ice ? 'ice' : CandidateType.Relay, now);
    if (via) p.via = via;
    if (this.remote && now - p.lastSent >= this.t.checkFastMs) this.check(p, now);
    return p;
  }

  private addPair(ep: Endpoint, type: string, now: number): Pair {
    const k = endpointKey(ep);
    let p = this.pairs.get(k);
    if (p) return p;
    p = {
      endpoint: ep.kind === 'virtual' ? ep : { address: ep.address, port: ep.port },
      via: viaOf(ep),
      candidateType: type,
      created: now,
      lastSent: -Infinity,
      lastAnswer: -Infinity,
      firstAnswer: -Infinity,
      rttMs: NaN,
      sent: 0,
      answered: 0,
      txids: new Map(),
      lastAdvertised: now,
    };
    this.pairs.set(k, p);
    return p;
  }

  alive(p: Pair, now: number): boolean {
    return now - p.lastAnswer < this.t.aliveMs;
  }

  /** Send due checks, forget dead peer-reflexive pairs, re-evaluate the selection. */
  tick(now: number): void {
    if (!this.remote) return;
    for (const [k, p] of this.pairs) {
      // Forget UDP pairs nobody advertises any more and that have been silent for a while (an old NAT
      // mapping, a peer-reflexive address that never answered).
      if (p.via === PathVia.Udp && p !== this.selected && now - Math.max(p.lastAnswer, p.lastAdvertised) > this.t.prflxForgetMs) {
        this.pairs.delete(k);
        continue;
      }
      let interval: number;
      if (p === this.selected) interval = this.t.keepaliveMs;
      else if (this.alive(p, now)) interval = this.t.standbyMs;
      else interval = now - Math.max(p.created, this.started) < this.t.burstMs ? this.t.checkFastMs : this.t.checkSlowMs;
      if (now - p.lastSent >= interval) this.check(p, now);
    }
    this.select(now);
  }

  private check(p: Pair, now: number): void {
    const remote = this.remote;
    if (!remote) return;
    const txid = randomBytes(12);
    const key = transactionKey(txid);
    p.txids.set(key, now);
    if (p.txids.size > 16) p.txids.delete(p.txids.keys().next().value as string);
    p.lastSent = now;
    p.sent++;
    this.o.send(
      encodeStun({
        class: StunClass.Request,
        transactionId: txid,
        username: `${remote.ufrag}:${this.local.ufrag}`,
        integrityKey: remote.pwd,
        fingerprint: true,
      }),
      p.endpoint,
    );
  }

  private select(now: number): void {
    const cur = this.selected;
    let best: Pair | undefined;
    for (const p of this.pairs.values()) {
      if (!this.alive(p, now)) continue;
      if (!best) {
        best = p;
        continue;
      }
      const d = rankOf[p.via] - rankOf[best.via];
      if (d > 0) best = p;
      else if (d === 0 && best !== cur && (p === cur || p.rttMs < best.rttMs)) best = p;
    }
    if (cur && !this.alive(cur, now) && !this.lostReported && cur.answered > 0) {
      this.lostReported = true;
      this.o.onPathLost?.(cur);
    }
    if (best && best !== cur) {
      // Keep a live current path of the same rank: flapping between equals costs handshakes.
      if (!(cur && this.alive(cur, now) && rankOf[cur.via] >= rankOf[best.via])) {
        this.selected = best;
        this.selectedAt = now;
        this.switches++;
        this.lostReported = false;
        this.o.onSelect?.(best);
      }
    }
    const sel = this.selected;
    if (sel && this.alive(sel, now)) {
      // The device roams to wherever the last authenticated packet came from; steer it back to our choice.
      const ep = this.o.getEndpoint();
      if (!ep || !sameEndpoint(ep, sel.endpoint)) this.o.setEndpoint(sel.endpoint);
    }
  }

  /** A Binding request whose USERNAME starts with our ufrag. Answers it; checks the source back. */
  handleRequest(msg: StunMessage, from: Endpoint, now: number): void {
    const [to] = (msg.username ?? '').split(':');
    if (to !== this.local.ufrag) {
      this.stats.badUsername++;
      return;
    }
    if (!verifyIntegrity(msg, this.local.pwd)) {
      this.stats.badIntegrity++;
      return;
    }
    this.stats.requestsAnswered++;
    this.o.send(
      encodeStun({
        class: StunClass.SuccessResponse,
        transactionId: msg.transactionId,
        xorMappedAddress: from.kind === 'virtual' ? undefined : from,
        integrityKey: this.local.pwd,
        fingerprint: true,
      }),
      from,
    );
    // Triggered check (RFC 8445 section 7.3.1.4): the source may be a mapping we have not seen (prflx).
    const known = this.pairs.has(endpointKey(from));
    const p = this.addPair(from, known ? CandidateType.Host : CandidateType.PeerReflexive, now);
    if (!known || !this.alive(p, now)) {
      if (now - p.lastSent >= this.t.checkFastMs) this.check(p, now);
    }
  }

  /** True when the response answered one of our checks. */
  handleResponse(msg: StunMessage, from: Endpoint, now: number): boolean {
    const key = transactionKey(msg.transactionId);
    for (const p of this.pairs.values()) {
      const sentAt = p.txids.get(key);
      if (sentAt === undefined) continue;
      if (!sameEndpoint(p.endpoint, from)) {
        this.stats.unexpectedSource++;
        return true;
      }
      if (!this.remote || !verifyIntegrity(msg, this.remote.pwd)) {
        this.stats.badIntegrity++;
        return true;
      }
      p.txids.delete(key);
      if (msg.class !== StunClass.SuccessResponse) return true;
      const rtt = now - sentAt;
      p.rttMs = Number.isNaN(p.rttMs) ? rtt : p.rttMs * 0.75 + rtt * 0.25;
      if (p.answered === 0) p.firstAnswer = now;
      p.answered++;
      p.lastAnswer = now;
      this.select(now);
      return true;
    }
    return false;
  }

  status(now: number): PathStatus {
    const s = this.selected;
    const live = s && this.alive(s, now);
    return {
      peerId: this.peerId,
      kind: s ? kindOf[s.via] : null,
      via: s ? s.via : null,
      endpoint: s ? endpointKey(s.endpoint) : null,
      rttMs: s && live ? round(s.rttMs) : null,
      establishMs: s ? round(s.firstAnswer - this.started) : null,
      selectedAt: s ? round(this.selectedAt) : null,
      switches: this.switches,
      pairs: [...this.pairs.values()].map((p) => ({
        endpoint: endpointKey(p.endpoint),
        kind: kindOf[p.via],
        via: p.via,
        type: p.candidateType,
        alive: this.alive(p, now),
        rttMs: p.answered ? round(p.rttMs) : null,
        sent: p.sent,
        answered: p.answered,
      })),
    };
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
