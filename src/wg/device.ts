/**
 * The WireGuard device: peers, cryptokey routing, handshakes, and the send/receive pipeline
 * (wireguard-go device/device.go, send.go, receive.go), single-threaded.
 *
 * Outbound:  sendPacket(ip) -> allowed IPs lookup (dst) -> peer -> staged queue
 *            -> current keypair valid? encrypt in place (header | ciphertext | tag) -> Bind.send
 *                                       : handshake initiation (packets wait in the queue)
 * Inbound:   Bind datagram -> receive(): type/size/reserved check
 *            -> handshake: MAC1, under-load (cookie reply / MAC2 / per-source rate limit), Noise
 *            -> transport: index -> keypair -> AEAD open in place -> replay window -> roaming
 *               -> allowed IPs source check -> onPacket(ip, peer)
 *
 * No sockets or OS timers here: I/O goes through the injected Bind and packet sink (a Tun, or the
 * pump's handler), time comes from the injected Clock, and timers fire from tick(), which an injected
 * Ticker (src/conn/ticker.ts) or the test calls. Each collaborator is given once: in the constructor, or
 * for the packet sink through attach(); a second sink throws DeviceWiringError. Hostile input is dropped
 * and counted in stats.dropped, never thrown.
 */
import type { Bind, Endpoint } from '../conn/bind.js';
import { endpointKey, sameEndpoint, sourceOf } from '../conn/bind.js';
import type { Clock } from '../clock.js';
import type { Ticker } from '../conn/ticker.js';
import { LatticeError } from '../errors.js';
import type { Tun } from '../tun/tun.js';
import { AllowedIPs } from './allowedips.js';
import {
  ChaChaPolyTagSize,
  DefaultMTU,
  MaxContentSize,
  MaxMessageSize,
  MessageTransportHeaderSize,
  MessageTransportOffsetContent,
  MessageTransportOffsetCounter,
  MessageTransportOffsetReceiver,
  MessageTransportSize,
  MessageType,
  PaddingMultiple,
  QueueStagedSize,
  RejectAfterMessages,
  RejectAfterTime,
  RekeyAfterMessages,
  RekeyAfterTime,
  RekeyTimeout,
  KeepaliveTimeout,
  RekeyTimeoutJitterMaxMs,
  UnderLoadAfterTime,
  UnderLoadHandshakesPerSecond,
} from './constants.js';
import { CookieChecker, sourceBytes } from './cookie.js';
import { defaultCrypto, type Crypto } from './crypto.js';
import { IndexTable } from './indextable.js';
import { innerAddresses, parsePrefix } from '../net/addr.js';
import { Keypair } from './keypair.js';
import { encodeKey } from './keys.js';
import {
  expectedSize,
  marshalInitiation,
  marshalResponse,
  messageType,
  readTransportCounter,
  readU32LE,
  unmarshalCookieReply,
  unmarshalInitiation,
  unmarshalResponse,
  writeTransportHeader,
} from './messages.js';
import {
  beginSymmetricSession,
  ConsumeError,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  HandshakeState,
  precompute,
  type StaticIdentity,
} from './noise-protocol.js';
import { Peer, type PeerConfig, type PeerStatus } from './peer.js';
import { HandshakeGuard } from './ratelimiter.js';
import {
  runTimers,
  nextDeadline,
  timersAnyAuthenticatedPacketReceived,
  timersAnyAuthenticatedPacketSent,
  timersAnyAuthenticatedPacketTraversal,
  timersDataReceived,
  timersDataSent,
  timersHandshakeComplete,
  timersHandshakeInitiated,
  timersSessionDerived,
  type TimerHost,
} from './timers.js';

export const DropReason = {
  InvalidHeader: 'invalidHeader', // reserved bytes set or shorter than a header
  UnknownType: 'unknownType',
  InvalidLength: 'invalidLength',
  BadMAC1: 'badMac1',
  CookieRequired: 'cookieRequired', // under load without a valid MAC2: answered with a cookie reply
  RateLimited: 'rateLimited',
  CookieBudget: 'cookieBudget', // under load without a valid MAC2, and no cookie reply to spare (see HandshakeGuard)
  HandshakeBudget: 'handshakeBudget', // the global budget for Noise (DH) work this second is spent
  // a handshake message that failed to consume (see noise-protocol.ts)
  ...ConsumeError,
  UnknownIndex: 'unknownIndex',
  BadCookieReply: 'badCookieReply',
  ExpiredKeypair: 'expiredKeypair',
  CounterLimit: 'counterLimit',
  Decrypt: 'decrypt',
  Replay: 'replay',
  BadInnerPacket: 'badInnerPacket',
  DisallowedSource: 'disallowedSource',
  // outbound
  NoRoute: 'noRoute',
  NoEndpoint: 'noEndpoint',
  StagedOverflow: 'stagedOverflow',
  HandshakeGaveUp: 'handshakeGaveUp',
  Closed: 'closed',
  /** A bug or an I/O edge that threw while handling a datagram: the datagram is dropped, the device lives on. */
  InternalError: 'internalError',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

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
  private readonly allowedIPs = new AllowedIPs<Peer>();
  private readonly indexTable: IndexTable<Peer, Keypair>;
  private readonly cookieChecker: CookieChecker;
  private readonly rateLimiter = new HandshakeGuard();
  private readonly underLoadThreshold: number;
  private loadWindowStart = -Infinity;
  private loadWindowCount = 0;
  private underLoadUntil = -Infinity;
  private lastGC = 0;
  private closed = false;
  private isUp = false;
  private readonly timerHost: TimerHost<Peer>;

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
    this.timerHost = {
      monotonic: () => this.clock.monotonic(),
      wall: () => this.clock.now(),
      jitter: () => {
        const b = c.randomBytes(2);
        return ((b[0] << 8) | b[1]) % RekeyTimeoutJitterMaxMs;
      },
      sendHandshakeInitiation: (p, isRetry) => this.sendHandshakeInitiation(p, isRetry),
      sendKeepalive: (p) => this.sendKeepalive(p),
      dropStaged: (p) => {
        this.stats.dropped.handshakeGaveUp += p.staged.length;
        p.staged = [];
      },
      zeroKeyMaterial: (p) => this.zeroKeyMaterial(p),
    };
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
    for (const p of this.peers.values()) if (p.persistentKeepaliveInterval > 0 && p.endpoint) this.sendKeepalive(p);
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
      else if (was === 0 && this.isUp && peer.endpoint) this.sendKeepalive(peer);
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

  // ---------------------------------------------------------------- send path

  /** Encrypt one IP packet to the peer its destination routes to. False if it was dropped. */
  sendPacket(packet: Uint8Array): boolean {
    if (this.closed) return this.drop(DropReason.Closed);
    if (packet.length > MaxContentSize) return this.drop(DropReason.BadInnerPacket);
    const v = packet.length > 0 ? packet[0] >> 4 : 0;
    let dst: Uint8Array;
    if (v === 4 && packet.length >= 20) dst = packet.subarray(16, 20);
    else if (v === 6 && packet.length >= 40) dst = packet.subarray(24, 40);
    else return this.drop(DropReason.BadInnerPacket);
    const peer = this.allowedIPs.lookup(dst);
    if (!peer) return this.drop(DropReason.NoRoute);
    if (!peer.endpoint) return this.drop(DropReason.NoEndpoint);
    // Fast path: a valid session and nothing queued ahead of this packet.
    const kp = peer.keypairs.current;
    if (peer.staged.length === 0 && kp && this.keypairUsable(kp)) {
      this.encryptAndSend(peer, kp, packet);
      this.keepKeyFreshSending(peer);
      return true;
    }
    this.stage(peer, packet);
    this.sendStagedPackets(peer);
    return true;
  }

  private stage(peer: Peer, packet: Uint8Array): void {
    if (peer.staged.length >= QueueStagedSize) {
      peer.staged.shift();
      this.stats.dropped.stagedOverflow++;
    }
    // Copy: the caller (a Tun read buffer) may reuse its buffer while we wait for a handshake.
    peer.staged.push(Uint8Array.from(packet));
  }

  private keypairUsable(kp: Keypair): boolean {
    return kp.sendNonce < RejectAfterMessages && this.clock.monotonic() - kp.created < RejectAfterTime;
  }

  private sendStagedPackets(peer: Peer): void {
    if (peer.staged.length === 0) return;
    const kp = peer.keypairs.current;
    if (!kp || !this.keypairUsable(kp)) {
      this.sendHandshakeInitiation(peer, false);
      return;
    }
    const staged = peer.staged;
    peer.staged = [];
    for (const pkt of staged) this.encryptAndSend(peer, kp, pkt);
    this.keepKeyFreshSending(peer);
  }

  private sendKeepalive(peer: Peer): void {
    if (peer.staged.length === 0) peer.staged.push(new Uint8Array(0));
    this.sendStagedPackets(peer);
  }

  private paddedLength(len: number): number {
    if (len === 0) return 0;
    let lastUnit = len;
    if (lastUnit > this.mtu) lastUnit %= this.mtu;
    let padded = (lastUnit + PaddingMultiple - 1) & ~(PaddingMultiple - 1);
    if (padded > this.mtu) padded = this.mtu;
    return len + (padded - lastUnit);
  }

  private encryptAndSend(peer: Peer, kp: Keypair, packet: Uint8Array): void {
    if (!peer.endpoint) {
      this.drop(DropReason.NoEndpoint);
      return;
    }
    const padded = this.paddedLength(packet.length);
    // One allocation per packet: the Bind may hold the buffer until the datagram is on the wire.
    const out = new Uint8Array(MessageTransportHeaderSize + padded + ChaChaPolyTagSize);
    const counter = kp.sendNonce++;
    writeTransportHeader(out, kp.remoteIndex, counter);
    out.set(packet, MessageTransportOffsetContent);
    // The AEAD nonce is 32 zero bits then the 64-bit little-endian counter (whitepaper 5.4.6).
    const nonce = kp.sendNonceBuf;
    for (let i = 0; i < 8; i++) nonce[4 + i] = out[MessageTransportOffsetCounter + i];
    this.crypto.sealInPlace(kp.send, nonce, out.subarray(MessageTransportOffsetContent), padded);
    if (packet.length > 0) timersDataSent(this.timerHost, peer);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketSent(this.timerHost, peer);
    peer.txBytes += out.length;
    this.stats.txPackets++;
    this.bind.send(out, peer.endpoint);
  }

  /** Initiator side rekey: after RekeyAfterMessages or RekeyAfterTime on a session we initiated. */
  private keepKeyFreshSending(peer: Peer): void {
    const kp = peer.keypairs.current;
    if (!kp) return;
    if (kp.sendNonce > RekeyAfterMessages || (kp.isInitiator && this.clock.monotonic() - kp.created > RekeyAfterTime)) {
      this.sendHandshakeInitiation(peer, false);
    }
  }

  /** If we initiated and the session is about to be rejected, try one last handshake. */
  private keepKeyFreshReceiving(peer: Peer): void {
    if (peer.timers.sentLastMinuteHandshake) return;
    const kp = peer.keypairs.current;
    if (kp && kp.isInitiator && this.clock.monotonic() - kp.created > RejectAfterTime - KeepaliveTimeout - RekeyTimeout) {
      peer.timers.sentLastMinuteHandshake = true;
      this.sendHandshakeInitiation(peer, false);
    }
  }

  private sendHandshakeInitiation(peer: Peer, isRetry: boolean): void {
    if (this.closed) return;
    if (!isRetry) peer.timers.handshakeAttempts = 0;
    const now = this.clock.monotonic();
    if (now - peer.handshake.lastSentHandshake < RekeyTimeout) return;
    if (!peer.endpoint) return;
    peer.handshake.lastSentHandshake = now;
    const hs = peer.handshake;
    this.indexTable.delete(hs.localIndex);
    const index = this.newIndex(peer);
    const msg = createInitiation(this.crypto, this.identity, hs, index, this.clock.now());
    if (!msg) {
      this.indexTable.delete(index);
      return;
    }
    const bytes = marshalInitiation(msg);
    peer.cookieGenerator.addMacs(bytes, now);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketSent(this.timerHost, peer);
    this.stats.handshakeInitiationsSent++;
    this.bind.send(bytes, peer.endpoint);
    timersHandshakeInitiated(this.timerHost, peer);
  }

  private newIndex(peer: Peer): number {
    for (;;) {
      const i = this.indexTable.newIndexForHandshake(peer);
      if (i !== 0) return i;
    }
  }

  // ---------------------------------------------------------------- receive path

  /** Handle one datagram from the Bind. The device may decrypt in place: the buffer becomes the device's. */
  receive(data: Uint8Array, from: Endpoint): void {
    if (this.closed) return;
    try {
      this.receiveUnchecked(data, from);
    } catch {
      this.drop(DropReason.InternalError);
    }
  }

  private receiveUnchecked(data: Uint8Array, from: Endpoint): void {
    if (data.length < 4) {
      this.drop(DropReason.InvalidHeader);
      return;
    }
    if (data.length > MaxMessageSize) {
      this.drop(DropReason.InvalidLength);
      return;
    }
    const type = messageType(data);
    if (type === 0) {
      this.drop(data[1] | data[2] | data[3] ? DropReason.InvalidHeader : DropReason.UnknownType);
      return;
    }
    const want = expectedSize(type);
    if (!want) {
      this.drop(DropReason.UnknownType);
      return;
    }
    if (want.exact ? data.length !== want.size : data.length < want.size) {
      this.drop(DropReason.InvalidLength);
      return;
    }
    switch (type) {
      case MessageType.Transport:
        this.receiveTransport(data, from);
        return;
      case MessageType.CookieReply:
        this.receiveCookieReply(data);
        return;
      default:
        this.receiveHandshake(type, data, from);
    }
  }

  private isUnderLoad(now: number): boolean {
    if (now - this.loadWindowStart >= 1_000) {
      this.loadWindowStart = now;
      this.loadWindowCount = 0;
    }
    this.loadWindowCount++;
    if (this.loadWindowCount > this.underLoadThreshold) this.underLoadUntil = now + UnderLoadAfterTime;
    return now < this.underLoadUntil;
  }

  /**
   * Handshake messages (whitepaper 5.3, wireguard-go receive.go), through the HandshakeGuard
   * (ratelimiter.ts). Under load, the per-source rate limiter runs *before* any hash: wireguard-go
   * applies it after MAC2, but it has worker threads to absorb a flood; on one thread, a single
   * source sending initiations with a valid MAC1 (built from our public key) would otherwise cost a
   * BLAKE2s and a cookie reply per packet and starve the transport path. Then, under load, a message
   * without a valid MAC2 gets a cookie reply only within the global reply budget and once per quiet
   * period per endpoint; and every message that reaches the Noise work (DH) takes a token from a
   * global budget. Hashing, sealing and DH a flood can buy are thus bounded per second across all
   * sources, and a legitimate peer still gets its cookie and completes.
   */
  private receiveHandshake(type: number, data: Uint8Array, from: Endpoint): void {
    const now = this.clock.monotonic();
    const underLoad = this.isUnderLoad(now);
    if (underLoad && !this.rateLimiter.admit(sourceOf(from), now)) {
      this.drop(DropReason.RateLimited);
      return;
    }
    if (!this.cookieChecker.checkMAC1(data)) {
      this.drop(DropReason.BadMAC1);
      return;
    }
    if (underLoad) {
      const src = from.kind === 'virtual' ? sourceBytes(sourceOf(from), 0) : sourceBytes(from.address, from.port);
      if (!this.cookieChecker.checkMAC2(data, src, now)) {
        if (!this.rateLimiter.mayReplyCookie(endpointKey(from), now)) {
          this.drop(DropReason.CookieBudget);
          return;
        }
        this.stats.cookieRepliesSent++;
        this.bind.send(this.cookieChecker.createReply(data, src, now), from);
        this.drop(DropReason.CookieRequired);
        return;
      }
    }
    if (!this.rateLimiter.mayConsume(now)) {
      this.drop(DropReason.HandshakeBudget);
      return;
    }
    if (type === MessageType.Initiation) this.receiveInitiation(data, from, now);
    else this.receiveResponse(data, from, now);
  }

  private receiveInitiation(data: Uint8Array, from: Endpoint, now: number): void {
    const msg = unmarshalInitiation(data);
    if (!msg) {
      this.drop(DropReason.InvalidLength);
      return;
    }
    const r = consumeInitiation(this.crypto, this.identity, msg, (pk) => this.peers.get(encodeKey(pk)), now);
    if ('error' in r) {
      this.drop(r.error);
      return;
    }
    const peer = r.peer;
    this.updateEndpoint(peer, from);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketReceived(this.timerHost, peer);
    // Respond.
    const hs = peer.handshake;
    this.indexTable.delete(hs.localIndex);
    const index = this.newIndex(peer);
    const resp = createResponse(this.crypto, hs, index);
    if (!resp) {
      this.indexTable.delete(index);
      this.drop(DropReason.LowOrderPoint);
      return;
    }
    const bytes = marshalResponse(resp);
    peer.cookieGenerator.addMacs(bytes, now);
    this.beginSession(peer);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketSent(this.timerHost, peer);
    this.stats.handshakeResponsesSent++;
    if (peer.endpoint) this.bind.send(bytes, peer.endpoint);
  }

  private receiveResponse(data: Uint8Array, from: Endpoint, _now: number): void {
    const msg = unmarshalResponse(data);
    if (!msg) {
      this.drop(DropReason.InvalidLength);
      return;
    }
    const entry = this.indexTable.lookup(msg.receiver);
    if (!entry || !entry.handshake) {
      this.drop(DropReason.UnknownIndex);
      return;
    }
    const peer = entry.peer;
    const err = consumeResponse(this.crypto, this.identity, peer.handshake, msg);
    if (err) {
      this.drop(err);
      return;
    }
    this.updateEndpoint(peer, from);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketReceived(this.timerHost, peer);
    this.beginSession(peer);
    timersHandshakeComplete(this.timerHost, peer);
    this.stats.handshakesCompleted++;
    // Confirm the session to the responder: staged data, or a keepalive.
    this.sendKeepalive(peer);
  }

  /** Derive the session and rotate keypairs (wireguard-go BeginSymmetricSession). */
  private beginSession(peer: Peer): void {
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

  private deleteKeypair(kp: Keypair | undefined): void {
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

  private receiveCookieReply(data: Uint8Array): void {
    const reply = unmarshalCookieReply(data);
    const entry = reply ? this.indexTable.lookup(reply.receiver) : undefined;
    if (!reply || !entry) {
      this.drop(DropReason.UnknownIndex);
      return;
    }
    const now = this.clock.monotonic();
    if (!entry.peer.cookieGenerator.consumeReply(reply, now)) {
      this.drop(DropReason.BadCookieReply);
      return;
    }
    this.stats.cookieRepliesReceived++;
    // Departure from wireguard-go, which waits for the retransmit (RekeyTimeout, 5 s): a pending
    // handshake is re-sent at once with MAC2, so a busy responder costs one more round trip, not 5 s.
    // At most once per RekeyTimeout per peer, so cookie replies cannot make us loop.
    const peer = entry.peer;
    if (entry.keypair === undefined && now - peer.lastCookieRetry >= RekeyTimeout) {
      peer.lastCookieRetry = now;
      peer.handshake.lastSentHandshake = -Infinity;
      this.sendHandshakeInitiation(peer, true);
    }
  }

  private receiveTransport(data: Uint8Array, from: Endpoint): void {
    const entry = this.indexTable.lookup(readU32LE(data, MessageTransportOffsetReceiver));
    const kp = entry?.keypair;
    if (!entry || !kp) {
      this.drop(DropReason.UnknownIndex);
      return;
    }
    const peer = entry.peer;
    const now = this.clock.monotonic();
    if (now - kp.created >= RejectAfterTime) {
      this.drop(DropReason.ExpiredKeypair);
      return;
    }
    const counter = readTransportCounter(data);
    if (!(counter < RejectAfterMessages)) {
      this.drop(DropReason.CounterLimit);
      return;
    }
    const nonce = kp.recvNonceBuf;
    for (let i = 0; i < 8; i++) nonce[4 + i] = data[MessageTransportOffsetCounter + i];
    const content = data.subarray(MessageTransportOffsetContent);
    if (!this.crypto.openInPlace(kp.receive, nonce, content)) {
      this.drop(DropReason.Decrypt);
      return;
    }
    if (!kp.replayFilter.validateCounter(counter, RejectAfterMessages)) {
      this.drop(DropReason.Replay);
      return;
    }
    // The first packet on a responder's new session confirms it.
    if (peer.keypairs.next === kp) {
      const kps = peer.keypairs;
      const old = kps.previous;
      kps.previous = kps.current;
      kps.current = kp;
      kps.next = undefined;
      this.deleteKeypair(old);
      timersHandshakeComplete(this.timerHost, peer);
      this.stats.handshakesCompleted++;
      this.sendStagedPackets(peer);
    }
    this.updateEndpoint(peer, from);
    this.keepKeyFreshReceiving(peer);
    timersAnyAuthenticatedPacketTraversal(this.timerHost, peer);
    timersAnyAuthenticatedPacketReceived(this.timerHost, peer);
    peer.rxBytes += data.length;
    if (data.length === MessageTransportSize) return; // keepalive
    timersDataReceived(this.timerHost, peer);
    const plain = content.subarray(0, content.length - ChaChaPolyTagSize);
    const inner = innerAddresses(plain);
    if (!inner) {
      this.drop(DropReason.BadInnerPacket);
      return;
    }
    if (this.allowedIPs.lookup(inner.src) !== peer) {
      this.drop(DropReason.DisallowedSource);
      return;
    }
    this.stats.rxPackets++;
    this.sink?.(plain.subarray(0, inner.length), peer);
  }

  /** Roaming: called only after a packet from `from` authenticated as `peer`. */
  private updateEndpoint(peer: Peer, from: Endpoint): void {
    const ep = peer.endpoint;
    if (ep && sameEndpoint(ep, from)) return;
    if (ep) this.stats.roams++;
    peer.endpoint = from.kind === 'virtual' ? from : { address: from.address, port: from.port };
  }

  private drop(reason: DropReason): false {
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
