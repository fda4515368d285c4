/**
 * The outbound half of the WireGuard device (wireguard-go device/send.go), single-threaded:
 *
 *   sendPacket(ip) --size/version--> allowed IPs lookup (dst) --> peer
 *     |  current keypair usable and nothing staged?
 *     |-- yes --> encryptAndSend: header | padded plaintext sealed in place | tag --> Bind.send
 *     |           (in the device's one reused send buffer when the Bind copies: no allocation per packet)
 *     `-- no  --> stage (copy, at most QueueStagedSize; the oldest is dropped)
 *                 --> sendStagedPackets: usable keypair? flush the queue : sendHandshakeInitiation
 *   keepKeyFreshSending: after RekeyAfterMessages, or RekeyAfterTime on a session we initiated --> initiation
 *   sendKeepalive: an empty transport message through the same queue (timers.ts and receive.ts call it)
 *
 * Functions over the Device's state rather than methods, as wireguard-go spreads one type's methods over
 * device.go, send.go and receive.go. Each returns nothing or whether the packet was taken; drops are
 * counted on the device, never thrown.
 */
import type { Device } from './device.js';
import { DropReason } from './drop.js';
import {
  ChaChaPolyTagSize,
  MaxContentSize,
  MessageTransportHeaderSize,
  MessageTransportOffsetContent,
  MessageTransportOffsetCounter,
  PaddingMultiple,
  QueueStagedSize,
  RejectAfterMessages,
  RejectAfterTime,
  RekeyAfterMessages,
  RekeyAfterTime,
  RekeyTimeout,
} from './constants.js';
import type { Keypair } from './keypair.js';
import { marshalInitiation, writeTransportHeader } from './messages.js';
import { createInitiation } from './noise-protocol.js';
import type { Peer } from './peer.js';
import { timersAnyAuthenticatedPacketSent, timersAnyAuthenticatedPacketTraversal, timersDataSent, timersHandshakeInitiated } from './timers.js';

/** IPv4 destination address: bytes 16..20 of the header (RFC 791 section 3.1). */
const IPv4DstOffset = 16;
const IPv4HeaderSize = 20;
/** IPv6 destination address: bytes 24..40 of the header (RFC 8200 section 3). */
const IPv6DstOffset = 24;
const IPv6HeaderSize = 40;

/** Encrypt one IP packet to the peer its destination routes to. False if it was dropped. */
export function sendPacket(d: Device, packet: Uint8Array): boolean {
  if (d.isClosed) return d.drop(DropReason.Closed);
  if (packet.length > MaxContentSize) return d.drop(DropReason.BadInnerPacket);
  const v = packet.length > 0 ? packet[0] >> 4 : 0;
  let dst: Uint8Array;
  if (v === 4 && packet.length >= IPv4HeaderSize) dst = packet.subarray(IPv4DstOffset, IPv4DstOffset + 4);
  else if (v === 6 && packet.length >= IPv6HeaderSize) dst = packet.subarray(IPv6DstOffset, IPv6DstOffset + 16);
  else return d.drop(DropReason.BadInnerPacket);
  const peer = d.allowedIPs.lookup(dst);
  if (!peer) return d.drop(DropReason.NoRoute);
  if (!peer.endpoint) return d.drop(DropReason.NoEndpoint);
  // Fast path: a valid session and nothing queued ahead of this packet.
  const kp = peer.keypairs.current;
  if (peer.staged.length === 0 && kp && keypairUsable(d, kp)) {
    encryptAndSend(d, peer, kp, packet);
    keepKeyFreshSending(d, peer);
    return true;
  }
  stage(d, peer, packet);
  sendStagedPackets(d, peer);
  return true;
}

function stage(d: Device, peer: Peer, packet: Uint8Array): void {
  if (peer.staged.length >= QueueStagedSize) {
    peer.staged.shift();
    d.stats.dropped.stagedOverflow++;
  }
  // Copy: the caller (a Tun read buffer) may reuse its buffer while we wait for a handshake.
  peer.staged.push(Uint8Array.from(packet));
}

function keypairUsable(d: Device, kp: Keypair): boolean {
  return kp.sendNonce < RejectAfterMessages && d.clock.monotonic() - kp.created < RejectAfterTime;
}

/** Flush the peer's queue through its current keypair, or start a handshake if it has none usable. */
export function sendStagedPackets(d: Device, peer: Peer): void {
  if (peer.staged.length === 0) return;
  const kp = peer.keypairs.current;
  if (!kp || !keypairUsable(d, kp)) {
    sendHandshakeInitiation(d, peer, false);
    return;
  }
  const staged = peer.staged;
  peer.staged = [];
  for (const pkt of staged) encryptAndSend(d, peer, kp, pkt);
  keepKeyFreshSending(d, peer);
}

/** An empty transport message (whitepaper 6.5), queued behind anything already staged. */
export function sendKeepalive(d: Device, peer: Peer): void {
  if (peer.staged.length === 0) peer.staged.push(new Uint8Array(0));
  sendStagedPackets(d, peer);
}

/** Plaintext length padded to a multiple of 16, never beyond the MTU (whitepaper 5.4.6). */
function paddedLength(mtu: number, len: number): number {
  if (len === 0) return 0;
  let lastUnit = len;
  if (lastUnit > mtu) lastUnit %= mtu;
  let padded = (lastUnit + PaddingMultiple - 1) & ~(PaddingMultiple - 1);
  if (padded > mtu) padded = mtu;
  return len + (padded - lastUnit);
}

function encryptAndSend(d: Device, peer: Peer, kp: Keypair, packet: Uint8Array): void {
  if (!peer.endpoint) {
    d.drop(DropReason.NoEndpoint);
    return;
  }
  const padded = paddedLength(d.mtu, packet.length);
  const size = MessageTransportHeaderSize + padded + ChaChaPolyTagSize;
  // A Bind that is done with the bytes when send() returns gets the device's one reused buffer (no
  // allocation per packet); one that may keep them gets a fresh buffer it then owns.
  const out = d.bind.sendCopies ? d.sendBuffer.subarray(0, size) : new Uint8Array(size);
  const counter = kp.sendNonce++;
  writeTransportHeader(out, kp.remoteIndex, counter);
  out.set(packet, MessageTransportOffsetContent);
  // Padding is zeros (whitepaper 5.4.6); the reused buffer still holds the previous packet there.
  out.fill(0, MessageTransportOffsetContent + packet.length, MessageTransportOffsetContent + padded);
  // The AEAD nonce is 32 zero bits then the 64-bit little-endian counter (whitepaper 5.4.6).
  const nonce = kp.sendNonceBuf;
  for (let i = 0; i < 8; i++) nonce[4 + i] = out[MessageTransportOffsetCounter + i];
  d.crypto.sealInPlace(kp.send, nonce, out.subarray(MessageTransportOffsetContent), padded);
  if (packet.length > 0) timersDataSent(d.timerHost, peer);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketSent(d.timerHost, peer);
  peer.txBytes += out.length;
  d.stats.txPackets++;
  d.bind.send(out, peer.endpoint);
}

/** Initiator side rekey: after RekeyAfterMessages or RekeyAfterTime on a session we initiated. */
function keepKeyFreshSending(d: Device, peer: Peer): void {
  const kp = peer.keypairs.current;
  if (!kp) return;
  if (kp.sendNonce > RekeyAfterMessages || (kp.isInitiator && d.clock.monotonic() - kp.created > RekeyAfterTime)) {
    sendHandshakeInitiation(d, peer, false);
  }
}

/** Send a handshake initiation (whitepaper 5.4.2), at most one per RekeyTimeout per peer. */
export function sendHandshakeInitiation(d: Device, peer: Peer, isRetry: boolean): void {
  if (d.isClosed) return;
  if (!isRetry) peer.timers.handshakeAttempts = 0;
  const now = d.clock.monotonic();
  if (now - peer.handshake.lastSentHandshake < RekeyTimeout) return;
  if (!peer.endpoint) return;
  peer.handshake.lastSentHandshake = now;
  const hs = peer.handshake;
  d.indexTable.delete(hs.localIndex);
  const index = d.newIndex(peer);
  const msg = createInitiation(d.crypto, d.identity, hs, index, d.clock.now());
  if (!msg) {
    d.indexTable.delete(index);
    return;
  }
  const bytes = marshalInitiation(msg);
  peer.cookieGenerator.addMacs(bytes, now);
  timersAnyAuthenticatedPacketTraversal(d.timerHost, peer);
  timersAnyAuthenticatedPacketSent(d.timerHost, peer);
  d.stats.handshakeInitiationsSent++;
  d.bind.send(bytes, peer.endpoint);
  timersHandshakeInitiated(d.timerHost, peer);
}
