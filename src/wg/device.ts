/**
 * The WireGuard device: peers, cryptokey routing, sessions and lifecycle (wireguard-go device/device.go),
 * single-threaded. The data path lives beside it, as in wireguard-go: send.ts (outbound) and receive.ts
 * (inbound; the handshake-initiation branch is receiveHandshake/receiveInitiation there), each opening
 * with its flow drawn.
 *
 *   Tun / pump --sendPacket--> send.ts --Bind.send--> network
 *   network --Bind.start callback--> receive.ts --sink (Tun.write or the pump's handler)--> sandbox
 *   Ticker --tick()--> timers.ts --> send.ts (initiations, keepalives), zeroKeyMaterial
 *   device.ts: up/close, peers (add/update/remove), beginSession (keypair rotation), stats, drop counters
 *
 * No sockets or OS timers here: I/O goes through the injected Bind and packet sink (a Tun, or the
 * pump's handler), time comes from the injected Clock, and timers fire from tick(), which an injected
 * Ticker (src/conn/ticker.ts) or the test calls. Each collaborator is given once: in the constructor, or
 * for the packet sink through attach(); a second sink throws DeviceWiringError. Hostile input is dropped
 * and counted in stats.dropped, never thrown. Members marked internal are for send.ts and receive.ts only.
 */
import type { Bind, Endpoint } from '../conn/bind.js';
import { endpointKey } from '../conn/bind.js';
import type { Clock } from '../clock.js';
import type { Ticker } from '../conn/ticker.js';
import { LatticeError } from '../errors.js';
import type { Tun } from '../tun/tun.js';
import { AllowedIPs } from './allowedips.js';
import { DefaultMTU, MaxContentSize, MessageTransportSize, PaddingMultiple, RekeyTimeoutJitterMaxMs, UnderLoadHandshakesPerSecond } from './constants.js';
import { CookieChecker } from './cookie.js';
import { defaultCrypto, type Crypto } from './crypto.js';
import { DropReason } from './drop.js';
import { IndexTable } from './indextable.js';
import { parsePrefix } from '../net/addr.js';
import { Keypair } from './keypair.js';
import { encodeKey } from './keys.js';
import { beginSymmetricSession, HandshakeState, precompute, type StaticIdentity } from './noise-protocol.js';
import { Peer, type PeerConfig, type PeerStatus } from './peer.js';
import { HandshakeGuard } from './ratelimiter.js';
import { receive } from './receive.js';
import { sendHandshakeInitiation, sendKeepalive, sendPacket } from './send.js';
import { runTimers, nextDeadline, timersSessionDerived, type TimerHost } from './timers.js';

export { DropReason };

/** Random bytes fetched at once for timer jitter: 256 draws of 2 bytes. */
const JitterBlock = 512;

export interface DeviceStats {
  dropped: Record<DropReason, number>;
  rxPackets: number;
  txPackets: number;
  handshakeInitiationsSent: number;
  handshakeResponsesSent: number;
  handshakesCompleted: number;
  cookieRepliesSent: number;
  cookieRepliesReceived: number;
  roams: number;
}

/** A packet sink was given twice (constructor and attach(), or attach() twice): the first would silently lose. */
export class DeviceWiringError extends LatticeError {
  override readonly name = 'DeviceWiringError';
  constructor(msg: string) {
    super('EWG_WIRING', msg);
  }
}

export interface DeviceOptions {
  /** Curve25519 private key, 32 bytes (clamped here; the caller's copy is not modified). */
  privateKey: Uint8Array;
  /** The UDP (or path) seam; the device owns it from up() to close(). */
  bind: Bind;
  clock: Clock;
  /** Fires tick(); without one the caller calls tick() (tests with a ManualClock). */
  ticker?: Ticker;
  /**
   * Where decrypted packets go, at most one of the two: a Tun (packets it emits are sent through
   * sendPacket from up() on, decrypted packets are written to it), or a handler. Neither: attach() once.
   */
  tun?: Tun;
  onPacket?: PacketHandler;
  crypto?: Crypto;
  /** Inner MTU used for padding; default 1420. */
  mtu?: number;
  /** Handshake messages per second above which the device is under load (cookies demanded). */
  underLoadHandshakesPerSecond?: number;
}

export type PacketHandler = (packet: Uint8Array, peer: Peer) => void;

export class Device {
  readonly crypto: Crypto;
  readonly clock: Clock;
  readonly bind: Bind;
  readonly mtu: number;
  readonly identity: StaticIdentity;
  readonly stats: DeviceStats;
  /** Decrypted inbound IP packets that passed the allowed-IPs source check (dropped until one is attached). */
  private sink?: PacketHandler;
  private readonly tun?: Tun;
  private readonly ticker?: Ticker;

  private readonly peers = new Map<string, Peer>();
  /** @internal */
  readonly allowedIPs = new AllowedIPs<Peer>();
  /** @internal */
  readonly indexTable: IndexTable<Peer, Keypair>;
  /** @internal */
  readonly cookieChecker: CookieChecker;
  /** @internal */
  readonly rateLimiter = new HandshakeGuard();
  /** @internal Handshake messages per second above which the device is under load. */
  readonly underLoadThreshold: number;
  /** @internal The under-load window (receive.ts): handshakes counted this second, under load until `until` (monotonic ms). */
  readonly load = { windowStart: -Infinity, windowCount: 0, until: -Infinity };
  /** @internal */
  readonly timerHost: TimerHost<Peer>;
  /**
   * @internal send.ts seals each transport message here when the Bind copies on send (Bind.sendCopies):
   * room for the largest one (header, MaxContentSize padded, tag). Per device, never shared.
   */
  readonly sendBuffer = new Uint8Array(MessageTransportSize + MaxContentSize + PaddingMultiple);
  private lastGC = 0;
  private closed = false;
  private isUp = false;

  constructor(opts: DeviceOptions) {
    this.crypto = opts.crypto ?? defaultCrypto;
    this.clock = opts.clock;
    this.bind = opts.bind;
    this.ticker = opts.ticker;
    if (opts.tun && opts.onPacket) throw new DeviceWiringError('give the device a tun or an onPacket handler, not both');
    this.tun = opts.tun;
    const tun = opts.tun;
    this.sink = tun ? (pkt) => tun.write(pkt) : opts.onPacket;
    this.mtu = opts.mtu ?? DefaultMTU;
    this.underLoadThreshold = opts.underLoadHandshakesPerSecond ?? UnderLoadHandshakesPerSecond;
    const privateKey = Uint8Array.from(opts.privateKey);
    privateKey[0] &= 248;
    privateKey[31] = (privateKey[31] & 127) | 64;
    this.identity = { privateKey, publicKey: this.crypto.publicKey(privateKey) };
    this.indexTable = new IndexTable(this.crypto);
    this.cookieChecker = new CookieChecker(this.crypto, this.identity.publicKey);
    const dropped = {} as Record<DropReason, number>;
    for (const r of Object.values(DropReason)) dropped[r] = 0;
    this.stats = {
      dropped,
      rxPackets: 0,
      txPackets: 0,
      handshakeInitiationsSent: 0,
      handshakeResponsesSent: 0,
      handshakesCompleted: 0,
      cookieRepliesSent: 0,
      cookieRepliesReceived: 0,
      roams: 0,
    };
    const c = this.crypto;
    // Jitter is drawn on every data packet sent after one received (timersDataSent): take the random bytes
    // from the crypto source in blocks, not one call (and one allocation) per packet.
    let jitterBytes: Uint8Array = new Uint8Array(0);
    let jitterAt = 0;
    this.timerHost = {
      monotonic: () => this.clock.monotonic(),
      wall: () => this.clock.now(),
      jitter: () => {
        if (jitterAt + 2 > jitterBytes.length) {
          jitterBytes = c.randomBytes(JitterBlock);
          jitterAt = 0;
        }
        const v = (jitterBytes[jitterAt]! << 8) | jitterBytes[jitterAt + 1]!;
        jitterAt += 2;
        return v % RekeyTimeoutJitterMaxMs;
      },
      sendHandshakeInitiation: (p, isRetry) => sendHandshakeInitiation(this, p, isRetry),
      sendKeepalive: (p) => sendKeepalive(this, p),
      dropStaged: (p) => {
        this.stats.dropped.handshakeGaveUp += p.staged.length;
        p.staged = [];
      },
      zeroKeyMaterial: (p) => this.zeroKeyMaterial(p),
    };
  }

  /** @internal True once close() began: send.ts and receive.ts drop everything. */
  get isClosed(): boolean {
    return this.closed;
  }

  get publicKey(): Uint8Array {
    return this.identity.publicKey;
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Start receiving from the Bind (and the Tun, if one was given), start the Ticker, and send a
   * keepalive to each peer with persistent keepalive and an endpoint. Call once.
   */
  up(): void {
    this.bind.start((data, from) => this.receive(data, from));
    this.tun?.start((pkt) => this.sendPacket(pkt));
    this.isUp = true;
    this.ticker?.start(() => this.tick());
    for (const p of this.peers.values()) if (p.persistentKeepaliveInterval > 0 && p.endpoint) sendKeepalive(this, p);
  }

  /**
   * Give the device its packet sink when it could not be passed to the constructor (the pump is built
   * from the device). Throws DeviceWiringError if the device already has one.
   */
  attach(onPacket: PacketHandler): void {
    if (this.sink) throw new DeviceWiringError('this device already delivers its packets elsewhere; attach one packet handler, once');
    this.sink = onPacket;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ticker?.stop();
    for (const p of this.peers.values()) this.zeroKeyMaterial(p);
    this.identity.privateKey.fill(0);
    await this.bind.close();
  }

  /** Fire every expired timer; call with the clock's monotonic time (default: now). */
  tick(now = this.clock.monotonic()): void {
    if (this.closed) return;
    for (const p of this.peers.values()) runTimers(this.timerHost, p, now);
    if (now - this.lastGC >= 1_000) {
      this.rateLimiter.gc(now);
      this.lastGC = now;
    }
  }

  /** The earliest pending timer deadline (monotonic ms), for a scheduler that sleeps exactly. */
  nextDeadline(): number {
    let d = Infinity;
    for (const p of this.peers.values()) d = Math.min(d, nextDeadline(p));
    return d;
  }

  // ---------------------------------------------------------------- peers

  addPeer(cfg: PeerConfig): Peer {
    const key = encodeKey(cfg.publicKey);
    if (this.peers.has(key)) return this.updatePeer(cfg);
    if (cfg.publicKey.length !== 32) throw new RangeError('peer public key must be 32 bytes');
    const peer = new Peer(this.crypto, cfg.publicKey);
    precompute(this.crypto, this.identity, peer.handshake);
    this.peers.set(key, peer);
    this.applyPeerConfig(peer, cfg);
    return peer;
  }

  /** Change a peer in place; fields left undefined keep their value. Sessions survive. */
  updatePeer(cfg: PeerConfig): Peer {
    const peer = this.peers.get(encodeKey(cfg.publicKey));
    if (!peer) return this.addPeer(cfg);
    this.applyPeerConfig(peer, cfg);
    return peer;
  }

  private applyPeerConfig(peer: Peer, cfg: PeerConfig): void {
    if (cfg.presharedKey !== undefined) {
      if (cfg.presharedKey.length !== 32) throw new RangeError('preshared key must be 32 bytes');
      peer.handshake.presharedKey = Uint8Array.from(cfg.presharedKey);
    }
    if (cfg.allowedIPs !== undefined) {
      const prefixes = cfg.allowedIPs.map((s) => {
        const p = parsePrefix(s.trim());
        if (!p) throw new RangeError(`invalid allowed IP prefix "${s}"`);
        return p;
      });
      this.allowedIPs.removeByPeer(peer);
      for (const p of prefixes) this.allowedIPs.insert(p, peer);
    }
    if (cfg.endpoint !== undefined) peer.endpoint = cfg.endpoint;
    if (cfg.persistentKeepalive !== undefined) {
      const was = peer.persistentKeepaliveInterval;
      peer.persistentKeepaliveInterval = cfg.persistentKeepalive;
      if (cfg.persistentKeepalive === 0) peer.timers.persistentKeepalive = Infinity;
      // As wg(8) set: turning it on sends a keepalive now (and so brings the session up).
      else if (was === 0 && this.isUp && peer.endpoint) sendKeepalive(this, peer);
    }
  }

  removePeer(publicKey: Uint8Array): boolean {
    const key = encodeKey(publicKey);
    const peer = this.peers.get(key);
    if (!peer) return false;
    this.zeroKeyMaterial(peer);
    peer.timers.stopAll();
    this.allowedIPs.removeByPeer(peer);
    this.peers.delete(key);
    return true;
  }

  getPeer(publicKey: Uint8Array | string): Peer | undefined {
    return this.peers.get(typeof publicKey === 'string' ? publicKey : encodeKey(publicKey));
  }

  peerStatus(): PeerStatus[] {
    return [...this.peers.values()].map((p) => ({
      publicKey: p.publicKeyB64,
      endpoint: p.endpoint ? endpointKey(p.endpoint) : null,
      allowedIPs: this.allowedIPs.entriesForPeer(p),
      latestHandshake: p.lastHandshakeWall,
      rxBytes: p.rxBytes,
      txBytes: p.txBytes,
      persistentKeepalive: p.persistentKeepaliveInterval,
    }));
  }

  // ---------------------------------------------------------------- data path (send.ts, receive.ts)

  /** Encrypt one IP packet to the peer its destination routes to (send.ts). False if it was dropped. */
  sendPacket(packet: Uint8Array): boolean {
    return sendPacket(this, packet);
  }

  /** Handle one datagram from the Bind (receive.ts). The device may decrypt in place: the buffer becomes the device's. */
  receive(data: Uint8Array, from: Endpoint): void {
    receive(this, data, from);
  }

  // ---------------------------------------------------------------- sessions (for send.ts and receive.ts)

  /** @internal A fresh local index for the peer's handshake (never 0). */
  newIndex(peer: Peer): number {
    for (;;) {
      const i = this.indexTable.newIndexForHandshake(peer);
      if (i !== 0) return i;
    }
  }

  /** @internal Derive the session and rotate keypairs (wireguard-go BeginSymmetricSession). */
  beginSession(peer: Peer): void {
    const keys = beginSymmetricSession(this.crypto, peer.handshake);
    if (!keys) return;
    const kp = new Keypair(keys.send, keys.receive, keys.isInitiator, this.clock.monotonic(), keys.localIndex, keys.remoteIndex);
    this.indexTable.swapIndexForKeypair(kp.localIndex, kp);
    const kps = peer.keypairs;
    if (kp.isInitiator) {
      const previous = kps.previous;
      if (kps.next) {
        kps.previous = kps.next;
        kps.next = undefined;
        this.deleteKeypair(kps.current);
      } else {
        kps.previous = kps.current;
      }
      this.deleteKeypair(previous);
      kps.current = kp;
    } else {
      this.deleteKeypair(kps.next);
      this.deleteKeypair(kps.previous);
      kps.next = kp;
      kps.previous = undefined;
    }
    timersSessionDerived(this.timerHost, peer);
  }

  /** @internal */
  deleteKeypair(kp: Keypair | undefined): void {
    if (!kp) return;
    this.indexTable.delete(kp.localIndex);
    kp.zero();
  }

  private zeroKeyMaterial(peer: Peer): void {
    const kps = peer.keypairs;
    this.deleteKeypair(kps.previous);
    this.deleteKeypair(kps.current);
    this.deleteKeypair(kps.next);
    kps.previous = kps.current = kps.next = undefined;
    this.indexTable.delete(peer.handshake.localIndex);
    peer.handshake.clear();
  }

  /** @internal Hand a decrypted, source-checked packet to the sink (dropped until one is attached). */
  deliver(packet: Uint8Array, peer: Peer): void {
    this.sink?.(packet, peer);
  }

  /** @internal Count a drop; always false, so callers can `return d.drop(...)`. */
  drop(reason: DropReason): false {
    this.stats.dropped[reason]++;
    return false;
  }

  /** Sum of all drop counters (for tests and status). */
  droppedTotal(): number {
    let n = 0;
    for (const v of Object.values(this.stats.dropped)) n += v;
    return n;
  }

  /** Test/diagnostic view of a peer's sessions. */
  sessionState(publicKey: Uint8Array): { current?: Keypair; previous?: Keypair; next?: Keypair; handshakeState: number } | undefined {
    const p = this.getPeer(publicKey);
    if (!p) return undefined;
    return { ...p.keypairs, handshakeState: p.handshake.state };
  }
}

export { HandshakeState };
