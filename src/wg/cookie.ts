/**
 * MAC1/MAC2 and cookie replies (whitepaper section 5.4.4 and 5.4.7, wireguard-go device/cookie.go).
 * CookieChecker is the device's side (verifies MACs on received handshakes, makes cookie replies);
 * CookieGenerator is the per-peer side (adds MACs to sent handshakes, consumes cookie replies).
 */
import type { Crypto } from './crypto.js';
import { constantTimeEqual } from './crypto.js';
import { CookieRefreshTime, RekeyTimeout, WGLabelCookie, WGLabelMAC1 } from './constants.js';
import { marshalCookieReply, type MessageCookieReply, readU32LE } from './messages.js';

const enc = new TextEncoder();
const labelMac1 = enc.encode(WGLabelMAC1);
const labelCookie = enc.encode(WGLabelCookie);

/** Bytes that identify a source for cookies and the rate limiter: address text and port. */
export function sourceBytes(address: string, port: number): Uint8Array {
  return enc.encode(`${address}|${port}`);
}

export class CookieChecker {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private secret: Uint8Array;
  private secretSet = -Infinity;

  constructor(
    private readonly c: Crypto,
    localPublicKey: Uint8Array,
  ) {
    this.mac1Key = c.hash(labelMac1, localPublicKey);
    this.encryptionKey = c.hash(labelCookie, localPublicKey);
    this.secret = new Uint8Array(32);
  }

  /** msg's MAC1 = MAC(HASH(label-mac1 || our public key), msg[0:mac1)). */
  checkMAC1(msg: Uint8Array): boolean {
    const smac1 = msg.length - 32;
    const mac = this.c.mac(this.mac1Key, msg.subarray(0, smac1));
    return constantTimeEqual(mac, msg.subarray(smac1, smac1 + 16));
  }

  private cookieFor(src: Uint8Array, now: number): Uint8Array {
    if (now - this.secretSet > CookieRefreshTime) {
      this.secret = this.c.randomBytes(32);
      this.secretSet = now;
    }
    return this.c.mac(this.secret, src);
  }

  /**
   * MAC2 is valid if it was made with the cookie this source would get now. An all-zero MAC2 (what
   * an initiator without a cookie sends, and what a flood sends) is refused before any hash.
   */
  checkMAC2(msg: Uint8Array, src: Uint8Array, now: number): boolean {
    if (now - this.secretSet > CookieRefreshTime) return false;
    const smac2 = msg.length - 16;
    let any = 0;
    for (let i = smac2; i < msg.length; i++) any |= msg[i];
    if (any === 0) return false;
    const cookie = this.cookieFor(src, now);
    const mac = this.c.mac(cookie, msg.subarray(0, smac2));
    return constantTimeEqual(mac, msg.subarray(smac2));
  }

  /** A cookie reply to a handshake message `msg` (whose sender index is at offset 4) from `src`. */
  createReply(msg: Uint8Array, src: Uint8Array, now: number): Uint8Array {
    const smac1 = msg.length - 32;
    const cookie = this.cookieFor(src, now);
    const nonce = this.c.randomBytes(24);
    const reply: MessageCookieReply = {
      receiver: readU32LE(msg, 4),
      nonce,
      cookie: this.c.xseal(this.encryptionKey, nonce, cookie, msg.subarray(smac1, smac1 + 16)),
    };
    return marshalCookieReply(reply);
  }
}

export class CookieGenerator {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private cookie: Uint8Array = new Uint8Array(16);
  private cookieSet = -Infinity;
  private lastMAC1?: Uint8Array;
  private hasLastMAC1 = false;

  constructor(
    private readonly c: Crypto,
    peerPublicKey: Uint8Array,
  ) {
    this.mac1Key = c.hash(labelMac1, peerPublicKey);
    this.encryptionKey = c.hash(labelCookie, peerPublicKey);
  }

  /** Fill MAC1 (always) and MAC2 (if we hold a fresh cookie) of a marshalled handshake message in place. */
  addMacs(msg: Uint8Array, now: number): void {
    const smac1 = msg.length - 32;
    const smac2 = msg.length - 16;
    const mac1 = this.c.mac(this.mac1Key, msg.subarray(0, smac1));
    msg.set(mac1, smac1);
    this.lastMAC1 = mac1;
    this.hasLastMAC1 = true;
    if (now - this.cookieSet > CookieRefreshTime - RekeyTimeout) {
      msg.fill(0, smac2);
      return;
    }
    msg.set(this.c.mac(this.cookie, msg.subarray(0, smac2)), smac2);
  }

  /** Accept a cookie reply for our last handshake message; false if it does not decrypt. */
  consumeReply(reply: MessageCookieReply, now: number): boolean {
    if (!this.hasLastMAC1 || !this.lastMAC1) return false;
    const cookie = this.c.xopen(this.encryptionKey, reply.nonce, reply.cookie, this.lastMAC1);
    if (!cookie) return false;
    this.cookie = cookie;
    this.cookieSet = now;
    this.hasLastMAC1 = false;
    return true;
  }
}
