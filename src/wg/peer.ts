/** A configured peer: identity, handshake, sessions, cookie state, endpoint, timers, counters. */
import type { Endpoint } from '../conn/bind.js';
import type { Crypto } from './crypto.js';
import { CookieGenerator } from './cookie.js';
import { Keypairs } from './keypair.js';
import { Handshake } from './noise-protocol.js';
import { PeerTimers, type TimerPeer } from './timers.js';
import { encodeKey } from './keys.js';

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** CIDR prefixes, e.g. ["10.9.0.2/32", "fd00::2/128"]. */
  allowedIPs?: string[];
  endpoint?: Endpoint;
  /** Seconds; 0 or undefined = off. */
  persistentKeepalive?: number;
}

export interface PeerStatus {
  publicKey: string;
  endpoint: string | null;
  allowedIPs: string[];
  /** Wall-clock ms of the latest completed handshake; 0 = never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepalive: number;
}

export class Peer implements TimerPeer {
  readonly publicKeyB64: string;
  readonly handshake: Handshake;
  readonly keypairs = new Keypairs();
  readonly cookieGenerator: CookieGenerator;
  /** Monotonic ms of the last initiation re-sent at once because a cookie reply arrived (device.ts). */
  lastCookieRetry = -Infinity;
  readonly timers = new PeerTimers();
  endpoint?: Endpoint;
  persistentKeepaliveInterval = 0;
  lastHandshakeWall = 0;
  rxBytes = 0;
  txBytes = 0;
  /** Packets waiting for a session (wireguard-go's staged queue); empty Uint8Array = keepalive. */
  staged: Uint8Array[] = [];

  constructor(
    c: Crypto,
    readonly publicKey: Uint8Array,
  ) {
    this.publicKeyB64 = encodeKey(publicKey);
    this.handshake = new Handshake(Uint8Array.from(publicKey));
    this.cookieGenerator = new CookieGenerator(c, publicKey);
  }
}
