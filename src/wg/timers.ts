/**
 * Per-peer timers, a port of the kernel's timers.c (and wireguard-go device/timers.go). Timers are
 * deadlines in monotonic ms, not OS timers: Device.tick(now) fires the expired ones, so tests drive
 * them with a ManualClock. `timers*` functions are the event hooks ("call after ..."); `expired*`
 * are the handlers.
 */
import {
  KeepaliveTimeout,
  MaxTimerHandshakes,
  RejectAfterTime,
  RekeyTimeout,
  RekeyTimeoutJitterMaxMs,
} from './constants.js';

export class PeerTimers {
  retransmitHandshake = Infinity;
  sendKeepalive = Infinity;
  newHandshake = Infinity;
  zeroKeyMaterial = Infinity;
  persistentKeepalive = Infinity;
  handshakeAttempts = 0;
  needAnotherKeepalive = false;
  sentLastMinuteHandshake = false;

  stopAll(): void {
    this.retransmitHandshake = Infinity;
    this.sendKeepalive = Infinity;
    this.newHandshake = Infinity;
    this.zeroKeyMaterial = Infinity;
    this.persistentKeepalive = Infinity;
  }
}

/** What the timers need from a peer; Peer (peer.ts) implements it. */
export interface TimerPeer {
  timers: PeerTimers;
  persistentKeepaliveInterval: number; // seconds, 0 = off
  lastHandshakeWall: number;
}

/** What the timers need from the device: both clocks, jitter, and the actions they trigger. Device builds one. */
export interface TimerHost<P extends TimerPeer> {
  monotonic(): number;
  wall(): number;
  jitter(): number;
  sendHandshakeInitiation(peer: P, isRetry: boolean): void;
  sendKeepalive(peer: P): void;
  dropStaged(peer: P): void;
  zeroKeyMaterial(peer: P): void;
}

const pending = (deadline: number): boolean => deadline !== Infinity;

// ---- expired handlers ----

function expiredRetransmitHandshake<P extends TimerPeer>(h: TimerHost<P>, p: P, now: number): void {
  const t = p.timers;
  if (t.handshakeAttempts > MaxTimerHandshakes) {
    // Give up after RekeyAttemptTime: drop what waits for the session and schedule wiping the keys.
    t.sendKeepalive = Infinity;
    h.dropStaged(p);
    if (!pending(t.zeroKeyMaterial)) t.zeroKeyMaterial = now + RejectAfterTime * 3;
    return;
  }
  t.handshakeAttempts++;
  h.sendHandshakeInitiation(p, true);
}

function expiredSendKeepalive<P extends TimerPeer>(h: TimerHost<P>, p: P, now: number): void {
  h.sendKeepalive(p);
  if (p.timers.needAnotherKeepalive) {
    p.timers.needAnotherKeepalive = false;
    p.timers.sendKeepalive = now + KeepaliveTimeout;
  }
}

function expiredNewHandshake<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  // We sent data but heard nothing back for KeepaliveTimeout + RekeyTimeout: try a new session.
  h.sendHandshakeInitiation(p, false);
}

function expiredZeroKeyMaterial<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  h.zeroKeyMaterial(p);
}

function expiredPersistentKeepalive<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  if (p.persistentKeepaliveInterval > 0) h.sendKeepalive(p);
}

/** Fire every expired timer of `p`. */
export function runTimers<P extends TimerPeer>(h: TimerHost<P>, p: P, now: number): void {
  const t = p.timers;
  if (t.retransmitHandshake <= now) {
    t.retransmitHandshake = Infinity;
    expiredRetransmitHandshake(h, p, now);
  }
  if (t.sendKeepalive <= now) {
    t.sendKeepalive = Infinity;
    expiredSendKeepalive(h, p, now);
  }
  if (t.newHandshake <= now) {
    t.newHandshake = Infinity;
    expiredNewHandshake(h, p);
  }
  if (t.zeroKeyMaterial <= now) {
    t.zeroKeyMaterial = Infinity;
    expiredZeroKeyMaterial(h, p);
  }
  if (t.persistentKeepalive <= now) {
    t.persistentKeepalive = Infinity;
    expiredPersistentKeepalive(h, p);
  }
}

export function nextDeadline(p: TimerPeer): number {
  const t = p.timers;
  return Math.min(t.retransmitHandshake, t.sendKeepalive, t.newHandshake, t.zeroKeyMaterial, t.persistentKeepalive);
}

// ---- event hooks ----

/** Should be called after an authenticated data packet is sent. */
export function timersDataSent<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  if (!pending(p.timers.newHandshake)) p.timers.newHandshake = h.monotonic() + KeepaliveTimeout + RekeyTimeout + h.jitter();
}

/** Should be called after an authenticated data packet is received. */
export function timersDataReceived<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  if (!pending(p.timers.sendKeepalive)) p.timers.sendKeepalive = h.monotonic() + KeepaliveTimeout;
  else p.timers.needAnotherKeepalive = true;
}

/** Should be called after any type of authenticated packet is sent: keepalive, data, or handshake. */
export function timersAnyAuthenticatedPacketSent<P extends TimerPeer>(_h: TimerHost<P>, p: P): void {
  p.timers.sendKeepalive = Infinity;
}

/** Should be called after any type of authenticated packet is received: keepalive, data, or handshake. */
export function timersAnyAuthenticatedPacketReceived<P extends TimerPeer>(_h: TimerHost<P>, p: P): void {
  p.timers.newHandshake = Infinity;
}

/** Should be called after a handshake initiation message is sent. */
export function timersHandshakeInitiated<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  p.timers.retransmitHandshake = h.monotonic() + RekeyTimeout + h.jitter();
}

/** Should be called after a handshake response message is received and processed, or when the first
 * transport message arrives on a new session as responder. */
export function timersHandshakeComplete<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  p.timers.retransmitHandshake = Infinity;
  p.timers.handshakeAttempts = 0;
  p.timers.sentLastMinuteHandshake = false;
  p.lastHandshakeWall = h.wall();
}

/** Should be called after an ephemeral key is created (session derived). */
export function timersSessionDerived<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  p.timers.zeroKeyMaterial = h.monotonic() + RejectAfterTime * 3;
}

/** Should be called before a packet with authentication, whether keepalive, data, or handshake, is sent, or after one is received. */
export function timersAnyAuthenticatedPacketTraversal<P extends TimerPeer>(h: TimerHost<P>, p: P): void {
  if (p.persistentKeepaliveInterval > 0) p.timers.persistentKeepalive = h.monotonic() + p.persistentKeepaliveInterval * 1000;
}

export { RekeyTimeoutJitterMaxMs };
