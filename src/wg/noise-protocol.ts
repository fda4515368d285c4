/**
 * Noise_IKpsk2 as WireGuard uses it (whitepaper section 5.4.2-5.4.4). Pure: keys, messages and time in;
 * messages and handshake state out. Each step is commented with the Noise tokens it implements.
 * Consume functions never throw on peer input: they return a drop reason instead.
 */
import type { Crypto } from './crypto.js';
import { isZero } from './crypto.js';
import { KDF2, KDF3, mixHash, mixKey } from './noise-helpers.js';
import { HandshakeInitationRate, NoiseConstruction, WGIdentifier } from './constants.js';
import type { MessageInitiation, MessageResponse } from './messages.js';
import { tai64n, timestampAfter, TimestampSize } from './tai64n.js';

export const HandshakeState = {
  Zeroed: 0,
  InitiationCreated: 1,
  InitiationConsumed: 2,
  ResponseCreated: 3,
  ResponseConsumed: 4,
} as const;
export type HandshakeState = (typeof HandshakeState)[keyof typeof HandshakeState];

const enc = new TextEncoder();
/**
 * The initial chaining key and hash (whitepaper 5.4.2): Ci = HASH(Construction), Hi = HASH(Ci || Identifier).
 * Computed with the caller's Crypto on every handshake (two BLAKE2s, small next to the four DH) rather
 * than cached at module level, where the first Crypto to call would have won for every later one.
 */
function initialState(c: Crypto): { chainKey: Uint8Array; hash: Uint8Array } {
  const chainKey = c.hash(enc.encode(NoiseConstruction));
  return { chainKey, hash: c.hash(chainKey, enc.encode(WGIdentifier)) };
}

export interface StaticIdentity {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

/** Per-peer handshake state (wireguard-go's Handshake). */
export class Handshake {
  state: HandshakeState = HandshakeState.Zeroed;
  hash: Uint8Array = new Uint8Array(32);
  chainKey: Uint8Array = new Uint8Array(32);
  presharedKey: Uint8Array = new Uint8Array(32);
  localEphemeral: Uint8Array = new Uint8Array(32);
  localIndex = 0;
  remoteIndex = 0;
  remoteEphemeral: Uint8Array = new Uint8Array(32);
  /** DH(local static, remote static); all zeros if the peer's key is low-order (handshakes then fail). */
  precomputedStaticStatic: Uint8Array = new Uint8Array(32);
  lastTimestamp: Uint8Array = new Uint8Array(TimestampSize);
  lastInitiationConsumption = -Infinity;
  lastSentHandshake = -Infinity;

  constructor(readonly remoteStatic: Uint8Array) {}

  clear(): void {
    this.localEphemeral.fill(0);
    this.remoteEphemeral.fill(0);
    this.chainKey.fill(0);
    this.hash.fill(0);
    this.localIndex = 0;
    this.state = HandshakeState.Zeroed;
  }
}

export function precompute(c: Crypto, local: StaticIdentity, hs: Handshake): void {
  const ss = c.dh(local.privateKey, hs.remoteStatic);
  hs.precomputedStaticStatic = ss ?? new Uint8Array(32);
}

/** Initiator: msg = (e, es, s, ss, {timestamp}). MACs are added by the caller (cookie.ts). */
export function createInitiation(
  c: Crypto,
  local: StaticIdentity,
  hs: Handshake,
  senderIndex: number,
  wallNow: number,
): MessageInitiation | null {
  if (isZero(hs.precomputedStaticStatic)) return null;
  const init = initialState(c);
  let hash = mixHash(c, init.hash, hs.remoteStatic);
  // e
  const ePriv = c.generatePrivateKey();
  const ePub = c.publicKey(ePriv);
  let chainKey = mixKey(c, init.chainKey, ePub);
  hash = mixHash(c, hash, ePub);
  // es
  const es = c.dh(ePriv, hs.remoteStatic);
  if (!es) return null;
  let key: Uint8Array;
  [chainKey, key] = KDF2(c, chainKey, es);
  // s
  const encStatic = c.seal(key, 0, local.publicKey, hash);
  hash = mixHash(c, hash, encStatic);
  // ss
  [chainKey, key] = KDF2(c, chainKey, hs.precomputedStaticStatic);
  // {timestamp}
  const encTimestamp = c.seal(key, 0, tai64n(wallNow), hash);
  hash = mixHash(c, hash, encTimestamp);

  hs.localEphemeral = ePriv;
  hs.chainKey = chainKey;
  hs.hash = hash;
  hs.localIndex = senderIndex;
  hs.state = HandshakeState.InitiationCreated;
  return {
    sender: senderIndex,
    ephemeral: ePub,
    static: encStatic,
    timestamp: encTimestamp,
    mac1: new Uint8Array(16),
    mac2: new Uint8Array(16),
  };
}

export const ConsumeError = {
  LowOrderPoint: 'lowOrderPoint',
  DecryptStatic: 'decryptStatic',
  UnknownPeer: 'unknownPeer',
  DecryptTimestamp: 'decryptTimestamp',
  StaleTimestamp: 'staleTimestamp',
  InitiationFlood: 'initiationFlood',
  WrongState: 'wrongState',
  DecryptEmpty: 'decryptEmpty',
} as const;
export type ConsumeError = (typeof ConsumeError)[keyof typeof ConsumeError];

/** Responder: consume (e, es, s, ss, {timestamp}); on success the peer's handshake moves to InitiationConsumed. */
export function consumeInitiation<P extends { handshake: Handshake }>(
  c: Crypto,
  local: StaticIdentity,
  msg: MessageInitiation,
  lookupPeer: (publicKey: Uint8Array) => P | undefined,
  monoNow: number,
): { peer: P } | { error: ConsumeError } {
  const init = initialState(c);
  let hash = mixHash(c, init.hash, local.publicKey);
  // e
  hash = mixHash(c, hash, msg.ephemeral);
  let chainKey = mixKey(c, init.chainKey, msg.ephemeral);
  // es
  const es = c.dh(local.privateKey, msg.ephemeral);
  if (!es) return { error: ConsumeError.LowOrderPoint };
  let key: Uint8Array;
  [chainKey, key] = KDF2(c, chainKey, es);
  // s
  const peerPK = c.open(key, 0, msg.static, hash);
  if (!peerPK) return { error: ConsumeError.DecryptStatic };
  hash = mixHash(c, hash, msg.static);
  const peer = lookupPeer(peerPK);
  if (!peer) return { error: ConsumeError.UnknownPeer };
  const hs = peer.handshake;
  if (isZero(hs.precomputedStaticStatic)) return { error: ConsumeError.LowOrderPoint };
  // ss
  [chainKey, key] = KDF2(c, chainKey, hs.precomputedStaticStatic);
  // {timestamp}
  const timestamp = c.open(key, 0, msg.timestamp, hash);
  if (!timestamp) return { error: ConsumeError.DecryptTimestamp };
  hash = mixHash(c, hash, msg.timestamp);
  // Replay protection: a timestamp must be newer than any accepted before; flood protection: rate per peer.
  if (!timestampAfter(timestamp, hs.lastTimestamp)) return { error: ConsumeError.StaleTimestamp };
  if (monoNow - hs.lastInitiationConsumption <= HandshakeInitationRate) return { error: ConsumeError.InitiationFlood };

  hs.hash = hash;
  hs.chainKey = chainKey;
  hs.remoteIndex = msg.sender;
  hs.remoteEphemeral = Uint8Array.from(msg.ephemeral);
  hs.lastTimestamp = timestamp;
  hs.lastInitiationConsumption = monoNow;
  hs.state = HandshakeState.InitiationConsumed;
  return { peer };
}

/** Responder: msg = (e, ee, se, psk, {}). */
export function createResponse(c: Crypto, hs: Handshake, senderIndex: number): MessageResponse | null {
  if (hs.state !== HandshakeState.InitiationConsumed) return null;
  // e
  const ePriv = c.generatePrivateKey();
  const ePub = c.publicKey(ePriv);
  let hash = mixHash(c, hs.hash, ePub);
  let chainKey = mixKey(c, hs.chainKey, ePub);
  // ee
  const ee = c.dh(ePriv, hs.remoteEphemeral);
  if (!ee) return null;
  chainKey = mixKey(c, chainKey, ee);
  // se
  const se = c.dh(ePriv, hs.remoteStatic);
  if (!se) return null;
  chainKey = mixKey(c, chainKey, se);
  // psk
  const [ck, tau, key] = KDF3(c, chainKey, hs.presharedKey);
  chainKey = ck;
  hash = mixHash(c, hash, tau);
  // {}
  const empty = c.seal(key, 0, new Uint8Array(0), hash);
  hash = mixHash(c, hash, empty);

  hs.hash = hash;
  hs.chainKey = chainKey;
  hs.localEphemeral = ePriv;
  hs.localIndex = senderIndex;
  hs.state = HandshakeState.ResponseCreated;
  return { sender: senderIndex, receiver: hs.remoteIndex, ephemeral: ePub, empty, mac1: new Uint8Array(16), mac2: new Uint8Array(16) };
}

/** Initiator: consume (e, ee, se, psk, {}). The caller found `hs` by msg.receiver in the index table. */
export function consumeResponse(
  c: Crypto,
  local: StaticIdentity,
  hs: Handshake,
  msg: MessageResponse,
): ConsumeError | null {
  if (hs.state !== HandshakeState.InitiationCreated || msg.receiver !== hs.localIndex) return ConsumeError.WrongState;
  // e
  let hash = mixHash(c, hs.hash, msg.ephemeral);
  let chainKey = mixKey(c, hs.chainKey, msg.ephemeral);
  // ee
  const ee = c.dh(hs.localEphemeral, msg.ephemeral);
  if (!ee) return ConsumeError.LowOrderPoint;
  chainKey = mixKey(c, chainKey, ee);
  // se
  const se = c.dh(local.privateKey, msg.ephemeral);
  if (!se) return ConsumeError.LowOrderPoint;
  chainKey = mixKey(c, chainKey, se);
  // psk
  const [ck, tau, key] = KDF3(c, chainKey, hs.presharedKey);
  chainKey = ck;
  hash = mixHash(c, hash, tau);
  // {}
  if (!c.open(key, 0, msg.empty, hash)) return ConsumeError.DecryptEmpty;
  hash = mixHash(c, hash, msg.empty);

  hs.hash = hash;
  hs.chainKey = chainKey;
  hs.remoteIndex = msg.sender;
  hs.state = HandshakeState.ResponseConsumed;
  return null;
}

export interface SessionKeys {
  send: Uint8Array;
  receive: Uint8Array;
  isInitiator: boolean;
  localIndex: number;
  remoteIndex: number;
}

/** Derive transport keys (T_send, T_recv) = KDF2(C, empty) and wipe the handshake. */
export function beginSymmetricSession(c: Crypto, hs: Handshake): SessionKeys | null {
  let send: Uint8Array;
  let receive: Uint8Array;
  let isInitiator: boolean;
  if (hs.state === HandshakeState.ResponseConsumed) {
    [send, receive] = KDF2(c, hs.chainKey, new Uint8Array(0));
    isInitiator = true;
  } else if (hs.state === HandshakeState.ResponseCreated) {
    [receive, send] = KDF2(c, hs.chainKey, new Uint8Array(0));
    isInitiator = false;
  } else {
    return null;
  }
  const keys = { send, receive, isInitiator, localIndex: hs.localIndex, remoteIndex: hs.remoteIndex };
  hs.clear();
  return keys;
}
