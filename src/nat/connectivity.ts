/**
 * The runtime edge of NAT traversal for one WireGuard device: STUN discovery on the WireGuard socket,
 * candidate exchange over NATS, the relay link, and a PeerPaths per peer ticking on a timer.
 *
 *   const bind = createPathBind(await UdpBind.open({ port }));
 *   const device = new Device({ privateKey, bind, clock: systemClock, ticker: new IntervalTicker(100) });
 *   const conn = await createPeerConnectivity({ device, bind, nats, selfId, namespace, stunServers, relayUrl });
 *   device.addPeer({ publicKey, allowedIPs }); conn.addPeer(peerId, publicKey);
 *   device.up();
 *   conn.status() -> per peer: kind (direct|ice|relay), RTT, time to establish
 *
 * Signalling: each side subscribes to lattice.nat.<namespace>.<selfId> and publishes its credentials and
 * candidates to lattice.nat.<namespace>.<peerId> (JSON, see SignalMessage).
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Bind, Endpoint } from '../conn/bind.js';
import { settleWithin, systemClock, type Clock } from '../clock.js';
import { LatticeError } from '../errors.js';
import type { Device } from '../wg/device.js';
import { CandidateType, hostCandidates, parseServer, StunDiscovery, type Candidate } from './discovery.js';
import { PathBind } from './path-bind.js';
import { PeerPaths, type PathStatus, type PathTimingOptions } from './paths.js';
import { IceLink, iceServerFromUrl, validIceSignal, type IceSignal } from './ice.js';
import { RelayClient } from './relay-client.js';
import { decodeStun, StunClass } from './stun.js';

export class NatConfigError extends LatticeError {
  override readonly name = 'NatConfigError';
  constructor(msg: string) {
    super('ENAT_CONFIG', msg);
  }
}

/** The one Bind for STUN demultiplexing and virtual paths over the WireGuard UDP socket `udp` (path-bind.ts). */
export function createPathBind(udp: Bind): PathBind {
  return new PathBind(udp);
}

export interface SignalMessage {
  v: 1;
  from: string;
  ufrag: string;
  pwd: string;
  candidates: Candidate[];
  relay: boolean;
  /** Ask the receiver to answer with its own candidates. */
  reply: boolean;
}

export interface PeerConnectivityOptions {
  device: Device;
  bind: PathBind;
  nats: NatsConnection;
  selfId: string;
  namespace: string;
  /** "host:port" or "stun:host:port" (literal addresses). */
  stunServers?: string[];
  /** ICE through node-datachannel (a data channel per peer), with stunServers as its STUN servers. */
  ice?: boolean;
  /**
   * TURN servers, "turn:user:pass@host:port[?transport=tcp]": a second ICE link restricted to relay
   * candidates (libjuice did not complete mixed direct+TURN checks through symmetric NATs here).
   */
  turnServers?: string[];
  /** tcp://host:port of a relay server (src/nat/relay-server.ts). */
  relayUrl?: string;
  relayToken?: string;
  /** Advertise host candidates (default true). */
  hostCandidates?: boolean;
  /** Direct UDP paths at all (default true); false leaves ICE, TURN and the relay. */
  direct?: boolean;
  clock?: Clock;
  tickMs?: number;
  /** Re-run STUN discovery this often (ms); also on a lost path. */
  rediscoverMs?: number;
  timing?: Partial<PathTimingOptions>;
}

export interface ConnectivityStats {
  stunDropped: number;
  signalsDropped: number;
  discoveries: number;
}

export interface PeerConnectivity {
  addPeer(peerId: string, publicKey: Uint8Array): void;
  removePeer(peerId: string): void;
  status(): PathStatus[];
  candidates(): Candidate[];
  readonly stats: ConnectivityStats;
  readonly relay?: RelayClient;
  readonly ice?: IceLink;
  readonly turn?: IceLink;
  close(): Promise<void>;
}

const tokenRe = /^[A-Za-z0-9_-]{1,128}$/;
const subject = (ns: string, id: string) => `lattice.nat.${ns}.${id}`;

function validSignal(x: unknown): x is SignalMessage {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  if (m.v !== 1 || typeof m.from !== 'string' || !tokenRe.test(m.from)) return false;
  if (typeof m.ufrag !== 'string' || typeof m.pwd !== 'string' || m.ufrag.length > 64 || m.pwd.length > 128) return false;
  if (typeof m.relay !== 'boolean' || typeof m.reply !== 'boolean') return false;
  if (!Array.isArray(m.candidates) || m.candidates.length > 32) return false;
  return m.candidates.every((c: unknown) => {
    const o = c as Record<string, unknown>;
    return (
      typeof o === 'object' &&
      o !== null &&
      typeof o.address === 'string' &&
      /^[0-9a-fA-F:.]{2,45}$/.test(o.address) &&
      Number.isInteger(o.port) &&
      (o.port as number) > 0 &&
      (o.port as number) < 65536 &&
      (o.type === CandidateType.Host || o.type === CandidateType.ServerReflexive)
    );
  });
}

interface IceMessage {
  v: 1;
  from: string;
  link: 'ice' | 'turn';
  ice: IceSignal;
}

function validIceMessage(x: unknown): x is IceMessage {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  return m.v === 1 && typeof m.from === 'string' && tokenRe.test(m.from) && (m.link === 'ice' || m.link === 'turn') && validIceSignal(m.ice);
}

export async function createPeerConnectivity(o: PeerConnectivityOptions): Promise<PeerConnectivity> {
  if (!tokenRe.test(o.selfId)) throw new NatConfigError(`peer id "${o.selfId}" must be 1-128 of A-Z a-z 0-9 _ -`);
  if (!tokenRe.test(o.namespace)) throw new NatConfigError(`namespace "${o.namespace}" must be 1-128 of A-Z a-z 0-9 _ -`);
  const clock = o.clock ?? systemClock;
  const bind = o.bind;
  const stunServers = (o.stunServers ?? []).map(parseServer);
  const stats: ConnectivityStats = { stunDropped: 0, signalsDropped: 0, discoveries: 0 };
  const peers = new Map<string, PeerPaths>();
  const byUfrag = new Map<string, PeerPaths>();
  const discovery = new StunDiscovery((d, to) => bind.udp.send(d, to));
  let srflx: Candidate[] = [];
  const host = o.hostCandidates === false ? [] : hostCandidates(bind.port);
  let closed = false;

  let relay: RelayClient | undefined;
  if (o.relayUrl) {
    relay = new RelayClient({ url: o.relayUrl, selfId: o.selfId, token: o.relayToken });
    bind.addLink('relay', relay);
    relay.start();
  }

  const iceLink = (link: 'ice' | 'turn', servers: string[], policy: 'all' | 'relay'): IceLink => {
    const l: IceLink = new IceLink({
      selfId: o.selfId,
      iceServers: servers.map(iceServerFromUrl),
      transportPolicy: policy,
      signal: (peerId, m) => {
        if (closed) return;
        try {
          o.nats.publish(subject(o.namespace, peerId), JSON.stringify({ v: 1, from: o.selfId, link, ice: m } satisfies IceMessage));
        } catch {
          stats.signalsDropped++;
        }
      },
      onOpen: (peerId) => {
        const p = peers.get(peerId);
        if (!p) return;
        const t = l.selectedTypes(peerId);
        // An "ice" channel whose selected candidate pair is relayed counts as a TURN path.
        const relayed = link === 'turn' || (t !== undefined && (t.local === 'relay' || t.remote === 'relay'));
        p.addVirtual(link, clock.monotonic(), relayed ? 'turn' : 'ice');
      },
    });
    bind.addLink(link, l);
    return l;
  };
  const ice = o.ice ? iceLink('ice', (o.stunServers ?? []).map((s) => (s.startsWith('stun:') ? s : `stun:${s}`)), 'all') : undefined;
  const turn = o.turnServers && o.turnServers.length > 0 ? iceLink('turn', o.turnServers, 'relay') : undefined;

  bind.attachStun((data, from) => {
    const msg = decodeStun(data);
    if (typeof msg === 'string') {
      stats.stunDropped++;
      return;
    }
    const now = clock.monotonic();
    if (msg.class === StunClass.Request) {
      const ufrag = (msg.username ?? '').split(':')[0];
      const p = byUfrag.get(ufrag);
      if (p) p.handleRequest(msg, from, now);
      else stats.stunDropped++;
      return;
    }
    if (discovery.handle(msg, from)) return;
    for (const p of peers.values()) if (p.handleResponse(msg, from, now)) return;
    stats.stunDropped++;
  });

  const direct = o.direct !== false;
  const candidates = (): Candidate[] => (direct ? [...host, ...srflx] : []);

  const signal = (p: PeerPaths, reply: boolean) => {
    if (closed) return;
    const m: SignalMessage = {
      v: 1,
      from: o.selfId,
      ufrag: p.local.ufrag,
      pwd: p.local.pwd,
      candidates: candidates(),
      relay: relay !== undefined,
      reply,
    };
    try {
      o.nats.publish(subject(o.namespace, p.peerId), JSON.stringify(m));
    } catch {
      stats.signalsDropped++;
    }
  };

  let discovering: Promise<void> | undefined;
  const rediscover = (): Promise<void> => {
    if (discovering || stunServers.length === 0 || closed) return discovering ?? Promise.resolve();
    stats.discoveries++;
    discovering = discovery
      .gather(stunServers, { timeoutMs: 1500 })
      .then((found) => {
        const before = JSON.stringify(srflx);
        if (found.length > 0) srflx = found;
        if (JSON.stringify(srflx) !== before) for (const p of peers.values()) signal(p, true);
      })
      .finally(() => {
        discovering = undefined;
      });
    return discovering;
  };

  const sub: Subscription = o.nats.subscribe(subject(o.namespace, o.selfId), {
    callback: (err, msg) => {
      if (err) return;
      let m: unknown;
      try {
        m = JSON.parse(new TextDecoder().decode(msg.data));
      } catch {
        stats.signalsDropped++;
        return;
      }
      if (validIceMessage(m)) {
        const l = m.link === 'ice' ? ice : turn;
        if (l && peers.has(m.from)) l.handleSignal(m.from, m.ice);
        else stats.signalsDropped++;
        return;
      }
      if (!validSignal(m)) {
        stats.signalsDropped++;
        return;
      }
      const p = peers.get(m.from);
      if (!p) {
        stats.signalsDropped++;
        return;
      }
      p.setRemote({ ufrag: m.ufrag, pwd: m.pwd }, direct ? m.candidates : [], m.relay && relay !== undefined, clock.monotonic());
      if (m.reply) signal(p, false);
    },
  });

  // Discovery first (bounded): a first signal with the srflx candidate saves a round of re-signalling.
  await settleWithin(rediscover(), 300);

  let lastDiscovery = clock.monotonic();
  let lastResignal = clock.monotonic();
  let lastKick = -Infinity;
  let resignalRound = 0;
  const timer = setInterval(() => {
    const now = clock.monotonic();
    for (const p of peers.values()) p.tick(now);
    if (now - lastDiscovery >= (o.rediscoverMs ?? 15_000)) {
      lastDiscovery = now;
      void rediscover();
    }
    // A relay connection through a NAT that lost its mapping can sit dead without an error: when every
    // peer's relay pair has gone quiet after having answered, reconnect.
    if (relay?.isConnected && now - lastKick > 3_000) {
      const relayPairs = [...peers.values()].flatMap((p) => [...p.pairs.values()].filter((x) => x.via === 'tcp' && x.answered > 0));
      if (relayPairs.length > 0 && relayPairs.every((x) => x.endpoint.kind === 'virtual' && !peers.get(x.endpoint.peerId)?.alive(x, now))) {
        lastKick = now;
        relay.kick();
      }
    }
    // Until a peer has answered signalling (it may have started after our first message), ask again
    // every second. While a peer has no direct path, re-send our candidates every few seconds: a signal
    // written into a NATS connection that a NAT change had just killed is lost without an error.
    if (now - lastResignal >= 1_000) {
      lastResignal = now;
      resignalRound++;
      for (const p of peers.values()) {
        if (!p.remote) signal(p, true);
        else if (direct && resignalRound % 4 === 0 && p.selected?.via !== 'udp') signal(p, true);
      }
    }
  }, o.tickMs ?? 50);
  timer.unref?.();

  return {
    stats,
    relay,
    ice,
    turn,
    candidates,
    addPeer(peerId, publicKey) {
      if (!tokenRe.test(peerId)) throw new NatConfigError(`peer id "${peerId}" must be 1-128 of A-Z a-z 0-9 _ -`);
      if (peers.has(peerId)) return;
      const p: PeerPaths = new PeerPaths({
        peerId,
        now: clock.monotonic(),
        timing: o.timing,
        send: (d, to: Endpoint) => bind.send(d, to),
        getEndpoint: () => o.device.getPeer(publicKey)?.endpoint,
        setEndpoint: (ep) => {
          if (o.device.getPeer(publicKey)) o.device.updatePeer({ publicKey, endpoint: ep });
        },
        onPathLost: () => {
          lastDiscovery = clock.monotonic();
          void rediscover().then(() => signal(p, true));
        },
      });
      peers.set(peerId, p);
      byUfrag.set(p.local.ufrag, p);
      signal(p, true);
      ice?.connect(peerId);
      turn?.connect(peerId);
    },
    removePeer(peerId) {
      const p = peers.get(peerId);
      if (!p) return;
      peers.delete(peerId);
      byUfrag.delete(p.local.ufrag);
      ice?.remove(peerId);
      turn?.remove(peerId);
    },
    status() {
      const now = clock.monotonic();
      return [...peers.values()].map((p) => p.status(now));
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      discovery.close();
      ice?.close();
      turn?.close();
      try {
        sub.unsubscribe();
      } catch {
        // connection already closed
      }
      await relay?.close();
    },
  };
}
