/**
 * The inbound half of the WireGuard device (wireguard-go device/receive.go), single-threaded:
 *
 *   Bind datagram --> receive(): size (<= MaxMessageSize), type, reserved bytes, exact/minimum length
 *     |-- initiation/response --> receiveHandshake: under load? per-source rate limit (before any hash)
 *     |       --> MAC1 --> under load? MAC2 or a cookie reply within the reply budget --> DH budget
 *     |       |-- initiation --> receiveInitiation: consume (Noise), roam, respond, begin session
 *     |       `-- response   --> receiveResponse: index --> consume, roam, begin session, keepalive
 *     |-- cookie reply --> receiveCookieReply: index --> consume --> re-send a pending initiation now
 *     `-- transport --> receiveTransport: index --> keypair age, counter limit --> AEAD open in place
 *             --> replay window --> (responder: first packet confirms the next keypair) --> roam
 *             --> keepalive? stop : allowed IPs source check --> the device's packet sink
 *
 * Functions over the Device's state (see send.ts for why). Hostile input is dropped and counted in
 * stats.dropped, never thrown and never answered (except the cookie reply the protocol asks for).
 */
import type { Endpoint } from '../conn/bind.js';
import { endpointKey, sameEndpoint, sourceOf } from '../conn/bind.js';
import { innerAddresses } from '../net/addr.js';
import {
  ChaChaPolyTagSize,
  KeepaliveTimeout,
  MaxMessageSize,
  MessageTransportOffsetContent,
  MessageTransportOffsetCounter,
  MessageTransportOffsetReceiver,
  MessageTransportSize,
  MessageType,
  RejectAfterMessages,
  RejectAfterTime,
  RekeyTimeout,
  UnderLoadAfterTime,
} from './constants.js';
import { sourceBytes } from './cookie.js';
import type { Device } from './device.js';
import { DropReason } from './drop.js';
import { expectedSize, marshalResponse, messageType, readTransportCounter, readU32LE, unmarshalCookieReply, unmarshalInitiation, unmarshalResponse } from './messages.js';
import { consumeInitiation, consumeResponse, createResponse } from './noise-protocol.js';
import type { Peer } from './peer.js';
import { sendHandshakeInitiation, sendKeepalive, sendStagedPackets } from './send.js';
import { timersAnyAuthenticatedPacketReceived, timersAnyAuthenticatedPacketSent, timersAnyAuthenticatedPacketTraversal, timersDataReceived, timersHandshakeComplete } from './timers.js';

/** Handle one datagram from the Bind. The device may decrypt in place: the buffer becomes the device's. */
export function receive(d: Device, data: Uint8Array, from: Endpoint): void {
  if (d.isClosed) return;
  try {
    receiveUnchecked(d, data, from);
  } catch {
    d.drop(DropReason.InternalError);
  }
}

function receiveUnchecked(d: Device, data: Uint8Array, from: Endpoint): void {
  if (data.length < 4) {
    d.drop(DropReason.InvalidHeader);
    return;
  }
  if (data.length > MaxMessageSize) {
    d.drop(DropReason.InvalidLength);
    return;
  }
  const type = messageType(data);
  if (type === 0) {
    d.drop(data[1] | data[2] | data[3] ? DropReason.InvalidHeader : DropReason.UnknownType);
    return;
  }
  const want = expectedSize(type);
  if (!want) {
    d.drop(DropReason.UnknownType);
    return;
  }
  if (want.exact ? data.length !== want.size : data.length < want.size) {
    d.drop(DropReason.InvalidLength);
    return;
  }
  switch (type) {
    case MessageType.Transport:
      receiveTransport(d, data, from);
      return;
    case MessageType.CookieReply:
      receiveCookieReply(d, data);
      return;
    default:
      receiveHandshake(d, type, data, from);
  }
}

/** Count one handshake message in the current one-second window; true while the device is under load. */
function isUnderLoad(d: Device, now: number): boolean {
  const load = d.load;
  if (now - load.windowStart >= 1_000) {
    load.windowStart = now;
    load.windowCount = 0;
  }
  load.windowCount++;
  if (load.windowCount > d.underLoadThreshold) load.until = now + UnderLoadAfterTime;
  return now < load.until;
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
function receiveHandshake(d: Device, type: number, data: Uint8Array, from: Endpoint): void {
  const now = d.clock.monotonic();
  const underLoad = isUnderLoad(d, now);
  if (underLoad && !d.rateLimiter.admit(sourceOf(from), now)) {
    d.drop(DropReason.RateLimited);
    return;
  }
  if (!d.cookieChecker.checkMAC1(data)) {
    d.drop(DropReason.BadMAC1);
    return;
  }
  if (underLoad) {
    const src = from.kind === 'virtual' ? sourceBytes(sourceOf(from), 0) : sourceBytes(from.address, from.port);
    if (!d.cookieChecker.checkMAC2(data, src, now)) {
      if (!d.rateLimiter.mayReplyCookie(endpointKey(from), now)) {
        d.drop(DropReason.CookieBudget);
        return;
      }
      d.stats.cookieRepliesSent++;
      d.bind.send(d.cookieChecker.createReply(data, src, now), from);
      d.drop(DropReason.CookieRequired);
      return;
    }
  }
  if (!d.rateLimiter.mayConsume(now)) {
    d.drop(DropReason.HandshakeBudget);
    return;
  }
  if (type === MessageType.Initiation) receiveInitiation(d, data, from, now);
  else receiveResponse(d, data, from);
}

/** A handshake initiation that passed the MAC checks: consume it, then answer with a response (5.4.3). */
function receiveInitiation(d: Device, data: Uint8Array, from: Endpoint, now: number): void {
  const msg = unmarshalInitiation(data);
  if (!msg) {
    d.drop(DropReason.InvalidLength);
    return;
  }
  const r = consumeInitiation(d.crypto, d.identity, msg, (pk) => d.getPeer(pk), now);
  if ('error' in r) {
    d.drop(r.error);
    return;
  }
  const peer = r.peer;
  updateEndpoint(d, peer, from);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketReceived(d.timerHost, peer);
  // Respond.
  const hs = peer.handshake;
  d.indexTable.delete(hs.localIndex);
  const index = d.newIndex(peer);
  const resp = createResponse(d.crypto, hs, index);
  if (!resp) {
    d.indexTable.delete(index);
    d.drop(DropReason.LowOrderPoint);
    return;
  }
  const bytes = marshalResponse(resp);
  peer.cookieGenerator.addMacs(bytes, now);
  d.beginSession(peer);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketSent(d.timerHost, peer);
  d.stats.handshakeResponsesSent++;
  if (peer.endpoint) d.bind.send(bytes, peer.endpoint);
}

function receiveResponse(d: Device, data: Uint8Array, from: Endpoint): void {
  const msg = unmarshalResponse(data);
  if (!msg) {
    d.drop(DropReason.InvalidLength);
    return;
  }
  const entry = d.indexTable.lookup(msg.receiver);
  if (!entry || !entry.handshake) {
    d.drop(DropReason.UnknownIndex);
    return;
  }
  const peer = entry.peer;
  const err = consumeResponse(d.crypto, d.identity, peer.handshake, msg);
  if (err) {
    d.drop(err);
    return;
  }
  updateEndpoint(d, peer, from);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketReceived(d.timerHost, peer);
  d.beginSession(peer);
  timersHandshakeComplete(d.timerHost, peer);
  d.stats.handshakesCompleted++;
  // Confirm the session to the responder: staged data, or a keepalive.
  sendKeepalive(d, peer);
}

function receiveCookieReply(d: Device, data: Uint8Array): void {
  const reply = unmarshalCookieReply(data);
  const entry = reply ? d.indexTable.lookup(reply.receiver) : undefined;
  if (!reply || !entry) {
    d.drop(DropReason.UnknownIndex);
    return;
  }
  const now = d.clock.monotonic();
  if (!entry.peer.cookieGenerator.consumeReply(reply, now)) {
    d.drop(DropReason.BadCookieReply);
    return;
  }
  d.stats.cookieRepliesReceived++;
  // Departure from wireguard-go, which waits for the retransmit (RekeyTimeout, 5 s): a pending
  // handshake is re-sent at once with MAC2, so a busy responder costs one more round trip, not 5 s.
  // At most once per RekeyTimeout per peer, so cookie replies cannot make us loop.
  const peer = entry.peer;
  if (entry.keypair === undefined && now - peer.lastCookieRetry >= RekeyTimeout) {
    peer.lastCookieRetry = now;
    peer.handshake.lastSentHandshake = -Infinity;
    sendHandshakeInitiation(d, peer, true);
  }
}

function receiveTransport(d: Device, data: Uint8Array, from: Endpoint): void {
  const entry = d.indexTable.lookup(readU32LE(data, MessageTransportOffsetReceiver));
  const kp = entry?.keypair;
  if (!entry || !kp) {
    d.drop(DropReason.UnknownIndex);
    return;
  }
  const peer = entry.peer;
  const now = d.clock.monotonic();
  if (now - kp.created >= RejectAfterTime) {
    d.drop(DropReason.ExpiredKeypair);
    return;
  }
  const counter = readTransportCounter(data);
  if (!(counter < RejectAfterMessages)) {
    d.drop(DropReason.CounterLimit);
    return;
  }
  const nonce = kp.recvNonceBuf;
  for (let i = 0; i < 8; i++) nonce[4 + i] = data[MessageTransportOffsetCounter + i];
  const content = data.subarray(MessageTransportOffsetContent);
  if (!d.crypto.openInPlace(kp.receive, nonce, content)) {
    d.drop(DropReason.Decrypt);
    return;
  }
  if (!kp.replayFilter.validateCounter(counter, RejectAfterMessages)) {
    d.drop(DropReason.Replay);
    return;
  }
  // The first packet on a responder's new session confirms it.
  if (peer.keypairs.next === kp) {
    const kps = peer.keypairs;
    const old = kps.previous;
    kps.previous = kps.current;
    kps.current = kp;
    kps.next = undefined;
    d.deleteKeypair(old);
    timersHandshakeComplete(d.timerHost, peer);
    d.stats.handshakesCompleted++;
    sendStagedPackets(d, peer);
  }
  updateEndpoint(d, peer, from);
  keepKeyFreshReceiving(d, peer);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketReceived(d.timerHost, peer);
  peer.rxBytes += data.length;
  if (data.length === MessageTransportSize) return; // keepalive
  timersDataReceived(d.timerHost, peer);
  const plain = content.subarray(0, content.length - ChaChaPolyTagSize);
  const inner = innerAddresses(plain);
  if (!inner) {
    d.drop(DropReason.BadInnerPacket);
    return;
  }
  if (d.allowedIPs.lookup(inner.src) !== peer) {
    d.drop(DropReason.DisallowedSource);
    return;
  }
  d.stats.rxPackets++;
  d.deliver(plain.subarray(0, inner.length), peer);
}

/** If we initiated and the session is about to be rejected, try one last handshake. */
function keepKeyFreshReceiving(d: Device, peer: Peer): void {
  if (peer.timers.sentLastMinuteHandshake) return;
  const kp = peer.keypairs.current;
  if (kp && kp.isInitiator && d.clock.monotonic() - kp.created > RejectAfterTime - KeepaliveTimeout - RekeyTimeout) {
    peer.timers.sentLastMinuteHandshake = true;
    sendHandshakeInitiation(d, peer, false);
  }
}

/** Roaming: called only after a packet from `from` authenticated as `peer`. */
function updateEndpoint(d: Device, peer: Peer, from: Endpoint): void {
  const ep = peer.endpoint;
  if (ep && sameEndpoint(ep, from)) return;
  if (ep) d.stats.roams++;
  peer.endpoint = from.kind === 'virtual' ? from : { address: from.address, port: from.port };
}
